"""The box's own Ed25519 key: what signs its lot packs, and how people recognise it.

The key is generated once, on first use, into ``data_dir/evidence-ed25519.pem`` (PKCS#8,
mode 600) and never leaves the box. Its public half is what a buyer checks a pack
against (``agent.evidence.pack``: the manifest carries it, ``lot verify-pack`` reports
its fingerprint), and it is shown where people meet the box: the Dispositivos page
("chave pública desta estação") and every lot report (the CSV's first line, the PDF's
footer), so a printed report names the same station as the packs it signed.

``fingerprint`` is ``SHA256:`` and the hex SHA-256 of the raw 32-byte public key;
``BoxIdentity.public_key`` is that raw key in base64, as the manifest writes it.

The key needs ``cryptography`` (the ``evidence`` extra). ``box_identity`` answers
``None`` without it, and when the key file cannot be read or made, so reports and
pages of a box without the extra still work, without a key line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "KEY_NAME",
    "PUBLIC_NAME",
    "BoxIdentity",
    "box_identity",
    "box_key",
    "fingerprint",
    "raw_public",
    "station_identity",
]

log = logging.getLogger(__name__)

KEY_NAME = "evidence-ed25519.pem"
#: The public key noted beside it: ``<SHA-256 of the key file> <base64 public key>``.
PUBLIC_NAME = "evidence-ed25519.pub"


@dataclass(frozen=True, slots=True)
class BoxIdentity:
    """The box's public key as people see it.

    Attributes:
        public_key: The raw 32-byte Ed25519 public key, base64 (as in a pack's manifest).
        fingerprint: ``SHA256:`` and the hex SHA-256 of the raw key.
    """

    public_key: str
    fingerprint: str


def box_key(data_dir: Path) -> Ed25519PrivateKey:
    """The box's signing key, generated on first use into ``data_dir`` with mode 600."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = data_dir / KEY_NAME
    try:
        return _load_key(path.read_bytes())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _load_key(path.read_bytes())
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _load_key(pem: bytes) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("evidence key is not Ed25519")
    return key


def raw_public(public: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public: Ed25519PublicKey) -> str:
    """``SHA256:`` and the hex SHA-256 of the raw 32-byte public key."""
    return "SHA256:" + hashlib.sha256(raw_public(public)).hexdigest()


def box_identity(data_dir: Path) -> BoxIdentity | None:
    """The box's public key and fingerprint (the key is made on first use).

    The public key is kept beside the key (``PUBLIC_NAME``: the SHA-256 of the key
    file and the public key), so the running agent shows it without loading
    ``cryptography`` (several MB of memory for a key it only signs with on request);
    a key file that changed (a restore) is read again and the note rewritten.

    Returns:
        ``None`` when ``cryptography`` is not installed or the key file cannot be read
        or made (logged).
    """
    noted = _noted_public(data_dir)
    if noted is not None:
        return noted
    try:
        public = box_key(data_dir).public_key()
    except ImportError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("The box's evidence key in %s is unusable: %s", data_dir, exc)
        return None
    identity = BoxIdentity(
        public_key=base64.b64encode(raw_public(public)).decode(),
        fingerprint=fingerprint(public),
    )
    _note_public(data_dir, identity)
    return identity


async def station_identity(data_dir: Path) -> BoxIdentity | None:
    """``box_identity`` for the running agent: a missing key is made in a child process.

    Generating the key means loading ``cryptography``; a child that makes the key and
    notes its public half exits and gives that memory back, so the agent reads the note.
    If the child cannot run, the key is made here (``box_identity``).
    """
    noted = _noted_public(data_dir)
    if noted is not None:
        return noted
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(data_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(child.communicate(), timeout=60)
        if child.returncode != 0:
            log.debug("Key child exited %s: %s", child.returncode, err.decode(errors="replace"))
    except (OSError, TimeoutError) as exc:
        log.debug("Key child did not run: %s", exc)
    return _noted_public(data_dir) or box_identity(data_dir)


def _key_digest(data_dir: Path) -> str | None:
    try:
        return hashlib.sha256((data_dir / KEY_NAME).read_bytes()).hexdigest()
    except OSError:
        return None


def _noted_public(data_dir: Path) -> BoxIdentity | None:
    """The public key noted for the key file as it is now (``None``: no such note)."""
    digest = _key_digest(data_dir)
    if digest is None:
        return None
    try:
        noted_digest, public_key = (data_dir / PUBLIC_NAME).read_text(encoding="ascii").split()
        raw = base64.b64decode(public_key, validate=True)
    except (OSError, ValueError):
        return None
    if noted_digest != digest or len(raw) != 32:
        return None
    return BoxIdentity(
        public_key=public_key, fingerprint="SHA256:" + hashlib.sha256(raw).hexdigest()
    )


def _note_public(data_dir: Path, identity: BoxIdentity) -> None:
    digest = _key_digest(data_dir)
    if digest is None:
        return
    path = data_dir / PUBLIC_NAME
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(f"{digest} {identity.public_key}\n", encoding="ascii")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only data dir: shown anyway, derived each start
        log.debug("Could not note the public key in %s: %s", path, exc)


if __name__ == "__main__":  # the child of ``station_identity``
    sys.exit(0 if box_identity(Path(sys.argv[1])) is not None else 1)

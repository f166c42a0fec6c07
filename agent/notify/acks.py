"""Acknowledgement credentials: signed single-use links, and the short codes SMS carries.

Theory of operation
-------------------
Each firing notification to a contact carries a credential for (episode, contact):

* a **link** ``<public_url>/ack/<token>``. The token is
  ``<payload>.<mac>``, both unpadded base64url: the payload is the JSON array
  ``[episode, contact, expires_s, nonce]`` and the MAC is HMAC-SHA256 of the payload
  with the agent's key (``data_dir/notify-link.key``, 32 random bytes made at first
  start, mode 0600), cut to 16 bytes. Changing any of it (another contact's name, a
  later expiry) breaks the MAC; the nonce is the credential's row in the queue's
  ``acks`` table, which records its single use. Opening the link shows the alert and a
  button; only the button's POST acknowledges (a link preview or a virus scanner
  that fetches the link acknowledges nothing).
* a **code** of ``CODE_DIGITS`` digits, for answers away from the LAN: an SMS reply
  from the contact's own number, or a Telegram button pressed in the contact's chat.
  A code is unique among the credentials kept, and is looked up, never decoded.

``decode_token`` takes any text and returns a ``TokenClaims`` or a refusal reason; it
never raises. Expiry, reuse and the episode still being open are checked by the
notifier against the database (``Notifier.acknowledge``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CODE_DIGITS",
    "MAX_TOKEN_CHARS",
    "TokenClaims",
    "decode_token",
    "encode_token",
    "load_link_key",
    "new_code",
    "new_nonce",
]

#: Digits in an SMS acknowledgement code.
CODE_DIGITS = 6
#: Longest token looked at; anything longer is refused unread.
MAX_TOKEN_CHARS = 1024
_MAC_BYTES = 16


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a token with a good MAC says.

    Attributes:
        episode: The alert episode (``rule/subject/since_ns``).
        contact: The contact it was sent to.
        expires_s: Unix time after which it is refused.
        nonce: The credential's row.
    """

    episode: str
    contact: str
    expires_s: int
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES]


def encode_token(key: bytes, claims: TokenClaims) -> str:
    """The URL-safe token for ``claims``, signed with ``key``."""
    doc = [claims.episode, claims.contact, claims.expires_s, claims.nonce]
    payload = _b64(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(key, payload))}"


def decode_token(key: bytes, token: str) -> TokenClaims | str:
    """The claims of a token signed with ``key``, or why it is refused (never raises)."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return "malformed"
    payload, mac = token.split(".")
    if not payload.isascii() or not mac.isascii():
        return "malformed"
    try:
        given = _unb64(mac)
        raw = _unb64(payload)
    except (binascii.Error, ValueError):
        return "malformed"
    if not hmac.compare_digest(given, _mac(key, payload)):
        return "forged"
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):  # pragma: no cover - we signed it
        return "malformed"
    if (
        not isinstance(doc, list)
        or len(doc) != 4
        or not all(isinstance(doc[i], str) for i in (0, 1, 3))
        or not isinstance(doc[2], int)
    ):  # pragma: no cover - we signed it
        return "malformed"
    return TokenClaims(episode=doc[0], contact=doc[1], expires_s=doc[2], nonce=doc[3])


def new_nonce() -> str:
    """A fresh credential id (128 random bits)."""
    return secrets.token_urlsafe(16)


def new_code() -> str:
    """A fresh ``CODE_DIGITS``-digit code (the store refuses one already kept)."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def load_link_key(path: Path) -> bytes:
    """The link-signing key: read from ``path``, or made there (0600) at first start."""
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key

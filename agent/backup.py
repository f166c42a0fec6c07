"""Backups of a site's state: one archive, a manifest, a hash per file.

Theory of operation
-------------------
A backup is a gzip'd tar file holding ``manifest.json`` and one member per saved file,
each at a fixed name (``MEMBERS``): the site file as ``site.toml`` and the stores as
``data/<file>``. Member names are never taken from the archive to build a path: a file
is restored to where the *target* site's config says its store lives, so a hostile or
damaged archive cannot write outside those places.

Making one (``write_backup``) while the agent runs: each SQLite store is copied with
SQLite's online backup API (``sqlite3.Connection.backup``) from a read-only connection,
in one step, so the copy is the store as of one committed transaction (WAL: the agent
keeps writing meanwhile, and waits for nothing). Each store is consistent in itself;
two stores are copied one after the other, not at one instant. A copy may then be
trimmed (``Source.trim``: the outbox without its records keeps only cursors,
sequences and its epoch). JSON state files are read whole (the agent replaces them
atomically). The manifest records for each file its store, schema version
(``PRAGMA user_version``, or a JSON document's ``version``), size and SHA-256, and for
the backup its format version, the agent's version and when it was made. The archive
is written beside ``-o`` and renamed into place, readable by its owner only (the site
file holds credentials).

Restoring one is two steps. ``read_backup`` checks everything before anything is
written: the manifest (``parse_manifest``: bounded, typed, only known stores at their
fixed names), that no store is newer than this code supports (``supported``), that
the archive holds exactly the manifest's files, and their sizes and hashes (each member
streamed to a temporary folder). ``install`` then puts each file in place with a
rename, after removing a stale ``-wal``/``-shm`` of the file it replaces (a WAL left by
a crash would otherwise be replayed into the restored database). ``store_holder``
tells whether a process has a store open (the agent), from the lock every SQLite
connection to a WAL database holds on its ``-shm`` file.

Refusals are ``BackupError``, with a message for the person at the terminal.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import struct
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from coffee_telemetry.agent.errors import TelemetryError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MEMBERS",
    "BackupError",
    "FileEntry",
    "Kind",
    "Manifest",
    "Source",
    "encode_manifest",
    "install",
    "parse_manifest",
    "read_backup",
    "store_holder",
    "write_backup",
]

#: The manifest's ``format``, and the version of the archive layout this code writes.
FORMAT = "coffee-telemetry-backup"
FORMAT_VERSION = 1
#: The manifest's member name.
MANIFEST = "manifest.json"
#: Each store's member name in the archive: the only names a backup may hold.
MEMBERS: Mapping[str, str] = {
    "site": "site.toml",
    "outbox": "data/outbox.sqlite3",
    "lots": "data/lots.sqlite3",
    "lot_records": "data/lots-records.sqlite3",
    "maintenance": "data/maintenance.sqlite3",
    "evidence": "data/evidence.sqlite3",
    "evidence_key": "data/evidence-ed25519.pem",
    "alerts": "data/alerts.json",
    "alerts_recent": "data/alerts-recent.json",
}
#: Longest manifest read, and longest text field in it.
MANIFEST_MAX_BYTES = 64 * 1024
_TEXT_MAX = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20

Kind = Literal["sqlite", "json", "config"]
_KINDS: tuple[Kind, ...] = ("sqlite", "json", "config")


T = TypeVar("T")


class BackupError(TelemetryError):
    """A backup cannot be made, read or restored; the message says why."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One saved file, as the manifest lists it.

    Attributes:
        store: Which state it is (a key of ``MEMBERS``).
        kind: ``sqlite``, ``json`` or ``config``.
        schema_version: The store's schema version (None: the file has none).
        size: Bytes.
        sha256: Hex SHA-256 of its bytes.
    """

    store: str
    kind: Kind
    schema_version: int | None
    size: int
    sha256: str

    @property
    def member(self) -> str:
        """Its name in the archive."""
        return MEMBERS[self.store]


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a backup holds (``manifest.json``).

    Attributes:
        format_version: The archive layout's version.
        created: When it was made (UTC, ISO 8601).
        agent_version: The version of coffee-telemetry that made it.
        site: The site's id.
        with_outbox: Whether the outbox's undelivered records are in it.
        files: The saved files, at most one per store.
    """

    format_version: int
    created: str
    agent_version: str
    site: str
    with_outbox: bool
    files: tuple[FileEntry, ...]

    def entry(self, store: str) -> FileEntry | None:
        """The file saved for ``store``, if any."""
        return next((f for f in self.files if f.store == store), None)


@dataclass(frozen=True, slots=True)
class Source:
    """A file to save.

    Attributes:
        store: A key of ``MEMBERS``.
        path: Where it is now (a missing file is skipped).
        kind: ``sqlite`` (copied with the backup API), ``json`` or ``config`` (read whole).
        trim: Run on the SQLite copy before it is saved (in a transaction).
    """

    store: str
    path: Path
    kind: Kind
    trim: Callable[[sqlite3.Connection], None] | None = None


# -- the manifest ---------------------------------------------------------------------


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest as JSON (``parse_manifest`` reads it back equal)."""
    doc = {
        "format": FORMAT,
        "format_version": manifest.format_version,
        "created": manifest.created,
        "agent_version": manifest.agent_version,
        "site": manifest.site,
        "with_outbox": manifest.with_outbox,
        "files": [
            {
                "store": f.store,
                "name": f.member,
                "kind": f.kind,
                "schema_version": f.schema_version,
                "size": f.size,
                "sha256": f.sha256,
            }
            for f in manifest.files
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def parse_manifest(data: bytes) -> Manifest:
    """Read a manifest; anything but a well-formed one of a known layout is refused.

    Raises:
        BackupError: Too long, not JSON, a field missing or of the wrong type, an unknown
            store, a name that is not the store's, a store twice, or a newer layout.
    """
    if len(data) > MANIFEST_MAX_BYTES:
        raise BackupError(f"manifest longer than {MANIFEST_MAX_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BackupError(f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BackupError("manifest is not a JSON object")
    if doc.get("format") != FORMAT:
        raise BackupError("not a coffee-telemetry backup (manifest format)")
    version = _field(doc, "format_version", int)
    if version > FORMAT_VERSION:
        raise BackupError(
            f"backup made by a newer version of coffee-telemetry (layout {version};"
            f" this version reads up to {FORMAT_VERSION})"
        )
    if version < 1:
        raise BackupError(f"manifest format_version {version} is not valid")
    files_doc = doc.get("files")
    if not isinstance(files_doc, list) or len(files_doc) > len(MEMBERS):
        raise BackupError(f"manifest files: expected a list of at most {len(MEMBERS)}")
    files = tuple(_file_entry(f) for f in files_doc)
    stores = [f.store for f in files]
    if len(set(stores)) != len(stores):
        raise BackupError("manifest lists a store twice")
    return Manifest(
        format_version=version,
        created=_text(doc, "created"),
        agent_version=_text(doc, "agent_version"),
        site=_text(doc, "site"),
        with_outbox=_field(doc, "with_outbox", bool),
        files=files,
    )


def _kind_of(store: str) -> Kind:
    member = MEMBERS[store]
    if store == "site" or member.endswith(".pem"):
        return "config"
    return "json" if member.endswith(".json") else "sqlite"


def _field(doc: dict[str, object], key: str, kind: type[T]) -> T:
    value = doc.get(key)
    # bool is an int in Python; neither stands for the other here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BackupError(f"manifest {key}: expected {kind.__name__}")
    return value


def _text(doc: dict[str, object], key: str) -> str:
    value = _field(doc, key, str)
    if len(value) > _TEXT_MAX or not value.isprintable():
        raise BackupError(f"manifest {key}: not a short printable text")
    return value


def _file_entry(doc: object) -> FileEntry:
    if not isinstance(doc, dict):
        raise BackupError("manifest files: expected objects")
    store = _field(doc, "store", str)
    if store not in MEMBERS:
        raise BackupError(f"manifest names an unknown store {store[:_TEXT_MAX]!r}")
    if doc.get("name") != MEMBERS[store]:
        raise BackupError(f"manifest: {store} must be saved as {MEMBERS[store]}")
    kind = doc.get("kind")
    if kind not in _KINDS or kind != _kind_of(store):
        raise BackupError(f"manifest: {store}: kind must be {_kind_of(store)}")
    raw_version = doc.get("schema_version")
    schema_version = None if raw_version is None else _field(doc, "schema_version", int)
    size = _field(doc, "size", int)
    digest = _field(doc, "sha256", str)
    if size < 0 or (schema_version is not None and schema_version < 0):
        raise BackupError(f"manifest: {store}: negative size or version")
    if not _SHA256.fullmatch(digest):
        raise BackupError(f"manifest: {store}: sha256 is not 64 hex digits")
    return FileEntry(
        store=store,
        kind=kind,
        schema_version=schema_version,
        size=size,
        sha256=digest,
    )


# -- making a backup ------------------------------------------------------------------


def write_backup(
    out: Path,
    sources: Sequence[Source],
    *,
    agent_version: str,
    site: str,
    with_outbox: bool,
    now: datetime | None = None,
) -> Manifest:
    """Save ``sources`` (those that exist) into the archive ``out``, replacing it.

    Raises:
        BackupError: A store cannot be read or copied, or ``out`` cannot be written.
    """
    created = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = out.absolute()
    with tempfile.TemporaryDirectory(prefix="coffee-backup-") as tmp:
        entries: list[tuple[FileEntry, Path]] = []
        for source in sources:
            copy = Path(tmp) / source.store
            try:
                version = _copy_source(source, copy)
            except FileNotFoundError:
                continue
            except (OSError, sqlite3.Error) as exc:
                raise BackupError(f"cannot read {source.store} ({source.path}): {exc}") from exc
            size, digest = _hash(copy)
            entries.append((FileEntry(source.store, source.kind, version, size, digest), copy))
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            created=created,
            agent_version=agent_version,
            site=site,
            with_outbox=with_outbox,
            files=tuple(e for e, _ in entries),
        )
        partial = out.with_name(f".{out.name}.partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with (
                os.fdopen(fd, "wb") as raw,
                tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar,
            ):
                _add_bytes(tar, MANIFEST, encode_manifest(manifest))
                for entry, copy in entries:
                    tar.add(copy, arcname=entry.member, recursive=False, filter=_plain)
            with partial.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(partial, out)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise BackupError(f"cannot write {out}: {exc}") from exc
    return manifest


def _copy_source(source: Source, copy: Path) -> int | None:
    if source.kind != "sqlite":
        data = source.path.read_bytes()
        copy.write_bytes(data)
        return _json_version(data) if source.kind == "json" else None
    if not source.path.exists():
        raise FileNotFoundError(source.path)
    src = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
    try:
        src.execute("PRAGMA busy_timeout=5000")
        dst = sqlite3.connect(copy, isolation_level=None)
        try:
            src.backup(dst)  # all pages in one step: one consistent read transaction
            dst.execute("PRAGMA journal_mode=DELETE")
            if source.trim is not None:
                dst.execute("BEGIN IMMEDIATE")
                source.trim(dst)
                dst.execute("COMMIT")
                dst.execute("VACUUM")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"copy fails its check: {check}")
            return int(dst.execute("PRAGMA user_version").fetchone()[0])
        finally:
            dst.close()
    finally:
        src.close()


def _json_version(data: bytes) -> int | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if type(version) is int and version >= 0 else None


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


# -- reading one back -----------------------------------------------------------------


def read_backup(archive: Path, into: Path, *, supported: Mapping[str, int]) -> Manifest:
    """Check ``archive`` whole and put its files in ``into`` (named by store).

    Args:
        archive: The backup file.
        into: An empty folder; ``into/<store>`` is each saved file afterwards.
        supported: The newest schema version of each store this code opens (a store
            missing here has no version limit).

    Raises:
        BackupError: Not a readable backup, a newer one, or a file that is missing,
            extra, of another size or another hash.
    """
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            return _read(tar, into, supported)
    except (tarfile.TarError, EOFError, OSError, ValueError, RecursionError) as exc:
        raise BackupError(f"{archive}: not a readable backup: {exc}") from None
    except BackupError as exc:
        raise BackupError(f"{archive}: {exc}") from None


def _read(tar: tarfile.TarFile, into: Path, supported: Mapping[str, int]) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg():
        raise BackupError(f"the archive does not start with {MANIFEST}")
    if first.size > MANIFEST_MAX_BYTES:
        raise BackupError(f"manifest longer than {MANIFEST_MAX_BYTES} bytes")
    manifest = parse_manifest(_member_bytes(tar, first))
    for entry in manifest.files:
        limit = supported.get(entry.store)
        if limit is not None and entry.schema_version is not None and entry.schema_version > limit:
            raise BackupError(
                f"{entry.store} was saved by a newer version of coffee-telemetry (schema"
                f" version {entry.schema_version}; this version supports up to {limit}):"
                " upgrade coffee-telemetry before restoring it"
            )
    by_member = {f.member: f for f in manifest.files}
    seen: set[str] = set()
    while (info := tar.next()) is not None:
        listed = by_member.get(info.name)
        if listed is None or info.name in seen or not info.isreg():
            raise BackupError(f"the archive holds {info.name[:_TEXT_MAX]!r}, not in its manifest")
        seen.add(info.name)
        if info.size != listed.size:
            raise BackupError(f"{info.name}: {info.size} bytes, the manifest says {listed.size}")
        size, digest = _extract(tar, info, into / listed.store)
        if size != listed.size or digest != listed.sha256:
            raise BackupError(
                f"{info.name}: SHA-256 differs from the manifest (changed or damaged)"
            )
    missing = sorted(set(by_member) - seen)
    if missing:
        raise BackupError(f"the archive lacks {', '.join(missing)}, listed in its manifest")
    return manifest


def _member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(info)
    if f is None:
        raise BackupError(f"{info.name} is not a file")
    return f.read(MANIFEST_MAX_BYTES + 1)


def _extract(tar: tarfile.TarFile, info: tarfile.TarInfo, dest: Path) -> tuple[int, str]:
    src = tar.extractfile(info)
    if src is None:
        raise BackupError(f"{info.name} is not a file")
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


# -- putting it in place --------------------------------------------------------------


def install(
    copy: Path, target: Path, *, owner: tuple[int, int] | None = None, mode: int = 0o600
) -> None:
    """Replace ``target`` with ``copy`` (fsync'd, renamed); a SQLite target loses its WAL.

    Args:
        copy: The restored file (``read_backup``'s output).
        target: Where the store lives.
        owner: ``(uid, gid)`` to give it (the data folder's, when root restores).
        mode: Its permissions.

    Raises:
        OSError: It cannot be written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(copy, staged)
    os.chmod(staged, mode)
    if owner is not None:
        os.chown(staged, *owner)
    with staged.open("rb") as f:
        os.fsync(f.fileno())
    for stale in (Path(f"{target}-wal"), Path(f"{target}-shm"), Path(f"{target}-journal")):
        stale.unlink(missing_ok=True)
    os.replace(staged, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: ``struct flock`` on Linux (``l_type, l_whence, l_start, l_len, l_pid``, padded).
_FLOCK = "@hhqqi4x"
#: The byte of a WAL database's ``-shm`` file every open connection holds a read lock on.
_SHM_DMS_BYTE = 128


def store_holder(db: Path) -> int | None:
    """The id of a process that has the WAL database ``db`` open, or None.

    Every SQLite connection to a WAL database holds a shared lock on one byte of its
    ``-shm`` file while it is open; this asks the kernel who would block a write lock
    there (``F_GETLK``: nothing is locked by asking).

    Raises:
        OSError: The ``-shm`` file exists but cannot be read.
    """
    try:
        fd = os.open(f"{db}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS_BYTE, 1, 0)
        lock_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    finally:
        os.close(fd)
    return None if lock_type == fcntl.F_UNLCK else int(pid)

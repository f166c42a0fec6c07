"""``coffee-telemetry backup`` and ``restore``: the site's state in one file, and back.

    coffee-telemetry backup -c site.toml -o FILE [--with-outbox]
    coffee-telemetry restore FILE -c site.toml [--force]

``backup`` works while the agent runs (``agent.backup``: SQLite's online backup API,
one consistent copy per store). It saves what a new box needs to carry on where this
one stopped: the site file, the active lots and their history, the lot records, huller
maintenance, the alert state, the evidence store (members, plots, every manifest issued)
and the box's signing key, and the outbox's cursors, per-device sequences and epoch
(so a restored agent never numbers a reading ``(device, seq)`` again). The outbox's
undelivered records only with ``--with-outbox``: without them the restored agent starts
with an empty backlog. The local history (charts) and the notification queues are not
saved: they refill.

``restore`` checks the whole file before writing anything (the manifest, each file's
size and SHA-256, no store newer than this version opens), refuses while the agent (or
any process) has the site's stores open, and refuses to replace existing state without
``--force``. The stores go where ``-c``'s config puts them; if that file does not exist
yet, the backup's site file is written there first. Run as root, the restored files get
the data folder's owner. The restored outbox gets a new epoch, and every device's
sequence moves ``SEQ_RESTORE_GAP`` past the backup's: the box that made the backup may
have numbered readings after it, and no ``(device, seq)`` may be numbered twice. The
agent migrates an older backup's stores when it starts.

Exit codes: 0 done; 1 refused or failed (the message says why; nothing was written
unless it says so); 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sqlite3
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from coffee_telemetry.agent.alerts.snapshot import RECENT_VERSION, SNAPSHOT_VERSION
from coffee_telemetry.agent.backup import (
    MEMBERS,
    BackupError,
    Kind,
    Manifest,
    Source,
    install,
    read_backup,
    store_holder,
    write_backup,
)
from coffee_telemetry.agent.cli._common import (
    CONFIG_HELP,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.evidence import schema as evidence_schema
from coffee_telemetry.agent.evidence.identity import KEY_NAME
from coffee_telemetry.agent.hullers import store as maintenance_store
from coffee_telemetry.agent.lots import records as lot_records
from coffee_telemetry.agent.lots import store as lot_store
from coffee_telemetry.agent.outbox import schema as outbox_schema

__all__ = ["add_parser", "cmd_backup", "cmd_restore", "state_paths", "supported_versions"]

#: What the outbox keeps in a backup without ``--with-outbox``: all but these tables' rows.
_OUTBOX_RECORD_TABLES = ("records", "dead_letters", "provisional")
#: How far a restored outbox advances every device's ``seq``: the box that made the
#: backup may have numbered readings after it (a reading every 2 s for 23 days).
SEQ_RESTORE_GAP = 1_000_000


def supported_versions() -> dict[str, int]:
    """The newest schema version of each saved store that this version opens."""
    return {
        "outbox": len(outbox_schema.STEPS),
        "lots": len(lot_store.STEPS),
        "lot_records": len(getattr(lot_records, "STEPS", ())),
        "maintenance": len(maintenance_store.STEPS),
        "evidence": len(evidence_schema.STEPS),
        "alerts": SNAPSHOT_VERSION,
        "alerts_recent": RECENT_VERSION,
    }


def state_paths(cfg: Config) -> dict[str, Path]:
    """Where each saved store of the site ``cfg`` lives (the site file aside)."""
    data = cfg.agent.data_dir
    return {
        "outbox": cfg.outbox_path,
        "lots": data / "lots.sqlite3",
        "lot_records": cfg.lot_records_path,
        "maintenance": cfg.maintenance_path,
        "evidence": data / "evidence.sqlite3",
        "evidence_key": data / KEY_NAME,
        "alerts": data / "alerts.json",
        "alerts_recent": data / "alerts-recent.json",
    }


def _outbox_state_only(conn: sqlite3.Connection) -> None:
    tables = {str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master")}
    # The records' own seqs join the sequences table before the records go (a running
    # outbox writes that table with its cursors, not with every commit).
    conn.execute(outbox_schema.SEQUENCES_FROM_RECORDS)
    for table in _OUTBOX_RECORD_TABLES:
        if table in tables:
            conn.execute(f"DELETE FROM {table}")
    # The records left behind are the old box's to deliver: every cursor moves past
    # them, as if delivered, so the restored outbox holds what it holds, nothing less.
    conn.execute(
        "UPDATE cursors SET delivered_id = MAX(delivered_id, COALESCE("
        "(SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0))"
    )


def _agent_version() -> str:
    try:
        return metadata.version("coffee-telemetry")
    except metadata.PackageNotFoundError:
        return "unknown"


def cmd_backup(args: argparse.Namespace) -> int:
    """Save the site's state into ``-o`` (works while the agent runs)."""
    cfg = load(args.config)
    paths = state_paths(cfg)
    sources = [Source("site", Path(args.config), "config")]
    for store, path in paths.items():
        kind: Kind = (
            "json" if path.suffix == ".json" else "config" if path.suffix == ".pem" else "sqlite"
        )
        trim = _outbox_state_only if store == "outbox" and not args.with_outbox else None
        sources.append(Source(store, path, kind, trim))
    try:
        manifest = write_backup(
            Path(args.output),
            sources,
            agent_version=_agent_version(),
            site=cfg.site.id,
            with_outbox=args.with_outbox,
        )
    except BackupError as exc:
        _error(f"backup não feito / no backup made: {exc}")
        return EXIT_FAILURE
    _print_files(manifest)
    missing = sorted(set(paths) - {f.store for f in manifest.files})
    if missing:
        print(f"  (ainda não existem / not there yet: {', '.join(missing)})")
    print(f"backup: {args.output}")
    return EXIT_OK


def _error(message: str) -> None:
    print(f"erro / error: {message}", file=sys.stderr)


def _print_files(manifest: Manifest) -> None:
    for entry in manifest.files:
        version = "-" if entry.schema_version is None else str(entry.schema_version)
        print(f"  {entry.member:<28} v{version:<3} {entry.size:>12} B  {entry.sha256[:16]}")


def cmd_restore(args: argparse.Namespace) -> int:
    """Check a backup whole, then put the site's state back (the agent must be stopped)."""
    with tempfile.TemporaryDirectory(prefix="coffee-restore-") as tmp:
        into = Path(tmp)
        try:
            manifest = read_backup(Path(args.file), into, supported=supported_versions())
        except BackupError as exc:
            _error(f"backup recusado / backup refused: {exc}")
            return EXIT_FAILURE
        return _restore(args, manifest, into)


def _restore(args: argparse.Namespace, manifest: Manifest, into: Path) -> int:
    config_path = Path(args.config)
    wrote_config = False
    if not config_path.exists():
        if manifest.entry("site") is None:
            _error(f"{config_path} does not exist and the backup has no site file")
            return EXIT_CONFIG
        try:
            install(into / "site", config_path, mode=0o640)
        except OSError as exc:
            _error(f"cannot write {config_path}: {exc}")
            return EXIT_FAILURE
        wrote_config = True
    try:
        cfg = load(str(config_path))
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    targets = {s: p for s, p in state_paths(cfg).items() if manifest.entry(s) is not None}
    refusal = _agent_pid(cfg.agent.data_dir) or _refusal(targets, force=args.force)
    if refusal:
        _error(f"restauração recusada / restore refused: {refusal}")
        if wrote_config:
            print(f"  ({config_path} was written from the backup)", file=sys.stderr)
        return EXIT_FAILURE
    owner = _owner(cfg.agent.data_dir)
    try:
        if "outbox" in targets:
            _renumber_outbox(into / "outbox", targets["outbox"])
        for store, target in targets.items():
            install(into / store, target, owner=owner)
    except OSError as exc:
        _error(f"restauração incompleta / restore incomplete: {exc}")
        return EXIT_FAILURE
    made = f"made {manifest.created} by coffee-telemetry {manifest.agent_version}"
    print(f"restaurado / restored from {args.file} ({made}):")
    _print_files(manifest)
    if wrote_config:
        print(f"  site file written to {config_path}")
    if not manifest.with_outbox:
        print("  outbox: cursors and sequences only (backup made without --with-outbox)")
    print("inicie o agente / start the agent: systemctl start coffee-telemetry")
    return EXIT_OK


def _renumber_outbox(copy: Path, replaced: Path) -> None:
    """Give the restored outbox a new epoch, and sequences past any the old box used.

    Every device's ``seq`` moves ``SEQ_RESTORE_GAP`` past the backup's, and past the
    replaced outbox's if there is one, so no ``(device, seq)`` is numbered twice.
    """
    existing = _sequences(replaced) if replaced.exists() else {}
    with contextlib.closing(sqlite3.connect(copy, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(outbox_schema.SEQUENCES_FROM_RECORDS)  # records held number too
        conn.execute("UPDATE sequences SET seq = seq + ?", (SEQ_RESTORE_GAP,))
        conn.executemany(
            "INSERT INTO sequences (device, seq) VALUES (?, ?)"
            " ON CONFLICT (device) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            existing.items(),
        )
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)",
            (secrets.randbits(outbox_schema.EPOCH_BITS) or 1,),
        )
        conn.execute("COMMIT")


def _sequences(outbox: Path) -> dict[str, int]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as conn:
            return {
                str(d): int(n)
                for d, n in conn.execute(
                    "SELECT device, MAX(seq) FROM (SELECT device, seq FROM sequences"
                    " UNION ALL SELECT device, seq FROM records) GROUP BY device"
                )
            }
    except sqlite3.Error:
        return {}  # a damaged store is what is being replaced


def _agent_pid(data_dir: Path) -> str | None:
    # The agent writes its id to data_dir/agent.pid while it runs; a file left by a
    # killed agent may name a process that is now something else.
    try:
        text = (data_dir / "agent.pid").read_text(encoding="ascii").strip()
        pid = int(text)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"coffee" not in cmdline:
        return None
    return (
        f"o agente está rodando (processo {pid}, {data_dir / 'agent.pid'}); pare-o antes"
        f" / the agent is running (process {pid}): systemctl stop coffee-telemetry"
    )


def _refusal(targets: Mapping[str, Path], *, force: bool) -> str | None:
    for store, path in targets.items():
        if path.suffix != ".sqlite3":
            continue
        try:
            pid = store_holder(path)
        except OSError as exc:
            return f"cannot tell whether {path} is in use: {exc}"
        if pid is not None:
            return (
                f"o agente está rodando (o processo {pid} tem {path} aberto); pare-o antes"
                f" / the agent is running (process {pid} has the {store} store open):"
                " systemctl stop coffee-telemetry"
            )
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not force:
        return (
            f"já existe estado / state exists: {', '.join(existing)}; --force replaces it"
            " (the outbox's undelivered records too)"
        )
    return None


def _owner(data_dir: Path) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        st = data_dir.stat()
    except OSError:
        return None
    return st.st_uid, st.st_gid


def add_parser(sub: Subcommands) -> None:
    """Add ``backup`` and ``restore`` to the parser."""
    backup = add_config_command(
        sub, "backup", summary="save the site's state into one file", run=cmd_backup
    )
    backup.add_argument("-o", "--output", required=True, help="the backup file to write")
    backup.add_argument(
        "--with-outbox",
        action="store_true",
        help="also the outbox's undelivered records (default: cursors and sequences only)",
    )
    restore = sub.add_parser(
        "restore",
        help="put a backup's state back (the agent stopped)",
        description=f"Saved stores: {', '.join(MEMBERS)}. Exit codes: 0 done, 1 refused"
        " or failed, 2 invalid configuration or usage.",
    )
    restore.add_argument("file", help="the backup file")
    restore.add_argument(
        "-c", "--config", required=True, help=f"{CONFIG_HELP} (written from the backup if absent)"
    )
    restore.add_argument("--force", action="store_true", help="replace existing state")
    restore.set_defaults(func=cmd_restore)

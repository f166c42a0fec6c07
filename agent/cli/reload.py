"""``coffee-telemetry reload -c site.toml``: check the site file, then have the agent read it.

The running agent (``coffee-telemetry run``) writes its process id to
``<data_dir>/agent.pid`` and removes it when it exits; on ``SIGHUP`` it reads its site
file again and applies what changed (``agent.reload``). This command validates the
file first, exactly as ``check-config`` does (an invalid file exits 2 with the same
errors, and the agent is not disturbed), then sends ``SIGHUP`` to the agent named by
the pid file, or by ``--pid`` (systemd's ``ExecReload=... --pid $MAINPID``). What the
agent applied, refused or needs a restart for is in its log and in ``/api/health``
(``counters.reload``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from coffee_telemetry.agent.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)

#: The agent's pid file, in its data directory.
PID_FILE = "agent.pid"


@contextlib.contextmanager
def pid_file(data_dir: Path) -> Iterator[Path]:
    """Write this process's id to ``data_dir/agent.pid`` for the block; remove it after."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PID_FILE
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(tmp, path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if read_pid(path) == os.getpid():
                path.unlink()


def read_pid(path: Path) -> int | None:
    """The pid in ``path``, or ``None`` if there is no such file or it holds no pid."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 2**22 else None


def install_reload(request: asyncio.Event) -> None:
    """Set ``request`` on SIGHUP (the agent then reads its site file again)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, request.set)


def _running_agent(pid: int, *, named: bool) -> bool:
    """Whether ``pid`` is alive and, unless ``named`` on the command line, the agent.

    A pid file left by an agent that was killed may name a process that is now
    something else: that one must not get a SIGHUP (most programs die of it).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's (the service's): the signal will say
    if named:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"coffee" in cmdline and b"run" in cmdline


def cmd_reload(args: argparse.Namespace) -> int:
    """Validate the site file, then SIGHUP the running agent."""
    cfg = load(args.config)  # ConfigError: exit 2, the same errors as check-config
    where = f"--pid {args.pid}"
    pid = args.pid
    if pid is None:
        path = cfg.agent.data_dir / PID_FILE
        where = str(path)
        pid = read_pid(path)
        if pid is None:
            print(
                f"error: no running agent: {path} not found"
                " (is `coffee-telemetry run` running with this site file?)",
                file=sys.stderr,
            )
            return EXIT_FAILURE
    if not _running_agent(pid, named=args.pid is not None):
        print(f"error: no running agent: process {pid} ({where}) is gone", file=sys.stderr)
        return EXIT_FAILURE
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"error: cannot signal the agent (pid {pid}): {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.config}: OK; agent {pid} asked to reload (its log says what changed)")
    return EXIT_OK


def add_parser(sub: Subcommands) -> None:
    """Add ``reload`` to the ``coffee-telemetry`` subcommands."""
    command = add_config_command(
        sub,
        "reload",
        summary="check the site file, then have the running agent apply it (SIGHUP)",
        run=cmd_reload,
    )
    command.add_argument(
        "--pid", type=int, help="the agent's process id (default: from data_dir/agent.pid)"
    )

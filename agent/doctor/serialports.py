"""Serial port checks: present, allowed, free, and bytes that read as text.

Theory of operation
-------------------

A meter that sends nothing to the agent is, on site, one of five things, checked in
this order (a check that fails makes the later ones meaningless, so they are skipped):

1. *missing*: the path (often a ``/dev/serial/by-id/...`` link) leads nowhere: the
   adapter is unplugged, or the config names another adapter;
2. *not allowed*: the service user may not read and write the device. The kernel's
   rule is applied to the service user's uid and groups (owner bits, else group bits,
   else other bits; root passes), so the answer holds for the service even when the
   technician runs ``doctor`` as root, where ``os.access`` would always say yes;
3. *held*: another process has the device open (a terminal program left running, a
   second agent), found through ``/proc/*/fd`` and UUCP lock files
   (``/var/lock/LCK..ttyUSB0``). A process that holds the master side of the same
   pseudo-terminal (``tty-index`` in its ``fdinfo``) is the line's other end, not a
   competitor. The agent itself holding the port is the normal case: it is said, and
   the port is not listened to (listening would take bytes from the agent);
4. *silent*: nothing arrives within the listen window (a ticket meter prints only
   when someone presses PRINT: a warning, not a failure);
5. *garbled*: bytes arrive but do not read as text at the configured settings. The
   sample is scored by ``onboard.detect.assess`` under every character format; when
   even that fails, a short ``Detector`` run over the other baud rates gives a guess.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.onboard.capture import (
    CapturePort,
    SerialCapturePort,
    SettingsRefused,
)
from coffee_telemetry.agent.onboard.detect import Decided, Detector, Listening, assess
from coffee_telemetry.agent.onboard.lineformat import BAUDRATES, LineSettings

__all__ = [
    "Holder",
    "PortSpec",
    "ServiceUser",
    "check_access",
    "check_exists",
    "check_holders",
    "check_port",
    "check_traffic",
    "find_holders",
    "lock_pid",
    "may_read_write",
    "service_user",
]

#: Directories where UUCP-style lock files (``LCK..ttyUSB0``) live.
LOCK_DIRS = (Path("/var/lock"), Path("/run/lock"))
#: What a process's command line contains when it is this agent.
AGENT_MARKERS = ("coffee-telemetry", "coffee_telemetry")


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A configured serial port.

    Attributes:
        subject: Who uses it (device or bus id).
        port: Its path.
        settings: The configured line settings.
    """

    subject: str
    port: str
    settings: LineSettings


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """Who the agent runs as: a name, a uid and every group id it has."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def named(cls, name: str, *, extra_groups: Iterable[str] = ()) -> ServiceUser:
        """The user ``name`` with its groups (plus ``extra_groups`` the unit adds).

        Raises:
            KeyError: No such user.
        """
        entry = pwd.getpwnam(name)
        gids = set(os.getgrouplist(name, entry.pw_gid))
        for group in extra_groups:
            with contextlib.suppress(KeyError):
                gids.add(grp.getgrnam(group).gr_gid)
        return cls(name, entry.pw_uid, frozenset(gids))


def service_user(preferred: str | None, *, default: str = "coffee") -> ServiceUser:
    """The user to check access for: ``preferred``, else ``default`` if it exists, else us.

    Raises:
        KeyError: ``preferred`` names no user.
    """
    if preferred is not None:
        return ServiceUser.named(preferred)
    with contextlib.suppress(KeyError):
        return ServiceUser.named(default)
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return ServiceUser(name, uid, frozenset({os.getegid(), *os.getgroups()}))


def may_read_write(st: os.stat_result, user: ServiceUser) -> bool:
    """Whether the kernel's permission bits let ``user`` open a file read-write."""
    if user.uid == 0:
        return True
    mode = st.st_mode
    if st.st_uid == user.uid:
        need = stat.S_IRUSR | stat.S_IWUSR
    elif st.st_gid in user.gids:
        need = stat.S_IRGRP | stat.S_IWGRP
    else:
        need = stat.S_IROTH | stat.S_IWOTH
    return mode & need == need


def check_exists(spec: PortSpec) -> Result:
    """The port's path leads to a device."""
    path = Path(spec.port)
    values = {"port": spec.port}
    if path.exists():
        real = os.path.realpath(path)
        return Result(
            "serial.exists", spec.subject, Status.OK, "port_exists", None, {**values, "real": real}
        )
    if path.is_symlink():
        target = os.readlink(path)
        return Result(
            "serial.exists",
            spec.subject,
            Status.FAIL,
            "port_dangling",
            "fix_port_missing",
            {**values, "real": target},
        )
    return Result(
        "serial.exists", spec.subject, Status.FAIL, "port_missing", "fix_port_missing", values
    )


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_access(spec: PortSpec, user: ServiceUser) -> Result:
    """The service user may open the port read-write (see the module docstring)."""
    try:
        st = os.stat(spec.port)
    except OSError as exc:
        return Result(
            "serial.access",
            spec.subject,
            Status.FAIL,
            "port_stat_failed",
            "fix_port_missing",
            {"port": spec.port, "error": exc.strerror},
        )
    group = _group_name(st.st_gid)
    values = {
        "port": spec.port,
        "user": user.name,
        "group": group,
        "mode": f"{stat.S_IMODE(st.st_mode):03o}",
    }
    if may_read_write(st, user):
        return Result("serial.access", spec.subject, Status.OK, "port_access_ok", None, values)
    group_rw = stat.S_IRGRP | stat.S_IWGRP
    if st.st_mode & group_rw == group_rw and st.st_gid not in user.gids:
        fix = "fix_port_group"
    else:
        fix = "fix_port_mode"
    return Result("serial.access", spec.subject, Status.FAIL, "port_access_denied", fix, values)


@dataclass(frozen=True, slots=True)
class Holder:
    """A process that has a port open (or locked)."""

    pid: int
    command: str
    agent: bool
    how: str  # "open" or "lock"


def _command(proc: Path) -> tuple[str, bool]:
    try:
        comm = (proc / "comm").read_text(encoding="utf-8", errors="replace").strip()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?", False
    return comm or "?", any(marker in cmdline for marker in AGENT_MARKERS)


def _pty_index(real: str) -> int | None:
    name = real.removeprefix("/dev/pts/")
    return int(name) if name != real and name.isdigit() else None


def _holds_master(fd_dir: Path, fdinfo_dir: Path, index: int) -> bool:
    # Whether this process holds /dev/ptmx for pty ``index``: it is the line's other end.
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) != "/dev/ptmx":
                continue
            info = (fdinfo_dir / fd.name).read_text()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "tty-index" and value.strip() == str(index):
                return True
    return False


def lock_pid(content: bytes) -> int | None:
    """The process id in a UUCP lock file (ASCII digits, maybe padded), if it holds one."""
    text = content.strip()
    if not text or len(text) > 10 or not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def find_holders(
    port: str,
    *,
    proc_root: Path = Path("/proc"),
    lock_dirs: Sequence[Path] = LOCK_DIRS,
    deadline: float | None = None,
) -> tuple[list[Holder], bool]:
    """Processes other than this one holding ``port``, and whether every one could be seen.

    Unreadable ``/proc/<pid>/fd`` dirs (other users' processes, when not root) make the
    answer partial.
    """
    real = os.path.realpath(port)
    index = _pty_index(real)
    me = os.getpid()
    holders: dict[int, Holder] = {}
    complete = True
    try:
        pids = [int(p.name) for p in proc_root.iterdir() if p.name.isdigit()]
    except OSError:
        return [], False
    for pid in pids:
        if pid == me:
            continue
        if deadline is not None and time.monotonic() > deadline:
            complete = False
            break
        proc = proc_root / str(pid)
        try:
            fds = list((proc / "fd").iterdir())
        except PermissionError:
            complete = False
            continue
        except OSError:
            continue  # gone meanwhile
        held = False
        for fd in fds:
            try:
                if os.readlink(fd) == real:
                    held = True
                    break
            except OSError:
                continue
        if not held:
            continue
        if index is not None and _holds_master(proc / "fd", proc / "fdinfo", index):
            continue  # the other end of a pseudo-terminal (a simulator, socat)
        command, agent = _command(proc)
        holders[pid] = Holder(pid, command, agent, "open")
    for lock_dir in lock_dirs:
        lock = lock_dir / f"LCK..{Path(real).name}"
        try:
            locker = lock_pid(lock.read_bytes()[:64])
        except OSError:
            continue
        if locker is None or locker == me or locker in holders:
            continue
        if not (proc_root / str(locker)).exists():
            continue  # a stale lock does not hold anything
        command, agent = _command(proc_root / str(locker))
        holders[locker] = Holder(locker, command, agent, "lock")
    return sorted(holders.values(), key=lambda h: h.pid), complete


def check_holders(
    spec: PortSpec,
    *,
    proc_root: Path = Path("/proc"),
    lock_dirs: Sequence[Path] = LOCK_DIRS,
    deadline: float | None = None,
) -> tuple[Result, list[Holder]]:
    """No process but the agent holds the port; returns the holders too."""
    holders, complete = find_holders(
        spec.port, proc_root=proc_root, lock_dirs=lock_dirs, deadline=deadline
    )
    others = [h for h in holders if not h.agent]
    listed = ", ".join(f"PID {h.pid} ({h.command})" for h in (others or holders))
    values = {"port": spec.port, "holders": listed}
    if others:
        pid = others[0].pid
        return Result(
            "serial.free",
            spec.subject,
            Status.FAIL,
            "port_held",
            "fix_port_held",
            {**values, "pid": pid},
        ), holders
    if holders:
        return Result(
            "serial.free", spec.subject, Status.OK, "port_held_by_agent", None, values
        ), holders
    if not complete:
        return Result(
            "serial.free", spec.subject, Status.WARN, "port_free_partial", "fix_run_as_root", values
        ), holders
    return Result("serial.free", spec.subject, Status.OK, "port_free", None, values), holders


def _listen(port: CapturePort, seconds: float, clock: Callable[[], float]) -> bytes:
    data = bytearray()
    end = clock() + seconds
    while (left := end - clock()) > 0 and len(data) < 4096:
        data += port.read(min(left, 0.1))
    return bytes(data)


def _guess(
    port: CapturePort, configured: LineSettings, seconds: float, clock: Callable[[], float]
) -> LineSettings | None:
    # A short detection over the other baud rates, most common first.
    bauds = [b for b in BAUDRATES if b != configured.baudrate]
    detector = Detector(bauds=bauds, rounds=1, sample_bytes=96, burst_gap_s=0.3)
    end = clock() + seconds
    while clock() < end:
        for event in detector.events():
            if isinstance(event, Listening):
                try:
                    port.configure(event.settings)
                except SettingsRefused:
                    detector.port_refused()
            elif isinstance(event, Decided):
                return event.decision.settings
        if detector.done:
            return detector.decision.settings if detector.decision else None
        now = clock()
        data = port.read(min(0.1, max(0.0, end - now)))
        if data:
            detector.receive_data(data, clock())
        else:
            detector.tick(clock())
    return detector.give_up().settings


def check_traffic(
    spec: PortSpec,
    *,
    listen_s: float = 3.0,
    guess_s: float = 8.0,
    opener: Callable[[str], CapturePort] = SerialCapturePort,
    clock: Callable[[], float] = time.monotonic,
) -> Result:
    """Bytes arrive within ``listen_s`` and read as text at the configured settings.

    The port is opened exclusively at the configured baud rate and 8N1 (every port can;
    the character format is inferred from the bytes, as ``capture`` does).
    """
    configured = spec.settings
    values: dict[str, object] = {
        "port": spec.port,
        "settings": str(configured),
        "seconds": listen_s,
    }
    port = opener(spec.port)
    try:
        try:
            port.configure(LineSettings(configured.baudrate))
            data = _listen(port, listen_s, clock)
        except PortError as exc:
            return Result(
                "serial.bytes",
                spec.subject,
                Status.FAIL,
                "port_open_failed",
                "fix_port_open",
                {**values, "error": str(exc)},
            )
        values["size"] = len(data)
        if not data:
            return Result(
                "serial.bytes", spec.subject, Status.WARN, "port_silent", "fix_port_silent", values
            )
        found = assess(data, configured.baudrate)
        values["quality"] = round(100 * found.quality)
        if found.verdict != "garbage":
            values["found"] = str(found.settings)
            if found.settings.format == configured.format or found.verdict == "unsure":
                return Result("serial.bytes", spec.subject, Status.OK, "port_text", None, values)
            return Result(
                "serial.bytes",
                spec.subject,
                Status.FAIL,
                "port_wrong_format",
                "fix_port_settings",
                values,
            )
        try:
            guess = _guess(port, configured, guess_s, clock)
        except PortError as exc:
            values["error"] = str(exc)
            guess = None
    finally:
        port.close()
    if guess is None or guess == configured:
        return Result(
            "serial.bytes", spec.subject, Status.FAIL, "port_garbage", "fix_port_cable", values
        )
    values["found"] = str(guess)
    return Result(
        "serial.bytes", spec.subject, Status.FAIL, "port_garbage_guess", "fix_port_settings", values
    )


def check_port(
    spec: PortSpec,
    user: ServiceUser,
    *,
    listen_s: float = 3.0,
    guess_s: float = 8.0,
    proc_root: Path = Path("/proc"),
    lock_dirs: Sequence[Path] = LOCK_DIRS,
    opener: Callable[[str], CapturePort] = SerialCapturePort,
) -> list[Result]:
    """Every check of one port, in order, stopping where the rest would mean nothing."""
    results = [check_exists(spec)]
    if results[-1].failed:
        return results
    results.append(check_access(spec, user))
    held, holders = check_holders(
        spec, proc_root=proc_root, lock_dirs=lock_dirs, deadline=time.monotonic() + 5.0
    )
    results.append(held)
    if holders:
        return results  # listening would take bytes from whoever holds it
    if not os.access(spec.port, os.R_OK | os.W_OK):
        results.append(
            Result(
                "serial.bytes",
                spec.subject,
                Status.WARN,
                "port_not_listened",
                "fix_run_as_root",
                {"port": spec.port},
            )
        )
        return results
    results.append(check_traffic(spec, listen_s=listen_s, guess_s=guess_s, opener=opener))
    return results

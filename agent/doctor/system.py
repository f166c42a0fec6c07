"""System checks: the clock, free disk, SD-card wear hints and the systemd unit.

Theory of operation
-------------------

- *Clock*: ``timedatectl show`` (systemd-timedated's ``NTPSynchronized``) when it
  answers, else the kernel's own view through ``adjtimex`` (read-only: ``modes`` 0),
  whose state is ``TIME_ERROR`` and status has ``STA_UNSYNC`` while no time service has
  disciplined the clock. When neither answers, the check says it cannot tell. A wall
  clock earlier than the agent's installation is wrong whatever the sources say.
- *Disk*: ``statvfs`` of the data dir: the space left to unprivileged users, against
  fixed floors and against the outbox quota (an outbox that cannot reach its quota
  drops nothing but fills the disk first).
- *Storage*: the data dir's block device, from its ``st_dev`` through
  ``/sys/dev/block/MAJOR:MINOR``: on an ``mmcblk`` device (SD card or eMMC) the outbox's
  ``synchronous`` mode is weighed (``full`` syncs every commit: more wear).
- *Unit*: ``systemctl is-active`` when systemd runs the machine (``/run/systemd/system``
  exists), else it says so.

Outside programs run with a timeout; their output is parsed by total functions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.doctor.result import Result, Status

__all__ = [
    "ClockState",
    "Runner",
    "check_clock",
    "check_disk",
    "check_storage",
    "check_systemd",
    "kernel_clock",
    "parse_timedatectl",
    "run_program",
]

#: Kernel clock state meaning "not synchronised" (``adjtimex`` return value).
TIME_ERROR = 5
#: ``timex.status`` bit: the clock is not synchronised.
STA_UNSYNC = 0x0040
#: Free space below these fails the check; below the WARN ones it warns.
FAIL_FREE_MB = 100.0
FAIL_FREE_SHARE = 0.05
WARN_FREE_MB = 500.0
WARN_FREE_SHARE = 0.15

#: Runs a program: ``(argv, timeout_s)`` to ``(status, stdout)``, or ``None``.
Runner = Callable[[Sequence[str], float], "tuple[int, str] | None"]


def run_program(argv: Sequence[str], timeout_s: float) -> tuple[int, str] | None:
    """Run ``argv``: its exit status and standard output, or ``None`` (missing, timed out)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout


@dataclass(frozen=True, slots=True)
class ClockState:
    """What a time source says about the clock.

    Attributes:
        synchronized: ``True``/``False``, or ``None`` when it does not say.
        ntp: Whether network time is switched on, if said.
        source: ``timedatectl`` or ``adjtimex``.
    """

    synchronized: bool | None
    ntp: bool | None
    source: str


def _yes_no(value: str | None) -> bool | None:
    if value is None:
        return None
    return {"yes": True, "no": False}.get(value.strip().lower())


def parse_timedatectl(text: str) -> ClockState:
    """Read ``timedatectl show``'s ``Key=value`` lines; unknown or odd lines are ignored."""
    keys: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            keys[key.strip()] = value
    return ClockState(
        synchronized=_yes_no(keys.get("NTPSynchronized")),
        ntp=_yes_no(keys.get("NTP")),
        source="timedatectl",
    )


class _Timex(ctypes.Structure):
    # struct timex: modes, then longs; status is the int after four longs. The rest is
    # padding big enough for every architecture's layout.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_byte * 256),
    ]


def kernel_clock() -> ClockState | None:
    """The kernel's synchronisation state from ``adjtimex`` (read only), if available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        state = int(libc.adjtimex(ctypes.byref(timex)))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    unsynced = state == TIME_ERROR or bool(timex.status & STA_UNSYNC)
    return ClockState(synchronized=not unsynced, ntp=None, source="adjtimex")


def _install_floor() -> float:
    # When this copy of the agent was installed: the clock cannot be earlier.
    return Path(__file__).stat().st_mtime


def check_clock(
    *,
    run: Runner = run_program,
    kernel: Callable[[], ClockState | None] = kernel_clock,
    now: Callable[[], float] = time.time,
    floor_s: float | None = None,
    timeout_s: float = 3.0,
) -> Result:
    """The clock is synchronised (and not before the installation)."""
    wall = now()
    floor = _install_floor() if floor_s is None else floor_s
    values: dict[str, object] = {"now": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))}
    if wall < floor:
        values["floor"] = time.strftime("%Y-%m-%d", time.gmtime(floor))
        return Result(
            "clock.sync", "clock", Status.FAIL, "clock_before_floor", "fix_clock_set", values
        )
    state: ClockState | None = None
    answer = run(["timedatectl", "show"], timeout_s)
    if answer is not None and answer[0] == 0:
        parsed = parse_timedatectl(answer[1])
        if parsed.synchronized is not None:
            state = parsed
    if state is None:
        state = kernel()
    if state is None or state.synchronized is None:
        return Result(
            "clock.sync", "clock", Status.WARN, "clock_unknown", "fix_clock_unknown", values
        )
    values["source"] = state.source
    if state.synchronized:
        return Result("clock.sync", "clock", Status.OK, "clock_synced", None, values)
    fix = "fix_clock_ntp_off" if state.ntp is False else "fix_clock_unsynced"
    return Result("clock.sync", "clock", Status.WARN, "clock_unsynced", fix, values)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(
    data_dir: Path,
    *,
    quota_mb: float,
    statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
) -> Result:
    """Free space on the data dir's filesystem."""
    where = _existing(data_dir)
    values: dict[str, object] = {"path": str(data_dir)}
    try:
        vfs = statvfs(where)
    except OSError as exc:
        values["error"] = exc.strerror
        return Result(
            "disk.free", "disk", Status.FAIL, "disk_unreadable", "fix_disk_missing", values
        )
    total = vfs.f_blocks * vfs.f_frsize
    free = vfs.f_bavail * vfs.f_frsize
    share = free / total if total else 0.0
    free_mb = free / 1e6
    values |= {"free_mb": round(free_mb), "share": round(100 * share), "quota_mb": quota_mb}
    if where != data_dir:
        return Result("disk.free", "disk", Status.WARN, "disk_no_dir", "fix_disk_missing", values)
    if free_mb < FAIL_FREE_MB or share < FAIL_FREE_SHARE:
        return Result("disk.free", "disk", Status.FAIL, "disk_low", "fix_disk_low", values)
    if free_mb < WARN_FREE_MB or share < WARN_FREE_SHARE:
        return Result("disk.free", "disk", Status.WARN, "disk_low", "fix_disk_low", values)
    if free_mb < quota_mb:
        return Result(
            "disk.free", "disk", Status.WARN, "disk_below_quota", "fix_disk_quota", values
        )
    return Result("disk.free", "disk", Status.OK, "disk_ok", None, values)


def block_device(path: Path, *, sys_root: Path = Path("/sys")) -> str | None:
    """The whole block device (``mmcblk0``, ``sda``) holding ``path``, if one does."""
    try:
        dev = os.stat(_existing(path)).st_dev
    except OSError:
        return None
    node = sys_root / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    try:
        real = node.resolve(strict=True)
    except OSError:
        return None
    if (real / "partition").exists():
        real = real.parent
    return real.name


def check_storage(data_dir: Path, *, synchronous: str, sys_root: Path = Path("/sys")) -> Result:
    """Whether the data dir is on an SD card or eMMC, and what that asks of the outbox."""
    device = block_device(data_dir, sys_root=sys_root)
    values: dict[str, object] = {
        "path": str(data_dir),
        "device": device or "-",
        "synchronous": synchronous,
    }
    if device is None:
        return Result("disk.storage", "disk", Status.OK, "storage_unknown", None, values)
    if not device.startswith("mmcblk"):
        return Result("disk.storage", "disk", Status.OK, "storage_not_sd", None, values)
    if synchronous == "full":
        return Result(
            "disk.storage", "disk", Status.WARN, "storage_sd_full", "fix_storage_sd", values
        )
    return Result("disk.storage", "disk", Status.OK, "storage_sd_normal", None, values)


def check_systemd(
    unit: str = "coffee-telemetry",
    *,
    run: Runner = run_program,
    booted: Callable[[], bool] = lambda: Path("/run/systemd/system").is_dir(),
    timeout_s: float = 5.0,
) -> Result:
    """The unit is active (when systemd runs this machine)."""
    values: dict[str, object] = {"unit": unit}
    if not booted():
        return Result("systemd.unit", "systemd", Status.WARN, "systemd_absent", None, values)
    answer = run(["systemctl", "is-active", unit], timeout_s)
    if answer is None:
        return Result("systemd.unit", "systemd", Status.WARN, "systemd_no_answer", None, values)
    state = (answer[1].strip().splitlines() or ["unknown"])[0][:40]
    values["state"] = state
    if state == "active":
        return Result("systemd.unit", "systemd", Status.OK, "systemd_active", None, values)
    if state in ("activating", "reloading", "deactivating"):
        return Result(
            "systemd.unit", "systemd", Status.WARN, "systemd_state", "fix_systemd_wait", values
        )
    return Result(
        "systemd.unit", "systemd", Status.FAIL, "systemd_state", "fix_systemd_start", values
    )

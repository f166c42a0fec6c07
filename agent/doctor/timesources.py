"""Time-source checks: one line per source in ``[agent] time_sources``, with its fix.

What each line looks at (the same rules the agent's clock applies,
``agent.timekeeping``; nothing here writes to a device or sets a clock):

- ``ntp``: the kernel's synchronisation state (``system.kernel_clock``, ``adjtimex``).
- ``system``: the wall clock as it is: not before the release date.
- ``rtc``: whether the kernel set the clock from a battery clock at boot.
- ``gps``: the receiver's port exists and no other process holds it (``gpsd`` often
  does); then up to ``listen_s`` of its bytes through ``drivers.nmea``: a time with a
  fix (and how far the clock is from it), no fix (RMC ``V``), bytes but no sentence (a
  wrong baud rate) or nothing at all. A port the agent holds is not listened to.
- ``modem``: the ``[notify.sms]`` modem's port exists. Its clock is asked only by the
  running agent, between SMS commands (``AT+CCLK?``): the doctor does not write to it.
- ``user``: a person may set the time on the Dispositivos page while no other source
  answers.

Any time a source shows, and the wall clock for ``ntp`` and ``system``, is judged
against the floor and the ceiling: before the release date or beyond it plus
``MAX_LIFE_NS`` is a warning with its fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from coffee_telemetry.agent.config import Config, TimeGpsConfig
from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.doctor.serialports import LOCK_DIRS, find_holders
from coffee_telemetry.agent.doctor.system import ClockState, kernel_clock
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.onboard.capture import CapturePort, SerialCapturePort
from coffee_telemetry.agent.onboard.lineformat import LineSettings
from coffee_telemetry.agent.timekeeping import FLOOR_NS, MAX_LIFE_NS, NS, rtc_set_clock
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.nmea import GpsTime, NmeaParser

__all__ = ["check_gps", "check_time_sources"]


def _iso(ts_ns: int) -> str:
    try:
        return datetime.fromtimestamp(ts_ns / NS, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return f"{ts_ns // NS} s"


def _result(
    source: str, status: Status, message: str, fix: str | None, values: dict[str, object]
) -> Result:
    return Result(f"time.{source}", f"time:{source}", status, message, fix, values)


def _bounds(source: str, ts_ns: int, floor_ns: int, values: dict[str, object]) -> Result | None:
    """A warning when ``ts_ns`` is before the floor or past the ceiling, else None."""
    values = {**values, "time": _iso(ts_ns), "floor": _iso(floor_ns)}
    if ts_ns < floor_ns:
        return _result(source, Status.WARN, "time_before_floor", "fix_time_bounds", values)
    if ts_ns > floor_ns + MAX_LIFE_NS:
        values["ceiling"] = _iso(floor_ns + MAX_LIFE_NS)
        return _result(source, Status.WARN, "time_after_ceiling", "fix_time_bounds", values)
    return None


def check_gps(
    gps: TimeGpsConfig,
    *,
    listen_s: float = 3.0,
    opener: Callable[[str], CapturePort] = SerialCapturePort,
    now_ns: Callable[[], int] = time.time_ns,
    floor_ns: int = FLOOR_NS,
    proc_root: Path = Path("/proc"),
    lock_dirs: Sequence[Path] = LOCK_DIRS,
    clock: Callable[[], float] = time.monotonic,
) -> Result:
    """The GPS receiver's port, and what it says within ``listen_s`` (module docstring)."""
    values: dict[str, object] = {"port": gps.port, "baud": gps.baud, "seconds": listen_s}
    if not Path(gps.port).exists():
        return _result("gps", Status.FAIL, "time_gps_port_missing", "fix_time_gps_port", values)
    holders, _ = find_holders(
        gps.port, proc_root=proc_root, lock_dirs=lock_dirs, deadline=clock() + 5.0
    )
    if holders:
        values["holders"] = ", ".join(f"PID {h.pid} ({h.command})" for h in holders)
        if all(h.agent for h in holders):
            return _result("gps", Status.OK, "time_gps_held_by_agent", None, values)
        return _result("gps", Status.FAIL, "time_gps_held", "fix_time_gps_held", values)
    parser = NmeaParser()
    got = bytearray()
    no_fix = False
    port = opener(gps.port)
    try:
        port.configure(LineSettings(gps.baud))
        end = clock() + listen_s
        while (left := end - clock()) > 0:
            data = port.read(min(left, 0.1))
            got += data[: max(0, 4096 - len(got))]
            parser.receive_data(data)
            for event in parser.events():
                if isinstance(event, GpsTime):
                    return _fixed(event, now_ns(), floor_ns, values)
                if isinstance(event, Discarded) and event.reason == "no-fix":
                    no_fix = True
    except PortError as exc:
        values["error"] = str(exc)
        return _result("gps", Status.FAIL, "time_gps_open_failed", "fix_time_gps_open", values)
    finally:
        port.close()
    values["size"] = len(got)
    if no_fix:
        return _result("gps", Status.WARN, "time_gps_no_fix", "fix_time_gps_sky", values)
    if not got:
        return _result("gps", Status.WARN, "time_gps_silent", "fix_time_gps_silent", values)
    if parser.sentences_skipped or parser.frames_ok:
        # Sentences, but no RMC or ZDA: a receiver set to print positions only.
        return _result("gps", Status.WARN, "time_gps_no_time", "fix_time_gps_rmc", values)
    return _result("gps", Status.WARN, "time_gps_garbage", "fix_time_gps_baud", values)


def _fixed(event: GpsTime, now: int, floor_ns: int, values: dict[str, object]) -> Result:
    if (refused := _bounds("gps", event.utc_ns, floor_ns, values)) is not None:
        return refused
    values = {**values, "time": _iso(event.utc_ns), "offset_s": round((now - event.utc_ns) / NS, 1)}
    return _result("gps", Status.OK, "time_gps_fix", None, values)


def check_time_sources(
    cfg: Config,
    *,
    listen: bool = True,
    listen_s: float = 3.0,
    opener: Callable[[str], CapturePort] = SerialCapturePort,
    kernel: Callable[[], ClockState | None] = kernel_clock,
    rtc: Callable[[], bool] = rtc_set_clock,
    now_ns: Callable[[], int] = time.time_ns,
    floor_ns: int = FLOOR_NS,
    proc_root: Path = Path("/proc"),
    lock_dirs: Sequence[Path] = LOCK_DIRS,
) -> list[Result]:
    """One result per configured time source, in ``time_sources`` order."""
    results = []
    for source in cfg.agent.time_sources:
        values: dict[str, object] = {"now": _iso(now_ns())}
        if source == "ntp":
            state = kernel()
            if state is None or state.synchronized is None:
                results.append(
                    _result("ntp", Status.WARN, "time_ntp_unknown", "fix_clock_unknown", values)
                )
            elif not state.synchronized:
                results.append(
                    _result("ntp", Status.WARN, "time_ntp_unsynced", "fix_time_ntp", values)
                )
            else:
                wall = _bounds("ntp", now_ns(), floor_ns, values)
                results.append(wall or _result("ntp", Status.OK, "time_ntp_ok", None, values))
        elif source == "system":
            wall = _bounds("system", now_ns(), floor_ns, values)
            results.append(wall or _result("system", Status.OK, "time_system_ok", None, values))
        elif source == "rtc":
            if rtc():
                wall = _bounds("rtc", now_ns(), floor_ns, values)
                results.append(wall or _result("rtc", Status.OK, "time_rtc_ok", None, values))
            else:
                results.append(
                    _result("rtc", Status.WARN, "time_rtc_unset", "fix_time_rtc", values)
                )
        elif source == "gps":
            gps = cfg.agent.time_gps
            if gps is None:  # config refuses this; kept total
                results.append(
                    _result("gps", Status.FAIL, "time_gps_unset", "fix_time_gps_port", values)
                )
            elif not listen:
                results.append(
                    _result(
                        "gps",
                        Status.OK,
                        "time_gps_not_listened",
                        None,
                        {**values, "port": gps.port},
                    )
                )
            else:
                results.append(
                    check_gps(
                        gps,
                        listen_s=listen_s,
                        opener=opener,
                        now_ns=now_ns,
                        floor_ns=floor_ns,
                        proc_root=proc_root,
                        lock_dirs=lock_dirs,
                    )
                )
        elif source == "modem":
            results.append(_modem(cfg))
        else:  # user
            results.append(_result("user", Status.OK, "time_user_ok", None, values))
    return results


def _modem(cfg: Config) -> Result:
    sms = cfg.notify.sms
    if sms is None:
        return _result("modem", Status.FAIL, "time_modem_unset", "fix_time_modem_unset", {})
    values: dict[str, object] = {"port": sms.port}
    if not Path(sms.port).exists():
        return _result(
            "modem", Status.FAIL, "time_modem_port_missing", "fix_time_modem_port", values
        )
    return _result("modem", Status.OK, "time_modem_present", None, values)

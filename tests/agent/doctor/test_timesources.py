"""Time-source checks: one line per configured source, each state provoked.

The GPS cases run a simulated receiver (``simulators.gps``) on a real pseudo-terminal
while the blocking check listens in a thread, as the CLI runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coffee_telemetry.agent.config import Config, TimeGpsConfig, parse_config
from coffee_telemetry.agent.doctor import timesources
from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.doctor.run import Options, plan
from coffee_telemetry.agent.doctor.serialports import service_user
from coffee_telemetry.agent.doctor.system import ClockState
from coffee_telemetry.agent.doctor.texts import MESSAGES, render
from coffee_telemetry.agent.doctor.timesources import check_gps, check_time_sources
from coffee_telemetry.agent.timekeeping import FLOOR_NS, MAX_LIFE_NS, NS
from coffee_telemetry.drivers.nmea import encode_sentence
from coffee_telemetry.simulators.gps import GpsSim
from coffee_telemetry.simulators.pty import PtyPort


def config(
    tmp: Path, sources: list[str], *, gps: str | None = None, modem: str | None = None
) -> Config:
    agent: dict[str, object] = {"data_dir": str(tmp / "data"), "time_sources": sources}
    if gps is not None:
        agent["time_gps"] = {"port": gps, "baud": 9600}
    doc: dict[str, object] = {
        "site": {"id": "s1", "name": "Cooperativa", "timezone": "America/Sao_Paulo"},
        "agent": agent,
        "mqtt": {"enabled": False},
    }
    if modem is not None:
        doc["notify"] = {"sms": {"port": modem}}
    return parse_config(doc)


@contextlib.contextmanager
def receiver(tmp: Path) -> Iterator[GpsSim]:
    port = PtyPort(link=tmp / "gps")
    port.open()
    try:
        yield GpsSim(port, talker="GN")
    finally:
        port.close()


@contextlib.asynccontextmanager
async def printing(sim: GpsSim, interval_s: float = 0.2) -> AsyncIterator[GpsSim]:
    """The receiver prints a burst every ``interval_s`` for the block's length."""

    async def later() -> None:
        await asyncio.sleep(0.2)  # once the check has the port open
        await sim.run(interval_s=interval_s)

    task = asyncio.create_task(later())
    try:
        yield sim
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def gps_cfg(tmp: Path) -> TimeGpsConfig:
    return TimeGpsConfig(port=str(tmp / "gps"), baud=9600)


async def test_a_receiver_with_a_fix_is_ok_with_the_clocks_offset(tmp_path: Path) -> None:
    with receiver(tmp_path) as sim:
        sim.offset_s = -3.0  # the box's clock is 3 s ahead of the receiver's
        async with printing(sim):
            result = await asyncio.to_thread(check_gps, gps_cfg(tmp_path), listen_s=3.0)
    assert (result.check, result.subject, result.status) == ("time.gps", "time:gps", Status.OK)
    assert result.message == "time_gps_fix"
    assert 2.0 <= float(str(result.values["offset_s"])) <= 4.5
    assert render(result, "pt-BR").startswith("OK     time:gps: GPS com fix: ")
    assert "clock minus GPS" in render(result, "en")


async def test_a_receiver_without_a_fix_says_where_to_put_the_antenna(tmp_path: Path) -> None:
    with receiver(tmp_path) as sim:
        sim.fix = False
        async with printing(sim):
            result = await asyncio.to_thread(check_gps, gps_cfg(tmp_path), listen_s=1.0)
    assert (result.status, result.message, result.fix) == (
        Status.WARN,
        "time_gps_no_fix",
        "fix_time_gps_sky",
    )
    assert "céu" in render(result, "pt-BR")
    assert "sky" in render(result, "en")


async def test_a_receiver_with_the_week_roll_over_bug_is_not_believed(tmp_path: Path) -> None:
    with receiver(tmp_path) as sim:
        sim.week_rollover = True
        async with printing(sim):
            result = await asyncio.to_thread(check_gps, gps_cfg(tmp_path), listen_s=3.0)
    assert (result.status, result.message) == (Status.WARN, "time_before_floor")
    assert result.fix == "fix_time_bounds"


async def test_a_receiver_decades_ahead_is_not_believed(tmp_path: Path) -> None:
    with receiver(tmp_path) as sim:
        sim.offset_s = (MAX_LIFE_NS // NS) + 5 * 365 * 86400
        async with printing(sim):
            result = await asyncio.to_thread(check_gps, gps_cfg(tmp_path), listen_s=3.0)
    assert (result.status, result.message) == (Status.WARN, "time_after_ceiling")


async def test_a_silent_receiver_and_garbage_at_the_wrong_baud(tmp_path: Path) -> None:
    with receiver(tmp_path) as sim:
        result = await asyncio.to_thread(check_gps, gps_cfg(tmp_path), listen_s=0.5)
        assert (result.status, result.message) == (Status.WARN, "time_gps_silent")
        listening = asyncio.create_task(
            asyncio.to_thread(check_gps, gps_cfg(tmp_path), listen_s=1.0)
        )
        await asyncio.sleep(0.3)  # once the check has the port open
        sim.port.write(bytes(range(128, 256)) * 4)  # what a 4800-baud receiver looks like
        result = await listening
    assert (result.status, result.message, result.fix) == (
        Status.WARN,
        "time_gps_garbage",
        "fix_time_gps_baud",
    )


async def test_sentences_without_time_ask_for_rmc(tmp_path: Path) -> None:
    with receiver(tmp_path) as sim:
        gsv = encode_sentence("GPGSV,1,1,03,10,45,120,38,12,30,210,33,24,60,045,41")
        listening = asyncio.create_task(
            asyncio.to_thread(check_gps, gps_cfg(tmp_path), listen_s=1.0)
        )
        await asyncio.sleep(0.3)
        sim.port.write(gsv * 5)  # satellites in view, but no RMC or ZDA
        result = await listening
    assert (result.message, result.fix) == ("time_gps_no_time", "fix_time_gps_rmc")


def test_a_missing_gps_port_fails(tmp_path: Path) -> None:
    result = check_gps(gps_cfg(tmp_path), listen_s=0.1)
    assert (result.status, result.message, result.fix) == (
        Status.FAIL,
        "time_gps_port_missing",
        "fix_time_gps_port",
    )
    assert render(result, "pt-BR").startswith("FALHA  time:gps: GPS: ")
    assert "não existe" in render(result, "pt-BR")


def test_every_configured_source_has_its_line(tmp_path: Path) -> None:
    modem = tmp_path / "modem"
    cfg = config(
        tmp_path,
        ["ntp", "gps", "rtc", "modem", "user"],
        gps=str(tmp_path / "no-gps"),
        modem=str(modem),
    )
    now = FLOOR_NS + 86400 * NS

    def run(synced: bool | None, rtc: bool) -> list[Result]:
        return check_time_sources(
            cfg,
            listen_s=0.1,
            kernel=lambda: ClockState(synchronized=synced, ntp=None, source="adjtimex"),
            rtc=lambda: rtc,
            now_ns=lambda: now,
        )

    results = run(False, False)
    assert [(r.subject, r.status, r.message, r.fix) for r in results] == [
        ("time:ntp", Status.WARN, "time_ntp_unsynced", "fix_time_ntp"),
        ("time:gps", Status.FAIL, "time_gps_port_missing", "fix_time_gps_port"),
        ("time:rtc", Status.WARN, "time_rtc_unset", "fix_time_rtc"),
        ("time:modem", Status.FAIL, "time_modem_port_missing", "fix_time_modem_port"),
        ("time:user", Status.OK, "time_user_ok", None),
    ]
    modem.touch()
    results = run(True, True)
    assert [(r.subject, r.status, r.message) for r in results if r.subject != "time:gps"] == [
        ("time:ntp", Status.OK, "time_ntp_ok"),
        ("time:rtc", Status.OK, "time_rtc_ok"),
        ("time:modem", Status.OK, "time_modem_present"),
        ("time:user", Status.OK, "time_user_ok"),
    ]
    unknown = run(None, True)[0]
    assert (unknown.status, unknown.message) == (Status.WARN, "time_ntp_unknown")
    for result in [*run(False, False), *run(True, True)]:
        assert render(result, "pt-BR") != render(result, "en")


@pytest.mark.parametrize(
    ("wall", "message"),
    [(FLOOR_NS - NS, "time_before_floor"), (FLOOR_NS + MAX_LIFE_NS + NS, "time_after_ceiling")],
)
def test_the_kernels_clock_out_of_bounds_warns_for_ntp_and_system(
    tmp_path: Path, wall: int, message: str
) -> None:
    cfg = config(tmp_path, ["ntp", "system"])
    results = check_time_sources(
        cfg,
        kernel=lambda: ClockState(synchronized=True, ntp=True, source="adjtimex"),
        now_ns=lambda: wall,
    )
    assert [(r.status, r.message, r.fix) for r in results] == [
        (Status.WARN, message, "fix_time_bounds"),
        (Status.WARN, message, "fix_time_bounds"),
    ]
    assert " — correção: compare com um celular" in render(results[0], "pt-BR")
    assert " — fix: compare with a phone" in render(results[0], "en")


def test_without_listening_the_gps_line_says_so_and_no_modem_config_fails(tmp_path: Path) -> None:
    cfg = config(tmp_path, ["gps", "user"], gps=str(tmp_path / "gps"))
    results = check_time_sources(cfg, listen=False)
    assert results[0].message == "time_gps_not_listened"
    cfg = config(tmp_path, ["user"])
    object.__setattr__(cfg.agent, "time_sources", ("modem",))  # a config the parser refuses
    assert check_time_sources(cfg)[0].message == "time_modem_unset"


def test_the_doctor_plans_the_time_sources(tmp_path: Path) -> None:
    cfg = config(tmp_path, ["user"])
    checks = plan(cfg, Options(user=service_user(None)))
    time_checks = [c for c in checks if c.check == "time"]
    assert len(time_checks) == 1
    assert [r.message for r in time_checks[0].run()] == ["time_user_ok"]


def test_every_key_is_in_the_catalogue_in_both_languages() -> None:
    source = Path(str(timesources.__file__)).read_text(encoding="utf-8")
    used = set(re.findall(r'"((?:time|fix|clock)_[a-z_]+)"', source))
    assert used
    assert used - set(MESSAGES) == set()
    for key in used:
        pt, en = MESSAGES[key]
        assert set(re.findall(r"{(\w+)}", pt)) == set(re.findall(r"{(\w+)}", en)), key
        assert pt != en, key


def test_a_date_of_any_size_is_shown() -> None:
    assert timesources._iso(10**30).endswith(" s")
    assert timesources._iso(0) == datetime(1970, 1, 1, tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

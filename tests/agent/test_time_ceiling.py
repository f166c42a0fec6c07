"""No source is believed in the future beyond the ceiling (``TimeKeeper.ceiling_ns``).

One test per source kind the keeper can refuse (gps, modem, rtc, user), the kernel's
own clock flagged instead (ntp, system), the saved time widening the ceiling, the
dashboard's route answering ``after-ceiling``, and a Hypothesis run of offers and
settings in which no accepted time is ever beyond the ceiling.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.timekeeping import (
    CEILING_SLACK_NS,
    MAX_LIFE_NS,
    NS,
    TimeKeeper,
    TimeQuality,
    TimeRefused,
)
from tests.agent.web.test_clock_route import serve
from tests.agent.web.test_server import Client

FLOOR = 1_800_000_000 * NS
CEILING = FLOOR + MAX_LIFE_NS
EPOCH_1970 = 5 * NS
DAY = 86400 * NS


class Clocks:
    """A wall clock and a monotonic one, both moved by the test."""

    def __init__(self, wall: int = EPOCH_1970, *, synced: bool = False, rtc: bool = False) -> None:
        self.wall, self.mono, self.synced, self.rtc = wall, 1_000 * NS, synced, rtc

    def run(self, ns: int) -> None:
        self.wall += ns
        self.mono += ns

    def keeper(
        self,
        sources: Sequence[str] = ("ntp", "gps", "rtc", "modem", "user"),
        state_path: Path | None = None,
    ) -> TimeKeeper:
        return TimeKeeper(
            state_path=state_path,
            ntp=lambda: self.synced,
            wall_ns=lambda: self.wall,
            mono_ns=lambda: self.mono,
            floor_ns=FLOOR,
            sources=sources,
            rtc_set_clock=lambda: self.rtc,
        )


def source_doc(keeper: TimeKeeper, name: str) -> dict[str, object]:
    sources = keeper.health_doc()["sources"]
    assert isinstance(sources, dict)
    doc = sources[name]
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("source", ["gps", "modem"])
def test_a_wire_source_beyond_the_ceiling_is_refused_shown_and_logged_once(
    source: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = Clocks()
    keeper = c.keeper()
    provisional = keeper.now_ns()
    with caplog.at_level(logging.WARNING, logger="coffee_telemetry.agent.timekeeping"):
        for _ in range(3):  # a receiver with a wrong century says it every minute
            assert keeper.offer(source, CEILING + 365 * DAY, mono_ns=c.mono) is None
            c.run(60 * NS)
    assert keeper.quality is TimeQuality.PROVISIONAL
    assert keeper.now_ns() == provisional + 180 * NS
    doc = source_doc(keeper, source)
    assert doc["state"] == "refused"
    assert "after the latest believable time" in str(doc["detail"])
    assert "2048-01" in str(doc["detail"])  # the time it gave, to recognise the fault
    refusals = [r for r in caplog.records if f"Refusing the {source} time" in r.getMessage()]
    assert len(refusals) == 1
    # A believable time afterwards is taken as ever.
    assert keeper.offer(source, FLOOR + DAY, mono_ns=c.mono) is not None
    assert keeper.trusted
    assert source_doc(keeper, source)["state"] == "ok"


def test_a_wire_source_just_inside_the_ceiling_is_believed() -> None:
    c = Clocks()
    keeper = c.keeper()
    assert keeper.offer("gps", CEILING, mono_ns=c.mono) is not None
    assert keeper.now_ns() == CEILING


def test_a_battery_clock_beyond_the_ceiling_is_refused_and_not_the_estimate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Clocks(CEILING + 10 * 365 * DAY, rtc=True)
    with caplog.at_level(logging.WARNING, logger="coffee_telemetry.agent.timekeeping"):
        keeper = c.keeper()
    assert keeper.quality is TimeQuality.PROVISIONAL
    assert keeper.now_ns() == FLOOR  # the estimate does not take the wall clock either
    doc = source_doc(keeper, "rtc")
    assert doc["state"] == "refused"
    assert "battery clock" in str(doc["detail"])
    assert "after the latest believable time" in str(doc["detail"])
    assert any("Refusing the battery clock" in r.getMessage() for r in caplog.records)
    assert keeper.health_doc()["wall_beyond_ceiling"] is True


def test_a_battery_clock_within_the_ceiling_is_trusted() -> None:
    c = Clocks(FLOOR + DAY, rtc=True)
    keeper = c.keeper()
    assert (keeper.quality, keeper.source) == (TimeQuality.TRUSTED, "rtc")


def test_a_person_beyond_the_ceiling_is_refused_with_its_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Clocks()
    keeper = c.keeper()
    with (
        caplog.at_level(logging.WARNING, logger="coffee_telemetry.agent.timekeeping"),
        pytest.raises(TimeRefused) as refused,
    ):
        keeper.set_by_user("ana", CEILING + NS)
    assert refused.value.code == "after-ceiling"
    assert "check the device's clock" in str(refused.value)
    assert keeper.quality is TimeQuality.PROVISIONAL
    doc = source_doc(keeper, "user")
    assert doc["state"] == "refused"
    assert str(doc["detail"]).startswith("ana: ")
    assert any("Refusing the time 'ana' gave" in r.getMessage() for r in caplog.records)
    with pytest.raises(TimeRefused) as before:
        keeper.set_by_user("ana", FLOOR - NS)
    assert before.value.code == "before-floor"
    keeper.set_by_user("ana", FLOOR + DAY)
    assert source_doc(keeper, "user")["state"] == "ok"


def test_a_time_beyond_year_9999_is_refused_not_an_error() -> None:
    c = Clocks()
    keeper = c.keeper()
    assert keeper.offer("gps", 10**30, mono_ns=c.mono) is None
    assert "after 1970" in str(source_doc(keeper, "gps")["detail"])
    with pytest.raises(TimeRefused):
        keeper.set_by_user("ana", (2**53 - 1) * 1_000_000)


@pytest.mark.parametrize("source", ["ntp", "system"])
def test_the_kernels_clock_beyond_the_ceiling_is_kept_but_flagged(
    source: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = Clocks(CEILING + 30 * DAY, synced=True)
    sources = ("ntp", "user") if source == "ntp" else ("system", "user")
    with caplog.at_level(logging.WARNING, logger="coffee_telemetry.agent.timekeeping"):
        keeper = c.keeper(sources)
        for _ in range(3):
            c.run(5 * NS)
            keeper.poll()
    assert (keeper.quality, keeper.source) == (TimeQuality.TRUSTED, source)
    assert keeper.now_ns() == c.wall
    health = keeper.health_doc()
    assert health["wall_beyond_ceiling"] is True
    doc = source_doc(keeper, source)
    assert doc["state"] == "ok"
    assert "kernel's clock is after the latest believable time" in str(doc["detail"])
    flagged = [r for r in caplog.records if "The system clock" in r.getMessage()]
    assert len(flagged) == 1
    # Set right again, the flag goes.
    c.wall = FLOOR + DAY
    keeper.poll()
    assert keeper.health_doc()["wall_beyond_ceiling"] is False
    assert source_doc(keeper, source)["detail"] == ""


def test_the_saved_time_widens_the_ceiling_never_narrows_it(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    # A box in service past its 20 years, kept on time: its saved time is later.
    saved = CEILING + 400 * DAY
    path.write_text(json.dumps({"wall_ns": saved, "quality": "trusted"}))
    c = Clocks()
    keeper = c.keeper(state_path=path)
    c.run(DAY)
    assert keeper.ceiling_ns() == saved + DAY + CEILING_SLACK_NS
    assert keeper.offer("gps", saved + 4 * DAY, mono_ns=c.mono) is None  # beyond the slack
    assert keeper.offer("gps", saved + 2 * DAY, mono_ns=c.mono) is not None
    # A box stored off for months between harvests: an early saved time narrows nothing.
    path.write_text(json.dumps({"wall_ns": FLOOR + DAY, "quality": "trusted"}))
    c2 = Clocks()
    keeper2 = c2.keeper(state_path=path)
    assert keeper2.ceiling_ns() == CEILING
    assert keeper2.offer("gps", FLOOR + 300 * DAY, mono_ns=c2.mono) is not None


def test_a_trusted_anchor_near_the_ceiling_carries_it_along() -> None:
    c = Clocks()
    keeper = c.keeper()
    assert keeper.offer("gps", CEILING - NS, mono_ns=c.mono) is not None
    c.run(30 * DAY)  # twenty years and a month in the field, kept on time by the GPS
    assert keeper.ceiling_ns() == CEILING - NS + 30 * DAY + CEILING_SLACK_NS
    assert keeper.offer("gps", keeper.now_ns() + 5 * NS, mono_ns=c.mono) is not None


async def test_the_dashboard_answers_after_ceiling(tmp_path: Path) -> None:
    async with (
        serve(tmp_path) as clock,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        browser = Client(clock.base, session)
        await browser.login()
        wall_ms = (clock.keeper.ceiling_ns() + DAY) // 1_000_000
        status, doc = await browser.request(
            "POST", "/api/time", {"wall_ms": wall_ms, "confirmed": True}
        )
        assert isinstance(doc, dict)
        assert (status, doc["code"]) == (400, "after-ceiling")
        assert "after the latest believable time" in doc["error"]
        assert doc["time"]["sources"]["user"]["state"] == "refused"
        assert not clock.keeper.trusted


# -- property ----------------------------------------------------------------------------

TIMES = st.one_of(
    st.integers(0, 2**63 - 1),
    st.integers(FLOOR - DAY, CEILING + 10 * DAY),
    st.integers(CEILING - 10 * DAY, CEILING + 10 * DAY),
)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["gps", "modem", "user", "run", "poll"]),
        TIMES,
        st.integers(0, 3 * DAY),
    ),
    max_size=25,
)


@settings(max_examples=300)
@given(
    start_wall=TIMES,
    rtc=st.booleans(),
    saved=st.one_of(st.none(), st.integers(FLOOR, CEILING + 100 * DAY)),
    steps=STEPS,
)
def test_no_accepted_source_time_is_ever_beyond_the_ceiling(
    start_wall: int, rtc: bool, saved: int | None, steps: list[tuple[str, int, int]]
) -> None:
    c = Clocks(start_wall, rtc=rtc)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clock.json"
        if saved is not None:
            path.write_text(json.dumps({"wall_ns": saved, "quality": "trusted"}))
        keeper = c.keeper(("gps", "rtc", "modem", "user"), state_path=path)
    assert FLOOR <= keeper.now_ns() <= keeper.ceiling_ns()
    for kind, wall, run in steps:
        before = keeper.now_ns()
        ceiling = keeper.ceiling_ns()
        if kind in ("gps", "modem"):
            adj = keeper.offer(kind, wall, mono_ns=c.mono)
            if adj is not None:
                assert wall <= ceiling
            if keeper.states[kind].state == "standby":  # believed (a better one may set it)
                assert FLOOR <= wall <= ceiling
        elif kind == "user":
            try:
                keeper.set_by_user("ana", wall)
            except TimeRefused:
                assert keeper.now_ns() == before
            else:
                assert FLOOR <= wall <= ceiling
        elif kind == "run":
            c.run(run)
        else:
            keeper.poll()
        assert FLOOR <= keeper.now_ns() <= keeper.ceiling_ns()

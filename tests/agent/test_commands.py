"""The command boundary: bounds, topic levels, escaping, and that nothing escapes but a refusal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.commands import (
    MAX_COMMAND_BYTES,
    MAX_JSON_DEPTH,
    RATE_BURST,
    RATE_PER_S,
    Command,
    CommandBoundary,
    CommandRate,
    CommandRefused,
    Outgoing,
    RefusalLog,
    check_level,
    decode_payload,
    escape_level,
    json_depth,
    unescape_level,
)
from coffee_telemetry.agent.lots.service import LotService
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.readings import Reading, Stamper
from tests.fakes import stage


class Recorder:
    def __init__(self) -> None:
        self.accepted: list[Reading] = []
        self.states: list[Outgoing] = []

    async def accept(self, readings: object) -> None:
        assert isinstance(readings, list)
        self.accepted.extend(readings)


@pytest.fixture
def lots(tmp_path: Path) -> Iterator[tuple[LotService, LotStore, Recorder]]:
    store = LotStore.open(tmp_path / "lots.sqlite3")
    rec = Recorder()
    svc = LotService(
        store=store,
        stations={"recepcao"},
        site="s1",
        record=stage(rec.accept, Stamper(clock_ns=lambda: 1_000)).record,
        publish_state=rec.states.append,
        clock_ns=lambda: 5_000,
    )
    yield svc, store, rec
    store.close()


def doc(out: Outgoing) -> dict[str, object]:
    value = json.loads(out.payload)
    assert isinstance(value, dict)
    return value


# -- bounds before parsing -----------------------------------------------------------


def test_deep_nesting_is_refused_before_json_sees_it() -> None:
    poison = b"[" * (MAX_COMMAND_BYTES - 10)
    with pytest.raises(RecursionError):
        json.loads(poison)  # what crashed the agent before the boundary
    with pytest.raises(CommandRefused, match="nests deeper"):
        decode_payload(poison)
    with pytest.raises(CommandRefused, match="nests deeper"):
        decode_payload(b'{"lot": ' + b"{" * (MAX_JSON_DEPTH + 1) + b"}")
    assert decode_payload(b'{"a": [[["[[[[[[[[[[[[[["]]]}') == {"a": [[["[[[[[[[[[[[[[["]]]}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x" * (MAX_COMMAND_BYTES + 1), "over"),
        (b"\xff\xfe{}", "JSON"),
        (b'{"lot": NaN}', "JSON"),
        (b"[1]", "object"),
        (b'"lot"', "object"),
    ],
)
def test_payloads_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandRefused, match=reason):
        decode_payload(payload)


def test_empty_payload_is_an_empty_object() -> None:
    assert decode_payload(b"  \n") == {}


@given(st.binary(max_size=2 * MAX_COMMAND_BYTES))
def test_decode_payload_refuses_or_returns_an_object(data: bytes) -> None:
    with contextlib.suppress(CommandRefused):
        assert isinstance(decode_payload(data), dict)


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c),
        max_leaves=20,
    )
)
def test_json_depth_agrees_with_the_document(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    assert json_depth(json.dumps(value).encode()) == depth(value)


# -- topic levels and the escaping rule ----------------------------------------------


@pytest.mark.parametrize(
    ("level", "reason"),
    [
        ("", "empty"),
        ("a+b", "may not contain"),
        ("a#", "may not contain"),
        ("a/b", "may not contain"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x85b", "control"),
        ("a\u2028b", "control"),
        ("x" * 129, "longer"),
        ("é" * 65, "longer"),
    ],
)
def test_bad_levels(level: str, reason: str) -> None:
    with pytest.raises(CommandRefused, match=reason):
        check_level(level)


def test_escaping_rule() -> None:
    assert escape_level("L-0042/B") == "L-0042%2FB"
    assert escape_level("100%+#") == "100%25%2B%23"
    assert unescape_level("L-0042%2fB") == "L-0042/B"
    with pytest.raises(CommandRefused, match="bad escape"):
        unescape_level("L%41")
    with pytest.raises(CommandRefused, match="bad escape"):
        unescape_level("L%2")


@given(st.text())
def test_escape_round_trip(value: str) -> None:
    level = escape_level(value)
    assert not any(ch in level for ch in "/+#")
    assert unescape_level(level) == value


# -- the boundary --------------------------------------------------------------------


async def test_retained_commands_are_ignored(
    lots: tuple[LotService, LotStore, Recorder],
) -> None:
    svc, store, rec = lots
    boundary = CommandBoundary({"lot": svc.handle_command})
    out = await boundary.submit_topic(
        "lot/recepcao", b'{"lot": "L-1"}', source="mqtt", retained=True
    )
    assert out == []
    assert store.active() == {}
    assert rec.accepted == []
    assert boundary.stats.ignored_retained == 1


async def test_source_and_by_are_recorded(lots: tuple[LotService, LotStore, Recorder]) -> None:
    svc, store, _rec = lots
    boundary = CommandBoundary({"lot": svc.handle_command})
    reply = await boundary.submit(
        ("lot", "recepcao"), b'{"lot": "L-1", "by": "eve"}', source="web:maria", by="maria"
    )
    assert reply.ok
    assert reply.topic == "cmd/lot/recepcao/reply"
    active = store.active()["recepcao"]
    assert (active.set_by, active.source) == ("maria", "web:maria")  # the claim is ignored
    reply = await boundary.submit(
        ("lot", "recepcao"), b'{"lot": "L-2", "by": "joao"}', source="token:balanca", by="balanca"
    )
    assert (store.active()["recepcao"].set_by, store.active()["recepcao"].source) == (
        "joao",
        "token:balanca",
    )
    [out] = await boundary.submit_topic("lot/recepcao", b'{"lot": "L-3"}', source="mqtt")
    assert doc(out) == {"ok": True, "station": "recepcao", "lot": "L-3"}
    assert (store.active()["recepcao"].set_by, store.active()["recepcao"].source) == (
        "mqtt",
        "mqtt",
    )
    assert boundary.stats.accepted == 3


async def test_a_failing_handler_is_an_internal_error_reply() -> None:
    async def broken(cmd: Command) -> dict[str, object]:
        raise RuntimeError("disk on fire")

    async def recursive(cmd: Command) -> dict[str, object]:
        raise RecursionError

    boundary = CommandBoundary({"broken": broken, "deep": recursive})
    [out] = await boundary.submit_topic("broken/x", b"{}", source="mqtt")
    assert out.topic == "cmd/broken/x/reply"
    assert not out.retain
    assert doc(out) == {"ok": False, "error": "internal error"}
    reply = await boundary.submit(("deep",), b"{}", source="cli")
    assert reply.failed
    assert boundary.stats.failed == 2


async def test_subjects_with_a_slash_cross_one_level() -> None:
    seen: list[tuple[str, ...]] = []

    async def ack(cmd: Command) -> dict[str, object]:
        seen.append(cmd.path)
        return {}

    boundary = CommandBoundary({"ack": ack})
    [out] = await boundary.submit_topic("ack/wet_lot/L-0042%2FB", b"{}", source="mqtt")
    assert seen == [("ack", "wet_lot", "L-0042/B")]
    assert out.topic == "cmd/ack/wet_lot/L-0042%2FB/reply"
    # Raw, the slash makes another level: that is another command, refused by its handler.
    reply = await boundary.submit(("ack", "wet_lot", "a+b#"), b"{}", source="web:x", by="x")
    assert reply.topic == "cmd/ack/wet_lot/a%2Bb%23/reply"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rest=st.text(max_size=300) | st.lists(st.text(max_size=40), max_size=6).map("/".join),
    payload=st.binary(max_size=MAX_COMMAND_BYTES + 200)
    | st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=40),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["lot", "by", "x"]), c),
        max_leaves=30,
    ).map(lambda v: json.dumps(v).encode()),
    retained=st.booleans(),
)
def test_fuzz_nothing_escapes_but_a_refusal(rest: str, payload: bytes, retained: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LotStore.open(Path(tmp) / "lots.sqlite3")
        rec = Recorder()
        svc = LotService(
            store=store,
            stations={"recepcao"},
            site="s1",
            record=stage(rec.accept, Stamper()).record,
            publish_state=rec.states.append,
        )

        async def ack(cmd: Command) -> dict[str, object]:
            raise CommandRefused("no firing alert to acknowledge")

        boundary = CommandBoundary({"lot": svc.handle_command, "ack": ack})
        try:
            out = asyncio.run(
                boundary.submit_topic(rest, payload, source="mqtt", retained=retained)
            )
        finally:
            store.close()
    if retained:
        assert out == []
        return
    [reply] = out
    assert not reply.retain
    assert reply.topic.startswith("cmd/")
    assert reply.topic.endswith("reply")
    for level in reply.topic.split("/"):
        check_level(level)  # every reply can be published
    value = doc(reply)
    assert isinstance(value["ok"], bool)
    assert boundary.stats.failed == 0  # refused, never crashed


def test_refusal_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    now = [0.0]
    limited = RefusalLog(
        logging.getLogger("test.refusals"), burst=3, window_s=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for i in range(50):
            limited.warning("bad %d", i)
        now[0] = 11.0
        limited.warning("later")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["bad 0", "bad 1", "bad 2", "47 more refusals were not logged", "later"]


# -- the rate per target -------------------------------------------------------------


async def test_a_flood_of_good_commands_costs_a_few_rows(
    lots: tuple[LotService, LotStore, Recorder],
) -> None:
    svc, _store, rec = lots
    now = [0.0]
    rate = CommandRate(clock=lambda: now[0])
    boundary = CommandBoundary({"lot": svc.handle_command}, rate=rate)
    replies = [
        await boundary.submit_topic("lot/recepcao", f'{{"lot": "L-{i}"}}'.encode(), source="mqtt")
        for i in range(500)
    ]
    ok = [doc(r) for [r] in replies if doc(r)["ok"]]
    assert len(ok) == RATE_BURST
    assert len(rec.accepted) == RATE_BURST  # lot events: history rows and outbox records
    [refused] = replies[-1]
    assert "too many commands for lot/recepcao" in str(doc(refused)["error"])
    assert doc(refused)["retry_after_s"] == pytest.approx(1 / RATE_PER_S, abs=0.1)
    assert boundary.stats.reasons.most_common(1)[0][1] == 500 - RATE_BURST  # one reason
    assert rate.take(("lot", "armazem")) is None  # another station is another target
    # The rate comes back with time.
    now[0] += 1 / RATE_PER_S
    [later] = await boundary.submit_topic("lot/recepcao", b'{"lot": "L-X"}', source="mqtt")
    assert doc(later)["ok"] is True
    [again] = await boundary.submit_topic("lot/recepcao", b'{"lot": "L-Y"}', source="mqtt")
    assert doc(again)["ok"] is False


async def test_refused_commands_give_their_turn_back() -> None:
    calls: list[str] = []

    async def ack(cmd: Command) -> dict[str, object]:
        calls.append(cmd.path[-1])
        if cmd.path[-1] != "L-1":
            raise CommandRefused("no firing alert to acknowledge")
        return {}

    boundary = CommandBoundary({"ack": ack}, rate=CommandRate(clock=lambda: 0.0))
    for _ in range(50):
        reply = await boundary.submit(("ack", "wet_lot", "L-2"), b"{}", source="mqtt")
        assert reply.doc["error"] == "no firing alert to acknowledge"
    for _ in range(RATE_BURST):  # refusals did not use up L-2's, nor anyone's, turns
        assert (await boundary.submit(("ack", "wet_lot", "L-1"), b"{}", source="mqtt")).ok
    assert len(calls) == 50 + RATE_BURST
    reply = await boundary.submit(("ack", "wet_lot", "L-1"), b"{}", source="mqtt")
    assert "too many commands" in str(reply.doc["error"])
    assert len(calls) == 50 + RATE_BURST  # refused before its handler ran


def test_the_rate_table_is_bounded() -> None:
    from coffee_telemetry.agent.commands import MAX_RATE_TARGETS

    rate = CommandRate(clock=lambda: 0.0)
    for i in range(MAX_RATE_TARGETS + 100):
        assert rate.take(("lot", f"s{i}")) is None
    assert len(rate._buckets) == MAX_RATE_TARGETS

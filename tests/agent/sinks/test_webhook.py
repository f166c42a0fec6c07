"""WebhookSink against a local aiohttp receiver on 127.0.0.1 with scripted answers.

Alerts are made the way the agent makes them: an ``agent.alerts.model.Alert`` turned
into its ``alert`` point by ``alert_point`` and stamped into a ``Reading``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.alerts.formats import alert_point
from coffee_telemetry.agent.alerts.model import Alert, AlertState, Severity
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.outbox.sink import Record, Rejection, Sink
from coffee_telemetry.agent.readings import Reading, encode_reading, format_time
from coffee_telemetry.agent.sinks.webhook import (
    encode_notification,
    is_notification,
    notification,
    open_webhook,
)
from coffee_telemetry.drivers.events import FieldValue
from tests.services.net import free_port

TS = 1_796_035_314_123_456_789
SECRET = "s3cret-token"
HOOK_PATH = "/services/T000/B000/XXXXsecretpath"


@dataclass(frozen=True)
class Seen:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def doc(self) -> dict[str, object]:
        doc = json.loads(self.body)
        assert isinstance(doc, dict)
        return doc


Script = Callable[[Seen], Awaitable[web.Response]]


async def ok(seen: Seen) -> web.Response:
    return web.Response(status=200, text="ok")


def answer(status: int, *, text: str = "", headers: dict[str, str] | None = None) -> Script:
    async def script(seen: Seen) -> web.Response:
        return web.Response(status=status, text=text or None, headers=headers)

    return script


@dataclass
class Receiver:
    """A local HTTP server that records every request and answers by ``script``."""

    script: Script = ok
    requests: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    @property
    def ids(self) -> list[object]:
        return [seen.doc["id"] for seen in self.requests]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        seen = Seen(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=await request.read(),
        )
        self.requests.append(seen)
        return await self.script(seen)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    srv = Receiver()
    await srv.start()
    yield srv
    await srv.close()


def alert_reading(
    subject: str = "L-0042",
    *,
    rule: str = "wet_lot",
    state: AlertState = AlertState.FIRING,
    notify: bool = True,
    at_ns: int = TS,
    data: Mapping[str, FieldValue] | None = None,
) -> Reading:
    """An alert event as the agent stores it: ``alert_point`` stamped into a reading."""
    alert = Alert(
        rule=rule,
        subject=subject,
        state=state,
        severity=Severity.WARNING,
        message=f"Lote {subject} úmido: média 12,4 % ≥ 12,0 %",
        data={"lot": subject, "mean_pct": 12.4, "count": 7} if data is None else data,
        notify=notify,
        since_ns=at_ns - 60_000_000_000,
        at_ns=at_ns,
    )
    point = alert_point(alert, site="ourofino")
    # As agent.alerts.service stamps them: device "alerts", also as a tag.
    return Reading(
        ts_ns=point.ts_ns,
        seq=1,
        device="alerts",
        measurement=point.measurement,
        fields=point.fields,
        tags={**point.tags, "device": "alerts"},
        kind="event",
    )


def moisture_reading(seq: int = 1) -> Reading:
    return Reading(
        ts_ns=TS + seq,
        seq=seq,
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": 11.8},
        tags={"site": "ourofino", "device": "umid-1", "lot": "L-0042"},
    )


def records(*readings: Reading, start_id: int = 1) -> list[Record]:
    return [
        Record(id=start_id + i, payload=encode_reading(reading))
        for i, reading in enumerate(readings)
    ]


def alerts(count: int) -> list[Record]:
    return records(*(alert_reading(f"L-{n:04d}", at_ns=TS + n) for n in range(1, count + 1)))


def id_of(subject: str, ts: int, rule: str = "wet_lot") -> str:
    return f"ourofino/{rule}/{subject}/{ts}"


# -- what is sent --------------------------------------------------------------------------


async def test_body_shape_and_headers(receiver: Receiver) -> None:
    reading = alert_reading()
    async with open_webhook(
        url=receiver.url,
        headers={"Authorization": f"Bearer {SECRET}", "X-Team": "armazem"},
        name="oncall",
        batch_size=20,
    ) as sink:
        as_sink: Sink = sink  # mypy checks the protocol here
        assert (as_sink.name, as_sink.batch_size, as_sink.flush_interval_s) == ("oncall", 20, 0)
        assert await as_sink.deliver(records(reading)) == []

    [seen] = receiver.requests
    assert (seen.method, seen.path) == ("POST", HOOK_PATH)
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen.headers["X-Team"] == "armazem"
    assert seen.doc == {
        "rule": "wet_lot",
        "subject": "L-0042",
        "state": "firing",
        "severity": "warning",
        "message": "Lote L-0042 úmido: média 12,4 % ≥ 12,0 %",
        "time": "2026-11-30T10:41:54.123456789Z",
        "ts": TS,
        "site": "ourofino",
        "data": {
            "lot": "L-0042",
            "mean_pct": 12.4,
            "count": 7,
            "since_ns": TS - 60_000_000_000,
            "repeat": 0,
        },
        "id": id_of("L-0042", TS),
    }
    # The body is the one canonical encoding: a resend is byte-identical.
    assert seen.body == encode_notification(reading)
    assert "úmido" in seen.body.decode("utf-8")  # UTF-8, not \u escapes


async def test_configured_content_type_replaces_the_default(receiver: Receiver) -> None:
    async with open_webhook(
        url=receiver.url, headers={"content-type": "application/json; charset=utf-8"}
    ) as sink:
        assert await sink.deliver(records(alert_reading())) == []
    [seen] = receiver.requests
    assert seen.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_user_info_is_sent_as_basic_auth(receiver: Receiver) -> None:
    url = receiver.url.replace("http://", "http://agent:pw@")
    async with open_webhook(url=url) as sink:
        assert await sink.deliver(records(alert_reading())) == []
    [seen] = receiver.requests
    assert seen.headers["Authorization"] == "Basic YWdlbnQ6cHc="


def test_identity_may_be_in_fields_and_the_rest_in_tags() -> None:
    reading = Reading(
        ts_ns=TS,
        seq=3,
        device="agent",
        measurement="alert",
        kind="event",
        fields={
            "rule": "device_silent",
            "subject": "umid-1",
            "state": "resolved",
            "site": "ourofino",
            "notify": True,
            "silent_s": 12.5,
            "station": "from-field",
        },
        tags={"severity": "critical", "message": "voltou", "station": "from-tag", "x": "y"},
    )
    assert notification(reading) == {
        "rule": "device_silent",
        "subject": "umid-1",
        "state": "resolved",
        "severity": "critical",
        "message": "voltou",
        "time": format_time(TS),
        "ts": TS,
        "site": "ourofino",
        "data": {"silent_s": 12.5, "station": "from-field", "x": "y"},
        "id": id_of("umid-1", TS, rule="device_silent"),
    }


def test_device_tag_of_the_stamp_is_not_data() -> None:
    silent = alert_reading("umid-1", rule="device_silent", data={"silent_s": 12.5})
    assert notification(silent)["data"] == {
        "silent_s": 12.5,
        "since_ns": TS - 60_000_000_000,
        "repeat": 0,
    }
    # A device field is data (the meter of a wet lot), and a device tag naming
    # another device than the stamp's is data too.
    wet = alert_reading(data={"lot": "L-0042", "device": "umid-1"})
    assert notification(wet)["data"] == {
        "lot": "L-0042",
        "device": "umid-1",
        "since_ns": TS - 60_000_000_000,
        "repeat": 0,
    }
    other = dataclasses.replace(wet, fields={"notify": True}, tags={**wet.tags, "device": "x"})
    assert notification(other)["data"] == {"device": "x"}


def test_missing_optional_keys_are_null() -> None:
    reading = Reading(
        ts_ns=TS,
        seq=1,
        device="agent",
        measurement="alert",
        kind="event",
        fields={"notify": True},
        tags={"rule": "r", "subject": "s"},
    )
    doc = notification(reading)
    assert (doc["state"], doc["severity"], doc["message"], doc["site"]) == (None,) * 4
    assert doc["id"] == f"/r/s/{TS}"


def test_notify_may_be_a_tag() -> None:
    base = alert_reading()
    fields = {k: v for k, v in base.fields.items() if k != "notify"}
    assert is_notification(
        dataclasses.replace(base, fields=fields, tags={**base.tags, "notify": "True"})
    )
    assert not is_notification(dataclasses.replace(base, fields=fields))
    # The field decides when both are present.
    assert not is_notification(
        dataclasses.replace(alert_reading(notify=False), tags={**base.tags, "notify": "true"})
    )


_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
_values: st.SearchStrategy[FieldValue] = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@given(
    fields=st.dictionaries(_keys, _values, max_size=6),
    tags=st.dictionaries(_keys, st.text(max_size=10), max_size=6),
    subject=st.text(min_size=1, max_size=20),
    ts=st.integers(min_value=0, max_value=2**62),
)
def test_data_holds_every_other_field_and_tag(
    fields: dict[str, FieldValue], tags: dict[str, str], subject: str, ts: int
) -> None:
    reading = Reading(
        ts_ns=ts,
        seq=1,
        device="agent",
        measurement="alert",
        kind="event",
        fields={**fields, "subject": subject, "notify": True},
        tags={**tags, "rule": "wet_lot", "site": "ourofino"},
    )
    doc = notification(reading)
    top = {"rule", "subject", "state", "severity", "message", "site", "notify"}
    data = doc["data"]
    assert isinstance(data, dict)
    stamp = {"device"} if tags.get("device") == "agent" and "device" not in fields else set()
    assert set(data) == (set(fields) | set(tags)) - top - stamp
    for key, value in data.items():
        assert value == (fields[key] if key in fields else tags[key])
    assert doc["id"] == f"ourofino/wet_lot/{subject}/{ts}"
    # One encoding, and it round-trips through a stored record.
    stored = Record(id=1, payload=encode_reading(reading))
    assert encode_notification(stored.reading) == encode_notification(reading)
    assert json.loads(encode_notification(reading)) == doc


# -- what is not sent ----------------------------------------------------------------------


async def test_other_records_are_acknowledged_without_a_post(receiver: Receiver) -> None:
    alert = alert_reading()
    not_an_event = dataclasses.replace(alert, kind="reading")
    other_event = dataclasses.replace(alert, measurement="ticket")
    batch = records(moisture_reading(1), not_an_event, other_event, moisture_reading(2))
    # A reading record is not even decoded: its kind says enough.
    batch.append(Record(id=99, payload=b"not json", device="umid-1", kind="reading"))
    async with open_webhook(url=receiver.url) as sink:
        assert await sink.deliver(batch) == []
        assert await sink.deliver([]) == []
    assert receiver.requests == []


async def test_alerts_without_notify_are_skipped(receiver: Receiver) -> None:
    batch = records(
        alert_reading("L-1", state=AlertState.PENDING, notify=False, at_ns=TS + 1),
        alert_reading("L-2", at_ns=TS + 2),
        alert_reading("L-1", state=AlertState.RESOLVED, notify=False, at_ns=TS + 3),
    )
    async with open_webhook(url=receiver.url) as sink:
        assert await sink.deliver(batch) == []
    assert receiver.ids == [id_of("L-2", TS + 2)]


async def test_alerts_that_cannot_be_sent_are_rejected(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    no_rule = Reading(
        ts_ns=TS,
        seq=1,
        device="agent",
        measurement="alert",
        kind="event",
        fields={"notify": True, "message": "?"},
        tags={"subject": "s"},
    )
    batch = [
        *records(no_rule, alert_reading(at_ns=TS + 5)),
        Record(id=7, payload=b"{broken", device="agent", kind="event"),
    ]
    caplog.set_level(logging.WARNING)
    async with open_webhook(url=receiver.url) as sink:
        rejections = await sink.deliver(batch)
    assert [(r.record_id, r.status) for r in rejections] == [(1, None), (7, None)]
    assert rejections[0].reason == "cannot build a notification: alert has no rule"
    assert rejections[1].reason.startswith("cannot build a notification: not a reading")
    assert receiver.ids == [id_of("L-0042", TS + 5)]
    messages = [
        r.getMessage() for r in caplog.records if r.name == "coffee_telemetry.agent.sinks.webhook"
    ]
    assert messages[0] == (
        "Rejected record 1 for webhook: cannot build a notification: alert has no rule"
    )


# -- answers -------------------------------------------------------------------------------


async def test_order_is_preserved(receiver: Receiver) -> None:
    batch = alerts(12)
    async with open_webhook(url=receiver.url) as sink:
        assert await sink.deliver(batch) == []
    assert receiver.ids == [id_of(f"L-{n:04d}", TS + n) for n in range(1, 13)]


async def test_503_with_retry_after(receiver: Receiver) -> None:
    receiver.script = answer(503, text="maintenance", headers={"Retry-After": "7"})
    async with open_webhook(url=receiver.url) as sink:
        with pytest.raises(SinkUnavailable, match="HTTP 503 for record 1") as caught:
            await sink.deliver(alerts(5))
    assert caught.value.retry_after_s == 7.0
    assert caught.value.sink == "webhook"
    assert "maintenance" in str(caught.value)
    assert len(receiver.requests) == 1  # stops at the first unavailable answer


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504])
async def test_receiver_errors_keep_the_batch(receiver: Receiver, status: int) -> None:
    receiver.script = answer(status)
    async with open_webhook(url=receiver.url) as sink:
        with pytest.raises(SinkUnavailable, match="receiver unavailable") as caught:
            await sink.deliver(alerts(3))
    assert caught.value.retry_after_s is None
    assert len(receiver.requests) == 1


async def test_stops_at_the_first_unavailable_answer(receiver: Receiver) -> None:
    async def third_fails(seen: Seen) -> web.Response:
        if len(receiver.requests) == 3:
            return web.Response(status=503, headers={"Retry-After": "2"})
        return web.Response(status=204)

    receiver.script = third_fails
    batch = alerts(5)
    async with open_webhook(url=receiver.url) as sink:
        with pytest.raises(SinkUnavailable, match="for record 3") as caught:
            await sink.deliver(batch)
        assert caught.value.retry_after_s == 2.0
        # The dispatcher keeps the batch: the retry sends it from its start.
        assert await sink.deliver(batch) == []
    ids = [id_of(f"L-{n:04d}", TS + n) for n in range(1, 6)]
    assert receiver.ids == [*ids[:3], *ids]


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "credentials refused"),
        (403, "credentials refused"),
        (404, "webhook not found or deleted"),
        (410, "webhook not found or deleted"),
        (301, "redirect not followed"),
        (307, "redirect not followed"),
    ],
)
async def test_configuration_errors_keep_the_batch(
    receiver: Receiver, status: int, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Location": "http://127.0.0.1:1/elsewhere"} if status < 400 else None
    receiver.script = answer(status, text=f"no such hook {HOOK_PATH}", headers=headers)
    caplog.set_level(logging.DEBUG)
    url = receiver.url.replace("http://", "http://agent:pw@")
    async with open_webhook(url=url, headers={"X-Api-Key": SECRET}) as sink:
        with pytest.raises(SinkUnavailable, match=hint) as caught:
            await sink.deliver(alerts(3))
    message = str(caught.value)
    assert message.startswith(f"webhook: http://127.0.0.1:{receiver.port}: HTTP {status}")
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("coffee_telemetry.agent.")
    )
    for secret in (SECRET, HOOK_PATH, "agent:pw", "pw@"):
        assert secret not in message
        assert secret not in ours
    assert len(receiver.requests) == 1  # not followed, not rejected


@pytest.mark.parametrize("status", [400, 413, 415, 422])
async def test_refused_notifications_are_rejected(
    receiver: Receiver, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def refuse_second(seen: Seen) -> web.Response:
        if seen.doc["subject"] == "L-0002":
            return web.Response(status=status, text="invalid_payload\n  (details)")
        return web.Response(status=200)

    receiver.script = refuse_second
    caplog.set_level(logging.WARNING)
    async with open_webhook(url=receiver.url) as sink:
        rejections = await sink.deliver(alerts(3))
    assert rejections == [Rejection(2, "invalid_payload (details)", status)]
    assert len(receiver.requests) == 3  # the next ones are still sent
    [message] = [
        r.getMessage() for r in caplog.records if r.name == "coffee_telemetry.agent.sinks.webhook"
    ]
    assert message == (
        f"Rejected alert {id_of('L-0002', TS + 2)!r} (record 2) for webhook: "
        f"HTTP {status}: invalid_payload (details)"
    )


async def test_rejection_without_text_names_the_status(receiver: Receiver) -> None:
    receiver.script = answer(400)
    async with open_webhook(url=receiver.url) as sink:
        assert await sink.deliver(alerts(1)) == [Rejection(1, "HTTP 400", 400)]


async def test_long_answers_are_shortened(receiver: Receiver) -> None:
    receiver.script = answer(400, text="x" * 100_000)
    async with open_webhook(url=receiver.url) as sink:
        [rejection] = await sink.deliver(alerts(1))
    assert len(rejection.reason) == 200
    assert rejection.reason.endswith("...")


async def test_timeout(receiver: Receiver) -> None:
    async def hang(seen: Seen) -> web.Response:
        await receiver.release.wait()
        return web.Response(status=200)

    receiver.script = hang
    async with open_webhook(url=receiver.url, timeout_s=0.2) as sink:
        with pytest.raises(SinkUnavailable, match=r"no answer within 0\.2 s for record 1"):
            await sink.deliver(alerts(2))
    assert len(receiver.requests) == 1


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}{HOOK_PATH}"
    async with open_webhook(url=url) as sink:
        with pytest.raises(SinkUnavailable, match="ClientConnectorError") as caught:
            await sink.deliver(alerts(2))
    assert HOOK_PATH not in str(caught.value)


async def test_only_non_alerts_need_no_receiver() -> None:
    url = f"http://127.0.0.1:{free_port()}{HOOK_PATH}"
    async with open_webhook(url=url) as sink:
        assert await sink.deliver(records(moisture_reading(1), moisture_reading(2))) == []


# -- opening -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://example.com/hook"}, "http or https, not 'ftp'"),
        ({"url": "hooks.example.com/x"}, "http or https, not 'relative'"),
        ({"url": "http:///only-a-path"}, "no host"),
        ({"url": "http://[::1/x"}, "not a valid URL"),
        ({"headers": {"X-Token": "a\r\nInjected: 1"}}, "'X-Token': the value must be"),
        ({"headers": {"Bad Name": "v"}}, "not a valid HTTP field name"),
        ({"url": "https://u:p@example.com/", "headers": {"authorization": "x"}}, "either"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"batch_size": 0}, "batch_size"),
        ({"name": ""}, "name"),
    ],
)
async def test_invalid_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"url": "https://example.com/hook", **kwargs}
    with pytest.raises(ValueError, match=match) as caught:
        async with open_webhook(**args):  # type: ignore[arg-type]
            pass
    assert "Injected" not in str(caught.value)

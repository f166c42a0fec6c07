"""Webhook sink: alert notifications POSTed as JSON to a configured URL.

Theory of operation
-------------------

The sink reads the same outbox as every other sink, so a notification
accepted there survives an outage of the receiver and a restart of the agent.
Most records are not its business: only an *alert notification* is sent, and
everything else is acknowledged untouched (returned as delivered, so the
cursor moves past it). A record is a notification when its reading has
``kind == "event"``, ``measurement == "alert"`` and a ``notify`` that is true
(the boolean field ``True``, or a tag ``"true"``). ``notify`` is false for the
events nobody should be paged about (an alert turning pending, a pending one
clearing); see ``agent.alerts``.

The JSON body, one per notification (chat webhooks expect one message per
request), built by ``notification``::

    {"rule": "wet_lot", "subject": "L-0042", "state": "firing",
     "severity": "warning", "message": "Lote L-0042 úmido ...",
     "time": "2026-11-30T10:41:54.123456789Z", "ts": 1796035314123456789,
     "site": "ourofino", "data": {"lot": "L-0042", "mean_pct": 12.4, ...},
     "id": "ourofino/wet_lot/L-0042/1796035314123456789"}

``rule``, ``subject``, ``state``, ``severity``, ``message`` and ``site`` are
read from the reading's fields, else from its tags. ``agent.alerts.formats.alert_point``
puts ``site``, ``rule``, ``subject`` and ``state`` in tags and ``severity`` and
``message`` in fields, but any of them may be in either place, so a reading
stamped by other code works too (a field value that is not a string is turned
into one). Those six keys and ``notify`` are taken out; ``data`` holds every
other field and tag (a field wins over a tag of the same name), except a
``device`` tag naming the reading's own device: that is the stamper's
bookkeeping (``agent.alerts.service`` stamps alerts as device ``alerts``), while a
``device`` *field* is alert data (the meter of a wet lot) and is kept.
``rule`` and ``subject`` are required: an alert without them can never be
sent and is rejected. A missing ``state``, ``severity``, ``message`` or
``site`` is ``null``; a missing ``site`` leaves its segment of ``id`` empty.
``time`` and ``ts`` are the reading's stamp. The body is encoded like a
reading (sorted keys, compact, UTF-8), so a resend is byte-identical to the
first send.

Delivery is at least once. ``id`` names the notification (rule names and site
have no ``/``; the subject may, and sits between them and the final ``ts``),
so a receiver can drop a repeat. Repeats happen when:

* the receiver stops answering partway through a batch: the earlier
  notifications of the batch were delivered, but the contract has no way to
  say "these, not those", so ``SinkUnavailable`` keeps the whole batch and
  they are sent again with the retry;
* the agent stops between a 2xx and the cursor reaching the disk (within
  ``cursor_flush_s``, see ``agent.outbox.store``);
* the answer is lost (a timeout after the receiver had acted).

Each notification is one POST, in record order, each bounded by ``timeout_s``
through an ``asyncio.timeout`` scope. The answer decides:

* 2xx: delivered.
* 408, 429, 5xx, a timeout, a refused or dropped connection: the receiver is
  unavailable. Raise ``SinkUnavailable`` (with ``Retry-After`` when given)
  at once; the rest of the batch is not tried, and the dispatcher keeps the
  batch and backs off.
* 401, 403, 404, 410: the credentials were refused, or the hook is missing or
  was deleted. That is a problem of configuration, not of the notification,
  and it concerns every notification alike, so the data is kept
  (``SinkUnavailable``, with a message that says what to check): rejecting
  would move an outage's worth of alerts to the dead-letter table, where
  nobody gets them once the hook is fixed.
* 3xx: redirects are not followed (aiohttp would turn the POST into a GET
  without a body, and would carry our headers, which hold secrets, to
  wherever it points). Unavailable: configure the final URL.
* any other 4xx (400, 413, 422, ...): the receiver refuses this
  notification: it is rejected (dead letter) and the next one is sent. A
  rejection found earlier in a batch that then turns unavailable is dropped;
  the retry finds it again.
* anything else (1xx, a status over 599): unavailable.

Logging and secrets: header values (tokens) never appear in messages or
logs, and neither does the URL's path or query: chat webhooks (Slack,
Discord, Teams, Google Chat) put their secret there, and the user info is a
password. Messages show only ``scheme://host:port``; the sink's name tells
configured hooks apart. A rejection is logged once here (it is returned, not
raised); unavailability is raised, and the dispatcher logs it with its
back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.readings import Reading, format_time
from coffee_telemetry.agent.sinks.influx import parse_retry_after

__all__ = [
    "ALERT_MEASUREMENT",
    "WebhookSink",
    "encode_notification",
    "is_notification",
    "notification",
    "open_webhook",
]

logger = logging.getLogger(__name__)

#: The measurement alert events are stored under (``agent.alerts.formats.alert_point``).
ALERT_MEASUREMENT = "alert"

#: Longest server text kept in a rejection or an error message.
MAX_REASON_CHARS = 200

#: Most bytes of an answer's body read (for its error text).
MAX_ANSWER_BYTES = 64 * 1024

#: Top-level keys of the body read from the fields or tags (in the body's order).
_TOP_KEYS = ("rule", "subject", "state", "severity", "message", "site")
_REQUIRED = ("rule", "subject")

#: RFC 9110 ``token``: what a header name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


# -- the notification ----------------------------------------------------------------------


def is_notification(reading: Reading) -> bool:
    """Whether ``reading`` is an alert event to be notified.

    ``notify`` counts when it is the boolean field ``True`` or, with no such
    field, the tag ``"true"``.
    """
    if reading.kind != "event" or reading.measurement != ALERT_MEASUREMENT:
        return False
    if "notify" in reading.fields:
        return reading.fields["notify"] is True
    return reading.tags.get("notify", "").lower() == "true"


def notification(reading: Reading) -> dict[str, object]:
    """The JSON document POSTed for an alert event (see the module docstring).

    Raises:
        ValueError: The alert has no ``rule`` or no ``subject``.
    """
    top: dict[str, str | None] = {}
    for key in _TOP_KEYS:
        value = reading.fields.get(key)
        if value is None:
            value = reading.tags.get(key)
        top[key] = None if value is None else str(value)
    for key in _REQUIRED:
        if not top[key]:
            raise ValueError(f"alert has no {key}")
    skip = {*_TOP_KEYS, "notify"}
    data: dict[str, object] = {
        k: v
        for k, v in reading.tags.items()
        if k not in skip and not (k == "device" and v == reading.device)
    }
    data.update((k, v) for k, v in reading.fields.items() if k not in skip)
    site = top["site"] or ""
    return {
        **top,
        "time": format_time(reading.ts_ns),
        "ts": reading.ts_ns,
        "data": data,
        "id": f"{site}/{top['rule']}/{top['subject']}/{reading.ts_ns}",
    }


def encode_notification(reading: Reading) -> bytes:
    """Encode ``notification(reading)`` as compact, key-sorted UTF-8 JSON.

    Raises:
        ValueError: The alert has no ``rule`` or ``subject``, or a field is not
            finite (readings from the outbox never hold one).
    """
    return _encode(notification(reading))


def _encode(doc: Mapping[str, object]) -> bytes:
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


# -- the sink ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    text: str
    retry_after_s: float | None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 3] + "..."


def _public_url(url: URL) -> str:
    """``scheme://host:port`` of ``url``: no user info, path or query (they hold secrets)."""
    return str(url.origin())


class WebhookSink:
    """POSTs alert notifications to one URL; see the module docstring.

    Open it with ``open_webhook``.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        url: URL,
        headers: Mapping[str, str],
        timeout_s: float,
        batch_size: int,
        name: str,
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        #: Alerts go out at once; there is nothing to gain from waiting.
        self.flush_interval_s = 0.0
        self._session = session
        self._url = url
        self._headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        self._headers.update(headers)  # the configured ones win, case-insensitively
        self._timeout_s = timeout_s
        self._where = _public_url(url)
        # Texts an aiohttp error could quote that must not reach a log.
        self._secrets = sorted(
            {str(url), url.human_repr(), url.raw_path_qs, url.path_qs} - {"", "/"},
            key=len,
            reverse=True,
        )

    async def wait_available(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``: a receiver has no health check to ask."""
        await asyncio.sleep(timeout_s)

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        """POST the notifications among ``records``, in order; acknowledge the rest.

        Returns:
            The notifications the receiver refused for good (and alerts that
            cannot be sent at all).

        Raises:
            SinkUnavailable: The receiver cannot take notifications now; the
                whole batch is kept (earlier ones in it will be sent again).
        """
        rejections: list[Rejection] = []
        for record in records:
            if record.kind != "event":  # known without decoding the payload
                continue
            try:
                reading = record.reading
                if not is_notification(reading):
                    continue
                doc = notification(reading)
                body = _encode(doc)
            except ValueError as exc:
                reason = _shorten(f"cannot build a notification: {exc}")
                logger.warning("Rejected record %d for %s: %s", record.id, self.name, reason)
                rejections.append(Rejection(record.id, reason, None))
                continue
            rejection = await self._send(record.id, str(doc["id"]), body)
            if rejection is not None:
                rejections.append(rejection)
        return rejections

    async def _send(self, record_id: int, notification_id: str, body: bytes) -> Rejection | None:
        answer = await self._post(record_id, body)
        status = answer.status
        if 200 <= status <= 299:
            logger.debug(
                "Posted alert %r (record %d) to %s: HTTP %d",
                notification_id,
                record_id,
                self.name,
                status,
            )
            return None
        if 400 <= status <= 499 and status not in (401, 403, 404, 408, 410, 429):
            reason = answer.text or f"HTTP {status}"
            logger.warning(
                "Rejected alert %r (record %d) for %s: HTTP %d: %s",
                notification_id,
                record_id,
                self.name,
                status,
                reason,
            )
            return Rejection(record_id, reason, status)
        raise SinkUnavailable(
            self._unavailable_message(record_id, answer),
            sink=self.name,
            retry_after_s=answer.retry_after_s,
        )

    def _unavailable_message(self, record_id: int, answer: _Answer) -> str:
        status = answer.status
        if status in (401, 403):
            hint = "credentials refused; check the configured headers (token)"
        elif status in (404, 410):
            hint = "webhook not found or deleted; check the URL"
        elif 300 <= status <= 399:
            hint = "redirect not followed; configure the final URL"
        elif status in (408, 429) or 500 <= status <= 599:
            hint = "receiver unavailable"
        else:
            hint = "unexpected answer"
        detail = f": {answer.text}" if answer.text else ""
        return f"{self._where}: HTTP {status} for record {record_id}, {hint}{detail}"

    async def _post(self, record_id: int, body: bytes) -> _Answer:
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._session.post(
                    self._url, data=body, headers=self._headers, allow_redirects=False
                ) as response,
            ):
                status = response.status
                retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
                # Read (a bounded part of) the body even on success, so the
                # connection can be reused.
                text = (await response.content.read(MAX_ANSWER_BYTES)).decode("utf-8", "replace")
        except TimeoutError as exc:
            raise SinkUnavailable(
                f"{self._where}: no answer within {self._timeout_s:g} s for record {record_id}",
                sink=self.name,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise SinkUnavailable(
                f"{self._where}: {type(exc).__name__}: {self._scrub(str(exc))}", sink=self.name
            ) from exc
        if 200 <= status <= 299:
            text = ""
        return _Answer(status=status, text=self._scrub(text), retry_after_s=retry_after_s)

    def _scrub(self, text: str) -> str:
        """Shorten ``text`` and take out anything of the URL but its origin."""
        for secret in self._secrets:
            text = text.replace(secret, "<url>")
        return _shorten(text)


def _check_headers(url: URL, headers: Mapping[str, str]) -> None:
    for key, value in headers.items():
        # Messages name the header, never its value.
        if not isinstance(key, str) or not _TOKEN.fullmatch(key):
            raise ValueError(f"header name {key!r} is not a valid HTTP field name")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {key!r}: the value must be a string without CR, LF or NUL")
    if url.user is not None and any(key.lower() == "authorization" for key in headers):
        # aiohttp sends URL user info as basic auth and then refuses a second
        # Authorization header at request time.
        raise ValueError("give credentials either in the URL or as an Authorization header")


@asynccontextmanager
async def open_webhook(
    *,
    url: str,
    headers: Mapping[str, str] = _NO_HEADERS,
    timeout_s: float = 10.0,
    name: str = "webhook",
    batch_size: int = 50,
) -> AsyncIterator[WebhookSink]:
    """Open a sink that POSTs alert notifications to ``url``.

    Args:
        url: Receiver URL, ``http`` or ``https``. User info in it is sent as
            basic auth. Never logged beyond its origin.
        headers: Sent with every request (an ``Authorization`` token, say);
            their values are never logged. A ``Content-Type`` here replaces the
            default ``application/json``.
        timeout_s: Limit for each request.
        name: Sink name; the outbox keys this sink's cursor by it.
        batch_size: Most records per ``deliver`` call. Most records are not
            alerts and cost nothing; a batch that fails partway is sent again
            from its start, so this also bounds the repeats.

    Raises:
        ValueError: The URL is not http(s) or has no host, a header cannot be
            sent, or a number is out of range.
    """
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        # The URL itself may hold a secret: do not quote it.
        raise ValueError("url is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"url must be http or https, not {parsed.scheme or 'relative'!r}")
    if not parsed.host:
        raise ValueError("url has no host")
    _check_headers(parsed, headers)
    if not timeout_s > 0:
        raise ValueError("timeout_s must be positive")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not name:
        raise ValueError("name must not be empty")
    # No session-wide timeout: each request runs in its own asyncio.timeout scope.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield WebhookSink(
            session=session,
            url=parsed.with_fragment(None),
            headers=headers,
            timeout_s=timeout_s,
            batch_size=batch_size,
            name=name,
        )

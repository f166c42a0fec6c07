r"""InfluxDB sinks: the v1 HTTP write API and the v2 API, with one error policy.

``InfluxV1Sink`` POSTs line protocol to ``/write?db=...&precision=ns`` with
aiohttp; InfluxDB 1.x, 2.x (v1 compatibility, token auth) and 3.x all serve
it. ``InfluxV2Sink`` writes through influxdb-client's ``InfluxDBClientAsync``
to ``/api/v2/write`` (2.x, Cloud, 1.8+). Both are opened with an ``open_*``
async context manager that owns the HTTP session.

The two are one implementation, ``_InfluxSink``: delivery, the error policy
below and the translation of a request that got no answer. What differs is a
small API object (``_V1Api``, ``_V2Api``): how one body is written (URL,
parameters, authentication, compression) and how the answer is read. Both APIs
classify statuses the same way.

Theory of operation
-------------------

``deliver(records)`` encodes each record's reading with ``encode_line``. A
record that cannot be encoded (a NaN, a reserved field name) is rejected on
the spot. The rest go out as one request, lines joined by ``\n``, and the
answer decides what happens:

* 2xx: every line was written; nothing is returned for them.
* 429, 5xx, 408, a timeout, a refused or dropped connection, an answer that
  cannot be parsed, any status we do not understand: raise
  ``SinkUnavailable`` (with ``Retry-After`` when the server gave one). The
  dispatcher keeps the whole batch and retries. (influxd quotes a rejected
  line in its ``X-Influxdb-Error`` header, and aiohttp cannot parse a header
  holding a NUL; ``encode_line`` never writes one, so a bad line cannot make
  the answer about it unreadable.)
* 401, 403: the credentials were refused. That is a configuration problem,
  not a bad record, so the data is kept: ``SinkUnavailable``, with a message
  saying to check the token or user. The same for 404: on 1.x it means
  "database not found", on 2.x "bucket not found", and on anything else a
  wrong URL; rejecting records for it would send a whole outage's worth of
  good data to the dead-letter table.
* 413 (body too large): split the batch in halves and deliver each, down to
  single lines; one line that is still too large can never be written and is
  rejected.
* any other 4xx (400 bad line, 422 unprocessable, ...): if the batch has more
  than one line, bisect: send each half on its own, recursively, until every
  line that still fails is alone. A lone line that fails is rejected with
  the server's error text; everything else ends up delivered.

Bisecting is correct because writes are idempotent: a point is identified
by measurement, tag set and timestamp, and rewriting an identical point
changes nothing, so resending the good lines of a failed half is harmless.
That also covers InfluxDB 1.x's "partial write" answer: a 400 whose good
points *were* written. The good lines of that batch are written again (no
effect) and the bad ones are isolated. It terminates because each request
holds strictly fewer lines than the one before. A batch of n lines with k
bad ones costs at most about ``2 k log2(n)`` requests, and ``2 n - 1`` in the
worst case, when every line is bad. If the server turns
unavailable halfway, ``SinkUnavailable`` is raised and rejections found so far
are dropped; the retry finds them again.

Requests are sent one after another, in record order. Each one is bounded by
``timeout_s`` through an ``asyncio.timeout`` scope around the request.

Logging: a rejected record is logged once here (it is returned, not raised),
as one capitalised line with the record id, status and server text.
Unavailability is raised, not logged: its message says what failed and the
dispatcher logs it with its back-off. Credentials never appear in messages:
the URL is shown without its user info, and tokens and passwords are only
ever sent in headers.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import gzip as gzip_module
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

import aiohttp
from yarl import URL

from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.sinks.lineprotocol import encode_line

if TYPE_CHECKING:
    # influxdb-client costs ~25 MB of RSS to import: only the v2 sink loads it.
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
    from influxdb_client.client.write_api_async import WriteApiAsync

__all__ = ["InfluxV1Sink", "InfluxV2Sink", "open_influx_v1", "open_influx_v2"]

logger = logging.getLogger(__name__)

#: How often a sink that is down checks whether the server answers again.
PING_EVERY_S = 0.5

#: Longest server error text kept in a rejection or an error message.
MAX_REASON_CHARS = 200


class _Verdict(enum.Enum):
    DELIVERED = enum.auto()  #: 2xx
    UNAVAILABLE = enum.auto()  #: keep everything, retry later
    SPLIT = enum.auto()  #: 413: too large, halve and retry at once
    BISECT = enum.auto()  #: other 4xx: some line is bad, find it


def _classify(status: int) -> _Verdict:
    if 200 <= status <= 299:
        return _Verdict.DELIVERED
    if status == 413:
        return _Verdict.SPLIT
    # 401/403: credentials; 404: database, bucket or URL missing; 408: the
    # server gave up waiting; 429: rate limit. None of these says a line is bad.
    if status in (401, 403, 404, 408, 429):
        return _Verdict.UNAVAILABLE
    if 400 <= status <= 499:
        return _Verdict.BISECT
    return _Verdict.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class _Line:
    record_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the server said to one write request."""

    status: int
    text: str
    retry_after_s: float | None = None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a ``Retry-After`` header: delay seconds or an HTTP date.

    Returns:
        The delay in seconds (never negative), or ``None`` if absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT.
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _error_text(body: bytes, headers: Mapping[str, str]) -> str:
    """The server's own words: 1.x sends ``{"error": ...}``, 2.x ``{"message": ...}``."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                text = doc[key]
                break
    if not text:
        text = headers.get("X-Influxdb-Error", "")
    return _shorten(" ".join(text.split()))


def _shorten(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 3] + "..."


def _public_url(url: str) -> str:
    """The URL without user info, fit for messages."""
    return str(URL(url).with_user(None))


class _NoAnswer(Exception):
    """Raised by a write API when a request got no HTTP answer; the message says why."""


class _WriteApi(Protocol):
    """What differs between the InfluxDB APIs: how one request body is written."""

    async def write(self, body: bytes) -> _Answer:
        """Write ``body`` (lines joined by newlines) and report the server's answer.

        Raises:
            _NoAnswer: No answer; so may ``TimeoutError``, ``aiohttp.ClientError``
                and ``OSError``.
        """
        ...

    async def ping(self) -> bool:
        """Whether the server answers its health check (``/ping``); never raises."""
        ...


_ApiT = TypeVar("_ApiT", bound=_WriteApi)


class _InfluxSink(Generic[_ApiT]):
    """Both sinks: delivery and the error policy of the module docstring, over one API.

    ``api`` holds what the two APIs do differently (URL, parameters, authentication,
    compression, how the client library reports an answer); everything else is here.
    """

    def __init__(
        self,
        *,
        api: _ApiT,
        url: str,
        timeout_s: float,
        batch_size: int,
        flush_interval_s: float,
        name: str,
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._api = api
        self._timeout_s = timeout_s
        self._where = _public_url(url)

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        """Deliver ``records``; return the ones refused for good.

        Raises:
            SinkUnavailable: Nothing is known to be delivered; retry later.
        """
        rejections: list[Rejection] = []
        lines: list[_Line] = []
        for record in records:
            try:
                # UnicodeEncodeError (a lone surrogate) is a ValueError too.
                line = record.line if record.line is not None else encode_line(record.reading)
                data = line.encode("utf-8")
            except ValueError as exc:
                reason = _shorten(f"cannot encode as line protocol: {exc}")
                logger.warning("Rejected record %d for %s: %s", record.id, self.name, reason)
                rejections.append(Rejection(record.id, reason, None))
                continue
            lines.append(_Line(record.id, data))
        if lines:
            rejections.extend(await self._send(lines))
        rejections.sort(key=lambda rejection: rejection.record_id)
        return rejections

    async def wait_available(self, timeout_s: float) -> None:
        """Ping the server every ``PING_EVERY_S`` until it answers, for ``timeout_s`` at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(PING_EVERY_S, left))
            try:
                async with asyncio.timeout(min(PING_EVERY_S, self._timeout_s)):
                    if await self._api.ping():
                        return
            except TimeoutError:
                continue

    async def _send(self, lines: Sequence[_Line]) -> list[Rejection]:
        answer = await self._request(self._api.write(b"\n".join(line.data for line in lines)))
        verdict = _classify(answer.status)
        if verdict is _Verdict.DELIVERED:
            return []
        if verdict is _Verdict.UNAVAILABLE:
            raise SinkUnavailable(
                self._unavailable_message(answer),
                sink=self.name,
                retry_after_s=answer.retry_after_s,
            )
        if len(lines) == 1:
            record_id = lines[0].record_id
            reason = answer.text or f"HTTP {answer.status}"
            logger.warning(
                "Rejected record %d for %s: HTTP %d: %s",
                record_id,
                self.name,
                answer.status,
                reason,
            )
            return [Rejection(record_id, reason, answer.status)]
        if verdict is _Verdict.SPLIT:
            logger.debug("Splitting %d lines for %s after HTTP 413", len(lines), self.name)
        middle = len(lines) // 2
        first = await self._send(lines[:middle])
        return first + await self._send(lines[middle:])

    def _unavailable_message(self, answer: _Answer) -> str:
        detail = f": {answer.text}" if answer.text else ""
        if answer.status in (401, 403):
            hint = "credentials refused; check the token or user name and password"
        elif answer.status == 404:
            hint = "not found; check the URL and that the database or bucket exists"
        else:
            hint = "server unavailable"
        return f"{self._where}: HTTP {answer.status}, {hint}{detail}"

    async def _request(self, request: Awaitable[_Answer]) -> _Answer:
        """Await one request within ``timeout_s``; no answer is ``SinkUnavailable``."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await request
        except _NoAnswer as exc:
            # Chained to the client library's exception, like the cases below.
            raise SinkUnavailable(f"{self._where}: {exc}", sink=self.name) from exc.__cause__
        except TimeoutError as exc:
            raise SinkUnavailable(
                f"{self._where}: no answer within {self._timeout_s:g} s", sink=self.name
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise SinkUnavailable(
                f"{self._where}: {type(exc).__name__}: {_shorten(str(exc))}", sink=self.name
            ) from exc


# -- the v1 HTTP API -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _V1Api:
    """``/write`` and ``/query`` of the v1 HTTP API, with aiohttp."""

    session: aiohttp.ClientSession
    base: URL
    database: str
    retention_policy: str | None
    headers: Mapping[str, str]  # authentication
    gzip: bool

    async def write(self, body: bytes) -> _Answer:
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        headers = {**self.headers, "Content-Type": "text/plain; charset=utf-8"}
        if self.gzip:
            # Level 1: line protocol is so repetitive that the fastest level
            # gets most of the saving and keeps the event loop free (5000
            # lines: 435 kB to 43 kB in 1.3 ms; level 6 saves 3 % more in 3.5 ms).
            body = gzip_module.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        return await self._post(self.base / "write", params=params, data=body, headers=headers)

    async def ping(self) -> bool:
        try:
            async with self.session.get(self.base / "ping") as response:
                return 200 <= response.status <= 299
        except (aiohttp.ClientError, OSError):
            return False

    async def query(self, statement: str) -> _Answer:
        return await self._post(
            self.base / "query", params={"q": statement}, data=b"", headers=self.headers
        )

    async def _post(
        self, url: URL, *, params: Mapping[str, str], data: bytes, headers: Mapping[str, str]
    ) -> _Answer:
        async with self.session.post(url, params=params, data=data, headers=headers) as response:
            body = await response.read()
            status = response.status
            retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            if not 200 <= status <= 299:
                text = _error_text(body, response.headers)
            elif url.path.endswith("/query"):
                # /query answers 200 even when a statement failed, with
                # {"results": [{"error": ...}]}.
                text = _query_error(body)
            else:
                text = ""
        return _Answer(status=status, text=text, retry_after_s=retry_after_s)


class InfluxV1Sink(_InfluxSink[_V1Api]):
    """Writes to the InfluxDB v1 HTTP API (``/write``); see the module docstring.

    Open it with ``open_influx_v1``.
    """

    async def ensure_database(self) -> bool:
        """Create the database if it does not exist (``CREATE DATABASE`` is idempotent).

        Best effort: servers where the user may not create databases, or
        InfluxDB 2.x/3.x where databases map to buckets, refuse it, and that
        is fine. A failure is logged, not raised.

        Returns:
            Whether the server confirmed the database exists.
        """
        database = self._api.database
        statement = f"CREATE DATABASE {quote_identifier(database)}"
        try:
            answer = await self._request(self._api.query(statement))
        except SinkUnavailable as exc:
            logger.warning("Could not create database %r: %s", database, exc)
            return False
        if 200 <= answer.status <= 299 and not answer.text:
            return True
        logger.warning(
            "Could not create database %r on %s: HTTP %d %s",
            database,
            self._where,
            answer.status,
            answer.text,
        )
        return False


def _query_error(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    results = doc.get("results") if isinstance(doc, dict) else None
    for result in results if isinstance(results, list) else []:
        if isinstance(result, dict) and isinstance(result.get("error"), str):
            return _shorten(result["error"])
    return ""


def _basic_auth(username: str, password: str) -> str:
    # Built by hand: aiohttp 3.14 deprecates BasicAuth, and its replacement is
    # missing from the older releases this project allows. UTF-8, as Go's
    # InfluxDB compares the decoded bytes (RFC 7617 charset="UTF-8").
    if ":" in username:
        raise ValueError("a user name cannot contain ':' in basic auth")
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {credentials}"


def quote_identifier(name: str) -> str:
    """Quote an InfluxQL identifier (database, measurement) in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@asynccontextmanager
async def open_influx_v1(
    *,
    url: str,
    database: str,
    retention_policy: str | None = None,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout_s: float = 10.0,
    batch_size: int = 5000,
    flush_interval_s: float = 1.0,
    gzip: bool = True,
    name: str = "influx",
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[InfluxV1Sink]:
    """Open a sink for the InfluxDB v1 write API.

    Args:
        url: Server base URL, e.g. ``http://127.0.0.1:8086``.
        database: Target database (on 2.x: the bucket's v1 mapping).
        retention_policy: Retention policy; the database default if ``None``.
        username: User for basic auth (InfluxDB 1.x with auth enabled).
        password: Password for basic auth.
        token: API token, sent as ``Authorization: Token ...`` (InfluxDB 2.x/3.x).
        timeout_s: Limit for each HTTP request.
        batch_size: Most records per ``deliver`` call.
        flush_interval_s: Longest a record waits for a fuller batch.
        gzip: Compress request bodies (influxd 1.6 accepts ``Content-Encoding: gzip``).
        name: Sink name; the outbox keys this sink's cursor by it.
        ssl_context: TLS settings for ``https://`` (``agent.tls.client_context``);
            default: the system's CAs, checks on.

    Raises:
        ValueError: Conflicting or incomplete arguments.
    """
    if not database:
        raise ValueError("database must not be empty")
    if token is not None and (username is not None or password is not None):
        raise ValueError("give either a token or a username and password, not both")
    if (username is None) != (password is None):
        raise ValueError("username and password go together")
    if URL(url).user is not None and (token is not None or username is not None):
        # aiohttp sends URL user info as basic auth and refuses a second
        # Authorization header at request time.
        raise ValueError("give credentials either in the URL or as arguments, not both")
    headers: dict[str, str] = {}
    if token is not None:
        headers["Authorization"] = f"Token {token}"
    elif username is not None and password is not None:
        headers["Authorization"] = _basic_auth(username, password)
    # No session-wide timeout: each request runs in its own asyncio.timeout scope.
    connector = None if ssl_context is None else aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None), connector=connector
    ) as session:
        api = _V1Api(
            session=session,
            base=URL(url),
            database=database,
            retention_policy=retention_policy,
            headers=headers,
            gzip=gzip,
        )
        yield InfluxV1Sink(
            api=api,
            url=url,
            timeout_s=timeout_s,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            name=name,
        )


# -- the v2 API ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _V2Api:
    """``/api/v2/write`` through influxdb-client, which sends the token itself."""

    write_api: WriteApiAsync
    org: str
    bucket: str
    client: InfluxDBClientAsync

    async def write(self, body: bytes) -> _Answer:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            await self.write_api.write(
                bucket=self.bucket,
                org=self.org,
                record=body,
                # The members are plain strings; the client annotates the class.
                write_precision=cast(WritePrecision, WritePrecision.NS),
            )
        except ApiException as exc:
            # The client raises ApiException for any non-2xx answer. Status 0
            # means it could not even build the request.
            status = exc.status if isinstance(exc.status, int) else 0
            headers: Mapping[str, str] = exc.headers if exc.headers is not None else {}
            body_bytes = exc.body if isinstance(exc.body, bytes) else b""
            if status == 0:
                raise _NoAnswer(f"client error: {_shorten(str(exc.reason))}") from exc
            return _Answer(
                status=status,
                text=_error_text(body_bytes, headers),
                retry_after_s=parse_retry_after(headers.get("Retry-After")),
            )
        return _Answer(status=204, text="")

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:  # the client wraps every failure in its own classes
            return False


class InfluxV2Sink(_InfluxSink[_V2Api]):
    """Writes through influxdb-client's async v2 write API; see the module docstring.

    Open it with ``open_influx_v2``.
    """


@asynccontextmanager
async def open_influx_v2(
    *,
    url: str,
    org: str,
    bucket: str,
    token: str,
    timeout_s: float = 10.0,
    batch_size: int = 5000,
    flush_interval_s: float = 1.0,
    name: str = "influx",
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[InfluxV2Sink]:
    """Open a sink for the InfluxDB v2 write API (``/api/v2/write``).

    Args:
        url: Server base URL, e.g. ``https://eu-central-1-1.aws.cloud2.influxdata.com``.
        org: Organisation name or id.
        bucket: Bucket name or id.
        token: API token with write permission on the bucket.
        timeout_s: Limit for each HTTP request.
        batch_size: Most records per ``deliver`` call.
        flush_interval_s: Longest a record waits for a fuller batch.
        name: Sink name; the outbox keys this sink's cursor by it.
        ssl_context: TLS settings for ``https://`` (``agent.tls.client_context``).
    """
    # The client's own timeout (ms) is only a backstop; the asyncio.timeout
    # scope around each write is the limit that normally fires first. Leaving
    # the client's context closes its aiohttp session; an unclosed one warns
    # (ResourceWarning).
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

    tls: dict[str, object] = {} if ssl_context is None else {"ssl_context": ssl_context}
    async with InfluxDBClientAsync(
        url=url, token=token, org=org, timeout=int(timeout_s * 1000) + 1000, **tls
    ) as client:
        yield InfluxV2Sink(
            api=_V2Api(write_api=client.write_api(), org=org, bucket=bucket, client=client),
            url=url,
            timeout_s=timeout_s,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            name=name,
        )

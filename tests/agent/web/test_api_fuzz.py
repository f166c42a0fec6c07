"""Every API route fuzzed with arbitrary bytes and text: nothing escapes but a refusal.

One real server (``make_web_app`` + ``open_web``, the agent's lot service, alert
engine, outbox, history and maintenance store behind it) runs on its own event loop
in a thread for the module; each example is one raw HTTP/1.1 request written to a
fresh TCP connection, so the path, query, headers and body reach the server exactly
as generated, bytes the client libraries would refuse to send included. For every
route, its path parameters, query and body are arbitrary bytes or text, with no
credentials, the API token, a wrong token, or a session cookie and its CSRF token.

What must hold for every example: an answer comes (a status line), it is never a
5xx, the server logs no error (an unhandled exception in a handler is logged by
aiohttp as "Error handling request" and answered 500), and the server still serves
afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.web import api
from tests.agent.web.test_server import PASSWORD, TOKEN, _site, make_config

#: Every route the server has: the API's, and those the server adds.
ROUTES = [(method, path) for method, path, _, _ in api.ROUTES] + [
    ("GET", "/api/events"),
    ("GET", "/api/web"),
    ("GET", "/api/session"),
    ("POST", "/api/login"),
    ("POST", "/api/logout"),
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
#: Wrong tokens come from their own address, so their throttle never hides the others.
WRONG_TOKEN_ADDRESS = "127.0.0.3"


class ErrorLog(logging.Handler):
    """Every record at ERROR or above, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Server:
    port: int
    cookie: str
    csrf: str
    errors: ErrorLog


@dataclass
class _Thread:
    """What the server thread tells the fixture."""

    ready: threading.Event
    port: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    error: BaseException | None = None

    def halt(self) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)


def _serve(tmp: Path, box: _Thread) -> None:
    async def main() -> None:
        box.loop, box.stop = asyncio.get_running_loop(), asyncio.Event()
        # Streams are capped per address; the fuzz opens and drops many: lift the cap so
        # its 503 (a refusal by design) does not hide a real one.
        cfg = make_config(tmp, max_streams=4096, max_streams_per_address=4096)
        async for site in _site(tmp, cfg, TOKEN):
            box.port = int(site.base.rsplit(":", 1)[1])
            box.ready.set()
            await box.stop.wait()

    try:
        asyncio.run(main())
    except BaseException as exc:  # reported by the fixture
        box.error = exc
        box.ready.set()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    box = _Thread(ready=threading.Event())
    thread = threading.Thread(target=_serve, args=(tmp_path_factory.mktemp("fuzz"), box))
    thread.start()
    assert box.ready.wait(30), "the server did not start"
    assert box.error is None, box.error
    port = box.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/login", json.dumps({"user": "maria", "password": PASSWORD}))
    answer = conn.getresponse()
    assert answer.status == 200
    cookie = answer.getheader("Set-Cookie", "").split(";", 1)[0]
    csrf = json.loads(answer.read())["csrf"]
    conn.close()
    try:
        yield Server(port=port, cookie=cookie, csrf=csrf, errors=errors)
    finally:
        box.halt()
        thread.join(30)
        logging.getLogger().removeHandler(errors)


def exchange(server: Server, request: bytes, *, source: str = "127.0.0.1") -> bytes:
    """Send ``request`` on a new connection; the answer's head (or b"" if none came)."""
    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=15, source_address=(source, 0)
    ) as sock:
        sock.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got


def status_of(head: bytes) -> int:
    line = head.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/"), f"no status line in {head[:200]!r}"
    return int(line.split()[1])


def check(server: Server, head: bytes) -> None:
    status = status_of(head)
    assert status < 500, head[:600]
    assert not server.errors.records, [r.getMessage() for r in server.errors.records]


# -- strategies ----------------------------------------------------------------------

#: Text of any kind: astral planes, controls, lone surrogates (escaped when encoded).
anything_text = st.text(max_size=80)
anything_bytes = st.binary(max_size=120)


def encoded_segment(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return urllib.parse.quote(raw, safe="")


#: One path parameter: percent-encoded bytes or text, or raw bytes put in as they are.
path_param = st.one_of(
    anything_text.map(encoded_segment),
    anything_bytes.map(encoded_segment),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
    anything_bytes.map(lambda b: b.decode("latin-1")),
    st.sampled_from(["recepcao", "wet_lot", "L-9", "desc-1", "..", "%2e%2e", "%00", "a/b"]),
)
query = st.one_of(
    st.just(""),
    st.dictionaries(anything_text, anything_text, max_size=4).map(
        lambda d: urllib.parse.urlencode(
            {
                k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
                for k, v in d.items()
            }
        )
    ),
    anything_bytes.map(lambda b: b.decode("latin-1")),
    st.sampled_from(
        [
            "measurement=moisture&device=umid-1&field=moisture_pct&range=30d",
            "measurement=moisture&device=umid-1&field=moisture_pct&start_ns=-9&end_ns=9e99",
            "measurement=m&device=d&field=f&start_ns=0&end_ns=" + "9" * 400,
            "range=" + "x" * 2000,
        ]
    ),
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | anything_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["lot", "by", "task", "note", "at", "user", "password"])
            | anything_text,
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
body = st.one_of(
    anything_bytes,
    st.binary(min_size=1000, max_size=1200),
    json_value.map(lambda v: json.dumps(v).encode()),
    json_value.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.sampled_from([b"[" * 5000, b'{"lot": "' + "ç".encode() * 600 + b'"}', b"\x00" * 64]),
)
credentials = st.sampled_from(["none", "token", "wrong-token", "session"])


def fill(template: str, values: list[str]) -> str:
    out, it = [], iter(values)
    for part in template.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(next(it, "x"))
        else:
            out.append(part)
    return "/".join(out)


def build(
    server: Server,
    method: str,
    path: str,
    query_text: str,
    payload: bytes,
    creds: str,
    extra: list[tuple[str, str]],
) -> tuple[bytes, str]:
    target = path + (f"?{query_text}" if query_text else "")
    headers = [("Host", f"127.0.0.1:{server.port}"), ("Connection", "close")]
    source = "127.0.0.1"
    if creds == "token":
        headers.append(("Authorization", f"Bearer {TOKEN}"))
    elif creds == "wrong-token":
        headers.append(("Authorization", "Bearer " + TOKEN[::-1]))
        source = WRONG_TOKEN_ADDRESS
    elif creds == "session":
        headers += [("Cookie", server.cookie), ("X-CSRF-Token", server.csrf)]
    headers += extra
    headers.append(("Content-Length", str(len(payload))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1", "replace") + b"\r\n" + payload, source


extra_headers = st.lists(
    st.tuples(
        st.sampled_from(
            ["Origin", "Sec-Fetch-Site", "Content-Type", "X-Forwarded-For", "X-Forwarded-Proto"]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    ),
    max_size=3,
)

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@FUZZ
@given(
    params=st.lists(path_param, min_size=3, max_size=3),
    query_text=query,
    payload=body,
    creds=credentials,
    other_method=st.sampled_from([None, *METHODS]),
    extra=extra_headers,
)
def test_every_route_refuses_what_it_cannot_take(
    server: Server,
    method: str,
    template: str,
    params: list[str],
    query_text: str,
    payload: bytes,
    creds: str,
    other_method: str | None,
    extra: list[tuple[str, str]],
) -> None:
    request, source = build(
        server,
        other_method or method,
        fill(template, params),
        query_text,
        payload,
        creds,
        extra,
    )
    head = exchange(server, request, source=source)
    check(server, head)


@FUZZ
@given(raw=st.binary(max_size=600), prefix=st.sampled_from([b"", b"GET /api/", b"POST /api/lots/"]))
def test_raw_bytes_never_reach_an_error(server: Server, raw: bytes, prefix: bytes) -> None:
    head = exchange(server, prefix + raw + b"\r\n\r\n")
    if head:  # a request too broken to answer may also just be closed
        check(server, head)
    assert not server.errors.records


@FUZZ
@given(host=st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_any_host_header_is_answered_or_refused(server: Server, host: str) -> None:
    request = f"GET /api/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(
        "latin-1"
    )
    head = exchange(server, request)
    if head:
        check(server, head)


def test_the_server_still_serves_after_the_fuzz(server: Server) -> None:
    head = exchange(
        server,
        f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status_of(head) == 200
    assert not server.errors.records

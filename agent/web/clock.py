"""The agent's clock on the dashboard: how far its time can be trusted, and setting it.

A box with no clock battery and no internet may have no time source at all; then a
person may give it the time of their own device (a phone's clock is set by the
network), confirmed on screen (``agent.timekeeping``)::

    GET  /api/time    quality, source, each source's state, and whether (and why not)
                      a person may set the time now
    POST /api/time    {"wall_ms": <the browser's Date.now()>, "confirmed": true}

The write needs what every write needs (a logged-in user and the session's CSRF token,
or an API token; ``agent.web.server``). It is refused with 409 while a trusted source
answers (NTP, a GPS fix, the modem's network time; ``code`` says which) or when setting
the time by hand is off, and with 400 when the time is before this version's release
date or after the latest believable time (``after-ceiling``: a browser whose clock is
wrong), not confirmed, or not a number of milliseconds.
Every answer carries ``time``, the clock as it is after the request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from coffee_telemetry.agent.commands import MAX_COMMAND_BYTES, decode_payload
from coffee_telemetry.agent.errors import CommandRefused
from coffee_telemetry.agent.timekeeping import TimeRefused
from coffee_telemetry.agent.web.api import CLIENT, DEPS, WRITER, WRITER_VIA, Access, json_response

log = logging.getLogger(__name__)

#: Largest ``wall_ms`` taken: JavaScript's largest exact integer.
MAX_WALL_MS = 2**53 - 1


def _refused(error: str, code: str, status: int, doc: dict[str, object] | None) -> web.Response:
    return json_response({"ok": False, "error": error, "code": code, "time": doc}, status)


async def time_status(request: web.Request) -> web.Response:
    """The clock's quality, source and sources, and whether a person may set it."""
    control = request.app[DEPS].time_control
    if control is None:
        return json_response({"available": False})
    return json_response({"available": True, **control.time_doc()})


async def set_time(request: web.Request) -> web.Response:
    """A person sets the agent's time to their browser's clock (module docstring)."""
    control = request.app[DEPS].time_control
    if control is None:
        return _refused("time keeping is not running", "unavailable", 503, None)
    if request.content_length is not None and request.content_length > MAX_COMMAND_BYTES:
        return _refused(f"body over {MAX_COMMAND_BYTES} bytes", "too-large", 413, None)
    raw = await request.content.read(MAX_COMMAND_BYTES + 1)
    try:
        body = decode_payload(raw)
    except CommandRefused as exc:
        status = 413 if len(raw) > MAX_COMMAND_BYTES else 400
        return _refused(str(exc), "bad-body", status, None)
    wall_ms = body.get("wall_ms")
    if isinstance(wall_ms, bool) or not isinstance(wall_ms, int) or not 0 < wall_ms <= MAX_WALL_MS:
        return _refused("send {'wall_ms': <milliseconds since 1970>}", "bad-body", 400, None)
    doc = control.time_doc()
    if body.get("confirmed") is not True:
        return _refused("confirm the time on screen first", "not-confirmed", 400, doc)
    refusal = doc.get("user_refusal")
    if isinstance(refusal, str):
        return _refused(refusal, str(doc.get("user_refusal_code") or "refused"), 409, doc)
    who = request[WRITER] if request.get(WRITER_VIA) == "session" else str(request[WRITER_VIA])
    try:
        adj = await control.set_by_user(who, wall_ms * 1_000_000)
    except ValueError as exc:
        _audit(request, f"refused: {exc}")
        code = exc.code if isinstance(exc, TimeRefused) else "before-floor"
        return _refused(str(exc), code, 400, control.time_doc())
    _audit(request, f"time set, moved by {adj.delta_ns / 1e9:+.3f} s")
    return json_response({"ok": True, "delta_s": adj.delta_ns / 1e9, "time": control.time_doc()})


def _audit(request: web.Request, result: str) -> None:
    log.info(
        "Web write time by %r (%s) from %s: %s",
        request.get(WRITER),
        request.get(WRITER_VIA),
        request.get(CLIENT, request.remote),
        result,
    )


#: The clock's routes: method, path, handler, and what it needs.
ROUTES: tuple[
    tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], Access], ...
] = (
    ("GET", "/api/time", time_status, "read"),
    ("POST", "/api/time", set_time, "write"),
)

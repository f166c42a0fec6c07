"""A lot's reports over HTTP: the PDF and the CSV (``agent.lots.export``).

Routes (read access, as every read route)::

    GET /api/lots/<code>/report.pdf?lang=pt-BR|en
    GET /api/lots/<code>/report.csv?lang=pt-BR|en&decimal_comma=1|0

Both answer as a download (``Content-Disposition: attachment``) named after the lot
(``lote-L-0042.pdf``). The CSV has ``;`` and decimal commas by default in pt-BR (what a
Brazilian Excel opens), ``,`` and points in English; ``decimal_comma`` chooses. An
unknown lot is a 404 saying so; a code that is not a lot code, an unknown language
or a repeated parameter is a 400; nothing is written either way. Without the fonts
(``fonts-dejavu-core``) a PDF is a 503 saying so.

A report is made on a worker thread, never on the event loop (a PDF of thousands of
readings takes a fraction of a second of CPU): readings keep flowing while it is
made. At most ``MAX_CONCURRENT`` are made at once; a request that cannot start one
within ``WAIT_S`` gets a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.lots.export import (
    Lang,
    configured_csv,
    configured_report,
    report_file_name,
)
from coffee_telemetry.agent.lots.model import LotRecord
from coffee_telemetry.agent.lots.store import LotError, validate_lot
from coffee_telemetry.agent.web.api import DEPS, refused
from coffee_telemetry.agent.web.lots import LOT_RECORDS

__all__ = ["ROUTES", "lot_report_csv", "lot_report_pdf"]

log = logging.getLogger(__name__)

#: Reports made at the same time, at most.
MAX_CONCURRENT = 1
#: How long a request waits for its turn before a 503.
WAIT_S = 10.0
_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT)
_PARAMS = frozenset({"lang", "decimal_comma"})


async def _record(request: web.Request) -> LotRecord | web.Response:
    store = request.app.get(LOT_RECORDS)
    if store is None:
        return refused("lot records are not kept by this server", 404)
    try:
        code = validate_lot(request.match_info["code"])
    except LotError as exc:
        return refused(f"not a lot code: {exc}")
    record = await store.record(code)
    if record is None:
        return refused(
            f"unknown lot {code!r}: no reading, weighment or event of it was recorded", 404
        )
    return record


def _options(request: web.Request) -> tuple[Lang, bool | None] | web.Response:
    params = request.rel_url.query
    for key in params:
        if key not in _PARAMS:
            return refused(f"unknown parameter {key[:40]!r} (lang, decimal_comma)")
        if len(params.getall(key)) > 1:
            return refused(f"{key!r} is given more than once")
    lang_text = params.get("lang", "pt-BR")
    if lang_text not in ("pt-BR", "en"):
        return refused("lang must be pt-BR or en")
    lang: Lang = "en" if lang_text == "en" else "pt-BR"
    comma_text = params.get("decimal_comma")
    if comma_text not in (None, "0", "1"):
        return refused("decimal_comma must be 0 or 1")
    return lang, None if comma_text is None else comma_text == "1"


def _made_in_turn(make: Callable[[], bytes]) -> bytes | str | None:
    """``make()`` once a slot is free (None: none was within ``WAIT_S``; text: why not)."""
    if not _SLOTS.acquire(timeout=WAIT_S):
        return None
    try:
        return make()
    except ConfigError as exc:  # the fonts are missing: the box's setup, not the request
        log.error("Cannot make a lot report: %s", exc)
        return str(exc)
    finally:
        _SLOTS.release()


async def _download(
    request: web.Request, make: Callable[[], bytes], *, name: str, content_type: str
) -> web.Response:
    body = await asyncio.to_thread(_made_in_turn, make)
    if body is None:
        response = refused("busy making other reports; try again in a few seconds", 503)
        response.headers["Retry-After"] = "5"
        return response
    if isinstance(body, str):
        return refused(body, 503)
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8" if content_type == "text/csv" else None,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


async def lot_report_pdf(request: web.Request) -> web.Response:
    """``GET /api/lots/<code>/report.pdf``: the lot's PDF report."""
    options = _options(request)
    if isinstance(options, web.Response):
        return options
    record = await _record(request)
    if isinstance(record, web.Response):
        return record
    deps = request.app[DEPS]
    lang, _comma = options
    now = deps.clock_ns()

    def make() -> bytes:
        return configured_report(
            record,
            deps.cfg,
            generated_ns=now,
            lang=lang,
            creator=f"coffee-telemetry {deps.version}",
        )

    return await _download(
        request,
        make,
        name=report_file_name(record.summary.code),
        content_type="application/pdf",
    )


async def lot_report_csv(request: web.Request) -> web.Response:
    """``GET /api/lots/<code>/report.csv``: the lot's readings and weighments as CSV."""
    options = _options(request)
    if isinstance(options, web.Response):
        return options
    record = await _record(request)
    if isinstance(record, web.Response):
        return record
    cfg = request.app[DEPS].cfg
    lang, comma = options
    return await _download(
        request,
        lambda: configured_csv([record], cfg, lang=lang, decimal_comma=comma),
        name=report_file_name(record.summary.code, csv=True),
        content_type="text/csv",
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The routes of this module (registered by ``agent.web.server``).
ROUTES: tuple[tuple[str, str, Handler, Literal["read", "write"]], ...] = (
    ("GET", "/api/lots/{code}/report.pdf", lot_report_pdf, "read"),
    ("GET", "/api/lots/{code}/report.csv", lot_report_csv, "read"),
)

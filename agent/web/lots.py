"""The lot records' JSON API: search the lots, read one lot's record, change its details.

Routes (read access as every read route; writes through the command boundary)::

    GET  /api/lots?q=&producer=&from=&to=&verdict=&page=&per_page=
         {"lots": [summary, ...], "total": N, "page": p, "per_page": n}
    GET  /api/lots/<code>
         {"summary": ..., "details": ..., "readings": [...], "weighments": [...],
          "events": [...], "threshold_pct": x, "drying": estimate}
    POST /api/lots/<code>/details   {"producer": ..., "bags": ..., "product_type": ...,
                                     "note": ...}  (``cmd/lotinfo/<code>``)
    POST /api/lots/<code>/dried     {"dryer": "patio", "at": ...}  (``cmd/lotdried/<code>``)
    POST /api/lots/<code>/receipt   {"member": ..., "invoice": ..., "sacks": ...,
                                     "gross_kg": ..., "net_kg": ..., "stack": ...}
                                    (``cmd/lotreceipt/<code>``)

A lot's record also carries ``dried`` (when it left the dryer, which dryer, who said
so), ``readiness`` (``agent.lots.readiness``: ``state`` ``resting``, ``waiting``,
``outside`` or ``ready``, the rest's end, the window, the latest readings, the
sentence in both languages), ``receipt`` (``agent.lots.receipt``) and
``hulled_bags``; each is ``null`` when there is none. Each lot of a search carries
its ``readiness`` too.
    POST /api/lots/<code>/move      {"reading": "umid-1:57", "to": "L-0043", "reason": ...}
                                    (``cmd/lotmove/<code>``: a logged-in user only)
    POST /api/lots/<code>/oven      {"moisture_pct": 11.4}  (``cmd/lotoven/<code>``: the
                                    reference oven result; ``agent.evidence.oven``)

A lot's record carries ``meters`` too (``agent.evidence.oven.meters_doc``): each
reading's calibration id, those calibrations, the readings past their due date, the
oven results and each meter's bias against the latest.

``GET /api/lots`` without any of those parameters still answers the active lot per
station (``agent.web.api.lots``): the two share the path. A lot code with ``/`` is
percent-encoded in the URL (``L%2F42``), as ``agent.commands`` escapes topic levels.

Search: ``q`` is part of the code and ``producer`` part of the producer's name
(case-insensitive; at most 64 printable characters each); ``from``/``to`` bound when
the lot was seen, as UTC nanoseconds or ISO dates (``2026-12-01``: a whole day in
the site's time zone; ``2026-12-01T08:00:00-03:00``), between 2000 and 2100, ``from``
not after ``to``; ``verdict`` is ``wet``, ``ok`` or ``none``; ``page`` counts from 1
and ``per_page`` is at most 200. Anything else is a 400 naming what is wrong, and
nothing is read. Times in answers are UTC nanoseconds.

``drying`` is the lot's drying estimate (``agent.lots.drying``, its target from
``[lots] target_moisture_pct`` and ``target_moisture_by_product``): ``status``
(``estimate``, ``reached``, ``not_enough_data``, ``never``), ``reason`` and its
sentence in both languages (``text``), ``target_pct``, ``points``, ``remaining_s``,
``eta_ns`` and the fitted curve (``fit``: ``me_pct``, ``m0_pct``, ``k_per_h``,
``t0_ns``, ``rmse_pp``) or ``null``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Literal

from aiohttp import web

from coffee_telemetry.agent.evidence.oven import OVEN_COMMAND, meters_doc
from coffee_telemetry.agent.lots.corrections import MOVE_COMMAND
from coffee_telemetry.agent.lots.drying import DryingEstimate, describe, estimate_for_record
from coffee_telemetry.agent.lots.model import (
    LotEvent,
    LotReading,
    LotRecord,
    LotSummary,
    LotWeighment,
    Verdict,
)
from coffee_telemetry.agent.lots.readiness import DRIED_COMMAND, Readiness, readiness_doc
from coffee_telemetry.agent.lots.receipt import RECEIPT_COMMAND, receipt_doc
from coffee_telemetry.agent.lots.records import (
    DETAILS_COMMAND,
    PER_PAGE_MAX,
    QUERY_MAX_LEN,
    AsyncLotRecords,
    LotQuery,
    details_doc,
)
from coffee_telemetry.agent.lots.store import LotError, validate_lot
from coffee_telemetry.agent.web import api
from coffee_telemetry.agent.web.api import DEPS, json_response, refused

__all__ = ["LOT_RECORDS", "QueryError", "lot_routes", "parse_query"]

#: The lot record store, set on the application by ``make_web_app``.
LOT_RECORDS = web.AppKey("lot_records", AsyncLotRecords)

NS = 1_000_000_000
#: Search bounds: times outside these years are refused as absurd.
_MIN_NS = int(datetime(2000, 1, 1).timestamp()) * NS
_MAX_NS = int(datetime(2100, 1, 1).timestamp()) * NS
_PARAMS = frozenset({"q", "producer", "from", "to", "verdict", "page", "per_page"})
_VERDICTS: Mapping[str, Verdict] = {"wet": "wet", "ok": "ok", "none": "none"}
_MAX_PAGE = 100_000


class QueryError(ValueError):
    """A search parameter was refused; the message says which and why."""


def _text(params: Mapping[str, str], key: str) -> str:
    value = params.get(key, "").strip()
    if len(value) > QUERY_MAX_LEN:
        raise QueryError(f"{key} is longer than {QUERY_MAX_LEN} characters")
    if not value.isprintable():
        raise QueryError(f"{key} has a control or invisible formatting character")
    return value


def _int(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise QueryError(f"{key} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise QueryError(f"{key} must be a whole number from {low} to {high}")
    return value


def _time(params: Mapping[str, str], key: str, zone: object, *, end: bool) -> int | None:
    raw = params.get(key, "").strip()
    if not raw:
        return None
    if len(raw) > 40 or not raw.isascii() or not raw.isprintable():
        raise QueryError(f"{key} must be UTC nanoseconds or an ISO date")
    if raw.isdigit():
        ns = int(raw)
    else:
        try:
            if len(raw) == 10:
                day = date.fromisoformat(raw)
                moment = datetime.combine(day, time(), tzinfo=zone)  # type: ignore[arg-type]
                if end:
                    moment += timedelta(days=1)
                ns = int(moment.timestamp()) * NS - (1 if end else 0)
            else:
                moment = datetime.fromisoformat(raw)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=zone)  # type: ignore[arg-type]
                ns = int(moment.timestamp() * 1e6) * 1000
        except (ValueError, OverflowError, OSError):
            raise QueryError(f"{key} must be UTC nanoseconds or an ISO date") from None
    if not _MIN_NS <= ns <= _MAX_NS:
        raise QueryError(f"{key} must be between the years 2000 and 2100")
    return ns


def parse_query(params: Mapping[str, str], *, zone: object = None) -> LotQuery:
    """A lot search from URL parameters (see the module docstring).

    Raises:
        QueryError: A parameter is unknown, malformed, out of range or hostile.
    """
    unknown = sorted(k for k in params if k not in _PARAMS)
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0][:40]!r} ({', '.join(sorted(_PARAMS))})")
    verdict_raw = params.get("verdict", "").strip()
    verdict = _VERDICTS.get(verdict_raw) if verdict_raw else None
    if verdict_raw and verdict is None:
        raise QueryError("verdict must be wet, ok or none")
    from_ns = _time(params, "from", zone, end=False)
    to_ns = _time(params, "to", zone, end=True)
    if from_ns is not None and to_ns is not None and from_ns > to_ns:
        raise QueryError("from is after to: the date range is inverted")
    return LotQuery(
        q=_text(params, "q"),
        producer=_text(params, "producer"),
        from_ns=from_ns,
        to_ns=to_ns,
        verdict=verdict,
        page=_int(params, "page", 1, 1, _MAX_PAGE),
        per_page=_int(params, "per_page", 50, 1, PER_PAGE_MAX),
    )


def summary_doc(summary: LotSummary) -> dict[str, object]:
    """A lot summary as JSON (tuples as lists)."""
    doc = {f.name: getattr(summary, f.name) for f in dataclasses.fields(summary)}
    doc["stations"] = list(summary.stations)
    doc["devices"] = list(summary.devices)
    return doc


def _rows(items: Iterable[object], names: tuple[str, ...]) -> list[dict[str, object]]:
    values = operator.attrgetter(*names)
    return [dict(zip(names, values(item), strict=True)) for item in items]


def record_doc(record: LotRecord) -> dict[str, object]:
    """A lot's whole record as JSON."""
    return {
        "summary": summary_doc(record.summary),
        "details": details_doc(record.details),
        "readings": _rows(record.readings, _names(LotReading)),
        "weighments": _rows(record.weighments, _names(LotWeighment)),
        "events": _rows(record.events, _names(LotEvent)),
        "threshold_pct": record.threshold_pct,
    }


def drying_doc(estimate: DryingEstimate) -> dict[str, object]:
    """A drying estimate as JSON, its reason as a sentence in both languages."""
    fit = estimate.fit
    return {
        "status": estimate.status,
        "reason": estimate.reason,
        "text": {"pt-BR": describe(estimate, "pt-BR"), "en": describe(estimate, "en")},
        "target_pct": estimate.target_pct,
        "points": estimate.points,
        "last_ns": estimate.last_ns,
        "remaining_s": estimate.remaining_s,
        "eta_ns": estimate.eta_ns,
        "fit": None
        if fit is None
        else {
            "me_pct": fit.me_pct,
            "m0_pct": fit.m0_pct,
            "k_per_h": fit.k_per_h,
            "t0_ns": fit.t0_ns,
            "rmse_pp": fit.rmse_pp,
        },
    }


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _store(request: web.Request) -> AsyncLotRecords | None:
    return request.app.get(LOT_RECORDS)


async def search_lots(request: web.Request) -> web.Response:
    """``GET /api/lots``: a search of the lot records, or (no parameters) the active lots."""
    params = request.rel_url.query
    if not params:
        return await api.lots(request)
    store = _store(request)
    if store is None:
        return refused("lot records are not kept by this server", 404)
    for key in params:
        if len(params.getall(key)) > 1:
            return refused(f"{key[:40]!r} is given more than once")
    try:
        query = parse_query(
            {k: params.getone(k) for k in params}, zone=request.app[DEPS].cfg.site.zone
        )
    except QueryError as exc:
        return refused(str(exc))
    lots, total = await store.search(query)
    ready = await _readiness_of(request, [s.code for s in lots])
    return json_response(
        {
            "lots": [
                {**summary_doc(s), "readiness": readiness_doc(ready.get(s.code))} for s in lots
            ],
            "total": total,
            "page": query.page,
            "per_page": query.per_page,
        }
    )


def _code(request: web.Request) -> str | web.Response:
    try:
        return validate_lot(request.match_info["code"])
    except LotError as exc:
        return refused(f"not a lot code: {exc}")


async def lot_record(request: web.Request) -> web.Response:
    """``GET /api/lots/<code>``: the lot's whole record (404 for a lot never seen)."""
    store = _store(request)
    if store is None:
        return refused("lot records are not kept by this server", 404)
    code = _code(request)
    if isinstance(code, web.Response):
        return code
    record = await store.record(code)
    if record is None:
        return refused(
            f"unknown lot {code!r}: no reading, weighment or event of it was recorded", 404
        )
    doc = record_doc(record)
    doc["drying"] = drying_doc(await _drying(request, record))
    doc["dried"] = None if record.drying is None else dataclasses.asdict(record.drying)
    doc["readiness"] = readiness_doc((await _readiness_of(request, [code])).get(code))
    doc["receipt"] = receipt_doc(record.receipt)
    doc["hulled_bags"] = record.hulled_bags
    doc["meters"] = meters_doc(record, request.app[DEPS].cfg.site.zone)
    return json_response(doc)


async def _readiness_of(request: web.Request, codes: list[str]) -> dict[str, Readiness]:
    service = request.app[DEPS].readiness
    if service is None or not codes:
        return {}
    return await service.readiness_by_code(codes)


#: Drying estimates of lots whose readings did not change since (see ``_drying``).
_DRYING_CACHE: OrderedDict[tuple[object, ...], DryingEstimate] = OrderedDict()
_DRYING_CACHE_SIZE = 64


async def _drying(request: web.Request, record: LotRecord) -> DryingEstimate:
    """The lot's drying estimate, made on a worker thread, kept while its readings stay.

    A fit takes tens of milliseconds for thousands of readings: never on the event
    loop, and not again for a lot whose readings did not change (readings are only
    ever added, so their count, last time and mean say whether they did).
    """
    cfg = request.app[DEPS].cfg.lots
    s = record.summary
    key = (
        s.code,
        s.readings,
        s.last_ns,
        s.mean_moisture_pct,
        s.product,
        record.details.product_type,
        cfg.target_moisture_pct,
        tuple(sorted(cfg.target_moisture_by_product.items())),
    )
    cached = _DRYING_CACHE.get(key)
    if cached is not None:
        _DRYING_CACHE.move_to_end(key)
        return cached
    estimate = await asyncio.to_thread(
        estimate_for_record,
        record,
        default_pct=cfg.target_moisture_pct,
        by_product=cfg.target_moisture_by_product,
    )
    _DRYING_CACHE[key] = estimate
    while len(_DRYING_CACHE) > _DRYING_CACHE_SIZE:
        _DRYING_CACHE.popitem(last=False)
    return estimate


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler, Literal["read", "write"]]


def _lot_command(command: str, summary: str, *, readiness: bool = False) -> Handler:
    """A ``POST /api/lots/<code>/...`` handler: the lot's code and body to ``command``.

    The command boundary checks the caller and the body; this only refuses a server that
    keeps no lot records (``readiness``: no readiness service) and a malformed code.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        kept = request.app[DEPS].readiness if readiness else _store(request)
        if kept is None:
            return refused("lot records are not kept by this server", 404)
        code = _code(request)
        if isinstance(code, web.Response):
            return code
        return await api._command(request, (command, code))

    handler.__doc__ = summary
    handler.__name__ = handler.__qualname__ = f"lot_{command}"
    return handler


lot_details = _lot_command(
    DETAILS_COMMAND, "``POST /api/lots/<code>/details``: change the lot's details."
)
lot_move = _lot_command(
    MOVE_COMMAND, "``POST /api/lots/<code>/move``: move a reading to another lot (logged in)."
)
lot_dried = _lot_command(
    DRIED_COMMAND, "``POST /api/lots/<code>/dried``: the lot left the dryer.", readiness=True
)
lot_receipt = _lot_command(
    RECEIPT_COMMAND, "``POST /api/lots/<code>/receipt``: change the lot's intake receipt."
)
lot_oven = _lot_command(
    OVEN_COMMAND, "``POST /api/lots/<code>/oven``: the lot's reference oven result."
)

#: The routes of this module.
ROUTES: tuple[Route, ...] = (
    ("GET", "/api/lots/{code}", lot_record, "read"),
    ("POST", "/api/lots/{code}/details", lot_details, "write"),
    ("POST", "/api/lots/{code}/dried", lot_dried, "write"),
    ("POST", "/api/lots/{code}/receipt", lot_receipt, "write"),
    ("POST", "/api/lots/{code}/oven", lot_oven, "write"),
    ("POST", "/api/lots/{code}/move", lot_move, "write"),
)


def lot_routes(routes: Iterable[Route]) -> list[Route]:
    """``routes`` (``agent.web.api.ROUTES``) with ``GET /api/lots`` searching, plus ours."""
    out: list[Route] = [
        ("GET", path, search_lots, access)
        if (method, path) == ("GET", "/api/lots")
        else (method, path, handler, access)
        for method, path, handler, access in routes
    ]
    return out + list(ROUTES)

"""Blends: a lot made from named source lots, carrying their summaries, members and plots.

Theory of operation
-------------------
A cooperative mixes lots (``coffee-telemetry lot blend L-0100 --from L-0042 L-0043``).
The blend is a lot of its own: its own readings and weighments, if it is measured later,
are its own. What it carries from its sources is fixed at the moment of blending:

* each source's readings' summary (count, mean, minimum, maximum, latest moisture, net
  weight, verdict against the source's threshold), one ``lot_blends`` row per source,
  and their combination (count, weighted mean, minimum, maximum, net weight; ``wet`` if
  any source was wet), all in the blend lot's ``blend`` event, so the Lote page, the CSV
  and PDF reports and their hash (``lot verify``) carry them; each source gets a
  ``blended`` event naming the blend;
* the sources' members, linked to the blend in the evidence store, so the blend's lot
  pack lists their plots.

EUDR forbids mixing compliant and non-compliant coffee: a source lot "sem
geolocalização" (no plot of its members has geometry, or no member at all) cannot be
blended with a geolocated one; the blend is refused with the lots named, and nothing is
written. A lot is blended once: a second ``blend`` of the same lot is refused. The blend
lot may already exist (measured before it was declared a blend); it may not be one of
its sources.

Two stores are written, not in one transaction: the lot record is checked first
(sources known, not a blend yet), then the geolocation rule, then the lot record's
blend is written, and last the members are linked (idempotent). A failure between the
last two leaves a blend without its members; ``lot members L-0100 --add`` links them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.evidence.store import EvidenceStore
from coffee_telemetry.agent.lots.model import Verdict
from coffee_telemetry.agent.lots.records import LotRecords, Thresholds
from coffee_telemetry.agent.lots.store import validate_lot

__all__ = [
    "MAX_SOURCES",
    "NO_GEOLOCATION",
    "BlendRequest",
    "BlendResult",
    "Combined",
    "SourceSummary",
    "blend",
    "blend_sources",
    "carried",
    "combine",
    "parse_blend",
]

#: Most source lots in one blend.
MAX_SOURCES = 32
#: A lot whose members have no geolocated plot (the lot pack's words).
NO_GEOLOCATION = "sem geolocalização"


@dataclass(frozen=True, slots=True)
class BlendRequest:
    """A validated blend: the new lot and its sources, in the order given."""

    code: str
    sources: tuple[str, ...]


def parse_blend(code: str, sources: Sequence[str]) -> BlendRequest:
    """Check a blend's lot codes.

    Raises:
        LotError: A bad code, fewer than two sources or more than ``MAX_SOURCES``, a
            source named twice, or the blend among its sources.
    """
    blend_code = validate_lot(code)
    clean = tuple(validate_lot(s) for s in sources)
    if len(clean) < 2:
        raise LotError("a blend needs at least two source lots")
    if len(clean) > MAX_SOURCES:
        raise LotError(f"a blend has at most {MAX_SOURCES} source lots")
    if len(set(clean)) != len(clean):
        raise LotError("a source lot is named twice")
    if blend_code in clean:
        raise LotError(f"lot {blend_code} cannot be a source of itself")
    return BlendRequest(blend_code, clean)


@dataclass(frozen=True, slots=True)
class SourceSummary:
    """A source lot's readings' summary at the moment of blending."""

    code: str
    readings: int
    sum_pct: float
    min_pct: float | None
    max_pct: float | None
    last_pct: float | None
    weighments: int
    net_kg: float
    verdict: Verdict
    geolocated: bool

    @property
    def mean_pct(self) -> float | None:
        """Mean moisture (``None`` without readings)."""
        return self.sum_pct / self.readings if self.readings else None


@dataclass(frozen=True, slots=True)
class Combined:
    """The sources together."""

    readings: int
    mean_pct: float | None
    min_pct: float | None
    max_pct: float | None
    net_kg: float
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class BlendResult:
    """A blend as written."""

    code: str
    sources: tuple[SourceSummary, ...]
    combined: Combined
    members: tuple[str, ...]
    geolocation: str


def combine(sources: Sequence[SourceSummary]) -> Combined:
    """The sources' summaries together (the mean weighted by readings)."""
    n = sum(s.readings for s in sources)
    lows = [s.min_pct for s in sources if s.min_pct is not None]
    highs = [s.max_pct for s in sources if s.max_pct is not None]
    verdict: Verdict = (
        "wet"
        if any(s.verdict == "wet" for s in sources)
        else "ok"
        if any(s.verdict == "ok" for s in sources)
        else "none"
    )
    return Combined(
        readings=n,
        mean_pct=sum(s.sum_pct for s in sources) / n if n else None,
        min_pct=min(lows) if lows else None,
        max_pct=max(highs) if highs else None,
        net_kg=sum(s.net_kg for s in sources),
        verdict=verdict,
    )


def _summaries(
    conn: sqlite3.Connection,
    request: BlendRequest,
    thresholds: Thresholds,
    geolocated: Mapping[str, bool],
) -> list[SourceSummary]:
    row = conn.execute(
        "SELECT 1 FROM lot_blends JOIN lots ON lots.id = blend_lot WHERE code = ? LIMIT 1",
        (request.code,),
    ).fetchone()
    if row is not None:
        raise LotError(f"lot {request.code} is already a blend")
    out: list[SourceSummary] = []
    for code in request.sources:
        found = conn.execute(
            "SELECT readings, sum_pct, min_pct, max_pct, last_pct, weighments, net_kg, product"
            " FROM lots WHERE code = ?",
            (code,),
        ).fetchone()
        if found is None:
            raise LotError(f"unknown source lot {code!r}: nothing of it was recorded")
        n, total, lo, hi, last, nw, net, product = found
        verdict: Verdict = (
            "none"
            if not n or hi is None
            else "wet"
            if float(hi) >= thresholds.for_product(str(product))
            else "ok"
        )
        out.append(
            SourceSummary(
                code=code,
                readings=int(n),
                sum_pct=float(total),
                min_pct=None if lo is None else float(lo),
                max_pct=None if hi is None else float(hi),
                last_pct=None if last is None else float(last),
                weighments=int(nw),
                net_kg=float(net),
                verdict=verdict,
                geolocated=geolocated.get(code, False),
            )
        )
    return out


def blend_sources(records: LotRecords, request: BlendRequest) -> list[SourceSummary]:
    """The sources' summaries now (read only; geolocation not looked at).

    Raises:
        LotError: A source never seen, or the lot already a blend.
    """
    return records.read_with(lambda conn: _summaries(conn, request, records.thresholds, {}))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def _write(
    conn: sqlite3.Connection,
    request: BlendRequest,
    thresholds: Thresholds,
    geolocated: Mapping[str, bool],
    *,
    by: str,
    source: str,
    at_ns: int,
) -> tuple[list[SourceSummary], Combined]:
    sources = _summaries(conn, request, thresholds, geolocated)  # again, in this transaction
    combined = combine(sources)
    conn.execute(
        "INSERT OR IGNORE INTO lots (code, first_ns, last_ns) VALUES (?, ?, ?)",
        (request.code, at_ns, at_ns),
    )
    blend_id = int(
        conn.execute("SELECT id FROM lots WHERE code = ?", (request.code,)).fetchone()[0]
    )
    products = {
        str(r[0])
        for r in conn.execute(
            f"SELECT product FROM lots WHERE code IN ({','.join('?' * len(request.sources))})",
            request.sources,
        )
    }
    if len(products) == 1 and "" not in products:
        conn.execute(
            "UPDATE lots SET product = ? WHERE id = ? AND product = ''", (products.pop(), blend_id)
        )
    conn.executemany(
        "INSERT INTO lot_blends (blend_lot, position, source, readings, sum_pct, min_pct,"
        " max_pct, last_pct, weighments, net_kg, verdict, geolocated, ts_ns, by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                blend_id,
                i,
                s.code,
                s.readings,
                s.sum_pct,
                s.min_pct,
                s.max_pct,
                s.last_pct,
                s.weighments,
                s.net_kg,
                s.verdict,
                int(s.geolocated),
                at_ns,
                by,
            )
            for i, s in enumerate(sources)
        ],
    )
    data: dict[str, str | float | int | bool] = {
        "sources": ",".join(request.sources),
        "readings": combined.readings,
        "net_kg": combined.net_kg,
        "verdict": combined.verdict,
    }
    for key, value in (
        ("mean_pct", combined.mean_pct),
        ("min_pct", combined.min_pct),
        ("max_pct", combined.max_pct),
    ):
        if value is not None:
            data[key] = value
    parts = []
    for s in sources:
        data[f"{s.code}.readings"] = s.readings
        data[f"{s.code}.net_kg"] = s.net_kg
        data[f"{s.code}.verdict"] = s.verdict
        if s.mean_pct is not None:
            data[f"{s.code}.mean_pct"] = s.mean_pct
        if s.max_pct is not None:
            data[f"{s.code}.max_pct"] = s.max_pct
        parts.append(
            f"{s.code} ({s.readings} readings, mean {_pct(s.mean_pct)}, max {_pct(s.max_pct)},"
            f" {s.net_kg:.1f} kg, {s.verdict})"
        )
    text = (
        f"blend of {', '.join(parts)} by {by}; together {combined.readings} readings,"
        f" mean {_pct(combined.mean_pct)}, max {_pct(combined.max_pct)},"
        f" {combined.net_kg:.1f} kg, {combined.verdict}"
    )
    events = [(blend_id, f"lotrec:blend:{request.code}", "blend", text, data)]
    for s in sources:
        src_id = int(conn.execute("SELECT id FROM lots WHERE code = ?", (s.code,)).fetchone()[0])
        events.append(
            (
                src_id,
                f"lotrec:blended:{request.code}:{s.code}",
                "blended",
                f"blended into lot {request.code} by {by}",
                {"blend": request.code},
            )
        )
    conn.executemany(
        "INSERT INTO events (lot_id, ident, ts_ns, kind, text, by, source, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                lot_id,
                ident,
                at_ns,
                kind,
                body[:2000],
                by,
                source,
                json.dumps(doc, ensure_ascii=False, sort_keys=True),
            )
            for lot_id, ident, kind, body, doc in events
        ],
    )
    return sources, combined


def _geolocated(evidence: EvidenceStore, lot: str) -> tuple[bool, list[str]]:
    members = evidence.lot_members(lot)
    located = any(p.geometry is not None for m in members for p in evidence.plots(m.code))
    return located, [m.code for m in members]


def blend(
    records: LotRecords,
    evidence: EvidenceStore,
    request: BlendRequest,
    *,
    by: str,
    source: str,
    at_ns: int,
) -> BlendResult:
    """Make the blend (see the module docstring for the order of the writes).

    Raises:
        LotError: A source never seen, the lot already a blend, or a lot "sem
            geolocalização" blended with a geolocated one; nothing is written.
    """
    blend_sources(records, request)  # unknown sources, a second blend: refused first
    located: dict[str, bool] = {}
    members: list[str] = []
    for code in request.sources:
        located[code], codes = _geolocated(evidence, code)
        members += [c for c in codes if c not in members]
    if len(set(located.values())) > 1:
        without = ", ".join(c for c, ok in located.items() if not ok)
        with_ = ", ".join(c for c, ok in located.items() if ok)
        raise LotError(
            f"mistura recusada: {without} {'está' if ',' not in without else 'estão'}"
            f" {NO_GEOLOCATION} e {with_} tem talhões geolocalizados (EUDR: café sem"
            " geolocalização não se mistura com café geolocalizado) / blend refused:"
            f" {without} without geolocation, {with_} geolocated (EUDR: coffee without"
            " geolocated plots is never mixed with geolocated coffee)"
        )
    sources, combined = records.write_with(
        lambda conn: _write(
            conn,
            request,
            records.thresholds,
            located,
            by=by,
            source=source,
            at_ns=at_ns,
        )
    )
    for code in members:
        evidence.link(request.code, code)
    geolocated = all(located.values())
    return BlendResult(
        code=request.code,
        sources=tuple(sources),
        combined=combined,
        members=tuple(members),
        geolocation="geolocalizado/geolocated" if geolocated else NO_GEOLOCATION,
    )


def carried(records: LotRecords, code: str) -> list[SourceSummary]:
    """The sources a blend lot carries (empty for a lot that is not a blend)."""

    def read(conn: sqlite3.Connection) -> list[SourceSummary]:
        return [
            SourceSummary(
                code=str(r[0]),
                readings=int(r[1]),
                sum_pct=float(r[2]),
                min_pct=r[3],
                max_pct=r[4],
                last_pct=r[5],
                weighments=int(r[6]),
                net_kg=float(r[7]),
                verdict=r[8],
                geolocated=bool(r[9]),
            )
            for r in conn.execute(
                "SELECT b.source, b.readings, b.sum_pct, b.min_pct, b.max_pct, b.last_pct,"
                " b.weighments, b.net_kg, b.verdict, b.geolocated FROM lot_blends b"
                " JOIN lots ON lots.id = b.blend_lot WHERE lots.code = ? ORDER BY b.position",
                (code,),
            )
        ]

    return records.read_with(read)

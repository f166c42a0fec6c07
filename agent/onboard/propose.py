"""Which driver reads a capture, with which options, and how well: ``coffee-telemetry propose``.

Every driver the agent has is a candidate. The ticket printer's options are inferred
from the text (``tickets.infer_layout``); the framed protocols (Tesma, Toledo
continuous, A&D/``ST,GS`` lines, MT-SICS) need only their serial settings. Each
candidate becomes a real ``[[devices]]`` block, is validated by the agent's own config
loader (``parse_config``), and reads the whole recording through the agent's own
driver (the device config's ``make_driver``, ``mtsics_client``) fed chunk by chunk
with the capture's timing, as the device loop would feed it: ``check_capture``.

The candidate whose frames are the largest share of what its driver saw wins
(``share`` = valid frames / (valid + discarded), copies and the partial ticket at
the port's opening not counted against it); ties go to the driver with more frames,
then to the stricter protocol. A capture no driver reads is refused with the reason
(``Refusal``): no bytes, bytes that are not text (serial settings?), text without a
moisture label, or text no protocol frames.

When a meter profile (``drivers/profiles``) of the winning driver reads the whole
capture exactly as the winning block does (the same events, one by one) and a frame of
its format is in the recording, the block names it (``profile = "..."``) and leaves
out what the profile supplies (a ticket's field table; MT-SICS' Xon/Xoff); the serial
settings found stay written, since the capture is evidence of them. The first such
profile in ``PROFILES`` order wins; none fitting leaves the block as it was.

``write_golden`` stores a capture as a test case: the bytes (``input.bin``), the
capture with its timing (``capture.txt``), the block (``device.toml``) and what the
driver reports (``expected.jsonl``, one event per line in the shape of the drivers'
own golden tests).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, assert_never

from coffee_telemetry.agent.config import DeviceConfig, MtSicsDevice, parse_config
from coffee_telemetry.agent.devices.mtsics import mtsics_client
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.onboard.capfile import Capture, Chunk
from coffee_telemetry.agent.onboard.detect import text_quality
from coffee_telemetry.agent.onboard.lineformat import LineSettings
from coffee_telemetry.agent.onboard.texts import Lang, number, say
from coffee_telemetry.agent.onboard.tickets import (
    DEFAULT_IDLE_GAP_S,
    Layout,
    infer_layout,
    split_tickets,
)
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement
from coffee_telemetry.drivers.profiles import PROFILES, for_driver
from coffee_telemetry.drivers.scale_mtsics import DeviceReply, NoResponse, ProtocolError

__all__ = [
    "CASE_FOLDERS",
    "Check",
    "FieldSummary",
    "Proposal",
    "Refusal",
    "check_capture",
    "event_json",
    "propose",
    "report",
    "write_golden",
]

Driver = Literal[
    "moisture.ticket", "moisture.tesma", "scale.toledo_continuous", "scale.ascii", "scale.mtsics"
]

#: The folder of each driver's golden cases under ``tests/cases``.
CASE_FOLDERS: dict[str, str] = {
    "moisture.ticket": "moisture_ticket",
    "moisture.tesma": "moisture_tesma",
    "scale.toledo_continuous": "scale_toledo",
    "scale.ascii": "scale_ascii",
    "scale.mtsics": "scale_mtsics",
}
# Stricter protocols first: on a tie, a checksummed frame is better evidence than a line.
_PRIORITY: tuple[Driver, ...] = (
    "scale.toledo_continuous",
    "moisture.tesma",
    "scale.mtsics",
    "scale.ascii",
    "moisture.ticket",
)
_DEFAULT_IDS = {"moisture.ticket": "umidade-1", "moisture.tesma": "umidade-1"}
#: Discard reasons that say nothing against a driver.
_BENIGN = frozenset({"duplicate", "partial"})

Event = Measurement | Discarded | NoResponse | DeviceReply | ProtocolError


@dataclass(frozen=True, slots=True)
class FieldSummary:
    """The values a field took over the capture.

    Attributes:
        count: Readings that have it.
        low: Smallest number (numeric fields).
        high: Largest number.
        examples: A few distinct values (text fields).
    """

    count: int
    low: float | None = None
    high: float | None = None
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    """A capture read through a driver, as the device loop would read it.

    Attributes:
        frames_ok: Frames (tickets, lines, frames) the driver found valid.
        discarded: Discard reasons and how often.
        readings: The measurements it reported.
        events: Everything it reported, in order.
        share: ``frames_ok`` over valid and (non-benign) discarded frames.
        values: Per field and tag, what the readings held.
    """

    frames_ok: int
    discarded: Counter[str]
    readings: tuple[Measurement, ...]
    events: tuple[Event, ...]
    share: float
    values: dict[str, FieldSummary]


@dataclass(frozen=True, slots=True)
class Proposal:
    """A driver and its options for a capture, and how it read it.

    Attributes:
        driver: The driver's name.
        block: The ``[[devices]]`` TOML block.
        device: The block, as the agent's config loader parsed it.
        check: The whole capture read through it.
        layout: For tickets, what was learnt of their layout.
        others: The other candidates that read anything, with their share.
        profile: The meter profile the block names, if one fits.
    """

    driver: str
    block: str
    device: DeviceConfig
    check: Check
    layout: Layout | None = None
    others: tuple[tuple[str, float, int], ...] = ()
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why nothing is proposed.

    Attributes:
        reason: ``no-recording``, ``empty``, ``not-text``, ``no-moisture-label``,
            ``unframed``.
        quality: Share of the bytes that read as text.
        labels: Labels seen (for ``no-moisture-label``).
        size: Bytes in the recording.
    """

    reason: str
    quality: float = 0.0
    labels: tuple[str, ...] = ()
    size: int = 0


# -- reading a capture through a driver ----------------------------------------------


def _feed_stream(device: DeviceConfig, chunks: Sequence[Chunk]) -> tuple[list[Event], int, int]:
    if isinstance(device, MtSicsDevice):
        client = mtsics_client(device)
        client.poll(0.0)  # the request the agent sends first; replies then make sense
        events: list[Event] = []
        for chunk in chunks:
            client.receive_data(chunk.data, chunk.t_s)
            events.extend(client.events())
        return events, client.frames_ok, client.frames_discarded
    driver = device.make_driver()
    driver.tick(0.0)  # the port opened when the capture started
    out: list[Event] = []

    def wake_until(t_s: float) -> None:
        # The device loop's read timeout: tick at each deadline that passes before t_s
        # (a hair after it, so rounding never leaves the deadline just ahead).
        while (deadline := driver.next_deadline()) is not None and deadline < t_s:
            driver.tick(deadline + 1e-6)
            if driver.next_deadline() == deadline:
                break

    for chunk in chunks:
        wake_until(chunk.t_s)
        driver.receive_data(chunk.data, chunk.t_s)
        out.extend(driver.events())
    end = (chunks[-1].t_s if chunks else 0.0) + 120.0
    wake_until(end)
    driver.tick(end)
    out.extend(driver.events())
    return out, driver.frames_ok, driver.frames_discarded


def _summaries(readings: Sequence[Measurement]) -> dict[str, FieldSummary]:
    values: dict[str, list[FieldValue]] = {}
    for reading in readings:
        for name, value in [*reading.fields.items(), *reading.tags.items()]:
            values.setdefault(name, []).append(value)
    out = {}
    for name, seen in values.items():
        numbers = [float(v) for v in seen if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(seen):
            out[name] = FieldSummary(len(seen), min(numbers), max(numbers))
        else:
            distinct = list(dict.fromkeys(str(v) for v in seen))
            out[name] = FieldSummary(len(seen), examples=tuple(distinct[:3]))
    return out


def check_capture(device: DeviceConfig, chunks: Sequence[Chunk]) -> Check:
    """Read the chunks through the device's driver, with their timing."""
    events, frames_ok, _ = _feed_stream(device, chunks)
    readings = tuple(e for e in events if isinstance(e, Measurement))
    discarded = Counter(e.reason for e in events if isinstance(e, Discarded))
    against = sum(n for reason, n in discarded.items() if reason not in _BENIGN)
    share = frames_ok / (frames_ok + against) if frames_ok else 0.0
    return Check(frames_ok, discarded, readings, tuple(events), share, _summaries(readings))


def event_json(event: Event) -> dict[str, object]:
    """An event in the shape of the drivers' golden files."""
    match event:
        case Measurement():
            doc: dict[str, object] = {
                "event": "measurement",
                "measurement": event.measurement,
                "fields": dict(event.fields),
                "tags": dict(event.tags),
            }
            if event.audit is not None:
                doc["audit"] = event.audit
            return doc
        case Discarded():
            return {"event": "discarded", "reason": event.reason}
        case NoResponse():
            return {"event": "no-response", "request": event.request.decode("latin-1")}
        case DeviceReply():
            return {
                "event": "device-reply",
                "id": event.id,
                "status": event.status,
                "request": None if event.request is None else event.request.decode("latin-1"),
                "weight_kg": event.weight_kg,
                "text": event.text,
            }
        case ProtocolError():
            return {
                "event": "protocol-error",
                "code": event.code,
                "request": None if event.request is None else event.request.decode("latin-1"),
                "suspect_link": event.suspect_link,
            }
        case _:
            assert_never(event)


# -- TOML ------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """``text`` as a TOML string: literal (``'...'``) when it can be, else basic."""
    if "'" not in text and all(" " <= c <= "~" for c in text):
        return f"'{text}'"
    return json.dumps(text)  # a JSON string is a TOML basic string


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return toml_string(str(value))


def render_block(
    *,
    driver: str,
    device_id: str,
    port: str,
    settings: LineSettings,
    sections: dict[str, dict[str, object]],
    fields: Sequence[tuple[str, str, str]] = (),
    comments: Sequence[str] = (),
    profile: str | None = None,
) -> str:
    """A ``[[devices]]`` block (a ticket meter's ``fields`` as (field, regex, kind))."""
    lines = [
        "[[devices]]",
        f"id = {toml_string(device_id)}",
        *([f"profile = {toml_string(profile)}"] if profile else []),
        f"driver = {toml_string(driver)}",
        f"port = {toml_string(port)}",
        "[devices.serial]",
        f"baudrate = {settings.baudrate}",
        f"bytesize = {settings.bytesize}",
        f"parity = {toml_string(settings.parity)}",
        f"stopbits = {settings.stopbits}",
    ]
    for name, table in sections.items():
        if name == "serial":
            lines += [f"{key} = {_value(value)}" for key, value in table.items()]
            continue
        lines.append(f"[devices.{name}]")
        lines += [f"{key} = {_value(value)}" for key, value in table.items()]
    for name, regex, kind in fields:
        lines += [
            "[[devices.ticket.fields]]",
            f"field = {toml_string(name)}",
            f"regex = {toml_string(regex)}",
            f"kind = {toml_string(kind)}",
        ]
    lines += [f"# {comment}" for comment in comments]
    return "\n".join(lines) + "\n"


def load_block(block: str) -> DeviceConfig:
    """Validate a block with the agent's own config loader.

    Raises:
        ConfigError: The block is not a valid device.
    """
    doc = tomllib.loads(block)
    cfg = parse_config({"site": {"id": "onboard"}, "devices": doc["devices"]}, source="proposal")
    return cfg.devices[0]


# -- candidates ------------------------------------------------------------------------


def _ticket_block(
    layout: Layout, port: str, settings: LineSettings, device_id: str, profile: str | None = None
) -> str:
    split = layout.split
    ticket: dict[str, object] = {}
    if split.line_ending != "auto":
        ticket["line_ending"] = split.line_ending
    if layout.idle_gap_s != DEFAULT_IDLE_GAP_S:
        ticket["idle_gap_s"] = layout.idle_gap_s
    if split.header is not None:
        ticket["start_regex"] = split.header
    elif split.footer is not None:
        ticket["end_regex"] = split.footer
    comments = []
    if layout.unexplained:
        comments.append("Not read (add a [[devices.ticket.fields]] entry to keep one):")
        for label, examples in sorted(layout.unexplained.items()):
            comments.append(f"  {label}: {' | '.join(examples)}")
    return render_block(
        driver="moisture.ticket",
        device_id=device_id,
        port=port,
        settings=settings,
        sections={"ticket": ticket} if ticket else {},
        fields=[] if profile else [(p.field, p.regex, p.kind) for p in layout.patterns],
        comments=comments,
        profile=profile,
    )


def _stream_block(
    driver: Driver, port: str, settings: LineSettings, device_id: str, profile: str | None = None
) -> str:
    sections: dict[str, dict[str, object]] = {}
    if driver == "scale.mtsics":
        # The capture cannot show flow control; Mettler's factory setting is Xon/Xoff (§2.1),
        # which the profile, when named, supplies.
        sections = {"mtsics": {"mode": "stream"}}
        if profile is None:
            sections = {"serial": {"xonxoff": True}, **sections}
    return render_block(
        driver=driver,
        device_id=device_id,
        port=port,
        settings=settings,
        sections=sections,
        profile=profile,
    )


@dataclass
class _Candidate:
    driver: Driver
    block: str
    device: DeviceConfig
    check: Check
    layout: Layout | None = None
    rank: tuple[float, int, int] = field(default=(0.0, 0, 0))


def propose(capture: Capture, *, device_id: str | None = None) -> Proposal | Refusal:
    """The best driver and options for a capture's recording (see the module docstring)."""
    chunks = capture.recording()
    settings = capture.serial
    if settings is None:
        return Refusal("no-recording")
    data = b"".join(c.data for c in chunks)
    if not data.strip(b"\x00"):
        return Refusal("empty", size=len(data))
    quality = text_quality(data)
    port = capture.port or "/dev/ttyUSB0"
    candidates: list[_Candidate] = []

    def consider(driver: Driver, block: str, layout: Layout | None = None) -> None:
        try:
            device = load_block(block)
        except ConfigError:
            return  # a proposal the loader refuses is no proposal
        check = check_capture(device, chunks)
        if check.frames_ok:
            rank = (round(check.share, 3), check.frames_ok, -_PRIORITY.index(driver))
            candidates.append(_Candidate(driver, block, device, check, layout, rank))

    split = split_tickets(chunks)
    layout = infer_layout(split)
    if any(g.field == "moisture_pct" for g in layout.fields):
        ident = device_id or "umidade-1"
        consider("moisture.ticket", _ticket_block(layout, port, settings, ident), layout)
    for driver in ("moisture.tesma", "scale.toledo_continuous", "scale.ascii", "scale.mtsics"):
        ident = device_id or _DEFAULT_IDS.get(driver, "balanca-1")
        consider(driver, _stream_block(driver, port, settings, ident))
    if not candidates:
        if quality < 0.8:
            return Refusal("not-text", quality=quality, size=len(data))
        printed = [label for g in layout.fields for label in g.labels]
        labels = tuple(dict.fromkeys([*printed, *layout.unexplained]))
        if labels and not any(g.field == "moisture_pct" for g in layout.fields):
            return Refusal("no-moisture-label", quality=quality, labels=labels, size=len(data))
        return Refusal("unframed", quality=quality, size=len(data))
    candidates.sort(key=lambda c: c.rank, reverse=True)
    best = candidates[0]
    others = tuple((c.driver, c.check.share, c.check.frames_ok) for c in candidates[1:])
    proposal = Proposal(best.driver, best.block, best.device, best.check, best.layout, others)
    return _with_profile(proposal, chunks, data, port, settings)


def _with_profile(
    proposal: Proposal, chunks: Sequence[Chunk], data: bytes, port: str, settings: LineSettings
) -> Proposal:
    """The proposal naming the first profile that reads the capture exactly as it does."""
    wanted = [event_json(e) for e in proposal.check.events]
    driver: Driver = proposal.device.driver
    for profile in for_driver(driver):
        if not profile.seen_in(data):
            continue
        ident = proposal.device.id
        if proposal.layout is not None:
            block = _ticket_block(proposal.layout, port, settings, ident, profile.name)
        else:
            block = _stream_block(driver, port, settings, ident, profile.name)
        try:
            device = load_block(block)
        except ConfigError:  # pragma: no cover - a profile's keys are valid config
            continue
        check = check_capture(device, chunks)
        if [event_json(e) for e in check.events] == wanted:
            return replace(proposal, block=block, device=device, check=check, profile=profile.name)
    return proposal


def write_golden(
    folder: Path, case: str, proposal: Proposal, capture_text: str, capture: Capture
) -> Path:
    """Write the capture as a golden case: ``folder/<driver>/<case>/``.

    Raises:
        FileExistsError: The case folder exists already.
        ValueError: ``case`` is not a plain folder name.
    """
    if not case or case != Path(case).name or case.startswith("."):
        raise ValueError(f"case name {case!r} must be a plain folder name")
    target = folder / CASE_FOLDERS[proposal.driver] / case
    target.mkdir(parents=True, exist_ok=False)
    (target / "input.bin").write_bytes(capture.recorded_bytes())
    (target / "capture.txt").write_text(capture_text, encoding="ascii")
    (target / "device.toml").write_text(proposal.block, encoding="utf-8")
    lines = [
        json.dumps(event_json(e), ensure_ascii=False, allow_nan=False)
        for e in proposal.check.events
    ]
    (target / "expected.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return target


def _num(value: float | None, lang: Lang) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:g}"
    return text.replace(".", ",") if lang == "pt-BR" else text


def report(capture: Capture, name: str, result: Proposal | Refusal, lang: Lang) -> list[str]:
    """What ``propose`` tells the technician about a capture and its proposal."""
    chunks = capture.recording()
    size = sum(len(c.data) for c in chunks)
    elapsed = chunks[-1].t_s - chunks[0].t_s if chunks else 0.0
    out = [
        say(
            lang,
            "p_capture",
            file=name,
            settings=capture.serial or "-",
            chunks=len(chunks),
            size=size,
            elapsed=number(elapsed, lang, 1),
        )
    ]
    out += [say(lang, "p_warning", text=w) for w in capture.warnings]
    if isinstance(result, Refusal):
        labels = ", ".join(result.labels) or "-"
        out.append(
            say(
                lang,
                f"r_{result.reason}",
                size=result.size,
                quality=number(100 * result.quality, lang),
                labels=labels,
            )
        )
        return out
    layout = result.layout
    if layout is not None:
        split = layout.split
        out.append(say(lang, "p_tickets", count=len(split.tickets)))
        if split.form_feeds:
            out.append(say(lang, "p_bound_ff", count=split.form_feeds))
        if split.print_jobs:
            out.append(say(lang, "p_bound_init", count=split.print_jobs))
        if split.header:
            out.append(say(lang, "p_bound_header", header=split.header))
        if split.footer:
            out.append(say(lang, "p_bound_footer", footer=split.footer))
        if split.min_between_gap_s is not None:
            out.append(
                say(
                    lang,
                    "p_bound_gap",
                    between=number(split.min_between_gap_s, lang, 1),
                    inside=number(split.max_inside_gap_s, lang, 2),
                    idle=number(layout.idle_gap_s, lang, 1),
                )
            )
        out.append(say(lang, "p_line_ending", ending=split.line_ending))
        out.append(say(lang, "p_fields"))
        for guess in layout.fields:
            labels = ", ".join(repr(label) for label in guess.labels) or "(data e hora)"
            out.append(
                say(
                    lang,
                    "p_field",
                    field=guess.field,
                    labels=labels,
                    tickets=len(guess.values),
                    total=len(split.tickets),
                )
            )
        if layout.unexplained:
            out.append(say(lang, "p_unexplained"))
            for label, examples in sorted(layout.unexplained.items()):
                out.append(
                    say(lang, "p_unexplained_item", label=label, examples=" | ".join(examples))
                )
    out.append(
        say(lang, "p_driver", driver=result.driver, share=number(100 * result.check.share, lang))
    )
    if result.others:
        others = ", ".join(f"{d} ({number(100 * s, lang)}%)" for d, s, _ in result.others)
        out.append(say(lang, "p_others", others=others))
    if result.profile is not None:
        profile = PROFILES[result.profile]
        out.append(
            say(lang, "p_profile", profile=profile.name, title=profile.title, source=profile.source)
        )
    else:
        known = ", ".join(p.name for p in for_driver(result.driver)) or "-"
        out.append(say(lang, "p_no_profile", driver=result.driver, known=known))
    check = result.check
    out.append(say(lang, "p_check", frames=check.frames_ok, readings=len(check.readings)))
    if check.discarded:
        reasons = ", ".join(f"{r} x{n}" for r, n in check.discarded.most_common())
        out.append(say(lang, "p_discarded", reasons=reasons))
    for name_, summary in check.values.items():
        if summary.low is not None:
            out.append(
                say(
                    lang,
                    "p_value_num",
                    field=name_,
                    count=summary.count,
                    low=_num(summary.low, lang),
                    high=_num(summary.high, lang),
                )
            )
        else:
            out.append(
                say(
                    lang,
                    "p_value_text",
                    field=name_,
                    count=summary.count,
                    examples=", ".join(repr(e) for e in summary.examples),
                )
            )
    return out

r"""A ticket printer's layout, read off a capture: where tickets end, which line is which.

``split_tickets`` cuts a recording into tickets the way a person would looking at the
paper, from every clue at once:

- time: chunks arrive in bursts, one per press of PRINT. The gaps between chunks
  sort into two families (inside a ticket: milliseconds to a printer's line pause;
  between tickets: seconds); the threshold is the geometric mean across the largest
  jump between consecutive gaps (at least 3x), so neither family needs a fixed limit;
- FF (form feed) and ``ESC @`` (a new print job), after stripping the other ESC/POS
  commands (``drivers._framing.EscPosStripper``);
- then, within those pieces, a repeated header: a first line (digits generalised)
  that starts most tickets and appears once in each. It becomes ``start_regex``,
  which also lets the agent trust the first ticket after the port opens. Failing a
  header, a repeated last line becomes ``end_regex``.

``infer_layout`` then reads every ticket's label/value pairs (``labels``), keeps the
labels that map to a reading field, and writes one ``[[devices.ticket.fields]]``
pattern per field, built from the labels as printed (``Umid.``, ``Humedad``), their
column (first on the line, or after three spaces), and their values (one word or
several). A date and a time on one line, labelled or not, are ``meter_time``
(``"DD/MM/YYYY HH:MM"``, as the default table reads them); on two lines they are
``meter_date`` and ``meter_clock``. Labels that map to nothing are listed as
unexplained, with their values, rather than guessed at.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from coffee_telemetry.agent.onboard.capfile import Chunk
from coffee_telemetry.agent.onboard.labels import DATE, NUMBER, TIME, Pair, field_for, is_rule
from coffee_telemetry.agent.onboard.labels import line_pairs as read_pairs
from coffee_telemetry.drivers._framing import EscPosStripper
from coffee_telemetry.drivers.moisture_ticket import FieldPattern

__all__ = [
    "FieldGuess",
    "Layout",
    "Ticket",
    "TicketSplit",
    "burst_threshold",
    "infer_layout",
    "split_tickets",
]

#: The driver's default idle gap; kept when the capture's gaps allow it.
DEFAULT_IDLE_GAP_S = 2.0

_FLOAT = f"({NUMBER})"
_DATETIME = rf"({DATE})\D{{1,20}}?({TIME})"
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_SPLIT = re.compile(b"[\x0c\x1b]")  # FF, and the ESC the stripper leaves for ESC @


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ticket as printed.

    Attributes:
        start_s: When its first byte arrived.
        lines: Its lines, decoded as latin-1, trailing spaces stripped.
        raw: Its bytes, ESC/POS stripped.
    """

    start_s: float
    lines: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True, slots=True)
class TicketSplit:
    """How a recording falls into tickets.

    Attributes:
        tickets: The tickets, in order.
        form_feeds: FF bytes seen.
        print_jobs: ``ESC @`` seen.
        gap_s: The burst threshold found (``None``: one burst).
        max_inside_gap_s: The largest gap inside a burst.
        min_between_gap_s: The smallest gap between bursts (``None``: one burst).
        line_ending: ``crlf``, ``cr``, ``lf`` or ``auto`` (mixed).
        header: The header line's pattern, if one starts the tickets.
        footer: The last line's pattern, if one ends them (and there is no header).
    """

    tickets: tuple[Ticket, ...]
    form_feeds: int
    print_jobs: int
    gap_s: float | None
    max_inside_gap_s: float
    min_between_gap_s: float | None
    line_ending: str
    header: str | None
    footer: str | None


def burst_threshold(gaps: Sequence[float]) -> float | None:
    """The gap that separates bursts, or ``None`` when the gaps are of one family."""
    distinct = sorted({round(g, 4) for g in gaps if g > 0})
    best_ratio, threshold = 3.0, None
    for low, high in itertools.pairwise(distinct):
        if high < 0.2:
            continue
        ratio = high / max(low, 1e-3)
        if ratio >= best_ratio:
            best_ratio, threshold = ratio, math.sqrt(max(low, 1e-3) * high)
    return threshold


def _line_ending(data: bytes) -> str:
    crlf = data.count(b"\r\n")
    cr = data.count(b"\r") - crlf
    lf = data.count(b"\n") - crlf
    kinds = [name for name, count in (("crlf", crlf), ("cr", cr), ("lf", lf)) if count]
    return kinds[0] if len(kinds) == 1 else "auto"


def _generalise(line: str) -> str:
    """A regex for a title line whose digits may change (``TICKET 0042``)."""
    parts = re.split(r"(\d+)", line.strip())
    body = "".join(r"\d+" if p.isdigit() else re.escape(p).replace(r"\ ", r"\s+") for p in parts)
    return rf"^\s*{body}\s*$"


def _repeated_line(tickets: Sequence[Ticket], *, last: bool) -> str | None:
    """A first (or last) line shared by most tickets and appearing once in each."""
    if len(tickets) < 2:
        return None
    edges = []
    for ticket in tickets:
        lines = [line for line in ticket.lines if line.strip()]
        if lines:
            edges.append(lines[-1] if last else lines[0])
    counts = Counter(_generalise(line) for line in edges)
    if not counts:
        return None
    pattern, seen = counts.most_common(1)[0]
    if seen < max(2, math.ceil(0.8 * len(tickets))):
        return None
    regex = re.compile(pattern, re.IGNORECASE)
    example = next(line for line in edges if regex.search(line))
    if read_pairs(example) or is_rule(example):
        return None  # a field or a rule, not a title
    if any(sum(1 for line in t.lines if regex.search(line)) > 1 for t in tickets):
        return None
    return pattern


def split_tickets(chunks: Sequence[Chunk]) -> TicketSplit:
    """Cut a recording into tickets (see the module docstring)."""
    gaps = [b.t_s - a.t_s for a, b in itertools.pairwise(chunks)]
    threshold = burst_threshold(gaps)
    if threshold is None and gaps and min(gaps) >= 0.3:
        threshold = min(gaps) / 2  # one family of long pauses: each chunk is a ticket
    inside = [g for g in gaps if threshold is None or g < threshold]
    between = [g for g in gaps if threshold is not None and g >= threshold]
    bursts: list[tuple[float, bytearray]] = []
    for index, chunk in enumerate(chunks):
        if not bursts or (threshold is not None and gaps[index - 1] >= threshold):
            bursts.append((chunk.t_s, bytearray()))
        bursts[-1][1].extend(chunk.data)
    all_bytes = b"".join(c.data for c in chunks)
    tickets: list[Ticket] = []
    form_feeds = print_jobs = 0
    for start_s, data in bursts:
        text = EscPosStripper(mark_init=True).feed(bytes(data))
        form_feeds += text.count(b"\x0c")
        print_jobs += text.count(b"\x1b")
        for piece in _SPLIT.split(text):
            lines = tuple(line.decode("latin-1").rstrip() for line in _LINE_BREAK.split(piece))
            if any(line.strip() for line in lines):
                tickets.append(Ticket(start_s, lines, piece))
    header = _repeated_line(tickets, last=False)
    footer = None if header else _repeated_line(tickets, last=True)
    if header is not None:
        tickets = _resplit(tickets, re.compile(header, re.IGNORECASE))
    return TicketSplit(
        tickets=tuple(tickets),
        form_feeds=form_feeds,
        print_jobs=print_jobs,
        gap_s=threshold,
        max_inside_gap_s=max(inside, default=0.0),
        min_between_gap_s=min(between, default=None),
        line_ending=_line_ending(EscPosStripper().feed(all_bytes)),
        header=header,
        footer=footer,
    )


def _resplit(tickets: Sequence[Ticket], header: re.Pattern[str]) -> list[Ticket]:
    # Pieces holding two tickets (no FF, no pause between them) split at the header.
    out: list[Ticket] = []
    for ticket in tickets:
        current: list[str] = []
        for line in ticket.lines:
            if header.search(line) and any(x.strip() for x in current):
                out.append(Ticket(ticket.start_s, tuple(current), b""))
                current = []
            current.append(line)
        if any(x.strip() for x in current):
            out.append(Ticket(ticket.start_s, tuple(current), ticket.raw if not out else b""))
    return out


@dataclass
class FieldGuess:
    """What the capture says about one field.

    Attributes:
        field: The reading field.
        labels: Labels as printed, with how often.
        columns: Cell columns it was seen in.
        separators: What stood between label and value.
        multiword: Some value had a space in it.
        tickets: Tickets it was found in.
        values: Its values, by ticket index.
    """

    field: str
    labels: Counter[str] = dataclasses.field(default_factory=Counter)
    columns: set[int] = dataclasses.field(default_factory=set)
    separators: Counter[str] = dataclasses.field(default_factory=Counter)
    multiword: bool = False
    tickets: int = 0
    values: dict[int, str | float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Layout:
    """A ticket layout inferred from a capture.

    Attributes:
        split: How the capture fell into tickets.
        fields: What was learnt per field, in pattern order.
        patterns: The field table for the driver.
        unexplained: Label/value pairs no field explains: label -> examples.
        unlabelled_datetime: A date and time printed without labels.
        idle_gap_s: The idle gap for the driver.
    """

    split: TicketSplit
    fields: tuple[FieldGuess, ...]
    patterns: tuple[FieldPattern, ...]
    unexplained: dict[str, list[str]]
    unlabelled_datetime: bool
    idle_gap_s: float

    @property
    def expected(self) -> list[dict[str, str | float]]:
        """Per ticket, the values read off its text (a ticket without moisture is empty)."""
        out: list[dict[str, str | float]] = []
        for index in range(len(self.split.tickets)):
            values = {g.field: g.values[index] for g in self.fields if index in g.values}
            out.append(values if "moisture_pct" in values else {})
        return out


_ORDER = (
    "moisture_pct",
    "temperature_c",
    "temperature_f",
    "bulk_density_kg_hl",
    "bulk_density_g_l",
    "sample_mass_g",
    "sample_mass_kg",
    "sample_mass_lb",
    "product",
    "sample_id",
    "lot",
    "meter_time",
    "meter_date",
    "meter_clock",
)


def _label_regex(labels: Counter[str]) -> str:
    variants = sorted(labels, key=lambda label: (-len(label), label))
    escaped = [re.escape(label).replace(r"\ ", r"\s+") for label in variants]
    return escaped[0] if len(escaped) == 1 else "(?:" + "|".join(escaped) + ")"


def _separator_regex(separators: Counter[str]) -> str:
    """As strict as every separator seen allows, so a label never matches a title line."""
    seen = list(separators)
    if seen and all(":" in s for s in seen):
        return r"[\s.]*:\s*"
    if seen and all("=" in s for s in seen):
        return r"[\s.]*=\s*"
    if seen and all(".." in s for s in seen):
        return r"\s*\.{2,}[\s.]*"
    if seen and all(not s.strip() and len(s) >= 2 for s in seen):
        return r"\s{2,}"
    return r"[\s.:=]*"


def _pattern(guess: FieldGuess) -> FieldPattern:
    start = r"^\s*" if guess.columns == {0} else r"(?:^|\s)"
    label = _label_regex(guess.labels)
    sep = _separator_regex(guess.separators)
    name = guess.field
    value: str
    if name == "meter_time":
        value = _DATETIME
    elif name == "meter_date":
        value = f"({DATE})"
    elif name == "meter_clock":
        value = rf"({TIME})(?!\d)"
    elif name in ("sample_id", "lot") and not guess.multiword:
        value = r"(\S+)"
    elif name in ("sample_id", "lot", "product"):
        value = r"(\S.*?)(?=\s{3,}|\s*$)"
    else:
        value = _FLOAT
    regex = f"{start}{label}{sep}{value}"
    return FieldPattern(name, regex, "float" if value == _FLOAT else "text")


def _idle_gap(split: TicketSplit) -> float:
    """Longer than any pause inside a ticket, shorter than the pauses between them.

    The default (2 s) when it fits; else 60 % of the shortest pause between tickets,
    but never less than twice the longest pause inside one.
    """
    inside = split.max_inside_gap_s
    between = split.min_between_gap_s
    if between is None:
        return round(min(60.0, max(DEFAULT_IDLE_GAP_S, inside * 3)), 1)
    wanted = min(DEFAULT_IDLE_GAP_S, 0.6 * between)
    return round(min(60.0, max(0.1, wanted, 2 * inside)), 1)


def _text_value(pair: Pair, name: str) -> str | float:
    if name in ("meter_time",):
        found = re.search(_DATETIME, pair.value)
        return f"{found.group(1)} {found.group(2)}" if found else pair.value
    if pair.kind == "number" and name not in ("sample_id", "lot", "product"):
        return float(pair.number if pair.number is not None else math.nan)
    if name in ("meter_date", "meter_clock"):
        found = re.search(DATE if name == "meter_date" else TIME, pair.value)
        return found.group(0) if found else pair.value
    return pair.value.strip() if " " in pair.value.strip() else pair.value.split()[0]


def infer_layout(split: TicketSplit) -> Layout:
    """Read the fields off the tickets (see the module docstring)."""
    guesses: dict[str, FieldGuess] = {}
    unexplained: dict[str, list[str]] = {}
    datetime_lines = 0
    for index, ticket in enumerate(split.tickets):
        seen: set[str] = set()
        for line in ticket.lines:
            pairs = read_pairs(line)
            if not pairs and re.search(_DATETIME, line):
                datetime_lines += 1
                guess = guesses.setdefault("meter_time", FieldGuess("meter_time"))
                if "meter_time" not in seen:
                    found = re.search(_DATETIME, line)
                    assert found is not None
                    guess.values[index] = f"{found.group(1)} {found.group(2)}"
                    seen.add("meter_time")
                continue
            for pair in pairs:
                name = field_for(pair.label, pair.kind, pair.unit)
                if name is None:
                    examples = unexplained.setdefault(pair.label, [])
                    if len(examples) < 3 and pair.value not in examples:
                        examples.append(pair.value)
                    continue
                if name in seen:
                    continue  # the driver takes the first line that matches
                seen.add(name)
                guess = guesses.setdefault(name, FieldGuess(name))
                guess.labels[pair.label] += 1
                guess.columns.add(pair.column)
                guess.separators[pair.separator] += 1
                guess.multiword = guess.multiword or len(pair.value.split()) > 1
                guess.values[index] = _text_value(pair, name)
        for name in seen:
            guesses[name].tickets += 1
    if "meter_time" in guesses and ("meter_date" in guesses or "meter_clock" in guesses):
        guesses.pop("meter_date", None)
        guesses.pop("meter_clock", None)
    for name in ("meter_date", "meter_clock"):
        if name in guesses and ({"meter_date", "meter_clock"} - set(guesses)):
            guesses.pop(name)  # a date without a time (or the reverse) is not kept alone
    ordered = tuple(guesses[name] for name in _ORDER if name in guesses)
    patterns = []
    for guess in ordered:
        if guess.field == "meter_time" and not guess.labels:
            patterns.append(FieldPattern("meter_time", _DATETIME, "text"))
        else:
            patterns.append(_pattern(guess))
    return Layout(
        split=split,
        fields=ordered,
        patterns=tuple(patterns),
        unexplained=unexplained,
        unlabelled_datetime=datetime_lines > 0,
        idle_gap_s=_idle_gap(split),
    )

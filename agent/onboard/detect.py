"""Which baud rate and character format a meter uses, found by listening.

Sans-I/O: the capture loop sets the port to ``Detector.listen_at``, feeds what it
hears with the time (``receive_data``, ``tick``) and follows the events; nothing here
opens a port or reads a clock.

Theory of operation
-------------------

A port set to the wrong baud rate still hears the meter, as garbage: framing errors
(delivered as NUL by Linux), bytes with the high bit set, no line ends. At the right
baud rate, listening with 8 data bits and no parity tells the character format too,
because of where each format's extra bit lands (protocols §4.2):

- ``7E1``/``7O1``: bit 7 of every byte is the parity bit, so every byte has an even
  (odd) number of ones, and the text is what is left in bits 0-6;
- ``8E1``/``8O1``: the parity bit lands on the stop bit; where it is 0 the character is
  a framing error (NUL), where it is 1 the byte is whole, so every surviving byte has
  an odd (even) number of ones and about half the bytes are NUL;
- ``8N1`` (or ``8N2``, which a receiver at one stop bit reads the same): neither.

So detection only ever needs ports that can do 8N1 (any USB adapter, and the
pseudo-terminals of the tests). ``assess`` scores a sample under each format
hypothesis: *consistency* (the share of bytes the hypothesis explains) times
*quality* (the share of decoded bytes that are text: printable ASCII, line ends,
STX/ETX, ESC/POS commands, latin-1 letters up to 15 %, and a penalty when a long
sample has no line end at all). A sample is

- ``clean`` when one hypothesis scores at least ``CLEAN`` with ``MIN_CLEAN_BYTES`` or
  more bytes and the runner-up is clearly behind,
- ``garbage`` when even the best scores under ``GARBAGE``,
- ``unsure`` otherwise: the detector keeps listening at the same baud rate.

The ``Detector`` cycles ``BAUDRATES`` (most common first). A sample ends at a burst's
end (``burst_gap_s`` of silence) or at ``sample_bytes``; a person pressing PRINT makes
one burst per press, a continuous meter one every second. Garbage moves to the next
baud rate; clean decides. When the format found has parity or 7 bits, the detector
asks to *confirm* at those settings (a clean sample there makes it certain); a port
that refuses them (``port_refused``: pseudo-terminals, some adapters) keeps the
inference, slightly less sure. After ``rounds`` passes over every baud rate without a
clean sample, or when the caller's time runs out (``give_up``), the answer is
``Decision(settings=None)``: cannot tell, with the reason and the best seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Literal

from coffee_telemetry.agent.onboard.lineformat import BAUDRATES, FORMATS, LineSettings

__all__ = [
    "CLEAN",
    "GARBAGE",
    "MIN_CLEAN_BYTES",
    "Assessment",
    "Decided",
    "Decision",
    "DetectEvent",
    "Detector",
    "Listening",
    "Sampled",
    "assess",
    "text_quality",
]

#: Score (quality x consistency) a sample needs to be clean.
CLEAN = 0.9
#: Below this score a sample is garbage.
GARBAGE = 0.75
#: Bursts shorter than this on average are not a meter's output at this baud rate
#: (a ticket or frame is longer): the meter sends much faster than the port listens.
MIN_BURST_BYTES = 6
#: Bytes a clean sample needs: fewer cannot tell 7E1 from 8N1 (each byte halves the
#: chance that text at 8N1 happens to have even parity everywhere).
MIN_CLEAN_BYTES = 24
#: Latin-1 letters count as text up to this share of a sample (accents in Portuguese
#: or Spanish labels); past it they are what 7-bit text with parity looks like at 8N1.
LETTER_SHARE = 0.15

_LETTERS = frozenset(range(0xC0, 0xFF)) - {0xD7, 0xF7} | {0xAA, 0xB0, 0xBA}
_TEXT = frozenset(range(0x20, 0x7F)) | {0x02, 0x03, 0x09, 0x0A, 0x0C, 0x0D}
_ENDS = frozenset({0x03, 0x0A, 0x0C, 0x0D})
_ESC, _GS = 0x1B, 0x1D
# Parameter bytes after ESC/GS commands (the common ones of protocols §4.2 and §6 A2).
_ESC_PARAMS = {0x20: 1, 0x21: 1, 0x2D: 1, 0x33: 1, 0x45: 1, 0x47: 1, 0x4A: 1, 0x4D: 1}
_ESC_PARAMS |= {0x52: 1, 0x61: 1, 0x64: 1, 0x74: 1, 0x7B: 1}
_GS_PARAMS = {0x21: 1, 0x42: 1, 0x48: 1, 0x4C: 2, 0x57: 2, 0x66: 1, 0x68: 1, 0x77: 1}


def _command_bytes(data: bytes) -> list[bool]:
    """Which bytes belong to an ESC/POS command (so a NUL parameter is not an error)."""
    marks = [False] * len(data)
    i = 0
    size = len(data)
    while i < size:
        byte = data[i]
        if byte in (_ESC, _GS) and i + 1 < size and data[i + 1] >= 0x20:
            command = data[i + 1]
            if byte == _ESC:
                length = 2 + _ESC_PARAMS.get(command, 0)
            elif command == 0x56:  # GS V m [n]
                length = 3 + (i + 2 < size and data[i + 2] in (0x41, 0x42))
            else:
                length = 2 + _GS_PARAMS.get(command, 0)
            for k in range(i, min(i + length, size)):
                marks[k] = True
            i += length
        else:
            i += 1
    return marks


def text_quality(data: bytes) -> float:
    """The share of ``data`` that reads as a meter's text (see the module docstring)."""
    if not data:
        return 0.0
    commands = _command_bytes(data)
    good = letters = 0
    for byte, command in zip(data, commands, strict=True):
        if command or byte in _TEXT:
            good += 1
        elif byte in _LETTERS:
            letters += 1
    good += min(letters, int(LETTER_SHARE * len(data)))
    quality = good / len(data)
    if len(data) >= 120 and not any(b in _ENDS for b in data):
        quality *= 0.85  # long text has line ends or frame ends
    return quality


def _ones_odd(byte: int) -> bool:
    return bin(byte).count("1") % 2 == 1


@dataclass(frozen=True, slots=True)
class Assessment:
    """How a sample heard at 8N1 reads.

    Attributes:
        baudrate: The baud rate it was heard at.
        settings: The settings that explain it best.
        score: Quality x consistency of that explanation, 0..1.
        quality: Share of its decoded bytes that are text.
        consistency: Share of its bytes the format explains.
        runner_up: The next best format and its score.
        size: Bytes in the sample.
        errors: NUL bytes outside printer commands (framing errors at 8N1).
        line_ends: CR, LF, FF and ETX bytes.
        verdict: ``clean``, ``garbage`` or ``unsure``.
    """

    baudrate: int
    settings: LineSettings
    score: float
    quality: float
    consistency: float
    runner_up: tuple[str, float]
    size: int
    errors: int
    line_ends: int
    verdict: Literal["clean", "garbage", "unsure"]


def _hypothesis(data: bytes, nul: list[bool], fmt: str) -> tuple[float, float]:
    """(quality, consistency) of ``data`` read as ``fmt`` sent and heard at 8N1."""
    size = len(data)
    errors = sum(nul)
    match fmt:
        case "8N1":
            return text_quality(data), 1.0 - errors / size
        case "7E1" | "7O1":
            want_odd = fmt == "7O1"
            pairs = zip(data, nul, strict=True)
            fits = sum(1 for b, n in pairs if not n and _ones_odd(b) == want_odd)
            return text_quality(bytes(b & 0x7F for b in data)), fits / size
        case _:  # "8E1" | "8O1": survivors have the parity the stop bit needed
            want_odd = fmt == "8E1"
            kept = bytes(b for b, n in zip(data, nul, strict=True) if not n)
            share = errors / size
            if not kept or not 0.1 <= share <= 0.9:
                return 0.0, 0.0
            fit = sum(1 for b in kept if _ones_odd(b) == want_odd) / len(kept)
            # Text has about as many bytes of each parity: far from half, it is chance.
            return text_quality(kept), fit * (1.0 if 0.25 <= share <= 0.75 else 0.5)


def assess(data: bytes, baudrate: int, *, heard_as: str = "8N1") -> Assessment:
    """Score a sample heard at ``baudrate`` (see the module docstring).

    Args:
        data: The bytes, as the port delivered them.
        baudrate: The baud rate the port was set to.
        heard_as: The format the port was set to. ``8N1`` tries every format; any
            other (a confirmation) judges the bytes as they are.
    """
    size = len(data)
    commands = _command_bytes(data)
    nul = [b == 0 and not c for b, c in zip(data, commands, strict=True)]
    errors = sum(nul)
    ends = sum(1 for b in data if b in _ENDS)
    if not size:
        settings = LineSettings(baudrate).with_format(heard_as)
        return Assessment(baudrate, settings, 0.0, 0.0, 0.0, ("", 0.0), 0, 0, 0, "unsure")
    formats = FORMATS if heard_as == "8N1" else (heard_as,)
    scored = []
    for fmt in formats:
        quality, consistency = (
            _hypothesis(data, nul, fmt) if heard_as == "8N1" else _hypothesis(data, nul, "8N1")
        )
        scored.append((quality * consistency, quality, consistency, fmt))
    scored.sort(key=lambda s: -s[0])  # stable: FORMATS order breaks ties
    best, *rest = scored
    runner_up = (rest[0][3], rest[0][0]) if rest else ("", 0.0)
    score = best[0]
    verdict: Literal["clean", "garbage", "unsure"]
    if (score < GARBAGE and size >= 8) or (score < 0.5 and size >= 3):
        verdict = "garbage"
    elif score >= CLEAN and size >= MIN_CLEAN_BYTES and runner_up[1] < score - 0.1:
        verdict = "clean"
    else:
        verdict = "unsure"
    settings = LineSettings(baudrate).with_format(best[3])
    return Assessment(
        baudrate, settings, score, best[1], best[2], runner_up, size, errors, ends, verdict
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What detection concluded.

    Attributes:
        settings: The meter's settings, or ``None``: cannot tell.
        confidence: 0..1 (0 when it cannot tell).
        reason: A key for the message: ``clean``, ``confirmed``, ``port-refused``,
            ``silence``, ``garbage``, ``ambiguous``.
        best: The best sample seen, if any.
    """

    settings: LineSettings | None
    confidence: float
    reason: str
    best: Assessment | None


@dataclass(frozen=True, slots=True)
class Listening:
    """Set the port to ``settings`` now (attempt ``attempt`` of ``attempts``).

    Attributes:
        settings: What to set the port to.
        attempt: 1-based number of this setting in the pass.
        attempts: Settings in one pass.
        confirming: Checking a format found at 8N1 at its own settings.
    """

    settings: LineSettings
    attempt: int
    attempts: int
    confirming: bool = False


@dataclass(frozen=True, slots=True)
class Sampled:
    """A sample was judged (what to tell the person, before the next ``Listening``)."""

    assessment: Assessment


@dataclass(frozen=True, slots=True)
class Decided:
    """Detection is over."""

    decision: Decision


DetectEvent = Listening | Sampled | Decided


class _Phase(Enum):
    LISTEN = auto()
    CONFIRM = auto()
    DONE = auto()


class Detector:
    """Cycles baud rates until a sample is clean (see the module docstring).

    Args:
        bauds: Baud rates to try, in order.
        rounds: Passes over ``bauds`` before it says it cannot tell.
        sample_bytes: A sample ends when it has this many bytes.
        max_sample_bytes: An ``unsure`` sample grows to this before it counts as garbage.
        burst_gap_s: Silence that ends a burst (and so a sample).
    """

    def __init__(
        self,
        *,
        bauds: Sequence[int] = BAUDRATES,
        rounds: int = 2,
        sample_bytes: int = 192,
        max_sample_bytes: int = 1024,
        burst_gap_s: float = 0.3,
    ) -> None:
        if not bauds:
            raise ValueError("bauds must not be empty")
        self._bauds = tuple(bauds)
        self._rounds = max(1, rounds)
        self._sample_bytes = sample_bytes
        self._max_sample = max(max_sample_bytes, sample_bytes)
        self._gap_s = burst_gap_s
        self._phase = _Phase.LISTEN
        self._index = 0
        self._tried = 0
        self._sample = bytearray()
        self._bursts = 0
        self._last_at: float | None = None
        self._best: Assessment | None = None
        self._found: Assessment | None = None
        self._listen_at = LineSettings(self._bauds[0])
        self._events: list[DetectEvent] = [Listening(self._listen_at, 1, len(self._bauds))]
        self.decision: Decision | None = None

    @property
    def listen_at(self) -> LineSettings:
        """What the port must be set to now."""
        return self._listen_at

    @property
    def done(self) -> bool:
        """Whether a decision was made."""
        return self.decision is not None

    @property
    def pending_bytes(self) -> int:
        """Bytes of the sample in progress."""
        return len(self._sample)

    def events(self) -> list[DetectEvent]:
        """Return and forget what happened since the last call."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When ``tick`` may end a burst (monotonic seconds), if a sample is open."""
        if self._last_at is None or not self._sample or self.done:
            return None
        return self._last_at + self._gap_s

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes heard at ``listen_at``, at ``now``."""
        if self.done or not data:
            return
        self._sample += data
        self._last_at = now
        if len(self._sample) >= self._sample_bytes:
            self._judge(final=len(self._sample) >= self._max_sample)

    def tick(self, now: float) -> None:
        """Time passes without bytes: a long enough silence ends a burst."""
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            self._bursts += 1
            self._last_at = None
            self._judge(final=len(self._sample) >= self._max_sample)

    def port_refused(self) -> None:
        """The port cannot be set to ``listen_at`` (confirmation): keep the inference."""
        if self._phase is _Phase.CONFIRM and self._found is not None:
            self._decide(self._found.settings, self._confidence(self._found) * 0.95, "port-refused")

    def give_up(self) -> Decision:
        """End detection now (the caller's time ran out); returns the decision."""
        if self.decision is None:
            if self._phase is _Phase.CONFIRM and self._found is not None:
                self._decide(self._found.settings, self._confidence(self._found) * 0.9, "clean")
            else:
                self._cannot_tell()
        assert self.decision is not None
        return self.decision

    # -- internals -----------------------------------------------------------------

    def _judge(self, *, final: bool) -> None:
        data = bytes(self._sample)
        heard = self._listen_at
        found = assess(data, heard.baudrate, heard_as=heard.format)
        if self._best is None or (found.score, found.size) > (self._best.score, self._best.size):
            self._best = found
        verdict = found.verdict
        short = self._bursts >= 2 and len(data) < MIN_BURST_BYTES * self._bursts
        if verdict == "unsure" and (final or short):
            verdict = "garbage"
        if verdict == "unsure":
            return  # keep listening at the same settings: more bytes will tell
        self._events.append(Sampled(found))
        self._sample.clear()
        self._bursts = 0
        if self._phase is _Phase.CONFIRM:
            assert self._found is not None
            if verdict == "clean":
                conf = max(self._confidence(self._found), self._confidence(found))
                self._decide(heard, min(1.0, conf + 0.02), "confirmed")
            else:
                # Clean at 8N1 but not at its own settings: the adapter may mishandle
                # parity (protocols §4.1); the 8N1 evidence stands, less sure.
                self._decide(self._found.settings, self._confidence(self._found) * 0.8, "clean")
            return
        if verdict == "clean":
            if found.settings.format == "8N1":
                self._decide(found.settings, self._confidence(found), "clean")
            else:
                self._found = found
                self._phase = _Phase.CONFIRM
                self._set(found.settings, confirming=True)
            return
        self._tried += 1
        if self._tried >= self._rounds * len(self._bauds):
            self._cannot_tell()
            return
        self._index = (self._index + 1) % len(self._bauds)
        self._set(LineSettings(self._bauds[self._index]))

    def _set(self, settings: LineSettings, *, confirming: bool = False) -> None:
        self._listen_at = settings
        self._last_at = None
        self._events.append(
            Listening(settings, self._index + 1, len(self._bauds), confirming=confirming)
        )

    @staticmethod
    def _confidence(found: Assessment) -> float:
        evidence = min(1.0, found.size / 128)
        lines = 1.0 if found.line_ends >= 2 else 0.9
        return round(min(found.quality, found.consistency) * (0.7 + 0.3 * evidence) * lines, 2)

    def _decide(self, settings: LineSettings, confidence: float, reason: str) -> None:
        self._phase = _Phase.DONE
        self.decision = Decision(settings, round(confidence, 2), reason, self._found or self._best)
        self._events.append(Decided(self.decision))

    def _cannot_tell(self) -> None:
        best = self._best
        if best is None or best.size == 0:
            reason = "silence"
        elif best.score >= GARBAGE:
            reason = "ambiguous"
        else:
            reason = "garbage"
        self._phase = _Phase.DONE
        self.decision = Decision(None, 0.0, reason, best)
        self._events.append(Decided(self.decision))

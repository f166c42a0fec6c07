"""The command boundary: every command, from MQTT, the web API or the CLI, enters here.

Theory of operation
-------------------
Commands change what the agent records (a station's lot, an acknowledged
alert). They arrive from the warehouse LAN, so every byte of them is hostile
until checked, and nothing a command carries may stop the agent: acquisition
(reading meters, committing to the outbox) is the one thing that must never
end. ``CommandBoundary.submit`` is the only way in, for every source:

1. **Retained commands are ignored.** A command published with the MQTT
   retain flag would be replayed at every (re)connection; state lives in the
   retained *state* topics (``lots/<station>``, ``alerts/<rule>/<subject>``),
   never in ``cmd/``. Ignored commands are counted and logged, not answered.
2. **Bounds before parsing.** The payload is at most ``MAX_COMMAND_BYTES``
   and its JSON nests at most ``MAX_JSON_DEPTH`` arrays/objects, checked by a
   byte scan before ``json.loads`` ever sees it (a deeply nested payload
   would otherwise raise ``RecursionError``).
3. **Every topic level is checked** (``check_level``): UTF-8, no MQTT
   wildcards or separators (``+ # /``), no control characters, at most
   ``MAX_LEVEL_BYTES`` bytes. A value that may contain ``/`` (a lot code, a
   ``<huller>/<task>`` alert subject) crosses a topic level through one rule,
   ``escape_level``: ``%`` → ``%25``, ``/`` → ``%2F``, ``+`` → ``%2B``,
   ``#`` → ``%23`` (RFC 3986 percent-encoding of just those four). A URL
   segment uses ordinary percent-encoding, which decodes to the same value.
4. **Who.** ``by`` is what the sender claims (printable, at most 64
   characters), recorded beside the ``source`` the boundary knows for sure:
   ``mqtt``, ``web:<user>``, ``token:<name>`` or ``cli``.
5. **A rate per target.** Each target (the topic levels: ``lot/<station>``,
   ``ack/<rule>/<subject>``, ``service/<huller>``) takes ``RATE_BURST``
   commands at once, then one every ``1 / RATE_PER_S`` seconds (``CommandRate``);
   past that a command is refused with the wait, before its handler runs, so a
   flood of good commands costs no history rows and no outbox events. A
   command its handler refuses gives its turn back.
6. **Any exception is a refusal.** A handler refuses with ``CommandRefused``
   (its message is the reply's ``error``); any other exception is a bug or a
   resource error: it is logged with its traceback, counted, and answered
   ``internal error``. Nothing propagates to the MQTT loop or the web server.

Replies are documents ``{"ok": ..., ...}`` sent on ``cmd/<levels>/reply``
(``cmd/reply`` when the topic itself was refused), never retained. Refusal
log lines are rate-limited (``RefusalLog``): a flood of bad commands costs a
counter, not a full journal.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from coffee_telemetry.agent.errors import CommandRefused as CommandRefused

log = logging.getLogger(__name__)

#: Largest command payload accepted; anything longer is refused unread.
MAX_COMMAND_BYTES = 1024
#: Deepest nesting of JSON arrays and objects in a command payload.
MAX_JSON_DEPTH = 8
#: Longest topic level, in UTF-8 bytes.
MAX_LEVEL_BYTES = 128
#: Levels in a command topic after ``cmd/`` (``ack/<rule>/<subject>`` is three).
MAX_LEVELS = 4
#: Longest ``by`` (who claims to send a command).
BY_MAX_LEN = 64
#: Refusal reasons counted one by one; past this many distinct ones, ``other``.
MAX_REASONS = 64
#: Commands one target takes at once, and how many a second after that.
RATE_BURST = 5
RATE_PER_S = 1 / 6
#: Targets whose rate is remembered; past this, the oldest is forgotten.
MAX_RATE_TARGETS = 1024

_ESCAPES = {"%": "%25", "/": "%2F", "+": "%2B", "#": "%23"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: topic suffix under ``<prefix>/<site>/``, payload, retain."""

    topic: str
    payload: bytes
    retain: bool = False


def encode_json(doc: object) -> bytes:
    """Compact, key-sorted UTF-8 JSON: replies and retained states."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _has_control(text: str) -> bool:
    # Cc (C0, DEL, C1) plus the line and paragraph separators; str.isprintable
    # would also refuse spaces in other scripts' formatting, which are harmless.
    return any(
        ch < " " or "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029\ufeff" for ch in text
    ) or any("\ud800" <= ch <= "\udfff" for ch in text)


def check_level(level: str, *, what: str = "topic level") -> str:
    """Return ``level`` if it can be one MQTT topic level as it is.

    Raises:
        CommandRefused: Empty, over ``MAX_LEVEL_BYTES`` bytes of UTF-8, or with
            ``+``, ``#``, ``/`` or a control character.
    """
    if not level:
        raise CommandRefused(f"{what} is empty")
    if _has_control(level):
        raise CommandRefused(f"{what} has a control character")
    if len(level.encode("utf-8")) > MAX_LEVEL_BYTES:
        raise CommandRefused(f"{what} is longer than {MAX_LEVEL_BYTES} bytes")
    if any(ch in level for ch in "+#/"):
        raise CommandRefused(f"{what} may not contain + # or /")
    return level


def escape_level(value: str) -> str:
    """``value`` as one topic level: ``% / + #`` percent-encoded (see the module docstring)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def unescape_level(level: str) -> str:
    """The value ``escape_level`` turned into ``level``.

    Raises:
        CommandRefused: A ``%`` not followed by one of the four escapes.
    """
    if "%" not in level:
        return level
    out, i = [], 0
    while i < len(level):
        ch = level[i]
        if ch == "%":
            code = level[i : i + 3].upper()
            if code not in _UNESCAPES:
                raise CommandRefused(f"bad escape {level[i : i + 3]!r} in a topic level")
            out.append(_UNESCAPES[code])
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (no parsing; any bytes)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def decode_payload(payload: bytes) -> dict[str, object]:
    """A command payload as a JSON object (an empty payload is ``{}``).

    Raises:
        CommandRefused: Too long, too deeply nested, not UTF-8 JSON, or not an object.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRefused(f"payload over {MAX_COMMAND_BYTES} bytes")
    if not payload.strip():
        return {}
    if json_depth(payload) > MAX_JSON_DEPTH:
        raise CommandRefused(f"payload nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(payload, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CommandRefused("payload must be JSON") from None
    if not isinstance(doc, dict):
        raise CommandRefused("payload must be a JSON object")
    return doc


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def check_by(by: object) -> str:
    """Who the sender says they are: a printable string of at most ``BY_MAX_LEN`` characters.

    Raises:
        CommandRefused: Not a string, empty, too long, or not printable.
    """
    if not isinstance(by, str):
        raise CommandRefused('"by" must be a string')
    cleaned = by.strip()
    if not cleaned:
        raise CommandRefused('"by" is empty')
    if len(cleaned) > BY_MAX_LEN or not cleaned.isprintable():
        raise CommandRefused(f'"by" must be printable and at most {BY_MAX_LEN} characters')
    return cleaned


@dataclass(frozen=True, slots=True)
class Command:
    """A command that passed the boundary.

    Attributes:
        path: The topic levels after ``cmd/``, unescaped (``("lot", "recepcao")``).
        doc: The payload, a JSON object.
        by: Who the sender says they are (checked to be printable).
        source: Where it came from, as the boundary knows it: ``mqtt``,
            ``web:<user>``, ``token:<name>`` or ``cli``.
    """

    path: tuple[str, ...]
    doc: Mapping[str, object]
    by: str
    source: str


#: A command's handler: the reply document (``ok`` true), or ``CommandRefused``.
CommandHandler = Callable[[Command], Awaitable[dict[str, object]]]


class RefusalLog:
    """Log lines for refusals, at most ``burst`` per ``window_s``; the rest are counted."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._burst = burst
        self._window_s = window_s
        self._clock = clock
        self._window_start = -window_s
        self._logged = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        """Log ``msg`` unless this window's burst is spent."""
        now = self._clock()
        if now - self._window_start >= self._window_s:
            if self._suppressed:
                self._log.warning("%d more refusals were not logged", self._suppressed)
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged < self._burst:
            self._logged += 1
            self._log.warning(msg, *args, exc_info=exc_info)
        else:
            self._suppressed += 1


class CommandRate:
    """A token bucket per command target: ``burst`` at once, then ``per_s`` a second."""

    def __init__(
        self,
        *,
        burst: int = RATE_BURST,
        per_s: float = RATE_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst, self._per_s, self._clock = burst, per_s, clock
        self._buckets: OrderedDict[tuple[str, ...], tuple[float, float]] = OrderedDict()

    def take(self, target: tuple[str, ...]) -> float | None:
        """Use one of ``target``'s turns: None, or the seconds until it has one."""
        now = self._clock()
        tokens, then = self._buckets.get(target, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - then) * self._per_s)
        if tokens < 1.0:
            return (1.0 - tokens) / self._per_s
        self._buckets[target] = (tokens - 1.0, now)
        self._buckets.move_to_end(target)
        while len(self._buckets) > MAX_RATE_TARGETS:
            self._buckets.popitem(last=False)
        return None

    def give_back(self, target: tuple[str, ...]) -> None:
        """Return a turn ``take`` gave (the command was refused, so it does not count)."""
        if target in self._buckets:
            tokens, then = self._buckets[target]
            if tokens + 1.0 >= self._burst:
                del self._buckets[target]
            else:
                self._buckets[target] = (tokens + 1.0, then)


@dataclass(slots=True)
class CommandStats:
    """What the boundary did since start (shown in health)."""

    accepted: int = 0
    refused: int = 0
    failed: int = 0
    ignored_retained: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def refuse(self, reason: str) -> None:
        """Count one refusal under ``reason`` (bounded number of distinct reasons)."""
        self.refused += 1
        key = reason if reason in self.reasons or len(self.reasons) < MAX_REASONS else "other"
        self.reasons[key] += 1

    def as_doc(self) -> dict[str, object]:
        """The counters as JSON."""
        return {
            "accepted": self.accepted,
            "refused": self.refused,
            "failed": self.failed,
            "ignored_retained": self.ignored_retained,
            "reasons": dict(self.reasons.most_common(10)),
        }


class CommandBoundary:
    """Routes commands to handlers by their first level; never raises on input."""

    def __init__(
        self,
        handlers: Mapping[str, CommandHandler] | None = None,
        *,
        rate: CommandRate | None = None,
    ) -> None:
        self._handlers: dict[str, CommandHandler] = dict(handlers or {})
        self.stats = CommandStats()
        self._refusals = RefusalLog(log)
        self._rate = rate or CommandRate()

    @property
    def handlers(self) -> frozenset[str]:
        """The commands routed (first topic levels)."""
        return frozenset(self._handlers)

    def add(self, name: str, handler: CommandHandler) -> None:
        """Route ``cmd/<name>/...`` to ``handler``."""
        self._handlers[name] = handler

    async def submit_topic(
        self, rest: str, payload: bytes, *, source: str, retained: bool = False
    ) -> list[Outgoing]:
        """Handle an MQTT command on ``cmd/<rest>``; returns the replies (none if ignored)."""
        if retained:
            self.stats.ignored_retained += 1
            self._refusals.warning("Ignored a retained command on cmd/%r", rest[:200])
            return []
        try:
            levels = rest.split("/")
            if len(levels) > MAX_LEVELS:
                raise CommandRefused(f"command topic has more than {MAX_LEVELS} levels")
            path = tuple(unescape_level(check_level(level)) for level in levels)
        except CommandRefused as exc:
            return [self._refused(None, rest[:200], source, exc).outgoing()]
        return [(await self.submit(path, payload, source=source)).outgoing()]

    async def submit(
        self,
        path: Sequence[str],
        payload: bytes,
        *,
        source: str,
        by: str | None = None,
    ) -> CommandReply:
        """Check and run one command; its reply (``ok`` false on any refusal or error).

        Args:
            path: The unescaped topic levels after ``cmd/``.
            payload: The JSON payload, as received.
            source: Where it came from (``mqtt``, ``web:<user>``, ``token:<name>``, ``cli``).
            by: Who sent it, when the source knows for sure (a logged-in user), or
                the default when the payload names nobody; otherwise the payload's
                ``by`` claim, or the source.
        """
        topic: str | None = None
        shown = "/".join(path)[:200]
        try:
            if not path or len(path) > MAX_LEVELS:
                raise CommandRefused(f"a command has 1 to {MAX_LEVELS} topic levels")
            for value in path:
                check_level(escape_level(value), what="a command's topic level")
            topic = "cmd/" + "/".join(escape_level(v) for v in path) + "/reply"
            handler = self._handlers.get(path[0])
            if handler is None:
                raise CommandRefused(f"unknown command {path[0][:40]!r}")
            doc = decode_payload(payload)
            claimed = doc.get("by")
            if by is not None and (source.startswith("web:") or claimed is None):
                who = by
            else:
                who = source if claimed is None else check_by(claimed)
            if (wait_s := self._rate.take(tuple(path))) is not None:
                raise CommandRefused(
                    f"too many commands for {shown[:80]}; try again in {wait_s:.0f} s",
                    retry_after_s=round(wait_s, 1),
                )
            try:
                reply = await handler(Command(tuple(path), doc, who, source))
            except BaseException:
                self._rate.give_back(tuple(path))
                raise
        except CommandRefused as exc:
            return self._refused(topic, shown, source, exc)
        except Exception as exc:
            self.stats.failed += 1
            self._refusals.warning(
                "Command cmd/%r from %s failed: %r", shown, source, exc, exc_info=True
            )
            error = {"ok": False, "error": "internal error"}
            return CommandReply(topic or "cmd/reply", error, failed=True)
        self.stats.accepted += 1
        return CommandReply(topic, {"ok": True, **reply})

    def _refused(
        self, topic: str | None, shown: str, source: str, exc: CommandRefused
    ) -> CommandReply:
        self.stats.refuse(exc.reason)
        self._refusals.warning("Refused command cmd/%r from %s: %s", shown, source, exc.reason)
        return CommandReply(topic or "cmd/reply", {**exc.reply, "ok": False, "error": exc.reason})


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What a command got: the reply document and the topic it goes to.

    Attributes:
        topic: ``cmd/<levels>/reply`` (``cmd/reply`` when the topic was refused).
        doc: ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
        failed: The handler failed (a bug or a resource error), as opposed to
            refusing the command.
    """

    topic: str
    doc: Mapping[str, object]
    failed: bool = False

    @property
    def ok(self) -> bool:
        """Whether the command was carried out."""
        return self.doc.get("ok") is True

    def outgoing(self) -> Outgoing:
        """The reply as an MQTT message (never retained)."""
        return Outgoing(topic=self.topic, payload=encode_json(self.doc))

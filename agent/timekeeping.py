"""Time the agent can trust, on a box with no clock battery and no internet.

Theory of operation
-------------------
A Raspberry Pi has no real-time clock: it boots at the time it was shut down
(fake-hwclock) or in 1970, and a warehouse without internet may never see NTP.
So the agent does not take the wall clock at its word. Every timestamp is the
monotonic clock plus an *offset*, and the offset has a quality:

* ``trusted``: set from a trusted source. A source is trusted only at or after
  ``FLOOR_NS`` (the release date of this version: no reading is ever dated
  before it). Sources (``[agent] time_sources``), each optional: ``ntp``, the
  kernel's NTP synchronisation (``adjtimex`` no longer reports ``TIME_ERROR``;
  a clock set by hand clears it, so a manual step is not mistaken for NTP);
  ``rtc``, a battery-backed clock the kernel set the time from at boot
  (``/sys/class/rtc/rtc0/hctosys``); ``user``, a person setting the time from
  the dashboard (``set_by_user``, their browser's clock, confirmed on screen);
  and ``system``, the wall clock as it is, for a box kept on time by something
  the agent cannot see (a container's host, a VM): off by default. Two more
  report through ``offer`` (their loops are in ``agent.timesources``): ``gps``,
  a receiver's NMEA time on a serial port, and ``modem``, the GSM network's time
  (``AT+CCLK?``) from the notifications modem.
* ``provisional``: no trusted source yet. The offset is the best estimate: the
  latest of the wall clock, the time saved at the last run (``clock.json``,
  advanced by nothing: a box that was off for a day estimates a day early) and
  the floor. Readings stamped now are kept in the outbox, shown on the live
  pages at once, and held back from the sinks. When a trusted source arrives,
  each of them is re-stamped exactly once: wall = trusted wall - (trusted
  monotonic - reading monotonic), which is the provisional time plus one
  constant ``delta`` for the whole boot (``Adjustment``).
* ``estimated``: no trusted source within ``trust_timeout_s`` (10 min). The
  estimate is adopted: held readings are released with ``time_quality =
  "estimated"``, and new ones carry it too, until a trusted source appears; the
  offset found then is recorded as an event, and later readings are trusted.

Sources rank in this order: ``ntp`` and ``system``, ``gps``, ``rtc``, ``modem``,
``user``. A source re-anchors time when time is not trusted yet, or when it
disagrees by more than its tolerance (``TOLERANCE_NS``) and no better-ranked source
is still answering; otherwise it stands by (health shows each source's state). A
person may set the time only while no other source answers: a box with NTP or a GPS
fix does not take a browser's word over them.

No source is believed *after* a ceiling either (``ceiling_ns``): the latest of the
release date plus ``MAX_LIFE_NS`` (20 years, this version's longest life in the field)
and the last time known good (the time saved at the last run, or the latest trusted
anchor) plus the monotonic time since plus ``CEILING_SLACK_NS`` (2 days). The saved
time only ever widens the ceiling, never narrows it below 20 years: a box stored off
between harvests for months must still take the GPS time when it is switched on, and
the monotonic clock cannot count the months it was off. What the ceiling catches is a
source that is plainly broken: a modem reporting ``2080`` for ``80``, a receiver with a
wrong century, a battery clock with a corrupt register, a browser set decades ahead.
``gps``, ``modem``, ``rtc`` and ``user`` beyond it are refused, with the reason in
health and a log line; ``ntp`` and ``system`` are the kernel's own clock, which the agent
cannot refuse, so they are flagged instead (``wall_beyond_ceiling`` in health, the
source's detail, one log line). The wall clock beyond it is not used for the
provisional estimate.

Once anchored, the wall clock moving on its own (a step by hand, a restored
fake-hwclock) changes nothing: time follows the monotonic clock, so it never
jumps, repeats or goes back. Only a trusted source re-anchors it; huller hours
and alert timers run on the monotonic clock regardless.
"""

from __future__ import annotations

import ctypes
import enum
import json
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

#: No timestamp is ever earlier than this: the release date of this version.
FLOOR_NS = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
#: The longest this version may be in the field: no source is believed later than
#: the release date plus this (unless a time known good is later; ``ceiling_ns``).
MAX_LIFE_NS = int(20 * 365.25 * 86400) * 1_000_000_000
#: How far past the last time known good (plus the monotonic time since) a source may be.
CEILING_SLACK_NS = 2 * 86400 * 1_000_000_000
#: A trusted source re-anchors time only when it disagrees by more than this.
REANCHOR_NS = 1_000_000_000
#: Sources, best first; a source never overrides a better one that still answers.
RANK = {"ntp": 0, "system": 0, "gps": 1, "rtc": 2, "modem": 3, "user": 4}
#: How far each source may disagree with the time before it re-anchors it: NMEA
#: states whole seconds of a fix up to a second old; the network's time (NITZ) is
#: kept by the modem to the second and drifts between updates.
TOLERANCE_NS = {"gps": 2_000_000_000, "modem": 10_000_000_000}
#: A source that reports through ``offer`` counts as answering this long after its
#: last good time.
ANSWERING_NS = 300 * 1_000_000_000
#: ``adjtimex`` answers this while the kernel clock is not synchronised.
TIME_ERROR = 5
NS = 1_000_000_000


class TimeRefused(ValueError):
    """A person's time was not believed (``TimeKeeper.set_by_user``).

    Attributes:
        code: ``off``, ``trusted-source``, ``before-floor`` or ``after-ceiling``.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class TimeQuality(enum.StrEnum):
    """How far a timestamp can be trusted (see the module docstring)."""

    TRUSTED = "trusted"
    PROVISIONAL = "provisional"
    ESTIMATED = "estimated"


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Time was anchored anew: what changed, and from which source.

    Attributes:
        before: The quality of time until now.
        after: The quality from now on.
        delta_ns: Added to every timestamp given since the last anchor (for
            provisional readings: their correction).
        source: What anchored it (``ntp``, ``user:<name>``, ``timeout``).
        at_ns: The new time, when it happened.
    """

    before: TimeQuality
    after: TimeQuality
    delta_ns: int
    source: str
    at_ns: int


@dataclass(slots=True)
class SourceState:
    """What health shows about one time source.

    Attributes:
        state: ``waiting`` (nothing heard yet), ``ok`` (time comes from it),
            ``standby`` (it answers; a better source sets the time), ``refused`` (it
            gave a time that was not believed), ``unavailable`` (it cannot be asked:
            a port missing, no fix, no modem).
        detail: Why, in a few words.
        last_ns: The agent's time of its last good answer.
        last_mono_ns: The monotonic time of that answer.
    """

    state: str = "waiting"
    detail: str = ""
    last_ns: int | None = None
    last_mono_ns: int | None = None


def ntp_synchronised() -> bool | None:
    """Whether the kernel says its clock is NTP-synchronised (``None``: cannot tell)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct timex, modes = 0: read only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


def rtc_set_clock() -> bool:
    """Whether the kernel set the system clock from a battery-backed clock at boot."""
    try:
        return Path("/sys/class/rtc/rtc0/hctosys").read_text().strip() == "1"
    except OSError:
        return False


def boot_id() -> str:
    """This boot's id (the kernel's random ``boot_id``), or ``unknown``."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


class TimeKeeper:
    """The agent's clock: monotonic time plus an offset of known quality.

    Args:
        state_path: Where the last time is saved (``data_dir/clock.json``); ``None``: nowhere.
        trust_timeout_s: How long to wait for a trusted source before adopting the estimate.
        ntp: Probe of the kernel's NTP status (injectable).
        wall_ns: The wall clock (injectable).
        mono_ns: The monotonic clock (injectable).
        floor_ns: No time is ever given before this.
        sources: The trusted sources in use (``ntp``, ``rtc``, ``user``, ``system``).
        rtc_set_clock: Whether the kernel set the clock from a battery clock at boot.
    """

    def __init__(
        self,
        *,
        state_path: Path | None = None,
        trust_timeout_s: float = 600.0,
        ntp: Callable[[], bool | None] = ntp_synchronised,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        floor_ns: int = FLOOR_NS,
        sources: Collection[str] = ("ntp", "rtc", "user"),
        rtc_set_clock: Callable[[], bool] = rtc_set_clock,
    ) -> None:
        self._path = state_path
        self._timeout_ns = int(trust_timeout_s * NS)
        self._ntp = ntp
        self._wall = wall_ns
        self._mono = mono_ns
        self._floor = floor_ns
        self._sources = frozenset(sources)
        self._boot = f"{boot_id()}:{os.getpid()}"
        self._started_mono = mono_ns()
        self.quality = TimeQuality.PROVISIONAL
        self.source = ""
        self.reason = "no time source yet"
        self.ntp: bool | None = None
        self.states = {name: SourceState() for name in sorted(self._sources, key=_rank)}
        saved = self._load()
        #: The last time known good and the monotonic time then (widens the ceiling).
        self._known: tuple[int, int] | None = (saved, self._started_mono) if saved else None
        self._flagged = False  # the kernel's clock beyond the ceiling was logged
        wall = wall_ns()
        estimate = max(wall if wall <= self.ceiling_ns() else 0, saved, floor_ns)
        self._offset = estimate - self._started_mono
        rtc_refusal = ""
        if self._check_ntp(at_start=True):
            self._anchor(TimeQuality.TRUSTED, "ntp", self._wall())
        elif "rtc" in self._sources and wall_ns() >= floor_ns and rtc_set_clock():
            if wall_ns() <= self.ceiling_ns():
                self._anchor(TimeQuality.TRUSTED, "rtc", self._wall())
            else:
                rtc_refusal = f"the battery clock's {_iso(wall_ns())} {self._after_ceiling()}"
                log.warning("Refusing the battery clock's time: %s", rtc_refusal)
        elif "system" in self._sources and wall_ns() >= floor_ns:
            self._anchor(TimeQuality.TRUSTED, "system", self._wall())
        if rtc_refusal and "rtc" in self.states:
            self.states["rtc"] = SourceState("refused", rtc_refusal)
        elif "rtc" in self.states and self.source != "rtc":
            self.states["rtc"] = SourceState("unavailable", "no battery clock set the time at boot")
        self._flag_wall()

    # -- reading the clock --------------------------------------------------------------

    def now_ns(self) -> int:
        """The agent's time now: monotonic + offset (never before the floor)."""
        return self._mono() + self._offset

    def ceiling_ns(self) -> int:
        """The latest time any source is believed to give now (module docstring).

        The later of the release date plus ``MAX_LIFE_NS``, and the last time known
        good plus the monotonic time since plus ``CEILING_SLACK_NS``.
        """
        ceiling = self._floor + MAX_LIFE_NS
        if self._known is not None:
            wall, mono = self._known
            ceiling = max(ceiling, wall + (self._mono() - mono) + CEILING_SLACK_NS)
        return ceiling

    def _after_ceiling(self) -> str:
        return f"is after the latest believable time ({_iso(self.ceiling_ns())})"

    def _flag_wall(self) -> bool:
        """Whether the kernel's clock is beyond the ceiling; logged once when it goes there."""
        beyond = self._wall() > self.ceiling_ns()
        if beyond and not self._flagged:
            log.warning(
                "The system clock, %s, %s; it is used only where it is trusted (ntp, system)",
                _iso(self._wall()),
                self._after_ceiling(),
            )
        self._flagged = beyond
        return beyond

    @property
    def trusted(self) -> bool:
        """Whether time comes from a trusted source."""
        return self.quality is TimeQuality.TRUSTED

    @property
    def boot(self) -> str:
        """This run: the boot's id and the process id.

        Provisional readings belong to one run; those of an earlier run, even in the
        same boot, were stamped against another estimate and are released as estimated.
        """
        return self._boot

    def health_doc(self) -> dict[str, object]:
        """What ``/api/health`` and the doctor show about time."""
        return {
            "quality": self.quality.value,
            "source": self.source,
            "reason": self.reason,
            "ntp_synchronised": self.ntp,
            "now_ns": self.now_ns(),
            "wall_ns": self._wall(),
            "floor_ns": self._floor,
            "ceiling_ns": self.ceiling_ns(),
            "wall_beyond_ceiling": self._wall() > self.ceiling_ns(),
            "user_refusal": None if (why := self.user_refusal_code()) is None else why[2],
            "user_refusal_code": None if why is None else why[0],
            "sources": {name: self._source_doc(name) for name in self.states},
        }

    def _source_doc(self, name: str) -> dict[str, object]:
        st = self.states[name]
        state, detail = st.state, st.detail
        if name == "ntp":
            if self.ntp is None:
                state, detail = "unavailable", "the kernel's NTP state cannot be read"
            elif not self.ntp:
                state, detail = "waiting", "not synchronised"
            elif self.reason == "ntp time before the floor":
                state, detail = "refused", "synchronised to a time before the release date"
            else:
                state, detail = self._standing("ntp"), self._beyond_detail()
        elif name == "system":
            ok = self._system_ok()
            state = self._standing("system") if ok else "refused"
            detail = self._beyond_detail() if ok else "the wall clock is before the release date"
        elif name == "user":
            state = "ok" if self.source.startswith("user:") else "waiting"
            detail = self.source.removeprefix("user:") if state == "ok" else ""
            if state == "waiting" and st.state == "refused":
                state, detail = "refused", st.detail  # the last time a person gave
        elif st.state in ("ok", "standby"):
            state = self._standing(name)
        return {"state": state, "detail": detail, "last_ns": st.last_ns}

    def _beyond_detail(self) -> str:
        if self._wall() <= self.ceiling_ns():
            return ""
        return f"the kernel's clock {self._after_ceiling()} (kept: it is the kernel's own)"

    def _standing(self, name: str) -> str:
        return "ok" if self.trusted and self.source == name else "standby"

    # -- sources ------------------------------------------------------------------------

    def poll(self) -> Adjustment | None:
        """Ask the sources; anchor time if one is trusted, or adopt the estimate on timeout."""
        self._flag_wall()
        for source, believed in (("ntp", self._check_ntp), ("system", self._system_ok)):
            if not believed():
                continue
            wall = self._wall()
            if self.quality is not TimeQuality.TRUSTED or abs(wall - self.now_ns()) > REANCHOR_NS:
                return self._anchor(TimeQuality.TRUSTED, source, wall)
            if _rank(source) < _rank(self.source) or not self._answering(self.source):
                self.source = source  # within a second of it: no step, only the name
            return None
        if (
            self.quality is TimeQuality.PROVISIONAL
            and self._mono() - self._started_mono >= self._timeout_ns
        ):
            minutes = self._timeout_ns / NS / 60
            adj = self._anchor(TimeQuality.ESTIMATED, "timeout", self.now_ns())
            self.reason = f"no trusted time source within {minutes:g} min"
            return adj
        return None

    def offer(self, source: str, wall_ns: int, *, mono_ns: int) -> Adjustment | None:
        """A source read a time (``gps``, ``modem``): believe it, or say why not.

        Args:
            source: The source's name (one of ``time_sources``).
            wall_ns: The time it stated.
            mono_ns: The monotonic clock when its bytes arrived.

        Returns:
            The adjustment when time was anchored anew, else None (health tells why).
        """
        if source not in self.states:
            return None
        st = self.states[source]
        wall_now = wall_ns + (self._mono() - mono_ns)
        if wall_ns < self._floor:
            st.state, st.detail = "refused", f"{_iso(wall_ns)} is before the release date"
            return None
        if wall_now > self.ceiling_ns():
            again = st.state == "refused" and "after the latest" in st.detail
            st.state, st.detail = "refused", f"{_iso(wall_now)} {self._after_ceiling()}"
            if not again:  # one line when it starts, not one per offer
                log.warning("Refusing the %s time: %s", source, st.detail)
            return None
        st.state, st.detail = "standby", ""
        st.last_mono_ns, st.last_ns = self._mono(), wall_now
        tolerance = TOLERANCE_NS.get(source, REANCHOR_NS)
        current = self.source.split(":", 1)[0]
        better_answers = _rank(current) < _rank(source) and self._answering(current)
        if self.trusted and better_answers:
            return None
        if not self.trusted or abs(wall_now - self.now_ns()) > tolerance:
            return self._anchor(TimeQuality.TRUSTED, source, wall_now)
        if current != source:
            self.source = source  # agrees within its tolerance: no step, only the name
        return None

    def note(self, source: str, state: str, detail: str) -> None:
        """A source's loop says how it is (``unavailable``: no port, no fix, no modem)."""
        if source in self.states:
            self.states[source].state, self.states[source].detail = state, detail

    def user_refusal(self) -> str | None:
        """Why a person may not set the time now (None: they may)."""
        why = self.user_refusal_code()
        return None if why is None else why[2]

    def user_refusal_code(self) -> tuple[str, str, str] | None:
        """Why a person may not set the time now: code, source, text (None: they may).

        Codes: ``off`` (``user`` is not among ``time_sources``), ``trusted-source``.
        """
        if "user" not in self._sources:
            return "off", "", "setting the time by hand is off ([agent] time_sources)"
        current = self.source.split(":", 1)[0]
        if self.trusted and current != "user" and self._answering(current):
            return (
                "trusted-source",
                current,
                f"time already comes from a trusted source ({current})",
            )
        return None

    def _answering(self, source: str) -> bool:
        if source == "ntp":
            return bool(self.ntp) and self.reason != "ntp time before the floor"
        if source == "system":
            return self._system_ok()
        if source == "rtc":
            return self.source == "rtc"  # the battery clock keeps the time it set
        st = self.states.get(source)
        if st is None or st.last_mono_ns is None or source == "user":
            return False
        return self._mono() - st.last_mono_ns < ANSWERING_NS

    def set_by_user(self, user: str, wall_ns: int) -> Adjustment:
        """A person set the time (their browser's clock, confirmed on screen).

        Raises:
            TimeRefused: Setting by hand is off, a trusted source answers (the message
                names it), or the time is before the floor or after the ceiling (a
                browser with a wrong clock); ``code`` says which.
        """
        why = self.user_refusal_code()
        if why is not None:
            raise TimeRefused(why[2], why[0])
        if wall_ns < self._floor:
            raise TimeRefused("time before this version's release date", "before-floor")
        if wall_ns > self.ceiling_ns():
            detail = f"{_iso(wall_ns)} {self._after_ceiling()}"
            log.warning("Refusing the time %r gave: %s", user, detail)
            if (st := self.states.get("user")) is not None:
                st.state, st.detail = "refused", f"{user}: {detail}"
            raise TimeRefused(f"time {detail}: check the device's clock", "after-ceiling")
        adj = self._anchor(TimeQuality.TRUSTED, f"user:{user}", wall_ns)
        return adj

    def _system_ok(self) -> bool:
        return "system" in self._sources and self._wall() >= self._floor

    def _check_ntp(self, *, at_start: bool = False) -> bool:
        if "ntp" not in self._sources:
            return False
        synced = self._ntp()
        self.ntp = synced
        if not synced:
            return False
        if self._wall() < self._floor:
            # "Synchronised" to a time before this version existed: not believed.
            if at_start or self.reason != "ntp time before the floor":
                log.warning(
                    "The kernel says its clock is synchronised, but it is before %s",
                    _iso(self._floor),
                )
            self.reason = "ntp time before the floor"
            return False
        return True

    def _anchor(self, quality: TimeQuality, source: str, wall_ns: int) -> Adjustment:
        mono = self._mono()
        before = self.quality
        new_offset = max(wall_ns, self._floor) - mono
        delta = new_offset - self._offset if quality is TimeQuality.TRUSTED else 0
        self._offset += delta
        self.quality = quality
        self.source = source
        self.reason = ""
        if (named := self.states.get(source)) is not None:
            named.state, named.detail = "standby", ""  # shown as "ok" while it is the source
            named.last_ns, named.last_mono_ns = max(wall_ns, self._floor), mono
        if quality is TimeQuality.TRUSTED and max(wall_ns, self._floor) <= self.ceiling_ns():
            self._known = (max(wall_ns, self._floor), mono)
        adj = Adjustment(before, quality, delta, source, self.now_ns())
        log.info(
            "Time is %s (%s)%s",
            quality.value,
            source,
            f", moved by {delta / NS:+.3f} s" if delta else "",
        )
        self.save()
        return adj

    # -- the saved time ------------------------------------------------------------------

    def _load(self) -> int:
        if self._path is None:
            return 0
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
            return int(doc["wall_ns"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Ignoring the saved time in %s: %s", self._path, exc)
            return 0

    def save(self) -> None:
        """Save the time now, so the next start without a source estimates from it."""
        if self._path is None or self.quality is TimeQuality.PROVISIONAL:
            return
        tmp = self._path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"wall_ns": self.now_ns(), "quality": self.quality.value}))
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("Cannot save the time to %s: %s", self._path, exc)


def _rank(source: str) -> int:
    return RANK.get(source.split(":", 1)[0], len(RANK))


def _iso(ts_ns: int) -> str:
    try:
        return datetime.fromtimestamp(ts_ns / NS, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"{ts_ns // NS} s after 1970"  # beyond the year 9999

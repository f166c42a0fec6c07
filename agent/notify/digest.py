"""What the daily digest says beyond alerts: today's lots, service tasks, devices, sinks.

Theory of operation
-------------------
The notifier sits below the history, the hullers and the outbox and imports none of
them. What the digest tells about them arrives as ``DigestFacts``: plain frozen records
made by a ``DigestFactsProvider`` that the agent builds from those services
(``agent.digestfacts``) and hands to the notifier (``Notifier.digest_facts``). The
notifier calls it once per digest day with the digest's time and renders the facts in
each contact's language (``texts.render_digest``).

Each section is a tuple, or ``None`` when the agent could not read it (the history is
off, a store failed): the digest then says the section is unavailable rather than
"nothing to report", which would be a claim it cannot make. Values are as stored (lot
codes and device ids come from outside); the texts clean and cap them, and each
channel escapes them for its own markup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = [
    "DeviceOffline",
    "DigestFacts",
    "DigestFactsProvider",
    "LotVerdict",
    "SinkBacklog",
    "TaskDue",
]


@dataclass(frozen=True, slots=True)
class LotVerdict:
    """One lot weighed today, and whether it is too wet to store.

    Attributes:
        lot: Lot code.
        station: Station of its newest sample.
        product: Product of its newest sample (empty when unknown).
        count: Moisture samples today.
        mean_pct: Mean moisture, %.
        max_pct: Highest moisture, %.
        threshold_pct: The wet-lot threshold for its product, %.
        wet: Wet by the wet-lot rule (an open alert, or a mean at or above the threshold).
        last_ns: Time of its newest sample.
    """

    lot: str
    station: str
    product: str
    count: int
    mean_pct: float
    max_pct: float
    threshold_pct: float
    wet: bool
    last_ns: int


@dataclass(frozen=True, slots=True)
class TaskDue:
    """A huller's service task that is due or overdue.

    Attributes:
        huller: Huller id.
        huller_name: Its display name (empty when none).
        task: Task id.
        name: The task's description.
        overdue: Past its interval (else within ``warn_before_h`` of it).
        hours_since: Running hours since its last service.
        interval_h: Its interval, running hours.
        last_done_ns: When it was last done (``None``: never recorded).
    """

    huller: str
    huller_name: str
    task: str
    name: str
    overdue: bool
    hours_since: float
    interval_h: float
    last_done_ns: int | None


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """A device (meter, scale, huller) whose port or unit is not answering.

    Attributes:
        device: Device id.
        station: Its station (empty when none).
        since_ns: When it went offline (or was registered, if never online).
        last_seen_ns: Its last valid frame (``None``: none since start).
        error: The last error it gave, if any.
    """

    device: str
    station: str
    since_ns: int
    last_seen_ns: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """A sink with readings still to deliver.

    Attributes:
        sink: Sink name.
        records: Records accepted but not yet delivered to it.
        last_delivery_ns: Its last delivery since start (``None``: none).
        error: Its last error, if any.
    """

    sink: str
    records: int
    last_delivery_ns: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DigestFacts:
    """Everything the digest says besides alerts; ``None`` = could not be read.

    Attributes:
        lots: Today's lots (since local midnight).
        tasks: Service tasks due or overdue.
        offline: Devices offline now.
        backlogs: Sinks with records still to deliver.
    """

    lots: tuple[LotVerdict, ...] | None = None
    tasks: tuple[TaskDue, ...] | None = None
    offline: tuple[DeviceOffline, ...] | None = None
    backlogs: tuple[SinkBacklog, ...] | None = None


#: Gathers the facts for a digest made at the given time (UTC ns).
DigestFactsProvider = Callable[[int], Awaitable[DigestFacts]]

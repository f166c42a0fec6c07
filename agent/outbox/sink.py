"""What a sink is: something the dispatcher hands outbox records to.

A sink answers per batch, in one of three ways (Telegraf's Accept/Reject/Keep):

* return an empty list: every record was delivered; the cursor moves past them;
* return ``Rejection`` items: those records can never be delivered (a 4xx from
  InfluxDB); they go to the dead-letter table, the rest count as delivered;
* raise ``SinkUnavailable``: nothing is known to be delivered; the dispatcher
  keeps the whole batch and retries after a back-off (or the server's
  ``Retry-After``), or as soon as ``wait_available`` says the sink is back
  (the broker reconnected, the database answers its health check), so an
  outage costs no more than its own length.

Sinks never touch the outbox themselves: only acknowledgements travel back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from coffee_telemetry.agent.readings import Reading, decode_reading


class Record:
    """One outbox record as handed to a sink.

    Attributes:
        id: Outbox id; strictly increasing in acceptance order.
        payload: The stored canonical JSON (``encode_reading``); send it as is.
        line: The InfluxDB line for this record, rendered once when it was
            accepted (``None`` when it could not be rendered, or for outboxes
            that do not render lines).
        device: The reading's device id.
        kind: The reading's kind (``reading`` or ``event``).
    """

    __slots__ = ("_reading", "device", "id", "kind", "line", "payload")

    def __init__(
        self,
        *,
        id: int,
        payload: bytes,
        reading: Reading | None = None,
        line: str | None = None,
        device: str | None = None,
        kind: str | None = None,
    ) -> None:
        self.id = id
        self.payload = payload
        self.line = line
        self._reading = reading
        if device is None or kind is None:
            decoded = self.reading
            device, kind = decoded.device, decoded.kind
        self.device = device
        self.kind = kind

    @property
    def reading(self) -> Reading:
        """The record decoded (lazily: a backlog drain only needs ``line``)."""
        if self._reading is None:
            self._reading = decode_reading(self.payload)
        return self._reading

    def __repr__(self) -> str:
        return f"Record(id={self.id}, device={self.device!r}, kind={self.kind!r})"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record the sink refused for good.

    Attributes:
        record_id: Outbox id of the refused record.
        reason: What the server said, shortened.
        status: Protocol status code (HTTP), when there is one.
    """

    record_id: int
    reason: str
    status: int | None = None


class Sink(Protocol):
    """A destination for outbox records."""

    #: Unique, stable name; the outbox keys this sink's cursor by it.
    name: str
    #: Most records handed over in one ``deliver`` call.
    batch_size: int
    #: Longest a record may wait for a fuller batch (0 = send at once).
    flush_interval_s: float
    # A sink may also say ``in_flight = N`` (an int attribute, default 1): how many
    # batches ``deliver_loop`` hands it before the oldest is confirmed.

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        """Deliver ``records`` (in id order) or raise ``SinkUnavailable``."""
        ...

    async def wait_available(self, timeout_s: float) -> None:
        """Return once the sink may deliver again, or after ``timeout_s`` at the latest.

        Called after ``SinkUnavailable``. A sink that cannot tell just sleeps.
        """
        ...


class ConnectionGate:
    """When a sink that holds a connection may deliver (MQTT, NATS).

    The connection loop says when a connection is ``opened`` and ``closed``. A delivery
    waits for one (``wait_up``); a delivery that fails marks the connection it used as
    ``spent``, and ``wait_newer`` (the sink's ``wait_available``) then returns as soon as
    a connection opened after that failure is up, instead of after a fixed back-off.

    Attributes:
        up: Set while a connection is open.
    """

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self._newer = asyncio.Event()

    def opened(self) -> None:
        """A connection is up (newer than any failure before it)."""
        self.up.set()
        self._newer.set()

    def closed(self) -> None:
        """The connection is gone."""
        self.up.clear()

    def spent(self) -> None:
        """A delivery failed on the current connection: wait for a newer one."""
        self._newer.clear()

    async def wait_up(self, timeout_s: float) -> bool:
        """Wait for a connection, at most ``timeout_s``; having to wait spends the last one."""
        if not self.up.is_set():
            self._newer.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self.up.wait()
        except TimeoutError:
            return False
        return True

    async def wait_newer(self, timeout_s: float) -> None:
        """Return when a connection newer than the last failure is up, or after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._newer.wait()

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

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        """Deliver ``records`` (in id order) or raise ``SinkUnavailable``."""
        ...

    async def wait_available(self, timeout_s: float) -> None:
        """Return once the sink may deliver again, or after ``timeout_s`` at the latest.

        Called after ``SinkUnavailable``. A sink that cannot tell just sleeps.
        """
        ...

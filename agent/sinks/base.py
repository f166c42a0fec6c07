"""What a sink is: something the dispatcher hands outbox records to.

A sink answers per batch, in one of three ways (Telegraf's Accept/Reject/Keep):

* return an empty list: every record was delivered; the cursor moves past them;
* return ``Rejection`` items: those records can never be delivered (a 4xx from
  InfluxDB); they go to the dead-letter table, the rest count as delivered;
* raise ``SinkUnavailable``: nothing is known to be delivered; the dispatcher
  keeps the whole batch and retries after a back-off (or the server's
  ``Retry-After``).

Sinks never touch the outbox themselves: only acknowledgements travel back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.readings import Reading


@dataclass(frozen=True, slots=True)
class Record:
    """One outbox record as handed to a sink.

    Attributes:
        id: Outbox id; strictly increasing in acceptance order.
        payload: The stored canonical JSON (``encode_reading``); send it as is.
        reading: The same record decoded.
    """

    id: int
    payload: bytes
    reading: Reading


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

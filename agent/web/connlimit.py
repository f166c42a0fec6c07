"""Bounded connections for the agent's web server.

Theory of operation
-------------------
Every accepted socket costs a file descriptor, and the agent shares one open-file
limit between its web clients and what it cannot do without: the outbox and the
history (SQLite opens files as it needs them), the alert state it rewrites, the
serial ports, and the MQTT and InfluxDB connections. A client that opens sockets
and sends nothing must therefore never be able to use up that limit. Three things
bound it:

1. **Caps at accept.** ``ConnectionGuard.protocol_factory`` wraps the server's
   protocol factory: each accepted socket gets a ``GuardedConnection`` which, in
   ``connection_made``, counts it against a total cap and a per-address cap. Over
   either, the socket is closed at once and counted; the HTTP protocol is never
   even created. Refusals are logged in one summary line at most every
   ``LOG_EVERY_S``, never one line per socket.
2. **Deadlines.** aiohttp closes an idle keep-alive connection
   (``keepalive_timeout``) but waits forever for a request head sent a byte at a
   time, or for a body that never ends. A connection keeps one deadline, set by
   this state machine (the web module's middleware reports ``RECV_HEAD`` when a
   request reaches the application and ``SENT_RESPONSE`` when its handler is done):

   ============== ============== ============== =================================
   phase          event          next phase     deadline
   ============== ============== ============== =================================
   AWAITING_HEAD  (connected)                   head: ``header_timeout_s``
   AWAITING_HEAD  RECV_DATA      AWAITING_HEAD  unchanged
   AWAITING_HEAD  RECV_HEAD      IN_REQUEST     body, if one is still to come
   IN_REQUEST     RECV_DATA      IN_REQUEST     unchanged
   IN_REQUEST     SENT_RESPONSE  IDLE           unchanged (a body may still come)
   IDLE           RECV_DATA      AWAITING_HEAD  head: ``header_timeout_s``
   IDLE           RECV_HEAD      IN_REQUEST     body, if one is still to come
   ============== ============== ============== =================================

   A connection whose deadline passes (a head still incomplete, or a body not yet
   whole) is aborted and counted. An idle connection has no deadline of ours:
   aiohttp's keep-alive timer closes it. A request head pipelined behind a
   response still being written is timed from its first byte.
3. **Caps that fit the open-file limit.** At start, ``raise_nofile_limit`` lifts
   the soft limit to the hard one (at most ``NOFILE_CEILING``), and
   ``connection_cap`` keeps the total cap within what is left once the agent's own
   files (``FD_RESERVE``) and one full accept burst (``ACCEPT_BACKLOG``: sockets
   the event loop accepts before any of them can be refused) are set aside, at
   ``FDS_PER_CONNECTION`` descriptors per connection.

Live-update streams are capped separately (``agent.web.live``): each holds one of these
connections for as long as the page is open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import cast

log = logging.getLogger(__name__)

#: The soft open-file limit is raised to the hard one, but not past this.
NOFILE_CEILING = 65536
#: Descriptors kept for the rest of the agent: stdio, the event loop, SQLite files
#: (outbox, history, lots, maintenance: database, WAL and shared memory each, plus
#: temporary files), serial ports, MQTT, InfluxDB and webhook connections, the alert
#: state being rewritten, and a margin. The agent uses about 30 of them running.
FD_RESERVE = 96
#: Listen backlog, hence the most sockets one wake-up of the accept loop opens.
ACCEPT_BACKLOG = 64
#: Descriptors one web connection may hold: its socket, and a page file being sent.
FDS_PER_CONNECTION = 2
#: The web server always gets at least this many connections.
MIN_CONNECTIONS = 4
#: At most one log line about refused or timed-out connections per this many seconds.
LOG_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What the web server allows (``[api]``; ``fit`` them to the open-file limit).

    Attributes:
        max_connections: Open connections at once.
        max_per_address: Open connections at once from one client address.
        header_timeout_s: Time for a request line and headers to arrive whole.
        body_timeout_s: Time for a request body to arrive whole, from its head.
        keepalive_s: An idle keep-alive connection is closed after this.
    """

    max_connections: int = 256
    max_per_address: int = 32
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_s: float = 75.0

    def fit(self, nofile: int) -> ConnectionLimits:
        """These limits with the caps lowered to what ``nofile`` descriptors can hold."""
        total = connection_cap(self.max_connections, nofile)
        return dataclasses.replace(
            self, max_connections=total, max_per_address=min(self.max_per_address, total)
        )


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """The web server's connection counters (``GET /api/web``).

    Attributes:
        open: Connections open now.
        max_connections: The total cap in force.
        max_per_address: The per-address cap in force.
        accepted: Connections accepted under the caps since start.
        refused_total_cap: Connections closed at once: the total cap was reached.
        refused_address_cap: Connections closed at once: their address's cap was reached.
        timed_out_head: Connections aborted: a request head did not arrive in time.
        timed_out_body: Connections aborted: a request body did not arrive in time.
    """

    open: int
    max_connections: int
    max_per_address: int
    accepted: int
    refused_total_cap: int
    refused_address_cap: int
    timed_out_head: int
    timed_out_body: int


def raise_nofile_limit(*, ceiling: int = NOFILE_CEILING) -> int:
    """Raise the soft open-file limit to the hard one (at most ``ceiling``).

    Returns:
        The soft limit now in force (``ceiling`` if it is unlimited).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft == resource.RLIM_INFINITY:
        return ceiling
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("Could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("Raised the open-file limit from %d to %d", soft, target)
        return target
    return soft


def connection_cap(configured: int, nofile: int) -> int:
    """The most web connections an open-file limit of ``nofile`` leaves room for.

    Args:
        configured: ``[api] max_connections``.
        nofile: The soft open-file limit.

    Returns:
        ``configured``, lowered to ``(nofile - FD_RESERVE - ACCEPT_BACKLOG) //
        FDS_PER_CONNECTION`` if that is less (but not below ``MIN_CONNECTIONS``).
    """
    budget = (nofile - FD_RESERVE - ACCEPT_BACKLOG) // FDS_PER_CONNECTION
    return min(configured, max(MIN_CONNECTIONS, budget))


class Phase(Enum):
    """Where a connection stands in its current request."""

    AWAITING_HEAD = "awaiting_head"
    IN_REQUEST = "in_request"
    IDLE = "idle"


class Event(Enum):
    """What moves a connection from one phase to the next."""

    RECV_DATA = "recv_data"
    RECV_HEAD = "recv_head"
    SENT_RESPONSE = "sent_response"


_TRANSITIONS = {
    (Phase.AWAITING_HEAD, Event.RECV_DATA): Phase.AWAITING_HEAD,
    (Phase.AWAITING_HEAD, Event.RECV_HEAD): Phase.IN_REQUEST,
    (Phase.IN_REQUEST, Event.RECV_DATA): Phase.IN_REQUEST,
    (Phase.IN_REQUEST, Event.SENT_RESPONSE): Phase.IDLE,
    (Phase.IDLE, Event.RECV_DATA): Phase.AWAITING_HEAD,
    (Phase.IDLE, Event.RECV_HEAD): Phase.IN_REQUEST,
}


class ConnectionGuard:
    """Caps, deadlines and counters for one server's connections.

    Args:
        limits: The limits (``fit`` them to the open-file limit first).
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._by_address: Counter[str] = Counter()
        self._open = 0
        self._accepted = 0
        self._refused_total = 0
        self._refused_address = 0
        self._timed_out_head = 0
        self._timed_out_body = 0
        self._next_log = 0.0
        self._report_due: asyncio.TimerHandle | None = None
        self._latest = ""
        self._logged_refused = 0
        self._logged_timed_out = 0

    def protocol_factory(
        self, make_protocol: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that guards ``make_protocol``'s."""
        return lambda: GuardedConnection(self, make_protocol)

    def stats(self) -> ConnectionStats:
        """The counters now."""
        return ConnectionStats(
            open=self._open,
            max_connections=self.limits.max_connections,
            max_per_address=self.limits.max_per_address,
            accepted=self._accepted,
            refused_total_cap=self._refused_total,
            refused_address_cap=self._refused_address,
            timed_out_head=self._timed_out_head,
            timed_out_body=self._timed_out_body,
        )

    def open_from(self, address: str) -> int:
        """Connections open now from ``address``."""
        return self._by_address[address]

    def _admit(self, address: str) -> bool:
        if self._open >= self.limits.max_connections:
            self._refused_total += 1
        elif self._by_address[address] >= self.limits.max_per_address:
            self._refused_address += 1
        else:
            self._open += 1
            self._by_address[address] += 1
            self._accepted += 1
            return True
        self._note(address)
        return False

    def _release(self, address: str) -> None:
        self._open -= 1
        self._by_address[address] -= 1
        if not self._by_address[address]:
            del self._by_address[address]

    def _timed_out(self, address: str, *, body: bool) -> None:
        if body:
            self._timed_out_body += 1
        else:
            self._timed_out_head += 1
        self._note(address)

    def _note(self, address: str) -> None:
        # The first refusal or timeout is reported at once; the next ones together, at
        # most LOG_EVERY_S later, whatever their number.
        self._latest = address
        if self._report_due is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_log:
            self._report()
        else:
            self._report_due = loop.call_at(self._next_log, self._report)

    def _report(self) -> None:
        self._report_due = None
        refused = self._refused_total + self._refused_address
        timed_out = self._timed_out_head + self._timed_out_body
        log.warning(
            "Web server: refused %d connections over the caps (%d open of %d, %d per address)"
            " and closed %d slow requests since the last report; latest from %s",
            refused - self._logged_refused,
            self._open,
            self.limits.max_connections,
            self.limits.max_per_address,
            timed_out - self._logged_timed_out,
            self._latest,
        )
        self._logged_refused, self._logged_timed_out = refused, timed_out
        self._next_log = asyncio.get_running_loop().time() + LOG_EVERY_S


class GuardedConnection(asyncio.Protocol):
    """One accepted socket: counted, timed, and handed to the HTTP protocol if admitted.

    Args:
        guard: The server's guard.
        make_protocol: Makes the HTTP protocol (aiohttp's ``RequestHandler``).
    """

    def __init__(
        self, guard: ConnectionGuard, make_protocol: Callable[[], asyncio.Protocol]
    ) -> None:
        self._guard = guard
        self._make_protocol = make_protocol
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._phase = Phase.AWAITING_HEAD
        self._deadline: asyncio.TimerHandle | None = None

    @staticmethod
    def of(transport: asyncio.BaseTransport | None) -> GuardedConnection | None:
        """The connection a transport belongs to (``None`` if not guarded or gone)."""
        protocol = None if transport is None else transport.get_protocol()
        return protocol if isinstance(protocol, GuardedConnection) else None

    @property
    def phase(self) -> Phase:
        """Where the connection stands."""
        return self._phase

    # -- what the transport calls -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self._guard._admit(address):
            transport.abort()
            return
        self._transport, self._address = transport, address
        self._arm_head()
        self._inner = self._make_protocol()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self._inner = self._inner, None
        if inner is None:
            return  # refused
        self._cancel_deadline()
        self._transport = None
        self._guard._release(self._address)
        inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._phase is Phase.IDLE:
            self._arm_head()  # the first byte of the next request
        self._step(Event.RECV_DATA)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- what the web application reports ---------------------------------------------

    def head_received(self, body_done: Callable[[], bool] | None) -> None:
        """A request head arrived whole; ``body_done`` tells whether its body has too.

        Args:
            body_done: For a request with a body, whether all of it has arrived;
                ``None`` for a request without one.
        """
        if self._inner is None:
            return  # the connection is already gone
        self._step(Event.RECV_HEAD)
        self._cancel_deadline()
        if body_done is not None and not body_done():
            self._arm(self._guard.limits.body_timeout_s, body_done)

    def response_sent(self) -> None:
        """The request's handler is done (its response is being written)."""
        if self._inner is not None:
            self._step(Event.SENT_RESPONSE)

    # -- deadlines ----------------------------------------------------------------------

    def _step(self, event: Event) -> Phase:
        try:
            self._phase = _TRANSITIONS[self._phase, event]
        except KeyError:  # pragma: no cover - the middleware reports heads and responses in turn
            raise RuntimeError(f"{event.name} is not expected in {self._phase.name}") from None
        return self._phase

    def _arm_head(self) -> None:
        self._arm(self._guard.limits.header_timeout_s, None)

    def _arm(self, delay_s: float, body_done: Callable[[], bool] | None) -> None:
        self._cancel_deadline()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(delay_s, self._expire, body_done)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, body_done: Callable[[], bool] | None) -> None:
        self._deadline = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if body_done is not None and body_done():
            return  # the body came in time; the request goes on
        self._guard._timed_out(self._address, body=body_done is not None)
        transport.abort()

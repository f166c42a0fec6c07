"""systemd's notification protocol: readiness, watchdog pings and a status line.

Theory of operation
-------------------
Under ``Type=notify`` systemd passes the agent ``NOTIFY_SOCKET``, the address of
an ``AF_UNIX`` datagram socket (a path, or ``@name`` for the abstract namespace),
and reads newline-separated ``KEY=VALUE`` assignments sent to it:

- ``READY=1`` once the outbox, the sinks and the device loops are up: until then
  ``systemctl start`` waits, and units ordered after the agent wait too;
- ``WATCHDOG=1`` at half of ``WATCHDOG_USEC`` (set from ``WatchdogSec=``): if the
  pings stop for ``WatchdogSec``, systemd kills the process and ``Restart=``
  starts it again. The pings come from a task on the agent's event loop, not from
  a thread, so a loop stalled by a blocking call stops them; a thread would keep
  pinging for a process that no longer reads its meters;
- ``STATUS=`` a one-line summary (devices online of total, backlog per sink),
  shown by ``systemctl status``;
- ``STOPPING=1`` when shutdown begins, ``RELOADING=1`` (with ``MONOTONIC_USEC``)
  when a configuration reload begins, followed by ``READY=1`` when it is done.

Without ``NOTIFY_SOCKET`` (a shell, a test, another supervisor) every call is a
no-op. Sending never raises into the agent and never blocks the loop: the socket
is non-blocking, and a failure (the socket gone, its queue full, an unsupported
address) is counted and logged (the first one, then every hundredth), never
retried. ``WATCHDOG_PID``, when set, names the process the watchdog is meant for;
another process ignores ``WATCHDOG_USEC``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["SdNotify", "status_line", "watchdog_loop"]

log = logging.getLogger(__name__)

#: Without a watchdog, the status line is refreshed this often.
STATUS_INTERVAL_S = 10.0
#: After the first failure, one in this many is logged.
LOG_EVERY = 100


class SdNotify:
    """A sender of notifications to systemd (a no-op without ``NOTIFY_SOCKET``)."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        """A sender to ``address``.

        Args:
            address: ``NOTIFY_SOCKET`` as systemd sets it (``/run/...`` or ``@name``);
                ``None`` or empty: send nothing.
            watchdog_usec: ``WATCHDOG_USEC``: the watchdog timeout, ``None`` if off.
        """
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SdNotify:
        """The sender systemd's environment asks for (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout, or ``None`` without one."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; whether it went.

        Never raises: a failure is counted, logged and dropped.
        """
        if self.address is None or not assignments:
            return False
        payload = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "replace")
        try:
            address = _sockaddr(self.address)
            self._socket().sendto(payload, address)
        except (OSError, ValueError) as exc:
            self._failed(exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (with a status line, if given)."""
        return self.send("READY=1", *_status(status))

    def watchdog(self, status: str | None = None) -> bool:
        """``WATCHDOG=1`` (with a status line, if given); a no-op without a watchdog."""
        if self.watchdog_usec is None:
            return self.status(status) if status is not None else False
        return self.send("WATCHDOG=1", *_status(status))

    def status(self, status: str) -> bool:
        """``STATUS=`` a one-line summary."""
        return self.send(*_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send("STOPPING=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1``: a configuration reload has begun (``ready()`` when done)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def close(self) -> None:
        """Close the socket (sending again reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def health_doc(self) -> dict[str, object]:
        """Counters for ``/api/health`` (``counters.systemd``)."""
        return {
            "notify_socket": self.address is not None,
            "watchdog_s": None if self.watchdog_usec is None else self.watchdog_usec / 1e6,
            "sent": self.sent,
            "failures": self.failures,
            "last_error": self.last_error,
        }

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)  # a full queue is a counted failure, never a stall
            self._sock = sock
        return self._sock

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failures == 1 or self.failures % LOG_EVERY == 0:
            log.warning(
                "Aviso ao systemd falhou (%d falhas) / systemd notification failed: %s",
                self.failures,
                self.last_error,
            )
        if isinstance(exc, OSError):
            self.close()  # a fresh socket next time


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None  # meant for another process
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _sockaddr(address: str) -> str | bytes:
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    if address.startswith("/"):
        return address
    raise ValueError(f"unsupported NOTIFY_SOCKET address {address!r}")


def _status(status: str | None) -> tuple[str, ...]:
    return () if status is None else (f"STATUS={status}",)


def status_line(online: int, total: int, backlog: Mapping[str, int]) -> str:
    """The ``STATUS=`` summary: devices online of total and the backlog per sink."""
    sinks = ", ".join(f"{name}={count}" for name, count in sorted(backlog.items()))
    return f"dispositivos {online}/{total} online; fila: {sinks or 'sem destinos'}"


async def watchdog_loop(notifier: SdNotify, summary: Callable[[], str]) -> None:
    """``READY=1`` now, then ``WATCHDOG=1`` and ``STATUS=`` from this loop until cancelled.

    Run it as a task created after the outbox, the sinks and the device loops:
    its first step runs after theirs. Returns at once without ``NOTIFY_SOCKET``.
    """
    if not notifier.enabled:
        return
    notifier.ready(_safe(summary))
    interval = notifier.watchdog_interval_s or STATUS_INTERVAL_S
    while True:
        await asyncio.sleep(interval)
        notifier.watchdog(_safe(summary))


def _safe(summary: Callable[[], str]) -> str | None:
    try:
        return summary()
    except Exception as exc:  # the pings matter more than the status line
        log.warning("systemd status line failed: %s: %s", type(exc).__name__, exc)
        return None

"""A virtual serial port on a real pseudo-terminal (device-protocols.md §5.3).

The simulator holds the master side; the agent opens ``path`` exactly as it would open
``/dev/ttyUSB0``, with pyserial and the same settings. Facts this relies on (verified on
Linux, §5.3):

- The slave must be put in raw mode *before* the first write. In the default cooked
  mode the line discipline echoes bytes back to the master and turns CR into LF.
- The slave fd stays open in the simulator for the port's life, so writes made before
  the agent opens the path do not fail with EIO (pyserial flushes them on open, as a
  real UART driver discards what arrived before the port was opened).
- Closing the master is an unplug: the agent's reads fail (pyserial raises
  ``SerialException``; the asyncio transport delivers it to the reader) and the
  ``/dev/pts/N`` node disappears. A replug gets a new node, usually another N, which
  is why ``link`` exists: like ``/dev/serial/by-id/...`` it is a stable path, and it is
  re-pointed atomically at each new slave.
- Linux ptys accept any baud rate but refuse parity and 7-bit settings; run 7E1
  devices over 8N1 here and keep parity a config matter.

Writes never block the event loop: the master is non-blocking, and bytes the pty
cannot take right now (nobody reading, buffer full) or written while unplugged are
dropped and counted in ``dropped_bytes``, as a UART with no one listening loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tty
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PtyPort", "open_pty_port"]


class PtyPort:
    """A pseudo-terminal pair standing for one serial device.

    Args:
        link: A stable symlink (like ``/dev/serial/by-id/...``) kept pointing at the
            current slave; its directory must exist. ``None``: use the pts path.

    Attributes:
        written_bytes: Bytes the pty accepted.
        dropped_bytes: Bytes dropped (full buffer, or unplugged).
        opens: How many ptys this port has had; a change means the agent had to
            reconnect (simulators use it to forget what a parser already saw).
    """

    def __init__(self, *, link: str | os.PathLike[str] | None = None) -> None:
        self._link = None if link is None else Path(link)
        self._master: int | None = None
        self._slave: int | None = None
        self._tty_path: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._waiter_loop: asyncio.AbstractEventLoop | None = None
        self.written_bytes = 0
        self.dropped_bytes = 0
        self.opens = 0

    # -- lifecycle -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether a pty is plugged in."""
        return self._master is not None

    def open(self) -> None:
        """Create the pty (raw before any write) and point ``link`` at it."""
        if self._master is not None:
            raise RuntimeError("PtyPort is already open")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._tty_path = os.ttyname(slave)
        self.opens += 1
        if self._link is not None:
            # Re-point atomically: the agent never sees the link missing while plugged.
            tmp = self._link.with_name(f".{self._link.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._tty_path)
            tmp.replace(self._link)

    def unplug(self) -> None:
        """Pull the cable: close both sides and remove ``link``."""
        master, slave = self._master, self._slave
        self._master = self._slave = None
        if master is not None:
            self._cancel_waiter(master)
            os.close(master)
        if slave is not None:
            os.close(slave)
        if self._link is not None:
            with contextlib.suppress(FileNotFoundError):
                self._link.unlink()

    def replug(self) -> None:
        """Plug in again: a new pty, ``link`` re-pointed at the same path."""
        self.unplug()
        self.open()

    def close(self) -> None:
        """Release everything (same as ``unplug``; safe to call twice)."""
        self.unplug()

    # -- paths ---------------------------------------------------------------------

    @property
    def path(self) -> str:
        """What the agent opens: ``link`` if given, else the current pts path."""
        return str(self._link) if self._link is not None else self.tty_path

    @property
    def tty_path(self) -> str:
        """The current ``/dev/pts/N``.

        Raises:
            RuntimeError: The port was never opened.
        """
        if self._tty_path is None:
            raise RuntimeError("PtyPort was never opened")
        return self._tty_path

    # -- I/O -----------------------------------------------------------------------

    def write(self, data: bytes) -> int:
        """Send bytes to the agent without blocking; returns how many were taken.

        What the pty cannot take now, or anything while unplugged, is dropped and
        counted in ``dropped_bytes``.
        """
        written = 0
        if self._master is not None and data:
            # BlockingIOError: the buffer is full; OSError: the pty is going away.
            with contextlib.suppress(OSError):
                written = os.write(self._master, data)
        self.written_bytes += written
        self.dropped_bytes += len(data) - written
        return written

    async def write_all(self, data: bytes) -> None:
        """Send all of ``data``, waiting while the pty's buffer is full (a replay drops nothing).

        Raises:
            OSError: ``EIO`` when the port is unplugged, before or while waiting.
        """
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            master = self._master
            if master is None:
                raise OSError(errno.EIO, "pty is unplugged")
            try:
                taken = os.write(master, view)
            except BlockingIOError:
                taken = 0
            self.written_bytes += taken
            view = view[taken:]
            if view:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_writer(master, _wake, ready)
                try:
                    async with asyncio.timeout(0.5):  # re-check an unplug at least this often
                        await ready
                except TimeoutError:
                    pass
                finally:
                    if self._master == master:
                        loop.remove_writer(master)

    async def read(self, size: int = 4096) -> bytes:
        """Wait for bytes the agent wrote to the port (for request/response devices).

        Raises:
            OSError: ``EIO`` when the port is unplugged, before or while waiting.
        """
        loop = asyncio.get_running_loop()
        while True:
            master = self._master
            if master is None:
                raise OSError(errno.EIO, "pty is unplugged")
            try:
                return os.read(master, size)
            except BlockingIOError:
                pass
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter, self._waiter_loop = waiter, loop
            loop.add_reader(master, _wake, waiter)
            try:
                await waiter
            finally:
                if self._master == master:
                    loop.remove_reader(master)
                self._waiter = self._waiter_loop = None

    def _cancel_waiter(self, master: int) -> None:
        waiter, loop = self._waiter, self._waiter_loop
        if waiter is not None and loop is not None:
            # Deregister before the fd is closed, then fail the pending read.
            loop.remove_reader(master)
            if not waiter.done():
                waiter.set_exception(OSError(errno.EIO, "pty unplugged"))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@contextlib.contextmanager
def open_pty_port(*, link: str | os.PathLike[str] | None = None) -> Iterator[PtyPort]:
    """Open a ``PtyPort`` for the duration of a ``with`` block."""
    port = PtyPort(link=link)
    port.open()
    try:
        yield port
    finally:
        port.close()

"""Serial transport: a small interface of ours over pyserial-asyncio-fast.

Ports are opened by their stable path (``/dev/serial/by-id/...`` or a udev
``SYMLINK``) with an exclusive lock, so a second process cannot silently share
a device. Everything that can go wrong with a USB adapter (it vanishes, the
kernel renumbers it, the path is missing, someone else holds it) surfaces as
``PortError``; the device loop closes the port, backs off and reopens the same
path, which is what lets the kernel hand the adapter back under its old name.

Tests and simulators use real pseudo-terminals through the same code path; a
fake only has to implement ``SerialPort``.
"""

from __future__ import annotations

import asyncio
import contextlib
import termios
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import serial
import serial_asyncio_fast

from coffee_telemetry.agent.config import SerialSettings
from coffee_telemetry.agent.errors import PortError

#: Exceptions pyserial and the tty layer raise when a port goes away.
PORT_EXCEPTIONS = (serial.SerialException, OSError, termios.error)

#: Largest chunk read at once; the driver's own limits bound what it keeps.
READ_CHUNK = 4096


class SerialPort(Protocol):
    """An open serial port."""

    async def read(self) -> bytes:
        """Wait for bytes; raise ``PortError`` when the port is gone."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes; raise ``PortError`` when the port is gone."""
        ...


#: Opens a port: ``open_port(device=..., path=..., settings=...)``.
PortOpener = Callable[..., AbstractAsyncContextManager[SerialPort]]


class _AsyncSerialPort:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        device: str,
        path: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._device = device
        self._path = path

    async def read(self) -> bytes:
        try:
            data = await self._reader.read(READ_CHUNK)
        except PORT_EXCEPTIONS as exc:
            raise PortError(f"read failed: {exc}", device=self._device, port=self._path) from exc
        if not data:
            raise PortError("port closed (device unplugged?)", device=self._device, port=self._path)
        return data

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except PORT_EXCEPTIONS as exc:
            raise PortError(f"write failed: {exc}", device=self._device, port=self._path) from exc

    def close(self) -> None:
        with contextlib.suppress(*PORT_EXCEPTIONS):
            self._writer.close()


@asynccontextmanager
async def open_serial_port(
    *, device: str, path: str, settings: SerialSettings
) -> AsyncIterator[SerialPort]:
    """Open ``path`` with ``settings``; close it on exit whatever happened.

    Raises:
        PortError: The path is missing, busy (locked by another process) or
            refuses the settings.
    """
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=path,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            xonxoff=settings.xonxoff,
            rtscts=settings.rtscts,
            exclusive=settings.exclusive,
        )
    except PORT_EXCEPTIONS as exc:
        raise PortError(f"cannot open: {exc}", device=device, port=path) from exc
    except ValueError as exc:  # pyserial rejects settings with ValueError
        raise PortError(f"settings refused: {exc}", device=device, port=path) from exc
    port = _AsyncSerialPort(reader, writer, device=device, path=path)
    try:
        yield port
    finally:
        port.close()
        # Wait until the transport has run connection_lost, so the fd (and its
        # exclusive lock) is really gone before a reopen of the same path.
        with contextlib.suppress(TimeoutError, *PORT_EXCEPTIONS):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()

"""MT-SICS balances: the request/response device loop (``scale.mtsics``, protocols §6 B).

Theory of operation
-------------------
``MtSicsRunner`` shares ``PortRunner``'s outer loop with the stream devices: open the
port by its stable path, back off and reopen it after a ``PortError``, time and enrich
every measurement and commit it to the outbox before reading on. What differs is the
time the port is open: a balance speaks only when asked, so this loop writes too.

Each open gets a new ``MtSicsClient``: a half-read reply, or a request in flight before
an unplug, means nothing to the balance after it. The client's ``start`` is ``@``,
which also ends a ``SIR`` stream an earlier run may have left going. Then, until the
port fails or the task is cancelled::

    wait for bytes, at most until client.next_deadline()
    feed them (if any), tick: an overdue reply becomes NoResponse
    handle the events, write client.poll(now) when a request is due

The client decides what is due (``I2`` once, then ``SI`` every ``poll_s``, or ``SIR``
in stream mode), how long a reply may take, and when a busy balance is asked again;
this loop only keeps time for it. On cancellation (the agent stopping) the client's
``stop`` (``@``) is written, best effort within ``STOP_TIMEOUT_S``, so a balance in
``SIR`` mode does not go on streaming at nobody.

Trouble is counted in the device's health ``errors``: ``no-response``, ``busy`` (still
``I`` after the client's retries), ``ES``/``ET``/``EL``, ``suspect-link`` (``ET`` twice
in a row: wrong baud rate or parity) and the ``Discarded`` reasons. Each kind of
trouble is logged at warning when it starts; repeats go to debug until the balance
answers properly again (a weight or a reply), which is logged once at info. A balance
switched off for the night writes one warning, not one per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import assert_never

from coffee_telemetry.agent.config import MtSicsDevice
from coffee_telemetry.agent.devices.ports import SerialPort
from coffee_telemetry.agent.devices.runner import PortRunner
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.health import DeviceState
from coffee_telemetry.agent.readings import Draft
from coffee_telemetry.drivers.events import Discarded, Measurement
from coffee_telemetry.drivers.scale_mtsics import (
    DeviceReply,
    MtSicsClient,
    NoResponse,
    ProtocolError,
)

log = logging.getLogger(__name__)

#: How long the ``@`` written at shutdown may take.
STOP_TIMEOUT_S = 1.0

# Requests older models may not know; ES to them is not trouble (§6 B).
_OPTIONAL_REQUESTS = frozenset({b"@\r\n", b"I2\r\n"})
# Replies that say what the balance is.
_IDENTITY_REPLIES = frozenset({"I2", "I4"})


def mtsics_client(dev: MtSicsDevice) -> MtSicsClient:
    """A fresh client for a balance (one per port open), from its config."""
    opts = dev.mtsics
    return MtSicsClient(
        mode=opts.mode,
        publish_unstable=opts.publish_unstable,
        poll_s=opts.poll_s,
        reply_timeout_s=opts.reply_timeout_s,
        stable_timeout_s=opts.stable_timeout_s,
        republish_s=opts.republish_s,
        line_ending=opts.line_ending,
    )


class MtSicsRunner(PortRunner[MtSicsDevice]):
    """Polls one MT-SICS balance forever; see the module docstring.

    Arguments are those of ``agent.devices.runner.PortRunner``.
    """

    _trouble: str | None = None  # the kind of trouble last logged at warning

    async def _connection_loop(self, port: SerialPort) -> None:
        client = mtsics_client(self._dev)
        self._trouble = None
        await port.write(client.start(self._monotonic()))
        try:
            while True:
                data = await self._read(port, client.next_deadline())
                now = self._monotonic()
                if data is not None:
                    client.receive_data(data, now)
                client.tick(now)
                await self._handle(client)
                request = client.poll(now)
                if request is not None:
                    await port.write(request)
        except asyncio.CancelledError:
            with contextlib.suppress(PortError, TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await port.write(client.stop(self._monotonic()))
            raise

    async def _handle(self, client: MtSicsClient) -> None:
        self._frames_seen(client.frames_ok)
        dev = self._dev
        drafts: list[Draft] = []
        for event in client.events():
            match event:
                case Measurement():
                    self._answered()
                    drafts.append(self._draft(event))
                case Discarded():
                    self._discarded(event)
                case NoResponse(request=request):
                    self._problem("no-response", "Device %s did not answer %r", dev.id, request)
                case ProtocolError(code="ES", request=request) if request in _OPTIONAL_REQUESTS:
                    log.info("Device %s does not know %r (older model)", dev.id, request)
                case ProtocolError(code=code, suspect_link=True):
                    self._entry.errors[code] += 1
                    serial = dev.serial
                    self._problem(
                        "suspect-link",
                        "Device %s cannot read our commands (%s twice in a row): check that"
                        " its baud rate and parity match %d %d%s%d",
                        dev.id,
                        code,
                        serial.baudrate,
                        serial.bytesize,
                        serial.parity,
                        serial.stopbits,
                    )
                case ProtocolError(code=code, request=request):
                    self._problem(code, "Device %s answered %s to %r", dev.id, code, request)
                case DeviceReply(status="I", request=bytes() as request):
                    self._problem(
                        "busy", "Device %s stayed busy: %r got I after every retry", dev.id, request
                    )
                case DeviceReply(id=reply_id, text=str() as text) if reply_id in _IDENTITY_REPLIES:
                    self._answered()
                    log.info("Device %s identifies as %r (%s)", dev.id, text, reply_id)
                case DeviceReply(id=reply_id, status=status, request=request):
                    if status != "I":  # an I nobody asked for (a late reply) proves little
                        self._answered()
                    log.debug("Device %s replied %s %s to %r", dev.id, reply_id, status, request)
                case _:
                    assert_never(event)
        await self._commit(drafts)

    def _problem(self, kind: str, msg: str, *args: object) -> None:
        """Count trouble of ``kind``; log it at warning when it is new, else at debug."""
        self._entry.errors[kind] += 1
        self._health.set_device_state(self._dev.id, DeviceState.ONLINE, error=msg % args)
        if kind == self._trouble:
            log.debug(msg, *args)
        else:
            log.warning(msg, *args)
            self._trouble = kind

    def _answered(self) -> None:
        if self._trouble is not None:
            log.info("Device %s answers again", self._dev.id)
            self._trouble = None

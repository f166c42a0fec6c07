"""The modem simulator answers like a modem: PIN, registration, sends, reports, texts."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator

import pytest

from coffee_telemetry.simulators.modem import ModemSim, encode_deliver, open_modem_sim


class Terminal:
    """The agent's side of the pty, raw, read with a deadline."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.buf = b""

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    async def until(self, marker: bytes, timeout_s: float = 3.0) -> bytes:
        async with asyncio.timeout(timeout_s):
            while marker not in self.buf:
                try:
                    self.buf += os.read(self.fd, 4096)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def close(self) -> None:
        os.close(self.fd)

    def reopen(self, path: str) -> None:
        """Open the port again (after the simulator was replugged)."""
        self.close()
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.buf = b""


@pytest.fixture
async def modem() -> AsyncIterator[tuple[ModemSim, Terminal]]:
    with open_modem_sim(pin="4321") as sim:
        task = asyncio.create_task(sim.run())
        term = Terminal(sim.port.tty_path)
        yield sim, term
        term.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_pin_then_a_message_with_its_delivery_report(
    modem: tuple[ModemSim, Terminal],
) -> None:
    sim, term = modem
    term.send(b"ATE0\r")
    assert (await term.until(b"OK\r\n")).startswith(b"ATE0\r")  # echo until ATE0
    term.send(b"AT+CSQ\r")
    assert b"+CME ERROR: 11" in await term.until(b"ERROR: 11\r\n")
    term.send(b"AT+CPIN?\r")
    assert b"+CPIN: SIM PIN" in await term.until(b"OK\r\n")
    term.send(b'AT+CPIN="0000"\r')
    assert b"+CME ERROR: 16" in await term.until(b"16\r\n")
    term.send(b'AT+CPIN="4321"\r')
    await term.until(b"OK\r\n")
    pdu = "0031000D91553599990010F10000A704D4F29C0E"  # "Test", report asked
    term.send(b"AT+CMGS=19\r")
    await term.until(b"> ")
    term.send(pdu.encode() + b"\x1a")
    assert b"+CMGS: 1" in await term.until(b"OK\r\n")
    report = await term.until(b"\r\n", timeout_s=3)
    report += await term.until(b"\r\n")
    assert b"+CDS:" in report
    assert [s.pdu for s in sim.submitted] == [pdu]


async def test_no_network_and_scripted_errors_answer_cms_errors(
    modem: tuple[ModemSim, Terminal],
) -> None:
    sim, term = modem
    sim.pin = None
    sim.port.replug()  # a power cycle: no PIN asked now
    term.reopen(sim.port.tty_path)
    await asyncio.sleep(0.05)
    pdu = "0011000D91553599990010F10000A704D4F29C0E"
    sim.registered = False
    term.send(b"ATE0\rAT+CREG?\r")
    assert b"+CREG: 0,2" in await term.until(b"+CREG: 0,2")
    term.send(b"AT+CMGS=19\r")
    await term.until(b"> ")
    term.send(pdu.encode() + b"\x1a")
    assert b"+CMS ERROR: 331" in await term.until(b"331\r\n")
    sim.registered = True
    sim.fail_next = [38]
    term.send(b"AT+CMGS=19\r")
    await term.until(b"> ")
    term.send(pdu.encode() + b"\x1a")
    assert b"+CMS ERROR: 38" in await term.until(b"38\r\n")
    assert sim.submitted == []


async def test_an_arriving_text_is_announced_read_and_deleted(
    modem: tuple[ModemSim, Terminal],
) -> None:
    sim, term = modem
    sim.pin = None
    sim.port.replug()
    term.reopen(sim.port.tty_path)
    await asyncio.sleep(0.05)
    index = sim.deliver("+5535999990001", "OK 123456")
    assert f'+CMTI: "SM",{index}\r\n'.encode() in await term.until(b'+CMTI: "SM",1\r\n')
    term.send(b"ATE0\r")
    await term.until(b"OK\r\n")
    term.send(f"AT+CMGR={index}\r".encode())
    answer = await term.until(b"OK\r\n")
    assert encode_deliver("+5535999990001", "OK 123456").encode() in answer
    term.send(f"AT+CMGD={index}\r".encode())
    await term.until(b"OK\r\n")
    assert sim.storage == {}

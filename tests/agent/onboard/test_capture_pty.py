"""``run_capture`` on real pseudo-terminals: simulated meters behind an emulated UART line.

The capture loop runs in a thread (it blocks on the port, as the CLI does) while the
simulators print on the event loop. Linux ptys refuse parity, so a 7E1 or 8E1 meter is
found from the bytes heard at 8N1 and the confirmation step is refused by the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest

from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.onboard.capfile import Capture, CaptureWriter, parse_capture
from coffee_telemetry.agent.onboard.capture import (
    CaptureOptions,
    CaptureResult,
    SerialCapturePort,
    SettingsRefused,
    run_capture,
)
from coffee_telemetry.agent.onboard.detect import Detector
from coffee_telemetry.agent.onboard.lineformat import LineSettings
from coffee_telemetry.agent.onboard.propose import Proposal, propose
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from coffee_telemetry.simulators.scales import MtSicsBalanceSim
from coffee_telemetry.simulators.uart import UartFormat, UartPty
from tests.agent.onboard.helpers import STARTED


class RecordingConsole:
    def __init__(self) -> None:
        self.status_lines: list[str] = []
        self.text_lines: list[str] = []

    def status(self, text: str) -> None:
        self.status_lines.append(text)

    def text(self, line: str) -> None:
        self.text_lines.append(line)


@contextlib.contextmanager
def uart_pty(meter: str) -> Iterator[UartPty]:
    """A meter sending at ``meter`` settings, heard as the pty is set."""
    port = UartPty(UartFormat.parse(meter))
    port.open()
    try:
        yield port
    finally:
        port.close()


def fast_detector() -> Detector:
    return Detector(burst_gap_s=0.15)


async def capture_while(
    port: PtyPort,
    meter: Callable[[], Coroutine[Any, Any, None]],
    *,
    settings: LineSettings | None = None,
    duration_s: float = 20.0,
    stop_when: Callable[[RecordingConsole], bool] = lambda c: False,
    during: Callable[[RecordingConsole], Awaitable[None]] | None = None,
    send: bytes = b"",
    lang: str = "en",
) -> tuple[CaptureResult, Capture, RecordingConsole]:
    out = io.StringIO()
    writer = CaptureWriter(out, port=port.tty_path, started=STARTED)
    console = RecordingConsole()
    done = threading.Event()
    options = CaptureOptions(
        port=port.tty_path,
        file="capture.txt",
        settings=settings,
        duration_s=duration_s,
        send=send,
        status_every_s=1.0,
        lang="en" if lang == "en" else "pt-BR",
        make_detector=fast_detector,
    )
    serial_port = SerialCapturePort(port.tty_path)

    def work() -> CaptureResult:
        try:
            return run_capture(
                serial_port, writer, console, options, stop=lambda: stop_when(console)
            )
        finally:
            serial_port.close()
            done.set()

    job = asyncio.create_task(asyncio.to_thread(work))
    await asyncio.sleep(0.3)  # the port is open before the meter prints
    printing = asyncio.create_task(meter())
    if during is not None:
        await during(console)
    try:
        result = await job
    finally:
        printing.cancel()
    return result, parse_capture(out.getvalue().encode()), console


def recorded_lines(console: RecordingConsole) -> int:
    return sum(1 for line in console.text_lines if line.startswith("Umidade"))


@pytest.mark.parametrize(
    ("meter", "reason"),
    [("38400 8N1", "clean"), ("4800 7E1", "port-refused"), ("1200 7O1", "port-refused")],
)
async def test_detects_records_and_proposes(meter: str, reason: str) -> None:
    with uart_pty(meter) as port:
        sim = TicketMeterSim(port, interval_s=0.4, seed=1, product="CAFE")
        result, capture, console = await capture_while(
            port, sim.run, stop_when=lambda c: recorded_lines(c) >= 5
        )
    wanted = LineSettings.parse(meter)
    assert result.decision is not None
    assert result.decision.settings == wanted
    assert result.decision.reason == reason
    assert result.reason == "stopped"
    assert capture.complete
    assert capture.serial == wanted
    assert any("Press PRINT" in line for line in console.status_lines)
    assert any(line.startswith("Settings found: " + meter) for line in console.status_lines)
    proposal = propose(capture)
    assert isinstance(proposal, Proposal)
    assert proposal.driver == "moisture.ticket"
    values = [m.fields["moisture_pct"] for m in proposal.check.readings]
    sent = [s.moisture_pct for s in sim.sent]
    assert values
    assert all(v in sent for v in values)
    assert len(values) >= 4


async def test_8e1_meter_on_a_pty_is_found_though_bytes_are_lost() -> None:
    with uart_pty("19200 8E1") as port:
        sim = TicketMeterSim(port, interval_s=0.4, seed=2)
        result, capture, _ = await capture_while(
            port, sim.run, stop_when=lambda c: len(c.text_lines) >= 8
        )
    assert result.decision is not None
    assert result.decision.settings == LineSettings(19200, 8, "E", 1)
    assert any("were lost" in w for w in capture.warnings)


async def test_port_pulled_mid_capture_keeps_the_partial_capture() -> None:
    with uart_pty("9600 8N1") as port:
        sim = TicketMeterSim(port, interval_s=0.3, seed=3)

        async def pull(console: RecordingConsole) -> None:
            while recorded_lines(console) < 3:
                await asyncio.sleep(0.05)
            port.unplug()

        result, capture, _console = await capture_while(port, sim.run, during=pull)
    assert result.reason == "port-lost"
    assert result.error is not None
    assert capture.end_reason == "port-lost"
    assert not capture.warnings
    assert result.recorded_bytes == len(capture.recorded_bytes()) > 0
    assert isinstance(propose(capture), Proposal)


async def test_settings_given_by_hand_skip_detection() -> None:
    with uart_pty("2400 8N1") as port:
        sim = TicketMeterSim(port, interval_s=0.3, seed=4)
        result, capture, console = await capture_while(
            port,
            sim.run,
            settings=LineSettings(2400),
            stop_when=lambda c: recorded_lines(c) >= 2,
            lang="pt-BR",
        )
    assert result.decision is None
    assert result.settings == LineSettings(2400)
    assert [c.listen for c in capture.chunks] == [LineSettings(2400)] * len(capture.chunks)
    assert all(c.recording for c in capture.chunks)
    assert console.status_lines[0].startswith("Gravando em capture.txt a 2400 8N1")


async def test_wrong_settings_by_hand_are_warned_about() -> None:
    with uart_pty("9600 8N1") as port:
        sim = TicketMeterSim(port, interval_s=0.2, seed=5)
        _, _, console = await capture_while(
            port, sim.run, settings=LineSettings(4800), duration_s=2.5
        )
    assert any("do not look like text" in line for line in console.status_lines)


async def test_nothing_is_written_unless_asked_and_send_is_recorded() -> None:
    port = PtyPort()
    port.open()
    try:
        balance = MtSicsBalanceSim(port, capacity_kg=5.0, sir_rate_hz=10.0)
        balance.load(1.25)
        balance.settle()
        result, capture, _ = await capture_while(
            port,
            balance.run,
            settings=LineSettings(9600),
            send=b"SIR\r\n",
            duration_s=1.5,
        )
        assert [c.data for c in capture.chunks if c.sent] == [b"SIR\r\n"]
        assert b"S S" in capture.recorded_bytes()
        proposal = propose(capture)
        assert isinstance(proposal, Proposal)
        assert proposal.driver == "scale.mtsics"
        # Without --send the same capture writes nothing at all to the meter.
        sim = TicketMeterSim(port, interval_s=0.3, seed=6)
        await capture_while(port, sim.run, settings=LineSettings(9600), duration_s=1.0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await port.read()
    finally:
        port.close()
    assert result.reason == "duration"


async def test_a_port_that_refuses_the_settings_or_is_missing() -> None:
    port = PtyPort()
    port.open()
    try:
        with pytest.raises(SettingsRefused):
            await capture_while(port, _idle, settings=LineSettings(9600, 7, "E", 1))
    finally:
        port.close()
    missing = SerialCapturePort("/dev/does-not-exist")
    with pytest.raises(PortError, match="cannot open"):
        missing.configure(LineSettings())


async def _idle() -> None:
    await asyncio.sleep(3600)

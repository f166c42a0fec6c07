"""Detection of baud rate and character format, by listening as a UART would.

The meter's bytes go through ``simulators.uart``: turned into bits at the meter's
settings and sampled at the settings the detector listens at, so every wrong guess
hears what a real port would (framing errors as NUL, bit 7 carrying parity...).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.onboard.detect import (
    Decided,
    Detector,
    Listening,
    Sampled,
    assess,
    text_quality,
)
from coffee_telemetry.agent.onboard.lineformat import BAUDRATES, LineSettings
from coffee_telemetry.drivers.moisture_tesma import encode_frame as tesma_frame
from coffee_telemetry.drivers.moisture_ticket import encode_ticket
from coffee_telemetry.drivers.scale_toledo import encode_frame as toledo_frame
from coffee_telemetry.simulators.uart import UartFormat, receive, to_bits

TICKET = encode_ticket(
    moisture_pct=11.8,
    product="CAFE",
    temperature_c=24.6,
    bulk_density_kg_hl=38.2,
    sample_id="0042",
    meter_time="12/05/2025 14:03",
)


def heard(
    data: bytes, meter: UartFormat, listen: LineSettings, *, ber: float, rng: random.Random
) -> bytes:
    bits = to_bits(data, meter)
    for i in range(2, len(bits)):
        if rng.random() < ber:
            bits[i] ^= 1
    rx = UartFormat(listen.baudrate, listen.bytesize, listen.parity, listen.stopbits)
    return receive(bits, sender_baud=meter.baudrate, rx=rx)


def detect(
    burst: bytes,
    meter: str,
    *,
    ber: float = 0.0,
    refuses_parity: bool = False,
    presses: int = 40,
    seed: int = 0,
) -> tuple[Detector, int]:
    """Press PRINT until the detector decides; returns it and the presses it took."""
    fmt = UartFormat.parse(meter)
    rng = random.Random(seed)
    detector = Detector()
    now = 0.0
    for press in range(1, presses + 1):
        listen = detector.listen_at
        detector.receive_data(heard(burst, fmt, listen, ber=ber, rng=rng), now)
        now += 1.0
        detector.tick(now)
        for event in detector.events():
            if isinstance(event, Listening) and event.confirming and refuses_parity:
                detector.port_refused()
        if detector.done:
            return detector, press
        now += 3.0
    return detector, presses


@pytest.mark.parametrize("baud", BAUDRATES)
@pytest.mark.parametrize("meter_format", ["8N1", "7E1", "8E1", "7O1", "8O1"])
def test_right_settings_are_picked(baud: int, meter_format: str) -> None:
    detector, presses = detect(TICKET, f"{baud} {meter_format}")
    decision = detector.decision
    assert decision is not None
    assert decision.settings == LineSettings.parse(f"{baud} {meter_format}")
    assert decision.confidence >= 0.9
    assert presses <= 12
    expected_reason = "clean" if meter_format == "8N1" else "confirmed"
    assert decision.reason == expected_reason


@pytest.mark.parametrize("meter", ["1200 7E1", "9600 8N1", "57600 8E1", "115200 7E1"])
def test_line_noise_does_not_mislead(meter: str) -> None:
    detector, _ = detect(TICKET, meter, ber=0.002, seed=7)
    assert detector.decision is not None
    assert detector.decision.settings == LineSettings.parse(meter)


@pytest.mark.parametrize("meter", ["4800 7E1", "19200 8E1", "38400 7O1"])
def test_port_refusing_parity_keeps_the_inference(meter: str) -> None:
    # A pseudo-terminal (or an adapter without parity) cannot confirm at 7E1/8E1.
    detector, _ = detect(TICKET, meter, refuses_parity=True)
    decision = detector.decision
    assert decision is not None
    assert decision.settings == LineSettings.parse(meter)
    assert decision.reason == "port-refused"
    assert 0.8 <= decision.confidence < 0.96


@pytest.mark.parametrize(
    ("name", "burst"),
    [
        ("tesma frames", tesma_frame("MAIZ", 14.4) * 3),
        ("toledo frames", b"".join(toledo_frame(w, 0.0) for w in (10.0, 20.5, 31.25, 4.0))),
    ],
)
def test_framed_protocols_are_detected_too(name: str, burst: bytes) -> None:
    detector, _ = detect(burst, "2400 7E1")
    assert detector.decision is not None
    assert detector.decision.settings == LineSettings(2400, 7, "E", 1), name


def test_random_noise_cannot_tell() -> None:
    rng = random.Random(3)
    detector = Detector()
    now = 0.0
    while not detector.done:
        detector.receive_data(bytes(rng.randrange(256) for _ in range(200)), now)
        now += 5.0
        detector.tick(now)
    decision = detector.decision
    assert decision is not None
    assert decision.settings is None
    assert decision.reason == "garbage"
    assert decision.confidence == 0.0
    samples = [e for e in detector.events() if isinstance(e, Sampled)]
    assert all(s.assessment.verdict == "garbage" for s in samples)


def test_silence_cannot_tell() -> None:
    detector = Detector()
    detector.tick(100.0)
    decision = detector.give_up()
    assert decision.settings is None
    assert decision.reason == "silence"
    assert isinstance(detector.events()[-1], Decided)


def test_too_few_bytes_is_ambiguous_not_a_guess() -> None:
    detector = Detector()
    detector.receive_data(b"OK\r\n", 0.0)  # four bytes: 8N1 and 7E1 alike
    detector.tick(1.0)
    assert not detector.done
    decision = detector.give_up()
    assert decision.settings is None
    assert decision.reason == "ambiguous"


def test_a_wrong_baud_rate_is_garbage_and_the_next_one_is_tried() -> None:
    detector = Detector()
    fmt = UartFormat.parse("19200 8N1")
    detector.receive_data(heard(TICKET, fmt, LineSettings(9600), ber=0, rng=random.Random()), 0.0)
    detector.tick(1.0)
    events = detector.events()
    sampled = [e for e in events if isinstance(e, Sampled)]
    assert sampled
    assert sampled[0].assessment.verdict == "garbage"
    assert sampled[0].assessment.errors > 0
    assert detector.listen_at == LineSettings(19200)


def test_assessment_explains_7e1_at_8n1() -> None:
    found = assess(
        heard(TICKET, UartFormat.parse("9600 7E1"), LineSettings(9600), ber=0, rng=random.Random()),
        9600,
    )
    assert found.verdict == "clean"
    assert found.settings.format == "7E1"
    assert found.consistency == 1.0
    assert found.quality > 0.95
    assert found.runner_up[1] < 0.8


def test_text_quality() -> None:
    assert text_quality(TICKET) == 1.0
    assert text_quality(b"") == 0.0
    assert text_quality(bytes(range(0x80, 0x100)) * 2) < 0.5
    assert text_quality(b"Gr\xe3o: Caf\xe9 ar\xe1bica\r\nUmidade: 11,8 %\r\n") == 1.0


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.tuples(st.binary(max_size=300), st.floats(0, 5)), max_size=30))
def test_any_bytes_never_raise_and_always_end(chunks: list[tuple[bytes, float]]) -> None:
    detector = Detector()
    now = 0.0
    for data, pause in chunks:
        detector.receive_data(data, now)
        now += pause
        detector.tick(now)
        assert detector.listen_at.baudrate in BAUDRATES
    decision = detector.give_up()
    assert decision.settings is None or decision.confidence > 0
    assert 0.0 <= decision.confidence <= 1.0

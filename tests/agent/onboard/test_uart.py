"""The UART line emulation the detection tests rely on."""

from __future__ import annotations

from coffee_telemetry.simulators.uart import UartFormat, receive, to_bits

TEXT = b"Umidade: 11,8 %\r\n"


def hear(data: bytes, meter: str, port: str, *, check_parity: bool = False) -> bytes:
    tx, rx = UartFormat.parse(meter), UartFormat.parse(port)
    return receive(to_bits(data, tx), sender_baud=tx.baudrate, rx=rx, check_parity=check_parity)


def test_same_settings_pass_bytes_unchanged() -> None:
    assert hear(bytes(range(256)), "9600 8N1", "9600 8N1") == bytes(range(256))
    assert hear(TEXT, "4800 7E1", "4800 7E1") == TEXT
    assert hear(TEXT, "1200 8O1", "1200 8O1", check_parity=True) == TEXT


def test_seven_bits_with_parity_heard_at_8n1_carry_parity_in_bit_7() -> None:
    got = hear(TEXT, "9600 7E1", "9600 8N1")
    assert bytes(b & 0x7F for b in got) == TEXT
    assert all(bin(b).count("1") % 2 == 0 for b in got)


def test_eight_bits_with_parity_heard_at_8n1_lose_the_even_bytes() -> None:
    got = hear(TEXT, "9600 8E1", "9600 8N1")
    assert len(got) == len(TEXT)
    for sent, came in zip(TEXT, got, strict=True):
        odd = bin(sent).count("1") % 2 == 1
        assert came == (sent if odd else 0)  # parity 0 lands on the stop bit


def test_parity_errors_are_nul_only_when_checked() -> None:
    assert hear(TEXT, "9600 7O1", "9600 7E1") == TEXT  # INPCK off: not checked
    assert set(hear(TEXT, "9600 7O1", "9600 7E1", check_parity=True)) == {0}


def test_wrong_baud_rate_is_garbage_with_framing_errors() -> None:
    for port in ("4800 8N1", "19200 8N1", "1200 8N1", "115200 8N1"):
        got = hear(TEXT * 4, "9600 8N1", port)
        assert got != TEXT * 4
        assert 0 in got

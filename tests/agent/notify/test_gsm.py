"""GSM PDUs and the AT stream, checked against an independent decoder (smspdudecoder)."""

from __future__ import annotations

from io import StringIO

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smspdudecoder.fields import SMSSubmit

from coffee_telemetry.agent.notify.gsm import (
    GSM7_BASIC,
    GSM7_EXT,
    AtParser,
    Discarded,
    Final,
    Incoming,
    Line,
    Prompt,
    StatusReport,
    Unsolicited,
    decode_pdu,
    encode_submit,
)
from coffee_telemetry.simulators.modem import encode_deliver, encode_status_report


def decoded(pdus: list[tuple[int, str]]) -> tuple[str, list[object], str]:
    """Text, concatenation headers and recipient, as smspdudecoder reads the parts."""
    text, headers, recipient = "", [], ""
    for length, pdu in pdus:
        assert length == len(pdu) // 2 - 1  # AT+CMGS counts the TPDU, not the SMSC octet
        sms = SMSSubmit.decode(StringIO(pdu))
        text += sms["user_data"]["data"]
        headers.append(sms["user_data"].get("header"))
        recipient = "+" + sms["recipient"]["number"]
    return text, headers, recipient


def test_portuguese_needs_ucs2_and_splits_in_two_parts() -> None:
    text = (
        "[CRÍTICO] Lote úmido: L-0042\nLote L-0042 úmido: média 13,4 % (limite 12,5 %)"
        "\nResponda 123456 para reconhecer."
    )
    pdus = encode_submit("+5535999990001", text, reference=0x2A)
    assert len(pdus) == 2
    assert all(pdu[2:4] == "71" for _, pdu in pdus)  # SUBMIT, VP, report asked, UDH
    assert all(pdu[0:2] == "00" for _, pdu in pdus)
    got, headers, recipient = decoded(pdus)
    assert got == text
    assert recipient == "+5535999990001"
    parts = [h["elements"][0]["data"] for h in headers]  # type: ignore[index]
    assert parts == [
        {"reference": 0x2A, "parts_count": 2, "part_number": 1},
        {"reference": 0x2A, "parts_count": 2, "part_number": 2},
    ]


def test_plain_text_is_gsm7_in_one_part_up_to_160() -> None:
    text = "Wet lot L-42: mean 13.4 % {limit 12.5} costs 5 €" + "x" * 110
    assert len(text) + 3 == 161  # {, } and € take two septets each: 161 septets
    [(length, pdu)] = encode_submit("+5535999990001", text[:-1], reference=1)
    assert decoded([(length, pdu)])[0] == text[:-1]
    assert len(encode_submit("+5535999990001", text, reference=1)) == 2


@given(
    text=st.text(
        alphabet=st.sampled_from(sorted(set(GSM7_BASIC) - {"\x1b", "\r"} | set(GSM7_EXT.values()))),
        min_size=1,
        max_size=700,
    ),
    reference=st.integers(0, 255),
)
def test_any_gsm7_text_round_trips_through_an_independent_decoder(
    text: str, reference: int
) -> None:
    got, _, _ = decoded(encode_submit("+5535999990001", text, reference=reference))
    # 7 spare bits at a part's end hold CR, which a decoder that ignores UDL shows.
    assert got.replace("\r", "") == text


@given(text=st.text(min_size=1, max_size=500).filter(lambda t: "\r" not in t))
def test_any_unicode_text_round_trips(text: str) -> None:
    pdus = encode_submit("+5535999990001", text, reference=3)
    got, _, _ = decoded(pdus)
    assert got.replace("\r", "") == text  # CR: the 7-bit padding, as above


@pytest.mark.parametrize("number", ["", "+", "+55 35", "abc", "+" + "1" * 21])
def test_numbers_that_are_not_numbers_are_refused(number: str) -> None:
    with pytest.raises(ValueError, match="phone number"):
        encode_submit(number, "x", reference=0)


@pytest.mark.parametrize("text", ["OK 123456", "Ok, recebido 123456 ✓", "123456"])
def test_replies_decode(text: str) -> None:
    assert decode_pdu(encode_deliver("+5535999990001", text)) == Incoming("+5535999990001", text)


def test_status_reports_decode() -> None:
    report = decode_pdu(encode_status_report(7, "+5535999990001", 0))
    assert report == StatusReport(reference=7, recipient="+5535999990001", status=0)
    assert isinstance(report, StatusReport)
    assert report.delivered
    failed = decode_pdu(encode_status_report(8, "+5535999990001", 0x41))
    assert isinstance(failed, StatusReport)
    assert not failed.delivered


@given(st.text(alphabet="0123456789ABCDEF", max_size=400))
def test_any_hex_is_a_message_or_discarded_never_an_exception(pdu: str) -> None:
    assert isinstance(decode_pdu(pdu), Incoming | StatusReport | Discarded)


@given(st.text(max_size=400))
def test_any_text_is_a_message_or_discarded(pdu: str) -> None:
    assert isinstance(decode_pdu(pdu), Incoming | StatusReport | Discarded)


def test_the_at_stream_sorted() -> None:
    parser = AtParser()
    parser.receive_data(b"ATE0\r\r\nOK\r\n\r\n+CSQ: 21,99\r\n\r\nOK\r\n\r\n> ")
    parser.receive_data(b'\r\n+CMTI: "SM",3\r\n\r\n+CDS: 25\r\n0006070D91')
    assert parser.events() == [
        Final(ok=True, text="OK"),
        Line("+CSQ: 21,99"),
        Final(ok=True, text="OK"),
        Prompt(),
        Unsolicited('+CMTI: "SM",3'),
    ]
    parser.receive_data(b"\r\n\r\n+CMS ERROR: 331\r\n+CME ERROR: SIM busy\r\n")
    assert parser.events() == [
        Unsolicited("+CDS: 25", pdu="0006070D91"),
        Final(ok=False, text="+CMS ERROR: 331", cms=331),
        Final(ok=False, text="+CME ERROR: SIM busy", cme=-1),
    ]


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_bytes_in_any_chunks_never_raise(chunks: list[bytes]) -> None:
    parser = AtParser()
    for chunk in chunks:
        parser.receive_data(chunk)
        parser.events()


@given(st.binary(max_size=3000))
def test_chunking_does_not_change_the_events(data: bytes) -> None:
    whole, bytewise = AtParser(), AtParser()
    whole.receive_data(data)
    for i in range(len(data)):
        bytewise.receive_data(data[i : i + 1])
    # A lone ">" is held back until the next byte says whether it is the prompt.
    assert [e for e in whole.events() if not isinstance(e, Discarded)] == [
        e for e in bytewise.events() if not isinstance(e, Discarded)
    ]

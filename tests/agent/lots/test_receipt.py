"""A lot's intake receipt: validation, the store, the command, weights from the scale."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.commands import CommandBoundary, CommandRate
from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.lots.model import LotReceipt
from coffee_telemetry.agent.lots.receipt import (
    RECEIPT_COMMAND,
    handle_receipt_command,
    parse_receipt,
    receipt_doc,
    set_receipt,
)
from coffee_telemetry.agent.lots.records import LotQuery, LotRecords, open_lot_records
from tests.agent.lots.test_records import T0, weighment


@pytest.fixture
def records(tmp_path: Path) -> Iterator[LotRecords]:
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    yield store
    store.close()


FULL = {
    "member": "M-1234",
    "invoice": "000.123.456-1",
    "sacks": 42,
    "gross_kg": 2580.5,
    "net_kg": 2520.0,
    "stack": "Pilha 3 / Fila B",
}


def test_parse_receipt_accepts_the_form() -> None:
    assert parse_receipt({**FULL, "by": "ana"}).values == FULL
    assert parse_receipt({"stack": "Armazém 2 #14"}).values == {"stack": "Armazém 2 #14"}
    assert parse_receipt({"member": "", "sacks": None}).values == {"member": None, "sacks": None}
    key = "3519 1234 5678 9012 3456 7890 1234 5678 9012 3456 7890"
    assert parse_receipt({"invoice": key}).values == {"invoice": key}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "nothing to change"),
        ({"owner": "x"}, "unknown key 'owner'"),
        ({"member": "<b>M</b>"}, "member may only use letters, digits and - _ . /"),
        ({"member": "M 12"}, "member may only use"),
        ({"member": "M" * 33}, "member is longer than 32"),
        ({"member": 12}, "member must be text"),
        ({"invoice": "NF 123"}, "invoice may only use digits"),
        ({"invoice": "123<script>"}, "invoice may only use digits"),
        ({"stack": "A1 <img src=x onerror=alert(1)>"}, "stack may only use letters"),
        ({"stack": "A&B"}, "stack may only use"),
        ({"stack": 'A"1'}, "stack may only use"),
        ({"stack": "A\u202e1"}, "stack may only use"),
        ({"stack": "P" * 41}, "stack is longer than 40"),
        ({"sacks": -1}, "sacks must be a whole number"),
        ({"sacks": 1.5}, "sacks must be a whole number"),
        ({"sacks": True}, "sacks must be a whole number"),
        ({"gross_kg": "10"}, "gross_kg must be a number"),
        ({"gross_kg": float("nan")}, "between 0 and"),
        ({"net_kg": -0.5}, "between 0 and"),
        ({"gross_kg": 10, "net_kg": 11}, "net_kg may not be above gross_kg"),
    ],
)
def test_parse_receipt_refuses(doc: dict[str, object], message: str) -> None:
    with pytest.raises(LotError, match=message):
        parse_receipt(doc)


_VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=80)
    | st.lists(st.integers(), max_size=2)
)


@settings(max_examples=400)
@given(st.dictionaries(st.sampled_from([*FULL, "by", "x"]), _VALUES))
def test_parse_receipt_fuzz(doc: dict[str, object]) -> None:
    """Any payload is a bounded change or a LotError; no markup or control character passes."""
    try:
        change = parse_receipt(doc)
    except LotError as exc:
        refusal = str(exc)
        assert refusal
        return
    for key, value in change.values.items():
        if isinstance(value, str):
            assert not any(ch in value for ch in "<>&\"'\x00\n\r\t")
            assert value == value.strip()
            assert len(value) <= 60
        elif isinstance(value, float):
            assert 0 <= value <= 1_000_000
        elif isinstance(value, int):
            assert key == "sacks"
            assert 0 <= value <= 100_000


def test_receipt_in_the_record(records: LotRecords) -> None:
    receipt = set_receipt(records, "L-0042", parse_receipt(FULL), by="ana", source="cli", at_ns=T0)
    assert receipt == LotReceipt(
        member="M-1234",
        invoice="000.123.456-1",
        sacks=42,
        gross_kg=2580.5,
        net_kg=2520.0,
        weight_source="entered",
        stack="Pilha 3 / Fila B",
        updated_by="ana",
        updated_ns=T0,
    )
    record = records.record("L-0042")
    assert record is not None
    assert record.receipt == receipt
    assert [(e.kind, e.data["sacks"]) for e in record.events] == [("receipt", 42)]
    # Only the keys given change; a net weight above the stored gross is refused.
    set_receipt(records, "L-0042", parse_receipt({"stack": "B-2"}), by="jo", source="cli", at_ns=T0)
    with pytest.raises(LotError, match="net_kg may not be above gross_kg"):
        set_receipt(
            records, "L-0042", parse_receipt({"net_kg": 3000}), by="jo", source="cli", at_ns=T0
        )
    record = records.record("L-0042")
    assert record is not None
    assert record.receipt is not None
    assert (record.receipt.stack, record.receipt.net_kg, record.receipt.updated_by) == (
        "B-2",
        2520.0,
        "jo",
    )
    assert len(record.events) == 2


def test_weights_from_the_scale(records: LotRecords) -> None:
    records.write([weighment(1, 1000.0), weighment(2, 500.0, net=True)])
    set_receipt(records, "L-0042", parse_receipt({"sacks": 25}), by="ana", source="cli", at_ns=T0)
    record = records.record("L-0042")
    assert record is not None
    assert record.receipt is not None
    # Gross display 1000 (tare 10): net 990; net display 500 (tare 10): gross 510.
    assert (record.receipt.gross_kg, record.receipt.net_kg) == (1510.0, 1490.0)
    assert record.receipt.weight_source == "scale"
    doc = receipt_doc(record.receipt)
    assert doc is not None
    assert doc["weight_source"] == "scale"
    # Entered weights win over the scale's.
    set_receipt(
        records, "L-0042", parse_receipt({"gross_kg": 1520, "net_kg": 1500}), by="ana",
        source="cli", at_ns=T0,
    )  # fmt: skip
    record = records.record("L-0042")
    assert record is not None
    assert record.receipt is not None
    assert (record.receipt.net_kg, record.receipt.weight_source) == (1500.0, "entered")


async def test_receipt_command(tmp_path: Path) -> None:
    async with open_lot_records(tmp_path / "r.sqlite3", clock_ns=lambda: T0) as records:

        async def handler(cmd):  # type: ignore[no-untyped-def]
            return await handle_receipt_command(records, cmd)

        boundary = CommandBoundary({RECEIPT_COMMAND: handler})
        reply = await boundary.submit(
            (RECEIPT_COMMAND, "L-0042"), json.dumps({**FULL, "by": "ana"}).encode(), source="mqtt"
        )
        assert reply.ok
        assert reply.doc["lot"] == "L-0042"
        assert reply.doc["receipt"]["member"] == "M-1234"  # type: ignore[index]
        bad = await boundary.submit(
            (RECEIPT_COMMAND, "L-0043"), b'{"member": "<script>"}', source="mqtt"
        )
        assert bad.doc["ok"] is False
        assert "member may only use" in str(bad.doc["error"])
        assert await records.record("L-0043") is None


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(code=st.text(max_size=40), payload=st.binary(max_size=400) | st.builds(
    lambda d: json.dumps(d).encode(),
    st.dictionaries(st.sampled_from([*FULL, "by"]), _VALUES),
))  # fmt: skip
def test_receipt_command_fuzz(
    tmp_path_factory: pytest.TempPathFactory, code: str, payload: bytes
) -> None:
    """Random topics and payloads: a reply, never a failure; a refusal writes nothing."""
    path = tmp_path_factory.mktemp("fuzz") / "r.sqlite3"

    async def run() -> None:
        async with open_lot_records(path, clock_ns=lambda: T0) as records:

            async def handler(cmd):  # type: ignore[no-untyped-def]
                return await handle_receipt_command(records, cmd)

            rate = CommandRate(burst=10**6, per_s=10**6)
            boundary = CommandBoundary({RECEIPT_COMMAND: handler}, rate=rate)
            reply = await boundary.submit((RECEIPT_COMMAND, code), payload, source="mqtt")
            assert not reply.failed
            if not reply.ok:
                assert (await records.search(LotQuery()))[1] == 0

    asyncio.run(run())

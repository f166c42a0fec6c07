"""Lot details through the command boundary and the CLI: clear refusals, nothing written on one."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.commands import MAX_COMMAND_BYTES, CommandBoundary, CommandRate
from coffee_telemetry.agent.lots.model import PRODUCT_TYPES
from coffee_telemetry.agent.lots.records import (
    DETAILS_COMMAND,
    AsyncLotRecords,
    LotQuery,
    LotRecords,
    open_lot_records,
    parse_details,
)
from coffee_telemetry.agent.sqlite import StoreThread
from tests.agent.lots.test_service import site_file


async def submit(
    records: AsyncLotRecords, code: str, payload: bytes, *, source: str = "mqtt"
) -> dict[str, object]:
    boundary = CommandBoundary({DETAILS_COMMAND: records.handle_command})
    reply = await boundary.submit((DETAILS_COMMAND, code), payload, source=source)
    return dict(reply.doc)


async def test_details_by_command(tmp_path: Path) -> None:
    async with open_lot_records(tmp_path / "r.sqlite3") as records:
        doc = await submit(
            records,
            "L-0042/B",
            json.dumps(
                {"producer": "Sítio Boa Vista", "bags": 42, "product_type": "coco", "by": "ana"}
            ).encode(),
        )
        assert doc == {
            "ok": True,
            "lot": "L-0042/B",
            "details": {
                "producer": "Sítio Boa Vista",
                "bags": 42,
                "product_type": "coco",
                "note": None,
                "updated_by": "ana",
                "updated_ns": doc["details"]["updated_ns"],  # type: ignore[index]
            },
        }
        record = await records.record("L-0042/B")
        assert record is not None
        assert [(e.kind, e.by, e.source) for e in record.events] == [("details", "ana", "mqtt")]


@pytest.mark.parametrize(
    ("code", "payload", "error"),
    [
        ("L-1", b'{"producer": "' + b"x" * 201 + b'"}', "longer than 200"),
        ("L-1", b'{"note": "a\\u0000b"}', "control character"),
        ("L-1", b'{"bags": -3}', "whole number"),
        ("L-1", b'{"product_type": "robusta"}', "product_type must be one of"),
        ("L-1", b"{}", "nothing to change"),
        ("L-1", b'{"producer": "x", "by": ""}', '"by" is empty'),
        ("<script>", b'{"producer": "x"}', "lot code may only use"),
        ("L-1", b"[1]", "JSON object"),
        ("L-1", b'{"note": "' + b"n" * MAX_COMMAND_BYTES + b'"}', "payload over"),
    ],
)
async def test_refused_details_write_nothing(
    tmp_path: Path, code: str, payload: bytes, error: str
) -> None:
    async with open_lot_records(tmp_path / "r.sqlite3") as records:
        before = records.sync.connection.total_changes
        doc = await submit(records, code, payload)
        assert doc["ok"] is False
        assert error in str(doc["error"])
        assert records.sync.connection.total_changes == before
        assert (await records.search(LotQuery()))[1] == 0


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=260)
    | st.sampled_from([*PRODUCT_TYPES, "Sítio Boa Vista", "\u202e<script>", "\x00", "😀" * 60]),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(["producer", "bags", "product_type", "note", "by", "lot", "x"]),
            c,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    code=st.text(max_size=60) | st.sampled_from(["L-0042", "L/1", "a" * 33, "L-1%2F"]),
    payload=st.binary(max_size=MAX_COMMAND_BYTES + 50)
    | _json.map(lambda v: json.dumps(v, allow_nan=True).encode()),
)
def test_fuzz_details_boundary(code: str, payload: bytes) -> None:
    """Any code and any payload: an ``ok`` reply that wrote exactly one event, or nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        store = LotRecords.open(Path(tmp) / "r.sqlite3")
        thread = StoreThread("fuzz")
        try:
            records = AsyncLotRecords(store, thread)
            boundary = CommandBoundary(
                {DETAILS_COMMAND: records.handle_command}, rate=CommandRate(burst=10**6)
            )
            before = store.connection.total_changes
            reply = asyncio.run(boundary.submit((DETAILS_COMMAND, code), payload, source="mqtt"))
            assert not reply.failed, reply.doc
            rows = store.connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            if reply.ok:
                assert rows == 1
                record = store.record(str(reply.doc["lot"]))
                assert record is not None
                change = parse_details(json.loads(payload))
                for key, value in change.values.items():
                    assert getattr(record.details, key) == value
            else:
                assert store.connection.total_changes == before
                assert rows == 0
                assert isinstance(reply.doc["error"], str)
                assert reply.doc["error"]
        finally:
            thread.shutdown()
            store.close()


def test_lot_info_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = str(site_file(tmp_path))
    args = ["lot", "info", "-c", site, "L-0042", "--producer", "Sítio Boa Vista", "--bags", "42"]
    assert main([*args, "--product-type", "pergaminho", "--note", "chuva", "--by", "ana"]) == 0
    assert "producer=Sítio Boa Vista, bags=42, product_type=pergaminho, note=chuva" in (
        capsys.readouterr().out
    )
    assert main(["lot", "info", "-c", site, "L-0042", "--note", ""]) == 0
    capsys.readouterr()
    assert main(["lot", "info", "-c", site, "L-0042", "--producer", "x" * 201]) == 2
    assert "longer than 200 characters; nothing was written" in capsys.readouterr().err
    assert main(["lot", "info", "-c", site, "L 42;x", "--bags", "1"]) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert main(["lot", "info", "-c", site, "L-0042"]) == 0
    out = capsys.readouterr().out
    assert "producer=Sítio Boa Vista, bags=42, product_type=pergaminho, note=-" in out
    assert main(["lot", "info", "-c", site, "L-9999"]) == 1
    assert "unknown lot 'L-9999'" in capsys.readouterr().err
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    try:
        record = store.record("L-0042")
    finally:
        store.close()
    assert record is not None
    assert [(e.kind, e.source) for e in record.events] == [("details", "cli"), ("details", "cli")]
    assert record.details.updated_by != "ana"  # the second change was by the login name

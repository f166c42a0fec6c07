"""Active lots: store, MQTT command handling, CLI; bad input refused, nothing written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.commands import MAX_COMMAND_BYTES, CommandBoundary, Outgoing
from coffee_telemetry.agent.lots.service import LotService
from coffee_telemetry.agent.lots.store import LotError, LotStore
from coffee_telemetry.agent.readings import Reading, Stamper
from tests.fakes import stage


class Recorder:
    def __init__(self) -> None:
        self.accepted: list[Reading] = []
        self.states: list[Outgoing] = []

    async def accept(self, readings: Sequence[Reading]) -> None:
        self.accepted.extend(readings)


def service(tmp_path: Path) -> tuple[LotService, LotStore, Recorder]:
    store = LotStore.open(tmp_path / "lots.sqlite3")
    rec = Recorder()
    svc = LotService(
        store=store,
        stations={"recepcao", "armazem"},
        site="s1",
        record=stage(rec.accept, Stamper(clock_ns=lambda: 1_000)).record,
        publish_state=rec.states.append,
        clock_ns=lambda: 5_000,
    )
    return svc, store, rec


async def command(svc: LotService, rest: str, payload: bytes) -> list[Outgoing]:
    """``payload`` on ``cmd/<rest>`` through the command boundary, as MQTT delivers it."""
    return await CommandBoundary({"lot": svc.handle_command}).submit_topic(
        rest, payload, source="mqtt"
    )


def reply(out: list[Outgoing]) -> tuple[str, dict[str, object]]:
    assert len(out) == 1
    return out[0].topic, json.loads(out[0].payload)


async def test_set_and_clear_by_command(tmp_path: Path) -> None:
    svc, store, rec = service(tmp_path)
    topic, doc = reply(await command(svc, "lot/recepcao", b'{"lot": "L-0042", "by": "maria"}'))
    assert topic == "cmd/lot/recepcao/reply"
    assert doc == {"ok": True, "station": "recepcao", "lot": "L-0042"}
    assert svc.lot_for("recepcao") == "L-0042"
    assert svc.lot_for("armazem") is None
    assert json.loads(rec.states[-1].payload)["lot"] == "L-0042"
    assert rec.states[-1].retain
    event = rec.accepted[-1]
    assert event.measurement == "lot_assignment"
    assert event.kind == "event"
    assert event.fields["lot_code"] == "L-0042"
    assert event.fields["by"] == "maria"
    assert event.tags["lot"] == "L-0042"
    _, doc = reply(await command(svc, "lot/recepcao", b'{"lot": null}'))
    assert doc == {"ok": True, "station": "recepcao", "lot": None}
    assert svc.lot_for("recepcao") is None
    assert rec.accepted[-1].fields["action"] == "clear"
    assert store.unpublished() == []
    store.close()


@pytest.mark.parametrize(
    ("rest", "payload", "reason"),
    [
        ("lot/recepcao", b'{"lot": "L 1,x=2\\nfoo"}', "lot code may only use"),
        ("lot/recepcao", b'{"lot": "<script>alert(1)</script>"}', "lot code"),
        ("lot/recepcao", b'{"lot": ""}', "empty"),
        ("lot/recepcao", b'{"lot": 42}', "string or null"),
        ("lot/recepcao", b"not json", "must be JSON"),
        ("lot/recepcao", b"[1, 2]", "object"),
        ("lot/recepcao", b'{"lot": "L-1", "by": "\\u0000x"}', "printable"),
        ("lot/recepcao", b'{"lot": "L-1", "pad": "' + b"x" * MAX_COMMAND_BYTES + b'"}', "over"),
        ("lot/silo-9", b'{"lot": "L-1"}', "unknown station"),
        ("lot/Bad Station", b'{"lot": "L-1"}', "identifier"),
        ("ack/wet_lot/L-1", b"{}", "unknown command"),
        ("lot", b'{"lot": "L-1"}', "unknown command"),
    ],
)
async def test_bad_commands_are_refused_and_write_nothing(
    tmp_path: Path, rest: str, payload: bytes, reason: str
) -> None:
    svc, store, rec = service(tmp_path)
    _, doc = reply(await command(svc, rest, payload))
    assert doc["ok"] is False
    assert reason in str(doc["error"])
    assert store.active() == {}
    assert store.unpublished() == []
    assert rec.accepted == []
    store.close()


async def test_changes_from_another_process_are_picked_up(tmp_path: Path) -> None:
    svc, store, rec = service(tmp_path)
    await svc.refresh()
    other = LotStore.open(tmp_path / "lots.sqlite3")
    other.set("armazem", "L-0100", by="joao", source="cli", at_ns=7_000)
    other.close()
    await svc.refresh()
    assert svc.lot_for("armazem") == "L-0100"
    assert [r.fields["source"] for r in rec.accepted] == ["cli"]
    # Published once: a second refresh sends nothing new.
    await svc.refresh()
    assert len(rec.accepted) == 1
    store.close()


def test_store_validates_before_writing(tmp_path: Path) -> None:
    store = LotStore.open(tmp_path / "lots.sqlite3")
    with pytest.raises(LotError):
        store.set("recepcao", "L;DROP TABLE", by="x", source="cli", at_ns=1)
    with pytest.raises(LotError):
        store.set("recepcao", "L-1", by="", source="cli", at_ns=1)
    assert store.active() == {}
    assert store.unpublished() == []
    store.close()


def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nid = "s1"\n[agent]\ndata_dir = "{tmp_path}"\n'
        '[[devices]]\nid = "umid-1"\ndriver = "moisture.ticket"\nport = "/dev/x"\n'
        'station = "recepcao"\n'
    )
    return path


def test_lot_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = site_file(tmp_path)
    assert main(["lot", "set", "-c", str(site), "recepcao", "L-7", "--by", "ana"]) == 0
    assert main(["lot", "show", "-c", str(site)]) == 0
    assert "L-7 (by ana, cli)" in capsys.readouterr().out
    assert main(["lot", "set", "-c", str(site), "recepcao", "L 7;x"]) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert main(["lot", "set", "-c", str(site), "silo", "L-8"]) == 2
    assert "unknown station 'silo'" in capsys.readouterr().err
    store = LotStore.open(tmp_path / "lots.sqlite3")
    assert store.active()["recepcao"].lot == "L-7"
    store.close()
    assert main(["lot", "clear", "-c", str(site), "recepcao"]) == 0
    assert "lot cleared" in capsys.readouterr().out

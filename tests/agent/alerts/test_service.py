"""AlertService: readings in, retained states and outbox events out, ack commands."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from coffee_telemetry.agent.alerts.kinds import build_rules
from coffee_telemetry.agent.alerts.service import ALERTS_DEVICE, AlertService
from coffee_telemetry.agent.commands import CommandBoundary, Outgoing
from coffee_telemetry.agent.config import AlertsConfig
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from tests.fakes import stage


def moisture(stamper: Stamper, value: float, lot: str = "L-1") -> Reading:
    return stamper.stamp(
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": value},
        tags={"site": "s1", "device": "umid-1", "station": "recepcao", "lot": lot},
    )


def test_build_rules_follows_config() -> None:
    names = {r.name for r in build_rules(AlertsConfig())}
    assert names == {
        "wet_lot",
        "device_silent",
        "huller_fault",
        "service_due",
        "service_overdue",
        "sink_backlog",
        "humid_storage",
        "calibration_due",
        "meter_disagreement",
    }
    cfg = AlertsConfig.model_validate(
        {
            "wet_lot": {"enabled": False},
            "service": {"enabled": False},
            "humid_storage": {"enabled": False},
            "calibration_due": {"enabled": False},
            "meter_disagreement": {"enabled": False},
        }
    )
    assert {r.name for r in build_rules(cfg)} == {"device_silent", "huller_fault", "sink_backlog"}


async def test_wet_lot_flows_to_state_outbox_and_ack(tmp_path: Path) -> None:
    states: list[Outgoing] = []
    stamper = Stamper()
    clock = [1_700_000_000_000_000_000]
    async with open_outbox(tmp_path / "o.db", sinks=["x"]) as outbox:
        svc = AlertService(
            cfg=AlertsConfig.model_validate({"wet_lot": {"k": 2, "n": 3}}),
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=Health(),
            publish_state=states.append,
            clock_ns=lambda: clock[0],
        )
        for value in (13.0, 13.4):
            svc.on_reading(moisture(stamper, value))
        await svc._flush()
        retained = [m for m in states if m.topic == "alerts/wet_lot/L-1"]
        assert retained
        assert retained[-1].retain
        assert json.loads(retained[-1].payload)["state"] == "firing"
        batch = await outbox.read_batch("x", 100)
        events = [r.reading for r in batch if r.device == ALERTS_DEVICE]
        assert [e.measurement for e in events] == ["alert"]
        assert events[0].kind == "event"
        assert events[0].fields["notify"] is True
        assert (tmp_path / "alerts.json").exists()

        route = functools.partial(
            CommandBoundary({"ack": svc.handle_command}).submit_topic, source="mqtt"
        )
        reply = await route("ack/wet_lot/L-1", b'{"by": "maria"}')
        assert json.loads(reply[0].payload) == {
            "ok": True,
            "rule": "wet_lot",
            "subject": "L-1",
            "by": "maria",
        }
        assert reply[0].topic == "cmd/ack/wet_lot/L-1/reply"
        await svc._flush()
        assert json.loads(states[-1].payload)["state"] == "acknowledged"
        again = await route("ack/wet_lot/L-1", b'{"by": "maria"}')
        assert "no firing alert" in json.loads(again[0].payload)["error"]
        svc.close()  # what run_loop does when the agent stops

    # A new service on the same state file remembers the acknowledged alert.
    async with open_outbox(tmp_path / "o.db", sinks=["x"]) as outbox:
        svc2 = AlertService(
            cfg=AlertsConfig.model_validate({"wet_lot": {"k": 2, "n": 3}}),
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=Health(),
            clock_ns=lambda: clock[0],
        )
        open_alerts = svc2.engine.alerts(clock[0])
        assert [(a.rule, a.subject, a.state.value) for a in open_alerts] == [
            ("wet_lot", "L-1", "acknowledged")
        ]


@pytest.mark.parametrize(
    ("rest", "payload", "error"),
    [
        ("ack/no_rule/L-1", b"{}", "unknown rule"),
        ("ack/wet_lot", b"{}", "expected cmd/ack"),
        ("ack/wet_lot/L-1", b"[1]", "object"),
        ("ack/wet_lot/L-1", b"{oops", "must be JSON"),
        ("ack/wet_lot/L-1", b'{"by": "\\u0007bell"}', "printable"),
        ("ack/wet_lot/L-1", b'{"by": "x", "pad": "' + b"y" * 2000 + b'"}', "over"),
        ("ack/wet_lot/" + "x" * 200, b"{}", "longer than"),
        ("ack/wet_lot/" + "x" * 121, b"{}", "not valid"),
        ("ack/wet_lot/L-1", b"{}", "no firing alert"),
        ("reboot/now", b"{}", "unknown command"),
    ],
)
async def test_bad_ack_commands_change_nothing(
    tmp_path: Path, rest: str, payload: bytes, error: str
) -> None:
    async with open_outbox(tmp_path / "o.db", sinks=["x"]) as outbox:
        svc = AlertService(
            cfg=AlertsConfig(),
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, Stamper()).record,
            outbox=outbox,
            health=Health(),
        )
        route = functools.partial(
            CommandBoundary({"ack": svc.handle_command}).submit_topic, source="mqtt"
        )
        reply = await route(rest, payload)
        doc = json.loads(reply[0].payload)
        assert doc["ok"] is False
        assert error in doc["error"]
        assert svc.engine.alerts(0) == []
        assert outbox.last_id == 0


async def test_recent_alerts_survive_a_restart(tmp_path: Path) -> None:
    stamper = Stamper()
    seen: list[str] = []
    cfg = AlertsConfig.model_validate({"wet_lot": {"k": 1, "n": 1}})
    async with open_outbox(tmp_path / "o.db", sinks=["x"]) as outbox:
        svc = AlertService(
            cfg=cfg,
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=Health(),
            on_alert=lambda doc: seen.append(str(doc["state"])),
        )
        svc.on_reading(moisture(stamper, 14.0, lot="L-1"))
        await svc._flush()
        await CommandBoundary({"ack": svc.handle_command}).submit(
            ("ack", "wet_lot", "L-1"), b'{"by": "ana"}', source="mqtt"
        )
        await svc._flush()
        svc.on_reading(moisture(stamper, 9.0, lot="L-1"))  # the mean falls to 11.5 %
        await svc._flush()
        assert [(a["subject"], a["state"]) for a in svc.recent()] == [
            ("L-1", "resolved"),
            ("L-1", "acknowledged"),
            ("L-1", "firing"),
        ]
        assert seen == ["firing", "acknowledged", "resolved"]
        # Pages switch language: each event carries its message in both.
        for doc in svc.recent():
            messages = doc["messages"]
            assert isinstance(messages, dict)
            assert messages["pt-BR"] == doc["message"]
        resolved, acked, firing = (d["messages"] for d in svc.recent())
        assert isinstance(firing, dict)
        assert isinstance(acked, dict)
        assert isinstance(resolved, dict)
        assert firing["en"].startswith("ALERT — Wet lot: lot L-1 at station recepcao: mean 14.0 %")
        assert acked["en"].startswith("ACKNOWLEDGED by ana — Wet lot")
        assert resolved["en"].startswith("RESOLVED — Wet lot")
        svc.close()
        again = AlertService(
            cfg=cfg,
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=Health(),
        )
        assert again.recent() == svc.recent()
        (tmp_path / "alerts-recent.json").write_text("{not json", encoding="utf-8")
        broken = AlertService(
            cfg=cfg,
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=Health(),
        )
        assert broken.recent() == []


async def test_a_state_file_that_cannot_be_written_is_retried_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the state's folder is a file: every save fails with OSError
    stamper = Stamper()
    health = Health()
    cfg = AlertsConfig.model_validate({"wet_lot": {"k": 1, "n": 1}})
    async with open_outbox(tmp_path / "o.db", sinks=["x"]) as outbox:
        svc = AlertService(
            cfg=cfg,
            site="s1",
            state_path=blocker / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=health,
        )
        svc.on_reading(moisture(stamper, 14.0, lot="L-1"))
        await svc._flush()  # notifies, then tries to save
        batch = await outbox.read_batch("x", 100)
        assert [r.reading.measurement for r in batch] == ["alert"]  # the alert went out
        entry = health.interfaces["alerts-state"]
        assert entry.failures == 1
        assert "cannot save alerts.json" in str(entry.last_error)
        blocker.unlink()
        blocker.mkdir()
        await svc._save()  # the next save works again
        assert (blocker / "alerts.json").exists()

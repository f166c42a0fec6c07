"""The alert service hands its notifying events to the notifier (as ``agent.app`` wires
them), and an acknowledgement from a notification goes back through the command
boundary to the alert engine: real outbox, real engine, real queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.app import notify_events
from coffee_telemetry.agent.commands import CommandBoundary
from coffee_telemetry.agent.config import AlertsConfig
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.notify.queue import open_notify_store
from coffee_telemetry.agent.notify.service import Notifier
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Stamper
from tests.agent.notify.helpers import ZONE, RecordingChannel, notify_config
from tests.fakes import stage


async def test_wet_lot_to_notifier_and_sms_reply_back_to_the_engine(tmp_path: Path) -> None:
    stamper = Stamper()
    sms = RecordingChannel("sms")
    async with (
        open_outbox(tmp_path / "outbox.sqlite3", sinks=[]) as outbox,
        open_notify_store(tmp_path / "notify.sqlite3", now_ns=0) as store,
    ):
        notifier = Notifier(
            cfg=notify_config(),
            site="Armazém 1",
            zone=ZONE,
            store=store,
            channels={"sms": sms},
            link_key=b"k" * 32,
        )
        alerts = AlertService(
            cfg=AlertsConfig.model_validate({"wet_lot": {"k": 1, "n": 1}}),
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=Health(),
            on_notify=notify_events(notifier),
        )
        notifier.commands = CommandBoundary({"ack": alerts.handle_command})
        tasks = [
            asyncio.create_task(alerts.run_loop()),
            asyncio.create_task(notifier.channel_loop("sms")),
        ]
        try:
            alerts.on_reading(
                stamper.stamp(
                    device="umid-1",
                    measurement="moisture",
                    fields={"moisture_pct": 14.0},
                    tags={"site": "s1", "device": "umid-1", "station": "recepcao", "lot": "L-9"},
                )
            )
            await sms.wait_for(lambda: len(sms.sent) == 1)
            fired = sms.sent[0]
            assert fired.body.startswith("ALERTA — Lote úmido: lote L-9")
            assert fired.ack_code is not None
            result = await notifier.acknowledge_reply("sms", fired.address, fired.ack_code)
            assert result.ok
            state = alerts.engine.state("wet_lot", "L-9")
            assert state is not None
            assert state.state.value == "acknowledged"
            assert state.acked_by == "João"
            # The acknowledged event came back to the notifier and closed the episode.
            async with asyncio.timeout(5):
                while await store.escalations():
                    await asyncio.sleep(0.02)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

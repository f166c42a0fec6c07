"""``coffee-telemetry outbox -c`` shows the notification queues beside the sinks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.notify.model import Message
from coffee_telemetry.agent.notify.queue import NotifyStore
from coffee_telemetry.agent.notify.runtime import QUEUE_FILE
from coffee_telemetry.agent.outbox.store import open_outbox

NOW = 1_796_000_000_000_000_000


def message(key: str, channel: str) -> Message:
    return Message(
        key=key,
        channel=channel,
        contact="João",
        address="joao@coop.example",
        lang="pt-BR",
        kind="firing",
        severity="critical",
        title=f"[CRÍTICO] Lote úmido: {key}",
        body="Lote úmido",
        created_ns=NOW,
        expires_ns=NOW + 86_400 * 10**9,
    )


async def test_the_notification_queues_and_their_dead_letters_are_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    site = tmp_path / "site.toml"
    site.write_text(f'[site]\nid = "s1"\n[agent]\ndata_dir = "{data}"\n')
    async with open_outbox(data / "outbox.sqlite3", sinks=["mqtt"]):
        pass
    store = NotifyStore.open(data / QUEUE_FILE, now_ns=NOW)
    store.enqueue(
        [
            (message("L-1", "email"), NOW),
            (message("L-2", "email"), NOW),
            (message("L-3", "sms"), NOW),
        ]
    )
    sent = store.next_due("email", NOW)
    assert sent is not None
    store.finish(sent.id, "sent", now_ns=NOW)
    dead = store.next_due("email", NOW)
    assert dead is not None
    store.finish(dead.id, "dead", now_ns=NOW, reason="535 authentication failed", status=535)
    store.close()

    assert main(["outbox", "-c", str(site), "--dead-letters", "5"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert rows["email"][1:2] == ["0"]  # nothing waits for e-mail
    assert rows["email"][-3:] == ["1", "1", "0"]  # sent, dead, expired
    assert rows["sms"][1] == "1"  # one SMS waits
    assert "status=535 535 authentication failed" in out
    assert "Lote úmido: L-2" in out

    assert main(["outbox", "-c", str(site), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = {c["channel"]: (c["queued"], c["sent"], c["dead"]) for c in doc["notifications"]}
    assert got == {"email": (0, 1, 1), "sms": (1, 0, 0)}

"""The internet link comes back: what waited for Telegram and ntfy goes, once each.

The real agent process and a ticket meter on a pty. Telegram's and ntfy's servers are
one local HTTP stand-in (there is no internet where the tests run; it checks what the
client sends). While the link is down nothing listens on its port (connection
refused, as with no route out): a wet lot's messages wait in their own queues and are
retried, and the readings outbox does not grow by one record while they do. Then the
stand-in starts on that port, and each channel delivers the message once, with no
duplicate from the retries, while the readings go on being accepted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.agent.notify.standin import open_standin
from tests.integration.harness import eventually, outbox_last_id
from tests.services.net import free_port

pytestmark = pytest.mark.integration

NOTIFY = """
[notify]
retry_initial_s = 1
retry_max_s = 2
[notify.telegram]
api_url = "http://127.0.0.1:{port}"
token_env = "TEST_NOTIFY_TG_TOKEN"
poll_updates = false
timeout_s = 2
[notify.ntfy]
url = "http://127.0.0.1:{port}"
timeout_s = 2
[[notify.contacts]]
name = "João"
channels = {{ telegram = "123456789", ntfy = "armazem-joao" }}
[[notify.routes]]
name = "plantao"
contacts = ["João"]
"""


def counter(rig: NotifyAgentRig, channel: str, name: str) -> int:
    value = rig.notify_channel(channel).get(name)
    assert isinstance(value, int), (channel, name, value)
    return value


def readings(rig: NotifyAgentRig) -> int:
    devices = rig.health()["devices"]
    assert isinstance(devices, dict)
    value = devices["umid-1"]["readings"]
    assert isinstance(value, int)
    return value


async def test_http_channels_deliver_once_the_link_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_NOTIFY_TG_TOKEN", "123:abc")
    port = free_port()
    rig = NotifyAgentRig(tmp_path, NOTIFY.format(port=port))
    try:
        await rig.start()
        await rig.emit(14.2)
        # Link down: both retried, nothing sent, nothing dead.
        await eventually(
            lambda: all(counter(rig, c, "retries") >= 2 for c in ("telegram", "ntfy")),
            timeout_s=20,
            what="Telegram and ntfy retrying",
            context=rig.agent.log_tail,
        )
        # More retries, and not one more record in the readings outbox.
        records = outbox_last_id(rig.data_dir)
        assert records > 0
        tried = counter(rig, "ntfy", "retries")
        await eventually(
            lambda: counter(rig, "ntfy", "retries") >= tried + 2,
            timeout_s=20,
            what="ntfy retrying twice more",
        )
        assert outbox_last_id(rig.data_dir) == records
        for channel in ("telegram", "ntfy"):
            assert counter(rig, channel, "sent") == 0
            assert counter(rig, channel, "dead") == 0
        assert rig.alert_state("L-WET") == "firing"

        # Link back.
        async with open_standin(port) as standin:
            await eventually(
                lambda: all(counter(rig, c, "sent") == 1 for c in ("telegram", "ntfy")),
                timeout_s=20,
                what="Telegram and ntfy delivered",
                context=rig.agent.log_tail,
            )
            await asyncio.sleep(3.0)  # longer than retry_max_s: a duplicate would show now
            sent = [s for s in standin.seen if s.method == "POST"]
            telegram = [s for s in sent if s.path == "/bot123:abc/sendMessage"]
            ntfy = [s for s in sent if s.path == "/"]
            assert len(telegram) == 1, [s.path for s in sent]
            assert len(ntfy) == 1, [s.path for s in sent]
            assert isinstance(telegram[0].doc, dict)
            assert telegram[0].doc["chat_id"] == "123456789"
            assert "L-WET" in str(telegram[0].doc["text"])
            assert isinstance(ntfy[0].doc, dict)
            assert ntfy[0].doc["topic"] == "armazem-joao"
        for channel in ("telegram", "ntfy"):
            assert counter(rig, channel, "queued") == 0
            assert counter(rig, channel, "dead") == 0
        # The readings went on all along: one more is accepted at once.
        before = readings(rig)
        await rig.emit(11.0)
        await eventually(
            lambda: readings(rig) == before + 1, timeout_s=10, what="the next reading accepted"
        )
    finally:
        rig.close()

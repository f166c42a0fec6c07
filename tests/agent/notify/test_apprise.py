"""The Apprise channel against a local HTTP stand-in (Apprise's ``json://`` service).

A stand-in because there is no internet here: Apprise's JSON service POSTs to it, and
the test checks what arrived; a 500 is a retry, a missing or unusable URL a dead letter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coffee_telemetry.agent.notify.apprise import AppriseChannel
from coffee_telemetry.agent.notify.config import AppriseConfig
from coffee_telemetry.agent.notify.model import Message, Refused, Retry, Sent
from tests.agent.notify.standin import StandIn, open_standin

# Apprise's plugins import imghdr, deprecated in Python 3.11 (theirs to change, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")


def message(address: str) -> Message:
    return Message(
        key="wet_lot/L-1/1/firing/0/Maria/apprise",
        channel="apprise",
        contact="Maria",
        address=address,
        lang="pt-BR",
        kind="firing",
        severity="critical",
        title="[CRÍTICO] Lote úmido: L-1",
        body="Lote L-1 úmido: média 13,4 %",
    )


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with open_standin() as server:
        yield server


async def test_sends_through_the_url_kept_in_the_environment(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_APPRISE_MARIA", f"json://127.0.0.1:{standin.port}/hook")
    channel = AppriseChannel(AppriseConfig(timeout_s=10))
    assert isinstance(await channel.send(message("env:TEST_APPRISE_MARIA")), Sent)
    [seen] = standin.seen
    assert seen.method == "POST"
    assert seen.path == "/hook"
    assert isinstance(seen.doc, dict)
    assert seen.doc["title"] == "[CRÍTICO] Lote úmido: L-1"
    assert seen.doc["message"] == "Lote L-1 úmido: média 13,4 %"
    assert seen.doc["type"] == "failure"  # critical


async def test_a_failing_service_is_retried_and_a_bad_url_is_dead(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "url").write_text(f"json://127.0.0.1:{standin.port}/hook\n")
    standin.script = [(500, {"error": "boom"}, {})]
    channel = AppriseChannel(AppriseConfig(timeout_s=10))
    assert isinstance(await channel.send(message(f"file:{tmp_path / 'url'}")), Retry)
    assert isinstance(await channel.send(message(f"file:{tmp_path / 'url'}")), Sent)
    assert isinstance(await channel.send(message("env:TEST_APPRISE_NOBODY")), Refused)
    monkeypatch.setenv("TEST_APPRISE_BAD", "nosuchservice://x")
    assert isinstance(await channel.send(message("env:TEST_APPRISE_BAD")), Refused)

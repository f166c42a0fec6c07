"""The Dispositivos page names this station's public key, in a real browser.

The agent (its entry point, a child process; the module's site of ``fixtures.py``) makes
its Ed25519 key at start; the page shows its fingerprint and raw key, which this test
recomputes from the key file with ``cryptography`` alone.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import expect

from tests.browser.helpers import Site, Tab

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def station_key(site: Site) -> tuple[str, str]:
    pem = (site.agent.config.parent / "data" / "evidence-ed25519.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode(), "SHA256:" + hashlib.sha256(raw).hexdigest()


async def test_the_station_key_on_the_dispositivos_page(tab: Tab, site: Site) -> None:
    raw, fingerprint = station_key(site)
    await tab.open("dispositivos")
    shown = tab.page.get_by_test_id("agent-public-key")
    await expect(shown).to_contain_text(await tab.t("agent.publicKey"))
    await expect(shown.get_by_test_id("agent-key-fingerprint")).to_have_text(fingerprint)
    await expect(shown.get_by_test_id("agent-key-raw")).to_have_text(raw)


async def test_the_station_key_in_english(tab: Tab, site: Site) -> None:
    _, fingerprint = station_key(site)
    await tab.open("dispositivos", query="?lang=en")
    shown = tab.page.get_by_test_id("agent-public-key")
    await expect(shown).to_contain_text("This station's public key")
    await expect(shown.get_by_test_id("agent-key-fingerprint")).to_have_text(fingerprint)

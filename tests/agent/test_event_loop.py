"""Which event loop the agent runs on: ``[agent] event_loop``."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from coffee_telemetry.agent.cli.main import event_loop_factory


def test_asyncio_is_asyncio_and_auto_takes_uvloop_when_installed() -> None:
    assert event_loop_factory("asyncio") is None
    factory = event_loop_factory("auto")
    assert factory is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    assert event_loop_factory("auto") is None
    with pytest.raises(ImportError, match="coffee-telemetry\\[fast\\]"):
        event_loop_factory("uvloop")

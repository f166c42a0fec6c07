"""Outbox backlog from a real outbox; the runner's deadline and the catalogue."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.doctor import backlog, network, serialports, system
from coffee_telemetry.agent.doctor.backlog import check_outbox
from coffee_telemetry.agent.doctor.network import error_text
from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.doctor.run import Check, run_checks
from coffee_telemetry.agent.doctor.serialports import lock_pid
from coffee_telemetry.agent.doctor.texts import MESSAGES, render
from coffee_telemetry.agent.onboard.texts import Lang
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper

T0 = 1_700_000_000_000_000_000


def readings(n: int) -> list[Reading]:
    stamper = Stamper()
    return [
        stamper.stamp(
            device="umid-1",
            measurement="moisture",
            fields={"moisture_pct": 11.0},
            tags={"site": "s", "device": "umid-1"},
            ts_ns=T0 + i,
        )
        for i in range(n)
    ]


async def test_backlog_per_sink_with_the_oldest_age(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with open_outbox(path, sinks=["influx", "mqtt"]) as ob:
        await ob.accept(readings(5))
        await ob.ack("mqtt", 5)
        await ob.flush()
    minute = 60 * 10**9

    def at(age_ns: int) -> dict[str, tuple[Status, str]]:
        return {
            r.subject: (r.status, r.message) for r in check_outbox(path, now_ns=lambda: T0 + age_ns)
        }

    assert at(minute) == {
        "outbox:influx": (Status.OK, "outbox_pending"),
        "outbox:mqtt": (Status.OK, "outbox_current"),
    }
    assert at(30 * minute)["outbox:influx"] == (Status.WARN, "outbox_behind")
    assert at(48 * 60 * minute)["outbox:influx"] == (Status.FAIL, "outbox_behind")
    behind = check_outbox(path, now_ns=lambda: T0 + 48 * 60 * minute)[0]
    assert (behind.values["backlog"], behind.values["age"]) == (5, "2 d")


def test_no_outbox_and_a_broken_one(tmp_path: Path) -> None:
    missing = check_outbox(tmp_path / "none.sqlite3")
    assert [(r.status, r.message) for r in missing] == [(Status.WARN, "outbox_missing")]
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"not a database" * 100)
    assert [(r.status, r.message) for r in check_outbox(broken)] == [
        (Status.FAIL, "outbox_unreadable")
    ]


def test_a_hanging_check_is_reported_at_the_deadline_and_a_crash_is_caught() -> None:
    release = threading.Event()

    def hang() -> list[Result]:
        release.wait(60)
        return []

    def crash() -> list[Result]:
        raise RuntimeError("boom")

    ok = Result("x.y", "fine", Status.OK, "clock_synced", None, {"source": "t", "now": "n"})
    checks = [
        Check("hang", "stuck", hang),
        Check("crash", "broken", crash),
        Check("ok", "fine", lambda: [ok]),
    ]
    try:
        results = run_checks(checks, deadline_s=0.5)
    finally:
        release.set()
    assert [(r.subject, r.status, r.message) for r in results] == [
        ("stuck", Status.FAIL, "check_timeout"),
        ("broken", Status.FAIL, "check_crashed"),
        ("fine", Status.OK, "clock_synced"),
    ]
    assert "boom" in render(results[1], "en")
    assert render(results[0], "pt-BR").startswith("FALHA  stuck: não terminou em 0,5 s")


def test_every_key_the_checks_use_is_in_the_catalogue_in_both_languages() -> None:
    used: set[str] = set()
    for module in (backlog, network, serialports, system):
        source = Path(str(module.__file__)).read_text(encoding="utf-8")
        used |= set(
            re.findall(
                r'"((?:port|tls|mqtt|influx|clock|disk|storage|systemd|outbox|fix)_[a-z_]+)"',
                source,
            )
        )
    assert used - set(MESSAGES) == set()
    for key, (pt, en) in MESSAGES.items():
        fields_pt = set(re.findall(r"{(\w+)}", pt))
        fields_en = set(re.findall(r"{(\w+)}", en))
        assert fields_pt == fields_en, key
        assert pt != en or key == "check_timeout", key


@given(st.binary(max_size=512))
def test_any_influx_answer_body_gives_text(body: bytes) -> None:
    assert isinstance(error_text(body), str)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_any_influx_json_gives_text(doc: object) -> None:
    assert isinstance(error_text(json.dumps(doc).encode()), str)


def test_influx_errors_are_found_where_v1_and_v2_put_them() -> None:
    assert error_text(b'{"results":[{"statement_id":0,"error":"database not found: x"}]}') == (
        "database not found: x"
    )
    assert error_text(b'{"code":"unauthorized","message":"unauthorized access"}') == (
        "unauthorized access"
    )


@given(st.binary(max_size=64))
def test_any_lock_file_gives_a_pid_or_none(content: bytes) -> None:
    pid = lock_pid(content)
    assert pid is None or pid > 0


def test_lock_files_as_written() -> None:
    assert lock_pid(b"      4242\n") == 4242
    assert lock_pid(b"\xb2") is None
    assert lock_pid(b"0\n") is None


@given(st.text())
def test_a_server_answer_never_breaks_the_one_line_report(answer: str) -> None:
    result = Result(
        "influx.auth",
        "influx",
        Status.FAIL,
        "influx_error",
        "fix_influx_down",
        {"method": "GET", "status": 500, "error": answer},
    )
    langs: tuple[Lang, ...] = ("pt-BR", "en")
    for lang in langs:
        line = render(result, lang)
        assert "\n" not in line
        assert "\r" not in line
        assert len(line) < 400

"""The box's public key noted beside its key: read without cryptography, never stale."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from coffee_telemetry.agent.evidence.identity import (
    KEY_NAME,
    PUBLIC_NAME,
    box_identity,
    box_key,
    fingerprint,
)


def test_the_note_gives_the_same_identity_as_the_key(tmp_path: Path) -> None:
    first = box_identity(tmp_path)
    assert first is not None
    assert (tmp_path / PUBLIC_NAME).exists()
    again = box_identity(tmp_path)
    assert again == first
    assert first.fingerprint == fingerprint(box_key(tmp_path).public_key())


def test_a_running_agent_reads_the_note_without_loading_cryptography(tmp_path: Path) -> None:
    expected = box_identity(tmp_path)
    assert expected is not None
    probe = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from coffee_telemetry.agent.evidence.identity import box_identity
        got = box_identity(Path({str(tmp_path)!r}))
        print(got.fingerprint, "cryptography" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [expected.fingerprint, "False"]


def test_a_replaced_key_is_read_again_and_the_note_rewritten(tmp_path: Path) -> None:
    old = box_identity(tmp_path)
    other = tmp_path / "other"
    new = box_identity(other)
    assert old is not None
    assert new is not None
    assert old != new
    # A restore brings another key file; the note still names the old key.
    (tmp_path / KEY_NAME).write_bytes((other / KEY_NAME).read_bytes())
    assert box_identity(tmp_path) == new
    assert new.public_key in (tmp_path / PUBLIC_NAME).read_text()


def test_a_damaged_note_is_ignored(tmp_path: Path) -> None:
    expected = box_identity(tmp_path)
    for junk in ("", "x", "a b c", "0" * 64 + " not-base64!", "0" * 64 + " AAAA"):
        (tmp_path / PUBLIC_NAME).write_text(junk)
        assert box_identity(tmp_path) == expected


def test_the_agent_makes_a_missing_key_in_a_child_and_keeps_its_memory(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from coffee_telemetry.agent.evidence.identity import station_identity
        got = asyncio.run(station_identity(Path({str(tmp_path)!r})))
        print(got.fingerprint, "cryptography" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    made = box_identity(tmp_path)  # the key the child wrote, read the slow way
    assert made is not None
    assert out == [made.fingerprint, "False"]
    assert (tmp_path / KEY_NAME).stat().st_mode & 0o777 == 0o600

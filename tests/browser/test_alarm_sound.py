"""The alarm sound the Armazém page plays: shipped, made by its script, and what it says it is.

No browser needed: these run with the fast tests.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import wave

from tests.integration.harness import ROOT

SOUND = ROOT / "dashboards" / "web" / "alarme.wav"
SCRIPT = ROOT / "scripts" / "alarm-sound"


def test_the_shipped_sound_is_what_the_script_makes() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_sound_is_short_loud_pcm() -> None:
    data = SOUND.read_bytes()
    assert len(data) < 64 * 1024  # fetched once, when the alarm first sounds
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (1, 2, "NONE")
        seconds = w.getnframes() / w.getframerate()
        frames = w.readframes(w.getnframes())
    assert 0.5 <= seconds <= 3.0, seconds
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    peak = max(abs(s) for s in samples)
    assert 0.4 * 32767 <= peak < 32767, peak  # loud, never clipped
    # Starts and ends at rest, so the loop does not click.
    assert abs(samples[0]) < 100
    assert abs(samples[-1]) < 100

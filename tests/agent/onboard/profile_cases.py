"""The golden cases of the meter profiles, built from the drivers' own encoders.

Each case is a capture of one documented output, shaped as its manual shows it (the
frame or line of the profile's docstring), recorded as ``coffee-telemetry capture``
would: ``tests/cases/profiles/<profile>/<case>/`` holds ``capture.txt``, its bytes
(``input.bin``), the block ``propose`` makes of it (``device.toml``, which names the
profile) and what the agent's driver reports (``expected.jsonl``, through
``propose.event_json``). ``test_profile_cases.py`` checks the stored files against
this module, so a case cannot drift from how it was made. To write them again::

    .venv/bin/python -m tests.agent.onboard.profile_cases
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.onboard.capfile import parse_capture
from coffee_telemetry.agent.onboard.lineformat import LineSettings
from coffee_telemetry.agent.onboard.propose import Proposal, event_json, propose
from coffee_telemetry.drivers.moisture_tesma import encode_frame as tesma_frame
from coffee_telemetry.drivers.moisture_ticket import encode_ticket
from coffee_telemetry.drivers.scale_ascii import encode_line
from coffee_telemetry.drivers.scale_mtsics import encode_reply
from coffee_telemetry.drivers.scale_toledo import encode_frame as toledo_frame
from tests.agent.onboard.helpers import N81, capture_text

CASES = Path(__file__).parents[2] / "cases" / "profiles"


@dataclass(frozen=True, slots=True)
class Case:
    """One recorded output: the bursts a meter sends and how they were timed."""

    profile: str
    name: str
    bursts: tuple[bytes, ...]
    gap_s: tuple[float, float]
    settings: LineSettings = N81

    def text(self) -> str:
        """The capture file, deterministic."""
        return capture_text(self.bursts, settings=self.settings, gap_s=self.gap_s, seed=7)


def _weights(top: float, steps: int) -> list[float]:
    """A load put on, settling, held, taken off."""
    up = [top * i / steps for i in range(steps + 1)]
    return [0.0] * 3 + up + [top] * 16 + up[::-1] + [0.0] * 3


def _tickets() -> tuple[bytes, ...]:
    samples = [
        ("CAFE", "L-0101", 11.8, 24.6, 38.2, "0042"),
        ("CAFE", "L-0101", 12.9, 25.1, 37.9, "0043"),
        ("CAFE", "L-0102", 10.7, 23.8, 39.4, "0044"),
        ("MILHO", "L-0103", 14.2, 22.0, 71.5, "0045"),
        ("CAFE", "L-0104", 11.1, 24.0, 38.8, "0046"),
        ("CAFE", "L-0104", 13.4, 24.9, 37.2, "0047"),
    ]
    return tuple(
        encode_ticket(
            moisture_pct=m,
            product=product,
            temperature_c=t,
            bulk_density_kg_hl=ph,
            sample_mass_g=250.0,
            sample_id=sample,
            lot=lot,
            meter_time=f"12/05/2025 14:{10 + i:02d}",
        )
        for i, (product, lot, m, t, ph, sample) in enumerate(samples)
    )


CASE_LIST: tuple[Case, ...] = (
    # Tesma §5: the manual's own example string, once a second, then another grain.
    Case(
        "tesma-plus2",
        "manual_example_then_soja",
        tuple([tesma_frame("MAIZ", 14.4)] * 6 + [tesma_frame("SOJA", 12.0)] * 6),
        (0.98, 1.02),
    ),
    Case("moisture-ticket-pt", "six_tickets_with_form_feed", _tickets(), (3.0, 8.0)),
    # MT-SICS SIR stream: S S / S D lines, weight right-aligned in 10 characters.
    Case(
        "mettler-mtsics",
        "sir_stream_load",
        tuple(
            encode_reply("S", "D" if 3 <= i <= 12 else "S", value=w, unit="g")
            for i, w in enumerate(_weights(250.0, 10))
        ),
        (0.2, 0.2),
    ),
    # Toledo continuous, long frames with checksum, print request once the load is held.
    Case(
        "toledo-continuous",
        "load_with_print_request",
        tuple(
            toledo_frame(w, 0.0, motion=3 <= i <= 13, print_request=i == 24)
            for i, w in enumerate(_weights(1234.5, 10))
        ),
        (1 / 7, 1 / 7),
    ),
    # A&D standard format: ST/US header, sign and 8 characters, unit in 3.
    Case(
        "ad-balance",
        "standard_format_grams",
        tuple(
            encode_line(w, unit="g", decimals=2, header="US" if 3 <= i <= 13 else "ST")
            for i, w in enumerate(_weights(123.45, 10))
        ),
        (0.5, 0.5),
    ),
    # ST,GS indicator lines (Tiger TI-02-P §7.1 shape), a sack on the platform.
    Case(
        "st-gs-indicator",
        "sack_gross_kg",
        tuple(
            encode_line(w, kind="GS", decimals=1, header="US" if 3 <= i <= 13 else "ST")
            for i, w in enumerate(_weights(60.5, 10))
        ),
        (0.5, 0.5),
    ),
)


def proposal_of(case: Case) -> Proposal:
    """What ``propose`` makes of the case's capture."""
    result = propose(parse_capture(case.text().encode("ascii")))
    if not isinstance(result, Proposal):
        raise AssertionError(f"{case.profile}/{case.name}: nothing proposed ({result})")
    return result


def write(case: Case, root: Path = CASES) -> Path:
    """Write one case's four files (replacing the folder)."""
    target = root / case.profile / case.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    text = case.text()
    capture = parse_capture(text.encode("ascii"))
    proposal = proposal_of(case)
    (target / "capture.txt").write_text(text, encoding="ascii")
    (target / "input.bin").write_bytes(capture.recorded_bytes())
    (target / "device.toml").write_text(proposal.block, encoding="utf-8")
    lines = [json.dumps(event_json(e), ensure_ascii=False) for e in proposal.check.events]
    (target / "expected.jsonl").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    return target


if __name__ == "__main__":
    for one in CASE_LIST:
        print(write(one))

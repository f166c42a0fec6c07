"""The shipped systemd unit: valid for systemd, notify + watchdog, hardened.

``systemd-analyze verify`` checks the unit as ``coffee-telemetry init`` renders it
(its ``ExecStart`` pointing at this checkout's ``coffee-telemetry``, since verify
checks the executables exist); ``systemd-analyze security --offline=true`` rates
its exposure, which must stay at or below 3.0 and match what the README says.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coffee_telemetry.agent.cli.init import render_site

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "coffee-telemetry.service"
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)")


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze is missing: it checks the systemd unit. Install it with"
            " scripts/install-system-deps (Debian package 'systemd'); in a container"
            " without systemd as PID 1 it still runs ('verify' and 'security --offline')."
        )
    return path


def verify(unit: Path, *, root: Path | None = None) -> list[str]:
    """What ``systemd-analyze verify`` says about ``unit`` (empty: nothing).

    Every message about the unit counts, warnings too: verify exits 0 on an unknown
    key or a value it cannot parse, and only says so.
    """
    cmd = [systemd_analyze(), "verify"]
    if root is not None:
        cmd.append(f"--root={root}")
    proc = subprocess.run([*cmd, str(unit)], capture_output=True, text=True, check=False)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if "Unit sysinit.target not found" in "\n".join(lines):
        pytest.fail(
            "systemd-analyze verify cannot run here: it needs systemd's own units"
            f" (/usr/lib/systemd/system) to resolve the unit's dependencies:\n{lines}"
        )
    if proc.returncode != 0 and not lines:
        lines = [f"systemd-analyze verify exited {proc.returncode}"]
    return lines


def exposure(unit: Path) -> tuple[float, str]:
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = EXPOSURE.search(proc.stdout + proc.stderr)
    assert found, f"no exposure level in systemd-analyze's output:\n{proc.stdout}{proc.stderr}"
    return float(found[1]), found[2]


def rendered_unit(tmp_path: Path) -> Path:
    """The unit as ``init`` writes it for a site in ``tmp_path``, run by this checkout."""
    executable = Path(sys.executable).parent / "coffee-telemetry"
    assert executable.exists(), f"{executable} missing: pip install -e . in the venv"
    files = render_site(
        tmp_path / "etc",
        site="ourofino",
        name="Ouro Fino",
        data_dir=str(tmp_path / "data"),
        executable=str(executable),
    )
    unit = next(f for f in files if f.path == "systemd/coffee-telemetry.service")
    path = tmp_path / "coffee-telemetry.service"
    path.write_bytes(unit.content)
    return path


def directives(unit: Path) -> list[tuple[str, str]]:
    out = []
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


def test_the_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify(rendered_unit(tmp_path)) == []


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a bad value is reported though verify exits 0."""
    unit = rendered_unit(tmp_path)
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    said = verify(unit)
    assert any("Failed to parse service type" in line for line in said), said


def test_notify_watchdog_and_hardening_directives() -> None:
    found = directives(UNIT)
    values: dict[str, list[str]] = {}
    for key, value in found:
        values.setdefault(key, []).append(value)
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["true"],
        "PrivateTmp": ["true"],
        "NoNewPrivileges": ["true"],
        "CapabilityBoundingSet": [""],
        "SupplementaryGroups": ["dialout"],
        "ReadWritePaths": ["/var/lib/coffee-telemetry"],
        "Restart": ["always"],
    }
    for key, want in expected.items():
        assert values.get(key) == want, (key, values.get(key))
    watchdog = values["WatchdogSec"]
    assert len(watchdog) == 1
    assert re.fullmatch(r"\d+s", watchdog[0]), watchdog
    families = set(values["RestrictAddressFamilies"][0].split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families
    assert "@system-service" in values["SystemCallFilter"]
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyAMA rw"} <= set(values["DeviceAllow"])


def test_exposure_is_at_most_3_and_the_readme_says_so() -> None:
    score, label = exposure(UNIT)
    assert score <= 3.0, f"exposure {score} {label}: the target is 3.0 or less"
    readme = (ROOT / "README.md").read_text()
    assert f"**{score} {label}**" in readme, f"README should record {score} {label}"

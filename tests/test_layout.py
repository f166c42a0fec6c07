"""The layout holds by itself: one import package, no cycles, no stray top-level imports."""

from __future__ import annotations

import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
STRAY = re.compile(r"^\s*(?:from|import)\s+(?:agent|drivers|simulators|dashboards)\b", re.M)


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("coffee_telemetry")
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert cycles == []


def test_everything_imports_through_coffee_telemetry() -> None:
    # The checkout's top-level folders are importable from the repository root too;
    # importing them by those names would load a second copy of every module.
    stray = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for folder in ("agent", "drivers", "simulators", "tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        for match in STRAY.finditer(path.read_text(encoding="utf-8"))
    ]
    assert stray == []


def test_the_namespace_links_point_at_the_folders() -> None:
    for name in ("agent", "drivers", "simulators", "dashboards"):
        link = ROOT / "coffee_telemetry" / name
        assert link.is_symlink(), f"coffee_telemetry/{name} must link to ../{name}"
        assert link.resolve() == (ROOT / name).resolve()

"""The package check's own parts, and what the package index will render."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(
        "check_package", str(ROOT / "scripts" / "check-package")
    )
    spec = importlib.util.spec_from_loader("check_package", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


check_package = _script()


def test_readme_paths_are_those_that_exist(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "site.toml").write_text("")
    (tmp_path / "bench").mkdir()
    readme = (
        "See [`examples/site.toml`](examples/site.toml), `bench/` and `bench/gone.py`;"
        " `/etc/coffee-telemetry/site.toml`, `.venv`, `artifacts/x`, `coffee/#`, `make test`."
    )
    assert check_package.readme_paths(readme, tmp_path) == ["examples/site.toml", "bench"]


def test_missing_from_knows_files_and_folders() -> None:
    members = ["README.md", "bench/pipeline.py", "examples/site.toml"]
    wanted = ["bench", "examples/site.toml", "docs", "README.md", "bench/alerts.py"]
    assert check_package.missing_from(members, wanted) == ["docs", "bench/alerts.py"]


def test_the_throwaway_wheel_owns_the_colliding_names(tmp_path: Path) -> None:
    wheel = check_package.throwaway_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read("other_names-1.0.dist-info/RECORD").decode()
    assert {"agent/__init__.py", "drivers/__init__.py", "simulators/__init__.py"} <= names
    assert all(name in record for name in names)


def test_readme_has_no_relative_links() -> None:
    # A package index renders the README away from the repository: relative links break.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(r'(?:src|href)="([^"]+)"', readme)
    relative = [t for t in targets if not re.match(r"(https?:|mailto:|#)", t)]
    assert relative == []


def test_metadata_a_user_checks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "Homepage" in project["urls"]
    assert "Issues" in project["urls"]
    assert project["authors"]
    assert any(
        c.startswith("Programming Language :: Python :: 3.11") for c in project["classifiers"]
    )
    for licence in project["license-files"]:
        assert (ROOT / licence).is_file(), licence
    assert "dashboards/web/vendor/uplot/LICENSE" in project["license-files"]


def test_dependencies_are_ranges_and_amqtt_is_for_the_demo() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert "==" not in requirement, requirement
        assert ">=" in requirement, f"{requirement}: no tested lower bound"
    assert not any(r.startswith("amqtt") for r in project["dependencies"])
    assert any(r.startswith("amqtt") for r in project["optional-dependencies"]["demo"])
    assert any(r.startswith("amqtt") for r in project["optional-dependencies"]["dev"])


def test_constraints_pin_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for requirement in project["dependencies"] + project["optional-dependencies"]["demo"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name}: run scripts/freeze-constraints after make test passes"

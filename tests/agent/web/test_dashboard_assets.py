"""The dashboard's files: all local, CSP-clean, packaged, and uPlot as pinned."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from coffee_telemetry.agent.web.server import DEFAULT_ASSETS

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "dashboards" / "web"
TEXT = (".html", ".js", ".css")


def files(suffixes: tuple[str, ...] = TEXT) -> list[Path]:
    return sorted(p for p in WEB.rglob("*") if p.is_file() and p.suffix in suffixes)


def test_the_server_serves_this_folder() -> None:
    assert DEFAULT_ASSETS == WEB
    assert (WEB / "index.html").is_file()
    assert (WEB / "favicon.ico").read_bytes()[:4] == b"\0\0\1\0"  # an ICO header


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(WEB)))
def test_nothing_is_fetched_from_elsewhere(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # Namespace URIs (SVG) are names, not fetches; everything else must be relative.
    urls = re.findall(r"(?:https?:)?//[a-zA-Z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text)
    fetched = [u for u in urls if "www.w3.org/" not in u and not u.startswith("//")]
    if path.suffix == ".js" and "vendor" not in path.parts:
        assert 'fetch("http' not in text
        assert 'EventSource("http' not in text
    assert fetched == [] or ("vendor" in path.parts and all("github" in u for u in fetched))


def test_the_shell_has_no_inline_code() -> None:
    html = (WEB / "index.html").read_text(encoding="utf-8")
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag  # the CSP allows no inline script
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handlers
    assert re.search(r"\sstyle\s*=", html) is None  # no inline styles
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        u for u in re.findall(r'(?:src|href)="([^"]+)"', html) if u.startswith("/")
    ]


def test_page_scripts_never_write_html_from_data() -> None:
    for path in files((".js",)):
        if "vendor" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        assert re.search(r"\.(innerHTML|outerHTML)\s*=", text) is None, path
        assert "insertAdjacentHTML(" not in text, path
        assert "document.write(" not in text, path
        assert re.search(r"\beval\(|new Function\(", text) is None, path


def test_every_file_is_packaged() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["coffee_telemetry.dashboards"]
    for path in (ROOT / "dashboards").rglob("*"):
        if path.is_file():
            rel = path.relative_to(ROOT / "dashboards").as_posix()
            # setuptools globs: "*" stays within one folder.
            assert any(
                fnmatch.fnmatch(rel, pat) and rel.count("/") == pat.count("/") for pat in patterns
            ), f"{rel} would be missing from an installed agent"


def test_uplot_is_the_pinned_release() -> None:
    vendor = WEB / "vendor" / "uplot"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    assert "1.6.32" in readme
    assert (vendor / "LICENSE").read_text(encoding="utf-8").startswith("The MIT License")
    # The sha256sum lines of its "Check" section: "<sha256>  <file>".
    listed = {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)}
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        assert name in listed, f"vendor/uplot/README.md lists no sha256 for {name}"
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == listed[name], name

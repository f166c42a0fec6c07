"""``deploy/install.sh`` and ``deploy/uninstall.sh``, run for real into a temporary root.

Each test copies the working tree (as an unpacked source distribution would be) and
a copy of this machine's ``/etc/passwd``, ``group``, ``shadow`` and ``gshadow`` into
a temporary root, then runs the scripts with ``--root``: the package really goes into
a venv under ``ROOT/opt`` from ``constraints.txt``, ``useradd --prefix`` really adds
the user to ``ROOT/etc/passwd``, and ``systemd-analyze verify --root`` checks the unit
that was written. What a container cannot show (systemd starting the unit, udev
naming a real adapter, journald rereading its limits) is said in the README.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_unit import verify

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
UNIT = "etc/systemd/system/coffee-telemetry.service"
UDEV = "etc/udev/rules.d/99-coffee-telemetry.rules"
JOURNALD = "etc/systemd/journald.conf.d/60-coffee-telemetry.conf"
VENV = "opt/coffee-telemetry/venv"


def source_tree(target: Path) -> Path:
    """The working tree's files (tracked and new, not ignored), links kept."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = REPO / os.fsdecode(name)
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst = target / os.fsdecode(name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    return target


def fresh_root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("install.sh adds a system user: run these tests as root (CI does)")
    if shutil.which("useradd") is None:
        pytest.fail("useradd is missing (Debian package 'passwd')")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy2(f"/etc/{name}", root / "etc" / name)
    assert not any(
        line.startswith("coffee:") for line in (root / "etc/passwd").read_text().splitlines()
    ), "this machine already has a 'coffee' user: the test needs a root without one"
    return root


def run(script: str, *args: str, source: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["sh", str(source / "deploy" / script), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def entries(root: Path, name: str, db: str = "passwd") -> list[list[str]]:
    lines = (root / "etc" / db).read_text().splitlines()
    return [line.split(":") for line in lines if line.startswith(f"{name}:")]


def install(root: Path, source: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("install.sh", "--root", str(root), "--source", str(source), *args, source=source)


def check_installed(root: Path) -> None:
    (user,) = entries(root, "coffee")
    (group,) = entries(root, "coffee", "group")
    assert user[3] == group[2], "the user's primary group is 'coffee'"
    assert user[5:] == ["/var/lib/coffee-telemetry", "/usr/sbin/nologin"]
    (dialout,) = entries(root, "dialout", "group")
    assert dialout[3].split(",").count("coffee") == 1

    site = root / "etc/coffee-telemetry/site.toml"
    st = site.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, int(group[2]))
    creds = (root / "etc/coffee-telemetry/credentials").stat()
    assert (creds.st_mode & 0o777, creds.st_uid) == (0o700, 0)
    data = (root / "var/lib/coffee-telemetry").stat()
    assert (data.st_mode & 0o777, data.st_uid, data.st_gid) == (0o750, int(user[2]), int(group[2]))

    unit = (root / UNIT).read_text()
    assert "ExecStart=/opt/coffee-telemetry/venv/bin/coffee-telemetry run -c" in unit
    assert " /etc/coffee-telemetry/site.toml\n" in unit
    # Paths as installed: neither the root's nor install.sh's staging directory's.
    assert not re.search(r"^\w+=.*/tmp/", unit, re.MULTILINE), unit
    assert str(root) not in site.read_text()
    shipped = (REPO / "deploy/99-coffee-telemetry.rules").read_bytes()
    assert (root / UDEV).read_bytes().startswith(shipped)  # as shipped, or edited by the site
    assert "SystemMaxUse=" in (root / JOURNALD).read_text()

    # The unit as systemd would load it from this root: nothing to say.
    units = root / "usr/lib/systemd/system"
    if not units.exists():  # systemd's own units (targets the unit names), as on the box
        shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    assert verify(root / UNIT, root=root) == []

    # The venv holds the locked versions, and the installed command reads the config.
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version.strip()
    frozen = subprocess.run(
        [str(root / VENV / "bin/python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    checked = 0
    for line in frozen:
        if "==" not in line:
            continue
        name, version = line.split("==", 1)
        key = name.lower().replace("_", "-")
        if key in pins:
            assert version == pins[key], f"{name} {version}, locked at {pins[key]}"
            checked += 1
    assert checked >= 10, frozen
    check = subprocess.run(
        [str(root / VENV / "bin/coffee-telemetry"), "check-config", str(site)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_install_then_again(tmp_path: Path) -> None:
    root, source = fresh_root(tmp_path), source_tree(tmp_path / "src")
    install(root, source, "--site", "ourofino", "--name", "Armazém Ouro Fino")
    check_installed(root)
    site = root / "etc/coffee-telemetry/site.toml"
    assert 'id = "ourofino"' in site.read_text()
    assert "Armazém Ouro Fino" in site.read_text()

    # The site edits its files; a second run (an upgrade) keeps them and changes nothing else.
    site.write_text(site.read_text() + "# editado no armazém\n")
    rules = root / UDEV
    rules.write_text(rules.read_text() + "# adaptador novo\n")
    unit_before = (root / UNIT).read_bytes()
    (root / UNIT).write_text("[Service]\nExecStart=/bin/false\n")  # package-owned: rewritten
    passwd_before = (root / "etc/passwd").read_text()
    install(root, source, "--site", "outro")
    assert site.read_text().endswith("# editado no armazém\n")
    assert 'id = "ourofino"' in site.read_text()
    assert rules.read_text().endswith("# adaptador novo\n")
    assert (root / UNIT).read_bytes() == unit_before
    assert (root / "etc/passwd").read_text() == passwd_before
    check_installed(root)


def test_uninstall_keeps_data_and_purge_removes_all(tmp_path: Path) -> None:
    root, source = fresh_root(tmp_path), source_tree(tmp_path / "src")
    install(root, source)
    check_installed(root)
    outbox = root / "var/lib/coffee-telemetry/outbox.sqlite3"
    outbox.write_bytes(b"readings")
    secret = root / "etc/coffee-telemetry/credentials/api-token"
    secret.write_text("s3cr3t")

    run("uninstall.sh", "--root", str(root), source=source)
    for gone in (VENV, UNIT, UDEV, JOURNALD):
        assert not (root / gone).exists(), gone
    assert not (root / "opt/coffee-telemetry").exists()
    assert outbox.read_bytes() == b"readings"
    assert secret.read_text() == "s3cr3t"
    assert (root / "etc/coffee-telemetry/site.toml").exists()
    assert entries(root, "coffee"), "the user that owns the data stays"

    # Installing again picks the kept site up.
    install(root, source)
    check_installed(root)
    assert outbox.read_bytes() == b"readings"

    run("uninstall.sh", "--root", str(root), "--purge", source=source)
    for gone in (VENV, UNIT, UDEV, JOURNALD, "etc/coffee-telemetry", "var/lib/coffee-telemetry"):
        assert not (root / gone).exists(), gone
    assert entries(root, "coffee") == []
    assert entries(root, "coffee", "group") == []
    (dialout,) = entries(root, "dialout", "group")
    assert "coffee" not in dialout[3].split(",")

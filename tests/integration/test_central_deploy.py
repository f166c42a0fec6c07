"""deploy/central: the compose file, the NATS node config and the recorder's systemd unit.

The compose file is validated by ``docker-compose config`` (Debian's docker-compose;
no daemon needed), the node config by ``nats-server -t`` with test certificates, and
the recorder's command lines (compose and systemd) by the command's own parser; the
recorder's systemd unit also by ``systemd-analyze verify`` and ``security`` (exposure at
most 2.0). The
permissions in the node config are the ones the cluster fixture runs every central
test with.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
import yaml

from coffee_telemetry.agent.cli.main import build_parser
from tests.integration.harness import ROOT
from tests.services.nats_cluster import RECORDER_PERMISSIONS, nats_binary, site_permissions

DEPLOY = ROOT / "deploy" / "central"

pytestmark = pytest.mark.integration


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "central"
    shutil.copytree(DEPLOY, target)
    return target


def test_compose_file_is_valid_and_runs_three_nodes_and_two_recorders(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail(
            "docker-compose not found: install Debian package 'docker-compose'", pytrace=False
        )
    here = _copy(tmp_path)
    for placeholder in ("certs/ca.pem", "secrets/recorder-nats-password", "passwords.conf"):
        (here / placeholder).parent.mkdir(exist_ok=True)
        (here / placeholder).touch()
    done = subprocess.run(
        [tool, "-f", "compose.yaml", "config", "-q"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert {"nats1", "nats2", "nats3", "influxdb", "grafana", "recorder1", "recorder2"} <= set(
        services
    )
    command = doc["x-recorder"]["command"]
    args = build_parser().parse_args(command)
    assert args.command == "recorder"
    assert args.nats.count(",") == 2


def test_systemd_unit_runs_the_recorder_with_options_it_accepts() -> None:
    text = (DEPLOY / "coffee-telemetry-recorder@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.M | re.S)
    assert exec_start is not None
    argv = exec_start.group(1).replace("\\\n", " ").split()
    assert argv[0].endswith("/coffee-telemetry")
    args = build_parser().parse_args(
        [re.sub(r"\$\{(\w+)\}", lambda m: m.group(1).lower(), a) for a in argv[1:]]
    )
    assert args.command == "recorder"
    assert "LoadCredential=" in text
    assert "Restart=always" in text


def test_systemd_unit_passes_verify_and_is_hardened(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing (Debian package 'systemd')", pytrace=False)
    executable = Path(sys.executable).parent / "coffee-telemetry"
    text = (DEPLOY / "coffee-telemetry-recorder@.service").read_text()
    unit = tmp_path / "coffee-telemetry-recorder@1.service"
    unit.write_text(
        text.replace("/opt/coffee-telemetry/venv/bin/coffee-telemetry", str(executable))
    )
    verify = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    security = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert level is not None, security.stdout + security.stderr
    assert float(level.group(1)) <= 2.0


def test_node_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    here = _copy(tmp_path)
    ca = trustme.CA()
    cert = ca.issue_cert("nats1")
    certs = here / "certs"
    certs.mkdir()
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(certs / "server.pem"))
    cert.private_key_pem.write_to_path(str(certs / "server-key.pem"))
    shutil.copy(here / "passwords.conf.example", here / "passwords.conf")
    conf = (here / "nats-server.conf").read_text()
    conf = conf.replace("/etc/nats/certs", str(certs)).replace(
        "/var/lib/nats/jetstream", str(tmp_path / "js")
    )
    (here / "nats-server.conf").write_text(conf)
    done = subprocess.run(
        [nats_binary(), "-t", "-c", str(here / "nats-server.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"NATS_SERVER_NAME": "nats1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_node_config_permissions_are_the_ones_the_tests_run_with() -> None:
    conf = " ".join((DEPLOY / "nats-server.conf").read_text().split())
    # Each site: publish only under its own id, receive only its own PubAcks.
    for site in ("ourofino", "santa-rita"):
        shape = " ".join(site_permissions(site, "X").split())
        publish = re.search(r"publish: \{allow: \[[^\]]*\]\}", shape)
        subscribe = re.search(r"subscribe: \{allow: \[[^\]]*\]\}", shape)
        assert publish is not None
        assert subscribe is not None
        assert publish.group(0) in conf
        assert subscribe.group(0) in conf
    for allowed in re.findall(r'"([^"]+)"', RECORDER_PERMISSIONS):
        assert f'"{allowed}"' in conf

"""The command line itself: --version, exit codes in --help, global options anywhere,
shell completion generated from the parser, and demo's one-line refusals."""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata

import pytest

from coffee_telemetry.agent.cli.main import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield name, child
                for sub_name, grandchild in _subparsers(child):
                    yield f"{name} {sub_name}", grandchild


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert (
        capsys.readouterr().out.strip()
        == f"coffee-telemetry {metadata.version('coffee-telemetry')}"
    )


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for line in ("0  success", "1  runtime failure", "2  invalid configuration or usage"):
        assert line in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "run", "-c", "s.toml"],
        ["run", "--log-level", "debug", "-c", "s.toml"],
        ["run", "-c", "s.toml", "--log-level", "debug"],
        ["alerts", "ack", "-c", "s.toml", "wet_lot", "L-1", "--log-level", "debug"],
        ["lot", "set", "--log-level", "debug", "-c", "s.toml", "recepcao", "L-1"],
        ["check-config", "s.toml", "--log-level", "debug"],
    ],
)
def test_global_options_work_anywhere(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).log_level == "debug"


def test_a_global_option_not_given_after_the_subcommand_keeps_the_first() -> None:
    parser = build_parser()
    assert parser.parse_args(["--log-level", "error", "run", "-c", "s.toml"]).log_level == "error"
    assert parser.parse_args(["run", "-c", "s.toml"]).log_level is None


def test_every_subcommand_takes_the_global_options() -> None:
    names = []
    for name, child in _subparsers(build_parser()):
        names.append(name)
        assert "--log-level" in child._option_string_actions, name
    assert {"run", "init", "alerts ack", "completion", "demo"} <= set(names)


def test_a_bad_global_option_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "-c", "s.toml", "--log-level", "loud"])
    assert exited.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def _completion(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def _bash_complete(script: str, words: list[str]) -> list[str]:
    bash = shutil.which("bash")
    assert bash, "bash is needed to check the completion it sources"
    line = " ".join(words)
    probe = (
        f"{script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}';"
        f" COMP_POINT=${{#COMP_LINE}}\n"
        "_shtab_coffee_telemetry coffee-telemetry\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run([bash, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_completes_subcommands_and_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = _completion("bash", capsys)
    assert "complete" in script
    assert set(_bash_complete(script, ["coffee-telemetry", "al"])) == {"alerts"}
    assert {"init", "check-config", "completion"} <= set(
        _bash_complete(script, ["coffee-telemetry", ""])
    )
    assert {"ack", "list"} == set(_bash_complete(script, ["coffee-telemetry", "alerts", ""]))
    assert "--once" in _bash_complete(script, ["coffee-telemetry", "run", "--o"])
    assert "--log-level" in _bash_complete(script, ["coffee-telemetry", "run", "--log"])


def test_zsh_completion_is_generated_from_the_same_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = _completion("zsh", capsys)
    assert script.startswith("#compdef coffee-telemetry")
    for name, _ in _subparsers(build_parser()):
        assert name.split()[-1] in script, name
    assert "--once" in script


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["completion", "fish"])
    assert exited.value.code == 2


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_demo_on_a_busy_port_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with _listening() as busy:
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port), "--duration", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: port {port} is in use, try --port\n"
    assert captured.out == ""


def test_demo_on_a_busy_dashboard_port_names_that_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _listening() as busy, _listening() as free_later:
        port = busy.getsockname()[1]
        broker = free_later.getsockname()[1]
        free_later.close()
        assert main(["demo", "--port", str(broker), "--api-port", str(port)]) == 2
    assert capsys.readouterr().err == f"error: port {port} is in use, try --api-port\n"


def test_demo_without_its_broker_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "amqtt", None)
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)
    assert main(["demo", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'coffee-telemetry[demo]'" in err

"""The onboarding verbs as a technician runs them: the real CLI in child processes.

A simulated meter prints on a pseudo-terminal behind an emulated UART line (4800 7E1,
which the pty itself cannot be set to); ``capture`` finds the settings and records,
``propose`` writes a block that ``check-config`` accepts, ``replay`` plays the capture
to a second ``capture``, which records the same bytes; bad files and a pulled cable
end in a message and an exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from coffee_telemetry.agent.onboard.capfile import read_capture
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.tickets import LAYOUTS, LayoutMeterSim
from coffee_telemetry.simulators.uart import UartFormat, UartPty

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "coffee_telemetry.agent.cli"]


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60.0)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text


async def test_capture_propose_check_config_replay(tmp_path: Path) -> None:
    port = UartPty(UartFormat.parse("4800 7E1"), link=str(tmp_path / "medidor"))
    port.open()
    sim = LayoutMeterSim(port, LAYOUTS["two_columns"], interval_s=0.5, seed=11)
    capture_file = tmp_path / "captura.txt"
    try:
        job = asyncio.create_task(
            run_cli(
                "capture", port.path, "-o", str(capture_file), "--duration", "12", "--lang", "en"
            )
        )
        await asyncio.sleep(1.0)
        printing = asyncio.create_task(sim.run())
        code, out, err = await job
        printing.cancel()
    finally:
        port.close()
    no_traceback(out, err)
    assert code == 0, out + err
    assert "Settings found: 4800 7E1" in out
    assert "  | Umid.: " in out  # the live view, parity bit removed
    assert "Next: coffee-telemetry propose" in out
    capture = read_capture(capture_file)
    assert capture.serial is not None
    assert str(capture.serial) == "4800 7E1"

    code, block, report = await run_cli("propose", str(capture_file), "--lang", "en")
    no_traceback(block, report)
    assert code == 0, report
    assert "Proposed driver: moisture.ticket" in report
    assert "bytesize = 7" in block
    assert "parity = 'E'" in block
    site = tmp_path / "site.toml"
    site.write_text(f'[site]\nid = "teste"\n[agent]\ndata_dir = "{tmp_path}"\n\n{block}')
    code, out, err = await run_cli("check-config", str(site))
    assert code == 0, out + err
    assert "device    umidade-1 moisture.ticket" in out

    # The capture played back to a second capture (settings given): the same bytes.
    replay_link = tmp_path / "replay"
    second = tmp_path / "segunda.txt"
    player = asyncio.create_task(
        run_cli(
            "replay", str(capture_file), "--pty", str(replay_link), "--speed", "4", "--hold", "6"
        )
    )
    for _ in range(100):
        if replay_link.is_symlink():
            break
        await asyncio.sleep(0.05)
    code, out, err = await run_cli(
        "capture", str(replay_link), "-o", str(second), "--baud", "4800", "--idle-stop", "1.5"
    )
    no_traceback(out, err)
    assert code == 0, out + err
    code, out, err = await player
    no_traceback(out, err)
    assert code == 0, out + err
    assert read_capture(second).recorded_bytes() == capture.recorded_bytes()


async def test_port_pulled_mid_capture(tmp_path: Path) -> None:
    port = UartPty(UartFormat.parse("9600 8N1"), link=str(tmp_path / "medidor"))
    port.open()
    sim = TicketMeterSim(port, interval_s=0.3, seed=12)
    capture_file = tmp_path / "captura.txt"
    job = asyncio.create_task(
        run_cli("capture", port.path, "-o", str(capture_file), "--baud", "9600")
    )
    await asyncio.sleep(1.0)
    printing = asyncio.create_task(sim.run())
    await asyncio.sleep(1.5)
    port.unplug()
    code, out, err = await job
    printing.cancel()
    port.close()
    no_traceback(out, err)
    assert code == 1
    assert "sumiu" in out
    assert "captura parcial" in out
    capture = read_capture(capture_file)
    assert capture.end_reason == "port-lost"
    assert capture.recorded_bytes()


async def test_ctrl_c_ends_a_capture_cleanly(tmp_path: Path) -> None:
    port = UartPty(UartFormat.parse("9600 8N1"))
    port.open()
    capture_file = tmp_path / "captura.txt"
    try:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "capture",
            port.tty_path,
            "-o",
            str(capture_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        port.close()
    no_traceback(out.decode(), err.decode())
    assert "Aperte IMPRIMIR" in out.decode()
    assert read_capture(capture_file).end_reason == "stopped"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (os.urandom(2000), "not a coffee-telemetry capture"),
        (b"coffee-telemetry capture 1\nport: x\nlisten: 9600 8N1\n0.1 < zz\n", "line 4"),
    ],
    ids=["junk", "bad-line"],
)
async def test_bad_files_are_refused_clearly(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "captura.txt"
    path.write_bytes(content)
    for verb in (["propose", str(path)], ["replay", str(path), "--pty", str(tmp_path / "p")]):
        code, out, err = await run_cli(*verb)
        no_traceback(out, err)
        assert code == 2
        assert message in err


async def test_cut_capture_still_proposes(tmp_path: Path) -> None:
    from coffee_telemetry.drivers.moisture_ticket import encode_ticket
    from tests.agent.onboard.helpers import capture_text

    text = capture_text(
        [encode_ticket(moisture_pct=11.0 + i / 10, sample_id=str(i)) for i in range(6)]
    )
    path = tmp_path / "cortada.txt"
    path.write_text(text[: len(text) * 2 // 3])
    code, block, report = await run_cli("propose", str(path))
    no_traceback(block, report)
    assert code == 0
    assert "Atenção" in report
    # These tickets are the driver's own layout: the block names its profile.
    assert "profile = 'moisture-ticket-pt'" in block
    assert "Perfil: moisture-ticket-pt" in report


async def test_missing_port_is_a_message(tmp_path: Path) -> None:
    code, out, err = await run_cli("capture", str(tmp_path / "nada"), "-o", str(tmp_path / "c.txt"))
    no_traceback(out, err)
    assert code == 1
    assert "Não foi possível abrir" in out
    assert not (tmp_path / "c.txt").exists()
    code, out, err = await run_cli("capture", "x", "--baud", "300")
    assert code == 2
    assert "baud rate 300" in err


async def test_check_config_names_profiles_and_refuses_unknown_ones(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    head = f'[site]\nid = "teste"\n[agent]\ndata_dir = "{tmp_path}"\n'
    site.write_text(
        head + '[[devices]]\nid = "umid-2"\nprofile = "tesma-plus2"\nport = "/dev/ttyUSB0"\n'
    )
    code, out, err = await run_cli("check-config", str(site))
    no_traceback(out, err)
    assert code == 0, out + err
    assert "device    umid-2 moisture.tesma /dev/ttyUSB0 (profile tesma-plus2)" in out
    site.write_text(
        head + '[[devices]]\nid = "umid-2"\nprofile = "gehaka-g650"\nport = "/dev/ttyUSB0"\n'
    )
    code, out, err = await run_cli("check-config", str(site))
    no_traceback(out, err)
    assert code == 2, out + err
    assert f"{site}: devices[0].profile: unknown profile 'gehaka-g650'; known profiles:" in err
    assert "'tesma-plus2'" in err
    assert "'st-gs-indicator'" in err

"""Serial port checks on real pseudo-terminals, each failure provoked.

The checks block (as the CLI runs them), so they run in a thread while the simulated
meter prints on the event loop. A pty carries bytes, not bits: the wrong-baud and
wrong-parity cases go through ``UartPty``, which garbles bytes as a real line would.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.doctor.serialports import (
    PortSpec,
    ServiceUser,
    check_access,
    check_exists,
    check_holders,
    check_port,
    check_traffic,
    may_read_write,
    service_user,
)
from coffee_telemetry.agent.onboard.lineformat import LineSettings
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from coffee_telemetry.simulators.uart import UartFormat, UartPty

NINE_600 = LineSettings(9600)


@contextlib.asynccontextmanager
async def printing(port: PtyPort) -> AsyncIterator[PtyPort]:
    """A ticket meter printing every 0.3 s on ``port`` for the block's length.

    It starts 0.3 s in, once the check has the port open and set: ``UartPty`` garbles
    by the settings the pty has when the meter writes, and before the check sets it
    those are the pty's defaults (a real UART would drop those bytes on open).
    """
    sim = TicketMeterSim(port, interval_s=0.3, lot="L-0001")

    async def later() -> None:
        await asyncio.sleep(0.3)
        await sim.run()

    task = asyncio.create_task(later())
    try:
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def uart(meter: str) -> Iterator[UartPty]:
    port = UartPty(UartFormat.parse(meter))
    port.open()
    try:
        yield port
    finally:
        port.close()


def me() -> ServiceUser:
    return service_user(pwd.getpwuid(os.geteuid()).pw_name)


async def test_a_printing_meter_passes_every_check() -> None:
    with uart("9600 8N1") as port:
        spec = PortSpec("umidade-1", port.tty_path, NINE_600)
        async with printing(port):
            results = await asyncio.to_thread(check_port, spec, me(), listen_s=1.5)
    assert [(r.check, r.status) for r in results] == [
        ("serial.exists", Status.OK),
        ("serial.access", Status.OK),
        ("serial.free", Status.OK),  # the simulator holds the pty's master: the other end
        ("serial.bytes", Status.OK),
    ]
    assert results[-1].message == "port_text"
    assert int(str(results[-1].values["size"])) > 0


async def test_a_meter_at_another_baud_rate_is_guessed() -> None:
    with uart("4800 8N1") as port:
        spec = PortSpec("umidade-1", port.tty_path, NINE_600)
        async with printing(port):
            result = await asyncio.to_thread(check_traffic, spec, listen_s=1.0, guess_s=15.0)
    assert result.status is Status.FAIL
    assert result.message == "port_garbage_guess"
    assert result.values["found"] == "4800 8N1"
    assert result.fix == "fix_port_settings"


async def test_a_meter_with_parity_is_told_apart_at_the_right_baud() -> None:
    with uart("9600 7E1") as port:
        spec = PortSpec("umidade-1", port.tty_path, NINE_600)
        async with printing(port):
            result = await asyncio.to_thread(check_traffic, spec, listen_s=1.5)
    assert result.status is Status.FAIL
    assert result.message == "port_wrong_format"
    assert result.values["found"] == "9600 7E1"


async def test_a_silent_port_warns() -> None:
    with uart("9600 8N1") as port:
        result = await asyncio.to_thread(
            check_traffic, PortSpec("umidade-1", port.tty_path, NINE_600), listen_s=0.5
        )
    assert (result.status, result.message) == (Status.WARN, "port_silent")


def test_a_missing_port_fails_and_stops_the_other_checks(tmp_path: Path) -> None:
    spec = PortSpec("umidade-1", str(tmp_path / "ttyUSB9"), NINE_600)
    results = check_port(spec, me())
    assert [(r.message, r.status) for r in results] == [("port_missing", Status.FAIL)]
    link = tmp_path / "usb-FTDI-if00"
    link.symlink_to(tmp_path / "ttyUSB7")
    dangling = check_exists(PortSpec("umidade-1", str(link), NINE_600))
    assert (dangling.message, dangling.values["real"]) == (
        "port_dangling",
        str(tmp_path / "ttyUSB7"),
    )


def hold(path: str, *argv_marker: str) -> subprocess.Popen[bytes]:
    """Another process holding ``path`` open until killed; ready when it says so."""
    code = (
        "import sys, time\nf = open(sys.argv[1], 'rb', buffering=0)\n"
        "print('ok', flush=True)\ntime.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, path, *argv_marker], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ok\n"
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_a_port_held_by_another_process_fails_with_its_pid() -> None:
    with uart("9600 8N1") as port:
        holder = hold(port.tty_path)
        try:
            spec = PortSpec("umidade-1", port.tty_path, NINE_600)
            results = check_port(spec, me(), listen_s=0.5)
        finally:
            stop(holder)
    held = results[-1]
    assert (held.check, held.status, held.message) == ("serial.free", Status.FAIL, "port_held")
    assert held.values["pid"] == holder.pid
    assert f"PID {holder.pid} (python" in str(held.values["holders"])
    # Not listened to: the bytes belong to whoever holds it.
    assert all(r.check != "serial.bytes" for r in results)


def test_the_agent_holding_its_port_is_normal() -> None:
    with uart("9600 8N1") as port:
        agent = hold(port.tty_path, "coffee-telemetry", "run")
        try:
            spec = PortSpec("umidade-1", port.tty_path, NINE_600)
            results = check_port(spec, me(), listen_s=0.5)
        finally:
            stop(agent)
    assert (results[-1].status, results[-1].message) == (Status.OK, "port_held_by_agent")


def test_a_uucp_lock_file_holds_the_port_and_a_stale_one_does_not(tmp_path: Path) -> None:
    with uart("9600 8N1") as port:
        spec = PortSpec("umidade-1", port.tty_path, NINE_600)
        lock = tmp_path / f"LCK..{Path(port.tty_path).name}"
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            lock.write_text(f"{sleeper.pid:>10}\n")
            held, holders = check_holders(spec, lock_dirs=[tmp_path])
        finally:
            sleeper.kill()
            sleeper.wait()
        assert (held.status, held.message) == (Status.FAIL, "port_held")
        assert [(h.pid, h.how) for h in holders] == [(sleeper.pid, "lock")]
        free, _ = check_holders(spec, lock_dirs=[tmp_path])  # the pid is gone: stale
        assert (free.status, free.message) == (Status.OK, "port_free")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own temp dirs are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="doctor-dev-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def device_file(tmp_path: Path, mode: int, group: str = "dialout") -> Path:
    path = tmp_path / "ttyUSB0"
    path.write_bytes(b"")
    os.chown(path, 0, grp.getgrnam(group).gr_gid)
    path.chmod(mode)
    return path


def kernel_lets_open(path: Path, user: str, extra_groups: list[str]) -> bool:
    """Whether the kernel lets ``user`` (with exactly these groups) open ``path`` r/w."""
    done = subprocess.run(
        ["/bin/sh", "-c", 'exec 3<>"$1"', "sh", str(path)],
        user=user,
        group=pwd.getpwnam(user).pw_gid,
        extra_groups=extra_groups,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 or b"Permission denied" in done.stderr, done.stderr
    return done.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="see test_access_as_a_normal_user")
def test_access_is_judged_for_the_service_user_not_for_root(open_dir: Path) -> None:
    # As root, os.access always says yes; what matters is the service user's view.
    # The check applies the kernel's permission rule to that user's uid and groups,
    # and each verdict is compared with the kernel's own answer for a process running
    # as that user (a subprocess started with its uid and exactly those groups).
    nobody = ServiceUser.named("nobody")
    in_dialout = ServiceUser(
        nobody.name, nobody.uid, nobody.gids | {grp.getgrnam("dialout").gr_gid}
    )
    closed = device_file(open_dir, 0o000)
    spec = PortSpec("umidade-1", str(closed), NINE_600)
    denied = check_access(spec, nobody)
    assert (denied.status, denied.fix, denied.values["mode"]) == (
        Status.FAIL,
        "fix_port_mode",
        "000",
    )
    assert kernel_lets_open(closed, "nobody", []) is False

    closed.chmod(0o660)
    group_only = check_access(spec, nobody)
    assert (group_only.status, group_only.fix) == (Status.FAIL, "fix_port_group")
    assert group_only.values["group"] == "dialout"
    assert kernel_lets_open(closed, "nobody", []) is False

    allowed = check_access(spec, in_dialout)
    assert allowed.status is Status.OK
    assert kernel_lets_open(closed, "nobody", ["dialout"]) is True
    assert check_access(spec, ServiceUser.named("root")).status is Status.OK


def test_access_as_a_normal_user(tmp_path: Path) -> None:
    # Runs for any user: a mode-000 file that this user owns.
    path = tmp_path / "ttyUSB0"
    path.write_bytes(b"")
    path.chmod(0o000)
    st = path.stat()
    owner = ServiceUser("owner", st.st_uid if st.st_uid else 12345, frozenset())
    if st.st_uid == 0:
        os.chown(path, owner.uid, -1)
        st = path.stat()
    assert may_read_write(st, owner) is False
    path.chmod(0o600)
    assert may_read_write(path.stat(), owner) is True
    stranger = ServiceUser("stranger", owner.uid + 1, frozenset({st.st_gid + 1}))
    assert may_read_write(path.stat(), stranger) is False
    path.chmod(0o606)
    assert may_read_write(path.stat(), stranger) is True


def test_every_result_renders_in_both_languages(tmp_path: Path) -> None:
    from coffee_telemetry.agent.doctor.texts import render

    spec = PortSpec("umidade-1", str(tmp_path / "x"), NINE_600)
    results: list[Result] = [check_exists(spec), check_access(spec, me())]
    for result in results:
        assert render(result, "pt-BR") != render(result, "en")

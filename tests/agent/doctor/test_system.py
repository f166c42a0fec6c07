"""Clock, disk, storage and systemd checks, with the outside world injected where needed."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.doctor.result import Status
from coffee_telemetry.agent.doctor.system import (
    ClockState,
    Runner,
    block_device,
    check_clock,
    check_disk,
    check_storage,
    check_systemd,
    kernel_clock,
    parse_timedatectl,
)

SYNCED = "Timezone=America/Sao_Paulo\nLocalRTC=no\nCanNTP=yes\nNTP=yes\nNTPSynchronized=yes\n"
NOT_SYNCED = "NTP=no\nNTPSynchronized=no\nTimeUSec=Thu 1970-01-01 00:00:05 UTC\n"


def answering(text: str | None, code: int = 0) -> Runner:
    def run(argv: Sequence[str], timeout_s: float) -> tuple[int, str] | None:
        assert timeout_s > 0
        return None if text is None else (code, text)

    return run


def test_timedatectl_says_synchronised() -> None:
    result = check_clock(run=answering(SYNCED), kernel=lambda: None)
    assert (result.status, result.message, result.values["source"]) == (
        Status.OK,
        "clock_synced",
        "timedatectl",
    )


def test_timedatectl_says_not_synchronised_and_ntp_off() -> None:
    result = check_clock(run=answering(NOT_SYNCED), kernel=lambda: None)
    assert (result.status, result.fix) == (Status.WARN, "fix_clock_ntp_off")


def test_without_timedatectl_the_kernel_is_asked() -> None:
    kernel = ClockState(synchronized=False, ntp=None, source="adjtimex")
    result = check_clock(run=answering(None), kernel=lambda: kernel)
    assert (result.status, result.values["source"], result.fix) == (
        Status.WARN,
        "adjtimex",
        "fix_clock_unsynced",
    )
    # timedatectl present but without a bus ("System has not been booted with systemd").
    failing = check_clock(run=answering("", code=1), kernel=lambda: kernel)
    assert failing.values["source"] == "adjtimex"


def test_when_nothing_answers_it_says_it_cannot_tell() -> None:
    result = check_clock(run=answering(None), kernel=lambda: None)
    assert (result.status, result.message) == (Status.WARN, "clock_unknown")


def test_a_clock_before_the_installation_fails_whatever_the_sources_say() -> None:
    result = check_clock(
        run=answering(SYNCED),
        now=lambda: 5.0,
        floor_s=time.time() - 86400,
    )
    assert (result.status, result.message) == (Status.FAIL, "clock_before_floor")
    assert result.values["now"] == "1970-01-01 00:00:05 UTC"


def test_the_real_kernel_answers_on_linux() -> None:
    state = kernel_clock()
    assert state is not None
    assert state.source == "adjtimex"
    assert isinstance(state.synchronized, bool)


@given(st.text())
def test_any_timedatectl_output_parses_to_a_state(text: str) -> None:
    state = parse_timedatectl(text)
    assert state.synchronized in (True, False, None)
    assert state.ntp in (True, False, None)


@given(st.lists(st.sampled_from(["yes", "no", "", "maybe", "YES"])), st.text())
def test_the_last_ntpsynchronized_line_decides(values: list[str], noise: str) -> None:
    lines = [f"NTPSynchronized={v}" for v in values]
    text = "\n".join([noise.replace("\n", " ").replace("=", ""), *lines])
    expected = {"yes": True, "no": False}.get(values[-1].lower()) if values else None
    assert parse_timedatectl(text).synchronized is expected


def fake_vfs(free_mb: float, total_mb: float) -> os.statvfs_result:
    block = 4096
    blocks = int(total_mb * 1e6 / block)
    avail = int(free_mb * 1e6 / block)
    return os.statvfs_result((block, block, blocks, avail, avail, 0, 0, 0, 0, 255))


def test_disk_space_floors(tmp_path: Path) -> None:
    def with_free(free_mb: float, total_mb: float = 32000, quota: float = 512) -> object:
        result = check_disk(tmp_path, quota_mb=quota, statvfs=lambda _: fake_vfs(free_mb, total_mb))
        return result.status, result.message

    assert with_free(20000) == (Status.OK, "disk_ok")
    assert with_free(50) == (Status.FAIL, "disk_low")
    assert with_free(1000, total_mb=32000) == (Status.FAIL, "disk_low")  # 3 %
    assert with_free(3000, total_mb=32000) == (Status.WARN, "disk_low")  # 9 %
    assert with_free(900, total_mb=1000, quota=2000) == (Status.WARN, "disk_below_quota")
    missing = check_disk(tmp_path / "nope", quota_mb=1, statvfs=lambda _: fake_vfs(9e3, 1e4))
    assert (missing.status, missing.message) == (Status.WARN, "disk_no_dir")


def test_the_real_statvfs_reads_the_data_dir(tmp_path: Path) -> None:
    result = check_disk(tmp_path, quota_mb=1)
    assert int(str(result.values["free_mb"])) > 0


def fake_sys(tmp_path: Path, data_dir: Path, disk: str, part: str) -> Path:
    """A /sys with the block device holding ``data_dir`` named ``disk``/``part``."""
    dev = os.stat(data_dir).st_dev
    partition = tmp_path / "sys" / "devices" / "platform" / disk / part
    partition.mkdir(parents=True)
    (partition / "partition").write_text("2\n")
    links = tmp_path / "sys" / "dev" / "block"
    links.mkdir(parents=True)
    (links / f"{os.major(dev)}:{os.minor(dev)}").symlink_to(partition)
    return tmp_path / "sys"


def test_an_sd_card_with_full_sync_warns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sys_root = fake_sys(tmp_path, data, "mmcblk0", "mmcblk0p2")
    assert block_device(data, sys_root=sys_root) == "mmcblk0"
    full = check_storage(data, synchronous="full", sys_root=sys_root)
    assert (full.status, full.message, full.fix) == (
        Status.WARN,
        "storage_sd_full",
        "fix_storage_sd",
    )
    normal = check_storage(data, synchronous="normal", sys_root=sys_root)
    assert (normal.status, normal.message) == (Status.OK, "storage_sd_normal")


def test_a_disk_that_is_not_an_sd_card(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sys_root = fake_sys(tmp_path, data, "sda", "sda1")
    result = check_storage(data, synchronous="full", sys_root=sys_root)
    assert (result.status, result.message, result.values["device"]) == (
        Status.OK,
        "storage_not_sd",
        "sda",
    )
    unknown = check_storage(data, synchronous="full", sys_root=tmp_path / "empty")
    assert unknown.message == "storage_unknown"


def test_systemd_absent_is_said() -> None:
    result = check_systemd(booted=lambda: False)
    assert (result.status, result.message) == (Status.WARN, "systemd_absent")


def test_systemd_unit_states() -> None:
    def state(text: str) -> tuple[Status, str | None]:
        result = check_systemd(run=answering(text, 3), booted=lambda: True)
        return result.status, result.fix

    assert state("active\n") == (Status.OK, None)
    assert state("failed\n") == (Status.FAIL, "fix_systemd_start")
    assert state("inactive\n") == (Status.FAIL, "fix_systemd_start")
    assert state("activating\n") == (Status.WARN, "fix_systemd_wait")
    silent = check_systemd(run=answering(None), booted=lambda: True)
    assert silent.message == "systemd_no_answer"

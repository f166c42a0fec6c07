"""``replay`` on a real pseudo-terminal, read back as the agent reads a port (pyserial, raw)."""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time

import pytest
import serial

from coffee_telemetry.agent.onboard.capfile import parse_capture
from coffee_telemetry.agent.onboard.replay import ReplayChunk, play, schedule, wait_for_reader
from coffee_telemetry.simulators.pty import PtyPort
from tests.agent.onboard.helpers import capture_text

TICKET = b"\x1b@GEHAKA G650\r\nUmidade:  11,8 %\r\nAmostra: 0042\r\n\x1dVB\x00\x0c"


class Reader:
    """Reads a port in a thread, keeping each read's arrival time."""

    def __init__(self, path: str, *, start: bool = True) -> None:
        self.port = serial.Serial(path, 9600, timeout=0.05)
        self.reads: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        # What each read delivers, when it does: no read timeout pools bytes.
        fd = self.port.fd
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                self.reads.append((time.monotonic(), os.read(fd, 4096)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.port.close()

    def arrival(self, offset: int) -> float:
        """When byte ``offset`` of the stream arrived."""
        seen = 0
        for at, data in self.reads:
            seen += len(data)
            if seen > offset:
                return at
        raise AssertionError(f"byte {offset} never arrived")


async def replay_to_reader(chunks: list[ReplayChunk], speed: float) -> tuple[Reader, float]:
    with_port = PtyPort()
    with_port.open()
    reader = Reader(with_port.tty_path)
    try:
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await play(with_port, chunks, speed=speed)
        await asyncio.sleep(0.2)
    finally:
        reader.close()
        with_port.close()
    return reader, started


async def test_replay_is_byte_for_byte_and_on_time() -> None:
    bursts = [TICKET * 2, TICKET, bytes(range(256)), TICKET]
    text = capture_text(bursts, piece=(5, 40), gap_s=(0.2, 1.5), seed=8)
    chunks = schedule(parse_capture(text.encode()))
    reader, started = await replay_to_reader(chunks, speed=1.0)
    received = b"".join(data for _, data in reader.reads)
    assert received == b"".join(c.data for c in chunks)
    offset = 0
    first = reader.arrival(0)
    assert first - started < 0.01
    for chunk in chunks:
        late = reader.arrival(offset) - first - chunk.at_s
        assert abs(late) <= 0.010, f"chunk at {chunk.at_s:.3f} s off by {late * 1000:.1f} ms"
        offset += len(chunk.data)


async def test_replay_faster() -> None:
    text = capture_text([TICKET] * 4, gap_s=(1.0, 1.0), seed=9)
    chunks = schedule(parse_capture(text.encode()))
    reader, started = await replay_to_reader(chunks, speed=10.0)
    assert b"".join(d for _, d in reader.reads) == TICKET * 4
    took = reader.arrival(sum(len(c.data) for c in chunks) - 1) - started
    assert took == pytest.approx(chunks[-1].at_s / 10, abs=0.05)


async def test_a_full_pty_makes_the_replay_wait_not_drop() -> None:
    port = PtyPort()
    port.open()
    try:
        reader = Reader(port.tty_path, start=False)  # open, but not reading yet
        big = bytes(range(256)) * 400  # more than a pty holds
        writing = asyncio.create_task(port.write_all(big))
        await asyncio.sleep(0.1)
        assert not writing.done()  # the pty is full: it waits
        reader.start()
        await asyncio.wait_for(writing, 5)
        await asyncio.sleep(0.2)
        reader.close()
    finally:
        port.close()
    assert port.dropped_bytes == 0
    assert b"".join(d for _, d in reader.reads) == big


def test_schedule_picks_the_recording() -> None:
    text = capture_text([b"abc", b"def"], first_s=2.0, gap_s=(1.5, 1.5))
    capture = parse_capture(text.replace("serial: 9600 8N1\n", "").encode())
    assert schedule(capture) == []
    assert [c.data for c in schedule(capture, everything=True)] == [b"abc", b"def"]
    capture = parse_capture(text.encode())
    assert schedule(capture)[0].at_s == 0.0


async def test_waits_for_a_reader() -> None:
    port = PtyPort()
    port.open()
    try:
        assert not await wait_for_reader(port.tty_path, timeout_s=0.2)
        fd = os.open(port.tty_path, os.O_RDONLY | os.O_NOCTTY)
        try:
            assert await asyncio.to_thread(_has_reader_from_child, port.tty_path)
        finally:
            os.close(fd)
    finally:
        port.close()


def _has_reader_from_child(path: str) -> bool:
    # The test process holds the pty; ask from a child, as another program would see it.
    import subprocess
    import sys

    code = (
        "import asyncio,sys;"
        "from coffee_telemetry.agent.onboard.replay import wait_for_reader;"
        f"sys.exit(0 if asyncio.run(wait_for_reader({path!r}, timeout_s=2)) else 1)"
    )
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_bad_speed_is_refused() -> None:
    port = PtyPort()
    port.open()
    try:
        with pytest.raises(ValueError, match="speed"):
            await play(port, [ReplayChunk(0.0, b"x")], speed=0)
    finally:
        port.close()

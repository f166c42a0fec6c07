"""A capture played onto a pseudo-terminal, at its own pace: ``coffee-telemetry replay``.

The pty stands for the meter: the agent, ``propose`` on a new capture, or ``cat`` opens
its path as it would open ``/dev/ttyUSB0``. Each received chunk of the recording is
written whole at its own time after the first (divided by ``speed``); the schedule is
absolute (``start + t / speed``), so lateness never accumulates, and a full pty buffer
makes the write wait rather than drop (``PtyPort.write_all``). Sent chunks (``--send``)
are the meter's input and are not played.

A pty drops nothing while nobody has it open, but the program that opens it flushes
what was waiting (pyserial does, as a UART driver discards what arrived before the
open). So by default the replay waits until another process has the pty open
(``wait_for_reader``, which looks in ``/proc``), then ``start_delay_s`` for it to set
the port up, and only then plays.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.onboard.capfile import Capture
from coffee_telemetry.simulators.pty import PtyPort

__all__ = ["Played", "ReplayChunk", "play", "schedule", "wait_for_reader"]


@dataclass(frozen=True, slots=True)
class ReplayChunk:
    """A chunk to write ``at_s`` seconds after the first.

    Attributes:
        at_s: When, from the first chunk, at speed 1.
        data: The bytes.
    """

    at_s: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Played:
    """How a replay went.

    Attributes:
        chunks: Chunks written.
        size: Bytes written.
        late_s: For each chunk, how late its write started (seconds).
    """

    chunks: int
    size: int
    late_s: tuple[float, ...]

    @property
    def max_late_s(self) -> float:
        """The latest a chunk started."""
        return max(self.late_s, default=0.0)


def schedule(capture: Capture, *, everything: bool = False) -> list[ReplayChunk]:
    """The chunks to play: the recording, or (``everything``) every received chunk.

    Times start at 0 with the first chunk.
    """
    chunks = [c for c in capture.chunks if not c.sent] if everything else capture.recording()
    if not chunks:
        return []
    first = chunks[0].t_s
    return [ReplayChunk(c.t_s - first, c.data) for c in chunks]


async def play(
    port: PtyPort,
    chunks: Sequence[ReplayChunk],
    *,
    speed: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    on_chunk: Callable[[int, ReplayChunk], None] | None = None,
) -> Played:
    """Write ``chunks`` to ``port`` at their times divided by ``speed``.

    Raises:
        ValueError: ``speed`` is not positive.
        OSError: The pty went away.
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive: {speed!r}")
    start = clock()
    late: list[float] = []
    size = 0
    for index, chunk in enumerate(chunks):
        due = start + chunk.at_s / speed
        wait = due - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        late.append(max(0.0, clock() - due))
        await port.write_all(chunk.data)
        size += len(chunk.data)
        if on_chunk is not None:
            on_chunk(index, chunk)
    return Played(len(late), size, tuple(late))


def _holders(tty_path: str) -> bool:
    me = str(os.getpid())
    proc = Path("/proc")
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == tty_path:
                    return True
            except OSError:
                continue
    return False


async def wait_for_reader(
    tty_path: str, *, timeout_s: float | None = None, poll_s: float = 0.05
) -> bool:
    """Wait until a process other than this one has ``tty_path`` open.

    Returns:
        Whether one did before ``timeout_s`` (``None``: wait for ever).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    while not await asyncio.to_thread(_holders, tty_path):
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True

"""The listening loop behind ``coffee-telemetry capture``.

Theory of operation
-------------------

A person stands at the meter pressing PRINT; this loop holds the port. It never
writes to the meter unless ``--send`` asks it to (protocols §1.1: these are legal
metrology instruments; only read them).

1. *Detect* (unless the settings are given): the port is set to what the ``Detector``
   asks (8N1 at each baud rate in turn, then the format found, to confirm it), every
   chunk is recorded under a ``listen:`` line, and each judged sample is reported
   with what happens next. The chunks of the sample being judged are held back until
   its verdict: when it decides, the ``serial:`` line is written *before* them, so the
   presses that found the settings are part of the recording.
2. *Record*: every chunk goes to the capture file (flushed at once, so a crash or an
   unplugged cable keeps everything before it) and to the screen, control codes
   named, one line per line the meter printed.
3. *Stop* on Ctrl-C (``stop()``), after ``duration_s``, after ``idle_stop_s`` of silence
   once something was recorded, or when the port goes away. The end line says which.

What the person is waiting for is always on screen: the setting being tried and
"press PRINT", a line per judged sample, and a progress line every ``status_every_s``
while nothing happens.

The port is a ``CapturePort`` (``SerialCapturePort`` for real devices and the tests'
pseudo-terminals); the clock is passed in.
"""

from __future__ import annotations

import contextlib
import os
import select
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import serial

from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.onboard.capfile import CaptureWriter, EndReason
from coffee_telemetry.agent.onboard.detect import (
    Assessment,
    Decided,
    Decision,
    Detector,
    Listening,
    Sampled,
    text_quality,
)
from coffee_telemetry.agent.onboard.lineformat import LineSettings
from coffee_telemetry.agent.onboard.texts import Lang, number, say
from coffee_telemetry.agent.onboard.visible import visible, visible_lines

__all__ = [
    "CaptureOptions",
    "CapturePort",
    "CaptureResult",
    "Console",
    "SerialCapturePort",
    "SettingsRefused",
    "run_capture",
]

_DEVICE = "capture"


class SettingsRefused(PortError):
    """The port cannot be set as asked (a pseudo-terminal with parity, a bad baud rate)."""


class CapturePort(Protocol):
    """A serial port as the capture loop uses it."""

    def configure(self, settings: LineSettings) -> None:
        """Open at, or switch to, ``settings``; drop bytes heard before.

        Raises:
            SettingsRefused: The port cannot take them (it keeps its old settings).
            PortError: The port is missing, busy or gone.
        """
        ...

    def read(self, timeout_s: float) -> bytes:
        """Bytes that arrived within ``timeout_s`` (``b""`` if none).

        Raises:
            PortError: The port went away.
        """
        ...

    def write(self, data: bytes) -> None:
        """Send bytes to the meter (only with ``--send``)."""
        ...

    def close(self) -> None:
        """Release the port."""
        ...


class SerialCapturePort:
    """A ``CapturePort`` on a real serial device (or pseudo-terminal), with pyserial.

    The port is opened once, exclusively, at 8N1 (every port can do that), and
    reconfigured in place. Reads wait on the file descriptor and take what the kernel
    has, so each chunk is what one read delivered.

    Args:
        path: The device path (``/dev/serial/by-id/...``).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._serial: serial.Serial | None = None

    def _fail(self, message: str, exc: BaseException) -> PortError:
        return PortError(f"{message}: {exc}", device=_DEVICE, port=self._path)

    def configure(self, settings: LineSettings) -> None:
        if self._serial is None:
            port = serial.Serial()
            port.port = self._path
            port.baudrate = 9600
            port.exclusive = True
            port.timeout = 0
            try:
                port.open()
            except (serial.SerialException, OSError, termios.error) as exc:
                raise self._fail("cannot open", exc) from exc
            self._serial = port
        port = self._serial
        old = port.get_settings()
        wanted = dict(
            old,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
        )
        try:
            port.apply_settings(wanted)
        except (serial.SerialException, ValueError, termios.error) as exc:
            with contextlib.suppress(serial.SerialException, ValueError, termios.error):
                port.apply_settings(old)
            raise SettingsRefused(
                f"refuses {settings}: {exc}", device=_DEVICE, port=self._path
            ) from exc
        except OSError as exc:
            raise self._fail("gone", exc) from exc
        with contextlib.suppress(serial.SerialException, OSError, termios.error):
            port.reset_input_buffer()

    def read(self, timeout_s: float) -> bytes:
        port = self._serial
        if port is None or port.fd is None:
            raise PortError("not open", device=_DEVICE, port=self._path)
        try:
            ready, _, _ = select.select([port.fd], [], [], max(0.0, timeout_s))
            if not ready:
                return b""
            data = os.read(port.fd, 4096)
        except OSError as exc:
            raise self._fail("gone", exc) from exc
        if not data:
            raise PortError(
                "gone: end of file (device unplugged?)", device=_DEVICE, port=self._path
            )
        return data

    def write(self, data: bytes) -> None:
        port = self._serial
        if port is None:
            raise PortError("not open", device=_DEVICE, port=self._path)
        try:
            port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise self._fail("write failed", exc) from exc

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError, termios.error):
                port.close()


class Console(Protocol):
    """Where the loop tells the person what is happening."""

    def status(self, text: str) -> None:
        """A progress or status line."""
        ...

    def text(self, line: str) -> None:
        """A line the meter printed, control codes named."""
        ...


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """How to capture.

    Attributes:
        port: The port's path, for messages.
        file: The capture file's name, for messages.
        settings: The meter's settings if known (no detection), else ``None``.
        detect_timeout_s: Detection gives up after this long.
        duration_s: Stop after this long in all.
        idle_stop_s: Stop after this much silence once something was recorded.
        send: Bytes written after each change of settings (``--send``); empty: never write.
        status_every_s: A progress line at least this often.
        lang: The messages' language.
        make_detector: Makes the detector (tests shorten its timings).
    """

    port: str
    file: str
    settings: LineSettings | None = None
    detect_timeout_s: float = 600.0
    duration_s: float | None = None
    idle_stop_s: float | None = None
    send: bytes = b""
    status_every_s: float = 5.0
    lang: Lang = "pt-BR"
    make_detector: Callable[[], Detector] = Detector


@dataclass(frozen=True, slots=True)
class CaptureResult:
    """How a capture ended.

    Attributes:
        decision: Detection's decision (``None`` when settings were given).
        settings: The settings recorded at, if any.
        recorded_bytes: Bytes in the recording.
        bursts: Bursts of bytes in the recording.
        reason: Why it stopped (the end line's reason).
        error: The port error, when the port went away or could not be opened.
    """

    decision: Decision | None
    settings: LineSettings | None
    recorded_bytes: int
    bursts: int
    reason: EndReason
    error: str | None = None


class _Screen:
    """The live view: whole lines as the meter prints them, a partial one at a pause."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._held = b""

    def feed(self, data: bytes) -> None:
        buffer = self._held + data
        self._held = _tail(buffer)
        for line in visible_lines(buffer[: len(buffer) - len(self._held)])[:-1]:
            self._console.text(line)

    def pause(self) -> None:
        if self._held:
            self._console.text(visible(self._held, ascii_only=False))
            self._held = b""


def _tail(data: bytes) -> bytes:
    # The bytes after the last line end (LF, FF, or CR not followed by LF).
    for i in range(len(data) - 1, -1, -1):
        byte = data[i]
        if byte in (0x0A, 0x0C) or (byte == 0x0D and data[i + 1 : i + 2] != b"\n"):
            return data[i + 1 :]
    return data


def _level(confidence: float) -> str:
    if confidence >= 0.9:
        return "level_high"
    return "level_medium" if confidence >= 0.7 else "level_low"


class _Loop:
    def __init__(
        self,
        port: CapturePort,
        writer: CaptureWriter,
        console: Console,
        options: CaptureOptions,
        clock: Callable[[], float],
    ) -> None:
        self.port = port
        self.writer = writer
        self.console = console
        self.opts = options
        self.clock = clock
        self.start = clock()
        self.lang: Lang = options.lang
        self.screen = _Screen(console)
        self.detector = None if options.settings else options.make_detector()
        self.decision: Decision | None = None
        self.settings: LineSettings | None = options.settings
        self.listening = options.settings or LineSettings()
        self.held: list[tuple[float, bytes]] = []  # chunks of the sample being judged
        self.recorded = 0
        self.bursts = 0
        self.in_burst = False
        self.last_bytes_at: float | None = None
        self.last_status_at = 0.0
        self.quality_checked = False
        self.sample = bytearray()  # detection: for the preview; recording: for check_text
        self.opened = False

    def now(self) -> float:
        return self.clock() - self.start

    def say(self, key: str, **values: object) -> None:
        self.console.status(say(self.lang, key, **values))

    # -- settings ------------------------------------------------------------------

    def listen(self, settings: LineSettings) -> bool:
        """Set the port; False when it refuses."""
        try:
            self.port.configure(settings)
        except SettingsRefused:
            return False
        self.flush_held()
        self.listening = settings
        self.writer.listen(settings)
        self.last_bytes_at = None
        self.last_status_at = self.now()
        if self.opts.send:
            self.port.write(self.opts.send)
            self.writer.chunk(self.now(), self.opts.send, sent=True)
            self.say("sent", data=visible(self.opts.send))
        return True

    def flush_held(self) -> None:
        for t_s, data in self.held:
            self.writer.chunk(t_s, data)
        self.held.clear()

    # -- detection -----------------------------------------------------------------

    def detection_events(self) -> None:
        detector = self.detector
        assert detector is not None
        while events := detector.events():
            for event in events:
                match event:
                    case Sampled(assessment=found):
                        self.sampled(found)
                    case Listening(settings=settings, attempt=attempt, attempts=attempts):
                        if event.confirming:
                            self.say("confirm", settings=settings)
                        else:
                            self.say(
                                "listen",
                                port=self.opts.port,
                                settings=settings,
                                attempt=attempt,
                                attempts=attempts,
                            )
                        if not self.listen(settings):
                            self.say("refused", settings=settings)
                            detector.port_refused()
                    case Decided(decision=decision):
                        self.decided(decision)

    def sampled(self, found: Assessment) -> None:
        self.say(
            "sample_clean" if found.verdict == "clean" else "sample_garbage",
            size=found.size,
            settings=LineSettings(found.baudrate).with_format(self.listening.format),
            quality=number(100 * found.quality, self.lang),
            lines=found.line_ends,
            errors=found.errors,
            preview=visible(bytes(self.sample[:24])),
        )
        self.sample.clear()

    def decided(self, decision: Decision) -> None:
        self.decision = decision
        settings = decision.settings
        if settings is None:
            best = decision.best
            key = {"silence": "cannot_silence", "ambiguous": "cannot_ambiguous"}.get(
                decision.reason, "cannot_garbage"
            )
            self.say(
                key,
                best="-" if best is None else best.settings,
                quality=number(100 * (best.quality if best else 0.0), self.lang),
            )
            self.flush_held()
            return
        found = decision.best
        if decision.reason == "confirmed":
            why = say(self.lang, "why_confirmed", settings=settings)
        elif decision.reason == "port-refused":
            why = say(self.lang, "why_refused", format=settings.format)
        else:
            why = say(
                self.lang,
                "why_clean",
                heard=LineSettings(settings.baudrate),
                format=settings.format,
                consistency=number(100 * (found.consistency if found else 0.0), self.lang),
            )
        self.say(
            "decided",
            settings=settings,
            level=say(self.lang, _level(decision.confidence)),
            confidence=number(100 * decision.confidence, self.lang),
            why=why,
        )
        self.writer.decide(
            settings,
            confidence=decision.confidence,
            detected=why,
            heard=self.listening if self.listening != settings else None,
        )
        self.settings = settings
        self.begin_recording()
        for t_s, data in self.held:
            self.writer.chunk(t_s, data)
            self.recorded += len(data)
            self.screen.feed(self.as_meter_sent(data))
        if self.held:
            self.bursts += 1
        self.held.clear()

    def begin_recording(self) -> None:
        assert self.settings is not None
        self.say("recording", file=self.opts.file, settings=self.settings)
        if self.listening != self.settings:
            self.say("recording_heard", heard=self.listening)

    # -- the loop ------------------------------------------------------------------

    def received(self, data: bytes, t_s: float) -> None:
        self.last_bytes_at = t_s
        if self.detector is not None and not self.detector.done:
            self.held.append((t_s, data))
            self.sample += data
            self.detector.receive_data(data, t_s)
            self.detection_events()
            return
        self.writer.chunk(t_s, data)
        self.recorded += len(data)
        if not self.in_burst:
            self.bursts += 1
            self.in_burst = True
        self.screen.feed(self.as_meter_sent(data))
        if not self.quality_checked and self.settings is not None:
            self.sample += data
            if len(self.sample) >= 128:
                self.check_text(self.settings)

    def as_meter_sent(self, data: bytes) -> bytes:
        """Bytes heard at 8 bits from a 7-bit meter, without their parity bit."""
        settings = self.settings
        if settings is not None and settings.bytesize == 7 and self.listening.bytesize == 8:
            return bytes(b & 0x7F for b in data)
        return data

    def check_text(self, settings: LineSettings) -> None:
        # Settings given by hand may be wrong: say so once, early.
        self.quality_checked = True
        quality = text_quality(self.as_meter_sent(bytes(self.sample)))
        self.sample.clear()
        if quality < 0.8:
            self.say("not_text", settings=settings, quality=number(100 * quality, self.lang))

    def quiet(self, t_s: float) -> None:
        detector = self.detector
        if detector is not None and not detector.done:
            detector.tick(t_s)
            self.detection_events()
            if not detector.done and t_s >= self.opts.detect_timeout_s:
                detector.give_up()
                self.detection_events()
        elif self.last_bytes_at is not None and t_s - self.last_bytes_at >= 0.3:
            self.in_burst = False
            self.screen.pause()
        if t_s - self.last_status_at >= self.opts.status_every_s:
            self.last_status_at = t_s
            self.heartbeat(t_s)

    def heartbeat(self, t_s: float) -> None:
        idle = number(t_s - (self.last_bytes_at or 0.0), self.lang)
        if self.settings is not None and self.recorded:
            self.say(
                "progress",
                elapsed=number(t_s, self.lang),
                bursts=self.bursts,
                size=self.recorded,
                idle=idle,
            )
        elif self.detector is not None and self.detector.pending_bytes:
            self.say("waiting_more", settings=self.listening, size=self.detector.pending_bytes)
        else:
            self.say("waiting", settings=self.listening, idle=idle)

    def stop_reason(self, t_s: float) -> EndReason | None:
        opts = self.opts
        if opts.duration_s is not None and t_s >= opts.duration_s:
            return "duration"
        detector = self.detector
        if detector is not None and detector.done and self.settings is None:
            return "error"  # cannot tell: nothing to record at
        if (
            opts.idle_stop_s is not None
            and self.recorded
            and self.last_bytes_at is not None
            and t_s - self.last_bytes_at >= opts.idle_stop_s
        ):
            return "idle"
        return None


def run_capture(
    port: CapturePort,
    writer: CaptureWriter,
    console: Console,
    options: CaptureOptions,
    *,
    clock: Callable[[], float] = time.monotonic,
    stop: Callable[[], bool] = lambda: False,
) -> CaptureResult:
    """Detect (unless the settings are given), then record until told to stop.

    Ctrl-C (``KeyboardInterrupt``) stops it too. The capture file is closed with its
    end line whatever happens; a port that goes away ends the capture with reason
    ``port-lost`` and ``error`` set, never with an exception.

    Raises:
        PortError: The port cannot be opened at all (nothing was recorded).
    """
    loop = _Loop(port, writer, console, options, clock)
    reason: EndReason = "stopped"
    error: str | None = None
    try:
        if options.settings is not None:
            if not loop.listen(options.settings):
                raise SettingsRefused(
                    f"refuses {options.settings}", device=_DEVICE, port=options.port
                )
            writer.decide(options.settings)
            loop.begin_recording()
        else:
            loop.detection_events()  # the first Listening opens the port
        loop.opened = True
        while not stop():
            ended = loop.stop_reason(loop.now())
            if ended is not None:
                reason = ended
                break
            data = port.read(0.1)
            if data:
                loop.received(data, loop.now())
            else:
                loop.quiet(loop.now())
    except KeyboardInterrupt:
        reason = "stopped"
    except PortError as exc:
        if not loop.opened:
            writer.close("error")
            raise
        reason = "port-lost"
        error = str(exc)
    except BaseException:
        reason = "error"  # the end line says so; the exception goes on
        raise
    finally:
        loop.flush_held()
        loop.screen.pause()
        writer.close(reason)
    return CaptureResult(
        decision=loop.decision,
        settings=loop.settings,
        recorded_bytes=loop.recorded,
        bursts=loop.bursts,
        reason=reason,
        error=error,
    )

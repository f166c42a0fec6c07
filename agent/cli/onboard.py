"""``coffee-telemetry capture``, ``propose`` and ``replay``: onboarding a new meter.

    coffee-telemetry capture PORT [-o FILE] [--baud N --format 8N1] [--duration S]
    coffee-telemetry propose FILE [--golden DIR [--case NAME]] [-o BLOCK]
    coffee-telemetry replay FILE --pty PATH [--speed X]

``capture`` listens (it writes to the meter only with ``--send``), finds the serial
settings unless they are given, shows what the meter prints and records it to a
capture file; ``propose`` reads a capture and prints a ``[[devices]]`` block for the
driver that reads it (naming the meter profile of ``drivers/profiles`` that reads it
the same, when one does), with a check of the whole capture; ``replay`` plays a capture
onto a pseudo-terminal, for the agent or a test. Messages are in Portuguese, or in
English with ``--lang en``. Exit codes: 0 done, 1 the meter or port did not cooperate
(cannot tell the settings, port lost; the partial capture is kept), 2 bad input
(usage, unreadable capture file).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import datetime as dt
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from coffee_telemetry.agent.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.onboard.capfile import CaptureFormatError, CaptureWriter, read_capture
from coffee_telemetry.agent.onboard.capture import (
    CaptureOptions,
    SerialCapturePort,
    run_capture,
)
from coffee_telemetry.agent.onboard.lineformat import LineSettings, SettingsError
from coffee_telemetry.agent.onboard.propose import Proposal, propose, report, write_golden
from coffee_telemetry.agent.onboard.replay import play, schedule, wait_for_reader
from coffee_telemetry.agent.onboard.texts import LANGS, Lang, number, say
from coffee_telemetry.simulators.pty import PtyPort

__all__ = ["add_parser", "cmd_capture", "cmd_propose", "cmd_replay"]


class _PrintConsole:
    """Status lines as they are; the meter's lines behind a bar."""

    def status(self, text: str) -> None:
        print(text, flush=True)

    def text(self, line: str) -> None:
        print(f"  | {line}", flush=True)


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> LineSettings | None:
    if args.baud is None:
        if args.format is not None:
            raise SettingsError("--format needs --baud")
        return None
    return LineSettings.parse(f"{args.baud} {args.format or '8N1'}")


def _send_bytes(text: str | None) -> bytes:
    if not text:
        return b""
    try:
        return codecs.escape_decode(text.encode("latin-1"))[0]
    except (UnicodeEncodeError, ValueError) as exc:
        raise SettingsError(f"--send {text!r}: {exc}") from exc


def cmd_capture(args: argparse.Namespace) -> int:
    """Listen to a meter, find its settings and record what it prints."""
    lang: Lang = args.lang
    try:
        settings = _settings(args)
        send = _send_bytes(args.send)
    except SettingsError as exc:
        _error(str(exc))
        return EXIT_USAGE
    out_path = Path(args.output or dt.datetime.now().strftime("captura-%Y%m%d-%H%M%S.txt"))
    if out_path.exists() and not args.force:
        _error(f"{out_path} exists (use --force to overwrite)")
        return EXIT_USAGE
    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, on_term)
    port = SerialCapturePort(args.port)
    try:
        with out_path.open("w", encoding="ascii", newline="\n") as out:
            writer = CaptureWriter(out, port=args.port, started=dt.datetime.now(dt.UTC))
            options = CaptureOptions(
                port=args.port,
                file=str(out_path),
                settings=settings,
                detect_timeout_s=args.detect_timeout,
                duration_s=args.duration,
                idle_stop_s=args.idle_stop,
                send=send,
                lang=lang,
            )
            try:
                result = run_capture(port, writer, _PrintConsole(), options, stop=lambda: stopping)
            except PortError as exc:
                print(say(lang, "cannot_open", port=args.port, error=exc), flush=True)
                out.close()
                out_path.unlink(missing_ok=True)
                return EXIT_FAILURE
    except OSError as exc:
        _error(f"cannot write {out_path}: {exc.strerror or exc}")
        return EXIT_USAGE
    finally:
        port.close()
        signal.signal(signal.SIGTERM, previous)
    if result.reason == "port-lost":
        print(
            say(
                lang,
                "port_lost",
                port=args.port,
                error=result.error,
                file=out_path,
                size=result.recorded_bytes,
            ),
            flush=True,
        )
        return EXIT_FAILURE
    if result.settings is None:
        print(say(lang, "done_nothing", file=out_path), flush=True)
        return EXIT_FAILURE
    capture = read_capture(out_path)
    chunks = capture.recording()
    elapsed = chunks[-1].t_s - chunks[0].t_s if chunks else 0.0
    print(
        say(
            lang,
            "done",
            file=out_path,
            bursts=result.bursts,
            size=result.recorded_bytes,
            elapsed=number(elapsed, lang, 1),
        ),
        flush=True,
    )
    return EXIT_OK


def cmd_propose(args: argparse.Namespace) -> int:
    """Propose a ``[[devices]]`` block for a capture, and check it on the whole capture."""
    lang: Lang = args.lang
    path = Path(args.file)
    try:
        capture = read_capture(path)
    except CaptureFormatError as exc:
        _error(str(exc))
        return EXIT_USAGE
    result = propose(capture, device_id=args.id)
    for line in report(capture, str(path), result, lang):
        print(line, file=sys.stderr, flush=True)
    if not isinstance(result, Proposal):
        return EXIT_FAILURE
    print(say(lang, "p_block"), file=sys.stderr, flush=True)
    print(result.block, end="", flush=True)
    if args.output:
        Path(args.output).write_text(result.block, encoding="utf-8")
    if args.golden:
        case = args.case or path.stem
        try:
            folder = write_golden(
                Path(args.golden), case, result, path.read_text(encoding="ascii"), capture
            )
        except (FileExistsError, ValueError) as exc:
            _error(f"--golden: {exc}")
            return EXIT_USAGE
        print(say(lang, "p_golden", folder=folder), file=sys.stderr, flush=True)
    return EXIT_OK


_REPLAY_TEXT: dict[str, tuple[str, str]] = {
    "plan": (
        "Reproduzindo {chunks} pedaços ({size} bytes, {elapsed} s a velocidade {speed})"
        " em {path} -> {tty}.",
        "Replaying {chunks} chunks ({size} bytes, {elapsed} s at speed {speed}) on {path}"
        " -> {tty}.",
    ),
    "wait": (
        "Aguardando um programa abrir {path} (o agente, ou coffee-telemetry capture)...",
        "Waiting for a program to open {path} (the agent, or coffee-telemetry capture)...",
    ),
    "chunk": ("  [{at} s] {size} bytes", "  [{at} s] {size} bytes"),
    "done": (
        "Fim: {chunks} pedaços, {size} bytes; atraso máximo {late} ms.",
        "Done: {chunks} chunks, {size} bytes; largest delay {late} ms.",
    ),
    "nothing": (
        "Nada a reproduzir: a captura não tem gravação (use --all para os bytes da detecção).",
        "Nothing to replay: the capture has no recording (--all plays the detection's bytes).",
    ),
    "link_exists": (
        "{path} existe e não é um link: escolha outro caminho.",
        "{path} exists and is not a link: choose another path.",
    ),
}


def _say_replay(lang: Lang, key: str, **values: object) -> str:
    pt, en = _REPLAY_TEXT[key]
    return (pt if lang == "pt-BR" else en).format(**values)


def cmd_replay(args: argparse.Namespace) -> int:
    """Play a capture onto a pseudo-terminal at its own pace."""
    lang: Lang = args.lang
    try:
        capture = read_capture(Path(args.file))
    except CaptureFormatError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if not args.speed > 0:
        _error(f"--speed must be positive: {args.speed}")
        return EXIT_USAGE
    chunks = schedule(capture, everything=args.all)
    if not chunks:
        _error(_say_replay(lang, "nothing"))
        return EXIT_FAILURE
    link = Path(args.pty)
    if (link.exists() or link.is_symlink()) and not link.is_symlink():
        _error(_say_replay(lang, "link_exists", path=link))
        return EXIT_USAGE
    if not link.parent.is_dir():
        _error(f"--pty: folder {link.parent} does not exist")
        return EXIT_USAGE

    async def main() -> int:
        port = PtyPort(link=link)
        port.open()
        try:
            size = sum(len(c.data) for c in chunks)
            print(
                _say_replay(
                    lang,
                    "plan",
                    chunks=len(chunks),
                    size=size,
                    elapsed=number(chunks[-1].at_s / args.speed, lang, 1),
                    speed=number(args.speed, lang, 2),
                    path=link,
                    tty=port.tty_path,
                ),
                flush=True,
            )
            if not args.no_wait:
                print(_say_replay(lang, "wait", path=link), flush=True)
                await wait_for_reader(port.tty_path)
                await asyncio.sleep(args.start_delay)

            def shown(index: int, chunk: object) -> None:
                if args.verbose:
                    at = chunks[index].at_s / args.speed
                    print(
                        _say_replay(
                            lang, "chunk", at=number(at, lang, 3), size=len(chunks[index].data)
                        ),
                        flush=True,
                    )

            played = await play(port, chunks, speed=args.speed, on_chunk=shown)
            print(
                _say_replay(
                    lang,
                    "done",
                    chunks=played.chunks,
                    size=played.size,
                    late=number(1000 * played.max_late_s, lang, 1),
                ),
                flush=True,
            )
            await asyncio.sleep(args.hold)
        finally:
            port.close()
        return EXIT_OK

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return EXIT_OK


def add_parser(sub: Subcommands) -> None:
    """Add ``capture``, ``propose`` and ``replay`` to the command's subparsers."""
    lang = argparse.ArgumentParser(add_help=False)
    lang.add_argument(
        "--lang",
        choices=LANGS,
        default=os.environ.get("COFFEE_LANG", "pt-BR")
        if os.environ.get("COFFEE_LANG") in LANGS
        else "pt-BR",
        help="language of the messages (pt-BR or en; default pt-BR, or $COFFEE_LANG)",
    )

    capture = sub.add_parser(
        "capture",
        parents=[lang],
        help="listen to a meter, find its serial settings, record what it prints",
    )
    capture.add_argument("port", help="the serial port (/dev/serial/by-id/... or /dev/ttyUSB0)")
    capture.add_argument("-o", "--output", help="capture file (default captura-<time>.txt)")
    capture.add_argument("--force", action="store_true", help="overwrite the capture file")
    capture.add_argument("--baud", type=int, help="baud rate, if known (skips detection)")
    capture.add_argument("--format", help="bits, parity, stop bits with --baud, e.g. 7E1")
    capture.add_argument("--duration", type=float, help="stop after this many seconds")
    capture.add_argument(
        "--idle-stop", type=float, help="stop after this many seconds without bytes"
    )
    capture.add_argument(
        "--detect-timeout", type=float, default=600.0, help="give up detection after (s)"
    )
    capture.add_argument(
        "--send",
        help="bytes to write to the meter after each change of settings (escapes such as"
        " 'SIR\\r\\n'); nothing is ever written without it",
    )
    capture.set_defaults(func=cmd_capture)

    prop = sub.add_parser(
        "propose", parents=[lang], help="propose and check a [[devices]] block for a capture"
    )
    prop.add_argument("file", help="a capture file")
    prop.add_argument("--id", help="the device id in the block (default umidade-1/balanca-1)")
    prop.add_argument("-o", "--output", help="also write the block to this file")
    prop.add_argument("--golden", help="write the capture as a golden test case under DIR")
    prop.add_argument("--case", help="the golden case's name (default: the file's name)")
    prop.set_defaults(func=cmd_propose)

    replay = sub.add_parser("replay", parents=[lang], help="play a capture onto a pseudo-terminal")
    replay.add_argument("file", help="a capture file")
    replay.add_argument("--pty", required=True, help="path of the link to the pseudo-terminal")
    replay.add_argument("--speed", type=float, default=1.0, help="1 original timing, 10 faster")
    replay.add_argument("--all", action="store_true", help="play the detection's bytes too")
    replay.add_argument(
        "--no-wait", action="store_true", help="play at once, without waiting for a reader"
    )
    replay.add_argument(
        "--start-delay", type=float, default=0.5, help="seconds between the open and the play"
    )
    replay.add_argument("--hold", type=float, default=1.0, help="keep the pty this long after")
    replay.add_argument("-v", "--verbose", action="store_true", help="a line per chunk")
    replay.set_defaults(func=cmd_replay)

"""JSON log lines: any message or field text gives exactly one line of valid JSON."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.logs import (
    LOG_FORMAT_ENV,
    JsonFormatter,
    configure_logging,
    context_copy,
    log_context,
)

#: Any code point, with line breaks, controls and lone surrogates drawn often, and bytes
#: that are not UTF-8 decoded with surrogateescape (as ``os.fsdecode`` and argv do).
ANY_TEXT = st.one_of(
    st.text(
        st.one_of(
            st.characters(codec=None, exclude_categories=()),
            st.sampled_from(list('\n\r\x00\x1b\x85\u2028\u2029\udcff\ud800\ufeff"\\')),
            st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
        ),
        max_size=200,
    ),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


def record(
    msg: object, args: tuple[object, ...] = (), *, level: int = logging.WARNING, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("coffee_telemetry.test", level, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def one_line(formatter: JsonFormatter, rec: logging.LogRecord) -> dict[str, object]:
    """Format ``rec``: it must be one line of valid UTF-8 JSON; return the object."""
    line = formatter.format(rec)
    assert "\n" not in line
    assert "\r" not in line
    assert line.splitlines() == [line]
    line.encode("utf-8")  # strict: no lone surrogate reaches the stream
    doc = json.loads(line)
    assert isinstance(doc, dict)
    return doc


def expected_text(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@settings(max_examples=300, deadline=None)
@given(message=ANY_TEXT, device=ANY_TEXT, sink=ANY_TEXT, station=ANY_TEXT, ascii_only=st.booleans())
def test_any_text_is_one_valid_json_line(
    message: str, device: str, sink: str, station: str, ascii_only: bool
) -> None:
    formatter = JsonFormatter(ensure_ascii=ascii_only)
    doc = one_line(formatter, record(message, device=device, sink=sink, station=station))
    assert doc["message"] == expected_text(message)
    assert doc["device"] == expected_text(device)
    assert doc["sink"] == expected_text(sink)
    assert doc["station"] == expected_text(station)
    assert doc["level"] == "warning"
    assert doc["logger"] == "coffee_telemetry.test"
    if ascii_only:
        assert formatter.format(record(message)).isascii()


@settings(max_examples=200, deadline=None)
@given(fmt=ANY_TEXT, args=st.lists(st.one_of(ANY_TEXT, st.binary(max_size=20), st.integers())))
def test_any_format_and_arguments_never_raise(fmt: str, args: list[object]) -> None:
    # Mismatched % arguments, bytes, anything: still one line, the text kept.
    doc = one_line(JsonFormatter(), record(fmt, tuple(args)))
    assert isinstance(doc["message"], str)


def test_fields_time_and_exception() -> None:
    try:
        raise ValueError("porta\nfechada")
    except ValueError:
        rec = logging.LogRecord(
            "coffee_telemetry.agent.devices", logging.ERROR, __file__, 1, "Port %s failed",
            ("/dev/ttyUSB0",), sys.exc_info(),
        )  # fmt: skip
    rec.created = 1_796_035_314.123456
    doc = one_line(JsonFormatter(), rec)
    assert doc["time"] == "2026-11-30T10:41:54.123456Z"
    assert datetime.fromisoformat(str(doc["time"])).tzinfo == UTC
    assert doc["level"] == "error"
    assert doc["logger"] == "coffee_telemetry.agent.devices"
    assert doc["message"] == "Port /dev/ttyUSB0 failed"
    exc = doc["exception"]
    assert isinstance(exc, str)
    assert exc.startswith("Traceback")
    assert "ValueError: porta\nfechada" in exc
    assert "device" not in doc
    assert "sink" not in doc


def test_an_extra_whose_str_raises_is_kept_by_its_repr() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    doc = one_line(JsonFormatter(), record("x", device=Bad()))
    assert isinstance(doc["device"], str)
    assert "Bad" in doc["device"]


async def test_context_fields_reach_tasks_started_inside() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("coffee_telemetry.test.context")
    log.addHandler(handler)
    log.propagate = False
    try:

        async def work() -> None:
            log.warning("in the task")

        with log_context(sink="mqtt"):
            await asyncio.create_task(work())
        await asyncio.create_task(work(), context=context_copy(device="umid-1", station="recepcao"))
        log.warning("explicit", extra={"device": "bal-1"})
        log.warning("outside")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(d.get("device"), d.get("sink"), d.get("station")) for d in lines] == [
        (None, "mqtt", None),
        ("umid-1", None, "recepcao"),
        ("bal-1", None, None),
        (None, None, None),
    ]
    with pytest.raises(ValueError, match="log_context takes"), log_context(lot="L-1"):
        pass


def test_configure_logging_chooses_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    hook = sys.excepthook
    try:
        for given_format, env, expect_json in [
            ("json", "", True),
            ("text", "", False),
            (None, "json", True),
            ("text", "json", True),  # the variable wins over the default
            (None, "", False),
        ]:
            monkeypatch.setenv(LOG_FORMAT_ENV, env)
            root.handlers = []
            stream = io.StringIO()
            configure_logging("info", given_format, stream=stream)  # type: ignore[arg-type]
            logging.getLogger("coffee_telemetry.test.configure").info("Olá %s", "mundo")
            line = stream.getvalue().strip()
            if expect_json:
                assert json.loads(line)["message"] == "Olá mundo"
            else:
                assert line.endswith("INFO    coffee_telemetry.test.configure: Olá mundo")
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])
        sys.excepthook = hook
        logging.captureWarnings(False)


def test_a_crash_and_a_warning_are_json_lines_too() -> None:
    script = (
        "import warnings\n"
        "from coffee_telemetry.agent.logs import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "warnings.warn('velho')\n"
        "raise RuntimeError('quebrou\\nfeio')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [d["level"] for d in lines] == ["warning", "critical"]
    assert "velho" in lines[0]["message"]
    assert lines[1]["message"] == "Unhandled exception"
    assert "RuntimeError: quebrou\nfeio" in lines[1]["exception"]

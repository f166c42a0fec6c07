r"""Log lines as text (for journald) or as one JSON object per line (for log shippers).

``[agent] log_format = "json"`` (or ``COFFEE_TELEMETRY_LOG_FORMAT=json`` in the
environment, for commands that read no site file, such as ``demo``) makes every log
record one line of JSON::

    {"time": "2026-11-30T10:41:54.123456Z", "level": "warning",
     "logger": "coffee_telemetry.agent.devices.runner", "message": "Port closed",
     "device": "umid-recepcao"}

Keys: ``time`` (ISO 8601, UTC, microseconds), ``level`` (``debug``, ``info``,
``warning``, ``error``, ``critical``), ``logger``, ``message``; then ``device``,
``sink`` and ``station`` when the call carries them, either as
``log.warning(..., extra={"device": "umid-1"})`` or from ``log_context(device=...)``
around the code (a context variable, so every task started inside inherits it);
``exception`` (the formatted traceback) and ``stack`` when present.

Theory of operation
-------------------
A log line must never be the thing that breaks: the formatter takes whatever the
call gives (a message whose ``%`` arguments do not match, an ``extra`` value whose
``str()`` raises, text with control characters, lone surrogates from bytes decoded
with ``surrogateescape``) and always writes exactly one line of valid JSON:

* strings are made encodable first: a lone surrogate becomes the visible text
  ``\udcff`` (its backslash escape), so the line is valid UTF-8;
* ``json.dumps`` escapes every control character below U+0020 (newlines included);
  the three other characters that some readers take for a line break (U+0085,
  U+2028, U+2029) are escaped too, so ``str.splitlines`` sees one line;
* on a stream that cannot take UTF-8 the whole line is ASCII (``\uXXXX`` escapes).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import types
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal, TextIO

__all__ = [
    "CONTEXT_KEYS",
    "LOG_FORMAT_ENV",
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
    "log_context",
]

LogFormat = Literal["text", "json"]

#: Environment variable that chooses the format when no site file does (``demo``).
LOG_FORMAT_ENV = "COFFEE_TELEMETRY_LOG_FORMAT"

#: The text format (journald adds its own time stamp, but a terminal has none).
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: Fields a log call may carry, by ``extra=`` or ``log_context``.
CONTEXT_KEYS = ("device", "sink", "station")

#: Longest a single field's text may be in a line (a ticket dump, a huge repr).
MAX_FIELD_CHARS = 16_384

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "coffee_telemetry_log_context", default=MappingProxyType({})
)

#: Characters outside JSON's mandatory escapes that ``str.splitlines`` breaks on.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Tag every log record made inside (and in tasks started inside) with ``fields``.

    Args:
        fields: Some of ``device``, ``sink``, ``station``.

    Raises:
        ValueError: A key other than those.
    """
    unknown = set(fields) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"log_context takes {', '.join(CONTEXT_KEYS)}; not {sorted(unknown)}")
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def context_copy(**fields: str) -> contextvars.Context:
    """A copy of the current context with ``fields`` set (for ``create_task(context=...)``)."""
    ctx = contextvars.copy_context()
    ctx.run(lambda: _context.set({**_context.get(), **fields}))
    return ctx


def _text(value: object) -> str:
    """``value`` as text that encodes to UTF-8, whatever it is (never raises)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception:
            try:
                text = object.__repr__(value)
            except Exception:  # pragma: no cover - object.__repr__ does not fail
                text = "<unprintable>"
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "…"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as exc:
        # A call whose arguments do not fit its format: keep both, say so.
        return f"{_text(record.msg)} (log arguments {_text(record.args)!s} did not fit: {exc!r})"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def __init__(self, *, ensure_ascii: bool = False) -> None:
        super().__init__()
        self._ensure_ascii = ensure_ascii

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no trailing newline); never raises."""
        doc: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": _text(record.levelname).lower(),
            "logger": _text(record.name),
            "message": _text(_message(record)),
        }
        carried = _context.get()
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is None:
                value = carried.get(key)
            if value is not None:
                doc[key] = _text(value)
        if record.exc_info:
            try:
                doc["exception"] = _text(self.formatException(record.exc_info))
            except Exception as exc:
                doc["exception"] = _text(f"{record.exc_info[1]!r} (traceback failed: {exc!r})")
        elif record.exc_text:
            doc["exception"] = _text(record.exc_text)
        if record.stack_info:
            doc["stack"] = _text(record.stack_info)
        line = json.dumps(doc, ensure_ascii=self._ensure_ascii, separators=(",", ":"))
        return line if self._ensure_ascii else line.translate(_LINE_BREAKS)


def _utf8(stream: TextIO) -> bool:
    encoding = getattr(stream, "encoding", None) or ""
    return encoding.lower().replace("-", "").replace("_", "") in {"utf8", "utf8sig"}


def configure_logging(
    level: str, log_format: LogFormat | None = None, *, stream: TextIO | None = None
) -> None:
    """Log to ``stream`` (stderr) at ``level`` (``info``...), as text or JSON lines.

    ``log_format`` None takes ``COFFEE_TELEMETRY_LOG_FORMAT`` from the environment
    (``text`` when unset); a value given wins over the environment only when it is
    ``json`` (so ``log_format = "text"``, the default, does not hide the variable).
    Like ``logging.basicConfig``, it does nothing when the root logger has handlers.
    """
    out = stream if stream is not None else sys.stderr
    env = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    chosen = "json" if log_format == "json" or env == "json" else "text"
    handler = logging.StreamHandler(out)
    if chosen == "json":
        handler.setFormatter(JsonFormatter(ensure_ascii=not _utf8(out)))
        # Nothing else may write plain text lines to the stream: Python's warnings and
        # a crash's traceback become log records too.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def _log_uncaught(
    kind: type[BaseException], exc: BaseException, tb: types.TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("coffee_telemetry").critical("Unhandled exception", exc_info=(kind, exc, tb))

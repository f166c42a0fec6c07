"""Errors raised by coffee-telemetry.

    TelemetryError
    ├── ConfigError          found before anything connects; the process refuses to start
    ├── PortError            serial port missing, busy or gone (wraps OSError)
    ├── OutboxError          the local outbox cannot be opened or written
    ├── HistoryError         the local history cannot be opened or read
    ├── MaintenanceError     the maintenance store cannot be opened or written
    ├── UsageError           what an operator typed cannot be recorded (also a ValueError)
    │   ├── LotError         a lot code or who set it was refused
    │   └── CommandRefused   a command was refused; the reply says why
    ├── RuleError            an alert rule was configured with a value it cannot work with
    └── SinkError
        ├── SinkUnavailable  retry the whole batch later
        └── SinkRejected     drop these items, carry on

    DriverUsageError         from ``drivers.errors`` (drivers import
                             nothing from the agent): a caller asked a driver to encode
                             what the protocol cannot express

Library exceptions are translated at the boundary to the most specific class here
(``raise ... from exc``). Errors carry their data as attributes, not only as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from coffee_telemetry.drivers.errors import DriverUsageError

__all__ = [
    "CommandRefused",
    "ConfigError",
    "DriverUsageError",
    "HistoryError",
    "LotError",
    "MaintenanceError",
    "OutboxError",
    "PortError",
    "RuleError",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "TelemetryError",
    "UsageError",
]


class TelemetryError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(TelemetryError):
    """The configuration is invalid; the process must not start.

    Attributes:
        problems: One ``(key, message)`` pair per problem, key in dotted form
            such as ``devices[0].serial.baudrate``.
    """

    def __init__(self, problems: Sequence[tuple[str, str]], *, source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{where}{key}: {msg}" if key else f"{where}{msg}" for key, msg in self.problems]
        super().__init__("\n".join(lines))


class PortError(TelemetryError):
    """A serial port is missing, busy or gone.

    Attributes:
        device: The configured device id.
        port: The path that failed.
    """

    def __init__(self, message: str, *, device: str, port: str) -> None:
        self.device = device
        self.port = port
        super().__init__(f"{device} ({port}): {message}")


class OutboxError(TelemetryError):
    """The outbox database cannot be opened or written."""


class HistoryError(TelemetryError):
    """The history database cannot be opened or read."""


class MaintenanceError(TelemetryError):
    """The maintenance database cannot be opened, read or written.

    Attributes:
        path: The database file.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        self.path = path
        super().__init__(f"maintenance store {path}: {message}")


class UsageError(TelemetryError, ValueError):
    """What an operator typed cannot be recorded (the CLI exits 2, nothing written)."""


class LotError(UsageError):
    """A lot code was refused; the message says why (shown to the operator)."""


class CommandRefused(UsageError):
    """A command was refused; the message says why (it goes into the reply).

    Attributes:
        reason: The refusal, as shown to the sender.
        reply: Extra fields for the reply document (e.g. the station).
    """

    def __init__(self, reason: str, **reply: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class RuleError(TelemetryError, ValueError):
    """A rule was configured with a value it cannot work with.

    Attributes:
        rule: The rule's name.
        key: The offending setting (``k``, ``repeat_s``, ...).
    """

    def __init__(self, message: str, *, rule: str, key: str) -> None:
        self.rule = rule
        self.key = key
        super().__init__(f"rule {rule!r}: {key}: {message}")


class SinkError(TelemetryError):
    """A sink could not deliver.

    Attributes:
        sink: The sink's name (``mqtt``, ``influx``).
    """

    def __init__(self, message: str, *, sink: str) -> None:
        self.sink = sink
        super().__init__(f"{sink}: {message}")


class SinkUnavailable(SinkError):
    """The sink cannot take anything now; retry the whole batch later.

    Attributes:
        retry_after_s: A delay the server asked for (``Retry-After``), if any.
    """

    def __init__(self, message: str, *, sink: str, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, sink=sink)


class SinkRejected(SinkError):
    """The sink refused these records for good; move them aside and go on.

    Attributes:
        record_ids: Outbox ids of the refused records.
        status: Protocol status (an HTTP code), when there is one.
    """

    def __init__(
        self, message: str, *, sink: str, record_ids: Sequence[int], status: int | None = None
    ) -> None:
        self.record_ids = list(record_ids)
        self.status = status
        super().__init__(message, sink=sink)

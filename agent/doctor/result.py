"""A check's outcome: its state, what it found and what to do, as catalogue keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Result", "Status"]


class Status(Enum):
    """How a check came out; any ``FAIL`` makes ``doctor`` exit 1."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Result:
    """One check's outcome.

    Attributes:
        check: What was checked, e.g. ``serial.access`` (stable, for scripts).
        subject: What it was checked on, e.g. a device id or ``mqtt``.
        status: ``ok``, ``warn`` or ``fail``.
        message: Key of the message in ``texts.MESSAGES``.
        fix: Key of the fix suggestion, or ``None`` when there is nothing to do.
        values: What the message and the fix are filled with.
    """

    check: str
    subject: str
    status: Status
    message: str
    fix: str | None = None
    values: Mapping[str, object] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether this result fails the run."""
        return self.status is Status.FAIL

"""Errors raised by the drivers (they import nothing from the agent).

    DriverError
    └── DriverUsageError   a caller asked a driver to encode what the protocol cannot express

A driver never raises on the bytes it is fed (line noise becomes ``Discarded``);
it raises only when its caller errs.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base class of the drivers' errors."""


class DriverUsageError(DriverError, ValueError):
    """A caller asked a driver for something the protocol cannot express."""

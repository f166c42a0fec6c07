"""Sans-I/O protocol drivers: bytes in, typed events out, no clock, no I/O."""

from coffee_telemetry.drivers.events import Discarded, DriverEvent, FieldValue, Measurement

__all__ = ["Discarded", "DriverEvent", "FieldValue", "Measurement"]

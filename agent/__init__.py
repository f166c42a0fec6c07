"""The coffee-telemetry edge agent: everything that waits on I/O or time."""

"""Sinks: MQTT and InfluxDB, each fed from its own outbox cursor."""

from coffee_telemetry.agent.outbox.sink import Record, Rejection, Sink

__all__ = ["Record", "Rejection", "Sink"]

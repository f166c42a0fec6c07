"""Sinks: MQTT and InfluxDB, each fed from its own outbox cursor."""

from agent.sinks.base import Record, Rejection, Sink

__all__ = ["Record", "Rejection", "Sink"]

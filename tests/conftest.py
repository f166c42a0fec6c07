"""Shared fixtures: real services (mosquitto, influxd) come from tests/services/."""

pytest_plugins = ["tests.services.influxd", "tests.services.mosquitto"]

"""coffee-telemetry: an edge telemetry agent for coffee warehouses.

One import package: ``coffee_telemetry.agent`` (the agent), ``.drivers`` (sans-I/O
protocol drivers), ``.simulators`` (virtual devices on ptys), ``.dashboards`` (page
assets and Grafana provisioning, as data).
"""

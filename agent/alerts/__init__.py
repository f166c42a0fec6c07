"""Alerts: pure rules and their engine (``rules``), and the service that feeds it readings
and health, publishes and persists what it says (``service``).
"""

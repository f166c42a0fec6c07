"""Alerts: pure rules and their engine, and the service around them.

``rules`` holds the rules and the engine; ``service`` feeds the engine readings and
health, publishes what it says and persists it.
"""

"""Lots: valid lot codes, the active lot per station and its history.

``store`` validates and keeps them (SQLite); ``service`` is the agent's view of them and
handles the ``lot`` command.
"""

"""Local history for the dashboard: raw points and rollups in SQLite.

``store`` writes and prunes (``History``); ``schema`` holds its tables, ``queries`` and
``lots`` what the dashboard reads; ``service`` runs it in the agent (``open_history``).
"""

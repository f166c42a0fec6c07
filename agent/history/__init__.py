"""Local history for the dashboard: raw points and rollups in SQLite (``store``)."""

"""The evidence store's schema versions (``agent.sqlite``), apart from the store.

``coffee-telemetry backup`` records every store's version; it reads this module, which
needs none of the geometry libraries the store's imports use (the ``evidence`` extra).
"""

from __future__ import annotations

from coffee_telemetry.agent.sqlite import MigrationStep, script

__all__ = ["STEPS"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    code TEXT PRIMARY KEY,
    name TEXT,
    document TEXT,
    place TEXT,
    pseudonym TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    forgotten_ns INTEGER
);
CREATE TABLE IF NOT EXISTS plots (
    id INTEGER PRIMARY KEY,
    member TEXT NOT NULL REFERENCES members(code),
    label TEXT NOT NULL,
    geometry TEXT,
    kind TEXT NOT NULL,
    area_ha REAL NOT NULL,
    whole_property INTEGER NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lot_members (
    lot TEXT NOT NULL,
    member TEXT NOT NULL REFERENCES members(code),
    PRIMARY KEY (lot, member)
);
CREATE TABLE IF NOT EXISTS manifests (
    id INTEGER PRIMARY KEY,
    lot TEXT NOT NULL,
    issued_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    body TEXT NOT NULL
);
"""

#: Schema steps (``agent.sqlite.migrate``): version 0 to 1 creates the tables.

#: ``STEPS[i]`` takes the store from schema version ``i`` to ``i + 1``.
STEPS: tuple[MigrationStep, ...] = (script(_SCHEMA),)

"""Members, their plots, the lots' members and every manifest issued (SQLite).

Theory of operation
-------------------
``data_dir/evidence.sqlite3`` holds only what a lot pack needs (LGPD, Lei 13.709/2018):
per member a code, a name, an optional document number and a production place; per plot
its WGS84 geometry (GeoJSON text, 7 decimals), geodesic area, kind (polygon or point),
whether it is a whole CAR property outline, and the file it came from. ``forget`` erases
a member's name, document and plot geometry and leaves a pseudonym (``membro-`` and 10
hex digits of a hash of the code): the lots keep their link, so a later pack still lists
the member's plots by pseudonym and area, "sem geolocalização". Every manifest the box
signs is recorded (lot, time, its SHA-256 and its text), so an issued pack can be
recognised long after the lot's raw readings are gone.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.evidence.geo import GeoError, ImportedPlot, coords_json
from coffee_telemetry.agent.evidence.schema import STEPS
from coffee_telemetry.agent.sqlite import connect, migrate

__all__ = ["STEPS", "EvidenceStore", "Member", "Plot", "pseudonym", "validate_member_code"]


_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,31}")


def validate_member_code(code: str) -> str:
    """``code`` if it is a member code (letters, digits, ``. _ / -``, up to 32)."""
    if not _CODE.fullmatch(code):
        raise GeoError(
            f"código de membro inválido: {code[:40]!r}", f"invalid member code: {code[:40]!r}"
        )
    return code


def _text(value: str | None, what: str, max_len: int = 120) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > max_len or not value.isprintable():
        raise GeoError(f"{what} inválido", f"invalid {what}")
    return value


def pseudonym(code: str) -> str:
    """The stable pseudonym a member keeps after ``forget``."""
    return "membro-" + hashlib.sha256(b"coffee-telemetry member\0" + code.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Member:
    """A member as the pack sees it (``name`` None once forgotten)."""

    code: str
    name: str | None
    document: str | None
    place: str | None
    pseudonym: str
    forgotten: bool
    plots: int


@dataclass(frozen=True, slots=True)
class Plot:
    """A stored plot (``geometry`` None once its member is forgotten)."""

    member: str
    label: str
    geometry: str | None
    kind: str
    area_ha: float
    whole_property: bool
    source: str


class EvidenceStore:
    """The evidence store: open with ``EvidenceStore.open(path)``, ``close`` when done."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> EvidenceStore:
        """Open (creating or migrating) the store at ``path``."""

        def prepare(conn: sqlite3.Connection) -> None:
            migrate(conn, STEPS, name="evidence", path=path)

        conn = connect(path, prepare=prepare)
        # Erased personal data is overwritten on disk, not just unlinked (LGPD).
        conn.execute("PRAGMA secure_delete = ON")
        return cls(conn)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def import_member(
        self,
        code: str,
        plots: list[ImportedPlot],
        *,
        name: str,
        document: str | None,
        place: str | None,
        at_ns: int,
    ) -> None:
        """Add (or replace the plots of) member ``code``; all or nothing."""
        validate_member_code(code)
        clean_name = _text(name, "nome / name")
        if clean_name is None:
            raise GeoError("nome do produtor obrigatório", "producer name required")
        clean_doc = _text(document, "documento / document", 32)
        clean_place = _text(place, "local / place")
        with self._conn:
            self._conn.execute(
                "INSERT INTO members (code, name, document, place, pseudonym, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(code) DO UPDATE SET name = excluded.name,"
                " document = excluded.document, place = excluded.place, forgotten_ns = NULL",
                (code, clean_name, clean_doc, clean_place, pseudonym(code), at_ns),
            )
            self._conn.execute("DELETE FROM plots WHERE member = ?", (code,))
            self._conn.executemany(
                "INSERT INTO plots (member, label, geometry, kind, area_ha, whole_property, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        code,
                        p.label,
                        coords_json(p.geometry),
                        p.kind,
                        p.area_ha,
                        int(p.whole_property),
                        p.source,
                    )
                    for p in plots
                ],
            )

    def members(self) -> list[Member]:
        """Every member, by code."""
        rows = self._conn.execute(
            "SELECT m.code, m.name, m.document, m.place, m.pseudonym, m.forgotten_ns,"
            " (SELECT COUNT(*) FROM plots p WHERE p.member = m.code) FROM members m ORDER BY code"
        ).fetchall()
        return [Member(r[0], r[1], r[2], r[3], r[4], r[5] is not None, r[6]) for r in rows]

    def member(self, code: str) -> Member | None:
        """Member ``code``, or None."""
        return next((m for m in self.members() if m.code == code), None)

    def plots(self, code: str) -> list[Plot]:
        """Member ``code``'s plots."""
        rows = self._conn.execute(
            "SELECT member, label, geometry, kind, area_ha, whole_property, source FROM plots"
            " WHERE member = ? ORDER BY id",
            (code,),
        ).fetchall()
        return [Plot(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    def link(self, lot: str, code: str) -> None:
        """Record that member ``code``'s coffee is in ``lot``."""
        if self.member(code) is None:
            raise GeoError(f"membro desconhecido: {code!r}", f"unknown member: {code!r}")
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO lot_members (lot, member) VALUES (?, ?)", (lot, code)
            )

    def lot_members(self, lot: str) -> list[Member]:
        """The members linked to ``lot``."""
        codes = {
            r[0] for r in self._conn.execute("SELECT member FROM lot_members WHERE lot = ?", (lot,))
        }
        return [m for m in self.members() if m.code in codes]

    def forget(self, code: str, *, at_ns: int) -> bool:
        """Erase member ``code``'s name, document, place and plot geometry; False if unknown."""
        with self._conn:
            cur = self._conn.execute(
                "UPDATE members SET name = NULL, document = NULL, place = NULL, forgotten_ns = ?"
                " WHERE code = ?",
                (at_ns, code),
            )
            self._conn.execute(
                "UPDATE plots SET geometry = NULL, label = '-' WHERE member = ?", (code,)
            )
        return cur.rowcount > 0

    def record_manifest(self, lot: str, body: bytes, *, at_ns: int) -> None:
        """Keep a manifest the box signed."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO manifests (lot, issued_ns, sha256, body) VALUES (?, ?, ?, ?)",
                (lot, at_ns, hashlib.sha256(body).hexdigest(), body.decode()),
            )

    def manifests(self, lot: str) -> list[tuple[int, str]]:
        """(issued_ns, sha256) of every manifest issued for ``lot``."""
        return [
            (r[0], r[1])
            for r in self._conn.execute(
                "SELECT issued_ns, sha256 FROM manifests WHERE lot = ? ORDER BY id", (lot,)
            )
        ]

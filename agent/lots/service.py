"""Active lots in the running agent: lookups, commands, events.

Theory of operation
-------------------
``LotService`` keeps an in-memory copy of the active lot per station, read
from the ``LotStore`` (SQLite) at start and whenever another process (the
``coffee-telemetry lot`` command) commits a change; ``lot_for`` is what device
loops call for every moisture reading and weighment, so it never touches the
disk.

Changes arrive three ways and end the same way: commands on
``<prefix>/<site>/cmd/lot/<station>`` and ``POST /api/lots/<station>``
(``handle_command``, behind the command boundary of ``agent.commands``), and
the CLI (a new history row noticed by ``run_loop``). Each change is
written to the store first (validated: unknown stations and bad lot codes are
refused with a reason and nothing is written), then sent as a
``lot_assignment`` event through the outbox (at least once: the history row
is marked published only after the outbox accepted the event), and the
retained ``<prefix>/<site>/lots/<station>`` state is updated for dashboards.

Command payload (JSON, bounded by ``agent.commands``)::

    {"lot": "L-0042", "by": "maria"}      set (``by`` optional)
    {"lot": null, "by": "maria"}          clear

Reply, on ``<prefix>/<site>/cmd/lot/<station>/reply`` (or ``.../cmd/reply``
when the station part of the topic is not even an identifier)::

    {"ok": true, "station": "recepcao", "lot": "L-0042"}
    {"ok": false, "station": "recepcao", "error": "lot code may only use ..."}
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from coffee_telemetry.agent.commands import Command, CommandRefused, Outgoing, encode_json
from coffee_telemetry.agent.lots.store import ActiveLot, LotChange, LotError, LotStore
from coffee_telemetry.agent.readings import Draft

log = logging.getLogger(__name__)

_STATION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")

#: The device id lot events are published under.
LOT_EVENTS_DEVICE = "agent"


def lot_state(station: str, active: ActiveLot | None) -> Outgoing:
    """The retained ``lots/<station>`` document."""
    if active is None:
        doc: dict[str, object] = {"station": station, "lot": None}
    else:
        doc = {
            "station": station,
            "lot": active.lot,
            "set_at": active.set_at_ns,
            "by": active.set_by,
            "source": active.source,
        }
    return Outgoing(topic=f"lots/{station}", payload=encode_json(doc), retain=True)


class LotService:
    """The agent's view of active lots (see the module docstring)."""

    def __init__(
        self,
        *,
        store: LotStore,
        stations: Collection[str],
        site: str,
        record: Callable[[Sequence[Draft]], Awaitable[object]],
        publish_state: Callable[[Outgoing], None] | None = None,
        on_change: Callable[[str, ActiveLot | None], None] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        poll_s: float = 1.0,
    ) -> None:
        self._store = store
        self._stations = frozenset(stations)
        self._site = site
        self._record = record
        self._publish_state = publish_state
        self._on_change = on_change
        self._clock_ns = clock_ns
        self._poll_s = poll_s
        self._active: dict[str, ActiveLot] = {}
        self._version = -1
        self._lock = asyncio.Lock()

    def lot_for(self, station: str) -> str | None:
        """The station's active lot, if any (memory only; called per reading)."""
        active = self._active.get(station)
        return None if active is None else active.lot

    @property
    def stations(self) -> frozenset[str]:
        """The stations lots can be set for."""
        return self._stations

    @property
    def active(self) -> dict[str, ActiveLot]:
        """A copy of the active lots."""
        return dict(self._active)

    async def refresh(self) -> None:
        """Reload from the store if it changed; send unpublished changes."""
        async with self._lock:
            version = await asyncio.to_thread(self._store.data_version)
            if version != self._version:
                self._version = version
                active = await asyncio.to_thread(self._store.active)
                for station in set(self._active) | set(active):
                    if self._active.get(station) != active.get(station):
                        self._state_changed(station, active.get(station))
                self._active = active
            await self._publish_changes()

    def _state_changed(self, station: str, active: ActiveLot | None) -> None:
        if self._on_change is not None:
            self._on_change(station, active)
        if self._publish_state is not None:
            self._publish_state(lot_state(station, active))

    async def _publish_changes(self) -> None:
        changes = await asyncio.to_thread(self._store.unpublished)
        if not changes:
            return
        await self._record([self._event(change) for change in changes])
        await asyncio.to_thread(self._store.mark_published, [c.id for c in changes])

    def _event(self, change: LotChange) -> Draft:
        tags = {"site": self._site, "device": LOT_EVENTS_DEVICE, "station": change.station}
        if change.lot is not None:
            tags["lot"] = change.lot
        return Draft(
            device=LOT_EVENTS_DEVICE,
            measurement="lot_assignment",
            fields={
                "action": "set" if change.lot is not None else "clear",
                "lot_code": change.lot or "",
                "by": change.by,
                "source": change.source,
                "change_id": change.id,
            },
            tags=tags,
            kind="event",
        )

    def publish_all(self) -> None:
        """Push the retained state of every known station (after a reconnect)."""
        for station in sorted(self._stations):
            self._state_changed(station, self._active.get(station))

    async def run_loop(self) -> None:
        """Keep the copy current and send changes made by other processes."""
        while True:
            try:
                await self.refresh()
            except (LotError, OSError) as exc:
                log.warning("Could not read the lot store %s: %s", self._store.path, exc)
            await asyncio.sleep(self._poll_s)

    async def handle_command(self, cmd: Command) -> dict[str, object]:
        """Set or clear a station's lot (``cmd/lot/<station>``); the reply document.

        Raises:
            CommandRefused: Not ``lot/<station>``, an unknown station, or a bad
                lot code; nothing is written.
        """
        if len(cmd.path) != 2 or cmd.path[0] != "lot":
            raise CommandRefused(f"unknown command topic cmd/{'/'.join(cmd.path)[:80]!r}")
        station = cmd.path[1]
        if not _STATION.match(station):
            raise CommandRefused("station must be a lowercase identifier", station=None)
        if station not in self._stations:
            known = ", ".join(sorted(self._stations)) or "none configured"
            raise CommandRefused(f"unknown station (known: {known})", station=station)
        if "lot" not in cmd.doc:
            raise CommandRefused('payload must be an object with "lot"', station=station)
        lot = cmd.doc["lot"]
        if lot is not None and not isinstance(lot, str):
            raise CommandRefused('"lot" must be a string or null', station=station)
        now = self._clock_ns()
        try:
            async with self._lock:
                if lot is None:
                    await asyncio.to_thread(
                        self._store.clear, station, by=cmd.by, source=cmd.source, at_ns=now
                    )
                else:
                    await asyncio.to_thread(
                        self._store.set, station, lot, by=cmd.by, source=cmd.source, at_ns=now
                    )
        except LotError as exc:
            raise CommandRefused(str(exc), station=station) from None
        # data_version only moves for other connections' commits: reload now.
        self._version = -1
        await self.refresh()
        active = self._active.get(station)
        return {"station": station, "lot": None if active is None else active.lot}

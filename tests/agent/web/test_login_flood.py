"""Password guessing in parallel against the real web server, from real addresses.

The server listens on 127.0.0.1; clients connect from other loopback addresses
(127.0.0.2, 127.0.0.10...), so each is a different client address to the server, as
on a LAN, with no proxy header involved. The lockout rules are in ``agent.web.auth``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from coffee_telemetry.agent.web.auth import MAX_WAITING_HASHES, PAIR_LIMIT, USER_LIMIT
from tests.agent.web.test_server import PASSWORD, PASSWORD_HASH, Site, _site, make_config

#: Guesses sent at once from one address (the defect: all of them were checked).
FLOOD = 100


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    # Room for the whole flood on open connections: the lockout, not the connection
    # cap, must be what stops it.
    cfg = make_config(
        tmp_path,
        users=[
            {"name": "maria", "password_hash": PASSWORD_HASH},
            {"name": "joao", "password_hash": PASSWORD_HASH},
        ],
        max_connections=512,
        max_connections_per_address=FLOOD + 8,
    )
    async for s in _site(tmp_path, cfg, None):
        yield s


def client_from(address: str) -> aiohttp.ClientSession:
    """A browser at ``address`` (a loopback address other than the server's)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=0),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
    )


async def login(
    session: aiohttp.ClientSession, base: str, user: str, password: str
) -> tuple[int, str | None]:
    body = json.dumps({"user": user, "password": password})
    async with session.post(base + "/api/login", data=body) as r:
        await r.read()
        return r.status, r.headers.get("Retry-After")


async def auth_stats(base: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(base + "/api/web") as r:
        doc = await r.json()
    stats = doc["auth"]
    assert isinstance(stats, dict)
    return stats


async def test_a_parallel_flood_stops_at_five_and_the_right_password_still_works(
    site: Site,
) -> None:
    async with client_from("127.0.0.1") as attacker, client_from("127.0.0.1") as reader:

        async def reads_during_the_flood() -> list[int]:
            statuses = []
            for _ in range(5):
                async with reader.get(site.base + "/api/warehouse") as r:
                    statuses.append(r.status)
            return statuses

        results, reads = await asyncio.gather(
            asyncio.gather(
                *(login(attacker, site.base, "maria", f"guess-{i}") for i in range(FLOOD))
            ),
            reads_during_the_flood(),
        )
        assert reads == [200] * 5  # the pages keep working while it lasts
        statuses = Counter(status for status, _ in results)
        assert statuses == {401: PAIR_LIMIT, 429: FLOOD - PAIR_LIMIT}
        assert all(0 < int(after or 0) <= 300 for status, after in results if status == 429)
        stats = await auth_stats(site.base)
        assert stats["hashes_computed"] == PAIR_LIMIT  # counted before hashing
        assert (stats["logins_wrong"], stats["logins_locked"]) == (PAIR_LIMIT, FLOOD - PAIR_LIMIT)

        # The lockout holds at five: the right password from that address waits too.
        assert (await login(attacker, site.base, "maria", PASSWORD))[0] == 429
    # Maria, at another desk, logs in as usual; so does João from the attacker's address.
    async with client_from("127.0.0.2") as desk:
        assert (await login(desk, site.base, "maria", PASSWORD))[0] == 200
        async with desk.get(site.base + "/api/session") as r:
            assert (await r.json())["user"] == "maria"
    async with client_from("127.0.0.1") as same_address:
        assert (await login(same_address, site.base, "joao", PASSWORD))[0] == 200
    assert (await auth_stats(site.base))["hashes_computed"] == PAIR_LIMIT + 2


async def test_guessing_from_many_addresses_locks_the_user_but_not_her_own_desk(
    site: Site,
) -> None:
    async with client_from("127.0.0.2") as desk:
        assert (await login(desk, site.base, "maria", PASSWORD))[0] == 200
    per_address = PAIR_LIMIT - 1  # each address stays under the pair limit
    addresses = [f"127.0.0.{10 + i}" for i in range(USER_LIMIT // per_address + 2)]
    sessions = [client_from(a) for a in addresses]

    async def guesses(i: int, session: aiohttp.ClientSession) -> list[tuple[int, str | None]]:
        # One guess at a time per address, all addresses at once: fewer logins in flight
        # than the password worker queues (more would be answered 503, unchecked).
        return [await login(session, site.base, "maria", f"g-{i}-{j}") for j in range(per_address)]

    try:
        per_session = await asyncio.gather(*(guesses(i, s) for i, s in enumerate(sessions)))
    finally:
        for s in sessions:
            await s.close()
    results = [r for rs in per_session for r in rs]
    statuses = Counter(status for status, _ in results)
    assert statuses == {401: USER_LIMIT, 429: len(results) - USER_LIMIT}
    assert (await auth_stats(site.base))["hashes_computed"] == 1 + USER_LIMIT

    async with client_from("127.0.0.99") as stranger:  # never logged in as maria
        assert (await login(stranger, site.base, "maria", PASSWORD))[0] == 429
        assert (await login(stranger, site.base, "joao", PASSWORD))[0] == 200  # only maria
    async with client_from("127.0.0.2") as desk:  # where maria logged in before
        assert (await login(desk, site.base, "maria", PASSWORD))[0] == 200


async def test_more_logins_than_the_worker_queues_are_refused_unchecked(site: Site) -> None:
    sessions = [client_from(f"127.0.1.{i}") for i in range(4 * MAX_WAITING_HASHES)]
    try:
        results = await asyncio.gather(*(login(s, site.base, "maria", "guess") for s in sessions))
    finally:
        for s in sessions:
            await s.close()
    statuses = Counter(status for status, _ in results)
    assert set(statuses) == {401, 503}
    assert all(after == "5" for status, after in results if status == 503)
    stats = await auth_stats(site.base)
    assert stats["hashes_computed"] == statuses[401]  # a 503 cost no hash...
    assert stats["logins_busy"] == statuses[503]
    busy = next(i for i, (status, _) in enumerate(results) if status == 503)
    async with client_from(f"127.0.1.{busy}") as again:  # ...and no strike against anyone
        for _ in range(PAIR_LIMIT - 1):
            assert (await login(again, site.base, "maria", "guess"))[0] == 401
        assert (await login(again, site.base, "maria", PASSWORD))[0] == 200

"""Password hashes, lockouts, sessions, CSRF and API tokens (``agent.web.auth``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from coffee_telemetry.agent.config import WebUserConfig, parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.passwords import (
    ARGON2_MEMORY_KIB,
    MAX_HASH_MEMORY,
    hash_cost,
    hash_password,
    hash_problem,
    needs_rehash,
    verify_password,
)
from coffee_telemetry.agent.web.auth import (
    ADDRESS_LIMIT,
    FAILURE_WINDOW_S,
    PAIR_LIMIT,
    TOKEN_FAILURES,
    USER_LIMIT,
    Auth,
    AuthStore,
    Busy,
    Locked,
    LoginGuard,
    PasswordWorker,
    Session,
)

PASSWORD = "cafe-bom-2026"
#: Hashing is slow on purpose: one of each kind for the module.
HASH = hash_password(PASSWORD)


def scrypt_hash(password: str, *, log2n: int = 14, r: int = 8, p: int = 1) -> str:
    """A hash in the format earlier releases wrote (``scrypt$14$8$1$salt$key``)."""
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=2**log2n, r=r, p=p, maxmem=2**26 + 2**20, dklen=32
    )
    return (
        f"scrypt${log2n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )


SCRYPT_HASH = scrypt_hash(PASSWORD)
#: A scrypt hash (n = 2**20) that earlier releases accepted, and that needs 1 GiB to check.
HUGE_SCRYPT = "scrypt$20$8$1$MDEyMzQ1Njc4OWFiY2RlZg==$" + base64.b64encode(b"\0" * 32).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_auth(
    clock: Clock,
    password_hash: str = HASH,
    *,
    store: AuthStore | None = None,
    tokens: dict[str, str] | None = None,
) -> Auth:
    users = [
        WebUserConfig(name="maria", password_hash=password_hash),
        WebUserConfig(name="joao", password_hash=HASH),
    ]
    return Auth(
        users,
        store=store or AuthStore(b"k" * 32),
        session_s=3600,
        tokens=tokens,
        clock_s=clock,
        monotonic_s=clock,
    )


# -- hashes --------------------------------------------------------------------------


def test_new_hashes_are_argon2id_with_owasp_parameters() -> None:
    assert HASH.startswith(f"$argon2id$v=19$m={ARGON2_MEMORY_KIB},t=2,p=1$")
    cost = hash_cost(HASH)
    assert cost is not None
    assert (cost.memory_bytes, cost.passes, cost.lanes) == (19 * 2**20, 2, 1)
    assert verify_password(PASSWORD, HASH)
    assert not verify_password("cafe-bom-2027", HASH)
    assert not verify_password("", HASH)
    assert hash_password("x") != hash_password("x")  # salted
    assert not needs_rehash(HASH)
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_old_scrypt_hashes_still_verify_and_want_a_rehash() -> None:
    assert verify_password(PASSWORD, SCRYPT_HASH)
    assert not verify_password("cafe-bom-2027", SCRYPT_HASH)
    assert needs_rehash(SCRYPT_HASH)
    assert hash_problem(SCRYPT_HASH) is None


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        (HUGE_SCRYPT, "needs 1024 MiB"),
        (scrypt_hash(PASSWORD).replace("scrypt$14$8$", "scrypt$16$8$"), "needs 64 MiB"),
        (HASH.replace("m=19456", "m=262144"), "needs 256 MiB"),
        (HASH.replace("t=2", "t=50"), "passes or lanes"),
        (HASH.replace("p=1", "p=16"), "passes or lanes"),
        ("senha-em-texto", "not a password hash"),
        ("", "not a password hash"),
        (HASH.replace("argon2id", "argon2i"), "not a password hash"),
        ("md5$x$y$z$a$b", "not a password hash"),
    ],
)
def test_hashes_the_verifier_will_not_check(encoded: str, why: str) -> None:
    problem = hash_problem(encoded)
    assert problem is not None
    assert why in problem
    assert encoded[:20] not in problem or not encoded
    started = time.perf_counter()
    assert not verify_password(PASSWORD, encoded)
    assert time.perf_counter() - started < 0.5  # refused, not computed (1 GiB would fail)


def test_the_limit_is_what_a_unit_holds() -> None:
    # Two logins in flight hold one hash at a time (PasswordWorker): the limit is per hash.
    assert MAX_HASH_MEMORY <= 64 * 2**20


def test_config_refuses_plain_costly_and_repeated_users(tmp_path: Path) -> None:
    base = {"site": {"id": "s"}, "agent": {"data_dir": str(tmp_path)}}

    def users(*entries: dict[str, str]) -> dict[str, object]:
        return {**base, "api": {"users": list(entries)}}

    with pytest.raises(
        ConfigError, match=r"api\.users\[0\]\.password_hash: not a password hash"
    ) as e:
        parse_config(users({"name": "maria", "password_hash": "senha"}))
    assert "senha" not in str(e.value)
    with pytest.raises(ConfigError, match=r"api\.users\[0\]\.password_hash: .*1024 MiB") as e:
        parse_config(users({"name": "maria", "password_hash": HUGE_SCRYPT}))
    assert "MDEy" not in str(e.value)
    user = {"name": "maria", "password_hash": HASH}
    assert parse_config(users(user, {"name": "joao", "password_hash": SCRYPT_HASH}))
    with pytest.raises(ConfigError, match="repeated: maria"):
        parse_config(users(user, user))
    with pytest.raises(ConfigError, match=r"api\.users\[0\]\.name"):
        parse_config(users({**user, "name": "a.b"}))


# -- sessions ------------------------------------------------------------------------


def test_session_round_trip_and_expiry() -> None:
    clock = Clock()
    auth = make_auth(clock)
    session = auth.issue("maria")
    assert auth.session(session.cookie) == session
    clock.now += 3599
    assert auth.session(session.cookie) is not None
    clock.now += 2
    assert auth.session(session.cookie) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
        lambda c: c.replace("maria", "joao", 1),
        lambda c: "",
        lambda c: "x" * 600,
        lambda c: "no-dots-at-all",
        lambda c: c.replace(".0.", ".1.", 1),  # another epoch
    ],
)
def test_tampered_cookies_are_refused(mangle: object) -> None:
    auth = make_auth(Clock())
    cookie = auth.issue("maria").cookie
    assert callable(mangle)
    assert auth.session(mangle(cookie)) is None


def test_other_key_or_changed_password_ends_sessions() -> None:
    clock = Clock()
    cookie = make_auth(clock).issue("maria").cookie
    assert make_auth(clock, store=AuthStore(b"j" * 32)).session(cookie) is None
    assert make_auth(clock, password_hash=SCRYPT_HASH).session(cookie) is None
    nobody = Auth([], store=AuthStore(b"k" * 32), session_s=3600, clock_s=clock)
    assert nobody.session(cookie) is None


async def test_logout_ends_every_session_of_the_user_only() -> None:
    clock = Clock()
    auth = make_auth(clock)
    phone, desk, joao = auth.issue("maria"), auth.issue("maria"), auth.issue("joao")
    await auth.logout(phone)
    assert auth.session(phone.cookie) is None
    assert auth.session(desk.cookie) is None  # everywhere, copied cookies too
    assert auth.session(joao.cookie) is not None
    again = auth.issue("maria")
    assert auth.session(again.cookie) is not None


async def test_logouts_and_upgrades_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "data" / "web-auth.json"
    store = AuthStore.open(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    auth = make_auth(clock, store=store)
    kept, ended = auth.issue("joao"), auth.issue("maria")
    await auth.logout(ended)
    restarted = make_auth(clock, store=AuthStore.open(path))
    assert restarted.session(kept.cookie) is not None  # same key
    assert restarted.session(ended.cookie) is None  # same epoch
    assert "k" * 8 not in path.read_text()


def test_a_lost_or_broken_store_ends_every_session(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "web-auth.json"
    cookie = make_auth(clock, store=AuthStore.open(path)).issue("maria").cookie
    path.write_text("{not json")
    assert make_auth(clock, store=AuthStore.open(path)).session(cookie) is None
    path.unlink()
    assert make_auth(clock, store=AuthStore.open(path)).session(cookie) is None


def test_the_key_file_of_earlier_releases_is_adopted(tmp_path: Path) -> None:
    (tmp_path / "web-session.key").write_bytes(b"L" * 32)
    store = AuthStore.open(tmp_path / "web-auth.json")
    assert store.key == b"L" * 32
    assert AuthStore.open(tmp_path / "web-auth.json").key == b"L" * 32


def test_csrf_token_is_bound_to_the_session() -> None:
    clock = Clock()
    auth = make_auth(clock)
    a = auth.issue("maria")
    clock.now += 1
    b = auth.issue("maria")
    assert auth.csrf_ok(a, auth.csrf_token(a))
    assert not auth.csrf_ok(a, auth.csrf_token(b))
    assert not auth.csrf_ok(a, None)
    assert not auth.csrf_ok(a, "")


# -- the lockout ---------------------------------------------------------------------


def guard(clock: Clock) -> LoginGuard:
    return LoginGuard(["maria", "joao"], clock_s=clock)


def fail(g: LoginGuard, user: str, address: str, times: int) -> list[object]:
    return [g.begin(user, address) for _ in range(times)]


def test_a_pair_locks_at_five_and_other_addresses_do_not_notice() -> None:
    clock = Clock()
    g = guard(clock)
    got = fail(g, "maria", "10.0.0.5", PAIR_LIMIT + 3)
    assert not any(isinstance(a, Locked) for a in got[:PAIR_LIMIT])
    assert all(isinstance(a, Locked) and a.scope == "pair" for a in got[PAIR_LIMIT:])
    assert not isinstance(g.begin("maria", "10.0.0.6"), Locked)
    assert not isinstance(g.begin("joao", "10.0.0.5"), Locked)
    clock.now += FAILURE_WINDOW_S
    assert not isinstance(g.begin("maria", "10.0.0.5"), Locked)


def test_a_user_locks_for_new_addresses_only() -> None:
    clock = Clock()
    g = guard(clock)
    desk = g.begin("maria", "10.0.0.2")
    assert not isinstance(desk, Locked)
    g.succeeded(desk)  # maria logged in from her desk
    for i in range(USER_LIMIT // (PAIR_LIMIT - 1)):
        fail(g, "maria", f"10.9.0.{i}", PAIR_LIMIT - 1)  # under each pair's limit
    locked = g.begin("maria", "10.9.9.9")
    assert isinstance(locked, Locked)
    assert locked.scope == "user"
    assert 0 < locked.retry_after_s <= FAILURE_WINDOW_S
    assert not isinstance(g.begin("maria", "10.0.0.2"), Locked)  # her desk still gets in
    assert not isinstance(g.begin("joao", "10.9.9.9"), Locked)


def test_an_address_trying_many_names_locks_except_for_its_own_users() -> None:
    names = ["ana", "bia", "carla", "dora", "eva"]
    g = LoginGuard(["maria", "joao", *names], clock_s=Clock())
    joao = g.begin("joao", "10.0.0.7")
    assert not isinstance(joao, Locked)
    g.succeeded(joao)
    for name in names:
        fail(g, name, "10.0.0.7", ADDRESS_LIMIT // len(names))  # under each pair's limit
    got = g.begin("maria", "10.0.0.7")
    assert isinstance(got, Locked)
    assert got.scope == "address"
    assert not isinstance(g.begin("joao", "10.0.0.7"), Locked)  # joao logged in here
    assert not isinstance(g.begin("maria", "10.0.0.8"), Locked)


def test_unknown_names_share_one_counter_per_address() -> None:
    g = guard(Clock())
    for i in range(PAIR_LIMIT):
        assert not isinstance(g.begin(f"name-{i}", "10.0.0.8"), Locked)
    got = g.begin("yet-another", "10.0.0.8")
    assert isinstance(got, Locked)
    assert got.scope == "pair"


def test_a_good_login_takes_its_charge_back() -> None:
    g = guard(Clock())
    for _ in range(PAIR_LIMIT * 3):
        attempt = g.begin("maria", "10.0.0.9")
        assert not isinstance(attempt, Locked)
        g.succeeded(attempt)


def test_the_tables_stay_bounded() -> None:
    from coffee_telemetry.agent.web import auth as module

    g = guard(Clock())
    for i in range(module.MAX_TRACKED_PAIRS + 500):
        g.begin("maria", f"fd00::{i:x}")
    assert len(g._pairs) <= module.MAX_TRACKED_PAIRS
    assert len(g._addresses) <= module.MAX_TRACKED_ADDRESSES


# -- logins through Auth -------------------------------------------------------------


async def test_login_counts_before_it_hashes() -> None:
    clock = Clock()
    auth = make_auth(clock)
    results = await asyncio.gather(
        *(auth.login("maria", f"guess-{i}", "10.0.0.5") for i in range(30))
    )
    assert [r for r in results if r is None] == [None] * PAIR_LIMIT
    assert all(isinstance(r, Locked) for r in results if r is not None)
    assert auth.worker.computed == PAIR_LIMIT
    locked = await auth.login("maria", PASSWORD, "10.0.0.5")
    assert isinstance(locked, Locked)
    assert auth.worker.computed == PAIR_LIMIT  # refused unchecked
    other = await auth.login(" Maria ", PASSWORD, "10.0.0.6")
    assert isinstance(other, Session)
    assert other.user == "maria"
    assert await auth.login("nobody", PASSWORD, "10.0.0.6") is None
    assert auth.stats.logins_ok == 1
    assert auth.stats.logins_locked == len(results) - PAIR_LIMIT + 1
    auth.close()


async def test_an_old_hash_is_replaced_at_the_next_login(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "web-auth.json"
    auth = make_auth(clock, SCRYPT_HASH, store=AuthStore.open(path))
    assert isinstance(await auth.login("maria", PASSWORD, "10.0.0.2"), Session)
    assert auth.stats.hashes_upgraded == 1
    kept = json.loads(path.read_text())["users"]["maria"]
    assert kept["upgraded_hash"].startswith("$argon2id$")
    assert verify_password(PASSWORD, kept["upgraded_hash"])
    # After a restart the upgraded hash is the one checked (no upgrade again)...
    again = make_auth(clock, SCRYPT_HASH, store=AuthStore.open(path))
    assert isinstance(await again.login("maria", PASSWORD, "10.0.0.2"), Session)
    assert again.stats.hashes_upgraded == 0
    assert await again.login("maria", "wrong", "10.0.0.2") is None
    # ...until the operator sets another hash in site.toml: that one wins.
    other = hash_password("outra-senha-2026")
    changed = make_auth(clock, other, store=AuthStore.open(path))
    assert await changed.login("maria", PASSWORD, "10.0.0.2") is None
    assert isinstance(await changed.login("maria", "outra-senha-2026", "10.0.0.2"), Session)
    for a in (auth, again, changed):
        a.close()


async def test_one_hash_at_a_time_and_a_bounded_queue() -> None:
    worker = PasswordWorker(max_waiting=3)
    release = threading.Event()
    running, most = [0], [0]
    lock = threading.Lock()

    def slow() -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1
        return 1

    calls = [asyncio.ensure_future(worker.run(slow)) for _ in range(3)]
    await asyncio.sleep(0.05)
    with pytest.raises(Busy):
        await worker.run(slow)
    release.set()
    assert await asyncio.gather(*calls) == [1, 1, 1]
    assert most[0] == 1
    assert worker.pending == 0
    assert worker.computed == 3
    worker.close()


async def test_a_busy_worker_takes_the_charge_back() -> None:
    clock = Clock()
    auth = Auth(
        [WebUserConfig(name="maria", password_hash=HASH)],
        store=AuthStore(b"k" * 32),
        session_s=60,
        clock_s=clock,
        monotonic_s=clock,
        worker=PasswordWorker(max_waiting=0),
    )
    for _ in range(PAIR_LIMIT * 2):
        with pytest.raises(Busy):
            await auth.login("maria", PASSWORD, "10.0.0.5")
    assert not isinstance(auth.guard.begin("maria", "10.0.0.5"), Locked)
    assert auth.stats.logins_busy == PAIR_LIMIT * 2
    auth.close()


# -- API tokens ----------------------------------------------------------------------


def test_tokens_are_named_and_wrong_ones_throttled_per_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    auth = make_auth(clock, tokens={"api": "a" * 40, "balanca": "b" * 40})
    assert auth.check_token("b" * 40, "10.0.0.5").name == "balanca"
    for _ in range(TOKEN_FAILURES):
        check = auth.check_token("guess", "10.0.0.5")
        assert (check.name, check.locked) == (None, False)
    assert auth.check_token("a" * 40, "10.0.0.5").locked  # throttled: not even compared
    assert auth.check_token("a" * 40, "10.0.0.6").name == "api"
    clock.now += FAILURE_WINDOW_S
    assert auth.check_token("a" * 40, "10.0.0.5").name == "api"
    assert auth.stats.tokens_wrong == TOKEN_FAILURES
    assert auth.stats.tokens_locked == 1
    wrong = [r for r in caplog.records if "Wrong API token from 10.0.0.5" in r.getMessage()]
    assert len(wrong) == TOKEN_FAILURES
    assert all("guess" not in r.getMessage() for r in caplog.records)


def test_no_token_configured_matches_nothing() -> None:
    auth = make_auth(Clock())
    assert not auth.tokens_enabled
    assert auth.check_token("", "10.0.0.5").name is None


# -- the command ---------------------------------------------------------------------


def test_hash_password_command_prints_a_working_user(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import tomllib

    from coffee_telemetry.agent.cli.main import main

    monkeypatch.setattr("sys.stdin", io.StringIO("cafe-bom-2026\n"))
    assert main(["hash-password", "--stdin", "--user", "joao"]) == 0
    out = capsys.readouterr().out
    assert "cafe-bom-2026" not in out
    [user] = tomllib.loads(out)["api"]["users"]
    assert user["name"] == "joao"
    assert user["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password("cafe-bom-2026", user["password_hash"])
    WebUserConfig.model_validate(user)  # what the config accepts

    monkeypatch.setattr("sys.stdin", io.StringIO("curta\n"))
    assert main(["hash-password", "--stdin"]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_hash_password_command_asks_twice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from coffee_telemetry.agent.cli.main import main

    answers = iter(["cafe-bom-2026", "cafe-bom-2027"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["hash-password"]) == 2
    assert "differ" in capsys.readouterr().err
    answers = iter(["cafe-bom-2026", "cafe-bom-2026"])
    assert main(["hash-password"]) == 0
    assert 'name = "maria"' in capsys.readouterr().out

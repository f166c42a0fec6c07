"""Passwords, session cookies and CSRF tokens (``agent.web.auth``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from coffee_telemetry.agent.config import WebUserConfig, parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.web.auth import (
    MAX_FAILURES,
    Auth,
    hash_password,
    load_session_key,
    verify_password,
)

HASH = hash_password("cafe-bom-2026", salt=b"0123456789abcdef")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_auth(clock: Clock, password_hash: str = HASH, key: bytes = b"k" * 32) -> Auth:
    users = [WebUserConfig(name="maria", password_hash=password_hash)]
    return Auth(users, key=key, session_s=3600, clock_s=clock)


def test_hash_and_verify() -> None:
    assert verify_password("cafe-bom-2026", HASH)
    assert not verify_password("cafe-bom-2027", HASH)
    assert not verify_password("", HASH)
    assert hash_password("x") != hash_password("x")  # salted
    for broken in ("", "scrypt$14$8$1$bad", "md5$x$y$z$a$b", HASH.replace("scrypt", "bcrypt")):
        assert not verify_password("cafe-bom-2026", broken)
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_config_refuses_a_plain_password_and_repeated_users(tmp_path: Path) -> None:
    base = {"site": {"id": "s"}, "agent": {"data_dir": str(tmp_path)}}
    with pytest.raises(
        ConfigError, match=r"api\.users\[0\]\.password_hash: not a password hash"
    ) as e:
        parse_config({**base, "api": {"users": [{"name": "maria", "password_hash": "senha"}]}})
    assert "senha" not in str(e.value)
    user = {"name": "maria", "password_hash": HASH}
    with pytest.raises(ConfigError, match="repeated: maria"):
        parse_config({**base, "api": {"users": [user, user]}})
    with pytest.raises(ConfigError, match=r"api\.users\[0\]\.name"):
        parse_config({**base, "api": {"users": [{**user, "name": "a.b"}]}})


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
        lambda c: c.replace("maria", "admin", 1),
        lambda c: "",
        lambda c: "x" * 600,
        lambda c: "no-dots-at-all",
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
    assert make_auth(clock, key=b"j" * 32).session(cookie) is None
    other = hash_password("nova-senha-2026", salt=b"fedcba9876543210")
    assert make_auth(clock, password_hash=other).session(cookie) is None
    assert Auth([], key=b"k" * 32, session_s=3600, clock_s=clock).session(cookie) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    auth = make_auth(Clock())
    a, b = auth.issue("maria"), auth.issue("maria")
    assert auth.csrf_ok(a, auth.csrf_token(a))
    assert not auth.csrf_ok(a, auth.csrf_token(b)) or a.cookie == b.cookie
    assert not auth.csrf_ok(a, None)
    assert not auth.csrf_ok(a, "")


def test_throttle_after_failures_then_forgets() -> None:
    clock = Clock()
    auth = make_auth(clock)
    for _ in range(MAX_FAILURES):
        assert not auth.throttled("10.0.0.5")
        auth.record_failure("10.0.0.5")
    assert auth.throttled("10.0.0.5")
    assert not auth.throttled("10.0.0.6")
    clock.now += 301
    assert not auth.throttled("10.0.0.5")


def test_password_check_for_unknown_user_is_false() -> None:
    auth = make_auth(Clock())
    assert auth.check_password("maria", "cafe-bom-2026")
    assert not auth.check_password("maria", "wrong")
    assert not auth.check_password("joao", "cafe-bom-2026")


def test_session_key_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "d" / "web-session.key"
    key = load_session_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_session_key(path) == key


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

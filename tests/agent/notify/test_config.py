"""``[notify]`` is checked at start: every problem names its key; secrets come from outside."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.notify.config import NotifyConfig


def load(notify: dict[str, object]) -> object:
    return parse_config({"site": {"id": "s1"}, "notify": notify}).notify


@pytest.mark.parametrize(
    ("notify", "expected"),
    [
        (
            {"email": {"host": "h", "sender": "a@b.c", "username": "u", "password_env": "NOPE_X"}},
            "notify.email: password_env: environment variable NOPE_X is not set",
        ),
        (
            {"email": {"host": "h", "sender": "a@b.c", "username": "u"}},
            "notify.email: username is set: set password_env or password_file too",
        ),
        ({"telegram": {}}, "notify.telegram: set token_env or token_file"),
        (
            {"contacts": [{"name": "J", "channels": {"sms": "+5535999990000"}}]},
            "notify: contact 'J': sms needs a [notify.sms] section",
        ),
        (
            {"sms": {"port": "/dev/x"}, "contacts": [{"name": "J", "channels": {"sms": "3599"}}]},
            "channels.sms: a phone number like +5535999990000",
        ),
        (
            {"routes": [{"name": "r", "contacts": ["Ninguém"]}]},
            "notify: route 'r': no contact named 'Ninguém'",
        ),
        ({"routes": [{"name": "r", "contacts": ["x"], "quiet_hours": "22h-6h"}]}, "quiet_hours"),
        ({"secret": "x"}, "notify.secret: unknown key"),
    ],
)
def test_problems_name_their_key(notify: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(notify)
    assert expected in str(caught.value)


def test_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "pin").write_text("4321\n")
    (tmp_path / "pw").write_text("s3nha\n")
    notify = load(
        {
            "email": {
                "host": "h",
                "sender": "a@b.c",
                "username": "u",
                "password_file": str(tmp_path / "pw"),
            },
            "sms": {"port": "/dev/x", "pin_file": str(tmp_path / "pin")},
        }
    )
    assert isinstance(notify, NotifyConfig)
    assert notify.email is not None
    assert notify.email.secret == "s3nha"
    assert notify.sms is not None
    assert notify.sms.secret == "4321"
    assert "s3nha" not in repr(notify)
    assert "4321" not in repr(notify)
    (tmp_path / "pin").write_text("12ab")
    with pytest.raises(ConfigError, match="a SIM PIN is 4 to 8 digits"):
        load({"sms": {"port": "/dev/x", "pin_file": str(tmp_path / "pin")}})

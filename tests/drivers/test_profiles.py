"""Meter profiles: their table, how they are laid under a device, and the loader's hook."""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.config import (
    DRIVERS,
    DeviceConfig,
    MtSicsDevice,
    TicketDevice,
    parse_config,
)
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.drivers.moisture_ticket import DEFAULT_PATTERNS
from coffee_telemetry.drivers.profiles import (
    PROFILES,
    ProfileProblem,
    apply_profile,
    for_driver,
    merge,
)

URL = re.compile(r"https?://\S+")


def site(*devices: Mapping[str, object]) -> dict[str, object]:
    return {"site": {"id": "t"}, "devices": [dict(d) for d in devices]}


def one(device: Mapping[str, object]) -> DeviceConfig:
    return parse_config(site(device)).devices[0]


def test_every_driver_of_a_documented_format_has_a_profile() -> None:
    assert {p.driver for p in PROFILES.values()} == set(DRIVERS)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_profile_cites_its_source_in_its_docstring(name: str) -> None:
    profile = PROFILES[name]
    module = importlib.import_module(f"coffee_telemetry.drivers.profiles.{name.replace('-', '_')}")
    doc = module.__doc__
    assert doc is not None
    assert f"``{name}``" in doc.splitlines()[0]
    if profile.evidence == "manual":
        urls = URL.findall(profile.source)
        assert urls, profile.source
        for url in urls:  # every URL of the source is in the docstring too
            assert url.rstrip(";,") in doc
    else:
        assert "INFERRED" in doc
        assert "no public manual" in profile.source


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_profile_alone_is_a_valid_device(name: str) -> None:
    device = one({"id": "m", "port": "/dev/x", "profile": name})
    assert device.driver == PROFILES[name].driver
    assert device.profile == name


def test_profile_supplies_serial_and_options() -> None:
    tesma = one({"id": "m", "port": "/dev/x", "profile": "tesma-plus2"})
    assert tesma.driver == "moisture.tesma"
    mtsics = one({"id": "m", "port": "/dev/x", "profile": "mettler-mtsics"})
    assert mtsics.serial.xonxoff is True
    ticket = one({"id": "m", "port": "/dev/x", "profile": "moisture-ticket-pt"})
    assert isinstance(ticket, TicketDevice)
    fields = ticket.ticket.fields
    assert fields is not None
    assert [(f.field, f.regex, f.kind) for f in fields] == [
        (p.field, p.regex, p.kind) for p in DEFAULT_PATTERNS
    ]


def test_explicit_keys_win_table_by_table() -> None:
    device = one(
        {
            "id": "m",
            "port": "/dev/x",
            "profile": "mettler-mtsics",
            "serial": {"baudrate": 4800, "parity": "E", "bytesize": 7},
            "mtsics": {"mode": "stream"},
        }
    )
    assert isinstance(device, MtSicsDevice)
    serial = device.serial
    assert (serial.baudrate, serial.bytesize, serial.parity) == (4800, 7, "E")
    assert serial.xonxoff is True  # the profile's, not replaced by the device's table
    assert device.mtsics.mode == "stream"
    assert device.mtsics.line_ending == "crlf"


def test_a_list_is_replaced_whole() -> None:
    mine = [{"field": "moisture_pct", "regex": r"^H:\s*(\d+,\d)", "kind": "float"}]
    device = one(
        {
            "id": "m",
            "port": "/dev/x",
            "profile": "moisture-ticket-pt",
            "ticket": {"fields": mine, "idle_gap_s": 1.0},
        }
    )
    assert isinstance(device, TicketDevice)
    ticket = device.ticket
    assert ticket.fields is not None
    assert [f.regex for f in ticket.fields] == [r"^H:\s*(\d+,\d)"]
    assert ticket.idle_gap_s == 1.0


def test_an_explicit_driver_must_be_the_profiles() -> None:
    same = one({"id": "m", "port": "/dev/x", "profile": "tesma-plus2", "driver": "moisture.tesma"})
    assert same.driver == "moisture.tesma"
    with pytest.raises(ConfigError) as err:
        one({"id": "m", "port": "/dev/x", "profile": "tesma-plus2", "driver": "scale.ascii"})
    assert err.value.problems[0][0] == "devices[0].profile"
    assert "'moisture.tesma', not 'scale.ascii'" in str(err.value)


@pytest.mark.parametrize("bad", ["gehaka-g650", "", 7, ["tesma-plus2"]])
def test_unknown_profile_names_its_key_and_the_known_ones(bad: object) -> None:
    ok = {"id": "a", "port": "/dev/a", "driver": "moisture.tesma"}
    with pytest.raises(ConfigError) as err:
        parse_config(site(ok, {"id": "m", "port": "/dev/x", "profile": bad}), source="s.toml")
    key, message = err.value.problems[0]
    assert key == "devices[1].profile"
    for name in PROFILES:
        assert repr(name) in message
    assert "s.toml: devices[1].profile: " in str(err.value)


def test_without_profile_nothing_changes() -> None:
    table = {"id": "m", "port": "/dev/x", "driver": "scale.ascii", "serial": {"baudrate": 2400}}
    assert apply_profile(table) == table
    assert one(table).profile is None


def test_merge_copies_and_never_aliases() -> None:
    defaults = {"serial": {"baudrate": 9600}, "ticket": {"fields": [{"field": "a"}]}}
    out = merge(defaults, {"serial": {"parity": "E"}})
    assert out == {
        "serial": {"baudrate": 9600, "parity": "E"},
        "ticket": {"fields": [{"field": "a"}]},
    }
    serial, ticket = out["serial"], out["ticket"]
    assert isinstance(serial, dict)
    assert isinstance(ticket, dict)
    serial["baudrate"] = 1
    ticket["fields"][0]["field"] = "b"
    assert defaults == {"serial": {"baudrate": 9600}, "ticket": {"fields": [{"field": "a"}]}}


def test_for_driver_keeps_table_order() -> None:
    assert [p.name for p in for_driver("scale.ascii")] == ["ad-balance", "st-gs-indicator"]
    assert for_driver("counter.autonics_ct") == ()


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("tesma-plus2", bytes.fromhex("024D41495A202020200D0A31342E340D0A03")),
        (
            "toledo-continuous",
            bytes.fromhex("022C3020313233343536303030303030 0D20".replace(" ", "")),
        ),
        ("mettler-mtsics", b"S S     100.00 g\r\n"),
        ("ad-balance", b"ST,+00123.45  g\r\n"),
        ("st-gs-indicator", b"ST,GS,+  1.250kg\r\n"),
        ("moisture-ticket-pt", b"Umidade:  11,8 %\r\n"),
    ],
)
def test_signatures_match_the_manuals_examples(name: str, frame: bytes) -> None:
    assert PROFILES[name].seen_in(b"noise\r\n" + frame)
    # Bit 7 set (7E1 read at 8N1) hides nothing.
    assert PROFILES[name].seen_in(bytes(b | 0x80 for b in frame))
    others = [p for p in PROFILES.values() if p.name != name and p.seen_in(frame)]
    assert others == []


TOML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    profile=st.sampled_from([*PROFILES, "x", ""]) | TOML_VALUES,
    extra=st.dictionaries(
        st.sampled_from(["driver", "serial", "ticket", "mtsics", "toledo", "ascii", "tesma", "zz"]),
        TOML_VALUES,
        max_size=3,
    ),
)
def test_any_device_table_is_loaded_or_refused(profile: object, extra: dict[str, object]) -> None:
    table = {"id": "m", "port": "/dev/x", "profile": profile, **extra}
    with contextlib.suppress(ProfileProblem):
        apply_profile(table)
    with contextlib.suppress(ConfigError):
        parse_config(site(table))

"""``[agent] storage_profile``: the profile's settings fill in what the site file leaves unset."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.config import (
    STORAGE_PROFILES,
    Config,
    apply_storage_profile,
    parse_config,
)
from coffee_telemetry.agent.errors import ConfigError

SD = STORAGE_PROFILES["sd-card"]


def site(**sections: dict[str, object]) -> dict[str, object]:
    return {"site": {"id": "ourofino"}, **sections}


def storage(cfg: Config) -> dict[str, float]:
    return {
        "outbox.sync_interval_s": cfg.outbox.sync_interval_s,
        "outbox.commit_delay_s": cfg.outbox.commit_delay_s,
        "outbox.cursor_flush_s": cfg.outbox.cursor_flush_s,
        "history.flush_interval_s": cfg.history.flush_interval_s,
    }


def test_default_profile_keeps_every_default() -> None:
    implicit = parse_config(site())
    explicit = parse_config(site(agent={"storage_profile": "default"}))
    assert implicit.agent.storage_profile == "default"
    assert (
        storage(implicit)
        == storage(explicit)
        == {
            "outbox.sync_interval_s": 1.0,
            "outbox.commit_delay_s": 0.0,
            "outbox.cursor_flush_s": 0.25,
            "history.flush_interval_s": 1.0,
        }
    )


def test_sd_card_profile_picks_its_settings() -> None:
    cfg = parse_config(site(agent={"storage_profile": "sd-card"}))
    assert storage(cfg) == {
        "outbox.sync_interval_s": 10.0,
        "outbox.commit_delay_s": 1.0,
        "outbox.cursor_flush_s": 10.0,
        "history.flush_interval_s": 60.0,
    }
    # What the profile does not name keeps its default.
    assert cfg.outbox.synchronous == "normal"
    assert cfg.outbox.max_mb == 512.0
    assert cfg.history.enabled


def test_explicit_keys_win_even_when_equal_to_the_default() -> None:
    cfg = parse_config(
        site(
            agent={"storage_profile": "sd-card"},
            outbox={"sync_interval_s": 1.0, "max_mb": 64},
            history={"enabled": False},
        )
    )
    assert cfg.outbox.sync_interval_s == 1.0  # the file's, though it is the default
    assert cfg.outbox.commit_delay_s == 1.0  # the profile's: the file does not set it
    assert cfg.outbox.max_mb == 64
    assert cfg.history.flush_interval_s == 60.0
    assert not cfg.history.enabled


def test_unknown_profile_is_refused_by_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(site(agent={"storage_profile": "ssd"}))
    assert "agent.storage_profile" in dict(info.value.problems)


def test_profile_values_are_validated_like_the_files() -> None:
    # A value out of range in the file is refused; the profile does not hide it.
    with pytest.raises(ConfigError) as info:
        parse_config(site(agent={"storage_profile": "sd-card"}, outbox={"commit_delay_s": 60}))
    assert "outbox.commit_delay_s" in dict(info.value.problems)


@pytest.mark.parametrize("bad", [3, "x", [1, 2]])
def test_malformed_section_is_refused_not_crashed(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(site(agent={"storage_profile": "sd-card"}, outbox=bad))  # type: ignore[arg-type]
    assert "outbox" in dict(info.value.problems)


def test_malformed_agent_section_is_left_to_validation() -> None:
    doc = site(agent="sd-card")  # type: ignore[arg-type]
    assert apply_storage_profile(doc) == doc
    with pytest.raises(ConfigError):
        parse_config(doc)


def test_every_profile_setting_is_a_valid_key() -> None:
    for name, sections in STORAGE_PROFILES.items():
        cfg = parse_config(site(agent={"storage_profile": name}))
        for section, values in sections.items():
            for key, value in values.items():
                assert getattr(getattr(cfg, section), key) == value, f"{name}: {section}.{key}"


#: The profile's settings in seconds (the others are checked by value above).
KEYS = [
    (section, key)
    for section, values in SD.items()
    for key, value in values.items()
    if isinstance(value, float)
]


@given(
    chosen=st.dictionaries(
        st.sampled_from(KEYS), st.floats(min_value=0.5, max_value=5.0, allow_nan=False)
    ),
    profile=st.sampled_from(sorted(STORAGE_PROFILES)),
)
def test_resolution_is_file_else_profile_else_default(
    chosen: dict[tuple[str, str], float], profile: str
) -> None:
    doc: dict[str, object] = site(agent={"storage_profile": profile})
    for (section, key), value in chosen.items():
        table = doc.setdefault(section, {})
        assert isinstance(table, dict)
        table[key] = value
    before = copy.deepcopy(doc)
    cfg = parse_config(doc)
    assert doc == before  # the document given is not changed in place
    default = parse_config(site())
    for section, key in KEYS:
        got = getattr(getattr(cfg, section), key)
        if (section, key) in chosen:
            assert got == chosen[(section, key)]
        elif key in STORAGE_PROFILES[profile].get(section, {}):
            assert got == STORAGE_PROFILES[profile][section][key]
        else:
            assert got == getattr(getattr(default, section), key)

"""encode_line: exact lines for known readings, and a reference parser round trip.

The reference parser below reads line protocol the way influxd 1.6 does
(checked against the real server in tests/integration/test_influx_v1.py):
in the measurement and tags, a separator preceded by a backslash is escaped
and only that backslash is dropped; in the field section a backslash pairs
with the next character, and a field key unescapes backslash + one of
``, = " space``; in quoted strings backslash-backslash and backslash-quote
are the escapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.sinks.lineprotocol import (
    clean_field_key,
    clean_name,
    clean_string,
    encode_line,
    escape_field_key,
    escape_measurement,
    escape_tag,
    format_field_value,
    quote_string,
)
from coffee_telemetry.drivers.events import FieldValue

TS = 1_796_035_314_123_456_789


def reading(
    *,
    measurement: str = "moisture",
    fields: Mapping[str, FieldValue] | None = None,
    tags: Mapping[str, str] | None = None,
    seq: int = 42,
    ts_ns: int = TS,
    audit: str | None = None,
) -> Reading:
    return Reading(
        ts_ns=ts_ns,
        seq=seq,
        device="umid-1",
        measurement=measurement,
        fields={"moisture_pct": 11.8} if fields is None else fields,
        tags={"site": "ourofino"} if tags is None else tags,
        audit=audit,
    )


# --- reference parser -------------------------------------------------------


@dataclass
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    ts_ns: int


def _scan(line: str, start: int, stops: str) -> int:
    """Index of the first separator in ``stops`` not preceded by a backslash."""
    i = start
    while i < len(line):
        if line[i] in stops and (i == start or line[i - 1] != "\\"):
            return i
        i += 1
    return i


def _unescape(text: str, specials: str) -> str:
    return re.sub(r"\\([" + re.escape(specials) + "])", r"\1", text)


def _scan_string(line: str, start: int) -> tuple[str, int]:
    assert line[start] == '"'
    out: list[str] = []
    i = start + 1
    while line[i] != '"':
        if line[i] == "\\" and line[i + 1] in '"\\':
            out.append(line[i + 1])
            i += 2
        else:
            out.append(line[i])
            i += 1
    return "".join(out), i + 1


def _parse_value(text: str) -> FieldValue:
    if text in ("true", "false"):
        return text == "true"
    if text.endswith("i"):
        return int(text[:-1])
    return float(text)


def _scan_field_key(line: str, start: int) -> tuple[str, int]:
    # Scanning: a backslash pairs with the next character, whatever it is.
    i = start
    while line[i] != "=":
        assert line[i] not in ", ", line  # a bare separator: the line is broken
        i += 2 if line[i] == "\\" else 1
    # Unescaping is a separate pass: backslash + one of , = " space becomes
    # that character; any other backslash stays and the pass moves on by one.
    key, out, j = line[start:i], [], 0
    while j < len(key):
        if key[j] == "\\" and key[j + 1 : j + 2] in (",", "=", '"', " "):
            out.append(key[j + 1])
            j += 2
        else:
            out.append(key[j])
            j += 1
    return "".join(out), i


def parse_line(line: str) -> Point:
    end = _scan(line, 0, ", ")
    measurement = _unescape(line[:end], ", ")
    tags: dict[str, str] = {}
    i = end
    while line[i] == ",":
        eq = _scan(line, i + 1, "=")
        stop = _scan(line, eq + 1, ", ")
        key, value = line[i + 1 : eq], line[eq + 1 : stop]
        assert key, line
        assert value, line
        tags[_unescape(key, ",= ")] = _unescape(value, ",= ")
        i = stop
    assert line[i] == " "
    fields: dict[str, FieldValue] = {}
    i += 1
    while True:
        key, eq = _scan_field_key(line, i)
        assert key, line
        if line[eq + 1] == '"':
            fields[key], i = _scan_string(line, eq + 1)
        else:
            stop = _scan(line, eq + 1, ", ")
            fields[key], i = _parse_value(line[eq + 1 : stop]), stop
        if line[i] == " ":
            break
        assert line[i] == ",", line
        i += 1
    return Point(measurement, tags, fields, int(line[i + 1 :]))


# --- exact lines -------------------------------------------------------------


def test_basic_reading() -> None:
    line = encode_line(reading(tags={"site": "ourofino", "device": "umid-1", "lot": "L-0042"}))
    assert line == (
        "moisture,device=umid-1,lot=L-0042,site=ourofino moisture_pct=11.8,seq=42i "
        "1796035314123456789"
    )


def test_hostile_lot_code_cannot_inject_a_second_point() -> None:
    line = encode_line(reading(tags={"lot": "L 1,x=2\nfoo"}))
    assert line == r"moisture,lot=L\ 1\,x\=2\ foo moisture_pct=11.8,seq=42i " + str(TS)
    assert parse_line(line).tags == {"lot": "L 1,x=2 foo"}


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("a b", r"a\ b"),
        ("a,b", r"a\,b"),
        ("a=b", r"a\=b"),
        ("tab\there", r"tab\ here"),
        ("cr\r\nlf", r"cr\ \ lf"),
        ("nul\x00", r"nul\ "),
        ("trailing\\", "trailing"),
        ("trailing\\\\\\", "trailing"),
        ("mid\\dle", "mid\\dle"),
        ("back\\,slash", "back\\\\,slash"),
        ('"quoted"', '"quoted"'),
        ("#hash", "#hash"),
        ("café☕𝄞", "café☕𝄞"),
        ("\\", ""),
    ],
)
def test_escape_tag(raw: str, escaped: str) -> None:
    assert escape_tag(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("moisture", "moisture"),
        ("a b,c=d", r"a\ b\,c=d"),
        ("x\ny\\", r"x\ y"),
    ],
)
def test_escape_measurement(raw: str, escaped: str) -> None:
    assert escape_measurement(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped", "stored"),
    [
        ("moisture_pct", "moisture_pct", "moisture_pct"),
        ("a b,c=d", r"a\ b\,c\=d", "a b,c=d"),
        ('say "x"', r"say\ \"x\"", 'say "x"'),
        # Odd backslash runs before a separator lose one backslash; even ones stay.
        ("a\\ b", r"a\ b", "a b"),
        ("a\\\\ b", r"a\\\ b", "a\\\\ b"),
        ("a\\\\\\,b", r"a\\\,b", "a\\\\,b"),
        ("a\\b", "a\\b", "a\\b"),
        ('a\\"', r'a\\"', 'a\\"'),
        ("nl\n", r"nl\ ", "nl "),
    ],
)
def test_escape_field_key(raw: str, escaped: str, stored: str) -> None:
    assert escape_field_key(raw) == escaped
    assert clean_field_key(raw) == stored


@pytest.mark.parametrize("bad", ["", "\\", "#comment", "\\\\", "a\\b", "a\\ b"])
def test_unwritable_measurement_names(bad: str) -> None:
    with pytest.raises(ValueError, match="measurement"):
        escape_measurement(bad)


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash\\", r'"back\\slash\\"'),
        # Written as an escaped backslash and a letter: stored as the two characters.
        ("two\nlines\r\n", r'"two\\nlines\\r\\n"'),
        ("nul\x00esc\x1b@", r'"nul\\x00esc\\x1b@"'),
        ("tab\tkept, = too", '"tab\tkept, = too"'),
        ("", '""'),
    ],
)
def test_quote_string(raw: str, quoted: str) -> None:
    assert quote_string(raw) == quoted


def test_clean_helpers_say_what_is_stored() -> None:
    assert clean_name("a\nb\\") == "a b"
    assert clean_string("a\nb\\") == "a\\nb\\"
    assert clean_string("\x00\t\x7f") == "\\x00\t\x7f"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0i"),
        (-7, "-7i"),
        (2**63 - 1, "9223372036854775807i"),
        (-(2**63), "-9223372036854775808i"),
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (1e16, "1e+16"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        ("x", '"x"'),
    ],
)
def test_format_field_value(value: FieldValue, text: str) -> None:
    assert format_field_value(value) == text


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, b"bytes", None]
)
def test_unwritable_field_values(value: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- any message; the type is the contract
        format_field_value(value)  # type: ignore[arg-type]


def test_field_types_and_audit() -> None:
    line = encode_line(
        reading(
            fields={"ok": True, "count": 3, "w_kg": 60.5, "note": 'a "b"\nc'},
            tags={},
            audit="TICKET 7\nLOT L-1\n",
        )
    )
    assert line == (
        r'moisture audit="TICKET 7\\nLOT L-1\\n",count=3i,note="a \"b\"\\nc",ok=true,'
        r"seq=42i,w_kg=60.5 " + str(TS)
    )


def test_empty_tag_values_are_left_out_and_tags_sorted() -> None:
    line = encode_line(reading(tags={"z": "1", "lot": "", "a": "2", "trail": "\\"}))
    assert line.startswith("moisture,a=2,z=1 ")


def test_same_reading_same_bytes_whatever_the_mapping_order() -> None:
    one = reading(fields={"a": 1.5, "b": 2}, tags={"x": "1", "y": "2"})
    two = reading(fields={"b": 2, "a": 1.5}, tags={"y": "2", "x": "1"})
    assert encode_line(one) == encode_line(two)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fields": {"seq": 1}}, "reserved"),
        ({"fields": {"audit": "x"}, "audit": "y"}, "reserved"),
        ({"fields": {"": 1}}, "empty"),
        ({"fields": {"a\n": 1, "a ": 2}}, "collides"),
        ({"tags": {"\\": "v"}}, "empty"),
        ({"tags": {"k\\": "1", "k": "2"}}, "collides"),
        ({"fields": {"x": math.nan}}, "not finite"),
        ({"ts_ns": -(2**63) + 1}, "range"),
        ({"ts_ns": 2**63 - 1}, "range"),
        ({"measurement": "#m"}, "comment"),
    ],
)
def test_unwritable_readings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_line(reading(**kwargs))  # type: ignore[arg-type]


def test_audit_field_named_audit_is_fine_without_audit_text() -> None:
    assert 'audit="x"' in encode_line(reading(fields={"audit": "x"}))


def test_timestamp_extremes_influxd_accepts() -> None:
    assert encode_line(reading(ts_ns=-(2**63) + 2)).endswith(" -9223372036854775806")
    assert encode_line(reading(ts_ns=2**63 - 2)).endswith(" 9223372036854775806")


# --- properties ---------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f]")


def _stored_name(text: str) -> str:
    return _CONTROL.sub(" ", text).rstrip("\\")


def _stored_field_key(text: str) -> str:
    text = _stored_name(text)
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "\\":
            out.append(text[i])
            i += 1
            continue
        run = len(text[i:]) - len(text[i:].lstrip("\\"))
        before_separator = text[i + run : i + run + 1] in (",", "=", " ")
        out.append("\\" * (run - 1 if before_separator and run % 2 else run))
        i += run
    return "".join(out)


def _stored_string(text: str) -> str:
    return "".join(
        {"\n": "\\n", "\r": "\\r"}.get(c, f"\\x{ord(c):02x}" if ord(c) < 32 and c != "\t" else c)
        for c in text
    )


#: Text with a high share of the characters that matter to line protocol.
hostile_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(',= "\\\n\r\t#=\x00\x1f')),
        st.characters(codec="utf-8"),
    ),
    max_size=12,
)
field_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)


@given(
    measurement=hostile_text,
    tags=st.dictionaries(hostile_text, hostile_text, max_size=5),
    fields=st.dictionaries(hostile_text, field_values, min_size=1, max_size=5),
    audit=st.none() | hostile_text,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    ts_ns=st.integers(min_value=-(2**63) + 2, max_value=2**63 - 2),
)
def test_round_trip_through_reference_parser(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue],
    audit: str | None,
    seq: int,
    ts_ns: int,
) -> None:
    stored_measurement = _stored_name(measurement)
    assume(stored_measurement and not stored_measurement.startswith("#"))
    assume("\\" not in stored_measurement)
    assume("seq" not in fields and (audit is None or "audit" not in fields))
    expected_tags = {_stored_name(k): _stored_name(v) for k, v in tags.items() if _stored_name(v)}
    kept_tag_keys = [k for k, v in tags.items() if _stored_name(v)]
    expected_fields: dict[str, FieldValue] = {
        _stored_field_key(k): _stored_string(v) if isinstance(v, str) else v
        for k, v in fields.items()
    }
    expected_fields["seq"] = seq
    if audit is not None:
        expected_fields["audit"] = _stored_string(audit)
    r = Reading(
        ts_ns=ts_ns,
        seq=seq,
        device="d",
        measurement=measurement,
        fields=fields,
        tags=tags,
        audit=audit,
    )
    keys_clean = (
        len(expected_tags) == len(kept_tag_keys)
        and all(expected_tags)
        and len(expected_fields) == len(fields) + 1 + (audit is not None)
        and all(expected_fields)
    )
    if not keys_clean:
        with pytest.raises(ValueError, match=r"empty|collides"):
            encode_line(r)
        return

    line = encode_line(r)

    assert "\n" not in line
    assert "\r" not in line
    assert not line.startswith("#")
    assert encode_line(r) == line
    point = parse_line(line)
    assert point.measurement == stored_measurement
    assert point.tags == expected_tags
    assert point.fields == expected_fields
    assert all(type(point.fields[k]) is type(v) for k, v in expected_fields.items())
    assert point.ts_ns == ts_ns
    assert list(point.tags) == sorted(point.tags, key=escape_tag)

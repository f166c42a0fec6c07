r"""InfluxDB line protocol: one ``Reading`` becomes one line.

    measurement[,tag_key=tag_value...] field_key=field_value[,...] timestamp_ns

What goes into the line:

* tags: ``reading.tags``, sorted by (escaped) key; a tag whose value is empty is
  left out, because line protocol cannot carry one;
* fields: ``reading.fields``, plus the reading's ``seq`` as integer field
  ``seq``, when the reading has one, its ``audit`` text as string field
  ``audit``, and when its time is not trusted, string field ``time_quality``
  (``estimated``; see ``agent.timekeeping``); sorted by key, so the same
  reading always yields the same bytes whatever the order of its mappings
  (redelivery must be byte-identical for InfluxDB's overwrite-on-duplicate to
  make resends harmless);
* timestamp: ``reading.ts_ns``, to be written with ``precision=ns``.

Escaping (InfluxDB line protocol reference, "Special characters"):

==============================  =============================================
element                         escaped with a backslash
==============================  =============================================
measurement                     comma, space
tag key, tag value              comma, equals sign, space
field key                       comma, equals sign, space, double quote
string field value              double quote, backslash
==============================  =============================================

Everything else is written as it is. What cannot be expressed is changed
first, by the ``clean_*`` functions, which return exactly the text InfluxDB
stores (measured on influxd 1.6.7, and checked by the integration tests):

* Control characters (C0, ``\x00``-``\x1f``) in names (measurement, tag keys
  and values, field keys) become a space. A newline would end the line, so a
  lot code typed as ``L 1,x=2\nfoo`` could otherwise smuggle a second point
  in; it is stored as the tag value ``L 1,x=2 foo`` (written
  ``L\ 1\,x\=2\ foo``).
* Trailing backslashes are stripped from names: a name ending in a backslash
  would escape the separator after it (telegraf#3004).
* Tags: a separator preceded by a backslash counts as escaped, and unescaping
  drops only that one backslash, so any other backslash round-trips:
  ``a\,b`` is written ``a\\,b`` and reads back as ``a\,b``.
* Field keys are scanned differently: there a backslash pairs with whatever
  character follows it. An odd run of backslashes right before a comma,
  equals sign or space therefore cannot be written (the last backslash of the
  run would pair with the escaping one, leaving the separator bare); the
  encoder drops one backslash from such a run. A double quote after a
  backslash would be unescaped, so field keys escape double quotes too.
* Measurement names are unescaped twice by influxd 1.6 (``m\\ x`` is stored
  as ``m x``), so no escaping makes a backslash in a measurement name
  round-trip: such a name is refused, as is one starting with ``#`` (the line
  would be a comment: influxd answers 204 and stores nothing).

String field values are double-quoted. The official reference says line
protocol "does not support the newline character in tag or field values".
Measured on influxd 1.6.7: a raw newline inside a quoted string *is* accepted
and stored, but an implementation that follows the reference may refuse it or
end the line there. So ``clean_string`` writes LF and CR as the two
characters ``\n`` and ``\r`` (on the wire ``\\n``, an escaped backslash and a
letter), and the other C0 controls except tab as ``\xNN``: the stored text
reads naturally and every line stays one line. The other controls matter
because influxd quotes a rejected line in its ``X-Influxdb-Error`` response
header (cut at 1024 bytes), and aiohttp refuses a header holding a NUL: the
answer would be unreadable and the batch stuck. The price: a source text that
literally contains backslash-n reads back the same as one with a newline. The
outbox and MQTT keep the original text; only the InfluxDB copy is changed.

Numbers (measured on influxd 1.6.7): floats are written as ``repr(float)``,
Python's shortest round-trip form; exponent forms such as ``1e-05``,
``1e+16``, ``5e-324`` and ``1.7976931348623157e+308`` are accepted and read
back exactly. Integers get the ``i`` suffix and must fit in a signed 64-bit
integer; booleans are ``true``/``false`` (checked before ``int``, since
``bool`` is an ``int`` in Python). NaN and infinities cannot be written.
Timestamps must lie in influxd's range, int64 without its two lowest values
and its highest.

Anything that cannot be written raises ``ValueError``; a sink turns that into
a rejection of that one record.
"""

from __future__ import annotations

import functools
import math
import re

from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.drivers.events import FieldValue

__all__ = [
    "clean_field_key",
    "clean_name",
    "clean_string",
    "encode_line",
    "escape_field_key",
    "escape_measurement",
    "escape_tag",
    "format_field_value",
    "quote_string",
]

#: Line protocol integers are signed 64-bit.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
#: influxd's timestamp range; outside it a line fails with "time outside range" (1.6.7).
_TS_MIN = _INT_MIN + 2
_TS_MAX = _INT_MAX - 1

_CONTROL = re.compile(r"[\x00-\x1f]")
#: An odd run of backslashes (captured without its last one) before a separator.
_ODD_BACKSLASHES = re.compile(r"(?<!\\)((?:\\\\)*)\\(?=[,= ])")
_MEASUREMENT_SPECIALS = re.compile(r"([, ])")
_TAG_SPECIALS = re.compile(r"([,= ])")
_FIELD_KEY_SPECIALS = re.compile(r'([,= "])')
_STRING_SPECIALS = re.compile(r'(["\\])')
_STRING_NEEDS_WORK = re.compile(r'["\\\x00-\x1f]')
#: Names (measurements, keys, tag values) repeat from reading to reading:
#: their escaped forms are cached, bounded.
_NAME_CACHE = 4096
_STRING_CONTROLS = str.maketrans(
    {
        **{chr(code): f"\\x{code:02x}" for code in range(0x20) if chr(code) != "\t"},
        "\n": "\\n",
        "\r": "\\r",
    }
)


def clean_name(text: str) -> str:
    """Return the text InfluxDB stores for a measurement, tag key or tag value.

    Control characters become spaces and trailing backslashes are dropped:
    neither can be expressed in line protocol (see the module docstring).
    """
    return _CONTROL.sub(" ", text).rstrip("\\")


def clean_field_key(text: str) -> str:
    """Return the text InfluxDB stores for a field key.

    As ``clean_name``, and an odd run of backslashes before a comma, equals
    sign or space loses one backslash.
    """
    return _ODD_BACKSLASHES.sub(r"\1", clean_name(text))


def clean_string(text: str) -> str:
    r"""Return the text InfluxDB stores for a string field value.

    LF and CR become the two characters ``\n`` and ``\r``, other control
    characters except tab become ``\xNN``; everything else is kept.
    """
    return text.translate(_STRING_CONTROLS)


@functools.lru_cache(maxsize=_NAME_CACHE)
def escape_measurement(name: str) -> str:
    """Clean and escape a measurement name (commas and spaces).

    Raises:
        ValueError: The name is empty once cleaned, holds a backslash, or
            starts with ``#`` (the line would be a comment).
    """
    cleaned = clean_name(name)
    if not cleaned:
        raise ValueError(f"measurement name {name!r} is empty")
    if "\\" in cleaned:
        raise ValueError(f"measurement name {name!r} holds a backslash")
    if cleaned.startswith("#"):
        raise ValueError(f"measurement name {name!r} starts with '#' (a comment line)")
    return _MEASUREMENT_SPECIALS.sub(r"\\\1", cleaned)


@functools.lru_cache(maxsize=_NAME_CACHE)
def escape_tag(text: str) -> str:
    """Clean and escape a tag key or value (commas, equals signs, spaces).

    The result may be empty; callers decide whether that is allowed.
    """
    return _TAG_SPECIALS.sub(r"\\\1", clean_name(text))


@functools.lru_cache(maxsize=_NAME_CACHE)
def escape_field_key(text: str) -> str:
    """Clean and escape a field key (commas, equals signs, spaces, double quotes).

    The result may be empty; callers decide whether that is allowed.
    """
    return _FIELD_KEY_SPECIALS.sub(r"\\\1", clean_field_key(text))


def quote_string(text: str) -> str:
    """Clean, escape and double-quote a string field value."""
    if not _STRING_NEEDS_WORK.search(text):
        return f'"{text}"'
    escaped = clean_string(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_field_value(value: FieldValue) -> str:
    """Render one field value in line protocol.

    Raises:
        ValueError: NaN or an infinity, an integer outside int64, or a type
            line protocol has no form for.
    """
    # bool before int: True is an int, and must not become ``1i``.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"float {value!r} is not finite")
        return repr(value)
    if isinstance(value, str):
        return quote_string(value)
    raise ValueError(f"unsupported field type {type(value).__name__}")


def _field_set(reading: Reading) -> str:
    fields: dict[str, FieldValue] = dict(reading.fields)
    if "seq" in fields:
        raise ValueError("field 'seq' is reserved for the reading's sequence number")
    fields["seq"] = reading.seq
    if reading.audit is not None:
        if "audit" in fields:
            raise ValueError("field 'audit' is reserved for the reading's audit text")
        fields["audit"] = reading.audit
    if reading.time_quality != "trusted":
        if "time_quality" in fields:
            raise ValueError("field 'time_quality' is reserved for the reading's time quality")
        fields["time_quality"] = reading.time_quality
    rendered: dict[str, str] = {}
    for key, value in fields.items():
        escaped = escape_field_key(key)
        if not escaped:
            raise ValueError(f"field key {key!r} is empty once cleaned")
        if escaped in rendered:
            raise ValueError(f"field key {key!r} collides with another once cleaned")
        rendered[escaped] = format_field_value(value)
    return ",".join(f"{key}={rendered[key]}" for key in sorted(rendered))


def _tag_set(reading: Reading) -> str:
    rendered: dict[str, str] = {}
    for key, value in reading.tags.items():
        escaped_value = escape_tag(value)
        if not escaped_value:
            continue
        escaped_key = escape_tag(key)
        if not escaped_key:
            raise ValueError(f"tag key {key!r} is empty once cleaned")
        if escaped_key in rendered:
            raise ValueError(f"tag key {key!r} collides with another once cleaned")
        rendered[escaped_key] = escaped_value
    # InfluxDB sorts tags itself if needed; sending them sorted saves it the work
    # and keeps the line deterministic.
    return "".join(f",{key}={rendered[key]}" for key in sorted(rendered))


def encode_line(reading: Reading) -> str:
    """Encode a reading as one line of line protocol, without a trailing newline.

    The result never contains a newline or carriage return, and the same
    reading always gives the same string.

    Raises:
        ValueError: The reading cannot be written: a bad measurement name, a
            non-finite float, an out-of-range integer or timestamp, a reserved
            or colliding key.
    """
    if not _TS_MIN <= reading.ts_ns <= _TS_MAX:
        raise ValueError(f"timestamp {reading.ts_ns} is outside InfluxDB's range")
    measurement = escape_measurement(reading.measurement)
    return f"{measurement}{_tag_set(reading)} {_field_set(reading)} {reading.ts_ns}"

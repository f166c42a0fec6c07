r"""InfluxDB line protocol: one ``Reading`` becomes one line.

    measurement[,tag_key=tag_value...] field_key=field_value[,...] timestamp_ns

What goes into the line:

* tags: ``reading.tags``, sorted by (escaped) key; a tag whose value is empty is
  left out, because line protocol cannot carry one;
* fields: ``reading.fields``, plus the reading's ``seq`` as integer field
  ``seq`` and, when the reading has one, its ``audit`` text as string field
  ``audit``; sorted by key, so the same reading always yields the same bytes
  whatever the order of its mappings (redelivery must be byte-identical for
  InfluxDB's overwrite-on-duplicate to make resends harmless);
* timestamp: ``reading.ts_ns``, to be written with ``precision=ns``.

Escaping (InfluxDB line protocol reference, "Special characters"):

==============================  =============================================
element                         escaped with a backslash
==============================  =============================================
measurement                     comma, space
tag key, tag value, field key   comma, equals sign, space
string field value              double quote, backslash
==============================  =============================================

Everything else is literal. In names (measurement, tag keys and values, field
keys) a backslash is only an escape when it precedes one of that element's
special characters, and InfluxDB then drops *that* backslash; so ``a\,b``
written as ``a\\,b`` reads back as ``a\,b``. Two things cannot be expressed
in a name and are changed before escaping, by ``clean_name``:

* control characters (C0: ``\x00``-``\x1f``, including ``\n``, ``\r``,
  ``\t``) become a space. A newline would end the line, so a lot code typed as
  ``L 1,x=2\nfoo`` could otherwise smuggle a second point in; it is stored as
  the tag value ``L 1,x=2 foo`` (written ``L\ 1\,x\=2\ foo``);
* trailing backslashes are stripped: a name cannot end in a backslash, which
  would escape the separator after it (telegraf#3004).

String field values are double-quoted. The official reference says line
protocol "does not support the newline character in tag or field values".
Measured on influxd 1.6.7: a raw newline inside a quoted string *is* accepted
and stored, but an implementation that follows the reference may refuse it or
end the line there. So ``clean_string`` turns LF and CR into the two
characters ``\n`` and ``\r`` (on the wire ``\\n``, an escaped backslash and a
letter): the stored text reads naturally and every line stays one line. The
price: a source text that literally contains backslash-n reads back the same
as one with a newline. The outbox and MQTT keep the original text; only the
InfluxDB copy is changed.

Numbers (measured on influxd 1.6.7): floats are written as ``repr(float)``,
Python's shortest round-trip form; exponent forms such as ``1e-05``,
``1e+16``, ``5e-324`` and ``1.7976931348623157e+308`` are accepted and read
back exactly. Integers get the ``i`` suffix and must fit in a signed 64-bit
integer; booleans are ``true``/``false`` (checked before ``int``, since
``bool`` is an ``int`` in Python). NaN and infinities cannot be written.

A line that starts with ``#`` is a comment: influxd 1.6 answers 204 and stores
nothing. Measurement names therefore must not start with ``#``.

Anything that cannot be written raises ``ValueError``; a sink turns that into
a rejection of that one record.
"""

from __future__ import annotations

import math
import re

from agent.readings import Reading
from drivers.events import FieldValue

__all__ = [
    "clean_name",
    "clean_string",
    "encode_line",
    "escape_measurement",
    "escape_name",
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
_MEASUREMENT_SPECIALS = re.compile(r"([, ])")
_NAME_SPECIALS = re.compile(r"([,= ])")
_STRING_SPECIALS = re.compile(r'(["\\])')
_STRING_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})


def clean_name(text: str) -> str:
    """Return the text InfluxDB will store for a measurement, tag key/value or field key.

    Control characters become spaces and trailing backslashes are dropped:
    neither can be expressed in line protocol (see the module docstring).
    """
    return _CONTROL.sub(" ", text).rstrip("\\")


def clean_string(text: str) -> str:
    r"""Return the text InfluxDB will store for a string field value.

    LF and CR become the two characters ``\n`` and ``\r``, so the line stays
    one line; everything else is kept.
    """
    return text.translate(_STRING_BREAKS)


def escape_measurement(name: str) -> str:
    """Clean and escape a measurement name (commas and spaces).

    Raises:
        ValueError: The name is empty once cleaned, or starts with ``#``
            (the line would be read as a comment and silently dropped).
    """
    cleaned = clean_name(name)
    if not cleaned:
        raise ValueError(f"measurement name {name!r} is empty")
    if cleaned.startswith("#"):
        raise ValueError(f"measurement name {name!r} starts with '#' (a comment line)")
    return _MEASUREMENT_SPECIALS.sub(r"\\\1", cleaned)


def escape_name(text: str) -> str:
    """Clean and escape a tag key, tag value or field key (commas, equals signs, spaces).

    The result may be empty; callers decide whether that is allowed.
    """
    return _NAME_SPECIALS.sub(r"\\\1", clean_name(text))


def quote_string(text: str) -> str:
    """Clean, escape and double-quote a string field value."""
    return '"' + _STRING_SPECIALS.sub(r"\\\1", clean_string(text)) + '"'


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
    rendered: dict[str, str] = {}
    for key, value in fields.items():
        escaped = escape_name(key)
        if not escaped:
            raise ValueError(f"field key {key!r} is empty once cleaned")
        if escaped in rendered:
            raise ValueError(f"field key {key!r} collides with another once cleaned")
        rendered[escaped] = format_field_value(value)
    return ",".join(f"{key}={rendered[key]}" for key in sorted(rendered))


def _tag_set(reading: Reading) -> str:
    rendered: dict[str, str] = {}
    for key, value in reading.tags.items():
        escaped_value = escape_name(value)
        if not escaped_value:
            continue
        escaped_key = escape_name(key)
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

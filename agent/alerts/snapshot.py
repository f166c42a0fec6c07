"""Alert state as JSON: one subject's (``to_json``) and a whole engine's (``encode_snapshot``).

Theory of operation
-------------------
An engine snapshot holds every subject's state: its alert state and episode, when it
last notified, who acknowledged it, its data, and what its rule remembers (a lot's
window and sums, a huller's error samples, jam and wiring trackers), filed under the
rule's name with the rule's kind, plus when the engine next sweeps forgotten lots.
``Engine.restore(rules, text)`` continues exactly where the snapshot was taken: the
same inputs afterwards give the same alerts as if there had been no restart.
Restoring emits nothing, and a firing alert is not notified again until its repeat
interval has passed since its last notice (``notified_ns`` is in the snapshot).
Subjects of rules no longer configured (or whose name now belongs to another kind of
rule) are dropped; anything else that does not read back exactly is refused whole
(``ValueError``), never half restored.

The document is compact JSON with sorted keys, so equal states give equal text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import assert_never

from coffee_telemetry.agent.alerts.kinds import Rule
from coffee_telemetry.agent.alerts.model import (
    AlertState,
    ErrorMemory,
    JamMemory,
    LotMemory,
    Memory,
    MetersMemory,
    RuleState,
    WiringMemory,
)
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.drivers.events import FieldValue

#: Version of the engine snapshot document.
SNAPSHOT_VERSION = 1


def _dumps(doc: object) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_snapshot(
    rules: Sequence[Rule],
    states: Mapping[str, Mapping[str, RuleState]],
    *,
    next_sweep_ns: int | None,
) -> str:
    """An engine's state as JSON (``decode_snapshot`` reads it back).

    Args:
        rules: The engine's rules, in order.
        states: Every subject's state, by rule name and subject.
        next_sweep_ns: When the engine next sweeps forgotten lots (None: at its next tick).
    """
    return _dumps(
        {
            "version": SNAPSHOT_VERSION,
            "next_sweep_ns": next_sweep_ns,
            "rules": {
                rule.name: {
                    "kind": rule.kind,
                    "subjects": {s: _state_doc(st) for s, st in states[rule.name].items()},
                }
                for rule in rules
            },
        }
    )


def decode_snapshot(
    text: str, rules: Sequence[Rule]
) -> tuple[int | None, dict[str, list[RuleState]]]:
    """Read what ``encode_snapshot`` wrote, keeping the subjects ``rules`` still have.

    Returns:
        When to sweep next, and the states by rule name (rules of ``rules`` whose name
        and kind match a saved rule).

    Raises:
        ValueError: ``text`` is not an engine snapshot of this version.
        ConfigError: A newer version wrote it (refused, so that it is not overwritten).
    """
    newer = snapshot_version(text)
    if newer is not None and newer > SNAPSHOT_VERSION:
        raise ConfigError(
            [
                (
                    "",
                    "alert state written by a newer version of coffee-telemetry (version"
                    f" {newer}; this version supports up to {SNAPSHOT_VERSION}); upgrade"
                    " coffee-telemetry, or restore a backup made by this version",
                )
            ],
            source="alerts.json",
        )
    try:
        doc = json.loads(text)
        if _int(doc, "version") != SNAPSHOT_VERSION:
            raise ValueError(f"version {doc['version']} (expected {SNAPSHOT_VERSION})")
        next_sweep_ns = _opt_int(doc, "next_sweep_ns")
        saved = _raw(doc, "rules")
        if not isinstance(saved, dict):
            raise TypeError("rules: expected an object")
        found: dict[str, list[RuleState]] = {}
        for rule in rules:
            entry = saved.get(rule.name)
            if entry is None or _str(entry, "kind") != rule.kind:
                continue
            subjects = _raw(entry, "subjects")
            if not isinstance(subjects, dict):
                raise TypeError("subjects: expected an object")
            for subject, state_doc in subjects.items():
                state = _state_from(state_doc)
                if state.subject != subject:
                    raise ValueError(f"subject {subject!r} holds {state.subject!r}")
                found.setdefault(rule.name, []).append(state)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"not an alert engine snapshot: {exc}") from exc
    return next_sweep_ns, found


def snapshot_version(text: str) -> int | None:
    """The ``version`` of an engine snapshot, or None if ``text`` has no integer one."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if type(version) is int else None


#: Version of the recent-alerts document (``alerts-recent.json``).
RECENT_VERSION = 1


def encode_recent(recent: Iterable[Mapping[str, object]]) -> str:
    """The latest notified alerts as a versioned document (``decode_recent`` reads it)."""
    return _dumps({"version": RECENT_VERSION, "recent": list(recent)})


def decode_recent(text: str) -> list[dict[str, object]]:
    """Read what ``encode_recent`` wrote (or the bare list written before versions).

    Raises:
        ValueError: ``text`` is not a recent-alerts document.
        ConfigError: A newer version wrote it (refused, so that it is not overwritten).
    """
    doc = json.loads(text)
    if isinstance(doc, dict):
        version = doc.get("version")
        if type(version) is int and version > RECENT_VERSION:
            raise ConfigError(
                [
                    (
                        "",
                        "recent alerts written by a newer version of coffee-telemetry"
                        f" (version {version}; this version supports up to {RECENT_VERSION})",
                    )
                ],
                source="alerts-recent.json",
            )
        doc = doc.get("recent") if version == RECENT_VERSION else None
    if not isinstance(doc, list):
        raise ValueError("not a list of recent alerts")
    return [d for d in doc if isinstance(d, dict)]


def to_json(state: RuleState) -> str:
    """One subject's state as compact JSON (``from_json`` reads it back, equal)."""
    return _dumps(_state_doc(state))


def from_json(text: str) -> RuleState:
    """Read what ``to_json`` wrote.

    Raises:
        ValueError: The text is not a rule state.
    """
    try:
        return _state_from(json.loads(text))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"not a rule state: {exc}") from exc


def _memory_doc(memory: Memory | None) -> dict[str, object] | None:
    match memory:
        case None:
            return None
        case LotMemory():
            return {
                "type": "lot",
                "window": list(memory.window),
                "count": memory.count,
                "total": memory.total,
                "max": memory.max_pct,
                "last": memory.last_ns,
                "device": memory.device,
                "station": memory.station,
                "product": memory.product,
            }
        case ErrorMemory():
            return {"type": "errors", "samples": [list(s) for s in memory.samples]}
        case JamMemory():
            return {"type": "jam", "bags": memory.bags, "idle_since": memory.idle_since_ns}
        case WiringMemory():
            return {
                "type": "wiring",
                "at": memory.at_ns,
                "hours": memory.hours,
                "running": memory.running,
                "gain": memory.gain_h,
            }
        case MetersMemory():
            return {"type": "meters", "latest": [list(x) for x in memory.latest]}
        case _:
            assert_never(memory)


def _state_doc(state: RuleState) -> dict[str, object]:
    return {
        "subject": state.subject,
        "state": state.state.value,
        "since": state.since_ns,
        "notified": state.notified_ns,
        "repeat": state.repeat,
        "acked_by": state.acked_by,
        "acked_at": state.acked_at_ns,
        "data": dict(state.data),
        "memory": _memory_doc(state.memory),
    }


def _raw(doc: object, key: str) -> object:
    if not isinstance(doc, dict):
        raise TypeError("expected an object")
    return doc[key]


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected an integer")
    return value


def _as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what}: expected a number")
    return float(value)


def _int(doc: object, key: str) -> int:
    return _as_int(_raw(doc, key), key)


def _opt_int(doc: object, key: str) -> int | None:
    value = _raw(doc, key)
    return None if value is None else _as_int(value, key)


def _float(doc: object, key: str) -> float:
    return _as_float(_raw(doc, key), key)


def _str(doc: object, key: str) -> str:
    value = _raw(doc, key)
    if not isinstance(value, str):
        raise TypeError(f"{key}: expected a string")
    return value


def _bool(doc: object, key: str) -> bool:
    value = _raw(doc, key)
    if not isinstance(value, bool):
        raise TypeError(f"{key}: expected a boolean")
    return value


def _field_value(value: object) -> FieldValue:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise TypeError(f"not a field value: {value!r}")


def _memory_from(doc: object) -> Memory | None:
    if doc is None:
        return None
    match _str(doc, "type"):
        case "lot":
            window = _raw(doc, "window")
            if not isinstance(window, list):
                raise TypeError("window: expected a list")
            return LotMemory(
                window=tuple(_as_float(x, "window") for x in window),
                count=_int(doc, "count"),
                total=_float(doc, "total"),
                max_pct=_float(doc, "max"),
                last_ns=_int(doc, "last"),
                device=_str(doc, "device"),
                station=_str(doc, "station"),
                product=_str(doc, "product"),
            )
        case "errors":
            raw = _raw(doc, "samples")
            if not isinstance(raw, list) or not all(
                isinstance(s, list) and len(s) == 2 for s in raw
            ):
                raise TypeError("samples: expected pairs")
            return ErrorMemory(
                tuple((_as_int(t, "samples"), _as_int(n, "samples")) for t, n in raw)
            )
        case "jam":
            return JamMemory(bags=_float(doc, "bags"), idle_since_ns=_opt_int(doc, "idle_since"))
        case "wiring":
            return WiringMemory(
                at_ns=_int(doc, "at"),
                hours=_float(doc, "hours"),
                running=_bool(doc, "running"),
                gain_h=_float(doc, "gain"),
            )
        case "meters":
            raw = _raw(doc, "latest")
            if not isinstance(raw, list) or not all(
                isinstance(x, list) and len(x) == 3 for x in raw
            ):
                raise TypeError("latest: expected triples")
            return MetersMemory(
                tuple(
                    (_str({"d": d}, "d"), _as_int(t, "latest"), _as_float(v, "latest"))
                    for d, t, v in raw
                )
            )
        case other:
            raise ValueError(f"unknown memory type {other!r}")


def _state_from(doc: object) -> RuleState:
    data = _raw(doc, "data")
    if not isinstance(data, dict):
        raise TypeError("data: expected an object")
    acked_by = _raw(doc, "acked_by")
    if acked_by is not None and not isinstance(acked_by, str):
        raise TypeError("acked_by: expected a string")
    return RuleState(
        subject=_str(doc, "subject"),
        state=AlertState(_str(doc, "state")),
        since_ns=_int(doc, "since"),
        notified_ns=_int(doc, "notified"),
        repeat=_int(doc, "repeat"),
        acked_by=acked_by,
        acked_at_ns=_opt_int(doc, "acked_at"),
        data={str(k): _field_value(v) for k, v in data.items()},
        memory=_memory_from(_raw(doc, "memory")),
    )

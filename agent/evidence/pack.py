"""A lot's evidence pack: plots GeoJSON, the lot's CSV and PDF, a signed manifest.

Theory of operation
-------------------
``lot pack`` writes into a new folder:

- ``talhoes.geojson``: one RFC 7946 FeatureCollection (WGS84, 7 decimals) of the plots of
  the lot's members. Each Feature carries the fields exporters ask of their suppliers in
  the published EUDR GeoJSON guides (nadar.earth's and duracert.com's EUDR GeoJSON
  templates): ``ProducerName``, ``ProducerCountry`` (ISO 3166-1 alpha-2), ``ProductionPlace``
  and ``Area`` (hectares), plus ``PlotKind``, ``WholeProperty`` (a CAR outline is the whole
  property, not the production area) and ``Source``. A forgotten member (LGPD) appears
  under its pseudonym with ``geometry: null`` and ``Geolocated: false``.
- ``lote-<LOT>.csv`` and ``lote-<LOT>.pdf``: the lot's CSV and PDF report
  (``agent.lots.export``).
- ``manifest.json``: the lot, the time, the geolocation status (``"sem geolocalização"``
  when no plot of the lot has geometry), the SHA-256 and size of every file above, and the
  box's Ed25519 public key with its fingerprint (SHA-256 of the raw key).
- ``manifest.sig``: the Ed25519 signature of ``manifest.json``'s exact bytes, base64.

The key is the box's own, generated once in ``data_dir/evidence-ed25519.pem`` (mode 600;
``agent.evidence.identity``, which also shows it on the dashboard and in every report).
``verify_pack`` needs nothing but the folder: it checks the signature against the key in
the manifest, every listed file's hash and size, and that no file was added; a buyer who
compares the fingerprint with the one the cooperative published knows which box signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coffee_telemetry.agent.evidence.identity import KEY_NAME, box_key, fingerprint
from coffee_telemetry.agent.evidence.identity import raw_public as _raw
from coffee_telemetry.agent.evidence.store import Member, Plot

__all__ = [
    "GEOJSON_NAME",
    "KEY_NAME",
    "MANIFEST_NAME",
    "NO_GEOLOCATION",
    "SIGNATURE_NAME",
    "PackCheck",
    "box_key",
    "fingerprint",
    "plots_geojson",
    "sign_manifest",
    "verify_pack",
]

GEOJSON_NAME = "talhoes.geojson"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
NO_GEOLOCATION = "sem geolocalização"
#: The manifest's format, checked by ``verify_pack``.
FORMAT = "coffee-telemetry-lot-pack/1"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_FILES = 16


def plots_geojson(
    members: Sequence[Member], plots: Sequence[Plot], *, country: str = "BR"
) -> tuple[bytes, bool]:
    """The FeatureCollection of ``plots`` and whether any has geometry."""
    by_code = {m.code: m for m in members}
    features: list[str] = []
    geolocated = False
    for plot in plots:
        member = by_code[plot.member]
        props = {
            "ProducerName": member.pseudonym if member.forgotten else member.name,
            "ProducerCountry": country,
            "ProductionPlace": (member.place or plot.label) if not member.forgotten else None,
            "Area": round(plot.area_ha, 4),
            "PlotKind": plot.kind,
            "WholeProperty": plot.whole_property,
            "Geolocated": plot.geometry is not None,
            "Source": plot.source,
            "MemberCode": member.pseudonym if member.forgotten else member.code,
        }
        geolocated = geolocated or plot.geometry is not None
        geometry = plot.geometry if plot.geometry is not None else "null"
        features.append(
            '{"type":"Feature","properties":'
            + json.dumps(props, ensure_ascii=False, sort_keys=True)
            + ',"geometry":'
            + geometry
            + "}"
        )
    body = '{"type":"FeatureCollection","features":[\n' + ",\n".join(features) + "\n]}\n"
    return body.encode(), geolocated


def sign_manifest(
    key: Ed25519PrivateKey,
    *,
    lot: str,
    issued_ns: int,
    files: dict[str, bytes],
    geolocated: bool,
    members: Sequence[str],
) -> tuple[bytes, bytes]:
    """The manifest's bytes and their signature (base64 text, newline-terminated)."""
    public = key.public_key()
    doc = {
        "format": FORMAT,
        "lot": lot,
        "issued_ns": issued_ns,
        "geolocation": "ok" if geolocated else NO_GEOLOCATION,
        "members": list(members),
        "files": {
            name: {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
            for name, body in sorted(files.items())
        },
        "public_key": base64.b64encode(_raw(public)).decode(),
        "public_key_fingerprint": fingerprint(public),
    }
    body = (json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()
    return body, base64.b64encode(key.sign(body)) + b"\n"


@dataclass(frozen=True, slots=True)
class PackCheck:
    """The outcome of ``verify_pack``: ``ok`` only when everything holds."""

    ok: bool
    problems: tuple[str, ...]
    lot: str | None = None
    fingerprint: str | None = None
    geolocation: str | None = None


def verify_pack(folder: Path) -> PackCheck:
    """Check a pack folder offline: signature, each file's hash and size, no extra files."""
    try:
        body = _read(folder / MANIFEST_NAME, MAX_MANIFEST_BYTES)
        sig = base64.b64decode(_read(folder / SIGNATURE_NAME, 256).strip(), validate=True)
        doc = json.loads(body.decode("utf-8"))
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(doc["public_key"], validate=True))
        files = doc["files"]
        lot = str(doc["lot"])
        if doc.get("format") != FORMAT or not isinstance(files, dict) or len(files) > MAX_FILES:
            raise ValueError("unknown manifest format")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return PackCheck(False, (f"manifesto ilegível / unreadable manifest: {exc}",))
    try:
        key.verify(sig, body)
    except InvalidSignature:
        return PackCheck(False, ("assinatura inválida / invalid signature",), lot)
    problems: list[str] = []
    if doc.get("public_key_fingerprint") != fingerprint(key):
        problems.append("impressão digital não confere / fingerprint mismatch")
    for name, entry in sorted(files.items()):
        if not isinstance(entry, dict) or "/" in name or name.startswith("."):
            problems.append(f"{name}: entrada inválida / bad entry")
            continue
        try:
            data = _read(folder / name, int(entry["bytes"]))
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{name}: ausente ou ilegível / missing or unreadable ({exc})")
            continue
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{name}: alterado / changed")
    listed = {*files, MANIFEST_NAME, SIGNATURE_NAME}
    problems.extend(
        f"{p.name}: não consta do manifesto / not in the manifest"
        for p in sorted(folder.iterdir())
        if p.name not in listed
    )
    return PackCheck(
        not problems,
        tuple(problems),
        lot,
        fingerprint(key),
        str(doc.get("geolocation")),
    )


def _read(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} larger than expected")
    return data

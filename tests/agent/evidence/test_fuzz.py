"""Fuzz the import boundary: whatever a GeoJSON, KML or zip holds, only a refusal escapes."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.evidence.geo import GeoError, ImportedPlot, read_plots

CASES = Path(__file__).parents[2] / "cases" / "evidence"

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(min_value=-46, max_value=-45),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=40,
)
positions = st.lists(numbers, min_size=0, max_size=4)
rings = st.lists(positions, max_size=8).map(lambda r: [*r, r[0]] if r else r)
geometries = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Point", "Polygon", "MultiPolygon", "LineString", "Nope"]),
        "coordinates": st.one_of(
            positions,
            st.lists(rings, max_size=3),
            st.lists(st.lists(rings, max_size=2), max_size=2),
            json_values,
        ),
    }
)
documents = st.one_of(
    json_values,
    geometries,
    st.builds(
        lambda gs, props: {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": g, "properties": props} for g in gs],
        },
        st.lists(st.one_of(geometries, json_values), max_size=4),
        st.one_of(st.none(), st.dictionaries(st.sampled_from(["name", "id"]), json_values)),
    ),
)


def accepted_or_refused(name: str, data: bytes, declared: float | None = None) -> None:
    try:
        plots = read_plots(name, data, declared_ha=declared)
    except GeoError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert " / " in message
        return
    assert plots
    for plot in plots:
        assert isinstance(plot, ImportedPlot)
        assert plot.area_ha > 0
        assert plot.kind == "point" or plot.geometry.is_valid


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.one_of(st.none(), st.floats(min_value=-1, max_value=10)))
def test_geojson_documents(doc: object, declared: float | None) -> None:
    try:
        data = json.dumps(doc).encode()
    except ValueError:
        return
    accepted_or_refused("f.geojson", data, declared)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    for name in ("f.geojson", "f.kml", "f.zip"):
        accepted_or_refused(name, data, 1.0)


KML_PARTS = [
    "<kml>",
    "</kml>",
    "<Placemark>",
    "</Placemark>",
    "<Polygon>",
    "</Polygon>",
    "<outerBoundaryIs>",
    "</outerBoundaryIs>",
    "<innerBoundaryIs>",
    "</innerBoundaryIs>",
    "<coordinates>",
    "</coordinates>",
    "<Point>",
    "</Point>",
    "<name>x</name>",
    "-45.5,-21.37 ",
    "-45.49,-21.36,0 ",
    "1e999,nan ",
    "a,b ",
    ",,, ",
    "<!DOCTYPE kml [<!ENTITY e 'x'>]>",
    "&e;",
    "<?xml version='1.0'?>",
    "]]>",
    "<![CDATA[",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(KML_PARTS), max_size=40))
def test_kml_fragments(parts: list[str]) -> None:
    accepted_or_refused("f.kml", "".join(parts).encode(), 1.0)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_car_zip_with_a_mutated_member(data: st.DataObject) -> None:
    with zipfile.ZipFile(CASES / "car_sirgas2000_utm23s.zip") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    name = data.draw(st.sampled_from(sorted(entries)))
    body = bytearray(entries[name])
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        if body:
            i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
            body[i] = data.draw(st.integers(min_value=0, max_value=255))
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(min_value=0, max_value=len(body)))]
    entries[name] = bytes(body)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)
    accepted_or_refused("car.zip", out.getvalue())

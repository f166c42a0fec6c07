"""Plot imports: the CAR golden fixtures, GeoJSON, KML, and every refusal."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
import shapefile
from pyproj import Geod
from shapely.geometry import Polygon

from coffee_telemetry.agent.evidence.geo import (
    MAX_VERTICES,
    MAX_ZIP_BYTES,
    MAX_ZIP_ENTRIES,
    GeoError,
    coords_json,
    read_plots,
)
from tests.cases.evidence.build_fixtures import CAR_CODE, HOLE, OUTER, build

CASES = Path(__file__).parents[2] / "cases" / "evidence"
GEO_ZIP = "car_sirgas2000_geo.zip"
UTM_ZIP = "car_sirgas2000_utm23s.zip"


def fixture(name: str) -> bytes:
    return (CASES / name).read_bytes()


def shp_points(data: bytes) -> list[tuple[float, float]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        reader = shapefile.Reader(
            shp=io.BytesIO(z.read("AREA_IMOVEL.shp")),
            shx=io.BytesIO(z.read("AREA_IMOVEL.shx")),
            dbf=io.BytesIO(z.read("AREA_IMOVEL.dbf")),
        )
        return [(p[0], p[1]) for p in reader.shape(0).points]


def test_committed_fixtures_are_what_the_builder_writes() -> None:
    built = build()
    assert fixture(GEO_ZIP) == built[GEO_ZIP]
    # The UTM one went through PROJ: the same points to the millimetre.
    for (x0, y0), (x1, y1) in zip(
        shp_points(fixture(UTM_ZIP)), shp_points(built[UTM_ZIP]), strict=True
    ):
        assert abs(x0 - x1) <= 1e-3
        assert abs(y0 - y1) <= 1e-3


def test_kml_point_below_4_ha() -> None:
    kml = (
        b'<kml xmlns="http://www.opengis.net/kml/2.2"><Placemark><name>Sede</name>'
        b"<Point><coordinates>-45.5,-21.37,0</coordinates></Point></Placemark></kml>"
    )
    (plot,) = read_plots("p.kml", kml, declared_ha=1.5)
    assert plot.kind == "point"
    assert plot.label == "Sede"
    assert (plot.geometry.x, plot.geometry.y) == (-45.5, -21.37)
    with pytest.raises(GeoError, match="4 ha"):
        read_plots("p.kml", kml, declared_ha=5.0)


def test_car_geographic_golden() -> None:
    (plot,) = read_plots(GEO_ZIP, fixture(GEO_ZIP))
    assert plot.kind == "polygon"
    assert plot.whole_property
    assert plot.label == CAR_CODE
    assert plot.source == "car-shapefile"
    assert list(plot.geometry.exterior.coords) == OUTER
    assert [list(r.coords) for r in plot.geometry.interiors] == [HOLE]
    # Independent: pyproj's geodesic area of the outer ring less the hole's.
    geod = Geod(ellps="GRS80")
    outer, _ = geod.polygon_area_perimeter([x for x, _ in OUTER], [y for _, y in OUTER])
    hole, _ = geod.polygon_area_perimeter([x for x, _ in HOLE], [y for _, y in HOLE])
    assert plot.area_ha == pytest.approx((abs(outer) - abs(hole)) / 10_000, rel=1e-6)
    assert 6.3 < plot.area_ha < 6.4


def test_car_utm_golden_matches_the_geographic_one() -> None:
    (geo,) = read_plots(GEO_ZIP, fixture(GEO_ZIP))
    (utm,) = read_plots(UTM_ZIP, fixture(UTM_ZIP))
    assert utm.whole_property
    for (x0, y0), (x1, y1) in zip(
        geo.geometry.exterior.coords, utm.geometry.exterior.coords, strict=True
    ):
        assert abs(x0 - x1) < 1e-7
        assert abs(y0 - y1) < 1e-7
    assert utm.area_ha == pytest.approx(geo.area_ha, rel=1e-5)
    # Independent: the planar area in the UTM plane, read back with pyshp and shapely,
    # differs from the geodesic one only by the zone's scale (k near 0.9996 at 45.5 W).
    with zipfile.ZipFile(CASES / UTM_ZIP) as z:
        reader = shapefile.Reader(
            shp=io.BytesIO(z.read("AREA_IMOVEL.shp")),
            shx=io.BytesIO(z.read("AREA_IMOVEL.shx")),
            dbf=io.BytesIO(z.read("AREA_IMOVEL.dbf")),
        )
        shape = reader.shape(0)
    pts = shape.points
    planar = Polygon(pts[: shape.parts[1]], [pts[shape.parts[1] :]]).area / 10_000
    assert planar == pytest.approx(utm.area_ha, rel=2e-3)


SQUARE = [[-45.5, -21.37], [-45.5, -21.36], [-45.49, -21.36], [-45.49, -21.37], [-45.5, -21.37]]


def feature(geometry: object, **props: object) -> dict[str, object]:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def collection(*features: object) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


def test_geojson_polygon_multipolygon_and_small_point() -> None:
    data = collection(
        feature({"type": "Polygon", "coordinates": [SQUARE]}, name="Talhão 1"),
        feature({"type": "MultiPolygon", "coordinates": [[SQUARE]]}),
    )
    first, second = read_plots("p.geojson", data)
    assert first.label == "Talhão 1"
    assert not first.whole_property
    assert 100 < first.area_ha < 130  # 0.01 degree square at 21 S
    assert second.area_ha == pytest.approx(first.area_ha)
    point = feature({"type": "Point", "coordinates": [-45.5, -21.37]})
    (p,) = read_plots("p.geojson", collection(point), declared_ha=2.5)
    assert p.kind == "point"
    assert p.area_ha == 2.5


@pytest.mark.parametrize("declared", [None, 4.0, 12.0, 0.0])
def test_a_point_needs_a_declared_area_below_4_ha(declared: float | None) -> None:
    point = collection(feature({"type": "Point", "coordinates": [-45.5, -21.37]}))
    with pytest.raises(GeoError, match="4 ha"):
        read_plots("p.geojson", point, declared_ha=declared)


KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document>
<Placemark><name>Talhão Norte</name><Polygon>
 <outerBoundaryIs><LinearRing><coordinates>
  -45.5,-21.37,0 -45.5,-21.36,0 -45.49,-21.36,0 -45.49,-21.37,0 -45.5,-21.37,0
 </coordinates></LinearRing></outerBoundaryIs>
 <innerBoundaryIs><LinearRing><coordinates>
  -45.498,-21.368 -45.495,-21.368 -45.495,-21.365 -45.498,-21.365 -45.498,-21.368
 </coordinates></LinearRing></innerBoundaryIs>
</Polygon></Placemark>
</Document></kml>"""


def test_kml_polygon_with_a_hole() -> None:
    (plot,) = read_plots("t.kml", KML.encode())
    assert plot.label == "Talhão Norte"
    assert plot.source == "kml"
    assert len(plot.geometry.interiors) == 1
    (square,) = read_plots(
        "p.geojson", collection(feature({"type": "Polygon", "coordinates": [SQUARE]}))
    )
    assert plot.area_ha < square.area_ha


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE kml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>
<kml><Placemark><name>&c;</name></Placemark></kml>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE kml [<!ENTITY x SYSTEM "file:///etc/passwd">]><kml><Placemark><name>&x;</name></Placemark></kml>"""


def bowtie() -> list[list[float]]:
    return [[-45.5, -21.37], [-45.49, -21.36], [-45.49, -21.37], [-45.5, -21.36], [-45.5, -21.37]]


def many_vertices() -> list[list[float]]:
    n = MAX_VERTICES + 1
    import math

    ring = [
        [
            -45.5 + 0.01 * math.cos(2 * math.pi * i / n),
            -21.37 + 0.01 * math.sin(2 * math.pi * i / n),
        ]
        for i in range(n)
    ]
    return [*ring, ring[0]]


def zip_of(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in entries.items():
            z.writestr(name, body)
    return out.getvalue()


def car_without(ext: str) -> bytes:
    with zipfile.ZipFile(CASES / GEO_ZIP) as z:
        return zip_of({n: z.read(n) for n in z.namelist() if not n.endswith(ext)})


REFUSALS = {
    "self-intersection": (
        "p.geojson",
        collection(feature({"type": "Polygon", "coordinates": [bowtie()]})),
        "Self-intersection",
    ),
    "open ring": (
        "p.geojson",
        collection(feature({"type": "Polygon", "coordinates": [[*SQUARE[:-1], [-45.5, -21.369]]]})),
        "open ring",
    ),
    "too many vertices": (
        "p.geojson",
        collection(feature({"type": "Polygon", "coordinates": [many_vertices()]})),
        "vertices|oversized",
    ),
    "outside WGS84": (
        "p.geojson",
        collection(
            feature({"type": "Polygon", "coordinates": [[[500, 0], [501, 0], [501, 1], [500, 0]]]})
        ),
        "WGS84",
    ),
    "billion laughs": ("t.kml", BILLION_LAUGHS, "entities"),
    "external entity": ("t.kml", EXTERNAL, "entities"),
    "zip bomb": ("c.zip", zip_of({"AREA_IMOVEL.shp": bytes(MAX_ZIP_BYTES + 1)}), "uncompressed"),
    "zip path escape": ("c.zip", zip_of({"../../etc/AREA.shp": b"x"}), "escaping"),
    "zip absolute path": ("c.zip", zip_of({"/tmp/AREA.shp": b"x"}), "escaping"),
    "zip too many entries": (
        "c.zip",
        zip_of({f"f{i}.txt": b"" for i in range(MAX_ZIP_ENTRIES + 1)}),
        "entries",
    ),
    "shapefile without .prj": ("c.zip", car_without(".prj"), r"\.prj"),
    "not a zip": ("c.zip", b"PK\x03\x04 not really", "unreadable zip"),
    "unknown format": ("p.txt", b"{}", "unknown format"),
    "empty collection": ("p.geojson", collection(), "no geometry"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_refusal_says_why_in_both_languages(case: str) -> None:
    name, data, english = REFUSALS[case]
    with pytest.raises(GeoError) as info:
        read_plots(name, data)
    pt, _, en = str(info.value).partition(" / ")
    assert pt, str(info.value)
    assert en, str(info.value)
    assert re.search(english, en), str(info.value)


def test_the_zip_bomb_is_small_on_disk() -> None:
    assert len(REFUSALS["zip bomb"][1]) < MAX_ZIP_BYTES // 100


def test_written_coordinates_have_at_least_6_decimals() -> None:
    (plot,) = read_plots(UTM_ZIP, fixture(UTM_ZIP))
    text = coords_json(plot.geometry)
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
    assert numbers
    assert all("." in n and len(n.split(".")[1]) >= 6 for n in numbers)
    assert json.loads(text)["type"] == "Polygon"

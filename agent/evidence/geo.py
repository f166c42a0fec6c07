"""Plot outlines from hostile files into validated WGS84 geometry.

Theory of operation
-------------------
A cooperative receives its members' plots as GeoJSON, KML, or the zipped shapefile that
Brazil's rural registry (CAR) exports for a property (SIRGAS 2000, EPSG:4674, geographic
or a UTM zone). Every one of these files comes from outside and is read as hostile:

- the file is bounded (``MAX_FILE_BYTES``) before it is parsed;
- KML goes through ``defusedxml`` with DTDs forbidden: no entity is ever expanded;
- a zip is read in memory, never extracted: at most ``MAX_ZIP_ENTRIES`` entries, at most
  ``MAX_ZIP_BYTES`` uncompressed in all (the sizes declared *and* the bytes read), and a
  name that is absolute or climbs out (``..``) refuses the whole archive;
- a shapefile's ``.prj`` names its CRS; it is reprojected to WGS84 with ``pyproj``;
- each geometry is bounded in vertices (``MAX_VERTICES``) and features (``MAX_FEATURES``),
  its rings must be closed, and ``shapely`` must find it valid (no self-intersection);
- the area is geodesic (``pyproj.Geod`` on the WGS84 ellipsoid), in hectares;
- a point is accepted only for a plot declared below 4 ha (EUDR: a polygon above).

Every refusal is a ``GeoError`` whose message is pt-BR first, then English.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import posixpath
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe_et
import shapefile
from defusedxml import DefusedXmlException
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import ProjError
from shapely.geometry import MultiPolygon, Point, Polygon, mapping
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from coffee_telemetry.agent.errors import UsageError

__all__ = [
    "MAX_FEATURES",
    "MAX_FILE_BYTES",
    "MAX_VERTICES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_ENTRIES",
    "POINT_MAX_HA",
    "GeoError",
    "ImportedPlot",
    "coords_json",
    "read_plots",
]

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_ZIP_ENTRIES = 32
MAX_ZIP_BYTES = 50 * 1024 * 1024
MAX_VERTICES = 20_000
MAX_FEATURES = 500
#: EUDR: a point is enough for a plot below 4 ha; above it, a polygon.
POINT_MAX_HA = 4.0
#: Decimals written for every coordinate (EUDR asks for at least 6; 7 is about 1 cm).
DECIMALS = 7

_GEOD = Geod(ellps="WGS84")
Kind = Literal["polygon", "point"]


class GeoError(UsageError):
    """A plot file was refused; the message says why (pt-BR / English)."""

    def __init__(self, pt: str, en: str) -> None:
        super().__init__(f"{pt} / {en}")


@dataclass(frozen=True, slots=True)
class ImportedPlot:
    """One plot read from a file: WGS84 geometry, geodesic area and where it came from."""

    geometry: BaseGeometry
    area_ha: float
    kind: Kind
    whole_property: bool
    label: str
    source: str


def read_plots(name: str, data: bytes, *, declared_ha: float | None = None) -> list[ImportedPlot]:
    """The plots in file ``name`` (its extension picks the format), validated.

    Args:
        name: File name (``.geojson``/``.json``, ``.kml``, ``.zip``).
        data: Its bytes.
        declared_ha: The area declared for a plot given as a point (required then).

    Raises:
        GeoError: Anything refused, with the reason.
    """
    if len(data) > MAX_FILE_BYTES:
        raise GeoError("arquivo grande demais", f"file larger than {MAX_FILE_BYTES} bytes")
    lower = name.lower()
    if lower.endswith((".geojson", ".json")):
        raw = _geojson(data)
        source = "geojson"
    elif lower.endswith(".kml"):
        raw = _kml(data)
        source = "kml"
    elif lower.endswith(".zip"):
        raw = _car_zip(data)
        source = "car-shapefile"
    else:
        raise GeoError(
            "formato desconhecido (use .geojson, .kml ou .zip do CAR)",
            "unknown format (use .geojson, .kml or a CAR .zip)",
        )
    if not raw:
        raise GeoError("nenhuma geometria no arquivo", "no geometry in the file")
    if len(raw) > MAX_FEATURES:
        raise GeoError("geometrias demais", f"more than {MAX_FEATURES} geometries")
    return [_validate(geom, label, source, declared_ha) for geom, label in raw]


# -- validation -----------------------------------------------------------------------------

Ring = list[tuple[float, float]]
#: A polygon as rings (outer first) or a point as one position.
RawGeom = tuple[Literal["polygon"], list[Ring]] | tuple[Literal["point"], tuple[float, float]]


def _validate(
    raw: RawGeom | list[RawGeom], label: str, source: str, declared_ha: float | None
) -> ImportedPlot:
    parts = raw if isinstance(raw, list) else [raw]
    whole = source == "car-shapefile"
    if len(parts) == 1 and parts[0][0] == "point":
        lon, lat = parts[0][1]
        _check_position(lon, lat)
        if declared_ha is None or not 0 < declared_ha < POINT_MAX_HA:
            raise GeoError(
                "um ponto só é aceito para talhão declarado abaixo de 4 ha (use um polígono)",
                "a point is accepted only for a plot declared below 4 ha (use a polygon)",
            )
        return ImportedPlot(Point(lon, lat), declared_ha, "point", whole, label, source)
    polygons: list[Polygon] = []
    vertices = 0
    for part in parts:
        if part[0] != "polygon":
            raise GeoError("mistura de pontos e polígonos", "points mixed with polygons")
        rings = part[1]
        for ring in rings:
            vertices += len(ring)
            if vertices > MAX_VERTICES:
                raise GeoError("vértices demais", f"more than {MAX_VERTICES} vertices")
            _check_ring(ring)
        polygons.append(Polygon(rings[0], rings[1:]))
    geom: BaseGeometry = polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)
    if not geom.is_valid:
        why = explain_validity(geom)
        raise GeoError(f"geometria inválida: {why}", f"invalid geometry: {why}")
    area_m2, _ = _GEOD.geometry_area_perimeter(geom)
    area_ha = abs(area_m2) / 10_000
    if not area_ha > 0:
        raise GeoError("polígono sem área", "polygon without area")
    return ImportedPlot(geom, area_ha, "polygon", whole, label, source)


def _check_position(lon: float, lat: float) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise GeoError(
            "coordenada fora de WGS84 (longitude, latitude)",
            "coordinate outside WGS84 (longitude, latitude)",
        )


def _check_ring(ring: Ring) -> None:
    if len(ring) < 4:
        raise GeoError("anel com menos de 4 pontos", "ring with fewer than 4 positions")
    if ring[0] != ring[-1]:
        raise GeoError(
            "anel aberto: o último ponto deve repetir o primeiro",
            "open ring: the last position must repeat the first",
        )
    for lon, lat in ring:
        _check_position(lon, lat)


def _position(value: object) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) not in (2, 3)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise GeoError("coordenada malformada", "malformed coordinate")
    return float(value[0]), float(value[1])


def _ring(value: object) -> Ring:
    if not isinstance(value, list) or len(value) > MAX_VERTICES:
        raise GeoError("anel malformado ou grande demais", "malformed or oversized ring")
    return [_position(p) for p in value]


def _rings(value: object) -> list[Ring]:
    if not isinstance(value, list) or not value or len(value) > MAX_VERTICES:
        raise GeoError("polígono malformado", "malformed polygon")
    return [_ring(r) for r in value]


# -- GeoJSON --------------------------------------------------------------------------------


def _geojson(data: bytes) -> list[tuple[RawGeom | list[RawGeom], str]]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise GeoError("GeoJSON ilegível", f"unreadable GeoJSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise GeoError("GeoJSON sem objeto", "GeoJSON is not an object")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise GeoError("FeatureCollection sem features", "FeatureCollection without features")
        if len(features) > MAX_FEATURES:
            raise GeoError("geometrias demais", f"more than {MAX_FEATURES} geometries")
    elif kind == "Feature":
        features = [doc]
    else:
        features = [{"type": "Feature", "geometry": doc, "properties": {}}]
    out: list[tuple[RawGeom | list[RawGeom], str]] = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise GeoError("feature malformada", "malformed feature")
        props = feature.get("properties")
        label = _label(props if isinstance(props, dict) else {}, f"#{i + 1}")
        out.append((_geojson_geometry(feature.get("geometry")), label))
    return out


def _label(props: Mapping[str, Any], default: str) -> str:
    for key in ("name", "Name", "ProductionPlace", "cod_imovel", "COD_IMOVEL", "id"):
        value = props.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = "".join(c for c in str(value) if c.isprintable())[:80]
            if text:
                return text
    return default


def _geojson_geometry(geom: object) -> RawGeom | list[RawGeom]:
    if not isinstance(geom, dict):
        raise GeoError("feature sem geometria", "feature without geometry")
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Point":
        return ("point", _position(coords))
    if kind == "Polygon":
        return ("polygon", _rings(coords))
    if kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords or len(coords) > MAX_VERTICES:
            raise GeoError("multipolígono malformado", "malformed multipolygon")
        return [("polygon", _rings(c)) for c in coords]
    raise GeoError(
        "geometria não suportada (Point, Polygon ou MultiPolygon)",
        "unsupported geometry (Point, Polygon or MultiPolygon)",
    )


# -- KML ------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _kml(data: bytes) -> list[tuple[RawGeom | list[RawGeom], str]]:
    try:
        root = safe_et.fromstring(data, forbid_dtd=True, forbid_entities=True)
    except DefusedXmlException:
        raise GeoError(
            "KML com DTD ou entidades recusado", "KML with a DTD or entities refused"
        ) from None
    except Exception as exc:  # ParseError, and what a broken encoding raises
        raise GeoError("KML ilegível", f"unreadable KML ({type(exc).__name__})") from None
    out: list[tuple[RawGeom | list[RawGeom], str]] = []
    for i, placemark in enumerate(e for e in root.iter() if _local(e.tag) == "Placemark"):
        if len(out) >= MAX_FEATURES:
            raise GeoError("geometrias demais", f"more than {MAX_FEATURES} geometries")
        name = next((e.text for e in placemark if _local(e.tag) == "name" and e.text), None)
        label = _label({"name": name.strip()} if name else {}, f"#{i + 1}")
        parts: list[RawGeom] = []
        for element in placemark.iter():
            if _local(element.tag) == "Polygon":
                parts.append(("polygon", _kml_polygon(element)))
            elif _local(element.tag) == "Point":
                ring = _kml_coords(element)
                if len(ring) != 1:
                    raise GeoError("ponto KML malformado", "malformed KML point")
                parts.append(("point", ring[0]))
        if parts:
            out.append((parts[0] if len(parts) == 1 else parts, label))
    return out


def _kml_polygon(polygon: Element) -> list[Ring]:
    outer: list[Ring] = []
    inner: list[Ring] = []
    for boundary in polygon:
        where = _local(boundary.tag)
        if where in ("outerBoundaryIs", "innerBoundaryIs"):
            (outer if where == "outerBoundaryIs" else inner).append(_kml_coords(boundary))
    if len(outer) != 1:
        raise GeoError("polígono KML sem contorno externo", "KML polygon without outer boundary")
    return outer + inner


def _kml_coords(element: Element) -> Ring:
    text = next((e.text or "" for e in element.iter() if _local(e.tag) == "coordinates"), None)
    if text is None:
        raise GeoError("KML sem coordenadas", "KML without coordinates")
    tuples = text.split()
    if len(tuples) > MAX_VERTICES:
        raise GeoError("vértices demais", f"more than {MAX_VERTICES} vertices")
    ring: Ring = []
    for t in tuples:
        fields = t.split(",")
        try:
            if len(fields) not in (2, 3):
                raise ValueError
            ring.append((float(fields[0]), float(fields[1])))
        except ValueError:
            raise GeoError("coordenada KML malformada", "malformed KML coordinate") from None
    return ring


# -- CAR zipped shapefile ---------------------------------------------------------------------


def _zip_members(data: bytes) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise GeoError("zip ilegível", "unreadable zip") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise GeoError(
                "zip com arquivos demais", f"zip with more than {MAX_ZIP_ENTRIES} entries"
            )
        declared = 0
        for info in infos:
            name = info.filename.replace("\\", "/")
            norm = posixpath.normpath(name)
            if name.startswith("/") or norm.startswith("..") or ":" in name.split("/")[0]:
                raise GeoError(
                    f"zip com caminho fora da pasta: {name[:80]!r}",
                    f"zip with a path escaping the folder: {name[:80]!r}",
                )
            declared += info.file_size
        if declared > MAX_ZIP_BYTES:
            raise GeoError("zip grande demais descompactado", "zip too large uncompressed")
        out: dict[str, bytes] = {}
        budget = MAX_ZIP_BYTES
        for info in infos:
            if info.is_dir():
                continue
            try:
                with archive.open(info) as fh:
                    body = fh.read(budget + 1)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError):
                raise GeoError("zip corrompido", "corrupt zip") from None
            budget -= len(body)
            if budget < 0:
                raise GeoError("zip grande demais descompactado", "zip too large uncompressed")
            out[posixpath.basename(info.filename.replace("\\", "/")).lower()] = body
        return out


def _car_zip(data: bytes) -> list[tuple[RawGeom | list[RawGeom], str]]:
    members = _zip_members(data)
    stems = sorted(n[:-4] for n in members if n.endswith(".shp"))
    if not stems:
        raise GeoError("zip sem shapefile (.shp)", "zip without a shapefile (.shp)")
    out: list[tuple[RawGeom | list[RawGeom], str]] = []
    for stem in stems:
        shp, shx, dbf, prj = (members.get(f"{stem}.{ext}") for ext in ("shp", "shx", "dbf", "prj"))
        if shx is None or dbf is None or prj is None:
            raise GeoError(
                f"shapefile {stem} incompleto (.shx, .dbf e .prj)",
                f"shapefile {stem} incomplete (.shx, .dbf and .prj needed)",
            )
        to_wgs84 = _transformer(prj)
        try:
            out.extend(_shapes(shp or b"", shx, dbf, to_wgs84))
        except ProjError:
            raise GeoError("reprojeção para WGS84 falhou", "reprojection to WGS84 failed") from None
    return out


def _transformer(prj: bytes) -> Transformer:
    try:
        crs = CRS.from_wkt(prj.decode("utf-8", errors="strict"))
        if not (crs.is_geographic or crs.is_projected):
            raise ProjError("neither geographic nor projected")
        return Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    except (ProjError, UnicodeDecodeError):
        raise GeoError("sistema de coordenadas (.prj) ilegível", "unreadable CRS (.prj)") from None


def _shapes(
    shp: bytes, shx: bytes, dbf: bytes, to_wgs84: Transformer
) -> Iterable[tuple[RawGeom | list[RawGeom], str]]:
    try:
        reader = shapefile.Reader(shp=io.BytesIO(shp), shx=io.BytesIO(shx), dbf=io.BytesIO(dbf))
        records = list(_bounded(reader.iterShapeRecords()))
    except GeoError:
        raise
    except Exception as exc:  # pyshp raises many kinds on a broken file
        raise GeoError(
            "shapefile ilegível", f"unreadable shapefile ({type(exc).__name__})"
        ) from None
    out: list[tuple[RawGeom | list[RawGeom], str]] = []
    for i, item in enumerate(records):
        shape = item.shape
        label = _label(dict(item.record.as_dict()), f"#{i + 1}")
        if shape.shapeType in (shapefile.POINT, shapefile.POINTZ, shapefile.POINTM):
            x, y = to_wgs84.transform(shape.points[0][0], shape.points[0][1])
            out.append((("point", (float(x), float(y))), label))
            continue
        if shape.shapeType not in (shapefile.POLYGON, shapefile.POLYGONZ, shapefile.POLYGONM):
            raise GeoError("shapefile sem polígonos", "shapefile without polygons")
        if len(shape.points) > MAX_VERTICES:
            raise GeoError("vértices demais", f"more than {MAX_VERTICES} vertices")
        out.append((_shape_polygons(shape, to_wgs84), label))
    return out


def _bounded(items: Iterable[Any]) -> Iterable[Any]:
    for i, item in enumerate(items):
        if i >= MAX_FEATURES:
            raise GeoError("geometrias demais", f"more than {MAX_FEATURES} geometries")
        yield item


def _shape_polygons(shape: Any, to_wgs84: Transformer) -> list[RawGeom]:
    """A shapefile polygon's rings grouped into polygons (clockwise = outer ring)."""
    starts = [*list(shape.parts), len(shape.points)]
    polygons: list[list[Ring]] = []
    for a, b in itertools.pairwise(starts):
        xs, ys = to_wgs84.transform(
            [p[0] for p in shape.points[a:b]], [p[1] for p in shape.points[a:b]]
        )
        ring = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        signed = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
        if signed < 0 or not polygons:  # clockwise: a new outer ring
            polygons.append([ring])
        else:
            polygons[-1].append(ring)
    return [("polygon", rings) for rings in polygons]


# -- writing --------------------------------------------------------------------------------


def coords_json(geometry: BaseGeometry) -> str:
    """``geometry`` as a GeoJSON geometry object, every coordinate with 7 decimals."""
    doc = mapping(geometry)

    def fmt(value: Any) -> str:
        if isinstance(value, int | float):
            return f"{value:.{DECIMALS}f}"
        return "[" + ",".join(fmt(v) for v in value) + "]"

    return '{"type":' + json.dumps(doc["type"]) + ',"coordinates":' + fmt(doc["coordinates"]) + "}"

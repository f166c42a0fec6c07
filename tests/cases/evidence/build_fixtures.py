"""Build the CAR golden fixtures: one property outline as the CAR exports it.

Run ``.venv/bin/python tests/cases/evidence/build_fixtures.py`` to write, next to this file:

- ``car_sirgas2000_geo.zip``: ``AREA_IMOVEL.shp/.shx/.dbf/.prj/.cpg`` in SIRGAS 2000
  geographic (EPSG:4674), the ``.prj`` in the ESRI WKT the CAR's exports carry;
- ``car_sirgas2000_utm23s.zip``: the same outline in SIRGAS 2000 / UTM zone 23S
  (EPSG:31983), projected with pyproj.

The outline is a quadrilateral near Três Pontas (MG) with a hole (a reserve), outer ring
clockwise and hole counter-clockwise as the shapefile specification requires. The
attributes are the CAR's AREA_IMOVEL columns (``cod_imovel``, ``num_area``, ...).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import shapefile
from pyproj import CRS, Transformer
from pyproj.enums import WktVersion

HERE = Path(__file__).parent

#: Outer ring (lon, lat), clockwise, closed; about 300 m by 250 m.
OUTER = [
    (-45.5120000, -21.3700000),
    (-45.5120000, -21.3677500),
    (-45.5091000, -21.3677500),
    (-45.5091000, -21.3700000),
    (-45.5120000, -21.3700000),
]
#: A hole, counter-clockwise, closed.
HOLE = [
    (-45.5110000, -21.3695000),
    (-45.5100000, -21.3695000),
    (-45.5100000, -21.3685000),
    (-45.5110000, -21.3685000),
    (-45.5110000, -21.3695000),
]
CAR_CODE = "MG-3169406-0A1B2C3D4E5F40718293A4B5C6D7E8F9"
#: The .prj of a CAR export in SIRGAS 2000 geographic (ESRI WKT).
PRJ_GEO = (
    'GEOGCS["GCS_SIRGAS_2000",DATUM["D_SIRGAS_2000",SPHEROID["GRS_1980",6378137.0,'
    '298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]'
)


def _shapefile_zip(rings: list[list[tuple[float, float]]], prj: str) -> bytes:
    shp, shx, dbf = io.BytesIO(), io.BytesIO(), io.BytesIO()
    with shapefile.Writer(shp=shp, shx=shx, dbf=dbf, shapeType=shapefile.POLYGON) as w:
        w.field("cod_imovel", "C", size=100)
        w.field("num_area", "N", size=18, decimal=4)
        w.field("cod_estado", "C", size=2)
        w.field("nom_munici", "C", size=100)
        w.field("tipo_imove", "C", size=3)
        w.field("situacao", "C", size=2)
        w.poly(rings)
        w.record(CAR_CODE, 6.4, "MG", "Tres Pontas", "IRU", "AT")
    # A dBase header carries its last-update date (bytes 1-3: years since 1900, month,
    # day); pin it so the fixture's bytes do not depend on the day it was built.
    dbf_bytes = bytearray(dbf.getvalue())
    dbf_bytes[1:4] = bytes((2026 - 1900, 11, 3))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in (
            ("AREA_IMOVEL.shp", shp.getvalue()),
            ("AREA_IMOVEL.shx", shx.getvalue()),
            ("AREA_IMOVEL.dbf", bytes(dbf_bytes)),
            ("AREA_IMOVEL.prj", prj.encode()),
            ("AREA_IMOVEL.cpg", b"UTF-8"),
        ):
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 3, 12, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, body)
    return out.getvalue()


def build() -> dict[str, bytes]:
    """The fixtures' bytes by file name (deterministic)."""
    to_utm = Transformer.from_crs(CRS.from_epsg(4674), CRS.from_epsg(31983), always_xy=True)

    def utm(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [
            (round(x, 3), round(y, 3)) for x, y in (to_utm.transform(lon, lat) for lon, lat in ring)
        ]

    prj_utm = CRS.from_epsg(31983).to_wkt(WktVersion.WKT1_ESRI)
    return {
        "car_sirgas2000_geo.zip": _shapefile_zip([OUTER, HOLE], PRJ_GEO),
        "car_sirgas2000_utm23s.zip": _shapefile_zip([utm(OUTER), utm(HOLE)], prj_utm),
    }


if __name__ == "__main__":
    for name, body in build().items():
        (HERE / name).write_bytes(body)
        print(f"{name}: {len(body)} bytes")

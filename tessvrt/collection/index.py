"""What makes a collection's pieces one raster: per zone a GDAL GTI index (GDAL >= 3.9) and a VRT
(GDAL 3.6-3.8, QGIS 3.22), and one manifest.json listing every piece with its size and checksum.

Written last, from complete pieces only: an index never names a piece that is not whole.
"""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

from ..grid import Window
from ..vrt import band_name
from .pieces import Piece, PieceResult


def _gt(w: Window) -> str:
    t = w.transform
    return ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))


def pieces_vrt(zone: Window, pieces: list[Piece], bands: list[int], prefix: str) -> str:
    """A mosaic VRT of the zone's pieces (paths relative to the VRT): integer offsets, no resampling."""
    srcs = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{escape(p.name.removeprefix(prefix))}</SourceFilename>'
        f"<SourceBand>\0</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{p.window.width}" ySize="{p.window.height}"/>'
        f'<DstRect xOff="{zone.offset_of(p.window)[0]}" yOff="{zone.offset_of(p.window)[1]}" '
        f'xSize="{p.window.width}" ySize="{p.window.height}"/></SimpleSource>'
        for p in pieces
    )
    out = [f'<VRTDataset rasterXSize="{zone.width}" rasterYSize="{zone.height}">\n',
           f'  <SRS dataAxisToSRSAxisMapping="1,2">EPSG:{zone.epsg}</SRS>\n  <GeoTransform>{_gt(zone)}</GeoTransform>\n']
    for i, b in enumerate(bands):
        out.append(f'  <VRTRasterBand dataType="Float32" band="{i + 1}"><Description>{band_name(b - 1)}</Description>'
                   f"<NoDataValue>nan</NoDataValue>{srcs.replace(chr(0), str(i + 1))}</VRTRasterBand>\n")
    out.append("</VRTDataset>\n")
    return "".join(out)


def write_gti(path: str, zone: Window, pieces: list[Piece], bands: list[int], blocksize: int, factors: list[int]) -> None:
    """A GTI index (GeoPackage, written with pyogrio): one polygon per piece, `location` relative to the index,
    and the mosaic's grid in layer metadata, so GDAL opens no piece to learn the extent, bands or type."""
    import numpy as np
    from pyogrio import set_gdal_config_options
    from pyogrio.raw import write
    from shapely import box, to_wkb

    geoms = [box(p.window.transform.c, p.window.transform.f - 10.0 * p.window.height,
                 p.window.transform.c + 10.0 * p.window.width, p.window.transform.f) for p in pieces]
    t = zone.transform
    meta = {"RESX": "10", "RESY": "10", "BAND_COUNT": str(len(bands)), "DATA_TYPE": "Float32", "NODATA": "nan",
            "MINX": repr(t.c), "MAXX": repr(t.c + 10.0 * zone.width), "MINY": repr(t.f - 10.0 * zone.height),
            "MAXY": repr(t.f), "BLOCKXSIZE": str(blocksize), "BLOCKYSIZE": str(blocksize),
            "SRS": f"EPSG:{zone.epsg}"}
    for i, f in enumerate(factors):
        meta[f"OVERVIEW_{i}_FACTOR"] = str(f)
    set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00.000Z"})  # GPKG's timestamps: same bytes every run
    write(path, np.array(to_wkb(geoms), dtype=object), [np.array([p.name for p in pieces], dtype=object)],
          ["location"], layer="pieces", driver="GPKG", geometry_type="Polygon", crs=f"EPSG:{zone.epsg}",
          layer_metadata=meta)


def manifest(zones: list[tuple[str, Window, list[Piece]]], results: dict[str, PieceResult], bands: list[int],
             fingerprint: str, meta: dict[str, str]) -> str:
    """Every piece with its window, size and sha256; no times or hosts, so every run writes the same bytes."""
    return json.dumps({
        "tessvrt_collection": 1, "fingerprint": fingerprint, "bands": bands, "tags": meta,
        "zones": [{"label": label, "epsg": w.epsg, "window": w.__dict__, "vrt": f"{label}.vrt", "gti": f"{label}.gti.gpkg",
                   "pieces": [{"path": p.name, "window": p.window.__dict__, "bytes": results[p.name].bytes,
                               "sha256": results[p.name].sha256} for p in pieces]}
                  for label, w, pieces in zones],
    }, indent=1) + "\n"

"""build above the tile cap: a GDAL GTI index (GDAL >= 3.9) of per-block VRTs, one index per UTM zone.

One VRT of 10^5 tiles is gigabytes of XML that GDAL parses whole on open; a GTI index is a GeoPackage
whose layer metadata carries the mosaic's grid, so GDAL opens it without reading any block, and reads
only the blocks a window touches (an R-tree look-up). Each block is an ordinary tessvrt VRT (dequantising
bands over a mosaic of the tiles reaching it), an aligned cell of the zone's global 10 m grid
(collection.pieces.cut_window): the same ground is always the same block, whatever box asked for it.
Tiles own their pixels by lon/lat cell (grid.ownerships), so blocks cut from one zone mosaic never
disagree at their edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

from . import vrt
from .grid import Window, zone_label

SUFFIX = ".gti.gpkg"
BLOCK = vrt.MOSAIC_BLOCK  # pixels; a block at 51 N holds ~100 tiles, at 80 N ~400 (bounded either way)
MIN_GDAL = "3.9"  # the GTI driver's first release


def is_gti(out: Path) -> bool:
    return out.name.lower().endswith(SUFFIX)


def stem(out: Path) -> str:
    """The name without .vrt or .gti.gpkg: the sidecar and per-zone names are built from it."""
    n = out.name
    return n[: -len(SUFFIX)] if is_gti(out) else n[:-4]


def zone_index_name(stem_: str, epsg: int) -> str:
    return f"{stem_}_{zone_label(epsg)}{SUFFIX}"


def write_zone_blocks(write: Callable[[str, str | Iterable[bytes]], None], sidecar: str, epsg: int, window: Window,
                      placed: list[tuple[str, Window, int]], scale_bands: int, metadata: dict[str, str],
                      size: int = BLOCK) -> list:
    """Write the zone's blocks through write(path relative to the sidecar, text); return them as collection
    pieces whose names are paths relative to the index (the GTI's `location`s).

    placed: (tile VRT path relative to the sidecar, its window on this grid, scale bands). A block no tile
    reaches is not written (NaN there, as in a VRT build's mosaic of blocks). Each block's TESSVRT_TILES names
    the tiles it reads (a zone's list in every block would be ~0.5 MB each at 30,000 tiles).
    """
    from .collection.pieces import Piece, cut_window

    label = zone_label(epsg)
    reach: dict[tuple[int, int], list[tuple[str, Window, int]]] = {}
    for path, tw, nscale in placed:
        for q in range(math.floor((tw.row0 - tw.height + 1) / size), math.floor(tw.row0 / size) + 1):
            for p in range(math.floor(tw.col0 / size), math.floor((tw.col0 + tw.width - 1) / size) + 1):
                reach.setdefault((p, q), []).append(("../../" + path, tw, nscale))
    out = []
    for block in cut_window(label, window, size, ".vrt"):
        srcs = vrt.mosaic_sources(block.window, reach.get((math.floor(block.window.col0 / size), math.floor(block.window.row0 / size)), []))
        if not srcs:
            continue
        rel = f"blocks/{block.name}"
        mosaic = rel[:-4] + "_mosaic.vrt"
        write(mosaic, vrt.mosaic_vrt(block.window, srcs, scale_bands))
        tiles = ",".join(dict.fromkeys(src.path.rpartition("/")[2].removesuffix(".vrt") for src in srcs))
        write(rel, vrt.dequant_vrt(block.window, mosaic.rpartition("/")[2], scale_bands,
                                   {**metadata, "TESSVRT_TILES": tiles}))  # the block's own tiles, not the zone's
        out.append(Piece(label, f"{sidecar}/{rel}", block.window))
    return out


def write_index(path: Path, window: Window, blocks: list) -> None:
    """The zone's GTI GeoPackage (collection.index.write_gti: same writer, same fixed timestamps)."""
    from .collection.index import write_gti

    write_gti(str(path), window, blocks, list(range(1, vrt.BANDS + 1)), 256, [])


def check_index(path: Path, rec: dict, sidecar: str) -> str | None:
    """What is wrong with a GTI file against its build record (None: it is the one build wrote)."""
    import pyogrio
    from pyogrio.raw import read

    try:
        meta = pyogrio.read_info(str(path), layer="pieces").get("layer_metadata") or {}
        _, _, _, (locs,) = read(str(path), layer="pieces", columns=["location"], read_geometry=False)
    except Exception as exc:  # noqa: BLE001 - any reading failure is "not the index build wrote"
        return f"not a GTI GeoPackage with a 'pieces' layer ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    srs = str(meta.get("SRS", ""))
    zone = next((z for z in rec["zones"] if srs == f"EPSG:{z['epsg']}"), None)
    if zone is None:
        return f"its SRS {srs!r} is none of the record's zones"
    w = Window(**zone["window"])
    t = w.transform
    want = {"MINX": t.c, "MAXX": t.c + 10.0 * w.width, "MINY": t.f - 10.0 * w.height, "MAXY": t.f}
    for key, v in want.items():
        try:
            ok = math.isclose(float(meta.get(key, "nan")), v, abs_tol=1e-6)
        except ValueError:
            ok = False
        if not ok:
            return f"{key} {meta.get(key)!r}, the record says {v!r}"
    if meta.get("BAND_COUNT") != str(vrt.BANDS):
        return f"{meta.get('BAND_COUNT')} bands, not {vrt.BANDS}"
    for loc in locs:
        if not (isinstance(loc, str) and loc.startswith(sidecar + "/blocks/") and ".." not in loc.split("/")):
            return f"location {loc!r} is not in {sidecar}/blocks/"
    return None

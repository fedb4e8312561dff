"""Overviews of a build's zone VRTs: small local GeoTIFFs that GDAL and QGIS read when zoomed out.

A remote VRT has no overviews, so a zoomed-out view reads rows of every tile across it (issue 20:
QGIS's first full-extent view of 3x3 tiles at the equator fetched 12% of all tile rows). `build
--overview` writes, per zone VRT and level, a float32 GeoTIFF in the sidecar (the dequantised
values, NaN = nodata) that the VRT's bands list as explicit `<Overview>` elements.

Pixel rule (one for every level, zone and GDAL): level f of a W x H zone VRT is ceil(W/f) x ceil(H/f)
pixels, and its pixel (i, j) is the VRT's pixel (floor((i + 0.5) * H / oh), floor((j + 0.5) * W / ow))
(= row f*i + f//2, column f*j + f//2 when f divides W and H). That is the pixel GDAL's own
nearest-neighbour RasterIO picks when it reads the full resolution at the overview's size (measured
on GDAL 3.6.2), so a decimated read returns the same pixels with or without the overview.

Only those rows are fetched, through materialise's pixel source (tessvrt.pixels: ownership between
overlapping tiles, invalid scales -> NaN, deadlines and retries), so the overview equals the pixels
materialise writes: one ranged GET of the owner tiles' embeddings and one of their scales per picked row,
or per run of picked rows when the rows skipped between them hold < GAP bytes (narrow tiles near the poles:
reading 3 skipped rows of 7 kB costs less than a request each; real 51 N rows are 140 kB, one GET a row).
The cross-zone main VRT, whose other zones' tiles GDAL warps, gets its own levels, made pixel by pixel
as the warp picks them (`_write_main_level`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TessvrtError
from .grid import Window
from .pixels import npy_jobs
from .pixels.base import BANDS, PixelSource
from .pixels.clip import clip_picks, record_clip
from .source.s3 import Endpoint, Pool, progress

FIRST = 4  # GDAL uses an overview only if it is at most ~1.2x coarser than the read (3.6-3.12, measured):
# an 800 x 600 view of 3x3 tiles (~3,300 px) needs factor <= 6, so 4 is the first level
STEP = 4
MAX_SIDE = 4096  # the finest level is the first whose longer side is at most this: a large region's build
# fetches 1/16 or less of its rows and writes GBs less, at the price of views between full resolution and it
MIN_SIDE = 256  # no further level once a level's longer side is below this (as gdaladdo's -minsize)
ROWS = 128  # overview rows per write: one block row of the GeoTIFF (128 x 4096 x 128 bands x 4 B = 268 MB at most)
THREADS = 16  # ranged GETs in flight
GAP = 64 * 1024  # a GET reads the rows between two picked rows when they hold fewer bytes (GDAL merges ranges as close)
SPAN = 64 * 1024 * 1024  # bytes of one run at most: float32 of its rows x width x 128 bands (main level: int8 of a tile's)
MAIN = ""  # write_overviews' key of the cross-zone main VRT (its name is not in the record)


@dataclass(frozen=True)
class Level:
    """One overview of one zone VRT."""

    epsg: int
    factor: int
    width: int
    height: int
    file: str  # in the sidecar folder

    @classmethod
    def of(cls, window: Window, factor: int, main: bool = False) -> Level:
        return cls(window.epsg, factor, -(-window.width // factor), -(-window.height // factor),
                   f"overview_{'main' if main else window.epsg}_{factor}.tif")

    def entry(self, main: bool = False) -> dict:
        """The record's entry (main: of the cross-zone main VRT)."""
        out = {"epsg": self.epsg, "factor": self.factor, "width": self.width, "height": self.height, "file": self.file}
        return {**out, "vrt": "main"} if main else out


def factors(width: int, height: int) -> list[int]:
    """FIRST x STEP^k for the smallest k leaving at most MAX_SIDE px, then x STEP while at least MIN_SIDE remain."""
    side = max(width, height)
    out = [FIRST]
    while -(-side // out[-1]) > MAX_SIDE:
        out[-1] *= STEP
    while side // (out[-1] * STEP) >= MIN_SIDE:
        out.append(out[-1] * STEP)
    return out


def picks(size: int, osize: int) -> np.ndarray:
    """Full-resolution index of each overview index: what GDAL's nearest RasterIO picks (size -> osize)."""
    return np.floor((np.arange(osize) + 0.5) * (size / osize)).astype(np.int64)


def runs(rows: np.ndarray, row_bytes: int, most: int) -> list[tuple[int, int]]:
    """[a, b) index ranges of increasing rows, each read by one GET: a run takes the next row while the rows
    skipped before it hold < GAP bytes and the run spans at most `most` rows."""
    out: list[tuple[int, int]] = []
    a = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or (rows[i] - rows[i - 1] - 1) * row_bytes >= GAP or rows[i] - rows[a] >= most:
            out.append((a, i))
            a = i
    return out


def _row_bytes(rec: dict, epsg: int) -> int:
    """The longest embeddings row (W*128 bytes) of a zone's tiles: what one skipped row costs at most.

    Scales rows are 1/32 of it, or 4x for (H, W, 128) scales, which upstream's code allows and the
    published tiles do not have (a tile with them is read as the others, up to 4x the bytes skipped).
    """
    return max((t["width"] * BANDS for t in rec["tiles"] if t["epsg"] == epsg), default=BANDS)


def write_overviews(folder: Path, rec: dict, endpoint: Endpoint, levels: bool | list[int] = True) -> dict[str, list[str]]:
    """Write the overview levels (`factors()`, or the factors given) of every zone VRT, and of a cross-zone
    main VRT, into folder; list them in rec["overviews"] and the bytes fetched in rec["overview_remote_bytes"].

    Returns {zone VRT name, or MAIN: [overview files relative to the folder, finest first]}.
    """
    if isinstance(levels, list) and not (levels and all(isinstance(f, int) and f >= 2 for f in levels)):
        raise TessvrtError(f"overview factors {levels!r} must be integers >= 2, e.g. [4, 16]")

    def plan(win: Window, main: bool = False) -> list[Level]:
        fs = sorted(set(levels)) if isinstance(levels, list) else factors(win.width, win.height)
        return [Level.of(win, f, main) for f in fs]

    jobs = npy_jobs(rec, endpoint)
    area = record_clip(rec)  # build --clip: the levels are clipped as the full resolution is
    zones = [plan(j.window) for j in jobs]
    warped = len(rec["zones"]) > 1 or rec["zones"][0]["epsg"] != rec["main"]["epsg"]  # the main VRT is warped
    main = plan(Window(**rec["main"]["window"]), True) if warped else []
    need, free = sum(lv.width * lv.height * BANDS * 4 for lv in [*main, *(lv for z in zones for lv in z)]), \
        shutil.disk_usage(folder).free
    if need > free:  # float32 before compression (embeddings compress to ~80%): checked before any GET
        raise TessvrtError(f"not enough free disk space in {folder.parent} for the overviews: they need up to "
                           f"{need / 1e9:,.1f} GB and {free / 1e9:,.1f} GB are free; free space, or build without --overview")
    out: dict[str, list[str]] = {}
    entries = []
    fetched = 0
    for job, zone, todo in zip(jobs, rec["zones"], zones, strict=True):
        src = job.spec.open(job.window)
        try:
            src.check(THREADS)
            for lv in todo:
                _write_level(folder / lv.file, src, job.window, lv, _row_bytes(rec, zone["epsg"]), area)
                entries.append(lv.entry())
            fetched += src.stats().remote_bytes
        finally:
            src.close()
        out[zone["vrt"]] = [lv.file for lv in todo]
    for lv in main:
        fetched += _write_main_level(folder / lv.file, rec, endpoint, Window(**rec["main"]["window"]), lv, area)
        entries.append(lv.entry(main=True))
    if main:
        out[MAIN] = [lv.file for lv in main]
    rec["overviews"] = entries
    rec["overview_remote_bytes"] = fetched
    return out


def _write_main_level(path: Path, rec: dict, endpoint: Endpoint, win: Window, lv: Level, area: Any = None) -> int:
    """A level of the cross-zone main VRT; bytes fetched.

    There, other zones' tiles are warped by GDAL (nearest, exact transform): a picked pixel takes its owner
    tile's pixel containing the pixel centre projected into the tile's zone, as GDAL's warper and
    tests/reference.py find it. Their rows are not decimated (the zones' grids are rotated against each
    other), so this fetches each (tile, row) the picks fall on once (up to every row of the warped tiles),
    close rows of a tile in one GET (`runs`).
    """
    from .grid import PIXEL, owner_cells
    from .pixels.npy import TileTable
    from .scales import valid
    from .source.s3 import fetch_range

    tiles = {t.tile.cell: t for z in rec["zones"] for t in TileTable.from_record(rec, z["epsg"]).tiles()}
    rows, cols = picks(win.height, lv.height), picks(win.width, lv.width)
    xs = PIXEL * (win.col0 + cols) + 5.0
    fetched = 0
    progress(f"overview 1/{lv.factor} of the main VRT (EPSG:{lv.epsg}, warped tiles): {lv.width} x {lv.height} px")

    def get(t, r: int, n: int) -> tuple[np.ndarray, np.ndarray]:  # tile rows [r, r+n): two GETs
        line, sline = t.width * BANDS, t.width * 4 * t.scale_bands
        e = fetch_range(endpoint, t.grid, t.grid_offset + r * line, n * line, t.grid_size, what=f"tile {t.name}")
        sc = fetch_range(endpoint, t.scales, t.scales_offset + r * sline, n * sline, t.scales_size, what=f"tile {t.name}")
        return (np.frombuffer(e, np.int8).reshape(n, t.width, BANDS),
                np.frombuffer(sc, "<f4").reshape(n, t.width, -1 if t.scale_bands > 1 else 1))

    with Pool(THREADS, "tessvrt-overview") as pool, _create(path, win, lv) as dst:
        for k in range(0, lv.height, ROWS):
            block = np.full((BANDS, min(ROWS, lv.height - k), lv.width), np.nan, np.float32)
            where: dict[tuple, list] = {}  # (tile cell, tile row) -> [(block row, overview cols, tile cols)]
            for n, y in enumerate(rows[k:k + ROWS]):
                ys = np.full(xs.size, PIXEL * (win.row0 - y) + 5.0)
                ci, cj = owner_cells(win.epsg, xs, ys)
                for cell in set(zip(ci.tolist(), cj.tolist(), strict=True)) & tiles.keys():
                    t = tiles[cell]
                    sel = np.flatnonzero((ci == cell[0]) & (cj == cell[1]))
                    px, py = xs[sel], ys[sel]
                    if t.window.epsg != win.epsg:
                        px, py = _reproject(win.epsg, t.window.epsg).transform(px, py)
                    c = np.floor((np.asarray(px) - PIXEL * t.window.col0) / PIXEL).astype(np.int64)
                    r = np.floor((PIXEL * (t.window.row0 + 1) - np.asarray(py)) / PIXEL).astype(np.int64)
                    ok = (c >= 0) & (c < t.width) & (r >= 0) & (r < t.height)
                    for rr in np.unique(r[ok]).tolist():
                        m = ok & (r == rr)
                        where.setdefault((cell, rr), []).append((n, sel[m], c[m]))
            futures = []  # (tile cell, its rows in one run, future of those rows)
            for cell in {key[0] for key in where}:
                t, rs = tiles[cell], np.array(sorted(rr for c, rr in where if c == cell))
                size = t.width * BANDS  # as _row_bytes
                for a, b in runs(rs, size, max(1, SPAN // size)):
                    futures.append((cell, rs[a:b], pool.submit(get, t, int(rs[a]), int(rs[b - 1] - rs[a]) + 1)))
            for cell, rs, f in futures:
                emb, sc = f.result()
                fetched += emb.nbytes + sc.nbytes
                for rr in rs.tolist():
                    for n, oc, tc in where[(cell, rr)]:
                        s = sc[rr - rs[0], tc]
                        v = emb[rr - rs[0], tc].astype(np.float32) * np.where(valid(s), s, np.float32(np.nan))
                        block[:, n, oc] = v.T
            clip_picks(block, area, win, rows[k:k + block.shape[1]], cols)
            dst.write(block, window=((k, k + block.shape[1]), (0, lv.width)))
    return fetched


@cache
def _reproject(src: int, dst: int):  # noqa: ANN202 - a pyproj Transformer
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def _create(path: Path, win: Window, lv: Level):  # noqa: ANN202 - an open rasterio dataset
    """The level's GeoTIFF: float32, NaN nodata, ZSTD + floating-point predictor, band-interleaved ROWS-px tiles."""
    import rasterio
    from affine import Affine

    from .cog.profiles import cog_options
    from .vrt import band_name

    t = win.transform
    transform = Affine(t.a * win.width / lv.width, 0.0, t.c, 0.0, t.e * win.height / lv.height, t.f)
    dst = rasterio.open(path, "w", driver="GTiff", width=lv.width, height=lv.height, count=BANDS, dtype="float32",
                        nodata=float("nan"), crs=f"EPSG:{lv.epsg}", transform=transform, **cog_options("zstd", None, ROWS))
    dst.descriptions = tuple(band_name(b) for b in range(BANDS))
    return dst


def _write_level(path: Path, src: PixelSource, win: Window, lv: Level, row_bytes: int, area: Any = None) -> None:
    """The level's pixels, ROWS overview rows at a time; the next rows' GETs run while these are dequantised.

    Each run of picked rows (`runs`, row_bytes: the zone's longest tile row) is one fetch: per owner tile one
    GET of its embeddings rows and one of its scales rows; only the picked rows are kept.
    """
    rows, cols = picks(win.height, lv.height), picks(win.width, lv.width)
    bands = list(range(1, BANDS + 1))
    most = max(1, SPAN // (win.width * BANDS * 4))
    progress(f"overview 1/{lv.factor} of EPSG:{lv.epsg}: {lv.width} x {lv.height} px from {len(rows):,} rows")
    with Pool(THREADS, "tessvrt-overview") as pool, Pool(os.cpu_count() or 2, "tessvrt-dequant") as cpu, \
            _create(path, win, lv) as dst:
        def start(k: int) -> list:
            ys = rows[k:k + ROWS]
            return [(a, b, src.fetch(pool, int(ys[a]), 0, int(ys[b - 1] - ys[a]) + 1, win.width, None))
                    for a, b in runs(ys, row_bytes, most)]

        pending = start(0)
        for k in range(0, lv.height, ROWS):
            cur, pending = pending, start(k + ROWS) if k + ROWS < lv.height else []
            ys = rows[k:k + ROWS]
            block = np.empty((BANDS, len(ys), lv.width), np.float32)
            for a, b, tiles in cur:
                y0, h = int(ys[a]), int(ys[b - 1] - ys[a]) + 1
                block[:, a:b, :] = src.chunk(cpu, tiles, y0, 0, h, win.width, bands)[:, ys[a:b] - y0][:, :, cols]
            clip_picks(block, area, win, ys, cols)
            dst.write(block, window=((k, k + len(ys)), (0, lv.width)))

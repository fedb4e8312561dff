"""tessvrt.open_region: a region as lazy, dask-backed xarray DataArrays, one per UTM zone part.

Built as xarray's backends build theirs: one lazily indexed array per zone source (`ZoneArray`, which
holds only the zone's picklable pixel spec), wrapped by `dask.array.from_array`, whose chunks are one
lazy Blockwise layer however many there are (a continent is ~10^5 chunks and the graph stays a few
objects). Each chunk's task indexes the array, which reads exactly that window through
`tessvrt.pixels.read_window` (npy: `spec.part(window)`, only the tiles it touches), so computed
pixels equal materialise's bit for bit. Opening reads the manifest (npy without a VRT) or the store's
metadata (Zarr), never a tile or a chunk.

Chunks are cut on the zone's grid, not the region's, so a pixel is in the same chunk whatever box
opened it: npy chunks at multiples of NPY_CHUNKS from global row/column 0, Zarr chunks at multiples of
a size derived from the store's own chunk and shard grid, from the zone group's origin (docs/python.md).
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import TessvrtError
from .grid import Window
from .pixels import NpySpec, ZarrSpec, ZoneJob, read_window
from .pixels.base import Spec
from .pixels.clip import unwrap

if TYPE_CHECKING:
    import xarray as xr

BANDS = 128
# npy: a tile's row holds all 128 bands of its full width, and a chunk reads whole rows of every tile it
# touches: wide, short chunks waste least (2048 px wide over ~1100-px tiles reads ~1.5x its own width,
# where 512 x 512 would read ~3x). 128 x 2048 x 128 bands x 4 B = 134 MB of float32 per chunk.
NPY_CHUNKS = (128, 2048)
# Zarr: inner chunks are 32 x 32 (all bands), shards 4096 x 4096: 512 x 512 (134 MB) chunks cover whole
# inner chunks and never cross a shard (one shard index per array per task); other layouts get the
# nearest size that does the same (zarr_chunks).
ZARR_TARGET = 512


class ZoneArray:
    """(band, y, x) float32 pixels of a zone window, read when indexed with slices (what dask's getter does).

    Holds the zone's spec, window and bands, nothing open: it pickles to workers, which read through
    their own connections. Indexing with a step reads the covering window and subsamples it.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, spec: Spec, window: Window, bands: list[int]):
        self.spec, self.window, self.bands = spec, window, list(bands)
        self.shape = (len(self.bands), window.height, window.width)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        spans, post = [], []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, int | np.integer):
                k = int(k) + n if k < 0 else int(k)
                if not 0 <= k < n:
                    raise IndexError(f"index {k} is out of bounds for size {n}")
                spans.append((k, k + 1))
                post.append(0)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("negative steps are not supported")
                stop = max(stop, start)
                spans.append((start, stop))
                post.append(slice(None, None, step))
            else:
                raise IndexError(f"ZoneArray takes ints and slices, not {type(k).__name__}")
        (b0, b1), (y0, y1), (x0, x1) = spans
        out = self.read(y0, x0, y1 - y0, x1 - x0, self.bands[b0:b1])
        return out[tuple(post)]

    def read(self, y0: int, x0: int, h: int, w: int, bands: list[int]) -> np.ndarray:
        """(bands, h, w) of window rows [y0, y0+h) x columns [x0, x0+w): one read_window call."""
        if h <= 0 or w <= 0 or not bands:
            return np.empty((len(bands), max(h, 0), max(w, 0)), np.float32)
        z = self.window
        win = Window(z.epsg, z.col0 + x0, z.row0 - y0, w, h)
        spec = self.spec.part(win) if isinstance(unwrap(self.spec), NpySpec) else self.spec
        return read_window(spec, win, bands, threads=READ_THREADS)


READ_THREADS = 8  # ranged GETs in flight per task (as materialise's default)


def axis_chunks(start: int, length: int, size: int) -> tuple[int, ...]:
    """Chunk lengths along an axis of `length` pixels starting at grid index `start`, cut where the index is a
    multiple of `size` (so the cut does not depend on where the region starts)."""
    if length <= 0:
        return (0,)
    first = min(size - start % size, length)
    rest = length - first
    return (first,) + (size,) * (rest // size) + ((rest % size,) if rest % size else ())


def zarr_chunks(inner: list[int], outer: list[int], target: int = ZARR_TARGET) -> int:
    """Chunk size along one axis of a zone group: whole inner chunks of every array, never across a shard.

    inner/outer: that axis's inner chunk and shard sizes of each array (equal when unsharded).
    """
    unit, shard = int(np.lcm.reduce(inner)), int(np.lcm.reduce(outer))
    if shard <= target:
        return target // shard * shard
    c = max(target // unit * unit, unit)
    while shard % c:  # unit divides shard, so this ends at unit at worst
        c -= unit
    return c


def open_region(
    vrt: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    bbox: str | tuple[float, float, float, float] | None = None,
    tiles: list[str] | None = None,
    year: int | None = None,
    format: str | None = None,  # noqa: A002 - as sample's --format
    source: str | None = None,
    endpoint: str | None = None,
    manifest: str | None = None,
    bands: list[int] | str | None = None,
    chunks: int | tuple[int, int] | None = None,
    allow_missing: bool = False,
    region: str | os.PathLike | None = None,
    country: str | None = None,
    clip: bool = False,
) -> dict[str, xr.DataArray]:
    """The region's pixels as lazy DataArrays (band, y, x), float32, NaN nodata, keyed by zone label
    ('utm31n', ...) in zone order: each zone part on its own 10 m grid, unwarped, as materialise writes it.

    Forms: a tessvrt VRT (its build record); dataset + bbox + year of a Zarr store (format 'zarr', the
    default when the dataset has one); dataset + bbox and/or tiles + year of npy tiles, no VRT (format
    'npy', or implied by tiles/manifest), selected from the manifest as `build` selects them.
    bands: 1-based band numbers ('1,2,3', '1-16' or a list) as materialise's --bands; chunks: (y, x)
    pixels per chunk (default by format, see the module doc). Nothing but the manifest or the store's
    metadata is read until a window is computed.
    region/country: a polygon file or a country (tessvrt.region) instead of bbox: npy tiles whose cells it covers
    in part, or a Zarr store's pixels in those cells; clip: NaN wherever a pixel's centre lies outside the
    bbox/polygon (with a VRT: the region given here).
    """
    import dask.array as da
    import xarray as xr

    from .materialise import parse_bands, plan
    from .pixels.clip import narrow
    from .region import Region

    band_list = bands if isinstance(bands, list) else parse_bands(bands)
    if any(not 1 <= b <= BANDS for b in band_list):
        raise TessvrtError(f"bands must be 1 to {BANDS}, got {band_list}")
    if vrt is not None:
        if any(v is not None for v in (dataset, bbox, tiles, year, manifest)):
            raise TessvrtError("give either a VRT, or dataset, bbox/tiles and year: not both")
        _, jobs, _ = plan(vrt, vrt, None, None, None, source, endpoint, allow_missing, region, country, clip)
        fmt, ts = "npy", None
    else:
        area = Region.from_options(bbox=bbox, tiles=tiles, region=region, country=country)
        if dataset is None or year is None or area is None:
            raise TessvrtError("open_region needs a VRT, or dataset, year and bbox (W,S,E,N), region, country or tiles")
        fmt = format or _default_format(dataset, tiles, manifest)
        if fmt == "zarr":
            if tiles or manifest:
                raise TessvrtError("tiles and manifest select npy tiles; a Zarr region is a bbox")
            from .pixels.clip import zarr_region_jobs

            ts, jobs = zarr_region_jobs(dataset, area, year, source, endpoint, clip)
        elif fmt == "npy":
            from .build import npy_region_jobs

            ts, jobs = None, npy_region_jobs(year=year, dataset=dataset, source=source, manifest=manifest, endpoint=endpoint,
                                             allow_missing=allow_missing, region=area)
            jobs = narrow(jobs, area, clip) if clip else jobs
        else:
            raise TessvrtError(f"format {format!r} must be zarr or npy")
    jobs = sorted(jobs, key=lambda j: (j.window.epsg % 100, j.window.epsg))  # zone order, north before south
    run = uuid.uuid4().hex[:12]
    out = {}
    for job in jobs:
        ych, xch = _chunks(job, ts, fmt, chunks)
        arr = ZoneArray(job.spec, job.window, band_list)
        data = da.from_array(arr, chunks=((len(band_list),), ych, xch), name=f"tessvrt-{job.label}-{run}",
                             asarray=False, fancy=False, lock=False, inline_array=False,
                             meta=np.empty((0, 0, 0), np.float32))
        out[job.label] = _data_array(xr, data, job, band_list)
    return out


def _default_format(dataset: str, tiles: list[str] | None, manifest: str | None) -> str:
    """Zarr when the dataset has a store (as sample), npy when tiles or a manifest are given or it has none."""
    from .source.datasets import DATASETS

    if tiles or manifest:
        return "npy"
    return "zarr" if any(dataset.strip() in (d.zarr, d.npy, d.variant) and d.zarr for d in DATASETS) else "npy"


def _chunks(job: ZoneJob, ts: Any, fmt: str, chunks: int | tuple[int, int] | None) -> tuple[tuple[int, ...], ...]:
    """(y chunks, x chunks) of a zone window, cut on the zone's grid (npy) or the zone group's (Zarr)."""
    win, spec = job.window, unwrap(job.spec)
    if isinstance(spec, ZarrSpec):
        ystart, xstart = spec.row0 - win.row0, win.col0 - spec.col0  # the window's top-left in the group's arrays
        if chunks is None:
            g = (ts if ts is not None else spec.store()).require(spec.epsg % 100)  # a Zarr VRT: its run's store
            arrays = (g.embeddings, g.scales)
            cy = zarr_chunks([a.inner[-2] if a.inner else a.outer[-2] for a in arrays], [a.outer[-2] for a in arrays])
            cx = zarr_chunks([a.inner[-1] if a.inner else a.outer[-1] for a in arrays], [a.outer[-1] for a in arrays])
        else:
            cy, cx = (chunks, chunks) if isinstance(chunks, int) else chunks
    else:
        ystart, xstart = -win.row0, win.col0  # global row index grows downward from J = 0
        cy, cx = NPY_CHUNKS if chunks is None else (chunks, chunks) if isinstance(chunks, int) else chunks
    if cy <= 0 or cx <= 0:
        raise TessvrtError(f"chunks must be positive, got {chunks}")
    return axis_chunks(ystart, win.height, cy), axis_chunks(xstart, win.width, cx)


def _data_array(xr: Any, data: Any, job: ZoneJob, bands: list[int]) -> xr.DataArray:
    """The DataArray in rioxarray's conventions: spatial_ref (crs_wkt, GeoTransform), pixel-centre x/y, _FillValue."""
    from pyproj import CRS

    win = job.window
    crs = CRS.from_epsg(win.epsg)
    wkt = crs.to_wkt()
    ref = {**crs.to_cf(), "crs_wkt": wkt, "spatial_ref": wkt,
           "GeoTransform": " ".join(str(v) for v in win.transform.to_gdal())}
    names = [f"embedding_{b - 1:03d}" for b in bands]
    attrs = {k: v for k, v in job.meta.items() if k != "TESSVRT_TILES"}  # a continent's tile list is megabytes
    if isinstance(unwrap(job.spec), NpySpec):
        attrs["TESSVRT_TILE_COUNT"] = str(len(unwrap(job.spec).table))
    attrs.update({"_FillValue": np.float32(np.nan), "long_name": tuple(names), "units": "1"})
    arr = xr.DataArray(data, dims=("band", "y", "x"), coords=_xy(xr, win), name="embeddings", attrs=attrs)
    arr = arr.assign_coords(band=("band", names), spatial_ref=((), 0, ref))
    for dim, axis in (("x", "X"), ("y", "Y")):
        arr[dim].attrs.update({"axis": axis, "standard_name": f"projection_{dim}_coordinate", "units": "metre",
                               "long_name": f"{dim} coordinate of projection"})
    arr.encoding["grid_mapping"] = "spatial_ref"
    return arr


def _xy(xr: Any, win: Window) -> Any:
    """Pixel-centre x/y coordinates: lazy RangeIndexes (xarray >= 2025.06), so a continent's zones (10^5 x 10^5
    pixels) hold no coordinate arrays; the values equal Window.pixel_centres() exactly (integers x 10 + 5)."""
    x0, y0 = 10.0 * win.col0 + 5.0, 10.0 * win.row0 + 5.0
    try:
        from xarray.indexes import RangeIndex
    except ImportError:  # older xarray: plain arrays
        xs, ys = win.pixel_centres()
        return {"y": ("y", ys), "x": ("x", xs)}
    ix = RangeIndex.arange(x0, x0 + 10.0 * win.width, 10.0, dim="x")
    iy = RangeIndex.arange(y0, y0 - 10.0 * win.height, -10.0, dim="y")
    return xr.Coordinates.from_xindex(iy).merge(xr.Coordinates.from_xindex(ix)).coords


__all__ = ["open_region", "ZoneArray", "axis_chunks", "zarr_chunks", "NPY_CHUNKS", "ZARR_TARGET"]

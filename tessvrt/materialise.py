"""tessvrt materialise: dequantised float32 Cloud-Optimized GeoTIFFs, one per UTM zone.

Pixels never pass through GDAL's VRT pixel functions (slow, SPEC.md). The build record
(sidecar tessvrt.json) says which tiles, byte offsets and zone windows a VRT stands for;
this module fetches the tile rows each output strip needs with ranged GETs in parallel,
dequantises in numpy with the same pixel rule as the VRT (owner tile, nearest source
pixel, NaN for invalid scales), and writes whole compressed tiles (GDAL, both cores) as it
goes, picking overview pixels on the way (cog.stage.Overviews). cog.layout then puts the COG
together by copying compressed tiles: every pixel is compressed exactly once. The zone is
walked in chunks of one block row by a few block columns, so memory is bounded by the chunk
(MEMORY_BUDGET), never by the region.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import __version__, scales
from .cog.layout import assemble, read_image
from .cog.profiles import CogProfile
from .cog.stage import Overviews
from .errors import MissingObject, TessvrtError, check_name, check_output_folder
from .grid import Ownership, Tile, TileGrid, Window, ownerships
from .publish import TargetLock, clean_stale, publish, tmp_path
from .record import read_record
from .source import npy
from .source.s3 import DEFAULT_REGION, Endpoint, Pool, S3Location, fetch_range
from .vrt import BANDS

# bytes the float32 buffer of one chunk (blocksize rows x some block columns x bands) may use
MEMORY_BUDGET = 384 * 2**20


@dataclass(frozen=True)
class ZoneTile:
    """One tile as materialise reads it: where its bytes are, where it lands, what it owns."""

    name: str
    grid: S3Location
    scales: S3Location
    grid_offset: int
    scales_offset: int
    scale_bands: int
    grid_size: int
    scales_size: int
    window: Window  # its pixels on the zone grid: the whole tile, unshifted (zones are never warped here)
    own: Ownership  # the pixels of that window it owns

    @property
    def width(self) -> int:
        return self.window.width

    @property
    def height(self) -> int:
        return self.window.height


@dataclass
class MaterialiseResult:
    files: list[Path]
    bytes_written: int
    seconds: float
    remote_bytes: int
    tiles: list[str] = field(default_factory=list)
    output_float32_bytes: int = 0
    missing: list[str] = field(default_factory=list)  # tiles whose objects were gone (--allow-missing)
    not_computed: int = 0  # Zarr: region pixels the store has not computed yet (+inf scales), written as NaN
    outside: int = 0  # Zarr: region pixels beyond the store's zone grids, written as NaN
    requests: int = 0  # Zarr: GETs made (metadata, shard indexes, coalesced chunk ranges)

    @property
    def mb_per_s(self) -> float:
        """Float32 output megabytes (uncompressed) per second."""
        return self.output_float32_bytes / 1e6 / max(self.seconds, 1e-9)


def parse_bands(text: str | None) -> list[int]:
    """'1,2,3' or '1-3' -> 1-based band numbers, in the order given."""
    if text is None or text.strip() == "":
        return list(range(1, BANDS + 1))
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise TessvrtError(f"--bands {text!r}: {part.strip()!r} is not a band number or range; write e.g. 1,2,3 or 1-16")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        for v in (lo, hi):  # checked before a range is expanded: 1-1000000000 must not fill memory
            if not 1 <= v <= BANDS:
                raise TessvrtError(f"--bands {text!r}: band {v} is out of range; bands are 1 to {BANDS}")
        out.extend(range(lo, hi + 1))
    return out


def output_paths(output: Path, labels: list[str]) -> list[Path]:
    """out.tif for one zone; out_utm30n.tif, out_utm31n.tif, ... for several."""
    if len(labels) == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{label}{output.suffix}") for label in labels]


def materialise(
    vrt_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    bbox: str | tuple[float, float, float, float] | None = None,
    year: int | None = None,
    source: str | None = None,
    bands: list[int] | str | None = None,
    compress: str = "zstd",
    level: int | None = None,
    blocksize: int = 512,
    overviews: bool = True,
    overwrite: bool = False,
    endpoint: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 8,
    allow_missing: bool = False,
) -> MaterialiseResult:
    """Write the VRT's embeddings as float32 COGs, one per UTM zone; returns what was written.

    Without a VRT, `materialise("out.tif", dataset="v1.1-dclimate", bbox="W,S,E,N", year=2024)` writes the
    region from the dataset's Zarr store (upstream's main format; zarrstore): the same outputs, no build.
    """
    t0 = time.perf_counter()
    if output is None or dataset is not None or bbox is not None or year is not None:
        return _from_zarr(vrt_path if output is None else None, output, dataset, bbox, year, source, endpoint,
                          bands, CogProfile(compress, level, blocksize, overviews), overwrite, progress, workers, t0)
    rec = read_record(vrt_path)
    band_list = bands if isinstance(bands, list) else parse_bands(bands)
    cog = CogProfile(compress, level, blocksize, overviews)
    out = Path(output)
    zones = rec["zones"]
    ep = Endpoint(rec["endpoint"], rec.get("region") or DEFAULT_REGION) if endpoint is None else Endpoint.parse(endpoint)
    src = _Source(ep, allow_missing)

    def jobs() -> tuple[list[ZoneJob], int]:
        plans = [(z, _zone_tiles(rec, z)) for z in zones]
        remote = _check_headers(src, [t for _, ts in plans for t in ts], workers)
        return [ZoneJob(z["label"], Window(**z["window"]), _NpyPixels(src, tiles, Window(**z["window"])),
                        _metadata(rec, z, tiles)) for z, tiles in plans], remote

    windows = [Window(**z["window"]) for z in zones]
    targets, remote, total = _write_outputs(out, [z["label"] for z in zones], windows, jobs, band_list, cog, overwrite,
                                            progress, workers)
    size = sum(p.stat().st_size for p in targets)
    return MaterialiseResult(targets, size, time.perf_counter() - t0, remote, [t["name"] for t in rec["tiles"]],
                             output_float32_bytes=total, missing=sorted(src.missing))


@dataclass
class ZoneJob:
    """One output file: its zone window, where its pixels come from and its GeoTIFF tags."""

    label: str
    window: Window
    pixels: PixelSource
    meta: dict[str, str]


def _from_zarr(vrt_path: str | os.PathLike | None, output: str | os.PathLike | None, dataset: str | None,
               bbox: str | tuple[float, float, float, float] | None, year: int | None, source: str | None,
               endpoint: str | None, bands: list[int] | str | None, cog: CogProfile, overwrite: bool,
               progress: Callable[[int, int], None] | None, workers: int, t0: float) -> MaterialiseResult:
    """The VRT-less form: a lon/lat box of a dataset's Zarr store, every check done before writing."""
    from .zarrstore import plan_region

    if vrt_path is None:
        raise TessvrtError("give either a VRT and an output, or an output with --dataset, --bbox and --year "
                           "(a region of the dataset's Zarr store), not both")
    if dataset is None or bbox is None or year is None:
        raise TessvrtError("materialise without a VRT reads the dataset's Zarr store: give --dataset, --bbox W,S,E,N "
                           "and --year (e.g. tessvrt materialise out.tif --dataset v1.1-dclimate --bbox "
                           "-0.2,51.4,0.1,51.6 --year 2024)")
    band_list = bands if isinstance(bands, list) else parse_bands(bands)
    out = Path(vrt_path)
    ts, plan = plan_region(dataset, bbox, year, source, endpoint)
    ok = False
    try:
        targets, _, total = _write_outputs(out, [j.label for j in plan], [j.window for j in plan],
                                           lambda: (plan, 0), band_list, cog, overwrite, progress, workers)
        ok = True
    finally:
        for j in plan:
            j.pixels.close(wait=ok)
    size = sum(p.stat().st_size for p in targets)
    return MaterialiseResult(targets, size, time.perf_counter() - t0, ts.store.traffic.bytes, [],
                             output_float32_bytes=total,
                             not_computed=sum(j.pixels.counts.not_computed for j in plan),
                             outside=sum(j.pixels.counts.outside for j in plan), requests=ts.store.traffic.requests)


def _write_outputs(out: Path, labels: list[str], windows: list[Window], jobs: Callable[[], tuple[list[ZoneJob], int]],
                   band_list: list[int], cog: CogProfile, overwrite: bool, progress: Callable[[int, int], None] | None,
                   workers: int) -> tuple[list[Path], int, int]:
    """Every zone's COG or none: output checks, the lock, temporaries, the zone writer, publishing.

    jobs() runs under the lock, after the up-front checks, and returns the zones' jobs and the bytes
    it read. Returns (files, remote bytes, float32 bytes).
    """
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise TessvrtError(f"output {out} must end in .tif")
    parent = out.parent if str(out.parent) else Path(".")
    check_output_folder(parent, "output path")
    check_name(out, len(f".{out.stem}_utm00n{out.suffix}.{os.getpid()}.tessvrt-tmp.ov1024.z.tif"), "output path")
    targets = output_paths(out, labels)
    for p in targets:
        if p.is_dir() or (p.exists() and not overwrite):
            raise TessvrtError(f"{p} exists{' and is a folder' if p.is_dir() else ''}; "
                               f"{'choose another output' if p.is_dir() else 'pass --overwrite to replace it'}")
    with TargetLock(targets):
        clean_stale(parent, targets)
        _check_space(parent, windows, len(band_list), cog.compress)
        plans, remote = jobs()
        total = sum(w.width * w.height for w in windows) * len(band_list) * 4
        meter = _Meter(total, progress)
        done = [tmp_path(t, ".done.tif") for t in targets]
        trash = tmp_path(out, ".old")
        try:
            for job, target in zip(plans, targets, strict=True):
                win, meta = job.window, job.meta
                try:
                    remote += _write_zone(target, win, job.pixels, band_list, cog, meta, meter, workers)
                except TessvrtError:
                    raise
                except Exception as exc:  # disk full, folder gone, GDAL write errors: say so in one line
                    if not _is_write_error(exc):
                        raise
                    raise TessvrtError(f"writing {target} failed ({str(exc).strip() or type(exc).__name__}); "
                                       "nothing was written: check free space and permissions in "
                                       f"{parent}, then run again") from None
            # all zones or none, and old outputs (--overwrite) stay until every new one is complete
            trash.mkdir()
            publish(list(zip(done, targets, strict=True)), trash)
        finally:
            for p in done:
                p.unlink(missing_ok=True)
            shutil.rmtree(trash, ignore_errors=True)
    return targets, remote, total


def _is_write_error(exc: Exception) -> bool:
    from rasterio._err import CPLE_BaseError  # GDAL's errors as rasterio raises them
    from rasterio.errors import RasterioError

    return isinstance(exc, OSError | RasterioError | CPLE_BaseError)


def _zone_tiles(rec: dict, zone: dict) -> list[ZoneTile]:
    tiles = [t for t in rec["tiles"] if t["epsg"] == zone["epsg"]]
    grids = [TileGrid(Tile(round(t["lon"] * 100), round(t["lat"] * 100)), t["epsg"], t["corner"][0], t["corner"][1],
                      t["width"], t["height"]) for t in tiles]
    owns = ownerships([g.tile for g in grids], [g.window for g in grids])
    return [
        ZoneTile(t["name"], S3Location.parse(t["grid"]), S3Location.parse(t["scales"]), t["grid_offset"],
                 t["scales_offset"], t["scale_bands"], t["grid_size"], t["scales_size"], g.window, own)
        for t, g, own in zip(tiles, grids, owns, strict=True)
    ]


def _metadata(rec: dict, zone: dict, tiles: list[ZoneTile]) -> dict[str, str]:
    return {
        "TESSERA_DATASET": str(rec["dataset"]),
        "TESSERA_DATASET_VERSION": str(rec["dataset_version"]),
        "TESSERA_VARIANT": str(rec["variant"]),
        "TESSERA_YEAR": str(rec["year"]),
        "TESSVRT_TILES": ",".join(t.name for t in tiles),
        "TESSVRT_MISSING_TILES": ",".join(rec.get("missing", [])),
        "TESSVRT_SOURCE": str(rec["manifest"]),  # build stores it without user-info or query string
        "TESSVRT_VERSION": __version__,
        "TESSVRT_ZONE": f"EPSG:{zone['epsg']}",
    }


def _check_space(parent: Path, windows: list[Window], nb: int, compress: str) -> None:
    """Refuse up front when the temporaries and the outputs cannot fit on disk.

    Per zone: compressed full resolution, uncompressed overview picks (1/3 of float32), and the
    assembled COG (a second copy of the compressed data) until the first is deleted.
    """
    ratio = 1.0 if compress == "none" else 0.75  # measured 0.65 with zstd on embedding-like data
    f32 = [w.width * w.height * nb * 4 for w in windows]
    need = sum(f * 4 / 3 * ratio for f in f32) + max(f / 3 + f * 4 / 3 * ratio for f in f32)
    free = shutil.disk_usage(parent).free
    if need > free:
        raise TessvrtError(f"not enough free disk space in {parent}: materialise needs about {need / 1e9:,.1f} GB "
                           f"(temporaries and output) and {free / 1e9:,.1f} GB are free; free space, choose another "
                           "output folder or fewer --bands")


def chunk_width(width: int, bands: int, blocksize: int, budget: int | None = None) -> int:
    """Columns per chunk: whole blocks, as many as the float32 buffer budget allows (at least one)."""
    budget = MEMORY_BUDGET if budget is None else budget
    blocks = max(1, budget // (bands * blocksize * blocksize * 4))
    return min(blocks * blocksize, -(-width // blocksize) * blocksize)


class _Meter:
    """Counts float32 output bytes done and reports them to a progress callback."""

    def __init__(self, total: int, cb: Callable[[int, int], None] | None):
        self.total, self.done, self.cb = total, 0, cb

    def add(self, n: int) -> None:
        self.done += n
        if self.cb:
            self.cb(self.done, self.total)


def _write_zone(target: Path, win: Window, pixels: PixelSource, bands: list[int], cog: CogProfile,
                meta: dict[str, str], meter: _Meter, workers: int) -> int:
    """One zone's COG from a pixel source (npy tiles or Zarr chunks); returns the remote bytes read."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window as RioWindow

    tmp, done = tmp_path(target), tmp_path(target, ".done.tif")
    main, final = tmp.with_name(tmp.name + ".main.tif"), tmp.with_name(tmp.name + ".tif")
    bs = cog.blocksize
    cw = chunk_width(win.width, len(bands), bs)
    chunks = [(y0, x0) for y0 in range(0, win.height, bs) for x0 in range(0, win.width, cw)]
    factors = cog.factors(win.width, win.height)
    tiled = cog.options()
    profile = {"driver": "GTiff", "width": win.width, "height": win.height, "count": len(bands), "dtype": "float32",
               "crs": f"EPSG:{win.epsg}", "transform": win.transform, "nodata": float("nan"), **tiled}
    ovs = None
    level_files: list[Path] = []
    try:
        with rasterio.Env(GDAL_CACHEMAX=256, GDAL_NUM_THREADS="ALL_CPUS"):
            ovs = Overviews(tmp, win, len(bands), bs, factors)
            # s3.Pool, not concurrent.futures: an interrupt or error leaves without waiting for stalled reads
            with (rasterio.open(main, "w", **profile) as dst,
                  Pool(workers, "tessvrt-fetch") as pool,
                  Pool(os.cpu_count() or 2, "tessvrt-dequant") as cpu):
                for i, b in enumerate(bands):
                    dst.set_band_description(i + 1, f"embedding_{b - 1:03d}")
                dst.update_tags(**meta)
                nxt = pixels.fetch(pool, *chunks[0], bs, cw, None) if chunks else None
                for i, (y0, x0) in enumerate(chunks):
                    cur = nxt
                    if i + 1 < len(chunks):  # fetch the next chunk while this one is dequantised and compressed
                        same_rows = chunks[i + 1][0] == y0
                        nxt = pixels.fetch(pool, *chunks[i + 1], bs, cw, cur if same_rows else None)
                    h, w = min(bs, win.height - y0), min(cw, win.width - x0)
                    block = pixels.chunk(cpu, cur, y0, x0, h, w, bands)
                    dst.write(block, window=RioWindow(x0, y0, w, h))  # whole blocks: compressed once
                    ovs.write(block, y0, x0)
                    meter.add(block.nbytes)
                    del block, cur
                gone = pixels.missing()
                if gone:  # --allow-missing: say in the file which tiles are NaN because their objects were gone
                    dst.update_tags(TESSVRT_MISSING_TILES=",".join(filter(None, [meta["TESSVRT_MISSING_TILES"], *gone])))
            for f, path in zip(factors, ovs.close(), strict=True):
                level_files.append(tmp.with_name(f"{tmp.name}.ov{f}.z.tif"))
                rio_copy(path, level_files[-1], driver="GTiff", **tiled)
                path.unlink()
        assemble(final, read_image(main), [read_image(p) for p in level_files])
        os.replace(final, done)  # published with the other zones by _write_outputs()
    finally:
        if ovs is not None:
            ovs.remove()
        # every temporary of this zone, also those an interrupted Overviews() made before it was assigned
        for p in tmp.parent.glob(glob.escape(tmp.name) + "*"):
            if p != done:
                p.unlink(missing_ok=True)
    return pixels.remote_bytes


class PixelSource(Protocol):
    """Where a zone writer gets pixels: npy tiles (_NpyPixels) or Zarr chunks (zarrstore.ZarrPixels).

    fetch() starts reading output rows [y0, y0+bs) x columns [x0, x0+cw) (clipped to the zone) without
    waiting (prev: the previous chunk's handle in the same block row, for reuse); chunk() waits and
    returns (bands, h, w) float32 with NaN where there is no valid pixel.
    """

    remote_bytes: int

    def fetch(self, pool: Pool, y0: int, x0: int, bs: int, cw: int, prev: Any) -> Any: ...

    def chunk(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int,
              bands: list[int]) -> np.ndarray: ...

    def missing(self) -> list[str]: ...

    def close(self, wait: bool = True) -> None: ...


@dataclass
class _NpyPixels:
    """A zone's pixels from npy tiles: the owner tiles' rows under each chunk (ranged GETs), dequantised."""

    src: _Source
    tiles: list[ZoneTile]
    win: Window
    remote_bytes: int = 0

    def fetch(self, pool: Pool, y0: int, x0: int, bs: int, cw: int,
              prev: list[_TileRows] | None) -> list[_TileRows]:
        return _fetch_chunk(pool, self.src, self.tiles, self.win, y0, x0, bs, cw, {id(tr.tile): tr for tr in prev or []})

    def chunk(self, cpu: Pool, cur: list[_TileRows], y0: int, x0: int, h: int, w: int,
              bands: list[int]) -> np.ndarray:
        block = _chunk(cpu, cur, self.win, y0, x0, h, w, bands)
        self.remote_bytes += sum(tr.nbytes for tr in cur if tr.first_x0 == x0 and tr.emb.result() is not None)
        return block

    def missing(self) -> list[str]:
        return sorted({t.name for t in self.tiles} & self.src.missing)

    def close(self, wait: bool = True) -> None:
        pass


@dataclass
class _TileRows:
    tile: ZoneTile
    r0: int  # first tile row held
    emb: Future  # -> (rows, width, 128) int8
    scales: Future  # -> (rows, width) or (rows, width, 128) float32
    nbytes: int  # bytes requested
    first_x0: int  # the chunk that fetched them (later chunks of the same block row reuse them)


def _fetch_chunk(pool, src: _Source, tiles: list[ZoneTile], win: Window, y0: int, x0: int, bs: int, cw: int,
                 have: dict[int, _TileRows]) -> list[_TileRows]:
    """Ranged GETs (started, not awaited) of the tile rows under output rows [y0, y0+bs) of the
    tiles that own pixels in columns [x0, x0+cw); rows already fetched for this block row are reused."""
    h, w = min(bs, win.height - y0), min(cw, win.width - x0)
    out = []
    for t in tiles:
        tx, ty = win.offset_of(t.window)  # tile's top-left on the output
        r0, r1 = max(y0 - ty, 0), min(y0 + h - ty, t.height)
        c0, c1 = max(x0 - tx, 0), min(x0 + w - tx, t.width)
        if r1 <= r0 or c1 <= c0:
            continue
        own = t.own.cols[r0:r1]
        if not (np.minimum(own[:, 1], c1) > np.maximum(own[:, 0], c0)).any():
            continue
        if id(t) in have:
            out.append(have[id(t)])
            continue
        if t.name in src.missing:  # found gone by the header check (--allow-missing): stays NaN, no request
            continue
        line = t.width * BANDS
        emb = pool.submit(_get, src, t.grid, t.grid_offset + r0 * line, (r1 - r0) * line, t.grid_size, t.name,
                          np.int8, (r1 - r0, t.width, BANDS))
        sline = t.width * 4 * t.scale_bands
        sshape = (r1 - r0, t.width) if t.scale_bands == 1 else (r1 - r0, t.width, BANDS)
        sc = pool.submit(_get, src, t.scales, t.scales_offset + r0 * sline, (r1 - r0) * sline, t.scales_size, t.name,
                         np.dtype("<f4"), sshape)
        out.append(_TileRows(t, r0, emb, sc, (r1 - r0) * (line + sline), x0))
    return out


@dataclass
class _Source:
    """Where tile bytes come from, and which tiles turned out to be gone (with --allow-missing)."""

    ep: Endpoint
    allow_missing: bool = False
    missing: set[str] = field(default_factory=set)


def _check_headers(src: _Source, tiles: list[ZoneTile], workers: int) -> int:
    """Compare every tile object's npy header with the record (one small ranged GET each); bytes read.

    build trusts manifest sizes (no per-tile request), so this is where an object replaced or
    damaged since is refused, before a pixel is written, instead of dequantising the wrong bytes.
    """

    def check(t: ZoneTile, grid: bool) -> int:
        loc, off, size = (t.grid, t.grid_offset, t.grid_size) if grid else (t.scales, t.scales_offset, t.scales_size)
        try:
            head = fetch_range(src.ep, loc, 0, off, size, what=f"tile {t.name}")
            start = npy.data_offset(head)
            if start != off:
                raise ValueError(f"its data starts at byte {start}, not {off}")
            h = npy.parse_header(head)
            if grid and npy.embedding_shape(h, BANDS) != (t.height, t.width):
                raise ValueError(f"its shape is {h.shape}, not ({t.height}, {t.width}, {BANDS})")
            if not grid and npy.scale_bands(h, t.height, t.width, BANDS) != t.scale_bands:
                raise ValueError(f"its shape is {h.shape}, the VRT expects {t.scale_bands} scale band(s)")
        except MissingObject:
            if not src.allow_missing:
                raise
            src.missing.add(t.name)
            return 0
        except ValueError as exc:
            raise TessvrtError(f"tile {t.name}: {loc.uri}: {exc}; the object no longer matches the VRT - "
                               "rebuild it with tessvrt build") from None
        return off

    with Pool(workers, "tessvrt-header") as pool:  # the first error, or an interrupt, ends it without waiting
        return sum(pool.map(lambda a: check(*a), [(t, g) for t in tiles for g in (True, False)]))


def _get(src: _Source, loc: S3Location, start: int, length: int, total: int, tile: str, dtype,
         shape) -> np.ndarray | None:
    """The rows as an array, or None for a gone object when missing tiles are allowed."""
    try:
        body = fetch_range(src.ep, loc, start, length, total, what=f"tile {tile}")
    except MissingObject:
        if not src.allow_missing:
            raise
        src.missing.add(tile)
        return None
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _chunk(cpu, rows: list[_TileRows], win: Window, y0: int, x0: int, h: int, w: int, bands: list[int]) -> np.ndarray:
    """(bands, h, w) float32 of output window [y0, y0+h) x [x0, x0+w): owner tile's value, NaN elsewhere.

    Tiles own disjoint pixels, so each is dequantised into the chunk by its own thread.
    """
    out = np.full((len(bands), h, w), np.nan, np.float32)
    sel = None if bands == list(range(1, BANDS + 1)) else np.asarray(bands) - 1
    list(cpu.map(lambda tr: _dequantise_into(out, tr, win, y0, x0, sel), rows))
    return out


def _dequantise_into(out: np.ndarray, tr: _TileRows, win: Window, y0: int, x0: int, sel: np.ndarray | None) -> None:
    """Write the pixels this tile owns into `out` (whose top-left is output pixel (x0, y0)).

    Row by row: transposing a (width, 128) int8 row to (128, width) stays in cache, where
    transposing the whole (rows, width, 128) block at once was 4x slower (measured).
    """
    t = tr.tile
    emb, sc = tr.emb.result(), tr.scales.result()
    if emb is None or sc is None:  # a gone object, allowed: its pixels stay NaN
        return
    tx, ty = win.offset_of(t.window)
    _, h, w = out.shape
    r_lo, r_hi = max(y0 - ty, tr.r0), min(y0 + h - ty, tr.r0 + emb.shape[0])  # tile rows in this chunk
    c0, c1 = max(x0 - tx, 0), min(x0 + w - tx, t.width)  # tile columns in this chunk
    if r_hi <= r_lo or c1 <= c0:
        return
    owned = t.own.mask(slice(r_lo, r_hi), slice(c0, c1))
    full = owned.all(axis=1)
    ox = tx + c0 - x0  # chunk column of tile column c0
    for r in np.flatnonzero(owned.any(axis=1)):
        e = emb[r_lo - tr.r0 + r, c0:c1]  # (w, 128) int8
        s = sc[r_lo - tr.r0 + r, c0:c1]  # (w,) or (w, 128)
        if sel is not None:
            e = e[:, sel]
            s = s[:, sel] if s.ndim == 2 else s
        s = np.where(scales.valid(s), s, np.float32(np.nan))
        np.multiply(e.T, s.T, out=out[:, ty + r_lo + r - y0, ox:ox + c1 - c0], where=True if full[r] else owned[r])


def progress_printer(stream=None, interval: float = 5.0) -> Callable[[int, int], None]:
    """A progress callback: a redrawn bar on a terminal, a plain line every `interval` s otherwise."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    start = time.perf_counter()
    last = [0.0 if tty else start]  # plain lines: the first after `interval`, so short runs stay quiet

    def cb(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] < (0.2 if tty else interval):
            return
        last[0] = now
        el = max(now - start, 1e-9)
        rate = done / el
        eta = (total - done) / rate if rate > 0 else float("inf")
        frac = done / total if total else 1.0
        text = (f"{frac:6.1%} {done / 1e6:,.0f}/{total / 1e6:,.0f} MB float32  {rate / 1e6:6.1f} MB/s  "
                f"ETA {eta:5.0f} s")
        if tty:
            bar = "#" * int(30 * frac)
            stream.write(f"\r[{bar:<30}] {text}")
            if done >= total:
                stream.write("\n")
        else:
            stream.write(text + "\n")
        stream.flush()

    return cb


__all__ = ["materialise", "MaterialiseResult", "parse_bands", "output_paths", "progress_printer"]

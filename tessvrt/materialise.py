"""tessvrt materialise: dequantised float32 Cloud-Optimized GeoTIFFs, one per UTM zone.

Pixels never pass through GDAL's VRT pixel functions (slow, SPEC.md). The build record
(sidecar tessvrt.json) says which tiles, byte offsets and zone windows a VRT stands for;
this module fetches the tile rows each output strip needs with ranged GETs in parallel,
dequantises in numpy with the same pixel rule as the VRT (owner tile, nearest source
pixel, NaN for invalid scales), and streams strips into an uncompressed stage GeoTIFF; GDAL
then adds overviews and writes the COG layout, compressing every pixel once. Memory is
bounded by the strip, whose height shrinks as the region widens (MEMORY_BUDGET).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import TessvrtError
from .grid import Ownership, Tile, TileGrid, Window, ownerships
from .info import read_record
from .profiles import COMPRESSIONS, cog_options, overview_factors
from .s3 import DEFAULT_REGION, Endpoint, S3Location, fetch_range
from .stage import Stage, strip_height
from .vrt import BANDS

TMP_MARK = ".tessvrt-tmp"
# bytes the strip buffers (float32 output + raw rows of this strip and the prefetched next) may use
MEMORY_BUDGET = 512 * 2**20


@dataclass(frozen=True)
class ZoneTile:
    """One tile as materialise reads it: where its bytes are, where it lands, what it owns."""

    name: str
    grid: S3Location
    scales: S3Location
    grid_offset: int
    scales_offset: int
    scale_bands: int
    width: int
    height: int
    grid_size: int
    scales_size: int
    window: Window  # its pixels on the zone grid
    own: Ownership  # the pixels of that window it owns


@dataclass
class MaterialiseResult:
    files: list[Path]
    bytes_written: int
    seconds: float
    remote_bytes: int
    tiles: list[str] = field(default_factory=list)
    output_float32_bytes: int = 0

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
        lo = int(m.group(1))
        out.extend(range(lo, int(m.group(2) or lo) + 1))
    bad = [b for b in out if not 1 <= b <= BANDS]
    if bad:
        raise TessvrtError(f"--bands {text!r}: band {bad[0]} is out of range; bands are 1 to {BANDS}")
    return out


def output_paths(output: Path, labels: list[str]) -> list[Path]:
    """out.tif for one zone; out_utm30n.tif, out_utm31n.tif, ... for several."""
    if len(labels) == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{label}{output.suffix}") for label in labels]


def materialise(
    vrt_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    bands: list[int] | str | None = None,
    compress: str = "zstd",
    level: int | None = None,
    blocksize: int = 512,
    overviews: bool = True,
    overwrite: bool = False,
    endpoint: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 8,
) -> MaterialiseResult:
    """Write the VRT's embeddings as float32 COGs, one per UTM zone; returns what was written."""
    t0 = time.perf_counter()
    rec = read_record(vrt_path)
    band_list = bands if isinstance(bands, list) else parse_bands(bands)
    if compress not in COMPRESSIONS:
        raise TessvrtError(f"--compress {compress!r} is not one of {', '.join(COMPRESSIONS)}")
    if blocksize % 16 or not 64 <= blocksize <= 4096:
        raise TessvrtError(f"--blocksize {blocksize} must be a multiple of 16 between 64 and 4096")
    out = Path(output)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise TessvrtError(f"output {out} must end in .tif")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise TessvrtError(f"output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise TessvrtError(f"output folder {parent} is not writable; choose another output path")
    zones = rec["zones"]
    targets = output_paths(out, [z["label"] for z in zones])
    if not overwrite:
        exists = [p for p in targets if p.exists()]
        if exists:
            raise TessvrtError(f"{exists[0]} exists; pass --overwrite to replace it")
    _clean_stale(parent, targets)
    _check_space(parent, zones, len(band_list), compress)
    ep = Endpoint(rec["endpoint"], rec.get("region") or DEFAULT_REGION) if endpoint is None else Endpoint.parse(endpoint)

    plans = [(z, _zone_tiles(rec, z)) for z in zones]
    total = sum(z["window"]["width"] * z["window"]["height"] for z, _ in plans) * len(band_list) * 4
    meter = _Meter(total, progress)
    written: list[Path] = []
    remote = 0
    try:
        for (z, tiles), target in zip(plans, targets, strict=True):
            win = Window(**z["window"])
            meta = _metadata(rec, z, tiles)
            remote += _write_zone(target, win, tiles, band_list, ep, compress, level, blocksize, overviews, meta, meter,
                                  workers)
            written.append(target)
    except BaseException:
        for p in written:  # all zones or none: a half set of outputs is not a result
            p.unlink(missing_ok=True)
        raise
    size = sum(p.stat().st_size for p in written)
    return MaterialiseResult(written, size, time.perf_counter() - t0, remote, [t["name"] for t in rec["tiles"]],
                             output_float32_bytes=total)


def _zone_tiles(rec: dict, zone: dict) -> list[ZoneTile]:
    tiles = [t for t in rec["tiles"] if t["epsg"] == zone["epsg"]]
    grids = [TileGrid(Tile(round(t["lon"] * 100), round(t["lat"] * 100)), t["epsg"], t["origin"][0], t["origin"][1],
                      t["width"], t["height"]) for t in tiles]
    owns = ownerships([g.tile for g in grids], [g.window for g in grids])
    return [
        ZoneTile(t["name"], S3Location.parse(t["grid"]), S3Location.parse(t["scales"]), t["grid_offset"],
                 t["scales_offset"], t["scale_bands"], t["width"], t["height"], t["grid_size"], t["scales_size"],
                 g.window, own)
        for t, g, own in zip(tiles, grids, owns, strict=True)
    ]


def _metadata(rec: dict, zone: dict, tiles: list[ZoneTile]) -> dict[str, str]:
    return {
        "TESSERA_DATASET_VERSION": str(rec["dataset_version"]),
        "TESSERA_VARIANT": str(rec["variant"]),
        "TESSERA_YEAR": str(rec["year"]),
        "TESSVRT_TILES": ",".join(t.name for t in tiles),
        "TESSVRT_MISSING_TILES": ",".join(rec.get("missing", [])),
        "TESSVRT_SOURCE": str(rec["manifest"]),
        "TESSVRT_VERSION": __version__,
        "TESSVRT_ZONE": f"EPSG:{zone['epsg']}",
    }


def _clean_stale(parent: Path, targets: list[Path]) -> None:
    """Remove temporaries an interrupted run left beside these targets (the run restarts cleanly).

    A temporary names its writer's pid; one whose process still runs is another live run's.
    """
    for t in targets:
        for p in parent.glob(f".{t.name}.*{TMP_MARK}*"):
            m = re.match(re.escape(f".{t.name}.") + r"(\d+)\.", p.name)
            if m and _alive(int(m.group(1))):
                continue
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_space(parent: Path, zones: list[dict], nb: int, compress: str) -> None:
    """Refuse up front when the stage (float32 + overviews) and the outputs cannot fit on disk."""
    f32 = [z["window"]["width"] * z["window"]["height"] * nb * 4 * 4 / 3 for z in zones]
    need = max(f32) + sum(f32) * (1.0 if compress == "none" else 0.75)
    free = shutil.disk_usage(parent).free
    if need > free:
        raise TessvrtError(f"not enough free disk space in {parent}: materialise needs about {need / 1e9:,.1f} GB "
                           f"(stage and output) and {free / 1e9:,.1f} GB are free; free space, choose another "
                           "output folder or fewer --bands")


def strip_rows(width: int, bands: int, scale_bands: int, blocksize: int, budget: int | None = None) -> int:
    """Output rows per strip so that the strip buffers stay within `budget` (MEMORY_BUDGET) bytes."""
    budget = MEMORY_BUDGET if budget is None else budget
    per_row = width * (bands * 4 + 2.2 * (BANDS + 4 * scale_bands))  # output + raw rows of 2 strips
    return int(max(8, min(blocksize, budget // per_row)))


class _Meter:
    """Counts float32 output bytes done and reports them to a progress callback."""

    def __init__(self, total: int, cb: Callable[[int, int], None] | None):
        self.total, self.done, self.cb = total, 0, cb

    def add(self, n: int) -> None:
        self.done += n
        if self.cb:
            self.cb(self.done, self.total)


def _write_zone(target: Path, win: Window, tiles: list[ZoneTile], bands: list[int], ep: Endpoint, compress: str,
                level: int | None, bs: int, overviews: bool, meta: dict[str, str], meter: _Meter, workers: int) -> int:
    import rasterio
    from rasterio.shutil import copy as rio_copy

    final = target.with_name(f".{target.name}.{os.getpid()}{TMP_MARK}.tif")
    rows = strip_height(strip_rows(win.width, len(bands), max((t.scale_bands for t in tiles), default=1), bs))
    factors = overview_factors(win.width, win.height, bs) if overviews else []
    names = [f"embedding_{b - 1:03d}" for b in bands]
    fetched = 0
    with rasterio.Env(GDAL_CACHEMAX=512, GDAL_NUM_THREADS="ALL_CPUS"):  # 512 MB: COG pass 12.7 s, not 16.4 s
        stage = Stage(target.with_name(f".{target.name}.{os.getpid()}.stage{TMP_MARK}"), win, names, meta, rows, factors)
        try:
            with (ThreadPoolExecutor(workers, thread_name_prefix="tessvrt-fetch") as pool,
                  ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="tessvrt-dequant") as cpu,
                  ThreadPoolExecutor(1, thread_name_prefix="tessvrt-stage") as writer):
                strips = list(range(0, win.height, rows))
                nxt = _fetch_strip(pool, ep, tiles, win, strips[0], rows) if strips else []
                written: Future | None = None
                for i, y0 in enumerate(strips):
                    cur = nxt
                    if i + 1 < len(strips):  # fetch the next strip while this one is dequantised
                        nxt = _fetch_strip(pool, ep, tiles, win, strips[i + 1], rows)
                    block, nbytes = _strip(cpu, cur, win, y0, min(rows, win.height - y0), bands)
                    fetched += nbytes
                    if written is not None:
                        written.result()  # at most one strip waits for the disk
                    written = writer.submit(stage.write, block, y0)  # GDAL writes without the GIL
                    meter.add(block.nbytes)
                    del block, cur
                if written is not None:
                    written.result()
            rio_copy(stage.close(), final, driver="GTiff", **cog_options(compress, level, bs))
            os.replace(final, target)
        finally:
            stage.remove()
            final.unlink(missing_ok=True)
    return fetched


@dataclass
class _TileRows:
    tile: ZoneTile
    r0: int  # first tile row held
    emb: Future  # -> (rows, width, 128) int8
    scales: Future  # -> (rows, width) or (rows, width, 128) float32


def _fetch_strip(pool, ep: Endpoint, tiles: list[ZoneTile], win: Window, y0: int, rows: int) -> list[_TileRows]:
    """Start ranged GETs of every tile's rows that fall in output rows [y0, y0 + rows)."""
    h = min(rows, win.height - y0)
    out = []
    for t in tiles:
        tx, ty = win.offset_of(t.window)  # tile's top-left on the output
        r0, r1 = max(y0 - ty, 0), min(y0 + h - ty, t.height)
        if r1 <= r0 or tx >= win.width or tx + t.width <= 0:
            continue
        own = t.own.cols[r0:r1]
        if not (own[:, 1] > own[:, 0]).any():
            continue
        line = t.width * BANDS
        emb = pool.submit(_get, ep, t.grid, t.grid_offset + r0 * line, (r1 - r0) * line, t.grid_size, t.name,
                          np.int8, (r1 - r0, t.width, BANDS))
        sline = t.width * 4 * t.scale_bands
        sshape = (r1 - r0, t.width) if t.scale_bands == 1 else (r1 - r0, t.width, BANDS)
        sc = pool.submit(_get, ep, t.scales, t.scales_offset + r0 * sline, (r1 - r0) * sline, t.scales_size, t.name,
                         np.dtype("<f4"), sshape)
        out.append(_TileRows(t, r0, emb, sc))
    return out


def _get(ep: Endpoint, loc: S3Location, start: int, length: int, total: int, tile: str, dtype, shape) -> np.ndarray:
    body = fetch_range(ep, loc, start, length, total, what=f"tile {tile}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _strip(cpu, rows: list[_TileRows], win: Window, y0: int, h: int, bands: list[int]) -> tuple[np.ndarray, int]:
    """(bands, h, width) float32 of output rows [y0, y0+h): owner tile's value, NaN elsewhere.

    Tiles own disjoint pixels, so each is dequantised into the strip by its own thread.
    """
    out = np.full((len(bands), h, win.width), np.nan, np.float32)
    sel = None if bands == list(range(1, BANDS + 1)) else np.asarray(bands) - 1
    return out, sum(cpu.map(lambda tr: _dequantise_into(out, tr, win, y0, sel), rows))


def _dequantise_into(out: np.ndarray, tr: _TileRows, win: Window, y0: int, sel: np.ndarray | None) -> int:
    """Write the pixels this tile owns into `out`; returns the bytes fetched for it.

    Row by row: transposing a (width, 128) int8 row to (128, width) stays in cache, where
    transposing the whole (rows, width, 128) block at once was 4x slower (measured).
    """
    t = tr.tile
    emb, sc = tr.emb.result(), tr.scales.result()
    tx, ty = win.offset_of(t.window)
    n = emb.shape[0]
    oy = ty + tr.r0 - y0  # output row of the first fetched tile row
    x0, x1 = max(tx, 0), min(tx + t.width, win.width)  # output columns this tile covers
    c0, c1 = x0 - tx, x1 - tx
    owned = t.own.mask(slice(tr.r0, tr.r0 + n), slice(c0, c1))
    full = owned.all(axis=1)
    for r in np.flatnonzero(owned.any(axis=1)):
        e = emb[r, c0:c1]  # (w, 128) int8
        s = sc[r, c0:c1]  # (w,) or (w, 128)
        if sel is not None:
            e = e[:, sel]
            s = s[:, sel] if s.ndim == 2 else s
        s = np.where(np.isfinite(s) & (s > 0) & (s < 1e6), s, np.float32(np.nan))
        np.multiply(e.T, s.T, out=out[:, oy + r, x0:x1], where=True if full[r] else owned[r])
    return emb.nbytes + sc.nbytes


def progress_printer(stream=None, interval: float = 5.0) -> Callable[[int, int], None]:
    """A progress callback: a redrawn bar on a terminal, a plain line every `interval` s otherwise."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    start = time.perf_counter()
    last = [0.0]

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

"""tessvrt preview: 8-bit RGB COGs of the first three principal components, one per UTM zone part.

A false-colour picture only means something when every part of it is coloured by the same rule:
one PCA is fitted for the whole region, from a deterministic lattice of pixels across all zones
(docs/preview.md states the rule so anyone can redraw the sample), with a fixed sign per
component and a 2-98 percentile stretch from that same sample. The lattice is read first, sparsely
(npy: a cell row's 4 consecutive sampled rows of each tile in one ranged GET per object; Zarr: the 32x32
inner chunks under each sampled block), while the first chunk of the stream is already being fetched;
then the region streams once through materialise's zone writer, coloured chunk by chunk from the stored
int8 values: the same pixel sources, bounded memory, all-or-none outputs, interrupts and deadlines.
BLAS runs on one thread meanwhile (threadpoolctl): the colouring pool is the parallelism.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cog.profiles import RgbProfile
from .errors import TessvrtError
from .grid import Window
from .pixels import NpySpec, PixelSource, ZoneJob
from .pixels.base import BANDS, Quantised
from .source.s3 import Pool

BLOCK = 32  # a sampled block: one Zarr inner chunk's size
# the lattice in a sampled block: 4 consecutive rows (an npy tile's are one ranged GET and cost 4 tile rows) by
# every 2nd column (free: an npy read holds whole rows). 8 rows x 8 columns (every 4th) read twice the bytes for
# the same fit (scripts/bench_preview_sample.py: docs/performance.md)
ROWS = range(2, 6)
STEP = 2  # columns 0, 2, ..., 30 of the block
SAMPLE_TARGET = 32_768  # lattice points at most (16 MB of float32 embeddings): the cell doubles until it fits
COMPONENTS = 3
STRETCH = (2.0, 98.0)  # percentiles of each component's sample scores mapped to 1 and 255
MIN_SAMPLE = 16  # valid sample pixels a fit needs
_SLICE = 16_384  # pixels coloured at once (a float64 copy of 16 MB; int8 path: 8 MB of float32)
FIXED = 30  # components as integers of 2**-30: an int8 pixel's dot product with them is exact (docs/preview.md)
# pixels per matrix product: 3,840 int8 pixels as float32 (1.9 MB) stay in cache between the conversion and the
# product (16,384 fresh each time: 1.6x slower per chunk, measured). BLAS runs on one thread (preview() limits it):
# OpenBLAS's own threads on top of the colouring pool's spin against each other and the machine's other processes
_PIXELS = 3840
# DEFLATE level of the RGB COGs: on the bench region's 15 MB of colours level 6 took 0.44 s of CPU for 3.08 MB,
# level 5 0.14 s for 3.28 MB (+6.5%), level 1 0.075 s for 3.81 MB (scripts/bench_preview.py, docs/performance.md)
_DEFLATE_LEVEL = 5
# the float32 bands write_cog's chunk budget counts per pixel: preview holds the fetched int8 rows (128 bytes a pixel)
# of the chunk it colours and of the next, 256 bytes = 64 float32 bands; 128 (float32 of all bands, what preview made
# before pieces) halved the chunks' width (the bench region: 2 chunks per block row instead of 1, ~0.2 s slower)
_CHUNK_BANDS = 64
_DIGIT = 10  # those integers cut into three signed 10-bit digits: float32 products summed stay below 2**24
_IN_FLIGHT = 64  # sample reads started ahead of the one being used, at most ...
_IN_FLIGHT_PIXELS = 1 << 19  # ... and at most this many pixels of them (132 bytes each: 69 MB)
# the sample's fetch threads: its small GETs wait on latency, not bandwidth; 16 = the S3 client's connection pool
# (source/s3.py: more threads open and discard connections)
_SAMPLE_THREADS = 16

@dataclass
class PreviewResult:
    files: list[Path]
    png: Path | None
    bytes_written: int
    seconds: float
    remote_bytes: int
    sample_pixels: int  # valid pixels the PCA was fitted on
    sample_bytes: int  # remote bytes the sample read (part of remote_bytes)
    cell: int  # the lattice cell size of the region (docs/preview.md)
    pca: Pca
    tiles: list[str]


@dataclass(frozen=True)
class Pca:
    """The region's colour rule: mean and components (float64) and each component's stretch."""

    mean: np.ndarray  # (128,)
    components: np.ndarray  # (3, 128): each one's largest-|loading| entry is positive
    lo: np.ndarray  # (3,) scores mapped to 1
    hi: np.ndarray  # (3,) scores mapped to 255
    explained: np.ndarray  # (3,) fraction of the sample's variance

    def colour(self, block: np.ndarray, cpu: Pool | None = None) -> np.ndarray:
        """(3, h, w) uint8 of a (128, h, w) float32 block: 1-255 where every band is finite, 0 elsewhere.

        value = clip(rint(1 + 254 * (score - lo) / (hi - lo)), 1, 255), score = components @ x - components @ mean,
        in float64 (an independent numpy computation gives the same bytes: rounding differs by ~1e-13 of a level).
        """
        _, h, w = block.shape
        flat = block.reshape(BANDS, h * w)
        out = np.zeros((COMPONENTS, h * w), np.uint8)
        span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)[:, None]
        offset = (self.components @ self.mean)[:, None]

        def part(a: int) -> None:
            # one float64 copy and one product: a NaN in any band makes every score NaN (no data)
            s = self.components @ flat[:, a:a + _SLICE].astype(np.float64) - offset
            ok = np.isfinite(s).all(axis=0)
            v = np.clip(np.rint(1.0 + 254.0 * (np.where(ok, s, self.lo[:, None]) - self.lo[:, None]) / span), 1, 255)
            out[:, a:a + _SLICE] = np.where(ok, v, 0)

        starts = range(0, h * w, _SLICE)
        if cpu is None:
            for a in starts:
                part(a)
        else:
            list(cpu.map(part, starts))
        return out.reshape(COMPONENTS, h, w)

    def colour_quantised(self, pieces: list[Quantised], h: int, w: int, cpu: Pool | None = None) -> np.ndarray:
        """(3, h, w) uint8 of a chunk's stored values (its pieces): the same rule as colour() but from int8 values
        and the pixel's one scale, exactly (docs/preview.md): no 128-band float array is made.

        t_k = sum_b q_b * rint(components_kb * 2**30) is an integer below 2**44, computed as float32 matrix
        products of the int8 values with three 10-bit digits of those integers: every partial sum is an
        integer below 2**24, so BLAS's order (threads, SIMD) cannot change a bit. score_k = s * t_k * 2**-30
        - components_k . mean in float64. Pixels of per-band-scale tiles (per_band) take colour()'s rule.
        Pixels go through in slices of _PIXELS, converted to float32 into a buffer that stays in cache; each
        piece writes only its valid pixels (pieces' boxes overlap, their valid pixels do not).
        """
        out = np.zeros((COMPONENTS, h, w), np.uint8)
        digits = self._digits()
        # t_k * 2**-30 from the 9 digit products in one float64 product: every term is an integer times a power
        # of two and their sum stays below 2**53, so it is exact; s * (t * 2**-30) == (s * t) * 2**-30 bit for bit
        place = np.zeros((COMPONENTS, 3 * COMPONENTS))
        for d in range(3):
            place[np.arange(COMPONENTS), d * COMPONENTS + np.arange(COMPONENTS)] = 2.0 ** (_DIGIT * (2 - d) - FIXED)
        lo, span = self.lo, np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        offset = self.components @ self.mean
        parts = []
        for p in pieces:
            ph, pw = p.s.shape
            cols = min(pw, _PIXELS)
            rows = max(1, _PIXELS // max(cols, 1))
            parts += [(p, r, min(r + rows, ph), c, min(c + cols, pw)) for r in range(0, ph, rows) for c in range(0, pw, cols)]
        per_worker = max(1, -(-len(parts) // (4 * (os.cpu_count() or 2))))  # a few tasks per core, one buffer each

        def work(k: int) -> None:
            """Products slice by slice (in cache), then the rest of the rule once over the task's pixels: few numpy
            calls, each on many pixels (small ones cost more in the interpreter and GIL than in arithmetic)."""
            mine = parts[k:k + per_worker]
            total = sum((r1 - r0) * (c1 - c0) for _, r0, r1, c0, c1 in mine)
            x = np.empty((_PIXELS, BANDS), np.float32)
            prod = np.empty((total, 3 * COMPONENTS), np.float32)
            s = np.empty(total, np.float32)
            done = []
            a = 0
            for p, r0, r1, c0, c1 in mine:
                ps = p.s[r0:r1, c0:c1]
                if not np.isfinite(ps).any():
                    continue
                n = ps.size
                np.copyto(x[:n].reshape(r1 - r0, c1 - c0, BANDS), p.q[r0:r1, c0:c1], casting="unsafe")
                np.matmul(x[:n], digits, out=prod[a:a + n])  # 3 digits x 3 components, exact integers
                s[a:a + n].reshape(r1 - r0, c1 - c0)[...] = ps
                done.append((p, r0, r1, c0, c1, a, n))
                a += n
            if not done:
                return
            ok = np.isfinite(s[:a])
            v = s[:a, None].astype(np.float64) * (prod[:a].astype(np.float64) @ place.T)  # (a, 3): s * t * 2**-30
            # in place, in the rule's order: 1 + 254 * (score - lo) / span; pixels not ok are NaN and never written
            v -= offset
            v -= lo
            v *= 254.0
            v /= span
            v += 1.0
            np.rint(v, out=v)
            np.clip(v, 1, 255, out=v)
            with np.errstate(invalid="ignore"):  # NaN (not ok) to uint8: any value, masked below
                v = v.astype(np.uint8).T
            for p, r0, r1, c0, c1, a, n in done:
                np.copyto(out[:, p.y + r0:p.y + r1, p.x + c0:p.x + c1], v[:, a:a + n].reshape(COMPONENTS, r1 - r0, c1 - c0),
                          where=ok[a:a + n].reshape(r1 - r0, c1 - c0))

        starts = range(0, len(parts), per_worker)
        if cpu is None:
            for k in starts:
                work(k)
        else:
            list(cpu.map(work, starts))
        for p in pieces:
            if p.per_band is not None:
                own = np.isfinite(p.per_band).all(axis=0)
                if own.any():
                    ph, pw = p.s.shape
                    out[:, p.y:p.y + ph, p.x:p.x + pw][:, own] = self.colour(p.per_band[:, own][:, None, :])[:, 0]
        return out

    def _digits(self) -> np.ndarray:
        """(128, 9) float32: column 3d + k is the d-th signed 10-bit digit (most significant first) of
        rint(components_k * 2**30)."""
        rest = np.rint(self.components * 2.0 ** FIXED)
        cols = []
        for d in (2, 1, 0):
            unit = 2.0 ** (_DIGIT * d)
            digit = np.rint(rest / unit)
            rest = rest - digit * unit
            cols.append(digit)
        return np.concatenate(cols).T.astype(np.float32)

    def tags(self) -> dict[str, str]:
        """GeoTIFF tags that let anyone redo the colours (and tests check the fit)."""
        return {"TESSVRT_PCA": json.dumps({
            "mean": self.mean.tolist(), "components": self.components.tolist(), "lo": self.lo.tolist(),
            "hi": self.hi.tolist(), "explained": self.explained.tolist(), "stretch": list(STRETCH)})}


def fit(sample: np.ndarray) -> Pca:
    """The PCA of (n, 128) valid sample pixels: principal axes of the centred sample, signs fixed, percentile stretch."""
    x = sample.astype(np.float64)
    if len(x) < MIN_SAMPLE:
        raise TessvrtError(f"the region has {len(x)} valid pixels on the sample lattice, a preview needs at least "
                           f"{MIN_SAMPLE}: choose a larger region or one with land (water and missing tiles are "
                           "no data)")
    mean = x.mean(axis=0)
    centred = x - mean
    # the right singular vectors of the centred sample, as eigenvectors of its 128 x 128 scatter matrix:
    # numpy's SVD of the tall sample itself took 5-10 s on a loaded 2-core machine (threaded BLAS), this 0.03 s
    # (with BLAS on one thread, as preview() runs it: eigh alone took 0.23 s on two threads under load, 0.0013 s on one)
    var, vec = np.linalg.eigh(centred.T @ centred)
    var, comp = var[::-1], vec[:, ::-1].T[:COMPONENTS].copy()  # largest first
    sign = np.sign(comp[np.arange(COMPONENTS), np.abs(comp).argmax(axis=1)])
    comp = comp * sign[:, None]
    scores = comp @ centred.T  # (3, n)
    lo, hi = np.percentile(scores, STRETCH, axis=1)
    var = np.maximum(var, 0.0)
    return Pca(mean, comp, lo, hi, var[:COMPONENTS] / max(var.sum(), 1e-300))


def cell_size(windows: list[Window]) -> int:
    """The lattice cell: BLOCK, doubled until the region's lattice has at most SAMPLE_TARGET points."""
    cell = BLOCK
    per_cell = len(ROWS) * (BLOCK // STEP)
    while sum(-(-w.height // cell) * -(-w.width // cell) for w in windows) * per_cell > SAMPLE_TARGET:
        cell *= 2
    return cell


def lattice(n: int, cell: int, rows: bool = False) -> np.ndarray:
    """Sampled offsets along an axis of n pixels. Columns: o with o % cell < BLOCK and o % cell % STEP == 0;
    rows: o with o % cell in ROWS."""
    o = np.arange(n)
    if rows:
        return o[(o % cell >= ROWS.start) & (o % cell < ROWS.stop)]
    return o[(o % cell < BLOCK) & (o % cell % STEP == 0)]


def _reads(spec: Any, win: Window, cell: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) windows that hold a zone's lattice, cheapest for the format.

    npy: a cell's sampled rows across the zone (one ranged GET per tile and object: the rows are consecutive).
    Zarr: the sampled part of each cell's first block (its inner chunks only; whole rows would read every
    chunk along them).
    """
    bands = [(y0 + ROWS.start, min(len(ROWS), win.height - y0 - ROWS.start))
             for y0 in range(0, win.height, cell) if y0 + ROWS.start < win.height]
    if not bands or not len(lattice(win.width, cell)):
        return []
    if isinstance(spec, NpySpec):
        span = 8192  # columns per read: 4 rows of 128 int8 bands and their scales stay ~4 MB
        return [(y, x0, h, min(span, win.width - x0)) for y, h in bands for x0 in range(0, win.width, span)]
    last = BLOCK - STEP  # the block's last sampled column (the first is its first)
    return [(y, x0, h, min(last + 1, win.width - x0)) for y, h in bands for x0 in range(0, win.width, cell)]


def _pixels(pieces: list[Quantised], ry: np.ndarray, cx: np.ndarray) -> np.ndarray:
    """(len(ry) * len(cx), 128) float32 values of a read's pixels at rows ry x columns cx, row-major: q * s as
    materialise dequantises them, per-band-scale tiles' dequantised values, NaN where no piece has the pixel."""
    px = np.full((len(ry), len(cx), BANDS), np.nan, np.float32)
    for p in pieces:
        ph, pw = p.s.shape
        i, j = np.flatnonzero((ry >= p.y) & (ry < p.y + ph)), np.flatnonzero((cx >= p.x) & (cx < p.x + pw))
        if not len(i) or not len(j):
            continue
        r, c = ry[i][:, None] - p.y, cx[j][None, :] - p.x
        s = p.s[r, c]
        if p.per_band is not None:
            v, ok = np.moveaxis(p.per_band[:, r, c], 0, -1), ~np.isnan(p.per_band[:, r, c]).all(axis=0)
        else:
            v, ok = np.multiply(p.q[r, c], s[..., None]), np.isfinite(s)
        sub = px[i[:, None], j[None, :]]
        sub[ok] = v[ok]
        px[i[:, None], j[None, :]] = sub
    return px.reshape(-1, BANDS)


def draw_sample(jobs: list[ZoneJob], sources: list[PixelSource], threads: int) -> tuple[np.ndarray, int]:
    """(n, 128) float32 valid pixels of the region's lattice (zone by zone, row-major), and the cell size.

    Reads the stored int8 values (quantised()) and dequantises only the lattice's pixels of them.
    """
    cell = cell_size([j.window for j in jobs])
    parts, keys = [], []
    with Pool(max(threads, _SAMPLE_THREADS), "tessvrt-fetch") as pool, Pool(os.cpu_count() or 2, "tessvrt-dequant") as cpu:
        for z, (job, src) in enumerate(zip(jobs, sources, strict=True)):
            rows, cols = lattice(job.window.height, cell, rows=True), lattice(job.window.width, cell)
            reads = _reads(job.spec, job.window, cell)
            if not reads:
                continue
            ahead = max(1, min(_IN_FLIGHT, _IN_FLIGHT_PIXELS // (reads[0][2] * reads[0][3])))
            pending = [src.fetch(pool, y0, x0, h, w, None) for (y0, x0, h, w) in reads[:ahead]]
            for i, (y0, x0, h, w) in enumerate(reads):
                if i + ahead < len(reads):
                    pending.append(src.fetch(pool, *reads[i + ahead], None))
                pieces = src.quantised(cpu, pending[i], y0, x0, h, w)
                pending[i] = None
                ry = rows[(rows >= y0) & (rows < y0 + h)]
                cx = cols[(cols >= x0) & (cols < x0 + w)]
                parts.append(_pixels(pieces, ry - y0, cx - x0))
                yy, xx = np.meshgrid(ry, cx, indexing="ij")
                keys.append(np.stack([np.full(yy.size, z), yy.ravel(), xx.ravel()]))
    if not parts:
        return np.zeros((0, BANDS), np.float32), cell
    px, key = np.concatenate(parts), np.concatenate(keys, axis=1)
    order = np.lexsort((key[2], key[1], key[0]))  # zone, row, column
    px = px[order]
    return px[np.isfinite(px).all(axis=1)], cell


@dataclass
class Coloured:
    """A pixel source's chunks as PCA colours: reads all 128 bands, returns the components asked for.

    early: ((y0, x0, bs, cw), handle) of a fetch started before the fit (the first chunk, read while the
    sample is drawn): the zone writer's first fetch of that chunk takes it instead of reading it again."""

    inner: PixelSource
    pca: Pca
    early: tuple[tuple[int, int, int, int], Any] | None = None

    def check(self, threads: int) -> int:
        return self.inner.check(threads)

    def fetch(self, pool: Pool, y0: int, x0: int, bs: int, cw: int, prev: Any) -> Any:
        early, self.early = self.early, None
        if early is not None and early[0] == (y0, x0, bs, cw) and prev is None:
            return early[1]
        return self.inner.fetch(pool, y0, x0, bs, cw, prev)

    def chunk(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int, bands: list[int]) -> np.ndarray:
        rgb = self.pca.colour_quantised(self.inner.quantised(cpu, pending, y0, x0, h, w), h, w, cpu)
        return rgb[np.asarray(bands) - 1]

    def stats(self) -> Any:
        return self.inner.stats()

    def close(self, wait: bool = True) -> None:
        self.inner.close(wait)


def preview(
    vrt_path: str | os.PathLike | None,
    output: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    bbox: str | tuple[float, float, float, float] | None = None,
    year: int | None = None,
    source: str | None = None,
    png: str | os.PathLike | None = None,
    blocksize: int = 512,
    overwrite: bool = False,
    endpoint: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads: int = 8,
    allow_missing: bool = False,
    region: str | os.PathLike | None = None,
    country: str | None = None,
    clip: bool = False,
) -> PreviewResult:
    """Write 3-band 8-bit RGB COGs (the first three principal components; 0 = no data), one per UTM zone.

    Sources as materialise: a VRT of tessvrt build and an output, or an output with dataset, bbox and year
    (a region of the dataset's Zarr store; region/country instead of bbox, clip as materialise). png: also a
    quicklook picture of the whole region (all zones). Pixels outside the region (clip) are no data: the PCA
    sample never sees them.
    """
    from threadpoolctl import threadpool_limits

    from .cog.write import chunk_width
    from .collection import is_collection
    from .materialise import _write_outputs, plan

    t0 = time.perf_counter()
    cog = RgbProfile(blocksize=blocksize, level=_DEFLATE_LEVEL)
    out, jobs, tiles = plan(vrt_path, output, dataset, bbox, year, source, endpoint, allow_missing, region, country, clip)
    try:
        if is_collection(out):
            raise TessvrtError(f"preview writes .tif files (one per UTM zone), not a collection: give an output "
                               f"ending in .tif instead of {out}")
        png_path = Path(png) if png is not None else None
        if png_path is not None and png_path.suffix.lower() != ".png":
            raise TessvrtError(f"--png {png_path} must end in .png")
        fitted: dict[str, Any] = {}

        def prepare(sources: list[PixelSource]) -> list[PixelSource]:
            # the first zone's first chunk is fetched while the sample is drawn (its bytes are counted when used)
            key = (0, 0, cog.blocksize, chunk_width(jobs[0].window.width, _CHUNK_BANDS, cog.blocksize))
            first = (key, sources[0].fetch(early, *key, None))
            before = sum(s.stats().remote_bytes for s in sources)
            sample, cell = draw_sample(jobs, sources, threads)
            pca = fit(sample)
            fitted.update(pca=pca, n=len(sample), cell=cell,
                          bytes=sum(s.stats().remote_bytes for s in sources) - before)
            for j in jobs:
                j.meta.update(pca.tags(), TESSVRT_PREVIEW_SAMPLE=f"cell={cell} pixels={len(sample)}")
            return [Coloured(s, pca, first if k == 0 else None) for k, s in enumerate(sources)]

        extra = None
        if png_path is not None:
            from .quicklook import write_png

            extra = (png_path, lambda tmp, files: write_png(tmp, files))
        # BLAS on one thread while preview runs (the colouring pool is the parallelism): see _PIXELS and fit()
        with threadpool_limits(1, user_api="blas"), Pool(threads, "tessvrt-fetch") as early:
            targets, stats, _ = _write_outputs(Path(out), jobs, list(range(1, COMPONENTS + 1)), cog, overwrite,
                                               progress, threads, prepare=prepare, extra=extra, read_bands=_CHUNK_BANDS)
    finally:
        for j in jobs:
            j.spec.release()
    size = sum(p.stat().st_size for p in targets)
    return PreviewResult(targets, png_path, size, time.perf_counter() - t0, stats.remote_bytes, fitted["n"],
                         fitted["bytes"], fitted["cell"], fitted["pca"], tiles)


__all__ = ["preview", "PreviewResult", "Pca", "fit", "cell_size", "lattice", "draw_sample"]

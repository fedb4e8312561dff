"""tessvrt materialise: dequantised float32 Cloud-Optimized GeoTIFFs, one per UTM zone.

Pixels never pass through GDAL's VRT pixel functions (slow, SPEC.md). A region is a list of
zone jobs (tessvrt.pixels): from a VRT's build record (npy tiles: byte offsets and zone windows)
or from a lon/lat box of a dataset's Zarr store. This module does what is the same for both:
output names and checks, the lock, the disk estimate, and publishing every zone's COG together
(all or none); cog.write writes each COG from its pixel source.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cog.profiles import CogProfile
from .cog.write import write_cog
from .errors import TessvrtError, check_name, check_output_folder, human_bytes
from .grid import Window
from .pixels import PixelSource, Stats, ZoneJob, npy_jobs
from .publish import TargetLock, clean_stale, publish, tmp_path
from .record import read_record
from .source.s3 import DEFAULT_REGION, Endpoint
from .vrt import BANDS


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
    not_written: int = 0  # Zarr: pixels with a valid scale whose embeddings chunk or shard is absent, written as NaN
    requests: int = 0  # Zarr: GETs of shard indexes and coalesced chunk ranges (the store's metadata not counted)
    collection: Any = None  # a COG collection's CollectionResult (pieces written and skipped)
    estimate: Any = None  # dry_run: the plan's estimate.Estimate, nothing written

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
    threads: int = 8,
    allow_missing: bool = False,
    workers: int | None = None,
    dask: str | None = None,
    piece_size: int | None = None,
    output_endpoint: str | None = None,
    dry_run: bool = False,
    region: str | os.PathLike | None = None,
    country: str | None = None,
    clip: bool = False,
) -> MaterialiseResult:
    """Write the VRT's embeddings as float32 COGs, one per UTM zone; returns what was written.

    Without a VRT, `materialise("out.tif", dataset="v1.1-dclimate", bbox="W,S,E,N", year=2024)` writes the
    region from the dataset's Zarr store (upstream's main format): the same outputs, no build.
    threads: parallel ranged GETs per zone (per piece).

    An output that is a folder or an s3:// prefix gets a COG collection (tessvrt.collection): the
    region cut into aligned pieces of piece_size pixels, written by Dask workers (`workers` local
    processes, or the scheduler at `dask`) or, with neither, here; same bytes either way.
    dry_run: plan and check the source only (manifest, record or store metadata; no tile read, nothing
    written) and return the estimate (result.estimate: tiles, pixels, remote and output bytes, time).
    region/country: a polygon file or a country instead of bbox (tessvrt.region); clip: NaN wherever a pixel's
    centre lies outside the bbox/polygon (with a VRT: the region given here).
    """
    from .collection import PIECE, is_collection, materialise_collection

    t0 = time.perf_counter()
    cog = CogProfile(compress, level, blocksize, overviews)
    band_list = bands if isinstance(bands, list) else parse_bands(bands)
    no_output = vrt_path is None and output is None  # a dry run of a Zarr region may omit it: one COG per zone
    if no_output and not dry_run:
        raise TessvrtError("no output given: name out.tif (one COG per UTM zone), or a folder or s3://bucket/prefix/ "
                           "for a COG collection")
    out, jobs, tiles = plan(vrt_path, output, dataset, bbox, year, source, endpoint, allow_missing, region, country, clip)
    collection = not no_output and is_collection(out)
    if not collection and (workers is not None or dask is not None or piece_size is not None):
        raise TessvrtError("--workers, --dask and --piece-size write a COG collection: give a folder or an "
                           "s3://bucket/prefix/ as the output" + ("" if no_output else f" instead of {out}"))
    if dry_run:
        from .collection import cut
        from .estimate import estimate

        for j in jobs:
            j.spec.release()
        n = sum(len(cut(j, piece_size or PIECE)) for j in jobs) if collection else len(jobs)
        est = estimate(jobs, len(band_list), n, workers=workers or 1, unit="piece" if collection else "file")
        return MaterialiseResult([], 0, time.perf_counter() - t0, 0, tiles, output_float32_bytes=est.float32_bytes,
                                 estimate=est)
    try:
        if collection:
            col = materialise_collection(jobs, out, band_list, cog, piece_size=piece_size or PIECE, overwrite=overwrite,
                                         workers=workers, dask=dask, output_endpoint=output_endpoint,
                                         progress=progress, threads=threads)
            st = col.stats
            return MaterialiseResult([Path(col.target) / f for f in col.files] if not col.target.startswith("s3://")
                                     else [], col.bytes_written, time.perf_counter() - t0, st.remote_bytes, tiles,
                                     output_float32_bytes=col.float32_bytes, missing=st.missing,
                                     not_computed=st.not_computed, outside=st.outside, requests=st.requests,
                                     not_written=st.not_written, collection=col)
        targets, stats, total = _write_outputs(Path(out), jobs, band_list, cog, overwrite, progress, threads)
    finally:
        for j in jobs:
            j.spec.release()
    size = sum(p.stat().st_size for p in targets)
    return MaterialiseResult(targets, size, time.perf_counter() - t0, stats.remote_bytes, tiles,
                             output_float32_bytes=total, missing=stats.missing, not_computed=stats.not_computed,
                             outside=stats.outside, requests=stats.requests, not_written=stats.not_written)


def plan(vrt_path: str | os.PathLike | None, output: str | os.PathLike | None, dataset: str | None,
         bbox: str | tuple[float, float, float, float] | None, year: int | None, source: str | None,
         endpoint: str | None, allow_missing: bool = False, region: str | os.PathLike | None = None,
         country: str | None = None, clip: bool = False) -> tuple[str, list[ZoneJob], list[str]]:
    """(output, zone jobs, tile names) of either form: a VRT and an output, or an output and a Zarr region."""
    from .pixels.clip import narrow, record_clip, zarr_region_jobs
    from .region import Region

    area = Region.from_options(bbox=bbox, region=region, country=country)
    if clip and area is None:
        raise TessvrtError("--clip needs the area to clip to: give --bbox, --region FILE or --country NAME")
    if output is None or dataset is not None or bbox is not None or year is not None:
        if output is not None and vrt_path is not None:
            raise TessvrtError("give either a VRT and an output, or an output with --dataset, --bbox and --year "
                               "(a region of the dataset's Zarr store), not both")
        if dataset is None or area is None or year is None:
            raise TessvrtError("materialise without a VRT reads the dataset's Zarr store: give --dataset, --bbox W,S,E,N "
                               "(or --region FILE or --country NAME) and --year (e.g. tessvrt materialise out.tif --dataset "
                               "v1.1-dclimate --bbox -0.2,51.4,0.1,51.6 --year 2024)")
        _, jobs = zarr_region_jobs(dataset, area, year, source, endpoint, clip)
        return str(output if output is not None else vrt_path), jobs, []
    if area is not None and not clip:
        raise TessvrtError("a VRT's region was chosen when it was built: --region/--country here only say what --clip "
                           "keeps; add --clip, or build the VRT with --region/--country")
    rec = read_record(vrt_path)  # type: ignore[arg-type]
    if rec.get("format") == "zarr":  # a Zarr VRT: the same zone parts straight from its store
        _, jobs = zarr_region_jobs(rec["dataset"], Region.from_options(bbox=tuple(rec["bbox"])), rec["year"], rec.get("source"),
                                   endpoint if endpoint is not None else rec.get("endpoint"), False)
        return str(output), narrow(narrow(jobs, record_clip(rec), True), area, clip), []  # the build's region kept
    ep = Endpoint(rec["endpoint"], rec.get("region") or DEFAULT_REGION) if endpoint is None else Endpoint.parse(endpoint)
    jobs = npy_jobs(rec, ep, allow_missing)
    if isinstance(rec.get("clip"), dict):  # built with --clip: its outputs keep the VRT's clip
        import shapely

        jobs = narrow(jobs, Region.polygon(shapely.from_wkb(rec["clip"]["wkb"]), str(rec["clip"].get("label"))), True)
    return str(output), narrow(jobs, area, clip), [t["name"] for t in rec["tiles"]]


def _write_outputs(out: Path, jobs: list[ZoneJob], band_list: list[int], cog: CogProfile, overwrite: bool,
                   progress: Callable[[int, int], None] | None, threads: int, *,
                   prepare: Callable[[list[PixelSource]], list[PixelSource]] | None = None,
                   extra: tuple[Path, Callable[[Path, list[Path]], None]] | None = None,
                   read_bands: int | None = None) -> tuple[list[Path], Stats, int]:
    """Every zone's COG or none: output checks, the lock, temporaries, the zone writer, publishing.

    Every zone's sources are checked (npy headers) under the lock, before a pixel is written.
    Returns (files, what was read, output bytes uncompressed).
    prepare: turns the checked sources into those written (preview: fits its PCA, then colours).
    extra: (target, make(tmp, finished zone files)): one more output made from the zone COGs, published with them.
    read_bands: bands the written sources read per pixel, when more than they return (write_cog's chunk budget).
    """
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise TessvrtError(f"output {out} must end in .tif")
    parent = out.parent if str(out.parent) else Path(".")
    check_output_folder(parent, "output path")
    check_name(out, len(f".{out.stem}_utm00n{out.suffix}.{os.getpid()}.tessvrt-tmp.ov1024.z.tif"), "output path")
    targets = output_paths(out, [j.label for j in jobs])
    if extra is not None:
        check_name(extra[0], len(f".{extra[0].name}.{os.getpid()}.tessvrt-tmp.done"), "output path")
    for p in targets + ([extra[0]] if extra else []):
        if p.is_dir() or (p.exists() and not overwrite):
            raise TessvrtError(f"{p} exists{' and is a folder' if p.is_dir() else ''}; "
                               f"{'choose another output' if p.is_dir() else 'pass --overwrite to replace it'}")
    windows = [j.window for j in jobs]
    with TargetLock(targets + ([extra[0]] if extra else [])):
        clean_stale(parent, targets)
        if extra is not None:
            clean_stale(extra[0].parent, [extra[0]])
        _check_space(parent, windows, len(band_list), cog.compress)
        sources = [j.spec.open(j.window) for j in jobs]
        ok = False
        try:
            for src in sources:
                src.check(threads)
            written = prepare(sources) if prepare is not None else sources
            total = sum(w.width * w.height for w in windows) * len(band_list) * np.dtype(cog.dtype).itemsize
            meter = _Meter(total, progress)
            done = [tmp_path(t, ".done.tif") for t in targets]
            moves = list(zip(done, targets, strict=True))
            trash = tmp_path(out, ".old")
            try:
                for job, src, target in zip(jobs, written, targets, strict=True):
                    try:
                        _write_zone(target, job.window, src, band_list, cog, job.meta, meter, threads, read_bands)
                    except TessvrtError:
                        raise
                    except Exception as exc:  # disk full, folder gone, GDAL write errors: say so in one line
                        if not _is_write_error(exc):
                            raise
                        raise TessvrtError(f"writing {target} failed ({str(exc).strip() or type(exc).__name__}); "
                                           "nothing was written: check free space and permissions in "
                                           f"{parent}, then run again") from None
                if extra is not None:
                    moves.append((tmp_path(extra[0], ".done"), extra[0]))
                    extra[1](moves[-1][0], done)
                # all zones or none, and old outputs (--overwrite) stay until every new one is complete
                trash.mkdir()
                publish(moves, trash)
            finally:
                for p, _ in moves:
                    p.unlink(missing_ok=True)
                shutil.rmtree(trash, ignore_errors=True)
            ok = True
        finally:
            for src in sources:
                src.close(wait=ok)
    return targets, sum((s.stats() for s in sources), Stats()), total


def _write_zone(target: Path, win: Window, pixels: PixelSource, bands: list[int], cog: CogProfile,
                meta: dict[str, str], meter: _Meter, threads: int, read_bands: int | None = None) -> None:
    """One zone's COG, left complete at its .done.tif temporary for _write_outputs to publish."""
    write_cog(tmp_path(target), tmp_path(target, ".done.tif"), win, pixels, bands, cog, meta, meter.add, threads,
              read_bands)


def _is_write_error(exc: Exception) -> bool:
    from rasterio._err import CPLE_BaseError  # GDAL's errors as rasterio raises them
    from rasterio.errors import RasterioError

    return isinstance(exc, OSError | RasterioError | CPLE_BaseError)


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
        raise TessvrtError(f"not enough free disk space in {parent}: materialise needs about {human_bytes(need)} "
                           f"(temporaries and output) and {human_bytes(free)} are free; free space, choose another "
                           "output folder or fewer --bands")


class _Meter:
    """Counts float32 output bytes done and reports them to a progress callback."""

    def __init__(self, total: int, cb: Callable[[int, int], None] | None):
        self.total, self.done, self.cb = total, 0, cb

    def add(self, n: int) -> None:
        self.done += n
        if self.cb:
            self.cb(self.done, self.total)


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


__all__ = ["materialise", "MaterialiseResult", "parse_bands", "output_paths", "progress_printer", "plan"]

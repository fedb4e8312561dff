"""A region as a COG collection: pieces written by tasks (here or on Dask), then the indexes.

Layout of a collection folder (or S3 prefix), see docs/collection.md:
  .tessvrt/run.json        what made it (fingerprint of the arguments): claims the folder, decides resume
  .tessvrt/done/...json    one checksum record per complete piece (written after the piece)
  utm31n/utm31n_x..._y....tif   the pieces: COGs, aligned cells of the zone grid
  utm31n.vrt               the zone as one raster for GDAL >= 3.6 (QGIS 3.22)
  utm31n.gti.gpkg          the same as a GTI index for GDAL >= 3.9 (constant-time open, any size)
  manifest.json            every piece, its window, size and sha256 (written last, with the indexes)
A rerun with the same arguments skips every piece already complete and verified.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..cog.profiles import CogProfile
from ..errors import TessvrtError
from ..estimate import estimate
from ..pixels import Stats, ZoneJob
from ..publish import TMP_MARK
from . import index
from .pieces import PIECE, Piece, PieceResult, cut, fingerprint, tasks, write_piece
from .target import FolderTarget, S3Target, parse_target

RUN = ".tessvrt/run.json"

@dataclass
class CollectionResult:
    target: str
    pieces: int
    written: int  # pieces made by this run
    skipped: int  # pieces found complete and verified
    bytes_written: int
    seconds: float
    stats: Stats = field(default_factory=Stats)
    float32_bytes: int = 0
    files: list[str] = field(default_factory=list)  # the indexes: one VRT and one GTI per zone, the manifest


def _claim(target: FolderTarget | S3Target, fp: str, overwrite: bool) -> None:
    """The target is ours: new, or a collection tessvrt made (same arguments: resume; others: --overwrite)."""
    run = target.read_json(RUN)
    if run is None:
        if isinstance(target, FolderTarget):
            if target.root.exists() and not target.root.is_dir():
                raise TessvrtError(f"{target} exists and is not a folder; choose a folder for the collection")
            if target.root.is_dir() and any(TMP_MARK not in p.name for p in target.root.iterdir()):
                raise TessvrtError(f"{target} holds files tessvrt did not write; choose a new or empty folder")
        elif not target.is_empty():
            raise TessvrtError(f"{target} holds objects tessvrt did not write; choose a new or empty prefix")
    elif run.get("fingerprint") != fp and not overwrite:
        raise TessvrtError(f"{target} holds a collection made with other arguments; pass --overwrite to replace it, "
                           "or choose another output")
    target.write_text(RUN, json.dumps({"tessvrt_collection": 1, "fingerprint": fp}) + "\n")


def materialise_collection(jobs: list[ZoneJob], output: str, bands: list[int], cog: CogProfile, *,
                           piece_size: int = PIECE, overwrite: bool = False, workers: int | None = None,
                           dask: str | None = None, output_endpoint: str | None = None,
                           progress: Callable[[int, int], None] | None = None, threads: int = 8) -> CollectionResult:
    """Every piece of the region, then the indexes; complete pieces of an earlier identical run are kept."""
    from .. import distributed
    from ..publish import TargetLock

    t0 = time.perf_counter()
    if piece_size % cog.blocksize or piece_size < cog.blocksize:
        raise TessvrtError(f"--piece-size {piece_size} must be a multiple of --blocksize {cog.blocksize}")
    target = parse_target(output, output_endpoint)
    fp = fingerprint(jobs, bands, cog, piece_size)
    todo = tasks(jobs, bands, cog, piece_size, target, fp, threads)
    total = sum(t.piece.window.width * t.piece.window.height for t in todo) * len(bands) * 4
    lock = TargetLock([target.root / "manifest.json"]) if isinstance(target, FolderTarget) else None
    created = isinstance(target, FolderTarget) and not target.root.exists()
    if created:
        target.root.mkdir(parents=True)  # type: ignore[union-attr]
    results: dict[str, PieceResult] = {}
    done = [0]

    size = {t.piece.name: t.piece.window.width * t.piece.window.height * len(bands) * 4 for t in todo}

    def on_result(r: PieceResult) -> None:
        results[r.name] = r
        done[0] += size[r.name]  # a dict: a scan of every task per result would be quadratic in pieces
        if progress:
            progress(done[0], total)

    from ..source.s3 import progress as say

    if lock is not None:
        lock.__enter__()
    try:
        _claim(target, fp, overwrite)
        px = sum(t.piece.window.width * t.piece.window.height for t in todo)

        def start(n: int) -> None:
            say(estimate(jobs, len(bands), len(todo), px, n, "piece").line())
        target.clean_temporaries(sorted({j.label for j in jobs}))
        distributed.run(write_piece, todo, [f"tessvrt-{fp[:12]}-{t.piece.name}" for t in todo], on_result,
                        workers, dask, start)
        target.clean_temporaries(sorted({j.label for j in jobs}))  # what a killed worker left half-written
        zones = [(j.label, j.window, [t.piece for t in todo if t.piece.label == j.label]) for j in jobs]
        files = _write_indexes(target, zones, results, bands, cog, fp, jobs)
    except BaseException:
        if created and not any(not r.skipped for r in results.values()):  # a folder this run made and filled with nothing
            lock.__exit__()  # type: ignore[union-attr]
            shutil.rmtree(target.root, ignore_errors=True)  # type: ignore[union-attr]
        raise
    finally:
        if lock is not None:
            lock.__exit__()
    stats = sum((r.stats for r in results.values()), Stats())
    return CollectionResult(str(target), len(todo), sum(not r.skipped for r in results.values()),
                            sum(r.skipped for r in results.values()), sum(r.bytes for r in results.values()),
                            time.perf_counter() - t0, stats, total, files)


def _write_indexes(target: FolderTarget | S3Target, zones: list[tuple[str, object, list[Piece]]],
                   results: dict[str, PieceResult], bands: list[int], cog: CogProfile, fp: str,
                   jobs: list[ZoneJob]) -> list[str]:
    files = []
    for label, zone, pieces in zones:
        biggest = max(pieces, key=lambda p: p.window.width * p.window.height)
        factors = cog.factors(biggest.window.width, biggest.window.height)
        target.write_file(f"{label}.gti.gpkg", lambda path, z=zone, ps=pieces, f=factors:
                          index.write_gti(path, z, ps, bands, cog.blocksize, f))  # type: ignore[misc]
        target.write_text(f"{label}.vrt", index.pieces_vrt(zone, pieces, bands, ""))  # type: ignore[arg-type]
        files += [f"{label}.vrt", f"{label}.gti.gpkg"]
    meta = {k: v for k, v in jobs[0].meta.items() if k not in ("TESSVRT_TILES", "TESSVRT_ZONE")}
    target.write_text("manifest.json", index.manifest(zones, results, bands, fp, meta))  # type: ignore[arg-type]
    return [*files, "manifest.json"]


def is_collection(output: object) -> bool:
    """A folder or s3:// prefix is a collection; a .tif is one COG per zone."""
    text = str(output)
    return text.startswith("s3://") or text.endswith("/") or not text.lower().endswith((".tif", ".tiff"))


__all__ = ["materialise_collection", "CollectionResult", "is_collection", "cut", "PIECE"]

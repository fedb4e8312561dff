"""A region cut into pieces: fixed, aligned, non-overlapping windows of each zone grid, one COG each.

Pieces are aligned to the zone's global 10 m grid (piece column = global column // size), not
to the region, so the same ground always falls in the same piece name whatever box asked for it.
`write_piece` is the one task of a run, whether it runs in this process or on a Dask worker: it
skips a piece already complete and verified, else writes it through the target's commit point.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from ..cog.profiles import CogProfile
from ..cog.write import write_cog
from ..errors import TessvrtError
from ..grid import Window
from ..pixels import Spec, Stats, ZoneJob, open_source
from .target import FolderTarget, S3Target, sha256_file

PIECE = 4096  # pixels; the Zarr stores' shard size, ~6 GB of compressed float32 per 128-band piece
RECORDS = ".tessvrt/done"  # one checksum record per complete piece


@dataclass(frozen=True)
class Piece:
    label: str  # zone part, e.g. utm31n
    name: str  # path in the collection, e.g. utm31n/utm31n_x0073_y1407.tif
    window: Window

    @property
    def record(self) -> str:
        return f"{RECORDS}/{self.name}.json"


def cut(job: ZoneJob, size: int) -> list[Piece]:
    """The pieces of one zone part: aligned size x size cells of the zone grid clipped to its window."""
    return cut_window(job.label, job.window, size, ".tif")


def cut_window(label: str, w: Window, size: int, suffix: str) -> list[Piece]:
    """Aligned size x size cells of a zone grid clipped to w, named {label}/{label}_x{col}_y{row}{suffix}
    by global cell index (also build's blocks above the tile cap: same ground, same name)."""
    out = []
    top, bottom = w.row0, w.row0 - w.height + 1  # global row indices J (decreasing downwards)
    for q in range(math.floor(top / size), math.floor(bottom / size) - 1, -1):
        r0, r1 = min(top, (q + 1) * size - 1), max(bottom, q * size)
        for p in range(math.floor(w.col0 / size), math.floor((w.col0 + w.width - 1) / size) + 1):
            c0, c1 = max(w.col0, p * size), min(w.col0 + w.width, (p + 1) * size)
            name = f"{label}/{label}_x{p:04d}_y{q:04d}{suffix}"
            out.append(Piece(label, name, Window(w.epsg, c0, r0, c1 - c0, r0 - r1 + 1)))
    return out


@dataclass(frozen=True)
class PieceTask:
    """Everything a worker needs for one piece: small, picklable, nothing open."""

    piece: Piece
    spec: Spec
    bands: tuple[int, ...]
    cog: CogProfile
    meta: tuple[tuple[str, str], ...]
    target: FolderTarget | S3Target
    fingerprint: str
    threads: int = 8


@dataclass
class PieceResult:
    name: str
    bytes: int
    sha256: str
    skipped: bool  # complete and verified before this run
    stats: Stats = field(default_factory=Stats)
    float32_bytes: int = 0


def fingerprint(jobs: list[ZoneJob], bands: list[int], cog: CogProfile, size: int) -> str:
    """What decides a piece's bytes: zone windows and tags (sources, tiles, year), bands, COG profile, piece size."""
    from .. import __version__

    desc = {"zones": [[j.label, j.window.__dict__, j.meta] for j in jobs], "bands": bands, "cog": cog.__dict__,
            "piece": size, "tessvrt": __version__}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def tasks(jobs: list[ZoneJob], bands: list[int], cog: CogProfile, size: int, target: FolderTarget | S3Target,
          fp: str, threads: int = 8) -> list[PieceTask]:
    out = []
    for job in jobs:
        for piece in cut(job, size):
            part = job.spec.part(piece.window)
            meta = {**job.meta, "TESSVRT_PIECE": piece.name}
            if "TESSVRT_TILES" in meta:  # the tiles this piece reads, not the whole zone's
                meta["TESSVRT_TILES"] = ",".join(part.names())
            out.append(PieceTask(piece, part, tuple(bands), cog, tuple(sorted(meta.items())), target, fp, threads))
    return out


def complete(task: PieceTask) -> PieceResult | None:
    """The piece's result when it is already there, whole, from a run with the same arguments (checksum verified)."""
    rec = task.target.read_json(task.piece.record)
    if not rec or rec.get("fingerprint") != task.fingerprint:
        return None
    got = task.target.size_and_sha(task.piece.name, rec.get("sha256"))
    if got is None or got != (rec.get("bytes"), rec.get("sha256")):
        return None
    return PieceResult(task.piece.name, int(rec["bytes"]), str(rec["sha256"]), True)


def write_piece(task: PieceTask) -> PieceResult:
    """Make one piece (or find it complete); identical bytes wherever and however often it runs."""
    done = complete(task)
    if done is not None:
        return done
    p = task.piece
    task.target.remove(p.record)  # a record never describes other bytes than the piece's
    base, dest = task.target.scratch(p.name)
    bands = list(task.bands)
    src = open_source(task.spec, p.window)
    ok = False
    try:
        src.check(task.threads)
        write_cog(base, dest, p.window, src, bands, task.cog, dict(task.meta), None, task.threads)
        ok = True
    except TessvrtError:
        raise
    except OSError as exc:
        raise TessvrtError(f"writing piece {p.name} to {task.target} failed ({str(exc).strip() or type(exc).__name__}); "
                           "check free space and permissions, then run again (complete pieces are kept)") from None
    finally:
        src.close(wait=ok)
        if not ok:
            dest.unlink(missing_ok=True)
    size, sha = dest.stat().st_size, sha256_file(dest)
    task.target.commit(p.name, dest, sha)
    task.target.write_text(p.record, json.dumps({"fingerprint": task.fingerprint, "bytes": size, "sha256": sha}))
    return PieceResult(p.name, size, sha, False, src.stats(), p.window.width * p.window.height * len(bands) * 4)

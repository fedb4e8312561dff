"""What a materialise run will cost, before any tile is read: printed up front and by --dry-run.

Known exactly from the plan: tiles, pixels, outputs, the npy objects' sizes (manifest). Estimated:
the COG bytes (measured compression ratio) and the time (measured per-worker rate), both from
docs/performance.md; Zarr chunk bytes are unknown until the shard indexes are read (their uncompressed size given).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import human_bytes
from .pixels import ZoneJob

# float32 MB/s of one process (one worker) writing 128-band COGs, zstd 1, over a fast network: measured by
# scripts/bench_materialise.py and scripts/bench_dask.py (docs/performance.md).
RATE_PER_WORKER = 100e6
COMPRESSED = 0.65  # COG bytes per float32 byte (zstd 1, floating-point predictor; docs/performance.md)
# uncompressed int8 x 128 + float32 scale per pixel. Not a bound: a read fetches whole chunks (32 x 32 pixels) and
# first each shard's index (256 kB per array in upstream's layout): materialise of the sample store's 924-pixel
# region in one shard (tests' INSIDE) sent 623 kB over the wire against 122 kB here (counted at a FaultProxy, by hand)
ZARR_BYTES_PER_PIXEL = 132


@dataclass
class Estimate:
    zones: int
    outputs: int  # files (one per zone) or pieces
    tiles: int | None  # npy only
    pixels: int
    bands: int
    remote_bytes: int
    remote_exact: bool  # npy: object sizes from the manifest; Zarr: uncompressed chunk bytes (not a bound)
    workers: int
    unit: str = "file"  # what an output is: a file (one COG per zone) or a piece of a collection

    @property
    def float32_bytes(self) -> int:
        return self.pixels * self.bands * 4

    @property
    def output_bytes(self) -> float:
        return self.float32_bytes * COMPRESSED

    @property
    def seconds(self) -> float:
        return self.float32_bytes / (RATE_PER_WORKER * max(self.workers, 1))

    def line(self) -> str:
        took = _took(self.seconds)
        tiles = f", {self.tiles:,} tiles" if self.tiles is not None else ""
        remote = f"~{human_bytes(self.remote_bytes)} of tiles" if self.remote_exact else \
            f"~{human_bytes(self.remote_bytes)} of Zarr chunks (uncompressed size) and their shard indexes"
        return (f"{self.outputs:,} {self.unit}(s) in {self.zones} zone(s){tiles}, {self.pixels:,} pixels x {self.bands} bands; "
                f"reads {remote}, writes ~{human_bytes(self.output_bytes)} "
                f"({human_bytes(self.float32_bytes)} of float32); about {took} at {RATE_PER_WORKER / 1e6:,.0f} MB/s "
                f"per worker x {max(self.workers, 1)}")

    def fields(self) -> dict:
        """The figures as --json gives them (materialise --dry-run, and build --dry-run's full read)."""
        return {"zones": self.zones, "outputs": self.outputs, "tiles": self.tiles, "pixels": self.pixels,
                "bands": self.bands, "remote_bytes": self.remote_bytes, "remote_bytes_exact": self.remote_exact,
                "float32_bytes": self.float32_bytes, "output_bytes": round(self.output_bytes),
                "seconds": round(self.seconds, 1)}


def estimate(jobs: list[ZoneJob], bands: int, outputs: int, pixels: int | None = None, workers: int = 1,
             unit: str = "file") -> Estimate:
    feet = [j.spec.footprint() for j in jobs]
    px = sum(j.window.width * j.window.height for j in jobs) if pixels is None else pixels
    npy = all(f is not None for f in feet)
    return Estimate(len(jobs), outputs, sum(f[0] for f in feet) if npy else None, px, bands,  # type: ignore[index]
                    sum(f[1] for f in feet) if npy else px * ZARR_BYTES_PER_PIXEL, npy, workers, unit)  # type: ignore[index]


# tiles a second `build` writes (tile VRTs, masks, mosaics): ~0.5 s per 1,000 tiles, scripts/bench_build.py
# (docs/performance.md, "Build").
BUILD_TILES_PER_S = 2000


@dataclass
class BuildEstimate:
    """What `build --dry-run` says: the build's own cost (files written, time) and what reading all of it costs."""

    tiles: int
    sidecar_bytes: int  # VRTs and sidecar, at build.BYTES_PER_TILE
    read: Estimate  # a full read (materialise to one COG per zone) of what the build covers

    @property
    def seconds(self) -> float:
        return self.tiles / BUILD_TILES_PER_S

    def fields(self) -> dict:
        """--json: the full read's figures (as materialise --dry-run gives them), the build's own under "build"."""
        return {"format": "npy", **self.read.fields(),
                "build": {"tiles": self.tiles, "sidecar_bytes": self.sidecar_bytes, "seconds": round(self.seconds, 1)}}

    def line(self) -> str:
        return (f"build: {self.tiles:,} tiles, writes ~{human_bytes(self.sidecar_bytes)} of VRTs and sidecar in about "
                f"{_took(self.seconds)} at {BUILD_TILES_PER_S:,} tiles/s, reading no tile; materialising all of it: "
                f"{self.read.line()}")


@dataclass
class ZarrBuildEstimate:
    """What `build --dry-run` says of a Zarr VRT (tessvrt.zarrvrt.dry_run_zarr): the references it would write,
    the shard indexes it would read (its only remote reads), and what reading all of it costs. The chunk count
    is an upper bound: a chunk the shard index marks empty gets no reference."""

    chunks: int
    shards: int
    index_bytes: int
    refs_bytes: int  # the references' JSON, at zarrvrt.REF_BYTES per chunk
    max_chunks: int
    refused: str | None  # why the real build would refuse it (over max_chunks), else None
    read: Estimate

    def fields(self) -> dict:
        """--json: the same fields as the npy dry run's (tiles null), the build's own under "build"."""
        return {"format": "zarr", **self.read.fields(),
                "build": {"chunks": self.chunks, "chunks_exact": False, "max_chunks": self.max_chunks,
                          "refs_bytes": self.refs_bytes, "shards": self.shards, "index_bytes": self.index_bytes,
                          "refused": self.refused}}

    def line(self) -> str:
        verdict = "WOULD BE REFUSED (see below)" if self.refused else f"at most {self.max_chunks:,} allowed"
        return (f"build: {self.read.zones} zone part(s), {self.read.pixels:,} pixels; references at most "
                f"{self.chunks:,} inner chunks ({verdict}), ~{human_bytes(self.refs_bytes)} of JSON; reads the "
                f"index of {self.shards:,} shard(s) ({human_bytes(self.index_bytes)}) and no chunk; materialising all "
                f"of it: {self.read.line()}")


def _took(s: float) -> str:
    return f"{s:,.0f} s" if s < 120 else f"{s / 60:,.0f} min" if s < 7200 else f"{s / 3600:,.1f} h"

"""The pixel-source interface every reader implements, and what a zone of a region is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..grid import Window
from ..source.s3 import Pool

BANDS = 128


@dataclass
class Stats:
    """What reading cost and found: added up across zones, pieces and workers."""

    remote_bytes: int = 0
    requests: int = 0  # Zarr: GETs of shard indexes and coalesced chunk ranges
    not_computed: int = 0  # Zarr: pixels upstream has not computed yet (+inf scales), written as NaN
    outside: int = 0  # Zarr: pixels beyond the store's zone grids, written as NaN
    missing: list[str] = field(default_factory=list)  # npy: tiles whose objects were gone (--allow-missing)
    not_written: int = 0  # Zarr: valid scales over embeddings the store does not hold (absent chunk/shard), NaN

    def __add__(self, other: Stats) -> Stats:
        return Stats(self.remote_bytes + other.remote_bytes, self.requests + other.requests,
                     self.not_computed + other.not_computed, self.outside + other.outside,
                     sorted(set(self.missing) | set(other.missing)), self.not_written + other.not_written)


@dataclass
class Quantised:
    """A piece of a chunk's stored values before dequantisation, for consumers that use them directly (preview).

    A chunk is a list of pieces, each a box of it at (y, x) whose valid pixels no other piece has (npy: a
    tile's rows as fetched, no copy; Zarr: the chunk read). A pixel no piece gives a valid value is no data.
    q: (h, w, 128) int8, any strides (a Zarr chunk is a band-major view); meaningless where s is NaN.
    s: (h, w) float32, the pixel's one scale where it is valid and the piece's pixel, NaN elsewhere.
    per_band: None, or (128, h, w) float32 dequantised values of the pixels whose tile has one scale per
    band (npy (H, W, 128) scales; their s is NaN), NaN elsewhere.
    """

    q: np.ndarray
    s: np.ndarray
    per_band: np.ndarray | None = None
    y: int = 0
    x: int = 0


class PixelSource(Protocol):
    """The pixels of one output window of a zone grid (npy tiles or Zarr chunks).

    check() verifies the source objects before any pixel is written (bytes read). fetch() starts
    reading output rows [y0, y0+bs) x columns [x0, x0+cw) (clipped to the window) without waiting
    (prev: the previous chunk's handle in the same block row, for reuse); chunk() waits and returns
    (bands, h, w) float32 with NaN where there is no valid pixel; quantised() instead of chunk() returns
    the same pixels as pieces of stored int8 values and scales (read once: a pending read is for one of them).
    """

    def check(self, threads: int) -> int: ...

    def fetch(self, pool: Pool, y0: int, x0: int, bs: int, cw: int, prev: Any) -> Any: ...

    def chunk(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int,
              bands: list[int]) -> np.ndarray: ...

    def quantised(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int) -> list[Quantised]: ...

    def stats(self) -> Stats: ...

    def close(self, wait: bool = True) -> None: ...


class Spec(Protocol):
    """A picklable description of a zone's pixels; open() makes the reader where it runs."""

    def open(self, win: Window) -> PixelSource: ...

    def covers(self, win: Window) -> bool: ...

    def part(self, win: Window) -> Spec: ...

    def footprint(self) -> tuple[int, int] | None: ...

    def names(self) -> list[str]: ...

    def release(self) -> None: ...


@dataclass
class _Nothing:
    """A window no source covers: all NaN, nothing read (a piece of a region beyond every tile)."""

    def check(self, threads: int) -> int:
        return 0

    def fetch(self, pool: Pool, y0: int, x0: int, bs: int, cw: int, prev: Any) -> None:
        return None

    def chunk(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int, bands: list[int]) -> np.ndarray:
        return np.full((len(bands), h, w), np.nan, np.float32)

    def quantised(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int) -> list[Quantised]:
        return []

    def stats(self) -> Stats:
        return Stats()

    def close(self, wait: bool = True) -> None:
        pass


def open_source(spec: Spec, win: Window) -> PixelSource:
    """The reader of a window: the spec's, or an all-NaN one where the spec covers nothing."""
    return spec.open(win) if spec.covers(win) else _Nothing()


@dataclass
class ZoneJob:
    """One zone part of a region: its window, where its pixels come from and its GeoTIFF tags."""

    label: str
    window: Window
    spec: Spec
    meta: dict[str, str]


def read_window(spec: Spec, win: Window, bands: list[int] | None = None, threads: int = 8) -> np.ndarray:
    """(bands, height, width) float32 of any window of a zone grid, read synchronously (one call, own pools).

    The same fetch/chunk path as the zone writer, so a window read here equals materialise's pixels.
    """
    band_list = bands or list(range(1, BANDS + 1))
    src = open_source(spec, win)
    ok = False
    try:
        src.check(threads)
        with Pool(threads, "tessvrt-fetch") as pool, Pool(os.cpu_count() or 2, "tessvrt-dequant") as cpu:
            pending = src.fetch(pool, 0, 0, win.height, win.width, None)
            out = src.chunk(cpu, pending, 0, 0, win.height, win.width, band_list)
        ok = True
    finally:
        src.close(wait=ok)
    return out

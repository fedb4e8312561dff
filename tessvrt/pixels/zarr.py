"""A dataset's Zarr store as a pixel source: a zone group's inner chunks under each chunk, dequantised.

`ZarrSpec` names the store (dataset, layout, endpoint), the zone group and the year; the process
that reads opens the store itself (a few metadata GETs), once per run: `token` keys a per-process
cache, so the tasks of one run on a worker share shard indexes and a later run never sees stale ones.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from ..errors import TessvrtError
from ..grid import Window, zone_label
from ..scales import dequantise_into, valid
from ..source.s3 import Pool
from ..source.zarr import Traffic
from ..zarrstore import TesseraStore, ZoneGroup, open_store, region_windows
from .base import BANDS, Quantised, Stats, ZoneJob

_OPEN: OrderedDict[str, TesseraStore] = OrderedDict()  # token -> store opened in this process
_OPEN_LOCK = threading.Lock()
_KEEP = 4  # runs whose stores a worker keeps open


@dataclass(frozen=True)
class ZarrSpec:
    """A zone group of a dataset's store for one year."""

    dataset: str
    source: str | None
    endpoint: str | None
    epsg: int  # of the output window: 326NN or 327NN (the group is utmNN either way)
    year: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    height: int = 0  # the group's grid, known at planning: windows beyond it need no store at all
    width: int = 0
    row0: int = 0  # global row/col of the group's top-left pixel on the window's EPSG
    col0: int = 0

    def store(self) -> TesseraStore:
        with _OPEN_LOCK:
            ts = _OPEN.get(self.token)
            if ts is not None:
                _OPEN.move_to_end(self.token)
                return ts
        ts = open_store(self.dataset, self.source, self.endpoint)
        with _OPEN_LOCK:
            ts = _OPEN.setdefault(self.token, ts)
            while len(_OPEN) > _KEEP:
                _OPEN.popitem(last=False)
        return ts

    def covers(self, win: Window) -> bool:
        grid = Window(self.epsg, self.col0, self.row0, self.width, self.height)
        return grid.intersection(win) is not None

    def footprint(self) -> None:
        return None  # chunk sizes are in shard indexes: unknown until read

    def names(self) -> list[str]:
        return []

    def part(self, win: Window) -> ZarrSpec:
        return self  # the store is opened by name: nothing to narrow

    def release(self) -> None:
        """Close this run's store in this process (its shard indexes are dropped)."""
        forget(self.token)

    def open(self, win: Window) -> ZarrPixels:
        ts = self.store()
        g = ts.require(self.epsg % 100)
        return ZarrPixels(g, g.time_index(self.year, f"{ts.uri}/{g.name}"), win)


def forget(token: str) -> None:
    """Drop a run's store from this process's cache (the run is over)."""
    with _OPEN_LOCK:
        _OPEN.pop(token, None)


@dataclass
class Counts:
    """What a read found: pixels not computed yet (+inf scales) and pixels beyond the store's grid."""

    not_computed: int = 0
    outside: int = 0
    not_written: int = 0  # valid scales over embeddings no stored chunk holds: NaN, never the fill value's 0.0


class ZarrPixels:
    """A window's pixels from a zone group: fetch() starts reading an output chunk (shard indexes,
    then coalesced chunk GETs on the fetch pool, planned on a small coordinating pool so fetch
    threads never wait on each other), chunk() dequantises it."""

    def __init__(self, group: ZoneGroup, t: int, win: Window):
        self.group, self.t, self.win = group, t, win
        self.row0, self.col0 = group.offset(win)
        self.counts = Counts()
        self.traffic = Traffic()  # this window's reads (the store's count every zone's, and other runs' in this process)
        self._plan: Pool | None = None  # made on the first fetch, closed by close()

    def check(self, threads: int) -> int:
        return 0  # shard indexes and chunks are checked as they are read

    def stats(self) -> Stats:
        return Stats(self.traffic.bytes, self.traffic.requests, self.counts.not_computed,
                     self.counts.outside, not_written=self.counts.not_written)

    def close(self, wait: bool = True) -> None:
        """End the planning threads; wait=False (an error or interrupt) leaves without waiting for reads."""
        if self._plan is not None:
            self._plan.close(wait)

    def fetch(self, pool: Pool | Executor, y0: int, x0: int, h: int, w: int, prev: object = None) -> tuple:
        """Start reading output rows [y0, y0+h) x cols [x0, x0+w) (clipped to the window); a handle for chunk()."""
        g = self.group
        h, w = min(h, self.win.height - y0), min(w, self.win.width - x0)
        r0, c0 = self.row0 + y0, self.col0 + x0
        rs, cs = slice(max(r0, 0), min(r0 + h, g.height)), slice(max(c0, 0), min(c0 + w, g.width))
        if rs.stop <= rs.start or cs.stop <= cs.start:
            return None, None, rs, cs, []
        if self._plan is None:
            self._plan = Pool(4, "tessvrt-zarr")
        absent: list[tuple[slice, ...]] = []  # filled by the read: parts no stored embeddings chunk holds
        emb = self._plan.submit(g.embeddings.read, (slice(self.t, self.t + 1), slice(0, BANDS), rs, cs), pool, absent,
                                self.traffic)
        sc = self._plan.submit(g.scales.read, (slice(self.t, self.t + 1), rs, cs), pool, None, self.traffic)
        return emb, sc, rs, cs, absent

    def chunk(self, cpu: Pool | Executor, pending: tuple, y0: int, x0: int, h: int, w: int, bands: list[int]) -> np.ndarray:
        """(bands, h, w) float32: int8 x scale where the scale is valid, NaN elsewhere and beyond the grid.

        A valid scale over an absent embeddings chunk or shard (upstream writes embeddings after scales;
        the fill value would read as 0.0 in every band) is NaN and counted in not_written."""
        out = np.full((len(bands), h, w), np.nan, np.float32)
        got = self._read(pending, y0, x0, h, w)
        if got is not None:
            emb, sc, oy, ox = got
            dequantise_into(cpu, out[:, oy:oy + sc.shape[0], ox:ox + sc.shape[1]], emb, sc, bands)
        return out

    def quantised(self, cpu: Pool | Executor, pending: tuple, y0: int, x0: int, h: int, w: int) -> list[Quantised]:
        """The chunk's int8 values (a band-major view of the read, at its place in the chunk) and valid scales."""
        got = self._read(pending, y0, x0, h, w)
        if got is None:
            return []
        emb, sc, oy, ox = got
        return [Quantised(np.moveaxis(emb, 0, -1), np.where(valid(sc), sc, np.float32(np.nan)), y=oy, x=ox)]

    def _read(self, pending: tuple, y0: int, x0: int, h: int, w: int) -> tuple | None:
        """(int8 (128, hh, ww), scales (hh, ww) with not-written pixels NaN, chunk offsets) once read and counted;
        None beyond the grid."""
        emb_f, sc_f, rs, cs, absent = pending
        if emb_f is None:
            self.counts.outside += h * w
            return None
        emb, sc = emb_f.result()[0], sc_f.result()[0]
        oy, ox = rs.start - (self.row0 + y0), cs.start - (self.col0 + x0)
        self.counts.outside += h * w - sc.size
        self.counts.not_computed += int(np.isposinf(sc).sum())
        if absent:
            gone = np.zeros(sc.shape, bool)
            for part in absent:  # (time, band, y, x) slices of the read
                gone[part[-2], part[-1]] = True
            gone &= valid(sc)
            self.counts.not_written += int(gone.sum())
            sc = np.where(gone, np.float32(np.nan), sc)
        return emb, sc, oy, ox


def zarr_jobs(dataset: str, bbox: str | tuple[float, float, float, float], year: int, source: str | None = None,
              endpoint: str | None = None) -> tuple[TesseraStore, list[ZoneJob]]:
    """The per-zone parts of a lon/lat box of a dataset's store, every check done before a pixel is read:
    a store not shaped like TESSERA's, a missing zone group or a year not in the store is one TessvrtError."""
    from .. import __version__
    from ..build import BBox

    box = BBox.parse(bbox) if isinstance(bbox, str) else BBox(*bbox)
    ts = open_store(dataset, source, endpoint)
    token = uuid.uuid4().hex
    with _OPEN_LOCK:  # this process reads through the store it has just checked
        _OPEN[token] = ts
    jobs = []
    for win in region_windows(box.west, box.south, box.east, box.north):
        g = ts.require(win.epsg % 100)
        g.time_index(year, f"{ts.uri}/{g.name}")
        r, c = g.offset(win)
        if r >= g.height or c >= g.width or r + win.height <= 0 or c + win.width <= 0:
            continue  # beyond the group's grid: the store holds nothing there
        spec = ZarrSpec(dataset, source, endpoint, win.epsg, year, token, g.height, g.width, win.row0 + r, win.col0 - c)
        meta = {"TESSERA_DATASET": ts.dataset.name, "TESSERA_DATASET_VERSION": ts.dataset.version,
                "TESSERA_VARIANT": ts.dataset.variant, "TESSERA_YEAR": str(year), "TESSVRT_SOURCE": f"{ts.uri}/{g.name}",
                "TESSVRT_BBOX": f"{box.west:g},{box.south:g},{box.east:g},{box.north:g}",
                "TESSVRT_VERSION": __version__, "TESSVRT_ZONE": f"EPSG:{win.epsg}"}
        jobs.append(ZoneJob(zone_label(win.epsg), win, spec, meta))
    if not jobs:
        forget(token)
        raise TessvrtError(f"{ts.uri} holds nothing in --bbox {box.west:g},{box.south:g},{box.east:g},{box.north:g} "
                           "(the region lies beyond its zone grids); choose a region the dataset covers")
    return ts, jobs

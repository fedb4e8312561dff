"""TESSERA's Zarr stores (upstream's main format): zone groups, years, regions and pixel reads.

A store holds one group per UTM zone (`utm31`, ...) on the north EPSG (326NN) with the zone's
south at negative northings; arrays `embeddings` int8 (time, band, y, x) and `scales` float32
(time, y, x), sharded (SPEC.md, "Zarr stores"). tessvrt writes a zone's south in 327NN as its
npy outputs do: the store's northing plus 10,000,000, a multiple of 10 m, so pixels stay put.
Valid pixels follow upstream's rule (scales.valid); +inf is "not computed yet" and is counted.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np

from . import scales
from .errors import TessvrtError
from .grid import PIXEL, Window, _to_utm, utm_epsg, utm_zone
from .materialise import ZoneJob
from .source import datasets
from .source.datasets import Dataset
from .source.s3 import Endpoint, Pool
from .source.zarr import Array, Store

BANDS = 128
SOUTH = 10_000_000.0  # false northing of the 327NN zones


@dataclass
class ZoneGroup:
    """One zone group: its 10 m grid (origin ox, oy on EPSG 326NN), years and arrays."""

    name: str
    zone: int
    ox: float
    oy: float
    height: int
    width: int
    years: list[int]
    embeddings: Array
    scales: Array

    def time_index(self, year: int, where: str) -> int:
        if year not in self.years:
            raise TessvrtError(f"year {year} is not in {where} (it holds {', '.join(map(str, self.years)) or 'none'}); "
                               "choose --year")
        return self.years.index(year)

    def offset(self, win: Window) -> tuple[int, int]:
        """(row, col) in the group's arrays of a window's top-left pixel (window on 326NN or 327NN)."""
        top = PIXEL * (win.row0 + 1) - (SOUTH if win.epsg >= 32700 else 0.0)
        return round((self.oy - top) / PIXEL), round((PIXEL * win.col0 - self.ox) / PIXEL)


@dataclass
class TesseraStore:
    """A dataset's Zarr store in a bucket layout, opened lazily zone by zone."""

    dataset: Dataset
    store: Store
    attrs: dict
    zones: dict[int, ZoneGroup | None] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.store.uri().rstrip("/")

    def zone(self, zone: int) -> ZoneGroup | None:
        """The group of a UTM zone, or None when the store has none (it covers nothing there)."""
        if zone not in self.zones:
            self.zones[zone] = self._open_zone(zone)
        return self.zones[zone]

    def require(self, zone: int) -> ZoneGroup:
        g = self.zone(zone)
        if g is None:
            raise TessvrtError(f"{self.uri} has no zone group utm{zone:02d}: {self.dataset.name} covers nothing in UTM "
                               f"zone {zone}; choose a region the dataset covers")
        return g

    def _open_zone(self, zone: int) -> ZoneGroup | None:
        name = f"utm{zone:02d}"
        meta = self.store.metadata(name)
        if meta is None:
            return None
        where = f"{self.uri}/{name}"
        attrs = meta.get("attributes") or {}
        tr = attrs.get("spatial:transform")
        epsg = f"EPSG:{32600 + zone}"
        if meta.get("node_type") != "group" or attrs.get("proj:code") != epsg or not _north_up_10m(tr):
            raise TessvrtError(f"{where} is not a TESSERA zone group (expected proj:code {epsg} and a 10 m north-up "
                               f"spatial:transform, found {attrs.get('proj:code')!r}, {tr!r})")
        arrays = {}
        for a in ("embeddings", "scales", "time"):
            m = self.store.metadata(f"{name}/{a}")
            if m is None:
                raise TessvrtError(f"{where} has no {a!r} array: not a TESSERA zone group")
            arrays[a] = Array(self.store, f"{name}/{a}", m)
        emb, sc, tm = arrays["embeddings"], arrays["scales"], arrays["time"]
        if (emb.dtype != np.int8 or len(emb.shape) != 4 or emb.shape[1] != BANDS or sc.dtype != np.float32
                or sc.shape != (emb.shape[0], *emb.shape[2:]) or tm.shape != emb.shape[:1]):
            raise TessvrtError(f"{where}: arrays are not TESSERA-shaped (embeddings {emb.dtype} {emb.shape}, "
                               f"scales {sc.dtype} {sc.shape}, time {tm.shape}; expected int8 (T, {BANDS}, H, W), "
                               "float32 (T, H, W), (T,))")
        with Pool(4, "tessvrt-zarr-meta") as pool:
            years = [int(v) for v in tm.read((slice(0, tm.shape[0]),), pool)]
        return ZoneGroup(name, zone, float(tr[2]), float(tr[5]), emb.shape[2], emb.shape[3], years, emb, sc)


def _north_up_10m(tr: object) -> bool:
    """A [10, 0, x, 0, -10, y] transform whose origin is on the 10 m grid."""
    try:
        a, b, c, d, e, f = (float(v) for v in tr)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return False
    return (a, b, d, e) == (PIXEL, 0.0, 0.0, -PIXEL) and c % PIXEL == 0 and f % PIXEL == 0


def open_store(dataset: str, source: str | None = None, endpoint: str | None = None) -> TesseraStore:
    """The dataset's Zarr store in a bucket layout (datasets.MIRRORS); refuses a store not shaped like TESSERA's."""
    ds = datasets.zarr_dataset(dataset)
    mirror = datasets.mirror(source)
    ep = Endpoint.parse(endpoint or mirror.endpoint)
    store = Store(ep, mirror.bucket, mirror.zarr_prefix(ds))
    root = store.metadata("")
    if root is None:
        raise TessvrtError(f"no Zarr store at {store.uri().rstrip('/')} ({ds.label}); check --source and --endpoint")
    attrs = root.get("attributes") or {}
    if root.get("node_type") != "group" or not any(str(k).startswith("geoemb:") for k in attrs):
        raise TessvrtError(f"{store.uri().rstrip('/')} is a Zarr store but not a TESSERA one (its root group has no "
                           "geoemb: attributes); check --dataset, --source and --endpoint")
    return TesseraStore(ds, store, attrs)


def region_windows(west: float, south: float, east: float, north: float) -> list[Window]:
    """A lon/lat box cut at zone edges and the equator, each part the pixels whose centres lie in its
    UTM envelope (upstream read_region's contract: edges densified, bounds inclusive), on 326NN/327NN."""
    out = []
    z0, z1 = utm_zone(west), utm_zone(east)
    for z in range(z0, z1 + 1):
        w, e = max(west, -180.0 + 6 * (z - 1)), min(east, -180.0 + 6 * z)
        if e <= w:
            continue
        for s, n, base in ((max(south, 0.0), north, 32600), (south, min(north, 0.0), 32700)):
            if n <= s:
                continue
            env = _to_utm(base + z).transform_bounds(w, s, e, n, densify_pts=21)
            win = Window.covering(base + z, *env)
            if win.width and win.height:
                out.append(win)
    return out




@dataclass
class Counts:
    """What a read found: pixels not computed yet (+inf scales) and pixels beyond the store's grid."""

    not_computed: int = 0
    outside: int = 0


class ZarrPixels:
    """A zone window's pixels from a store, for materialise's zone writer: fetch() starts reading an
    output chunk (shard indexes, then coalesced chunk GETs on the fetch pool, planned on a small
    coordinating pool so fetch threads never wait on each other), chunk() dequantises it."""

    def __init__(self, group: ZoneGroup, t: int, win: Window):
        self.group, self.t, self.win = group, t, win
        self.row0, self.col0 = group.offset(win)
        self.counts = Counts()
        self._start = group.embeddings.store.traffic.bytes
        self._plan: Pool | None = None  # made on the first fetch, closed by close()

    @property
    def remote_bytes(self) -> int:
        return self.group.embeddings.store.traffic.bytes - self._start

    def missing(self) -> list[str]:
        return []

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
            return None, None, rs, cs
        if self._plan is None:
            self._plan = Pool(4, "tessvrt-zarr")
        emb = self._plan.submit(g.embeddings.read, (slice(self.t, self.t + 1), slice(0, BANDS), rs, cs), pool)
        sc = self._plan.submit(g.scales.read, (slice(self.t, self.t + 1), rs, cs), pool)
        return emb, sc, rs, cs

    def chunk(self, cpu: Pool | Executor, pending: tuple, y0: int, x0: int, h: int, w: int, bands: list[int]) -> np.ndarray:
        """(bands, h, w) float32: int8 x scale where the scale is valid, NaN elsewhere and beyond the grid."""
        emb_f, sc_f, rs, cs = pending
        out = np.full((len(bands), h, w), np.nan, np.float32)
        if emb_f is None:
            self.counts.outside += h * w
            return out
        emb, sc = emb_f.result()[0], sc_f.result()[0]
        oy, ox = rs.start - (self.row0 + y0), cs.start - (self.col0 + x0)
        self.counts.outside += h * w - sc.size
        self.counts.not_computed += int(np.isposinf(sc).sum())
        dequantise_into(cpu, out[:, oy:oy + sc.shape[0], ox:ox + sc.shape[1]], emb, sc, bands)
        return out


def dequantise_into(cpu: Pool | Executor | None, out: np.ndarray, emb: np.ndarray, sc: np.ndarray, bands: list[int]) -> None:
    """out (bands, h, w) = int8 x scale (float32, bit for bit numpy's), NaN where the scale is invalid."""
    sel = None if bands == list(range(1, BANDS + 1)) else np.asarray(bands) - 1
    s = np.where(scales.valid(sc), sc, np.float32(np.nan))

    def rows(a: int, b: int) -> None:
        e = emb[:, a:b] if sel is None else emb[sel, a:b]
        np.multiply(e, s[None, a:b], out=out[:, a:b])

    h = out.shape[1]
    step = max(1, -(-h // 8))
    parts = [(a, min(a + step, h)) for a in range(0, h, step)]
    if cpu is None:
        for a, b in parts:
            rows(a, b)
    else:
        list(cpu.map(lambda ab: rows(*ab), parts))


def plan_region(dataset: str, bbox: str | tuple[float, float, float, float], year: int, source: str | None = None,
                endpoint: str | None = None) -> tuple[TesseraStore, list[ZoneJob]]:
    """The per-zone outputs of a lon/lat box from a dataset's store, every check done before a pixel is read:
    a store not shaped like TESSERA's, a missing zone group or a year not in the store is one TessvrtError."""
    from . import __version__
    from .build import BBox
    from .grid import zone_label

    box = BBox.parse(bbox) if isinstance(bbox, str) else BBox(*bbox)
    ts = open_store(dataset, source, endpoint)
    jobs = []
    for win in region_windows(box.west, box.south, box.east, box.north):
        g = ts.require(win.epsg % 100)
        t = g.time_index(year, f"{ts.uri}/{g.name}")
        r, c = g.offset(win)
        if r >= g.height or c >= g.width or r + win.height <= 0 or c + win.width <= 0:
            continue  # beyond the group's grid: the store holds nothing there
        meta = {"TESSERA_DATASET": ts.dataset.name, "TESSERA_DATASET_VERSION": ts.dataset.version,
                "TESSERA_VARIANT": ts.dataset.variant, "TESSERA_YEAR": str(year), "TESSVRT_SOURCE": f"{ts.uri}/{g.name}",
                "TESSVRT_BBOX": f"{box.west:g},{box.south:g},{box.east:g},{box.north:g}",
                "TESSVRT_VERSION": __version__, "TESSVRT_ZONE": f"EPSG:{win.epsg}"}
        jobs.append(ZoneJob(zone_label(win.epsg), win, ZarrPixels(g, t, win), meta))
    if not jobs:
        raise TessvrtError(f"{ts.uri} holds nothing in --bbox {box.west:g},{box.south:g},{box.east:g},{box.north:g} "
                           "(the region lies beyond its zone grids); choose a region the dataset covers")
    return ts, jobs


@dataclass
class Point:
    """A sampled pixel: where it is and what the store holds there."""

    lon: float
    lat: float
    status: str  # valid, water, invalid, nodata (not computed yet), outside
    epsg: int | None = None
    col: int | None = None  # global column I of the pixel (x in [10 I, 10 I + 10))
    row: int | None = None  # global row J of the pixel (y in [10 J, 10 J + 10))
    scale: float | None = None
    values: np.ndarray | None = None  # (bands,) float32 when valid


def status_of(s: float) -> str:
    """A scale's meaning: valid, water (NaN), nodata (+inf: land not computed yet) or invalid (anything else)."""
    if bool(scales.valid(np.float32(s))):
        return "valid"
    if math.isnan(s):
        return "water"
    return "nodata" if s == math.inf else "invalid"


def point_pixel(lon: float, lat: float, epsg: int | None = None) -> tuple[int, int, int]:
    """(epsg, col I, row J) of the 10 m pixel containing a point, in its UTM zone (or epsg)."""
    epsg = epsg or utm_epsg(lon, lat)
    e, n = _to_utm(epsg).transform(lon, lat)
    return epsg, math.floor(e / PIXEL), math.floor(n / PIXEL)


def sample_store(ts: TesseraStore, year: int, points: list[tuple[float, float]], bands: list[int],
                 workers: int = 8) -> list[Point]:
    """Each point's pixel from its zone group: one read per point of the inner chunks holding it
    (chunks shared by points are fetched once per call through the shard-index cache)."""
    out: list[Point] = []
    pending: list[tuple[Point, ZoneGroup, int, Future, Future]] = []
    with Pool(workers, "tessvrt-fetch") as pool, Pool(4, "tessvrt-zarr") as plan:
        for lon, lat in points:
            epsg, col, row = point_pixel(lon, lat)
            p = Point(lon, lat, "outside", epsg, col, row)
            out.append(p)
            g = ts.zone(epsg % 100)
            if g is None:
                continue
            t = g.time_index(year, f"{ts.uri}/{g.name}")
            r, c = g.offset(Window(epsg, col, row, 1, 1))
            if not (0 <= r < g.height and 0 <= c < g.width):
                continue
            emb = plan.submit(g.embeddings.read, (slice(t, t + 1), slice(0, BANDS), slice(r, r + 1), slice(c, c + 1)),
                              pool)
            sc = plan.submit(g.scales.read, (slice(t, t + 1), slice(r, r + 1), slice(c, c + 1)), pool)
            pending.append((p, g, t, emb, sc))
        for p, _, _, emb, sc in pending:
            s = sc.result()[0]
            p.scale = float(s[0, 0])
            p.status = status_of(p.scale)
            v = np.full((len(bands), 1, 1), np.nan, np.float32)
            dequantise_into(None, v, emb.result()[0], s, bands)
            p.values = v[:, 0, 0]
    return out


__all__ = ["open_store", "region_windows", "plan_region", "ZarrPixels", "TesseraStore", "ZoneGroup", "sample_store", "Point",
           "status_of", "point_pixel", "dequantise_into"]

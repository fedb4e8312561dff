"""TESSERA's Zarr stores (upstream's main format): zone groups, years, regions and pixel reads.

A store holds one group per UTM zone (`utm31`, ...) on the north EPSG (326NN) with the zone's
south at negative northings; arrays `embeddings` int8 (time, band, y, x) and `scales` float32
(time, y, x), sharded (SPEC.md, "Zarr stores"). tessvrt writes a zone's south in 327NN as its
npy outputs do: the store's northing plus 10,000,000, a multiple of 10 m, so pixels stay put.
Valid pixels follow upstream's rule (scales.valid); +inf is "not computed yet" and is counted.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from . import scales
from .errors import TessvrtError
from .grid import PIXEL, Window, _to_utm, utm_epsg, utm_zone
from .scales import dequantise_into
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


__all__ = ["open_store", "region_windows", "TesseraStore", "ZoneGroup", "sample_store", "Point", "status_of", "point_pixel"]

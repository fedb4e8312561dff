"""TESSERA's Zarr stores (upstream's main format): zone groups, years, regions and pixel reads.

A store holds one group per UTM zone (`utm31`, ...) on the north EPSG (326NN) with the zone's
south at negative northings; arrays `embeddings` int8 (time, band, y, x) and `scales` float32
(time, y, x), sharded (SPEC.md, "Zarr stores"). tessvrt writes a zone's south in 327NN as its
npy outputs do: the store's northing plus 10,000,000, a multiple of 10 m, so pixels stay put.
Valid pixels follow upstream's rule (scales.valid); +inf is "not computed yet" and is counted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import scales
from .errors import TessvrtError
from .grid import PIXEL, Window, _to_utm, utm_epsg, utm_zone
from .source import datasets
from .source.datasets import Dataset
from .source.s3 import Endpoint, Pool
from .source.zarr import Array, Store

BANDS = 128
SOUTH = 10_000_000.0  # false northing of the 327NN zones
MAX_YEARS = 1000  # time steps a zone group may declare
MAX_ROWS, MAX_COLS = 2_100_000, 200_000  # pixels a zone group may declare: pole to pole, 2,000 km of easting


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
        if not isinstance(attrs, dict):
            raise TessvrtError(f"{where}/zarr.json: attributes are a JSON {type(attrs).__name__}, not an object: "
                               "not a TESSERA zone group")
        tr = attrs.get("spatial:transform")
        epsg = f"EPSG:{32600 + zone}"
        if meta.get("node_type") != "group" or attrs.get("proj:code") != epsg or not _north_up_10m(tr):
            raise TessvrtError(f"{where} is not a TESSERA zone group (expected proj:code {epsg} and a 10 m north-up "
                               f"spatial:transform, found {str(attrs.get('proj:code'))[:40]!r}, {str(tr)[:80]})")
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
        if emb.shape[2] > MAX_ROWS or emb.shape[3] > MAX_COLS:
            raise TessvrtError(f"{where}: embeddings declare {emb.shape[2]:,} x {emb.shape[3]:,} pixels, more than a UTM "
                               f"zone holds ({MAX_ROWS:,} x {MAX_COLS:,} at 10 m): not a TESSERA zone group")
        years = _years(tm, f"{where}/time")
        return ZoneGroup(name, zone, float(tr[2]), float(tr[5]), emb.shape[2], emb.shape[3], years, emb, sc)


def _years(tm: Array, where: str) -> list[int]:
    """The time coordinate as years, refused in one line unless it is whole, finite and distinct numbers
    (a duplicate year made the first slot win; a NaN, a complex value or 10^12 entries were tracebacks)."""
    if tm.dtype.kind not in "iuf":
        raise TessvrtError(f"{where}: data type {tm.dtype} is not years (expected integers); not a TESSERA store")
    if tm.shape[0] > MAX_YEARS:  # checked before it is read: 10^12 entries tried to allocate terabytes
        raise TessvrtError(f"{where} declares {tm.shape[0]:,} time steps (at most {MAX_YEARS} years are read): "
                           "not a TESSERA store")
    with Pool(4, "tessvrt-zarr-meta") as pool:
        raw = tm.read((slice(0, tm.shape[0]),), pool)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(raw) | (raw != np.round(raw)) | (np.abs(raw) > 100_000) if raw.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise TessvrtError(f"{where} holds {float(raw[bad][0])}, not a year: not a TESSERA store")
    years = [int(v) for v in raw]
    dup = sorted({y for y in years if years.count(y) > 1})
    if dup:
        raise TessvrtError(f"{where} lists year {dup[0]} {years.count(dup[0])} times ({years}): which slot holds "
                           "it is ambiguous; the store is damaged: report it upstream")
    return years


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
        raise TessvrtError(_no_store(store, ds, mirror))
    attrs = root.get("attributes") or {}
    if root.get("node_type") != "group" or not isinstance(attrs, dict) or not any(str(k).startswith("geoemb:") for k in attrs):
        raise TessvrtError(f"{store.uri().rstrip('/')} is a Zarr store but not a TESSERA one (its root group has no "
                           "geoemb: attributes); check --dataset, --source and --endpoint")
    return TesseraStore(ds, store, attrs)


def _no_store(store: Store, ds: Dataset, mirror: datasets.Mirror) -> str:
    """Why there is no store: the key asked for, and what the server does hold under zarr/ and npy/
    (a listing when the server allows one; the old message blamed --source and --endpoint alone)."""
    from .source.s3 import client

    asked = store.uri("zarr.json")
    held: dict[str, list[str]] = {}
    try:
        for fmt in ("zarr", "npy"):
            resp = client(store.ep).list_objects_v2(Bucket=store.bucket, Prefix=f"{mirror.prefix}{fmt}/", Delimiter="/",
                                                    MaxKeys=100)
            held[fmt] = sorted(str(c.get("Prefix", "")).rstrip("/").rsplit("/", 1)[-1] for c in resp.get("CommonPrefixes", []))
    except Exception:  # noqa: BLE001 - listing is only a hint: a server may refuse it (403) or be down
        held = {}
    where = f"{ds.label}: no Zarr store at {store.uri().rstrip('/')} (asked for {asked}: not found) on {store.ep.https_base}"
    if not held:
        return f"{where}; check --dataset, --source and --endpoint"
    zarr = [f"{z} (--dataset {next((d.name for d in datasets.DATASETS if d.zarr == z), z)})" for z in held["zarr"]]
    return (f"{where}; that bucket holds Zarr stores: {', '.join(zarr) or 'none'}; npy datasets (--format npy): "
            f"{', '.join(held['npy']) or 'none'}; choose one of those with --dataset, or check --source and --endpoint")


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




@dataclass(slots=True)
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
    """Each point's pixel from its zone group, every inner chunk fetched once per call however many points
    share it (2,000 identical points made 4,000 GETs when each point read its own chunks).

    Points are placed in numpy, grouped by the scales chunk holding them, then (only where the scale
    is valid) by the embeddings chunk; at most SAMPLE_QUEUE chunk reads are in flight and each is
    scattered into the result as it lands, so memory is the result plus a bounded number of chunks.
    A valid scale over an embeddings chunk the store does not hold (upstream writes embeddings after
    scales; zarr-python would read zeros) is status `missing`, with NaN values, never 0.0.
    """
    n = len(points)
    lon = np.fromiter((p[0] for p in points), np.float64, n)
    lat = np.fromiter((p[1] for p in points), np.float64, n)
    zone = np.clip(np.floor((lon + 180.0) / 6.0).astype(np.int64) + 1, 1, 60)
    epsg = np.where(lat >= 0, 32600, 32700) + zone
    col = np.zeros(n, np.int64)
    row = np.zeros(n, np.int64)
    for e in np.unique(epsg):
        m = epsg == e
        x, y = _to_utm(int(e)).transform(lon[m], lat[m])
        col[m], row[m] = np.floor(np.asarray(x) / PIXEL), np.floor(np.asarray(y) / PIXEL)
    sc = np.full(n, np.nan, np.float32)
    inside = np.zeros(n, bool)
    missing = np.zeros(n, bool)
    values = np.full((n, len(bands)), np.nan, np.float32)
    band_idx = np.asarray(bands) - 1
    with Pool(workers, "tessvrt-fetch") as pool, Pool(min(workers, 8), "tessvrt-zarr") as plan:
        for e in np.unique(epsg):
            g = ts.zone(int(e) % 100)
            if g is None:
                continue
            t = g.time_index(year, f"{ts.uri}/{g.name}")
            pts = np.flatnonzero(epsg == e)
            top = PIXEL * (row[pts] + 1) - (SOUTH if e >= 32700 else 0.0)
            r = np.rint((g.oy - top) / PIXEL).astype(np.int64)
            c = np.rint((PIXEL * col[pts] - g.ox) / PIXEL).astype(np.int64)
            ok = (r >= 0) & (r < g.height) & (c >= 0) & (c < g.width)
            pts, r, c = pts[ok], r[ok], c[ok]
            inside[pts] = True

            def put_scales(idx: np.ndarray, rr: np.ndarray, cc: np.ndarray, arr: np.ndarray, gone: np.ndarray) -> None:
                sc[idx] = arr[0, rr, cc]

            _gather(g.scales, t, g.scales.chunk[1:], pts, r, c, pool, plan, put_scales, None)
            good = scales.valid(sc[pts])
            pts, r, c = pts[good], r[good], c[good]

            def put_values(idx: np.ndarray, rr: np.ndarray, cc: np.ndarray, arr: np.ndarray, gone: np.ndarray) -> None:
                e8 = arr[0][:, rr, cc][band_idx].T  # (points, bands) int8
                v = e8 * sc[idx][:, None]  # float32, as dequantise_into computes it
                hole = gone[rr, cc]
                v[hole] = np.nan
                missing[idx[hole]] = True
                values[idx] = v

            _gather(g.embeddings, t, g.embeddings.chunk[2:], pts, r, c, pool, plan, put_values, BANDS)
    status = np.full(n, "outside", object)
    status[inside & np.isnan(sc)] = "water"
    status[inside & np.isposinf(sc)] = "nodata"
    status[inside & np.isfinite(sc) | inside & np.isneginf(sc)] = "invalid"
    status[inside & scales.valid(sc)] = "valid"
    status[missing] = "missing"
    out = []
    for i in range(n):
        p = Point(float(lon[i]), float(lat[i]), str(status[i]), int(epsg[i]), int(col[i]), int(row[i]))
        if inside[i]:
            p.scale, p.values = float(sc[i]), values[i]
        out.append(p)
    return out


SAMPLE_QUEUE = 32  # chunk reads in flight at once in sample_store (each up to one inner chunk: 128 KB upstream)


def _gather(arr: Array, t: int, chunk: tuple[int, int], pts: np.ndarray, r: np.ndarray, c: np.ndarray,
            pool: Pool, plan: Pool, put: Callable, bands: int | None) -> None:
    """Read each (y, x) chunk of arr holding a point once, at most SAMPLE_QUEUE at a time, and hand each
    to put(point indices, rows and cols in the chunk, chunk data, (h, w) mask of pixels no stored chunk holds)."""
    if not len(pts):
        return
    ch, cw = chunk
    ncol = -(-arr.shape[-1] // cw)
    keys = (r // ch) * ncol + c // cw
    order = np.argsort(keys, kind="stable")
    uniq, first = np.unique(keys[order], return_index=True)
    bounds = [*first[1:], len(order)]
    queue: deque = deque()

    def land() -> None:
        fut, idx, rr, cc, absent, shape = queue.popleft()
        data = fut.result()
        gone = np.zeros(shape, bool)
        for sl in absent:
            gone[sl[-2], sl[-1]] = True
        put(idx, rr, cc, data, gone)

    for k, lo, hi in zip(uniq, first, bounds, strict=True):
        sel = order[lo:hi]
        y0, x0 = int(k // ncol) * ch, int(k % ncol) * cw
        ys, xs = slice(y0, min(y0 + ch, arr.shape[-2])), slice(x0, min(x0 + cw, arr.shape[-1]))
        win = (slice(t, t + 1), *(() if bands is None else (slice(0, bands),)), ys, xs)
        absent: list[tuple[slice, ...]] = []
        fut = plan.submit(arr.read, win, pool, absent)
        queue.append((fut, pts[sel], r[sel] - y0, c[sel] - x0, absent, (ys.stop - y0, xs.stop - x0)))
        if len(queue) >= SAMPLE_QUEUE:
            land()
    while queue:
        land()


__all__ = ["open_store", "region_windows", "TesseraStore", "ZoneGroup", "sample_store", "Point", "status_of", "point_pixel"]

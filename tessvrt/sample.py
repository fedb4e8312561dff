"""tessvrt sample: the 128 dequantised values at points, with why a point has none.

From a Zarr store (default when the dataset has one: upstream's main format) each point costs the
inner chunk holding its pixel (plus the shard index, cached); from npy tiles, two ranged GETs of
one pixel's bytes in its owner tile (the manifest says which tiles exist). Values are those
materialise writes at the same pixel: Zarr, the zone group's pixel containing the point, on the
zone of the point's longitude; npy, the owner tile's pixel (the tile whose cell holds the pixel
centre), as the VRT and materialise decide. Unlike geotessera's probe, no neighbouring pixel
stands in for a missing one: a status says why there is no value.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import TessvrtError
from .grid import PIXEL, Tile, _to_lonlat, tile_grids
from .materialise import parse_bands
from .zarrstore import Point, open_store, point_pixel, sample_store, status_of

STATUSES = ("valid", "water", "nodata", "invalid", "missing", "outside")


def parse_point(text: str) -> tuple[float, float]:
    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError:
        raise TessvrtError(f"point {text!r} must be LON,LAT in degrees, e.g. 0.05,51.55") from None
    return check_point(lon, lat, repr(text))


def check_point(lon: float, lat: float, what: str) -> tuple[float, float]:
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise TessvrtError(f"point {what}: longitude must be within -180..180 and latitude -90..90 (LON,LAT order)")
    return lon, lat


def read_points(path: str | Path) -> list[tuple[float, float]]:
    """Points of a CSV (columns lon,lat or longitude,latitude or x,y) or a GeoJSON of Point/MultiPoint features.

    The file must be UTF-8 (a byte-order mark is allowed); any problem is one TessvrtError naming the
    line (CSV) or feature (GeoJSON) and the value, never a traceback.
    """
    p = Path(path)
    if not p.is_file():
        raise TessvrtError(f"--points {p} does not exist")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TessvrtError(f"--points {p}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TessvrtError(f"--points {p}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as "
                           "UTF-8 CSV or GeoJSON") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise TessvrtError(f"--points {p}: a NUL byte on line {line}: not a text file; give a UTF-8 CSV or GeoJSON")
    if p.suffix.lower() in (".geojson", ".json"):
        return _geojson_points(text, p)
    return _csv_points(text, p)


def points_inside(points: list[tuple[float, float]], region: str | Path | None = None, country: str | None = None,
                  bbox: str | None = None) -> tuple[list[tuple[float, float]], int]:
    """(the points inside the region or on its boundary, in their order; how many were left out)."""
    from .region import Region

    area = Region.from_options(bbox=bbox, region=region, country=country)
    if area is None or not points:
        return points, 0
    lon, lat = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    keep = area.contains(lon, lat)
    return [p for p, k in zip(points, keep, strict=True) if k], int((~keep).sum())


def _csv_points(text: str, p: Path) -> list[tuple[float, float]]:
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise TessvrtError(f"--points {p}: not a CSV ({exc})") from None
    names = {k.strip().lower(): k for k in (rows[0].keys() if rows else []) if k is not None}
    for lo, la in (("lon", "lat"), ("longitude", "latitude"), ("x", "y")):
        if lo in names and la in names:
            out = []
            for i, r in enumerate(rows):
                where = f"line {i + 2} of {p}"
                vals = []
                for col in (lo, la):
                    v = r.get(names[col])
                    try:
                        vals.append(float(v))  # type: ignore[arg-type]
                    except (TypeError, ValueError):
                        shown = "nothing" if v is None or not v.strip() else repr(v)
                        raise TessvrtError(f"--points {where}: {col} is {shown}, not a number") from None
                out.append(check_point(vals[0], vals[1], f"{r[names[lo]].strip()},{r[names[la]].strip()} on {where}"))
            return out
    raise TessvrtError(f"--points {p}: no lon,lat (or longitude,latitude or x,y) columns in the CSV header")


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _geojson_points(text: str, p: Path) -> list[tuple[float, float]]:
    try:
        doc = json.loads(text)
    except RecursionError:
        raise TessvrtError(f"--points {p}: JSON nested too deeply to be a GeoJSON of points") from None
    except ValueError as exc:
        raise TessvrtError(f"--points {p}: not JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise TessvrtError(f"--points {p}: the FeatureCollection has no list of features")
    elif isinstance(doc, dict):
        feats = [doc]
    else:
        raise TessvrtError(f"--points {p}: a JSON {type(doc).__name__}, not a GeoJSON FeatureCollection of points")
    out: list[tuple[float, float]] = []
    for i, f in enumerate(feats, 1):
        where = f"feature {i} of {p}"
        geom = f.get("geometry", f) if isinstance(f, dict) else None
        kind = geom.get("type") if isinstance(geom, dict) else None
        if kind not in ("Point", "MultiPoint"):
            what = f"a {kind} geometry" if isinstance(kind, str) else f"{json.dumps(geom)[:60]} as geometry"
            raise TessvrtError(f"--points {where}: {what}, not a Point or MultiPoint")
        assert isinstance(geom, dict)
        coords = geom.get("coordinates")
        shown = json.dumps(coords)[:60]
        positions = [coords] if kind == "Point" else coords
        if not isinstance(positions, list) or not positions:
            raise TessvrtError(f"--points {where}: {kind} coordinates {shown} hold no position [lon, lat]")
        for c in positions:
            if not (isinstance(c, list) and len(c) >= 2 and all(_number(v) for v in c[:2])):
                raise TessvrtError(f"--points {where}: {kind} coordinates {shown}: {json.dumps(c)[:40]} is not a "
                                   "position [lon, lat] of two numbers")
            out.append(check_point(float(c[0]), float(c[1]), f"{c[0]},{c[1]} in {where}"))
    return out


def swap_hint(points: list[Point], inside: Callable[[float, float], bool]) -> str | None:
    """Build's swapped-axes hint for points: the outside points that, read as LAT,LON, would be inside."""
    swapped = [pt for pt in points if pt.status == "outside" and abs(pt.lon) <= 90 and pt.lon != pt.lat
               and inside(pt.lat, pt.lon)]
    if not swapped:
        return None
    e = swapped[0]
    return (f"{len(swapped)} of the {sum(pt.status == 'outside' for pt in points)} point(s) outside the data would be "
            f"inside with longitude and latitude swapped (e.g. {e.lon:g},{e.lat:g} -> {e.lat:g},{e.lon:g}): points "
            "are LON,LAT, longitude first")


def sample(
    dataset: str,
    year: int,
    points: list[tuple[float, float]] | list[str],
    *,
    bands: list[int] | str | None = None,
    format: str | None = None,  # noqa: A002 - the CLI's --format
    source: str | None = None,
    endpoint: str | None = None,
    manifest: str | None = None,
    workers: int = 8,
) -> list[Point]:
    """Values and status at each point (lon, lat), in order; format 'zarr' (default when the dataset has a
    store) or 'npy'."""
    return sample_with_hint(dataset, year, points, bands=bands, format=format, source=source, endpoint=endpoint,
                            manifest=manifest, workers=workers)[0]


def sample_with_hint(
    dataset: str,
    year: int,
    points: list[tuple[float, float]] | list[str],
    *,
    bands: list[int] | str | None = None,
    format: str | None = None,  # noqa: A002 - the CLI's --format
    source: str | None = None,
    endpoint: str | None = None,
    manifest: str | None = None,
    workers: int = 8,
) -> tuple[list[Point], str | None]:
    """`sample`, plus a hint when outside points would be inside with the axes swapped (typed LAT,LON)."""
    from .source.datasets import DATASETS

    pts = [parse_point(p) if isinstance(p, str) else check_point(float(p[0]), float(p[1]), f"{p[0]},{p[1]}")
           for p in points]
    if not pts:
        raise TessvrtError("no points given: pass LON,LAT arguments or --points FILE")
    band_list = bands if isinstance(bands, list) else parse_bands(bands)
    has_zarr = any(dataset.strip() in (d.zarr, d.npy, d.variant) and d.zarr for d in DATASETS)
    fmt = format or ("zarr" if has_zarr else "npy")
    if fmt == "zarr":
        ts = open_store(dataset, source, endpoint)
        res = sample_store(ts, year, pts, band_list, workers)
        return res, swap_hint(res, lambda lon, lat: _in_store(ts, lon, lat))
    if fmt == "npy":
        res, has_tile = _sample_npy(dataset, year, pts, band_list, source, endpoint, manifest, workers)
        return res, swap_hint(res, lambda lon, lat: has_tile(Tile.containing(lon, lat)))
    raise TessvrtError(f"--format {format!r} must be zarr or npy")


def _in_store(ts: object, lon: float, lat: float) -> bool:
    """Whether a point's pixel lies in a zone group's grid (sample_store's test for 'outside'; no chunk is read)."""
    from .grid import Window

    epsg, col, row = point_pixel(lon, lat)
    g = ts.zone(epsg % 100)  # type: ignore[attr-defined]
    if g is None:
        return False
    r, c = g.offset(Window(epsg, col, row, 1, 1))
    return 0 <= r < g.height and 0 <= c < g.width


def _owner(lon: float, lat: float) -> tuple[Tile, int, int, int] | None:
    """(owner tile, epsg, col, row) of the pixel holding a point: the pixel in the point's zone, owned by
    the tile whose cell holds its centre, looked up again in that tile's zone when it lies across a seam."""
    epsg = None
    for _ in range(2):
        epsg, col, row = point_pixel(lon, lat, epsg)
        clon, clat = _to_lonlat(epsg).transform(PIXEL * col + 5.0, PIXEL * row + 5.0)
        t = Tile.containing(clon, clat)
        if t.epsg == epsg:
            return t, epsg, col, row
        epsg = t.epsg
    return None


def _sample_npy(dataset: str, year: int, pts: list[tuple[float, float]], bands: list[int], source: str | None,
                endpoint: str | None, manifest: str | None, workers: int) -> tuple[list[Point], Callable[[Tile], bool]]:
    from . import scales
    from .build import TileSource, _raw_layout
    from .source import datasets
    from .source.manifest import ManifestSource, read_manifest, select
    from .source.s3 import Endpoint, Pool, S3Location, fetch_range

    choice = datasets.npy_dataset(dataset)
    mirror = datasets.mirror(source)
    ep = Endpoint.parse(endpoint or mirror.endpoint)
    sel = select(read_manifest(ManifestSource.resolve(manifest, choice.dataset, mirror, ep).fetch()),
                 choice.dataset, year)
    layouts: dict[Tile, TileSource] = {}

    def one(lon: float, lat: float) -> Point:
        found = _owner(lon, lat)
        if found is None:
            return Point(lon, lat, "outside")
        t, epsg, col, row = found
        p = Point(lon, lat, "outside", epsg, col, row)
        if (t.lon_i, t.lat_i) not in sel.rows.index:
            return p
        if t not in layouts:
            g = tile_grids([t])[0]
            layouts[t] = _raw_layout(t, g, sel.rows.loc[(t.lon_i, t.lat_i)].to_dict(), sel, mirror, ep, "s3")
        ts = layouts[t]
        w = ts.grid.window
        r, c = w.row0 - row, col - w.col0
        if not (0 <= r < w.height and 0 <= c < w.width):
            return p
        k, n = r * w.width + c, ts.raw.scale_bands
        what = f"tile {t.name}"
        emb = np.frombuffer(fetch_range(ep, S3Location.parse(ts.grid_uri), ts.raw.grid_offset + k * 128, 128,
                                        ts.grid_size, what), np.int8)
        sc = np.frombuffer(fetch_range(ep, S3Location.parse(ts.scales_uri), ts.raw.scales_offset + k * 4 * n, 4 * n,
                                       ts.scales_size, what), "<f4")
        idx = np.asarray(bands) - 1
        s = sc[idx] if n > 1 else np.repeat(sc, len(idx))
        p.scale = float(s[0])
        p.status = status_of(p.scale)
        p.values = (emb[idx].astype(np.float32) * np.where(scales.valid(s), s, np.float32(np.nan))).astype(np.float32)
        return p

    with Pool(workers, "tessvrt-fetch") as pool:
        return pool.map(lambda ll: one(*ll), pts), lambda t: (t.lon_i, t.lat_i) in sel.rows.index


def to_rows(points: list[Point], bands: list[int]) -> list[dict]:
    """One dict a point: lon, lat, status, crs, x, y (pixel centre), scale, embedding_NNN values (None = NaN)."""
    out = []
    for p in points:
        row = {"lon": p.lon, "lat": p.lat, "status": p.status, "crs": f"EPSG:{p.epsg}" if p.epsg else None,
               "x": PIXEL * p.col + 5.0 if p.col is not None else None,
               "y": PIXEL * p.row + 5.0 if p.row is not None else None,
               "scale": None if p.scale is None or not math.isfinite(p.scale) else p.scale}
        vals = p.values if p.values is not None else np.full(len(bands), np.nan, np.float32)
        row.update({f"embedding_{b - 1:03d}": (float(v) if np.isfinite(v) else None) for b, v in zip(bands, vals, strict=True)})
        out.append(row)
    return out


def to_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return buf.getvalue()


__all__ = ["sample", "sample_with_hint", "swap_hint", "read_points", "parse_point", "to_rows", "to_csv", "STATUSES"]

"""Sample TESSERA Zarr stores with upstream's layout, for the tests, the demo and the benchmarks.

Written with zarr-python 3 (the `test` extra) in the layout geotessera 0.11's zarr-init/zarr-fill write
(less their stretch-statistics arrays and zarr-cm convention registrations): root group with geoemb:
attributes, one group per UTM zone on the north EPSG (south at
negative northings) with proj:/spatial: attributes, `embeddings` int8 (T, 128, H, W) and `scales`
float32 (T, H, W) sharded with Blosc zstd 3, scales filled with +inf (never written), coordinate
arrays x, y (pixel centres), time, band, and consolidated metadata. Data sits at the equator where
zones 31 and 32 meet, across a shard corner, and holds water (NaN), explicit +inf, invalid scales
(0, negative, 1.0, 1.5, huge, -inf) and unwritten chunks; the rest of the 4096-px shards stays
empty, so the store is a few MB. `layout="small"` uses small, non-square shards and chunks (shard
index at the start for scales) so shard edges are cheap to test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANDS = 128
YEARS = (2023, 2024)
# invalid scales planted in every zone at (row, col) offsets from its data rectangle's top-left
INVALID = ((3, 3, 0.0), (3, 4, -0.5), (3, 5, 1.0), (3, 6, 1.5), (3, 7, 3.4e38), (3, 8, -np.inf), (3, 9, 0.9999999))


@dataclass(frozen=True)
class ZoneSpec:
    """A zone group of the sample store: its grid and the rectangle of pixels that hold data."""

    zone: int
    ox: float  # grid origin easting (multiple of 10 m)
    oy: float  # grid origin northing on 326NN (multiple of 10 m)
    height: int
    width: int
    data: tuple[int, int, int, int]  # rows r0, r1, cols c0, c1 written with data (2024)
    hole: tuple[int, int]  # (row, col) of a chunk-aligned 32x32 block left unwritten inside the data


# zone 31: shard corner at row 4096 / col 4096 (x 833,600, lon ~5.9966 E at the equator), equator at row 4128,
# its east edge (lon 6 E, x ~833,978, col ~4134) runs through the data.
# zone 32: its west edge (lon 6 E, x ~166,022, col ~202) runs through the data; equator at row 2048.
ZONES = (
    ZoneSpec(31, 792_640.0, 41_280.0, 4352, 4160, (4050, 4180, 4040, 4160), (4064, 4064)),
    ZoneSpec(32, 164_000.0, 20_480.0, 4096, 512, (2000, 2120, 150, 300), (2016, 224)),
)
LAYOUTS = {
    # (embeddings chunks, shards), (scales chunks, shards, index location)
    "upstream": (((1, BANDS, 32, 32), (1, BANDS, 4096, 4096)), ((1, 32, 32), (1, 4096, 4096), "end")),
    "small": (((1, BANDS, 32, 16), (1, BANDS, 128, 64)), ((1, 16, 64), (1, 128, 128), "start")),
}


def zone_values(spec: ZoneSpec, year: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (128, h, w) int8 and scales (h, w) float32 of a zone's data rectangle: smooth, so
    chunks compress like real ones, one row holding every int8 value, and every kind of sentinel."""
    r0, r1, c0, c1 = spec.data
    h, w = r1 - r0, c1 - c0
    ph = spec.zone * 0.7 + (year - 2020) * 0.31
    y = np.arange(h, dtype=np.float32)[None, :, None]
    x = np.arange(w, dtype=np.float32)[None, None, :]
    b = np.arange(BANDS, dtype=np.float32)[:, None, None]
    v = 50 * np.sin(y / 41 + b * 0.21 + ph) * np.cos(x / 37 - b * 0.13) + 30 * np.sin(b * 0.5 + ph)
    emb = np.clip(np.rint(v), -128, 127).astype(np.int8)
    emb[:, 1, :] = ((np.arange(w)[None, :] * 128 + np.arange(BANDS)[:, None]) % 256 - 128).astype(np.int8)
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    s = (0.01 + 0.004 * np.sin(rr / 31.0 + ph) + 0.003 * np.cos(cc / 11.0)).astype(np.float32)
    s[(rr - h * 0.6) ** 2 / 30**2 + (cc - w * 0.3) ** 2 / 14**2 < 1] = np.nan  # water
    s[h // 4: h // 4 + 5, w // 2: w // 2 + 9] = np.inf  # written as "not computed yet"
    for r, c, val in INVALID:
        s[r, c] = val
    return emb, s


def write_store(folder: Path, layout: str = "upstream", zones: tuple[ZoneSpec, ...] = ZONES,
                years: tuple[int, ...] = YEARS) -> Path:
    """Write a sample store into folder (created); returns it. 2024 holds data; other years stay empty."""
    import zarr
    from zarr.codecs import BloscCodec

    (ec, es), (sc, ss, sloc) = LAYOUTS[layout]
    root = zarr.open_group(str(folder), mode="w", zarr_format=3)
    root.attrs.update({"geoemb:model": "tessera", "geoemb:dimensions": BANDS, "geoemb:build_version": "tessvrt-sample",
                       "geoemb:quantization": {"dtype": "int8", "scale": "per-pixel"}})
    blosc = BloscCodec(cname="zstd", clevel=3)
    for spec in zones:
        g = root.create_group(f"utm{spec.zone:02d}")
        t, h, w = len(years), spec.height, spec.width
        emb = g.create_array("embeddings", shape=(t, BANDS, h, w), chunks=ec, shards=es, dtype=np.int8,
                             fill_value=np.int8(0), compressors=blosc, dimension_names=["time", "band", "y", "x"])
        sca = g.create_array("scales", shape=(t, h, w), chunks=sc, shards={"shape": ss, "index_location": sloc},
                             dtype=np.float32, fill_value=np.float32("inf"), compressors=blosc,
                             dimension_names=["time", "y", "x"])
        coords = {"x": spec.ox + (np.arange(w) + 0.5) * 10.0, "y": spec.oy - (np.arange(h) + 0.5) * 10.0,
                  "time": np.array(years, np.int32), "band": np.arange(BANDS, dtype=np.int32)}
        for name, data in coords.items():
            a = g.create_array(name, shape=data.shape, dtype=data.dtype, fill_value=0, compressors=blosc,
                               dimension_names=[name])
            a[:] = data
        ti = years.index(2024)
        r0, r1, c0, c1 = spec.data
        e, s = zone_values(spec, 2024)
        emb[ti, :, r0:r1, c0:c1] = e
        sca[ti, r0:r1, c0:c1] = s
        hr, hc = spec.hole  # unwritten: zarr drops chunks equal to the fill value
        emb[ti, :, hr:hr + 32, hc:hc + 32] = 0
        sca[ti, hr:hr + 32, hc:hc + 32] = np.inf
        g.attrs.update({"proj:code": f"EPSG:{32600 + spec.zone}",
                        "spatial:dimensions": ["y", "x"],
                        "spatial:transform": [10.0, 0.0, spec.ox, 0.0, -10.0, spec.oy],
                        "spatial:shape": [h, w],
                        "spatial:bbox": [spec.ox, spec.oy - 10.0 * h, spec.ox + 10.0 * w, spec.oy]})
    zarr.consolidate_metadata(str(folder))
    return folder


def write_plain_store(folder: Path) -> Path:
    """A valid Zarr v3 store that is not TESSERA's (no geoemb: attributes): for the refusal tests."""
    import zarr

    root = zarr.open_group(str(folder), mode="w", zarr_format=3)
    root.attrs["title"] = "not embeddings"
    root.create_array("data", shape=(4, 4), dtype=np.float32)[:] = 1.0
    return folder


def upload(folder: Path, put: Callable[[str, bytes], None], uri: str) -> int:
    """Put every file of a store folder under s3://bucket/prefix (uri); returns the bytes uploaded."""
    n = 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            put(f"{uri.rstrip('/')}/{p.relative_to(folder).as_posix()}", data)
            n += len(data)
    return n


def reference(folder: Path, zone: int, year: int, rows: slice, cols: slice,
              bands: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (bands, h, w) with upstream's valid rule, raw scales (h, w)) read locally with zarr-python:
    the numpy reference the tests compare with. Rows/cols are group array indices (may run past the grid)."""
    import zarr

    g = zarr.open_group(str(folder), mode="r")[f"utm{zone:02d}"]
    ti = [int(v) for v in g["time"][:]].index(year)
    H, W = g["scales"].shape[1:]
    h, w = rows.stop - rows.start, cols.stop - cols.start
    sel = [b - 1 for b in (bands or range(1, BANDS + 1))]
    out = np.full((len(sel), h, w), np.nan, np.float32)
    raw = np.full((h, w), np.nan, np.float32)
    r0, r1, c0, c1 = max(rows.start, 0), min(rows.stop, H), max(cols.start, 0), min(cols.stop, W)
    if r1 > r0 and c1 > c0:
        e = np.asarray(g["embeddings"][ti, :, r0:r1, c0:c1])[sel]
        s = np.asarray(g["scales"][ti, r0:r1, c0:c1])
        ok = np.isfinite(s) & (s > 0) & (s < 1.0)
        v = e.astype(np.float32) * np.where(ok, s, np.float32(np.nan))[None]
        out[:, r0 - rows.start:r1 - rows.start, c0 - cols.start:c1 - cols.start] = v
        raw[r0 - rows.start:r1 - rows.start, c0 - cols.start:c1 - cols.start] = s
    return out, raw

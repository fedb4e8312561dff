"""tessvrt.open_region: lazy dask-backed DataArrays whose computed windows equal materialise's COGs bit for bit
(npy VRT, npy without a VRT, Zarr stores; local threads and a 2-process distributed cluster); a continent
opens from a synthetic manifest with no request to the bucket, a small graph and little memory."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from conftest import assert_same, run_cli
from reference import load_record

import tessvrt
from tessvrt.grid import Tile, Window, tile_grids
from tessvrt.lazy import NPY_CHUNKS, ZoneArray, axis_chunks, zarr_chunks
from tessvrt.source.datasets import DATASETS
from tessvrt.testing import LIVE

ROOT = "s3://us-west-2.opendata.source.coop/tessera/tessera/zarr"
ZONES_BOX = "5.9910,-0.0040,6.0080,0.0070"  # test_zarr's box across zones 31/32 and the equator: four parts
CROSS = "5.8,88.0,6.2,88.2"  # the sample bucket's tiles across zones 31/32


@pytest.fixture(scope="module")
def npy_region(s3, tmp_path_factory):
    """The cross-zone VRT and materialise's COGs of it (all bands), per zone label."""
    out = tmp_path_factory.mktemp("lazy")
    vrt = out / "cross.vrt"
    run_cli("build", "--bbox", CROSS, "--year", "2024", "-o", str(vrt), "--endpoint", s3.url)
    res = tessvrt.materialise(vrt, out / "cross.tif", blocksize=128, overviews=False, compress="none")
    rec = load_record(vrt)
    return vrt, rec, {z["label"]: f for z, f in zip(rec["zones"], res.files, strict=True)}


@pytest.fixture(scope="module")
def zarr_region(s3, tmp_path_factory):
    """test_zarr's upstream-layout store on the S3 server, and materialise's COGs of ZONES_BOX (four parts)."""
    pytest.importorskip("zarr")
    from tessvrt.zarrsample import upload, write_store

    base = tmp_path_factory.mktemp("lazyzarr")
    for name, layout in (("v1.1-dclimate", "upstream"), ("v1", "small")):
        upload(write_store(base / name, layout), s3.put, f"{ROOT}/{name}")
    out = {}
    for name in ("v1.1-dclimate", "v1"):
        res = tessvrt.materialise(base / f"{name}.tif", dataset=name, bbox=ZONES_BOX, year=2024, endpoint=s3.url,
                                  blocksize=64, overviews=False, compress="none")
        out[name] = {Path(f).stem.rsplit("_", 1)[1]: f for f in res.files}
    return out


def cog(path: Path, bands: list[int] | None = None) -> np.ndarray:
    with rasterio.open(path) as d:
        assert np.isnan(d.nodata)
        return d.read(bands)


def windows(shape: tuple[int, int], edges: list[tuple[int, int]], seed: int = 0) -> list[tuple[slice, slice]]:
    """Random windows, windows on given (row, col) edges (tile or shard corners) and on the zone's own edges.

    The callers also compare the whole zone part, so these check the windowed path, not pixel coverage: random
    windows are at most 64 px a side (still across 32-px chunks and the small-chunks test's 64x100 dask chunks)."""
    h, w = shape
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(12):
        wh, ww = int(rng.integers(1, min(h, 64) + 1)), int(rng.integers(1, min(w, 64) + 1))
        y, x = int(rng.integers(0, h - wh + 1)), int(rng.integers(0, w - ww + 1))
        out.append((slice(y, y + wh), slice(x, x + ww)))
    for r, c in edges:
        out.append((slice(max(r - 7, 0), min(r + 9, h)), slice(max(c - 11, 0), min(c + 5, w))))
    for y, x in ((0, 0), (0, w - 20), (h - 15, 0), (h - 15, w - 20)):  # the zone part's corners and edges
        out.append((slice(max(y, 0), max(y, 0) + 15), slice(max(x, 0), max(x, 0) + 20)))
    return [(ys, xs) for ys, xs in out if ys.stop > ys.start and xs.stop > xs.start]


def tile_edges(rec: dict, zone: dict) -> list[tuple[int, int]]:
    """(row, col) in the zone window of every tile's top-left corner inside it."""
    z = Window(**zone["window"])
    out = []
    for t in rec["tiles"]:
        if t["epsg"] != zone["epsg"]:
            continue
        tw = tile_grids([Tile(round(t["lon"] * 100), round(t["lat"] * 100))])[0].window
        x, y = z.offset_of(tw)
        if 0 <= x < z.width and 0 <= y < z.height:
            out.append((y, x))
    return out


def check_zone(arr, ref: np.ndarray, edges: list[tuple[int, int]], what: str) -> int:
    """Windows of the lazy array computed with dask equal the COG's; returns how many were checked."""
    assert arr.dtype == np.float32 and arr.dims == ("band", "y", "x") and arr.shape == ref.shape
    wins = windows(ref.shape[1:], edges)
    for ys, xs in wins:
        assert_same(arr.isel(y=ys, x=xs).compute().values, ref[:, ys, xs], f"{what} window {ys}, {xs}")
    return len(wins)


@pytest.mark.parametrize("chunks", [None, (64, 100)], ids=["default-chunks", "small-chunks"])
def test_npy_vrt_windows_equal_materialise(npy_region, chunks):
    vrt, rec, files = npy_region
    region = tessvrt.open_region(vrt, chunks=chunks)
    assert list(region) == ["utm31n", "utm32n"] == sorted(files)
    for z in rec["zones"]:
        arr, ref = region[z["label"]], cog(files[z["label"]])
        assert np.isnan(ref).any() and np.isfinite(ref).mean() > 0.3  # nodata (outside, water, invalid) and data
        n = check_zone(arr, ref, tile_edges(rec, z), f"{z['label']} chunks {chunks}")
        assert n > 15
        assert_same(arr.compute().values, ref, f"{z['label']}: the whole zone part")


def test_npy_conventions_and_bands(npy_region):
    """rioxarray reads the CRS, transform, nodata and band names; bands select as materialise's --bands."""
    rioxarray = pytest.importorskip("rioxarray")  # noqa: F841 - registers .rio
    vrt, rec, files = npy_region
    region = tessvrt.open_region(vrt, bands="3,1,128")
    for z in rec["zones"]:
        arr = region[z["label"]]
        with rasterio.open(files[z["label"]]) as d:
            transform, crs = d.transform, d.crs
        assert arr.rio.crs.to_epsg() == z["epsg"] == crs.to_epsg()
        assert arr.rio.transform() == transform
        assert np.isnan(arr.rio.nodata) and arr.attrs["TESSERA_YEAR"] == "2024"
        assert list(arr.band.values) == ["embedding_002", "embedding_000", "embedding_127"]
        assert arr.x.values[0] == transform.c + 5 and arr.y.values[0] == transform.f - 5  # pixel centres
        assert_same(arr.compute().values, cog(files[z["label"]], [3, 1, 128]), f"{z['label']} bands 3,1,128")
        one = arr.isel(band=2, y=7, x=5).compute()  # ints and a band index through dask's slicing
        assert_same(np.asarray(one.values)[None, None, None], cog(files[z["label"]], [128])[:, 7:8, 5:6], "one pixel")
        assert arr.attrs["TESSVRT_TILE_COUNT"] == str(sum(t["epsg"] == z["epsg"] for t in rec["tiles"]))


def test_npy_without_vrt_equals_vrt(npy_region, s3):
    """dataset + bbox + year with no VRT selects the tiles build selects: same zone windows, same pixels."""
    vrt, rec, files = npy_region
    region = tessvrt.open_region(dataset="v1", bbox=CROSS, year=2024, format="npy", endpoint=s3.url, bands=[5, 77])
    assert list(region) == ["utm31n", "utm32n"]
    for z in rec["zones"]:
        arr = region[z["label"]]
        w = z["window"]
        assert arr.attrs["TESSVRT_ZONE"] == f"EPSG:{z['epsg']}"
        assert arr.x.values[0] == 10 * w["col0"] + 5 and arr.y.values[0] == 10 * w["row0"] + 5
        assert arr.shape == (2, w["height"], w["width"])
        ref = cog(files[z["label"]], [5, 77])
        check_zone(arr, ref, tile_edges(rec, z), f"no-VRT {z['label']}")
        assert_same(arr.compute().values, ref, f"no-VRT {z['label']}: the whole zone part")
    by_tiles = tessvrt.open_region(dataset="v1", tiles=["5.85,88.05", "6.05,88.05"], year=2024, endpoint=s3.url,
                                   bands=[5])
    assert list(by_tiles) == ["utm31n", "utm32n"] and by_tiles["utm31n"].attrs["TESSVRT_TILE_COUNT"] == "1"


@pytest.mark.parametrize("dataset", ["v1.1-dclimate", "v1"], ids=["upstream-layout", "small-shards"])
def test_zarr_windows_equal_materialise(zarr_region, s3, dataset):
    files = zarr_region[dataset]
    region = tessvrt.open_region(dataset=dataset, bbox=ZONES_BOX, year=2024, endpoint=s3.url)
    assert list(region) == ["utm31n", "utm31s", "utm32n", "utm32s"] == sorted(files)
    for label, arr in region.items():
        ref = cog(files[label])
        edges = [(r, c) for r in range(0, ref.shape[1], 37) for c in range(0, ref.shape[2], 53)][:8]
        check_zone(arr, ref, edges, f"{dataset} {label}")
        assert_same(arr.compute().values, ref, f"{dataset} {label}: the whole zone part")
        if label == "utm31n":
            assert np.isnan(ref).any() and np.isfinite(ref).any()


def test_zarr_chunks_follow_the_store_grid(zarr_region, s3):
    """Upstream's 32-px chunks in 4096-px shards give 512-px dask chunks cut at the group's multiples of 512."""
    arr = tessvrt.open_region(dataset="v1.1-dclimate", bbox=ZONES_BOX, year=2024, endpoint=s3.url)["utm31n"]
    from tessvrt.zarrsample import ZONES

    z31 = ZONES[0]
    first_row = round((z31.oy - (arr.y.values[0] + 5)) / 10)  # the part's top row in the group's arrays
    first_col = round((arr.x.values[0] - 5 - z31.ox) / 10)
    ych, xch = arr.data.chunks[1:]
    for first, ch, n in ((first_row, ych, arr.shape[1]), (first_col, xch, arr.shape[2])):
        assert sum(ch) == n and max(ch) <= 512 and ((first + np.cumsum(ch)[:-1]) % 512 == 0).all(), (first, ch)
    assert len(ych) > 1 or len(xch) > 1  # the part crosses a cut (zone 31's shard corner lies inside it)
    assert zarr_chunks([32, 32], [4096, 4096]) == 512 and zarr_chunks([32, 16], [128, 128]) == 512
    assert zarr_chunks([32], [8192]) == 512 and zarr_chunks([48], [4800]) == 480 and zarr_chunks([1000], [1000]) == 1000


def test_chunks_are_aligned_to_the_zone_grid():
    """A pixel falls in the same chunk whatever region opened it: cuts at multiples of the chunk size."""
    for start, length in ((0, 5000), (-7, 300), (1234567, 4096), (-88_000_123, 9)):
        ch = axis_chunks(start, length, 2048)
        assert sum(ch) == length and all(0 < c <= 2048 for c in ch)
        cuts = start + np.cumsum(ch)[:-1]
        assert (cuts % 2048 == 0).all()
    assert NPY_CHUNKS[0] * NPY_CHUNKS[1] * 128 * 4 == 134_217_728  # ~134 MB of float32 a chunk


class _Watch(pickle.Pickler):
    """Records the type of every object pickled (reducer_override sees each one that is not a plain builtin)."""

    def __init__(self, f):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.types: set[type] = set()

    def reducer_override(self, obj):
        self.types.add(type(obj))
        return NotImplemented


def pickled(obj) -> tuple[int, set[type]]:
    import io

    buf = io.BytesIO()
    p = _Watch(buf)
    p.dump(obj)
    return len(buf.getvalue()), p.types


def assert_nothing_open(types: set[type], what: str) -> None:
    bad = (socket.socket, threading.Thread, type(threading.Lock()), type(threading.RLock()), threading.Event)
    assert not [t for t in types if issubclass(t, bad)], f"{what} pickles {types}"
    assert all(t.__module__.split(".")[0] in ("tessvrt", "numpy", "builtins", "copyreg") for t in types), \
        f"{what} pickles {sorted(t.__module__ + '.' + t.__name__ for t in types)}"


def test_specs_pickle_small_and_closed(npy_region, zarr_region, s3):
    """Each zone's array (spec, window, bands) pickles without sockets, threads or locks, even after reads."""
    vrt, rec, files = npy_region
    npy = tessvrt.open_region(vrt)
    zarr = tessvrt.open_region(dataset="v1.1-dclimate", bbox=ZONES_BOX, year=2024, endpoint=s3.url)
    for region in (npy, zarr):
        for label, arr in region.items():
            arr.isel(y=slice(0, 3), x=slice(0, 3)).compute()  # reading opens connections and stores in this process
            layer = arr.data.dask.layers["original-" + arr.data.name]
            (src,) = layer.values() if hasattr(layer, "values") else [layer]
            assert isinstance(src, ZoneArray)
            size, types = pickled(src)
            assert_nothing_open(types, label)
            assert size < 20_000, f"{label}: {size} bytes"  # a few tiles' rows, or a store's name and grid


def test_distributed_cluster_equals_materialise(npy_region, zarr_region, s3):
    """A 2-process LocalCluster computes the npy VRT's and the Zarr store's zones equal to materialise's COGs."""
    distributed = pytest.importorskip("distributed")
    vrt, rec, files = npy_region
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        npy = tessvrt.open_region(vrt, chunks=(96, 160))
        for label, arr in npy.items():
            assert_same(arr.compute().values, cog(files[label]), f"distributed npy {label}")
        zarr = tessvrt.open_region(dataset="v1.1-dclimate", bbox=ZONES_BOX, year=2024, endpoint=s3.url,
                                   chunks=(64, 64), bands=[1, 64, 128])
        for label, arr in zarr.items():
            got = client.compute(arr.data).result()
            assert_same(got, cog(zarr_region["v1.1-dclimate"][label], [1, 64, 128]), f"distributed zarr {label}")
        assert len(client.scheduler_info()["workers"]) == 2


CONTINENT = (-10.0, 36.0, 30.0, 70.0)  # Europe at 0.1 deg: 400 x 340 = 136,000 tiles in 7 UTM zones


@pytest.fixture(scope="session")
def continent_manifest(tmp_path_factory) -> Path:
    """A synthetic v1 manifest of every 0.1-degree tile of CONTINENT, with sizes that fit each tile's geometry."""
    w, s, e, n = CONTINENT
    lon_i = np.arange(round(w * 10), round(e * 10)) * 10 + 5
    lat_i = np.arange(round(s * 10), round(n * 10)) * 10 + 5
    tiles = [Tile(int(a), int(b)) for b in lat_i for a in lon_i]
    grids = tile_grids(tiles)
    hw = np.array([g.width * g.height for g in grids], np.int64)
    v1 = next(d for d in DATASETS if d.npy == "v1")
    keys = [LIVE.tile_keys(v1, 2024, t) for t in tiles]
    table = pa.table({
        "version": ["1.0"] * len(tiles), "variant": ["vultr"] * len(tiles), "year": np.full(len(tiles), 2024),
        "lon": [t.lon for t in tiles], "lat": [t.lat for t in tiles],
        "grid_path": [f"s3://{LIVE.bucket}/{g}" for g, _ in keys], "scales_path": [f"s3://{LIVE.bucket}/{k}" for _, k in keys],
        "grid_size": 128 + hw * 128, "scales_size": 128 + hw * 4,
    })
    path = tmp_path_factory.mktemp("continent") / "manifest.parquet"
    pq.write_table(table, path)
    return path


class _Recorder:
    """An HTTP server that counts every request it gets and answers 404: the bucket opening must never ask."""

    def __enter__(self) -> _Recorder:
        self.requests: list[str] = []
        rec = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                rec.append(self.path)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET  # noqa: N815

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}"
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._srv.shutdown()
        self._srv.server_close()


OPEN_CONTINENT = r"""
import json, pickle, sys, time
def peak_kb():  # VmHWM: this program's own peak (ru_maxrss would count the forking pytest's pages)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
t0 = time.perf_counter()
import tessvrt, xarray, dask.array  # what open_region imports, so the baseline includes it
base = peak_kb()
t1 = time.perf_counter()
region = tessvrt.open_region(dataset="v1", bbox=sys.argv[1], year=2024, manifest=sys.argv[2], endpoint=sys.argv[3])
t2 = time.perf_counter()
out = {"import_s": t1 - t0, "open_s": t2 - t1, "base_kb": base, "zones": {}}
for label, arr in region.items():
    g = arr.data.__dask_graph__()
    src = g.layers["original-" + arr.data.name]
    out["zones"][label] = {"shape": list(arr.shape), "chunks": int(arr.data.npartitions), "tiles": int(arr.attrs["TESSVRT_TILE_COUNT"]),
                           "layers": [[type(v).__name__, v.is_materialized()] for v in g.layers.values()],
                           "materialized_keys": sum(len(v) for v in g.layers.values() if v.is_materialized()),
                           "pickle_bytes": len(pickle.dumps(dict(src)))}
out["peak_kb"] = peak_kb()
print(json.dumps(out))
"""


def test_continent_opens_without_requests_and_small(continent_manifest, tmp_path):
    """136,000 tiles in 7 zones: no request reaches the bucket, peak RSS under 300 MB, a graph of a few layers."""
    with _Recorder() as srv:
        bbox = ",".join(f"{v + d:g}" for v, d in zip(CONTINENT, (1e-6, 1e-6, -1e-6, -1e-6), strict=True))
        p = subprocess.run([sys.executable, "-c", OPEN_CONTINENT, bbox, str(continent_manifest), srv.url],
                           capture_output=True, text=True, env={**__import__("os").environ, "TESSVRT_CACHE_DIR": str(tmp_path)})
        assert srv.requests == []
        assert p.returncode == 0, p.stderr
        res = json.loads(p.stdout.splitlines()[-1])
    zones = res["zones"]
    tiles = sum(z["tiles"] for z in zones.values())
    chunks = sum(z["chunks"] for z in zones.values())
    print(f"continent: {tiles:,} tiles, {len(zones)} zones, {chunks:,} chunks; open {res['open_s']:.1f} s "
          f"(imports {res['import_s']:.1f} s); peak RSS {res['peak_kb'] / 1024:.0f} MB (after imports "
          f"{res['base_kb'] / 1024:.0f} MB); zone spec pickles {max(z['pickle_bytes'] for z in zones.values()) / 1e6:.1f} MB at most")
    assert tiles == 136_000 and len(zones) == 7 and chunks > 100_000
    assert res["peak_kb"] < 300 * 1024
    for z in zones.values():
        assert z["materialized_keys"] <= 1 and len(z["layers"]) <= 2  # the array itself; chunks are one lazy layer
        assert z["pickle_bytes"] < 70 * z["tiles"] + 10_000  # TILE_FIELDS: 66 bytes a tile


def test_import_stays_light():
    """`import tessvrt` brings neither dask nor xarray (open_region imports them when called)."""
    code = ("import sys, tessvrt; assert not {'dask', 'xarray', 'distributed'} & set(sys.modules), sorted(sys.modules); "
            "f = tessvrt.open_region; assert f.__module__ == 'tessvrt.lazy' and 'open_region' in tessvrt.__all__")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]

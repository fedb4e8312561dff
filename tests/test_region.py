"""Regions: polygon files and countries select tiles by their cells, --clip NaNs pixels outside, bad input is one line.

Real parts: the sample bucket on the moto S3 server, build/materialise/sample through the CLI, region
files written with pyogrio, a local HTTP server holding a small Natural Earth-schema country file. The
references are computed here with shapely on cell boxes and on pixel centres read back from the outputs.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from conftest import assert_same, gdal_read, interpreters, manifest_path, run_cli
from pyproj import Transformer

from tessvrt.errors import TessvrtError
from tessvrt.region import BBox, Region, read_region_file
from tessvrt.testing import free_port

# over the sample's 3x3 block of 2024 tiles (lon 4.0-4.3, lat 88.0-88.3): a U whose notch covers the whole
# top-middle cell (4.1-4.2, 88.2-88.3) and part of the one below it, so 8 of the 9 cells are touched
U = shapely.Polygon([(4.02, 88.02), (4.28, 88.02), (4.28, 88.28), (4.21, 88.28), (4.21, 88.12), (4.09, 88.12),
                     (4.09, 88.28), (4.02, 88.28)])
# a square ring whose hole covers the centre cell (4.1-4.2, 88.1-88.2) wholly: 8 of 9 again, another one left out;
# its outer edge lies on cell edges 4.0 / 88.3 in places (an edge in common is not a touch of the next cell)
RING = shapely.Polygon([(4.0, 88.03), (4.27, 88.03), (4.27, 88.3), (4.0, 88.3)],
                       holes=[[(4.095, 88.095), (4.205, 88.095), (4.205, 88.205), (4.095, 88.205)]])


def write_region(path: Path, geoms: list, crs: str = "EPSG:4326", driver: str | None = None) -> Path:
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    pyogrio.raw.write(path, wkb, [], [], geometry_type=None if len({g.geom_type for g in geoms}) > 1
                      else geoms[0].geom_type, crs=crs, driver=driver)
    return path


def touched(poly, cells: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The reference: cells whose box shares area with the polygon (one by one, no tessvrt code)."""
    return {(i, j) for i, j in cells if shapely.box(i / 10, j / 10, (i + 1) / 10, (j + 1) / 10).intersection(poly).area > 0}


def sample_cells(bucket_root: Path, year: int = 2024) -> list[tuple[int, int]]:
    import pandas as pd

    m = pd.read_parquet(manifest_path(bucket_root))
    m = m[m["year"] == year]
    return [(int(np.floor(lon * 10)), int(np.floor(lat * 10))) for lon, lat in zip(m["lon"], m["lat"], strict=True)]


def tile_cells(names: list[str]) -> set[tuple[int, int]]:
    out = set()
    for n in names:
        lon, lat = (float(v) for v in n.removeprefix("grid_").split("_"))
        out.add((int(np.floor(lon * 10)), int(np.floor(lat * 10))))
    return out


def build(s3, out: Path, *args: str, check: bool = True):
    return run_cli("build", "-o", str(out), "--year", "2024", "--endpoint", s3.url, *args, check=check)


def built_tiles(vrt: Path) -> list[str]:
    from tessvrt.record import read_record

    return [t["name"] for t in read_record(vrt)["tiles"]]


@pytest.mark.parametrize("poly", [U, RING], ids=["concave", "hole"])
def test_polygon_selects_exactly_the_cells_it_touches(s3, bucket_root, tmp_path, poly):
    f = write_region(tmp_path / "area.geojson", [poly])
    out = tmp_path / "a.vrt"
    build(s3, out, "--region", str(f))
    want = touched(poly, sample_cells(bucket_root))
    assert len(want) == 8  # not the box's 9: the notch or the hole leaves a cell out
    assert tile_cells(built_tiles(out)) == want
    # the library selection agrees on every cell of a wide area around it, also cells no tile has
    cells = [(i, j) for i in range(35, 50) for j in range(875, 890)]
    r = Region.polygon(read_region_file(f), "x")
    got = r.selects(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]))
    assert {c for c, g in zip(cells, got, strict=True) if g} == touched(poly, cells)
    assert r.count == len(touched(poly, cells))


def densified_copy(poly, crs: str):
    """The polygon with vertices every ~1e-4 degree, and the same in another CRS (edges then agree to < 1 mm)."""
    dense = shapely.segmentize(poly, 1e-4)
    tr = Transformer.from_crs(4326, crs, always_xy=True)
    return dense, shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def test_projected_file_equals_its_lonlat_copy(s3, tmp_path):
    # EPSG:27700 is not valid at 88 N: the polar stereographic EPSG:3413 is, for the tiles and pixels;
    # 27700 is tested on the selection logic near London (no sample tiles there)
    dense, polar = densified_copy(U, "EPSG:3413")
    f4326 = write_region(tmp_path / "ll.geojson", [dense])
    f3413 = write_region(tmp_path / "polar.gpkg", [polar], crs="EPSG:3413", driver="GPKG")
    from tessvrt import build as build_vrt

    a, b = tmp_path / "a.vrt", tmp_path / "b.vrt"
    ra, rb = Region.from_options(region=f4326), Region.from_options(region=f3413)
    build_vrt(a, year=2024, endpoint=s3.url, region=ra)  # in this process: the CLI's --region runs in the tests above
    build_vrt(b, year=2024, endpoint=s3.url, region=rb)
    assert built_tiles(a) == built_tiles(b)
    from tessvrt.grid import Tile, tile_grids

    g = tile_grids([Tile.at(4.15, 88.15)])[0]
    assert (ra.inside(g.window) == rb.inside(g.window)).all()
    london = shapely.Polygon([(-0.43, 51.31), (0.29, 51.33), (0.05, 51.52), (0.31, 51.69), (-0.5, 51.68)])
    ll, bng = densified_copy(london, "EPSG:27700")
    r1 = Region.from_options(region=write_region(tmp_path / "l.shp", [ll]))
    r2 = Region.from_options(region=write_region(tmp_path / "bng.shp", [bng], crs="EPSG:27700"))
    assert np.array_equal(r1.area_cells[0], r2.area_cells[0]) and np.array_equal(r1.area_cells[1], r2.area_cells[1])
    assert r1.count == len(touched(london, [(i, j) for i in range(-10, 10) for j in range(510, 520)]))


def pixel_centres_lonlat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as d:
        t, h, w, epsg = d.transform, d.height, d.width, d.crs.to_epsg()
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x, y = t.c + t.a * cols, t.f + t.e * rows
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    return lon, lat


def check_clipped(clipped: Path, full: Path, poly) -> int:
    """Outside the polygon (pixel centres, shapely here): NaN; inside: the unclipped output's values. Returns pixels outside."""
    with rasterio.open(clipped) as a, rasterio.open(full) as b:
        assert a.transform == b.transform and a.shape == b.shape
        got, ref = a.read(), b.read()
    lon, lat = pixel_centres_lonlat(clipped)
    keep = shapely.intersects_xy(poly, lon, lat)
    expect = np.where(keep[None], ref, np.float32(np.nan))
    assert_same(got, expect, f"{clipped.name}: clipped vs shapely on pixel centres")
    return int((~keep).sum())


@pytest.fixture(scope="module")
def ring(s3, tmp_path_factory) -> dict[str, Path]:
    """The RING region built plain and with --clip, and materialised (bands 1, 64, 128): the plain VRT whole,
    the clipped VRT with the clip its record holds (no option). Shared: each build/materialise is a CLI run."""
    tmp = tmp_path_factory.mktemp("ring")
    f = write_region(tmp / "ring.geojson", [RING])
    out = {"region": f, "plain": tmp / "p.vrt", "clip": tmp / "c.vrt", "full": tmp / "full.tif", "clipped": tmp / "clip.tif"}
    build(s3, out["plain"], "--region", str(f))
    build(s3, out["clip"], "--region", str(f), "--clip")
    run_cli("materialise", str(out["plain"]), str(out["full"]), "--bands", "1,64,128", "--quiet")
    run_cli("materialise", str(out["clip"]), str(out["clipped"]), "--bands", "1,64,128", "--quiet")
    return out


def test_clip_npy_materialise_nans_outside(ring, tmp_path):
    f, vrt = ring["region"], ring["plain"]
    clipped = tmp_path / "clip.tif"
    run_cli("materialise", str(vrt), str(clipped), "--bands", "1,64,128", "--quiet", "--region", str(f), "--clip")
    outside = check_clipped(clipped, ring["full"], RING)
    with rasterio.open(ring["full"]) as d:
        assert outside > 1000 and d.width * d.height - outside > 10_000
    with rasterio.open(clipped) as d:
        assert "--region" in d.tags()["TESSVRT_CLIP"]
    # a collection written by a real Dask LocalCluster (the clip travels to the worker as WKB) holds the same pixels
    col = tmp_path / "col"
    run_cli("materialise", str(vrt), str(col), "--bands", "1,64,128", "--quiet", "--region", str(f), "--clip",
            "--piece-size", "256", "--blocksize", "256", "--workers", "1")
    vrts = sorted(col.glob("*.vrt"))
    assert vrts
    with rasterio.open(vrts[0]) as a, rasterio.open(clipped) as b:
        assert a.transform == b.transform
        assert_same(a.read(), b.read(), "collection vs single COG, clipped")


def test_build_clip_is_kept_by_materialise(ring):
    """materialise of a VRT built with --clip applies the record's clip with no option."""
    check_clipped(ring["clipped"], ring["full"], RING)


@pytest.mark.parametrize("python", interpreters())
def test_build_clip_masks_the_vrt_and_materialise_keeps_it(ring, gdalrc, tmp_path, python):
    with rasterio.open(ring["clipped"]) as d:
        ref, (w, h) = d.read([1, 3]), (d.width, d.height)  # bands 1 and 128
    # GDAL reads the VRT (masks in the sidecar) with the same NaNs: whole raster and windows across the hole's edge
    wins = [[0, 0, w, h], [w // 3, h // 3, w // 3, h // 3], [w - 40, h - 60, 40, 60]]
    _, got = gdal_read(python, ring["clip"], gdalrc, wins, [1, 128], tmp_path)
    for (x, y, ww, hh), g in zip(wins, got, strict=True):
        assert_same(g, ref[:, y:y + hh, x:x + ww], f"GDAL window {x},{y},{ww},{hh} of the clipped VRT")


# across zones 31 and 32 at 88 N, with a notch
ZONES31_32 = shapely.Polygon([(5.82, 88.01), (6.18, 88.01), (6.18, 88.19), (6.03, 88.08), (5.97, 88.19), (5.82, 88.19)])


@pytest.fixture(scope="module")
def cross_clip(s3, tmp_path_factory) -> tuple[Path, Path]:
    """ZONES31_32 in one main VRT on zone 31, built with --clip --overview (zone 32's tiles warped) and plain."""
    tmp = tmp_path_factory.mktemp("crossclip")
    f = write_region(tmp / "z.geojson", [ZONES31_32])
    vrt, plain = tmp / "c.vrt", tmp / "p.vrt"
    build(s3, vrt, "--region", str(f), "--clip", "--crs", "EPSG:32631", "--overview")
    build(s3, plain, "--region", str(f), "--crs", "EPSG:32631")
    return vrt, plain


def test_build_clip_across_zones_masks_warped_tiles(cross_clip, gdalrc, tmp_path):
    # tiles of zones 31 and 32 at 88 N in one main VRT on zone 31: zone 32's tiles are warped, their masks clipped too
    import sys

    vrt, plain = cross_clip
    with rasterio.open(vrt) as d:
        w, h, t = d.width, d.height, d.transform
    wins = [[0, 0, w, h]]
    _, (got,) = gdal_read(sys.executable, vrt, gdalrc, wins, [1, 64], tmp_path)
    _, (ref,) = gdal_read(sys.executable, plain, gdalrc, wins, [1, 64], tmp_path)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(t.c + t.a * cols, t.f + t.e * rows)
    keep = shapely.intersects_xy(ZONES31_32, lon, lat)
    assert_same(got, np.where(keep[None], ref, np.float32(np.nan)), "cross-zone clipped VRT vs shapely")
    assert (~keep & ~np.isnan(ref[0]) & (lon > 6.0)).sum() > 100  # warped zone 32 pixels were clipped


def test_materialise_region_needs_clip_with_a_vrt(ring, tmp_path):
    f, vrt = ring["region"], ring["plain"]  # built with --region, without --clip
    p = run_cli("materialise", str(vrt), str(tmp_path / "o.tif"), "--region", str(f), check=False)
    assert p.returncode == 1 and "add --clip" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o.tif").exists()


@pytest.fixture(scope="module")
def store(s3, tmp_path_factory):
    pytest.importorskip("zarr")
    from tessvrt.zarrsample import upload, write_store

    path = write_store(tmp_path_factory.mktemp("zarr") / "s", "upstream")
    upload(path, s3.put, "s3://us-west-2.opendata.source.coop/tessera/tessera/zarr/v1.1-dclimate")
    return path


# across the zone 31/32 boundary and the equator (four outputs), with a hole and a notch
ZPOLY = shapely.Polygon([(5.9912, -0.0038), (6.0078, -0.0038), (6.0078, 0.0068), (6.0010, 0.0068), (6.0010, 0.0030),
                         (5.9960, 0.0030), (5.9960, 0.0068), (5.9912, 0.0068)],
                        holes=[[(5.9930, -0.0020), (6.0050, -0.0020), (6.0050, 0.0010), (5.9930, 0.0010)]])


def test_clip_zarr_materialise_and_open_region(s3, store, tmp_path):
    f = write_region(tmp_path / "z.geojson", [ZPOLY])
    box = ",".join(f"{v!r}" for v in ZPOLY.bounds)
    common = ["--dataset", "v1.1-dclimate", "--year", "2024", "--endpoint", s3.url, "--bands", "1,2,128", "--json",
              "--quiet", "--blocksize", "64"]
    full = json.loads(run_cli("materialise", str(tmp_path / "f.tif"), "--bbox", box, *common).stdout)["files"]
    clip = json.loads(run_cli("materialise", str(tmp_path / "c.tif"), "--region", str(f), "--clip", *common).stdout)["files"]
    assert len(full) == len(clip) == 4
    outside = sum(check_clipped(Path(c), Path(a), ZPOLY) for a, c in zip(full, clip, strict=True))
    assert outside > 5000
    # open_region: the same pixels, lazily
    from tessvrt import open_region

    arrs = open_region(dataset="v1.1-dclimate", region=f, clip=True, year=2024, endpoint=s3.url, bands=[1, 2, 128])
    for c in clip:
        label = Path(c).stem.split("_")[-1]
        with rasterio.open(c) as d:
            assert_same(arrs[label].values, d.read(), f"open_region {label} vs materialise --clip")


def test_clip_with_a_box_npy_open_region(s3):
    # at 88 N a lon/lat box is far from a UTM rectangle: --clip NaNs the corners the zone window holds beyond it
    from tessvrt import open_region

    box = "4.02,88.02,4.28,88.28"
    kw = {"dataset": "v1", "format": "npy", "bbox": box, "year": 2024, "endpoint": s3.url, "bands": [1, 128]}
    full, clip = open_region(**kw), open_region(**kw, clip=True)
    assert list(full) == list(clip)
    w, s, e, n = (float(v) for v in box.split(","))
    outside = 0
    for label, arr in clip.items():
        x, y = np.meshgrid(arr.x.values, arr.y.values)
        epsg = int(arr.attrs["TESSVRT_ZONE"].split(":")[1])
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        keep = shapely.intersects_xy(shapely.box(w, s, e, n), lon, lat)
        ref = full[label].values
        assert_same(arr.values, np.where(keep[None], ref, np.float32(np.nan)), f"{label}: clipped to the box")
        outside += int((~keep & ~np.isnan(ref[0])).sum())
    assert outside > 1000  # valid pixels that the clip removed


# --- countries ---

COUNTRIES = [  # (NAME_EN, NAME_LONG, ISO_A2, ISO_A3, ISO_A2_EH, ISO_A3_EH, polygon): Natural Earth's schema
    ("Testland", "Republic of Testland", "TL", "TST", "TL", "TST", U),
    ("Ringland", "Ringland", "-99", "-99", "RG", "RGL", RING),  # codes only in the _EH columns, as France's
    ("Zeroland", "Zeroland", "ZL", "ZRL", "ZL", "ZRL", ZPOLY),
]


@pytest.fixture(scope="module")
def countries(tmp_path_factory):
    """A small boundaries file in Natural Earth's admin-0 schema, served over HTTP; yields (url, sha256, folder)."""
    folder = tmp_path_factory.mktemp("ne")
    path = folder / "ne_test.geojson"
    feats = [{"type": "Feature", "properties": {"NAME_EN": a, "NAME_LONG": b, "ADMIN": a, "NAME": a, "ISO_A2": c,
                                                "ISO_A3": d, "ISO_A2_EH": e, "ISO_A3_EH": f},
              "geometry": json.loads(shapely.to_geojson(g))} for a, b, c, d, e, f, g in COUNTRIES]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/{path.name}", hashlib.sha256(path.read_bytes()).hexdigest(), srv
    srv.shutdown()
    srv.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        _Quiet.requests.append(self.path)


def country_env(monkeypatch, tmp_path, url: str, sha: str) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(cache))
    monkeypatch.setenv("TESSVRT_COUNTRIES", url)
    monkeypatch.setenv("TESSVRT_COUNTRIES_SHA256", sha)
    monkeypatch.setenv("TESSVRT_RETRY_SECONDS", "1")
    return cache


@pytest.mark.parametrize("name", ["Testland", "testland", "TST", "tl", "Republic of Testland"])
def test_country_by_name_or_code(s3, bucket_root, tmp_path, monkeypatch, countries, name):
    # the library in this process (a CLI start-up per name costs seconds): the CLI's --country runs in the tests below
    from tessvrt import build as build_vrt

    url, sha, _ = countries
    country_env(monkeypatch, tmp_path, url, sha)
    out = tmp_path / "c.vrt"
    build_vrt(out, year=2024, endpoint=s3.url, region=Region.from_options(country=name))
    assert tile_cells(built_tiles(out)) == touched(U, sample_cells(bucket_root))


def test_country_codes_of_minus_99_use_the_eh_columns(monkeypatch, tmp_path, countries):
    url, sha, _ = countries
    country_env(monkeypatch, tmp_path, url, sha)
    assert Region.from_options(country="RGL").shape.equals(RING)
    assert Region.from_options(country="rg").label == "--country Ringland"
    with pytest.raises(TessvrtError, match="not a Natural Earth"):
        Region.from_options(country="-99")


def test_country_misspelt_is_one_line_with_the_nearest_names(s3, tmp_path, monkeypatch, countries):
    url, sha, _ = countries
    country_env(monkeypatch, tmp_path, url, sha)
    p = build(s3, tmp_path / "m.vrt", "--country", "Testlnd", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and "did you mean Testland" in p.stderr
    assert not list(tmp_path.glob("m*"))


def test_country_file_is_downloaded_once_then_cached(s3, tmp_path, monkeypatch, countries):
    url, sha, _ = countries
    cache = country_env(monkeypatch, tmp_path, url, sha)
    _Quiet.requests.clear()
    build(s3, tmp_path / "a.vrt", "--country", "TST")
    build(s3, tmp_path / "b.vrt", "--country", "Zeroland", check=False)  # no npy tiles there: fails after the lookup
    assert len(_Quiet.requests) == 1
    assert (cache / "countries" / f"{sha}.geojson").is_file()
    # offline with the cache: still works
    monkeypatch.setenv("TESSVRT_COUNTRIES", f"http://127.0.0.1:{free_port()}/gone.geojson")
    build(s3, tmp_path / "c.vrt", "--country", "TST")


def test_country_offline_without_cache_is_one_line(s3, tmp_path, monkeypatch, countries):
    _, sha, _ = countries
    cache = country_env(monkeypatch, tmp_path, f"http://127.0.0.1:{free_port()}/ne.geojson", sha)
    p = build(s3, tmp_path / "o.vrt", "--country", "TST", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert "no cached copy" in p.stderr and "--region FILE" in p.stderr
    assert not list(tmp_path.glob("o*"))
    assert not (cache / "countries").exists() or not list((cache / "countries").iterdir())


def test_country_checksum_mismatch_caches_nothing(s3, tmp_path, monkeypatch, countries):
    url, _, _ = countries
    cache = country_env(monkeypatch, tmp_path, url, "0" * 64)
    p = build(s3, tmp_path / "x.vrt", "--country", "TST", check=False)
    assert p.returncode == 1 and "SHA-256" in p.stderr and p.stderr.count("\n") == 1
    assert not (cache / "countries").exists() or not list((cache / "countries").iterdir())


def test_pinned_boundaries_are_upstreams():
    from tessvrt import country

    assert country.URL.endswith("v5.1.2/geojson/ne_110m_admin_0_countries.geojson")
    assert len(country.SHA256) == 64


# --- bad files ---

def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    pts = write_region(tmp / "points.geojson", [shapely.Point(4.1, 88.1), shapely.Point(4.2, 88.2)])
    lines = write_region(tmp / "lines.gpkg", [shapely.LineString([(4.1, 88.1), (4.2, 88.2)])], driver="GPKG")
    junk = tmp / "junk.geojson"
    junk.write_bytes(b"\x00\x01 this is not a vector file \xff")
    shp = tmp / "trunc.shp"
    shp.write_bytes(b"\x00\x00\x27\x0a" + b"\x00" * 20)
    return {"empty": (empty, "holds no features"), "points": (pts, "holds no polygons (only Point)"),
            "lines": (lines, "holds no polygons (only LineString)"), "junk": (junk, "cannot be read"),
            "truncated shp": (shp, "cannot be read"), "missing": (tmp / "nope.geojson", "no such file")}


@pytest.mark.parametrize("case", ["empty", "points", "lines", "junk", "truncated shp", "missing"])
def test_bad_region_files_are_one_line_and_write_nothing(s3, tmp_path, case):
    inputs = tmp_path / "in"
    inputs.mkdir()
    path, needle = _bad_files(inputs)[case]
    out = tmp_path / "out"
    out.mkdir()
    for args in (["build", "-o", str(out / "a.vrt"), "--year", "2024", "--endpoint", s3.url],
                 ["materialise", str(out / "a.tif"), "--dataset", "v1.1-dclimate", "--year", "2024", "--endpoint", s3.url],
                 ["coverage", "--dataset", "v1", "--endpoint", s3.url]):
        p = run_cli(*args, "--region", str(path), check=False)
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert needle in p.stderr, p.stderr
    assert list(out.iterdir()) == []


def test_one_region_option_at_a_time(tmp_path):
    f = write_region(tmp_path / "u.geojson", [U])
    with pytest.raises(TessvrtError, match="give one of --bbox, --region"):
        Region.from_options(bbox="4,88,4.3,88.3", region=f)


def test_box_region_selects_as_bbox_did():
    b = BBox.parse("4.0,88.0,4.3,88.3")
    r = Region.from_options(bbox="4.0,88.0,4.3,88.3")
    ci, cj = np.meshgrid(np.arange(35, 50), np.arange(875, 890))
    i0, i1, j0, j1 = b.cells()
    want = (ci >= i0) & (ci < i1) & (cj >= j0) & (cj < j1)
    assert (r.selects(ci.ravel(), cj.ravel()) == want.ravel()).all() and r.count == b.count == 9


# --- sample --points ---

def test_sample_points_keeps_only_points_inside(s3, tmp_path):
    f = write_region(tmp_path / "u.geojson", [U])
    pts = [(4.05, 88.25), (4.15, 88.25), (4.15, 88.05), (4.25, 88.2), (4.0, 88.0)]  # 2nd in the notch, 5th outside
    csv = tmp_path / "p.csv"
    csv.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in pts))
    p = run_cli("sample", "--points", str(csv), "--dataset", "v1", "--format", "npy", "--year", "2024", "--endpoint",
                s3.url, "--bands", "1", "--json", "--region", str(f))
    rows = json.loads(p.stdout)
    inside = [q for q in pts if U.intersects(shapely.Point(q))]
    assert [(r["lon"], r["lat"]) for r in rows] == inside and len(inside) == 3
    assert "2 point(s) outside the region left out" in p.stderr


def test_inside_equals_a_per_pixel_test_on_random_windows():
    # the outline shortcuts (whole window in or out) must agree with testing every pixel centre, near the pole
    # (meridians converge: UTM edges are curves in lon/lat) and at mid latitude, small and large windows
    from tessvrt.grid import Window, _to_utm

    rng = np.random.default_rng(20)
    london = shapely.Polygon([(-0.43, 51.31), (0.29, 51.33), (0.05, 51.52), (0.31, 51.69), (-0.5, 51.68)])
    cases = [(Region.polygon(RING, "ring"), 4.15, 88.15, 32631), (Region.polygon(U, "u"), 4.15, 88.15, 32631),
             (Region.polygon(london, "l"), 0.0, 51.5, 32631)]
    decided = 0
    for reg, lon, lat, epsg in cases:
        cx, cy = _to_utm(epsg).transform(lon, lat)
        for _ in range(15):
            w, h = (int(v) for v in rng.integers(1, 1200, 2))
            col0 = int(cx // 10 + rng.integers(-2500, 2500) - w // 2)
            row0 = int(cy // 10 + rng.integers(-2500, 2500) + h // 2)
            win = Window(epsg, col0, row0, w, h)
            xs, ys = win.pixel_centres()
            gx, gy = np.meshgrid(xs, ys)
            lo, la = Transformer.from_crs(epsg, 4326, always_xy=True).transform(gx, gy)
            want = shapely.intersects_xy(reg.clip_shape, lo, la)
            got = reg.inside(win)
            assert (got == want).all(), (reg.label, win)
            decided += bool(want.all() or not want.any())
    assert decided > 5  # the shortcuts were taken, not only the per-pixel path


def test_country_in_materialise_and_dry_run(s3, store, tmp_path, monkeypatch, countries):
    url, sha, _ = countries
    country_env(monkeypatch, tmp_path, url, sha)
    f = write_region(tmp_path / "z.geojson", [ZPOLY])
    common = ["--dataset", "v1.1-dclimate", "--year", "2024", "--endpoint", s3.url, "--bands", "3", "--json", "--quiet",
              "--clip"]
    by_country = json.loads(run_cli("materialise", str(tmp_path / "c.tif"), "--country", "ZRL", *common).stdout)["files"]
    by_file = json.loads(run_cli("materialise", str(tmp_path / "f.tif"), "--region", str(f), *common).stdout)["files"]
    assert len(by_country) == 4
    for a, b in zip(by_country, by_file, strict=True):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert x.transform == y.transform
            assert_same(x.read(), y.read(), f"{Path(a).name}: --country vs --region of the same polygon")
            assert "--country Zeroland" in x.tags()["TESSVRT_CLIP"]
    est = json.loads(run_cli("materialise", str(tmp_path / "d.tif"), "--country", "Zeroland", *common, "--dry-run").stdout)
    assert est["dry_run"] and est["zones"] == 4 and not (tmp_path / "d.tif").exists()


def test_build_clip_read_by_gdal36_cli(ring, gdalrc, tmp_path, gdal_bin):
    """Debian's gdal_translate (GDAL 3.6, Byte + LUT raw bands) reads the clipped VRT's NaNs and values."""
    import subprocess

    from tessvrt.testing import env_with_gdalrc

    with rasterio.open(ring["clipped"]) as d:
        ref, (w, h) = d.read([1, 3]), (d.width, d.height)  # bands 1 and 128
    for x, y, ww, hh in ([w // 3, h // 3, w // 3, h // 3], [0, 0, 60, 80]):
        out = tmp_path / "patch.tif"
        subprocess.run(["gdal_translate", "-q", "-srcwin", str(x), str(y), str(ww), str(hh), "-b", "1", "-b", "128",
                        str(ring["clip"]), str(out)], env=env_with_gdalrc(gdalrc), check=True)
        with rasterio.open(out) as d:
            got = d.read()
        assert np.isnan(got).any() and not np.isnan(got).all()
        assert_same(got, ref[:, y:y + hh, x:x + ww], f"gdal_translate -srcwin {x} {y} {ww} {hh}")


def test_build_clip_overviews_are_clipped_too(cross_clip, gdalrc, tmp_path):
    """build --clip --overview: every overview level (zone levels and the warped main VRT's) holds the clipped
    full-resolution pixels it picks (GDAL's nearest rule, tessvrt.overview.picks)."""
    import sys

    from tessvrt.overview import picks
    from tessvrt.record import read_record

    vrt = cross_clip[0]
    rec = read_record(vrt)
    sidecar = vrt.with_suffix(".tessvrt")
    checked = 0
    for name in [vrt.name] + [z["vrt"] for z in rec["zones"]]:
        with rasterio.open(vrt.parent / name) as d:
            w, h = d.width, d.height
        _, (full,) = gdal_read(sys.executable, vrt.parent / name, gdalrc, [[0, 0, w, h]], [1, 128], tmp_path)
        with rasterio.open(vrt.parent / name) as d:
            epsg, bounds = d.crs.to_epsg(), tuple(round(v, 3) for v in d.bounds)
        for p in sorted(sidecar.rglob("*.tif")):
            with rasterio.open(p) as o:
                if o.crs is None or o.crs.to_epsg() != epsg or tuple(round(v, 3) for v in o.bounds) != bounds:
                    continue  # the constant mask source, or a level of another VRT
                got = o.read([1, 128])
            want = full[:, picks(h, got.shape[1])][:, :, picks(w, got.shape[2])]
            assert_same(got, want, f"overview {p.name} of {name} vs the clipped full resolution")
            assert np.isnan(got).any()
            checked += 1
    assert checked >= 3  # the main (warped) VRT's level and each zone's

"""Zarr VRTs of a polygon (build --dataset v1.1-dclimate --region/--country, --clip; issue 20's regions on the
default dataset): the same zone parts and pixels as materialise --dataset of the same store with the same options.

Real parts: the sample Zarr store (tessvrt.zarrsample, upstream's layout) on the session's moto S3 server; builds and
materialise runs through the CLI; the VRTs read by GDAL 3.12 (TESSVRT_PY312) over /vsis3/. References: materialise's
COGs (its pixel sources, not GDAL), and shapely on pixel centres computed here with pyproj.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from conftest import assert_same, gdal_read, run_cli_many
from pyproj import Transformer
from test_region import ZPOLY, country_env, densified_copy, write_region
from test_region import countries as ne_countries  # noqa: F401 - a fixture (test_region's small Natural Earth copy)
from test_zarr_vrt import windows, zone_vrts

pytest.importorskip("zarr")
PY312 = os.environ.get("TESSVRT_PY312")
needs_312 = pytest.mark.skipif(not PY312 and not os.environ.get("CI"), reason="TESSVRT_PY312 not set (scripts/test.sh sets it)")
BANDS = [1, 2, 64, 128]
# a U in zone 31 north (one part) over the store's shard corner (row/col 4096, ~5.9966 E, ~0.0029 N): its notch
# (5.9945-5.9975, 0.0030-0.0066) is left out by --clip; all of it lies in one 0.1-degree cell
U31 = shapely.Polygon([(5.9920, 0.0006), (5.9995, 0.0006), (5.9995, 0.0066), (5.9975, 0.0066), (5.9975, 0.0030),
                       (5.9945, 0.0030), (5.9945, 0.0066), (5.9920, 0.0066)])
# an L over cells (59, 0), (60, 0) and (59, -1) but not (60, -1): without --clip, zone 32 south's part (in that
# cell) is NaN, as materialise writes it (the polygon's cells, not its box)
L = shapely.Polygon([(5.9920, -0.0038), (5.9950, -0.0038), (5.9950, 0.0010), (6.0078, 0.0010), (6.0078, 0.0066),
                     (5.9920, 0.0066)])
BOX = "5.99113,-0.00377,6.00779,0.00663"
POLYS = {"concave": U31, "zones": ZPOLY, "cells": L}  # ZPOLY: zones 31/32 and the equator (four parts), a hole, a notch


def _common(s3) -> list[str]:
    return ["--dataset", "v1.1-dclimate", "--year", "2024", "--endpoint", s3.url]


@pytest.fixture(scope="module")
def built(s3, tmp_path_factory) -> dict:
    """Per polygon: VRTs built with --region and --clip and with --region alone, materialise --dataset of the same
    two, materialise of the clipped VRT (its record's clip, no option), and (concave) a build from an EPSG:32631
    copy of the polygon. Also --bbox BOX --clip built and materialised. One interpreter for the 18 commands (run_cli_many)."""
    from tessvrt.zarrsample import upload, write_store

    tmp = tmp_path_factory.mktemp("zregion")
    upload(write_store(tmp / "store"), s3.put, "s3://us-west-2.opendata.source.coop/tessera/tessera/zarr/v1.1-dclimate")
    out: dict = {"tmp": tmp}
    argvs = []
    mat = ["--bands", ",".join(map(str, BANDS)), "--json", "--quiet", "--blocksize", "64"]
    for name, poly in POLYS.items():
        f = write_region(tmp / f"{name}.geojson", [poly])
        d = out[name] = {"region": f, "clip": tmp / f"{name}_c.vrt", "plain": tmp / f"{name}_p.vrt"}
        argvs += [["build", "-o", str(d["clip"]), "--region", str(f), "--clip", *_common(s3)],
                  ["build", "-o", str(d["plain"]), "--region", str(f), *_common(s3)],
                  ["materialise", str(tmp / f"{name}_mc.tif"), "--region", str(f), "--clip", *_common(s3), *mat],
                  ["materialise", str(tmp / f"{name}_mp.tif"), "--region", str(f), *_common(s3), *mat],
                  ["materialise", str(d["clip"]), str(tmp / f"{name}_via.tif"), *mat]]
    _, utm = densified_copy(U31, "EPSG:32631")
    f = write_region(tmp / "u31.gpkg", [utm], crs="EPSG:32631", driver="GPKG")
    out["concave"]["utm"] = tmp / "concave_utm.vrt"
    argvs.append(["build", "-o", str(out["concave"]["utm"]), "--region", str(f), "--clip", *_common(s3)])
    out["bbox"] = tmp / "b.vrt"  # --bbox BOX --clip: built and materialised
    argvs += [["build", "-o", str(out["bbox"]), "--bbox", BOX, "--clip", *_common(s3)],
              ["materialise", str(tmp / "b.tif"), "--bbox", BOX, "--clip", *_common(s3), *mat]]
    results = run_cli_many(argvs)
    for a, p in zip(argvs, results, strict=True):
        assert p.returncode == 0, f"tessvrt {' '.join(a)}:\n{p.stderr}"
    k = 0
    for name in POLYS:
        for key in ("build_clip", "build_plain", "clip_files", "plain_files", "via_files"):
            p = results[k]
            out[name][key] = p if key.startswith("build") else [Path(x) for x in json.loads(p.stdout)["files"]]
            k += 1
    out["bbox_files"] = [Path(x) for x in json.loads(results[-1].stdout)["files"]]
    return out


def label(path: Path) -> str:
    """utm31n, ... of a per-zone file; '' for the only one."""
    tail = path.stem.rsplit("_", 1)[-1]
    return tail if tail.startswith("utm") else ""


def centres_lonlat(epsg: int, t, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001 - an Affine
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return Transformer.from_crs(epsg, 4326, always_xy=True).transform(t.c + t.a * cols, t.f + t.e * rows)


def read_all(vrt: Path, gdalrc: Path, tmp: Path) -> tuple[dict, np.ndarray]:
    with rasterio.open(vrt) as d:  # GDAL 3.10 opens the outer VRT's XML; 3.12 reads its pixels
        w, h = d.width, d.height
    meta, (got,) = gdal_read(PY312, vrt, gdalrc, [[0, 0, w, h]], BANDS, tmp)
    return meta, got


@needs_312
@pytest.mark.parametrize("clip", [True, False], ids=["clip", "plain"])
@pytest.mark.parametrize("name, n_zones", [("concave", 1), ("zones", 4), ("cells", 4)])
def test_zarr_region_vrt_equals_materialise(built, gdalrc, tmp_path, name, n_zones, clip):
    """Each zone VRT of a --region build, read by GDAL 3.12 over /vsis3/, equals materialise --dataset --region (with
    or without --clip) on every pixel: same zone parts, same grid and extent, NaN where NaN."""
    d = built[name]
    vrt = d["clip" if clip else "plain"]
    cogs = {label(c): c for c in d["clip_files" if clip else "plain_files"]}
    vrts = zone_vrts(vrt)
    rng = np.random.default_rng(20)
    assert len(vrts) == len(cogs) == n_zones and {label(v) for v in vrts} == set(cogs)
    for v in vrts:
        c = cogs[label(v)]
        with rasterio.open(c) as a, rasterio.open(v) as b:
            assert (a.transform, a.crs, a.shape) == (b.transform, b.crs, b.shape), f"{v.name} vs {c.name}"
            cog = a.read()
        wins = windows(cog.shape[1], cog.shape[2], rng)  # every pixel, the corners, random windows across chunk edges
        meta, got = gdal_read(PY312, v, gdalrc, wins, BANDS, tmp_path)
        assert meta["gdal"].startswith("3.12")
        for (x, y, w, h), g in zip(wins, got, strict=True):
            assert_same(g, cog[:, y:y + h, x:x + w], f"{v.name} window {x},{y},{w},{h} vs materialise {c.name}")
        got = got[0]
        if name == "cells" and label(v) == "utm32s":
            assert np.isnan(got).all()  # neither its cell nor the polygon: the whole part is NaN
        else:
            assert np.isfinite(got).sum() > 1000
    if clip:  # materialise of the clipped VRT keeps the clip (the record's region), with no option
        for a, b in zip(sorted(d["via_files"]), sorted(d["clip_files"]), strict=True):
            with rasterio.open(a) as x, rasterio.open(b) as y:
                assert x.transform == y.transform
                assert_same(x.read(), y.read(), f"materialise of {vrt.name} vs materialise --clip")


@needs_312
@pytest.mark.parametrize("name", list(POLYS))
def test_clipped_pixels_are_those_whose_centres_are_outside(built, gdalrc, tmp_path, name):
    """Independent of materialise --clip: the --clip VRT holds the unclipped pixels (the plain materialise COG; for the
    main VRT across zones, the plain VRT) where the pixel centre is inside the polygon (shapely here, centres from
    pyproj), NaN elsewhere; in the main VRT, warped zone 32 pixels too."""
    d, poly = built[name], POLYS[name]
    plain = {label(c): c for c in d["plain_files"]}
    pairs = [(v, plain[label(v)]) for v in zone_vrts(d["clip"])]
    if len(pairs) > 1:
        pairs.append((d["clip"], d["plain"]))  # the main VRT, on one zone's grid
    cleared = {}
    for c, p in pairs:
        with rasterio.open(c) as a:
            t, h, w, epsg = a.transform, a.height, a.width, a.crs.to_epsg()
        _, got = read_all(c, gdalrc, tmp_path)
        if p.suffix == ".tif":
            with rasterio.open(p) as b:
                assert b.transform == t
                ref = b.read()
        else:
            _, ref = read_all(p, gdalrc, tmp_path)
        lon, lat = centres_lonlat(epsg, t, h, w)
        keep = shapely.intersects_xy(poly, lon, lat)
        assert_same(got, np.where(keep[None], ref, np.float32(np.nan)), f"{c.name}: clipped vs shapely on pixel centres")
        cleared[c.name] = (int((~keep & np.isfinite(ref[0])).sum()), int((~keep & np.isfinite(ref[0]) & (lon > 6)).sum()))
    assert sum(n for n, _ in cleared.values()) > 500, cleared  # valid pixels the clip removed
    if name == "zones":
        assert cleared[d["clip"].name][1] > 100, cleared  # in the main VRT: warped zone 32 pixels cleared too


@needs_312
def test_projected_copy_gives_the_same_vrt(built, gdalrc, tmp_path):
    """An EPSG:32631 GeoPackage of the concave polygon gives the same zone window, masks and pixels as its
    EPSG:4326 GeoJSON."""
    a, b = built["concave"]["clip"], built["concave"]["utm"]
    fa, fb = (v.with_name(v.name[:-4] + ".tessvrt") for v in (a, b))
    clips = sorted(p.name for p in fa.glob("clip_*.vrt"))
    assert clips == sorted(p.name for p in fb.glob("clip_*.vrt")) and clips
    for n in [*clips, *(p.name for p in fa.glob("mosaic_*.vrt"))]:
        assert (fa / n).read_text() == (fb / n).read_text(), n
    ra, rb = (json.loads((f / "tessvrt.json").read_text()) for f in (fa, fb))
    assert ra["zones"] == [{**z, "vrt": a.name} for z in rb["zones"]] and ra["bbox"] == pytest.approx(rb["bbox"], abs=1e-9)
    assert_same(read_all(b, gdalrc, tmp_path)[1], read_all(a, gdalrc, tmp_path)[1], "EPSG:32631 copy vs EPSG:4326")


def test_record_and_info_keep_the_region(built):
    """The record holds what the pixels are narrowed to (the polygon with --clip, its cells without), info says it;
    a polygon within one cell keeps every pixel of its box without --clip, so its plain build writes no mask."""
    from tessvrt.info import info

    d = built["concave"]
    assert str(d["region"]) in info(d["clip"])["clip"] and "(its cells)" in info(d["plain"])["clip"]
    p = run_cli_many([["info", str(d["clip"])]])[0]
    assert p.returncode == 0 and f"pixels outside --region {d['region']} read as NaN" in p.stdout, p.stdout
    assert list(d["clip"].with_name("concave_c.tessvrt").glob("clip_*.vrt"))
    assert not list(d["plain"].with_name("concave_p.tessvrt").glob("clip_*.vrt"))
    with rasterio.open(d["clip"]) as v:
        assert "--region" in v.tags()["TESSVRT_CLIP"]


def test_country_gives_the_polygons_vrt_and_open_region_keeps_the_clip(built, s3, tmp_path, monkeypatch,
                                                                       ne_countries):  # noqa: F811 - the fixture
    """--country (test_region's small Natural Earth copy: Zeroland is ZPOLY) writes the same masks and mosaics as
    --region of the polygon; open_region of the clipped VRT holds materialise --clip's pixels (the record's clip)."""
    from tessvrt import build, open_region
    from tessvrt.region import Region

    url, sha, _ = ne_countries
    country_env(monkeypatch, tmp_path, url, sha)
    out = tmp_path / "zrl.vrt"
    build(out, dataset="v1.1-dclimate", year=2024, endpoint=s3.url, region=Region.from_options(country="ZRL"), clip=True)
    mine, theirs = tmp_path / "zrl.tessvrt", built["zones"]["clip"].with_name("zones_c.tessvrt")
    names = sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*.vrt"))
    assert sum(n.startswith("clip_") for n in names) == 4 and "mosaic.vrt" in names
    assert names == sorted(str(p.relative_to(mine)) for p in mine.rglob("*.vrt"))
    for n in names:
        assert (mine / n).read_text() == (theirs / n).read_text(), n
    with rasterio.open(out) as v:
        assert "--country Zeroland" in v.tags()["TESSVRT_CLIP"]
    arrs = open_region(vrt=built["zones"]["clip"], bands=BANDS, endpoint=s3.url)
    for c in built["zones"]["clip_files"]:
        with rasterio.open(c) as d:
            assert_same(arrs[label(c)].values, d.read(), f"open_region of the clipped VRT vs {c.name}")


def test_left_out_by_blocks_covers_exactly_the_pixels_outside():
    """The mask rectangles, computed a block at a time (blocks of 64 here, 1,024 in builds), painted back: exactly
    the pixels whose centres shapely puts outside ZPOLY, on a window larger than several blocks (offsets checked)."""
    from tessvrt.grid import Window
    from tessvrt.region import Region
    from tessvrt.zarrvrt import left_out

    win = Window(32631, 83290, 80, 200, 130)  # zone 31 grid around the equator and 6 E: ZPOLY, its hole and notch
    rects = left_out(Region.polygon(ZPOLY, "x"), win, block=64)
    out = np.zeros((win.height, win.width), np.int64)
    for x, y, w, h in rects:
        out[y:y + h, x:x + w] += 1
    xs, ys = win.pixel_centres()
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(*np.meshgrid(xs, ys))
    inside = shapely.intersects_xy(ZPOLY, lon, lat)
    assert out.max() == 1 and np.array_equal(out == 0, inside) and inside.sum() > 5000 and (~inside).sum() > 3000


@needs_312
def test_bbox_clip_equals_materialise(built, gdalrc, tmp_path):
    """--bbox with --clip (no polygon file): the same pixels as materialise --bbox --clip (at the equator the zone
    windows are the box's pixels already, so no mask is needed: none is written)."""
    cogs = {label(f): f for f in built["bbox_files"]}
    vrts = zone_vrts(built["bbox"])
    rec = json.loads(built["bbox"].with_name("b.tessvrt").joinpath("tessvrt.json").read_text())
    assert len(vrts) == 4 and rec["clip"]["label"] == f"--bbox {BOX}"  # kept for materialise/open_region of the VRT
    for v in vrts:
        with rasterio.open(cogs[label(v)]) as d:
            cog = d.read()
        assert_same(read_all(v, gdalrc, tmp_path)[1], cog, f"{v.name} vs materialise --bbox --clip")


def test_refusals_are_one_line_and_write_nothing(built, s3, tmp_path):
    """--tile with --region (a Zarr build takes the region alone) and a polygon beyond the store: one line each."""
    f = built["concave"]["region"]
    far = write_region(tmp_path / "far.geojson", [shapely.box(40.01, 10.01, 40.05, 10.05)])
    argvs = [["build", "-o", str(tmp_path / "a.vrt"), "--region", str(f), "--tile", "5.95,0.05", *_common(s3)],
             ["build", "-o", str(tmp_path / "b.vrt"), "--region", str(far), "--clip", *_common(s3)]]
    for p, want in zip(run_cli_many(argvs), ["--tile with --region", "no zone group utm37"], strict=True):
        assert p.returncode == 1 and want in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["far.geojson"]


@pytest.mark.parametrize("name", ["concave", "cells"])
def test_dry_run_of_a_region_build_has_its_zone_parts(built, s3, name):
    """build --dry-run --region --clip (refused for Zarr builds before) counts the pixels of the zone parts the real
    build wrote and writes nothing."""
    d = built[name]
    out = d["clip"].with_name(f"{name}_dry.vrt")
    (p,) = run_cli_many([["build", "-o", str(out), "--region", str(d["region"]), "--clip", "--dry-run", "--json",
                          *_common(s3)]])
    assert p.returncode == 0, p.stderr
    rec = json.loads((d["clip"].with_suffix(".tessvrt") / "tessvrt.json").read_text())
    want = sum(z["window"]["width"] * z["window"]["height"] for z in rec["zones"])
    assert json.loads(p.stdout)["pixels"] == want and not list(out.parent.glob(f"{name}_dry*"))

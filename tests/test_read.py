"""Built VRTs read through /vsis3/ on a real local S3 server equal the numpy reference of the pixel
rule, on GDAL 3.10 (this interpreter), GDAL 3.12 (a python3.12 venv) and GDAL 3.6 (Debian CLI)."""

from __future__ import annotations

import re
import subprocess
import zlib

import numpy as np
import pytest
import rasterio
from conftest import assert_same, gdal_read, run_cli, vrt_readers
from reference import expected, load_record, stored

from tessvrt.testing import env_with_gdalrc

BANDS = [1, 2, 77, 128]


@pytest.fixture(scope="module")
def built(s3, gdalrc, tmp_path_factory):
    out = tmp_path_factory.mktemp("vrts")
    block = out / "block.vrt"
    run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(block), "--endpoint", s3.url)
    cross = out / "cross.vrt"
    run_cli("build", "--bbox", "5.8,88.0,6.2,88.2", "--year", "2024", "-o", str(cross), "--endpoint", s3.url)
    south = out / "south.vrt"
    run_cli("build", "--tile", "10.05,-88.05", "--tile", "10.05,-88.15", "--year", "2024", "-o", str(south),
            "--endpoint", s3.url)
    return {"block": block, "cross": cross, "south": south}


def windows_for(record: dict, rng: np.random.Generator, n_random: int = 6, thin: int = 3) -> list[list[int]]:
    """Random windows plus windows straddling every tile edge of the main grid, and 1-3 px windows on the last
    row/column of the first `thin` tile edges each way (GDAL's source-window rounding, the same on every edge and
    for every band: fewer where each window is a process, gdal_translate)."""
    w = record["main"]["window"]
    W, H = w["width"], w["height"]
    wins = []
    for _ in range(n_random):
        ww, hh = int(rng.integers(20, min(120, W) + 1)), int(rng.integers(20, 200))
        wins.append([int(rng.integers(0, W - ww + 1)), int(rng.integers(0, max(H - hh, 0) + 1)), ww, min(hh, H)])
    # tile edges: the rows/cols where the owner changes along the window's middle line
    from tessvrt.grid import PIXEL, owner_cells

    xs = PIXEL * (w["col0"] + np.arange(W)) + 5.0
    ys = PIXEL * (w["row0"] - np.arange(H)) + 5.0
    ci, _ = owner_cells(w["epsg"], xs, np.full(W, ys[H // 2]))
    _, cj = owner_cells(w["epsg"], np.full(H, xs[W // 2]), ys)
    for c in np.flatnonzero(np.diff(ci))[:3]:
        wins.append([int(min(max(c - 15, 0), W - 30)), int(rng.integers(0, H - 150)), 30, 150])
    for r in np.flatnonzero(np.diff(cj))[:3]:
        wins.append([0, int(min(max(r - 20, 0), H - 40)), W, 40])
    # thin windows that start on a tile's last row/column or just after it: GDAL computes source
    # windows per request, and rounding there once dropped a tile's last row (see build._write_const)
    for c in np.flatnonzero(np.diff(ci))[:thin]:
        wins += [[int(c) + d, int(rng.integers(0, H - 150)), k, 150] for d, k in ((-1, 2), (0, 1), (1, 1), (0, 3))]
    for r in np.flatnonzero(np.diff(cj))[:thin]:
        wins += [[0, int(r) + d, W, k] for d, k in ((-1, 2), (0, 1), (1, 1), (0, 3))]
    return [[x, y, min(ww, W - x), min(hh, H - y)] for x, y, ww, hh in wins]


def check(python, vrt, gdalrc, bucket_root, tmp_path, bands=BANDS, seed=0, n_random=6, thin=3):
    rec = load_record(vrt if not re.search(r"_utm\d\d[ns]\.vrt$", vrt.name) else
                      vrt.with_name(vrt.name.rsplit("_utm", 1)[0] + ".vrt"))
    if "_utm" in vrt.name:
        z = next(z for z in rec["zones"] if z["vrt"] == vrt.name)
        # a zone's own VRT holds only that zone's tiles: the others' pixels are NaN there
        rec = {**rec, "main": {"epsg": z["epsg"], "window": z["window"]},
               "tiles": [t for t in rec["tiles"] if t["epsg"] == z["epsg"]]}
    wins = windows_for(rec, np.random.default_rng(seed), n_random, thin)
    meta, arrays = gdal_read(python, vrt, gdalrc, wins, bands, tmp_path)
    g = rec["main"]["window"]
    for (x, y, ww, hh), got in zip(wins, arrays, strict=False):
        ref = expected(bucket_root, rec, g["epsg"], g["col0"] + x, g["row0"] - y, ww, hh, [b - 1 for b in bands])
        assert_same(got, ref, f"{vrt.name} window {(x, y, ww, hh)} on GDAL {meta['gdal']}")
    return meta, arrays


@pytest.mark.parametrize("python", vrt_readers())
def test_block_matches_reference(python, built, gdalrc, bucket_root, tmp_path):
    meta, arrays = check(python, built["block"], gdalrc, bucket_root, tmp_path)
    assert meta["count"] == 128 and set(meta["dtypes"]) == {"float32"}
    assert meta["nodata"] == "nan"
    assert meta["descriptions"][0] == "embedding_000" and meta["descriptions"][127] == "embedding_127"
    assert meta["tags"]["TESSERA_YEAR"] == "2024" and meta["tags"]["TESSERA_DATASET_VERSION"] == "1.0"
    assert "grid_4.15_88.15" in meta["tags"]["TESSVRT_TILES"]
    # the reference has both data and every kind of nodata in these windows
    all_vals = np.concatenate([a.ravel() for a in arrays])
    assert np.isfinite(all_vals).mean() > 0.3 and np.isnan(all_vals).any()


@pytest.mark.parametrize("python", vrt_readers())
def test_all_bands_window(python, built, gdalrc, bucket_root, tmp_path):
    """Every band, on the tile with (H, W, 128) scales and its neighbours (random and tile-edge windows; the thin
    rounding windows are test_block_matches_reference's, on the same GDALs)."""
    check(python, built["block"], gdalrc, bucket_root, tmp_path, bands=list(range(1, 129)), seed=5, thin=0)


@pytest.mark.parametrize("python", vrt_readers())
@pytest.mark.parametrize("name", ["cross", "cross_utm31n", "cross_utm32n", "south"])
def test_zones_and_south(python, name, built, gdalrc, bucket_root, tmp_path):
    vrt = built["cross"].with_name(name + ".vrt") if name.startswith("cross") else built[name]
    check(python, vrt, gdalrc, bucket_root, tmp_path, seed=zlib.crc32(name.encode()))


def test_gdal36_cli(built, gdalrc, bucket_root, tmp_path, gdal_bin):
    """Debian's gdal-bin: gdalinfo lists 128 bands; gdal_translate -srcwin across a tile edge matches."""
    env = env_with_gdalrc(gdalrc)
    vrt = built["block"]
    info = subprocess.run(["gdalinfo", str(vrt)], capture_output=True, text=True, env=env, check=True).stdout
    assert len(re.findall(r"^Band \d+ Block=", info, re.M)) == 128
    assert "NoData Value=nan" in info and "embedding_127" in info
    rec = load_record(vrt)
    check_gdal36(vrt, rec, windows_for(rec, np.random.default_rng(3), n_random=2, thin=1), env, bucket_root, tmp_path)


def check_gdal36(vrt, rec, wins, env, bucket_root, tmp_path, bands=BANDS):
    """gdal_translate -srcwin of each window (these bands) equals the reference."""
    ver = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout
    g = rec["main"]["window"]
    for x, y, ww, hh in wins:
        out = tmp_path / "patch.tif"
        subprocess.run(["gdal_translate", "-q", "-srcwin", str(x), str(y), str(ww), str(hh),
                        *sum((["-b", str(b)] for b in bands), []), str(vrt), str(out)], env=env, check=True)
        with rasterio.open(out) as d:
            got = d.read()
        ref = expected(bucket_root, rec, g["epsg"], g["col0"] + x, g["row0"] - y, ww, hh, [b - 1 for b in bands])
        assert_same(got, ref, f"{vrt.name}: gdal_translate -srcwin {x} {y} {ww} {hh} ({ver.strip()})")


@pytest.fixture(scope="module")
def built_blocks(s3, tmp_path_factory):
    """The block and cross-zone regions again with 128-pixel mosaic blocks (vrt.MOSAIC_BLOCK is 8192),
    so that the blocked mosaic is what is read and reads cross many block borders (more than 20 blocks each;
    64-px blocks cost GDAL ~4x the time: each block touched is an open of its VRT and its tiles' sources)."""
    from tessvrt import build, vrt

    out = tmp_path_factory.mktemp("blocks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vrt, "MOSAIC_BLOCK", 128)
        mp.setenv("TESSVRT_CACHE_DIR", str(out / "cache"))
        build(out / "block.vrt", bbox="4.0,88.0,4.3,88.3", year=2024, endpoint=s3.url)
        build(out / "cross.vrt", bbox="5.8,88.0,6.2,88.2", year=2024, endpoint=s3.url)
    return out


@pytest.mark.parametrize("python", vrt_readers())
@pytest.mark.parametrize("name", ["block", "cross", "cross_utm32n"])
def test_mosaic_of_blocks(python, name, built_blocks, gdalrc, bucket_root, tmp_path):
    blocks = list((built_blocks / f"{name.split('_')[0]}.tessvrt" / "blocks").iterdir())
    assert len(blocks) > 20
    # 3 random windows (20-120 px) besides the tile-edge and thin windows (across 128-px block borders); in the
    # cross-zone mosaic a random window over the warped part cost up to 38 s on GDAL 3.10 (moto, loaded machine)
    check(python, built_blocks / f"{name}.vrt", gdalrc, bucket_root, tmp_path, seed=zlib.crc32(name.encode()) + 1,
          n_random=3)


def test_mosaic_of_blocks_gdal36(built_blocks, gdalrc, bucket_root, tmp_path, gdal_bin):
    vrt = built_blocks / "block.vrt"
    rec = load_record(vrt)
    check_gdal36(vrt, rec, windows_for(rec, np.random.default_rng(4), n_random=2, thin=1), env_with_gdalrc(gdalrc),
                 bucket_root, tmp_path)


def _row_one_windows(rec: dict) -> list[list[int]]:
    """Full-width windows of 5 rows around row 1 of each tile: the sample tiles' row 1 holds every
    int8 value (tessvrt.testing.tile_arrays), spread over all 128 bands."""
    g = rec["main"]["window"]
    ys = {round(g["row0"] - (t["origin"][1] - 20) / 10) - 2 for t in rec["tiles"] if t["epsg"] == g["epsg"]}
    return [[0, y, g["width"], 5] for y in sorted(ys) if 0 <= y <= g["height"] - 5]


@pytest.mark.parametrize("python", vrt_readers())
def test_every_int8_value(python, built, gdalrc, bucket_root, tmp_path):
    """All 256 stored values come out signed and scaled right (the top VRT's Byte -> signed LUT)."""
    rec = load_record(built["block"])
    g = rec["main"]["window"]
    wins = _row_one_windows(rec)
    bands = list(range(1, 129))
    _, arrays = gdal_read(python, built["block"], gdalrc, wins, bands, tmp_path)
    seen: set[int] = set()
    for (x, y, ww, hh), got in zip(wins, arrays, strict=True):
        ref = expected(bucket_root, rec, g["epsg"], g["col0"] + x, g["row0"] - y, ww, hh, [b - 1 for b in bands])
        assert_same(got, ref, f"row-1 window {(x, y, ww, hh)}")
        raw = stored(bucket_root, rec, g["epsg"], g["col0"] + x, g["row0"] - y, ww, hh)
        seen |= set(np.unique(raw[np.isfinite(ref) & (ref != 0)]).tolist())  # values that were checked
    assert seen == set(range(-128, 128)) - {0}, f"{256 - 1 - len(seen)} int8 values not covered"


def test_every_int8_value_gdal36(built, gdalrc, bucket_root, tmp_path, gdal_bin):
    rec = load_record(built["block"])
    check_gdal36(built["block"], rec, _row_one_windows(rec)[:3], env_with_gdalrc(gdalrc), bucket_root, tmp_path,
                 bands=list(range(1, 129)))

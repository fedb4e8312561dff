"""Zarr VRTs (build --format zarr, issue 21): Kerchunk references read by GDAL >= 3.11, every pixel checked.

Stores (tessvrt.zarrsample, written by zarr-python, upstream's layout) on the session's S3 server and, for
/vsicurl/, on a static HTTP server (FileServer): `v1.1-dclimate` as in test_zarr.py; `v1.1` (the Zarr store
of v1.1-cam, which also has npy tiles: --format decides) with embeddings removed under *valid* scales (one
inner chunk, and a whole shard) so absent embeddings must read NaN, never 0; `v1` with small non-square
chunks, which a Zarr VRT refuses. GDAL 3.12 (TESSVRT_PY312) reads them; GDAL 3.10 (.venv) cannot and fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import HERE, assert_same, gdal_read, run_cli
from test_zarr import INSIDE, SHARDS, ZONES_BOX, materialise, store_rows

from tessvrt.testing import FileServer, env_with_gdalrc
from tessvrt.zarrsample import BANDS, ZONES, reference, upload, write_store

pytest.importorskip("zarr")
BUCKET = "us-west-2.opendata.source.coop"
PREFIX = "tessera/tessera/zarr"
PY312 = os.environ.get("TESSVRT_PY312")
ORACLE_PY = os.environ.get("TESSVRT_ORACLE_PY")
needs_312 = pytest.mark.skipif(not PY312 and not os.environ.get("CI"), reason="TESSVRT_PY312 not set (scripts/test.sh sets it)")
SPEC = {s.zone: s for s in ZONES}
# v1.1: embeddings removed where scales are valid: one inner chunk (zone 32) and zone 31's shard (0, 0) part
CHUNK_GONE = (32, 2048, 256)  # zone, row, col of a chunk-aligned 32x32 block inside zone 32's data and ZONES_BOX
SHARD_GONE = (31, slice(4050, 4096), slice(4040, 4096))


@pytest.fixture(scope="module")
def zroot(s3, tmp_path_factory) -> Path:
    """A bucket folder (for FileServer) holding the stores, each also uploaded to the session's S3 server."""
    import zarr

    root = tmp_path_factory.mktemp("zvrt")
    base = root / BUCKET / PREFIX
    write_store(base / "v1.1-dclimate")
    holes = write_store(base / "v1.1")
    for zone, rows, cols in (SHARD_GONE, (CHUNK_GONE[0], slice(CHUNK_GONE[1], CHUNK_GONE[1] + 32),
                                          slice(CHUNK_GONE[2], CHUNK_GONE[2] + 32))):
        emb = zarr.open_array(str(holes / f"utm{zone:02d}" / "embeddings"), mode="r+")
        emb[1, :, rows, cols] = 0  # all fill: zarr-python drops the chunks (and the shard once all are gone)
    assert not (holes / "utm31/embeddings/c/1/0/0/0").exists()
    write_store(base / "v1", "small")
    for name in ("v1.1-dclimate", "v1.1", "v1"):
        upload(base / name, s3.put, f"s3://{BUCKET}/{PREFIX}/{name}")
    return root


@pytest.fixture(scope="module")
def http(zroot):
    with FileServer(zroot) as fs:
        yield fs


def build(out: Path, bbox: str, endpoint: str, *args: str, dataset: str = "v1.1-dclimate") -> subprocess.CompletedProcess:
    return run_cli("build", "--dataset", dataset, "--bbox", bbox, "--year", "2024", "-o", str(out), "--endpoint", endpoint,
                   *args)


@pytest.fixture(scope="module")
def zones_vrt(zroot, s3, tmp_path_factory) -> Path:
    """ZONES_BOX of v1.1-dclimate built once over /vsis3/, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("zones") / "z.vrt"
    build(out, ZONES_BOX, s3.url)
    return out


def zone_vrts(out: Path) -> list[Path]:
    rec = json.loads((out.with_name(out.name[:-4] + ".tessvrt") / "tessvrt.json").read_text())
    return [out.with_name(z["vrt"]) for z in rec["zones"]]


def vrt_rows(vrt: Path) -> tuple[int, int, int, int, int]:
    """(zone, group row, group col, height, width) of a zone VRT, from its georeferencing alone."""
    return store_rows(vrt)


def windows(h: int, w: int, rng: np.random.Generator) -> list[list[int]]:
    """The whole VRT (every pixel), single pixels at the corners, and random windows (at most 64 px a side: the
    whole window already checks their pixels; they check the windowed read path, which 33-64 px cross a 32-px chunk
    edge on)."""
    out = [[0, 0, w, h], [0, 0, 1, 1], [w - 1, h - 1, 1, 1]]
    for _ in range(6):
        ww, hh = int(rng.integers(1, min(w, 64) + 1)), int(rng.integers(1, min(h, 64) + 1))
        out.append([int(rng.integers(0, w - ww + 1)), int(rng.integers(0, h - hh + 1)), ww, hh])
    return out


def check_vrt(python: str, out: Path, store: Path, gdalrc: Path, tmp: Path, bands: list[int] | None = None,
              kinds: set | None = None) -> int:
    """Every zone VRT of a build equals the zarr-python reference on all its pixels and on random windows;
    kinds collects the stored scale values met (each invalid kind, NaN, +inf, valid)."""
    rng = np.random.default_rng(21)
    n = 0
    for v in zone_vrts(out):
        zone, r, c, h, w = vrt_rows(v)
        wins = windows(h, w, rng)
        meta, got = gdal_read(python, v, gdalrc, wins, bands, tmp)
        assert meta["count"] == BANDS and meta["dtypes"] == ["float32"] * BANDS and meta["nodata"] == "nan"
        assert meta["tags"]["TESSVRT_FORMAT"] == "zarr" and meta["descriptions"][0] == "embedding_000"
        for (x, y, ww, hh), arr in zip(wins, got, strict=True):
            ref, raw = reference(store, zone, 2024, slice(r + y, r + y + hh), slice(c + x, c + x + ww), bands)
            if kinds is not None:
                usual = (raw > 0) & (raw < 0.5)
                kinds |= {str(v) for v in raw[~usual].tolist()} | ({"valid"} if usual.any() else set())
            assert_same(arr, ref, f"{v.name} window {x},{y},{ww},{hh} (GDAL {meta['gdal']})")
            n += arr.size
    return n


@needs_312
@pytest.mark.parametrize("vsi", ["s3", "curl"])
@pytest.mark.parametrize("bbox, n_zones", [(INSIDE, 1), (SHARDS, 2), (ZONES_BOX, 4)], ids=["inside", "shards", "zones"])
def test_zarr_vrt_equals_reference(zroot, s3, http, gdalrc, tmp_path, vsi, bbox, n_zones):
    """/vsis3/ (moto) and /vsicurl/ (static HTTP): all pixels of every zone VRT, shard corners, the equator, zone seams."""
    out = tmp_path / "z.vrt"
    p = build(out, bbox, s3.url if vsi == "s3" else http.url, "--vsi", vsi)
    assert "inner chunks referenced" in p.stderr
    assert len(zone_vrts(out)) == n_zones
    refs = (tmp_path / "z.tessvrt" / "refs_utm31_embeddings.json").read_text()
    assert refs.startswith('{"version":1,') and ('"s3://' if vsi == "s3" else f'"{http.url}/') in refs
    kinds: set = set()
    n = check_vrt(PY312, out, zroot / BUCKET / PREFIX / "v1.1-dclimate", gdalrc, tmp_path, kinds=kinds)
    assert n > 100_000
    if bbox == ZONES_BOX:  # upstream's valid rule against GDAL's LUT: every kind of invalid scale was compared
        assert {"valid", "nan", "inf", "-inf", "0.0", "-0.5", "1.0", "1.5", "3.3999999521443642e+38",
                "0.9999998807907104"} <= kinds, kinds


@needs_312
def test_absent_embeddings_under_valid_scales_are_nan_and_equal_materialise(zroot, s3, gdalrc, tmp_path):
    """Store v1.1: a missing inner chunk and a missing shard of embeddings under valid scales: NaN (never 0.0),
    as materialise writes them (counted there as not_written); the rest equals materialise's COGs bit for bit."""
    out = tmp_path / "h.vrt"
    p = build(out, ZONES_BOX, s3.url, "--format", "zarr", dataset="v1.1-cam")
    assert "inner chunks referenced" in p.stderr
    rec = json.loads((tmp_path / "h.tessvrt" / "tessvrt.json").read_text())
    assert rec["refs"]["utm32"]["dropped_scales"] >= 1 and rec["refs"]["utm31"]["dropped_scales"] >= 1
    res = materialise(s3, tmp_path / "m.tif", ZONES_BOX, "--bands", "1-128", dataset="v1.1")
    assert res["not_written"] > 1000
    by_label = {Path(f).name.split("_")[-1][:-4]: Path(f) for f in res["files"]}
    store = zroot / BUCKET / PREFIX / "v1.1"
    gone = 0
    for v in zone_vrts(out):
        label = v.name.split("_")[-1][:-4]
        with rasterio.open(by_label[label]) as d:
            cog, ct = d.read(), d.transform
        meta, (got,) = gdal_read(PY312, v, gdalrc, [[0, 0, cog.shape[2], cog.shape[1]]], None, tmp_path)
        with rasterio.open(v) as d:
            assert d.transform == ct
        assert_same(got, cog, f"{v.name} vs materialise {by_label[label].name}")
        zone, r, c, h, w = vrt_rows(v)
        _, raw = reference(store, zone, 2024, slice(r, r + h), slice(c, c + w))
        valid = np.isfinite(raw) & (raw > 0) & (raw < 1)
        hole = valid & np.isnan(got[0])
        gone += int(hole.sum())
    assert gone == res["not_written"]


@needs_312
def test_zarr_vrt_equals_materialise_cogs(zones_vrt, s3, gdalrc, tmp_path):
    """The same region as materialise's COGs (one per zone part): every pixel equal."""
    out = zones_vrt
    res = materialise(s3, tmp_path / "m.tif", ZONES_BOX, "--bands", "1-128")
    cogs = sorted(Path(f) for f in res["files"])
    vrts = sorted(zone_vrts(out))
    assert [c.name[2:] for c in cogs] == [v.name[2:].replace(".vrt", ".tif") for v in vrts]
    for v, c in zip(vrts, cogs, strict=True):
        with rasterio.open(c) as d:
            cog = d.read()
        _, (got,) = gdal_read(PY312, v, gdalrc, [[0, 0, cog.shape[2], cog.shape[1]]], None, tmp_path)
        assert_same(got, cog, f"{v.name} vs {c.name}")


@needs_312
@pytest.mark.skipif(not ORACLE_PY and not os.environ.get("CI"),
                    reason="TESSVRT_ORACLE_PY not set (scripts/test.sh makes the geotessera venv)")
def test_upstream_reader_agrees(zroot, s3, gdalrc, tmp_path):
    """geotessera 0.11's GeoTesseraZarr.read_region over the same store: the single-part regions pixel for pixel,
    but where the planted scales are finite and invalid (upstream NaNs only non-finite scales)."""
    boxes = {"31n": "5.9910,0.0005,5.9995,0.0070", "31s": "5.9960,-0.0040,5.9995,-0.0005",
             "32n": "6.0010,0.0005,6.0080,0.0060", "32s": "6.0010,-0.0040,6.0080,-0.0005"}
    store = zroot / BUCKET / PREFIX / "v1.1-dclimate"
    npz = tmp_path / "oracle.npz"
    cmd = [ORACLE_PY, str(HERE / "oracle_geotessera.py"), "--store", str(store), "--year", "2024", "--out", str(npz)]
    cmd += sum((["--reader-bbox", b] for b in boxes.values()), [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GDAL_", "CPL_"))}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    d = np.load(npz)
    from tessvrt import build as build_vrt  # in this process: four CLI start-ups saved (the CLI's build is tested above)

    compared = 0
    for j, (name, bbox) in enumerate(boxes.items()):
        out = tmp_path / f"{name}.vrt"
        build_vrt(out, dataset="v1.1-dclimate", bbox=bbox, year=2024, endpoint=s3.url)
        (v,) = zone_vrts(out)
        up = np.moveaxis(d[f"r{j}_values"], 2, 0)
        _, (got,) = gdal_read(PY312, v, gdalrc, [[0, 0, up.shape[2], up.shape[1]]], None, tmp_path)
        zone, r, c, h, w = vrt_rows(v)
        assert (h, w) == up.shape[1:], (name, up.shape, (h, w))
        _, raw = reference(store, zone, 2024, slice(r, r + h), slice(c, c + w))
        bad = np.isfinite(raw) & ~((raw > 0) & (raw < 1))
        assert np.isnan(got[:, bad]).all()
        same = ((got == up) | (np.isnan(got) & np.isnan(up))).all(axis=0)
        assert same[~bad].all(), f"{name}: {int((~same[~bad]).sum())} pixels differ from geotessera"
        compared += int((~bad).sum())
    assert compared > 10_000


def test_gdal_without_kerchunk_fails_and_says_why(zroot, s3, gdalrc, tmp_path):
    """GDAL 3.10 (this venv's rasterio) has no Kerchunk: the read fails (never zeros), and info/doctor say
    in one line what to use instead."""
    out = tmp_path / "z.vrt"
    build(out, INSIDE, s3.url)
    spec = json.dumps({"windows": [[0, 0, 4, 4]], "bands": [1]})
    p = subprocess.run([sys.executable, str(HERE / "gdal_read.py"), str(out), str(tmp_path / "x.npz"), spec],
                       capture_output=True, text=True, env=env_with_gdalrc(gdalrc))
    assert p.returncode != 0 and "refs_utm31_embeddings.json" in p.stderr and not (tmp_path / "x.npz").exists()
    env = env_with_gdalrc(gdalrc)
    i = subprocess.run([sys.executable, "-m", "tessvrt", "info", str(out)], capture_output=True, text=True, env=env)
    assert i.returncode == 0, i.stderr
    line = [ln for ln in i.stderr.splitlines() if "GDAL 3.10" in ln]
    assert len(line) == 1 and ">= 3.11" in line[0] and "--format npy" in line[0] and "materialise" in line[0], i.stderr
    assert "Zarr store" in i.stdout and "remote bytes" in i.stdout


def test_format_choice_and_refusals(zroot, s3, tmp_path):
    """--format: npy is the default where both exist; zarr where only Zarr exists; a store whose embeddings and
    scales chunks differ (v1's small layout) is refused in one line, writing nothing."""
    p = run_cli("build", "--dataset", "v1", "--format", "zarr", "--bbox", INSIDE, "--year", "2024", "-o",
                str(tmp_path / "a.vrt"), "--endpoint", s3.url, check=False)
    assert p.returncode == 1 and "differ in y/x" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert list(tmp_path.iterdir()) == []
    # v1 has npy tiles: without --format, build reads them (near 88 N: none in this box)
    q = run_cli("build", "--dataset", "v1", "--bbox", INSIDE, "--year", "2024", "-o", str(tmp_path / "b.vrt"),
                "--endpoint", s3.url, check=False)
    assert q.returncode == 1 and "none of the" in q.stderr
    r = run_cli("build", "--dataset", "v1.1-dclimate", "--bbox", INSIDE, "--year", "2024", "-o", str(tmp_path / "c.vrt"),
                "--endpoint", s3.url, "--format", "tiff", check=False)
    assert r.returncode == 1 and "--format 'tiff' must be zarr or npy" in r.stderr


def test_doctor_checks_each_gdal_for_zarr_vrts(zroot, s3, gdalrc, tmp_path, monkeypatch):
    """doctor Z.vrt: GDAL 3.10 (this venv) and QGIS's 3.6 FAIL with the one line naming npy and materialise;
    GDAL 3.12 (TESSVRT_PY312 running this tessvrt) reads the inline Blosc probe and passes."""
    out = tmp_path / "z.vrt"
    build(out, INSIDE, s3.url)
    env = env_with_gdalrc(gdalrc)
    p = subprocess.run([sys.executable, "-m", "tessvrt", "doctor", str(out)], capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if "Zarr VRTs" in ln]
    assert p.returncode == 1 and lines, p.stdout + p.stderr
    mine = [ln for ln in lines if "GDAL 3.10" in ln.split(":")[0]]
    assert len(mine) == 1 and mine[0].startswith("FAIL") and "older than 3.11" in mine[0] and "--format npy" in mine[0]
    if PY312:  # doctor's own probe, run by GDAL 3.12's interpreter (that venv has rasterio, not tessvrt's CLI)
        from tessvrt.doctor import _python_gdal
        from tessvrt.zarrvrt import write_probe, zarr_check

        monkeypatch.setenv("GDAL_CONFIG_FILE", str(gdalrc))
        res = _python_gdal(PY312, "rasterio", out, write_probe(tmp_path))
        c = zarr_check("rasterio", res)
        assert c.ok and "Blosc" in c.detail and res["gdal"].startswith("3.12"), (c, res)
        broken = dict(res, zarr="'zarr_probe.json' not recognized as being in a supported file format")
        c = zarr_check("rasterio", broken)
        assert not c.ok and "lacks the Zarr driver or Blosc" in c.detail and "--format npy" in c.detail


def _group_rc(epsg: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group array (row, col) of the pixels containing points of a 326NN/327NN grid."""
    s = SPEC[epsg % 100]
    north = y - (10_000_000 if epsg >= 32700 else 0)
    return np.floor((s.oy - north) / 10).astype(np.int64), np.floor((x - s.ox) / 10).astype(np.int64)


@needs_312
def test_main_vrt_across_zones(zroot, zones_vrt, gdalrc, tmp_path):
    """The main VRT of a region over zones 31/32 and the equator, on utm31n's grid: pixels of zone 31 (either
    hemisphere) shifted from its group, the others warped (nearest) from zone 32's pixel containing each centre,
    each pixel from exactly one part: every pixel equals that definition, computed here with pyproj."""
    from pyproj import Transformer

    out = zones_vrt
    rec = json.loads((out.parent / "z.tessvrt" / "tessvrt.json").read_text())
    m = rec["main"]["window"]
    assert m["epsg"] == 32631 and (out.parent / "z.tessvrt" / "warped").is_dir()
    bands = [1, 2, 64, 128]
    meta, (got,) = gdal_read(PY312, out, gdalrc, [[0, 0, m["width"], m["height"]]], bands, tmp_path)
    store = zroot / BUCKET / PREFIX / "v1.1-dclimate"
    refs = {z: reference(store, z, 2024, slice(0, SPEC[z].height), slice(0, SPEC[z].width), bands)[0] for z in SPEC}
    xs = 10.0 * (m["col0"] + np.arange(m["width"])) + 5
    ys = 10.0 * (m["row0"] - np.arange(m["height"])) + 5
    gx, gy = np.meshgrid(xs, ys)
    want = np.full((len(bands), m["height"], m["width"]), np.nan, np.float32)
    native = np.zeros(gx.shape, bool)
    for z in rec["zones"]:  # zone 31's parts: their window rectangles, on utm31n's grid
        w = z["window"]
        if z["epsg"] % 100 == 31:
            row0 = w["row0"] - (1_000_000 if z["epsg"] >= 32700 else 0)
            native |= (gx >= 10 * w["col0"]) & (gx < 10 * (w["col0"] + w["width"])) & \
                (gy < 10 * (row0 + 1)) & (gy > 10 * (row0 + 1 - w["height"]))
    r, c = _group_rc(32631, gx, gy)
    want[:, native] = refs[31][:, r[native], c[native]]
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(gx, gy)
    for z in rec["zones"]:
        if z["epsg"] % 100 == 31:
            continue
        mine = ~native & (np.floor((lon + 180) / 6) + 1 == 32) & ((lat < 0) == (z["epsg"] >= 32700))
        px, py = Transformer.from_crs(4326, z["epsg"], always_xy=True).transform(lon[mine], lat[mine])
        w = z["window"]
        col, row = np.floor(px / 10), np.floor(py / 10)
        inside = (col >= w["col0"]) & (col < w["col0"] + w["width"]) & (row <= w["row0"]) & (row > w["row0"] - w["height"])
        gr, gc = _group_rc(z["epsg"], px, py)
        vals = np.full((len(bands), int(mine.sum())), np.nan, np.float32)
        vals[:, inside] = refs[32][:, gr[inside], gc[inside]]
        want[:, mine] = vals
    assert_same(got, want, f"main VRT {out.name} across zones (GDAL {meta['gdal']})")
    assert np.isfinite(want[0][~native]).sum() > 1000 and np.isfinite(want[0][native]).sum() > 1000


def test_materialise_and_info_of_a_zarr_vrt(zroot, s3, tmp_path):
    """materialise Z.vrt writes the same zone parts, pixel for pixel, as materialise --dataset --bbox --year;
    info gives the parts, the inner chunks referenced and their bytes (what a full read fetches)."""
    out = tmp_path / "z.vrt"
    build(out, SHARDS, s3.url)
    p = run_cli("materialise", str(out), str(tmp_path / "v.tif"), "--bands", "1,64", "--quiet", "--json")
    via_vrt = sorted(Path(f) for f in json.loads(p.stdout)["files"])
    direct = sorted(Path(f) for f in materialise(s3, tmp_path / "d.tif", SHARDS, "--bands", "1,64")["files"])
    assert len(via_vrt) == len(direct) == 2
    for a, b in zip(via_vrt, direct, strict=True):
        with rasterio.open(a) as da, rasterio.open(b) as db:
            assert da.transform == db.transform and da.crs == db.crs
            assert_same(da.read(), db.read(), f"{a.name} vs {b.name}")
    d = json.loads(run_cli("info", str(out), "--json").stdout)
    rec = json.loads((tmp_path / "z.tessvrt" / "tessvrt.json").read_text())
    assert d["format"] == "zarr" and len(d["zones"]) == 2 and d["chunks"] == sum(r["chunks"] for r in rec["refs"].values())
    refs = [json.loads(f.read_text())["refs"] for f in (tmp_path / "z.tessvrt").glob("refs_*.json")]
    ranges = [v for r in refs for k, v in r.items() if not k.startswith(".")]
    assert d["remote_bytes"] == sum(v[2] for v in ranges) > 0 and d["chunks"] == len(ranges)

"""tessvrt materialise against the local S3 server: whole outputs equal the numpy reference of the
pixel rule, per UTM zone; COG layout; bad input refused with nothing left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from conftest import assert_same, block_and_cross_vrts, deleted, interrupt_when, run_cli, small_disk
from reference import expected, load_record

from tessvrt.cog.check import cog_validate
from tessvrt.cog.profiles import overview_factors


@pytest.fixture(scope="module")
def vrts(s3, tmp_path_factory):
    return block_and_cross_vrts(s3, tmp_path_factory.mktemp("mat"))


def zone_reference(bucket_root, rec: dict, zone: dict, bands: list[int]) -> np.ndarray:
    w = zone["window"]
    rec = {**rec, "tiles": [t for t in rec["tiles"] if t["epsg"] == zone["epsg"]]}
    return expected(bucket_root, rec, w["epsg"], w["col0"], w["row0"], w["width"], w["height"], [b - 1 for b in bands])


def assert_overviews(path, ref: np.ndarray) -> None:
    """Overview pixel i of factor f is full-resolution pixel i*f + f//2 (nearest), clamped to the edge."""
    with rasterio.open(path) as d:
        factors = overview_factors(d.width, d.height, d.block_shapes[0][0])  # d.overviews() rounds
        assert factors and len(d.overviews(1)) == len(factors)
    for k, f in enumerate(factors):
        with rasterio.open(path, overview_level=k) as o:
            got = o.read()
        assert got.shape[1:] == (-(-ref.shape[1] // f), -(-ref.shape[2] // f))
        rows = np.minimum(np.arange(got.shape[1]) * f + f // 2, ref.shape[1] - 1)
        cols = np.minimum(np.arange(got.shape[2]) * f + f // 2, ref.shape[2] - 1)
        assert_same(got, ref[:, rows][:, :, cols], f"overview x{f}")


@pytest.fixture(scope="module")
def block_tif(vrts, tmp_path_factory):
    """The block materialised once with the defaults (all bands): checked against the reference in
    test_single_zone_all_bands, and the clean run the interrupted runs' reruns must equal."""
    out = tmp_path_factory.mktemp("block_tif") / "out.tif"
    p = run_cli("materialise", str(vrts["block"]), str(out), "--json", "--quiet")
    return out, p


def test_single_zone_all_bands(vrts, block_tif, bucket_root):
    out, p = block_tif
    assert json.loads(p.stdout)["files"] == [str(out)]
    rec = load_record(vrts["block"])
    with rasterio.open(out) as d:
        got = d.read()
        assert d.count == 128 and d.dtypes[0] == "float32" and np.isnan(d.nodata)
        assert d.descriptions[0] == "embedding_000" and d.descriptions[127] == "embedding_127"
        assert d.tags()["TESSERA_YEAR"] == "2024" and "grid_4.15_88.15" in d.tags()["TESSVRT_TILES"]
        assert d.crs.to_epsg() == rec["main"]["epsg"] and d.overviews(1)
        assert d.transform.a == 10 and d.transform.c % 10 == 0
    ref = zone_reference(bucket_root, rec, rec["zones"][0], list(range(1, 129)))
    assert_same(got, ref, "materialised block, all bands")
    assert_overviews(out, ref)
    assert np.isfinite(ref).mean() > 0.3 and np.isnan(ref).any()
    assert cog_validate(out) == []
    assert not list(out.parent.glob(".*"))  # no temporaries left


def test_narrow_chunks_stay_exact(vrts, bucket_root, tmp_path, monkeypatch):
    """A wide region is walked in chunks of one block column (memory bound): chunk edges cross
    tile edges and tiles' fetched rows are reused across chunks."""
    import importlib

    mat = importlib.import_module("tessvrt.materialise")
    writer = importlib.import_module("tessvrt.cog.write")
    monkeypatch.setattr(writer, "MEMORY_BUDGET", 1)  # the smallest chunk: one block
    rec = load_record(vrts["block"])
    assert writer.chunk_width(rec["zones"][0]["window"]["width"], 2, 64) == 64
    out = tmp_path / "thin.tif"
    res = mat.materialise(vrts["block"], out, bands="128,5", blocksize=64, compress="none")
    assert res.files == [out] and res.remote_bytes > 0
    monkeypatch.undo()  # the same block rows in whole-width chunks fetch the same bytes: rows were reused
    wide = mat.materialise(vrts["block"], tmp_path / "wide.tif", bands="128,5", blocksize=64, compress="none")
    assert wide.remote_bytes == res.remote_bytes
    with rasterio.open(out) as d:
        got = d.read()
    ref = zone_reference(bucket_root, rec, rec["zones"][0], [128, 5])
    assert_same(got, ref, "64x64 chunks, bands 128,5")
    assert_overviews(out, ref)
    assert cog_validate(out) == []


def test_zones_each_get_a_file(vrts, bucket_root, tmp_path):
    out = tmp_path / "cross.tif"
    p = run_cli("materialise", str(vrts["cross"]), str(out), "--bands", "3,1,128", "--compress", "deflate",
                "--blocksize", "256", "--json", "--quiet")
    files = json.loads(p.stdout)["files"]
    rec = load_record(vrts["cross"])
    assert files == [str(tmp_path / f"cross_{z['label']}.tif") for z in rec["zones"]] and len(files) == 2
    for z, f in zip(rec["zones"], files, strict=True):
        with rasterio.open(f) as d:
            assert d.crs.to_epsg() == z["epsg"] and d.count == 3 and d.block_shapes[0] == (256, 256)
            assert d.descriptions == ("embedding_002", "embedding_000", "embedding_127")
            assert d.compression.name == "deflate"
            got = d.read()
        assert_same(got, zone_reference(bucket_root, rec, z, [3, 1, 128]), f"materialised {f}")
        assert cog_validate(f) == []


def test_no_overviews_and_overwrite(vrts, tmp_path):
    out = tmp_path / "o.tif"
    run_cli("materialise", str(vrts["block"]), str(out), "--bands", "1", "--no-overviews", "--quiet")
    with rasterio.open(out) as d:
        assert d.overviews(1) == []
    before = out.stat().st_mtime_ns
    p = run_cli("materialise", str(vrts["block"]), str(out), "--bands", "1", "--quiet", check=False)
    assert p.returncode == 1 and "--overwrite" in p.stderr and "Traceback" not in p.stderr
    assert out.stat().st_mtime_ns == before
    run_cli("materialise", str(vrts["block"]), str(out), "--bands", "2", "--overwrite", "--quiet")
    with rasterio.open(out) as d:
        assert d.descriptions == ("embedding_001",)


@pytest.mark.parametrize("args, msg", [
    (["--bands", "0"], "out of range"),
    (["--bands", "1,x"], "not a band number"),
    (["--bands", "129"], "out of range"),
    (["--compress", "jpeg"], "not one of"),
    (["--blocksize", "100"], "multiple of 16"),
])
def test_bad_options(vrts, tmp_path, args, msg):
    out = tmp_path / "x.tif"
    p = run_cli("materialise", str(vrts["block"]), str(out), *args, check=False)
    assert p.returncode == 1 and msg in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(vrts, tmp_path):
    p = run_cli("materialise", str(tmp_path / "nope.vrt"), str(tmp_path / "x.tif"), check=False)
    assert p.returncode == 1 and "does not exist" in p.stderr
    plain = tmp_path / "plain.vrt"
    plain.write_text("<VRTDataset/>")
    p = run_cli("materialise", str(plain), str(tmp_path / "x.tif"), check=False)
    assert p.returncode == 1 and "not a tessvrt VRT" in p.stderr
    p = run_cli("materialise", str(vrts["block"]), str(tmp_path / "no" / "x.tif"), check=False)
    assert p.returncode == 1 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["plain.vrt"]


def gone_tile(vrts) -> tuple[str, str]:
    """A tile of the block VRT (name, embeddings object) to delete from the bucket during a test."""
    victim = load_record(vrts["block"])["tiles"][4]
    return victim["name"], victim["grid"]


def test_missing_tile_object_names_the_tile(vrts, s3, bucket_root, tmp_path):
    """A tile object deleted from the bucket after build: 404 named, no output."""
    victim, uri = gone_tile(vrts)
    out = tmp_path / "x.tif"
    with deleted(s3, bucket_root, uri):
        p = run_cli("materialise", str(vrts["block"]), str(out), "--bands", "1", check=False)
    assert p.returncode == 1 and victim in p.stderr and "404" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not out.exists() and not list(tmp_path.glob(".x.tif*"))


def test_allow_missing_writes_nan_and_lists_the_tile(vrts, s3, bucket_root, tmp_path):
    victim, uri = gone_tile(vrts)
    out = tmp_path / "x.tif"
    with deleted(s3, bucket_root, uri):
        p = run_cli("materialise", str(vrts["block"]), str(out), "--bands", "1,64", "--allow-missing", "--json")
    assert json.loads(p.stdout)["missing"] == [victim] and victim in p.stderr
    rec = load_record(vrts["block"])
    zone = rec["zones"][0]
    without = {**rec, "tiles": [t for t in rec["tiles"] if t["name"] != victim]}  # its pixels: owner not there
    ref = zone_reference(bucket_root, without, zone, [1, 64])
    with rasterio.open(out) as d:
        assert_same(d.read(), ref, "--allow-missing output")
        assert victim in d.tags()["TESSVRT_MISSING_TILES"].split(",")
    assert np.isnan(ref).sum() > np.isnan(zone_reference(bucket_root, rec, zone, [1, 64])).sum()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_nothing_and_reruns_identically(vrts, block_tif, tmp_path, sig):
    """SIGTERM cleans up at once; a killed run leaves temporaries that the next run removes."""
    out = tmp_path / "out.tif"
    cmd = [sys.executable, "-m", "tessvrt", "materialise", str(vrts["block"]), str(out), "--quiet", "--compress", "zstd"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, _, err = interrupt_when(proc, tmp_path, ".out.tif.*", sig, after=0.3)
    assert code != 0 and not out.exists()
    if sig == signal.SIGTERM:
        assert err.strip().splitlines() == ["tessvrt: error: interrupted; no output was written "
                                            "(run the same command again to restart)"]
        assert not list(tmp_path.iterdir())
    run_cli("materialise", str(vrts["block"]), str(out), "--quiet")
    assert not [p for p in tmp_path.iterdir() if p != out]  # the killed run's temporaries are gone
    with rasterio.open(out) as a, rasterio.open(block_tif[0]) as b:  # the clean run, checked against the reference
        assert_same(a.read(), b.read(), "rerun after interruption")


def test_disk_full_is_one_clear_error_and_leaves_nothing(vrts, tmp_path, monkeypatch):
    """A 4 MB file system fills up mid-run (the up-front space check is bypassed to get there)."""
    import importlib

    with small_disk(tmp_path / "small", "4m") as small:
        mat = importlib.import_module("tessvrt.materialise")
        monkeypatch.setattr(mat, "_check_space", lambda *a: None)
        with pytest.raises(mat.TessvrtError, match="writing .*out.tif failed") as err:
            mat.materialise(vrts["block"], small / "out.tif", bands="1-8", compress="none")
        assert "\n" not in str(err.value) and "free space" in str(err.value)
        assert list(small.iterdir()) == []


def test_disk_check_names_small_sizes_in_mb(vrts, tmp_path):
    """Red-team 2 item 10: the up-front disk check said '0.0 GB' for outputs under a gigabyte."""
    with small_disk(tmp_path / "small", "1m") as mnt:
        p = run_cli("materialise", str(vrts["block"]), str(mnt / "o.tif"), "--bands", "1", check=False)
        assert p.returncode == 1 and "not enough free disk space" in p.stderr, p.stderr
        assert " MB (temporaries and output)" in p.stderr and "0.0 GB" not in p.stderr, p.stderr
        assert list(mnt.iterdir()) == []

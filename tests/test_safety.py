"""Data safety (issue 13): tessvrt never deletes or replaces what it did not make, outputs appear whole or
not at all, rebuilds leave nothing of the previous build behind, interrupted runs leave nothing that
lasts, and absurd or malformed requests get one line before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from conftest import TESSVRT, interrupt_when, manifest_path, run_cli
from test_cli import assert_clean_failure

from tessvrt.grid import Tile, owner_cells, ownerships, tile_grids
from tessvrt.publish import TMP_MARK

CROSS = ["--bbox", "5.8,88.0,6.2,88.2", "--year", "2024"]
BLOCK = ["--bbox", "4.0,88.0,4.3,88.3", "--year", "2024"]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("which", ["output", "zone_vrt", "sidecar_file"])
def test_existing_folders_and_foreign_files_are_never_replaced(which, s3, tmp_path):
    """-o naming a folder, a per-zone name that is a folder, a sidecar name that is a file: refused, intact."""
    if which == "output":
        victim = tmp_path / "d.vrt"
        victim.mkdir()
        (victim / "precious.txt").write_text("keep me")
    elif which == "zone_vrt":
        victim = tmp_path / "d_utm31n.vrt"
        victim.mkdir()
        (victim / "precious.txt").write_text("keep me")
    else:
        victim = tmp_path / "d.tessvrt"
        victim.write_text("keep me")
    before = tree(tmp_path)
    for extra in ([], ["--overwrite"]):
        p = run_cli("build", *CROSS, "-o", str(tmp_path / "d.vrt"), "--endpoint", s3.url, *extra, check=False)
        assert p.returncode == 1 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert str(victim) in p.stderr
        assert tree(tmp_path) == before and victim.exists()


def test_rebuild_needs_overwrite_and_removes_only_the_previous_build(s3, tmp_path):
    """Multi-zone then single-zone under one name: the old per-zone VRTs go (GDAL would otherwise read
    them over the new mosaic), a user's file beside them stays, and nothing is replaced without --overwrite."""
    out = tmp_path / "x.vrt"
    run_cli("build", *CROSS, "-o", str(out), "--endpoint", s3.url)
    assert (tmp_path / "x_utm31n.vrt").is_file() and (tmp_path / "x_utm32n.vrt").is_file()
    (tmp_path / "x_notes.txt").write_text("mine")
    p = run_cli("build", *BLOCK, "-o", str(out), "--endpoint", s3.url, check=False)
    assert p.returncode == 1 and "pass --overwrite" in p.stderr
    assert (tmp_path / "x_utm32n.vrt").is_file()
    run_cli("build", *BLOCK, "-o", str(out), "--endpoint", s3.url, "--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tessvrt", "x.vrt", "x_notes.txt"]
    rec = json.loads((tmp_path / "x.tessvrt" / "tessvrt.json").read_text())
    assert [z["vrt"] for z in rec["zones"]] == ["x.vrt"]
    # a per-zone name the previous build did not write is someone else's: refused even with --overwrite
    (tmp_path / "x_utm32n.vrt").write_text("<VRTDataset/>")
    p = run_cli("build", *CROSS, "-o", str(out), "--endpoint", s3.url, "--overwrite", check=False)
    assert p.returncode == 1 and "x_utm32n.vrt exists and was not written by" in p.stderr
    assert (tmp_path / "x_utm32n.vrt").read_text() == "<VRTDataset/>" and (tmp_path / "x.vrt").is_file()


def test_sidecar_without_record_is_not_ours(s3, tmp_path):
    side = tmp_path / "x.tessvrt"
    side.mkdir()
    (side / "data.bin").write_bytes(b"user data")
    p = run_cli("build", *BLOCK, "-o", str(tmp_path / "x.vrt"), "--endpoint", s3.url, "--overwrite", check=False)
    assert p.returncode == 1 and "holds no tessvrt build record" in p.stderr
    assert (side / "data.bin").read_bytes() == b"user data"


def test_materialise_overwrite_is_all_zones_or_none(s3, tmp_path, monkeypatch):
    """Zone 2 of 2 fails while writing: both old COGs are still there, byte for byte."""
    import importlib

    mat = importlib.import_module("tessvrt.materialise")  # the module (tessvrt.materialise is also the function)
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(tmp_path / "cache"))
    from tessvrt import build

    vrt = build(tmp_path / "c.vrt", bbox="5.8,88.0,6.2,88.2", year=2024, endpoint=s3.url).vrt
    first = mat.materialise(vrt, tmp_path / "o.tif", bands="1", overviews=False)
    assert len(first.files) == 2
    before = {p: p.read_bytes() for p in first.files}
    real, calls = mat._write_zone, []

    def failing(target, *args, **kw):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(target, *args, **kw)

    monkeypatch.setattr(mat, "_write_zone", failing)
    with pytest.raises(Exception, match="No space left"):
        mat.materialise(vrt, tmp_path / "o.tif", bands="2", overviews=False, overwrite=True)
    assert len(calls) == 2
    assert {p: p.read_bytes() for p in first.files} == before
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_concurrent_materialise_to_one_path(s3, tmp_path):
    """A second run on the same output is refused while the first runs; the first completes."""
    vrt = tmp_path / "b.vrt"
    run_cli("build", *BLOCK, "-o", str(vrt), "--endpoint", s3.url)
    out = tmp_path / "o.tif"
    first = subprocess.Popen([*TESSVRT, "materialise", str(vrt), str(out), "--quiet"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / f".o.tif.lock{TMP_MARK}"
    deadline = time.monotonic() + 60
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.exists(), "the first run never took its lock"
    second = run_cli("materialise", str(vrt), str(out), "--quiet", "--overwrite", check=False)
    assert second.returncode == 1 and f"another tessvrt run (pid {first.pid})" in second.stderr, second.stderr
    assert first.wait(300) == 0, first.stderr.read()
    assert out.is_file() and not lock.exists()


def test_wildcard_output_name_spares_other_runs_temporaries(s3, tmp_path):
    """An output named `*.tif` removes only its own dead temporaries, never another live run's."""
    vrt = tmp_path / "b.vrt"
    run_cli("build", *BLOCK, "-o", str(vrt), "--endpoint", s3.url)
    live = tmp_path / f".a.tif.{os.getpid()}{TMP_MARK}.main.tif"  # this test process is alive
    live.write_bytes(b"another run's data")
    dead = tmp_path / f".*.tif.999999999{TMP_MARK}.main.tif"  # no such pid
    dead.write_bytes(b"left by a killed run")
    run_cli("materialise", str(vrt), str(tmp_path / "*.tif"), "--bands", "1", "--quiet")
    assert live.read_bytes() == b"another run's data" and not dead.exists()
    assert (tmp_path / "*.tif").is_file()


def synthetic_manifest(path: Path, tiles: list[Tile]) -> Path:
    """A local manifest whose sizes match the formula geometry (build then makes no request)."""
    grids = tile_grids(tiles)
    pd.DataFrame({
        "version": "1.0", "variant": "vultr", "year": 2024, "lon": [t.lon for t in tiles], "lat": [t.lat for t in tiles],
        "grid_size": [128 + g.width * g.height * 128 for g in grids],
        "scales_size": [128 + g.width * g.height * 4 for g in grids],
    }).to_parquet(path)
    return path


def test_sigterm_during_build_leaves_nothing_and_a_killed_build_is_cleaned(tmp_path):
    tiles = [Tile(i * 10 + 5, j * 10 + 5) for j in range(500, 540) for i in range(0, 60)]  # 2,400 tiles, ~2 s
    m = synthetic_manifest(tmp_path / "m.parquet", tiles)
    out = tmp_path / "big.vrt"
    cmd = [*TESSVRT, "build", "--bbox", "0,50,6,54", "--year", "2024", "-o", str(out), "--manifest", str(m)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, took, err = interrupt_when(proc, tmp_path, f".big.vrt.*{TMP_MARK}", signal.SIGTERM)
    assert code == 130 and "interrupted" in err and took < 2.0, (code, took)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]
    # SIGKILL cannot be caught: the next run removes what it left
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    interrupt_when(proc, tmp_path, f".big.vrt.*{TMP_MARK}", signal.SIGKILL)
    assert list(tmp_path.glob(f".big.vrt.*{TMP_MARK}")), "a killed build should leave its temporary (to be cleaned)"
    small = tmp_path / "small.parquet"
    synthetic_manifest(small, tiles[:4])
    run_cli("build", "--bbox", "0,50,0.2,50.2", "--year", "2024", "-o", str(out), "--manifest", str(small))
    assert not list(tmp_path.glob(f".big.vrt.*{TMP_MARK}")) and out.is_file()


def test_too_many_tiles_refused_with_estimate(tmp_path):
    import importlib

    build_mod = importlib.import_module("tessvrt.build")
    tiles = [Tile(i * 10 + 5, j * 10 + 5) for j in range(0, 300) for i in range(-1800, -1800 + 170)]  # 51,000
    assert len(tiles) > build_mod.MAX_TILES
    m = synthetic_manifest(tmp_path / "m.parquet", tiles)
    t0 = time.monotonic()
    p = run_cli("build", "--bbox", "-180,0,-163,30", "--year", "2024", "-o", str(tmp_path / "w.vrt"), "--manifest", str(m),
                check=False)
    assert p.returncode == 1 and "51,000 tiles would make about 5.1 GB" in p.stderr and "split the region" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.parquet"] and time.monotonic() - t0 < 60


def test_world_bbox_on_a_small_manifest_is_summarised(s3, tmp_path):
    """6.48 M requested cells, 9 present: a short stderr line and short metadata, not every missing name."""
    p = run_cli("build", "--bbox", "-180,-90,180,90", "--year", "2024", "--dataset", "v1.1-cam", "-o", str(tmp_path / "w.vrt"),
                "--endpoint", s3.url)
    err = p.stderr.strip().splitlines()
    assert any("6,479,998 tile(s) not in the manifest" in ln for ln in err), p.stderr
    assert len(p.stderr) < 10_000
    with rasterio.open(tmp_path / "w.vrt") as d:
        listed = d.tags()["TESSVRT_MISSING_TILES"]
    assert len(listed) < 3_000 and listed.endswith("(6,479,998 in all)")
    rec = json.loads((tmp_path / "w.tessvrt" / "tessvrt.json").read_text())
    assert rec["missing_count"] == 6_479_998 and len(rec["missing"]) == 100


@pytest.mark.parametrize("args, needle", [
    (["--bands", "1-1000000000"], "band 1000000000 is out of range"),
    (["--bands", "0"], "band 0 is out of range"),
])
def test_absurd_bands_refused_at_once(args, needle, s3, tmp_path):
    vrt = tmp_path / "b.vrt"
    run_cli("build", *BLOCK, "-o", str(vrt), "--endpoint", s3.url)
    t0 = time.monotonic()
    p = run_cli("materialise", str(vrt), str(tmp_path / "o.tif"), *args, check=False)
    assert p.returncode == 1 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 30 and not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("name, needle", [("x" * 240 + ".vrt", "is too long"), ("a\nb.vrt", "control characters"),
                                          ("a\x01b.vrt", "control characters")])
def test_bad_output_names(name, needle, s3, tmp_path):
    p = run_cli("build", *BLOCK, "-o", str(tmp_path / name), "--endpoint", s3.url, check=False)
    assert_clean_failure(p, tmp_path, needle)


@pytest.mark.parametrize("change, needle", [
    (lambda df: df.assign(lon=df.lon.where(df.index != 0, np.nan)), "no valid lon/lat"),
    (lambda df: df.assign(version=None), "no rows of TESSERA v1.0"),
    (lambda df: df.assign(lat=df.lat.where(df.index != 0, 88.1)), "not a tile centre"),
])
def test_malformed_manifest_values(change, needle, bucket_root, s3, tmp_path):
    df = pd.read_parquet(manifest_path(bucket_root))
    change(df).to_parquet(tmp_path / "manifest.parquet")
    p = run_cli("build", *BLOCK, "-o", str(tmp_path / "x.vrt"), "--manifest", str(tmp_path / "manifest.parquet"),
                "--endpoint", s3.url, check=False)
    assert_clean_failure(p, tmp_path, needle)


def test_record_endpoint_must_be_public(s3, tmp_path):
    vrt = tmp_path / "b.vrt"
    run_cli("build", *BLOCK, "-o", str(vrt), "--endpoint", s3.url)
    rec_path = tmp_path / "b.tessvrt" / "tessvrt.json"
    rec = json.loads(rec_path.read_text())
    for ep in ("http://169.254.169.254", "http://[fd00:ec2::254]", "http://user:secret@127.0.0.1:9"):
        rec_path.write_text(json.dumps({**rec, "endpoint": ep}))
        p = run_cli("materialise", str(vrt), str(tmp_path / "o.tif"), check=False)
        assert p.returncode == 1 and "is not a public http(s) S3 endpoint" in p.stderr, p.stderr
        assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("lat", [89.95, -89.95])
def test_polar_tiles_are_owned(lat):
    """Cells touching a pole: the traced ownership equals per-pixel projection (it was empty: all NaN)."""
    for lon in (4.05, 179.95, -0.05):
        t = Tile.at(lon, lat)
        g = tile_grids([t])[0]
        own = ownerships([t], [g.window])[0]
        xs, ys = g.window.pixel_centres()
        ci, cj = owner_cells(g.epsg, *np.meshgrid(xs, ys))
        ref = (ci == t.cell[0]) & (cj == t.cell[1])
        assert ref.sum() > 1000 and np.array_equal(own.mask(), ref), t.name


def test_polar_tile_reads(tmp_path, s3):
    """A built and materialised polar tile has its valid pixels (end to end, not only the ownership)."""
    from tessvrt.testing import MotoServer, SampleTile, build_sample  # noqa: F401 - a private bucket for two tiles

    root = build_sample(tmp_path / "bucket", [SampleTile(Tile.at(4.05, 89.95)), SampleTile(Tile.at(4.05, -89.95))])
    with MotoServer() as srv:
        srv.load(root)
        env = {**os.environ, "TESSVRT_CACHE_DIR": str(tmp_path / "cache")}
        for lat in ("89.95", "-89.95"):
            out = tmp_path / f"p{lat}.vrt"
            for cmd in (["build", "--tile", f"4.05,{lat}", "--year", "2024", "-o", str(out), "--endpoint", srv.url],
                        ["materialise", str(out), str(out.with_suffix(".tif")), "--bands", "1", "--quiet"]):
                p = subprocess.run([*TESSVRT, *cmd], env=env, capture_output=True, text=True)
                assert p.returncode == 0, p.stderr
            with rasterio.open(out.with_suffix(".tif")) as d:
                assert np.isfinite(d.read(1)).sum() > 500




def test_control_characters_in_a_manifest_path_keep_the_vrt_valid(bucket_root, s3, tmp_path):
    """The manifest's path is written into the VRT's metadata: XML 1.0 cannot hold control characters."""
    from lxml import etree

    m = tmp_path / "m\x01\x1f.parquet"
    m.write_bytes(manifest_path(bucket_root).read_bytes())
    run_cli("build", *BLOCK, "-o", str(tmp_path / "x.vrt"), "--manifest", str(m), "--endpoint", s3.url)
    etree.parse(str(tmp_path / "x.vrt"))  # raises on invalid XML
    with rasterio.open(tmp_path / "x.vrt") as d:
        assert d.tags()["TESSVRT_SOURCE"].endswith("m??.parquet")


def test_aws_endpoint_url_in_the_environment_is_not_followed(s3, tmp_path):
    """botocore honours AWS_ENDPOINT_URL, GDAL's paths do not: tessvrt must read from where GDAL will
    (the default endpoint here, unreachable offline), not from the server the variable names."""
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.url, "AWS_ENDPOINT_URL_S3": s3.url,
           "TESSVRT_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([*TESSVRT, "build", *BLOCK, "-o", str(tmp_path / "x.vrt")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and "amazonaws.com" in p.stderr and "127.0.0.1" not in p.stderr, p.stderr
    assert not (tmp_path / "x.vrt").exists()


@pytest.mark.parametrize("phase", ["open", "write"])
def test_lock_interrupted_as_it_is_made_leaves_nothing(tmp_path, monkeypatch, phase):
    # a signal is handled as soon as os.open (or the pid's write) returns: the lock file it made must go with it
    # (seen on a loaded CI machine: SIGTERM during build left .big.vrt.lock.tessvrt-tmp)
    from tessvrt import publish

    real_open, real_fdopen = os.open, os.fdopen

    def open_then_interrupt(*a, **k):
        os.close(real_open(*a, **k))
        raise KeyboardInterrupt

    def fdopen_then_interrupt(fd, *a, **k):
        with real_fdopen(fd, *a, **k) as f:
            f.write(str(os.getpid()))
        raise KeyboardInterrupt

    if phase == "open":
        monkeypatch.setattr(publish.os, "open", open_then_interrupt)
    else:
        monkeypatch.setattr(publish.os, "fdopen", fdopen_then_interrupt)
    with pytest.raises(KeyboardInterrupt), publish.TargetLock([tmp_path / "x.tif"]):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []

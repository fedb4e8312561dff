"""COG collections (materialise to a folder or s3:// prefix) on a real distributed.LocalCluster.

Every collection is compared byte for byte with the single-process run of the same arguments, and
read back (GTI on GDAL 3.10 and 3.12, the VRT with Debian's GDAL 3.6 CLI) against the numpy reference.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import TESSVRT, assert_same, gdal_read, interpreters, run_cli
from reference import expected, load_record

from tessvrt.collection.pieces import write_piece
from tessvrt.collection.target import FolderTarget
from tessvrt.testing import FaultProxy

pytest.importorskip("distributed")
BANDS = [1, 37, 128]
OPTS = {"bands": BANDS, "blocksize": 64, "piece_size": 256, "overviews": True}
CROSS = "5.8,88.0,6.2,88.2"  # zones 31 and 32


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cross(s3, tmp_path_factory):
    """The cross-zone VRT and its single-process collection: the bytes every other run must equal; and the tile
    reads of that whole run (through a proxy that injects nothing; each piece's write_piece makes its own reads,
    on one process as on workers), which a resumed run must stay below."""
    from tessvrt import build, materialise

    out = tmp_path_factory.mktemp("col")
    with pytest.MonkeyPatch.context() as mp, FaultProxy(s3.url) as proxy:
        mp.setenv("TESSVRT_CACHE_DIR", str(out / "cache"))
        vrt = build(out / "cross.vrt", bbox=CROSS, year=2024, endpoint=s3.url).vrt
        res = materialise(vrt, out / "single", endpoint=proxy.url, **OPTS)
        whole = proxy.reads()[0]
    return vrt, out / "single", res, whole


def test_two_workers_write_the_same_bytes_and_read_back_equal(cross, bucket_root, gdalrc, gdal_bin, tmp_path):
    from tessvrt import materialise

    vrt, single, res, _ = cross
    col = res.collection
    assert col.pieces > 8 and col.written == col.pieces and col.skipped == 0
    two = materialise(vrt, tmp_path / "two", workers=2, **OPTS)
    assert two.collection.written == col.pieces
    a, b = files(single), files(tmp_path / "two")
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []
    rec = load_record(vrt)
    man = json.loads(a["manifest.json"])
    assert sum(len(z["pieces"]) for z in man["zones"]) == col.pieces
    for z in rec["zones"]:
        w = z["window"]
        own = {**rec, "tiles": [t for t in rec["tiles"] if t["epsg"] == z["epsg"]]}  # a zone part: its own tiles
        ref = expected(bucket_root, own, w["epsg"], w["col0"], w["row0"], w["width"], w["height"], [x - 1 for x in BANDS])
        assert np.isfinite(ref).mean() > 0.2 and np.isnan(ref).any()
        label = z["label"]
        for python in [p.values[0] for p in interpreters() if p.values[0]]:  # GTI on GDAL 3.10 and 3.12
            meta, (got,) = gdal_read(python, single / f"{label}.gti.gpkg", gdalrc, [[0, 0, w["width"], w["height"]]],
                                     None, tmp_path)
            assert meta["descriptions"][0] is None or meta["count"] == len(BANDS)
            assert_same(got, ref, f"{label}.gti.gpkg on GDAL {meta['gdal']}")
        with rasterio.open(single / f"{label}.vrt") as d:
            assert d.descriptions == tuple(f"embedding_{x - 1:03d}" for x in BANDS)
        out = tmp_path / f"{label}_36.tif"  # Debian's GDAL 3.6 CLI reads the VRT of pieces
        subprocess.run([gdal_bin, "-q", str(single / f"{label}.vrt"), str(out)], check=True)
        with rasterio.open(out) as d:
            assert_same(d.read(), ref, f"{label}.vrt through GDAL 3.6 gdal_translate")
        # piece edges: every piece equals the reference on its own window
        for p in next(zz for zz in man["zones"] if zz["label"] == label)["pieces"]:
            pw = p["window"]
            with rasterio.open(single / p["path"]) as d:
                got = d.read()
                assert d.crs.to_epsg() == pw["epsg"] and d.transform.c == 10 * pw["col0"]
            x0, y0 = pw["col0"] - w["col0"], w["row0"] - pw["row0"]
            assert_same(got, ref[:, y0:y0 + pw["height"], x0:x0 + pw["width"]], p["path"])


def test_same_pixels_as_one_cog_per_zone(cross, tmp_path):
    from tessvrt import materialise

    vrt, single, _, _ = cross
    one = materialise(vrt, tmp_path / "z.tif", bands=BANDS, blocksize=64)
    for f in one.files:
        label = f.stem.removeprefix("z_")
        with rasterio.open(f) as d, rasterio.open(single / f"{label}.gti.gpkg") as g:
            assert (d.width, d.height, d.transform) == (g.width, g.height, g.transform)
            assert_same(g.read(), d.read(), f"{label}: collection vs one COG")


def _records(root: Path) -> list[Path]:
    return sorted((root / ".tessvrt" / "done").rglob("*.json")) if (root / ".tessvrt").exists() else []


def test_a_worker_killed_mid_run_changes_no_byte(cross, tmp_path):
    """SIGKILL one of two worker processes while pieces are being written: Dask runs its tasks again."""
    from distributed import Client, LocalCluster

    from tessvrt import materialise

    vrt, single, res, _ = cross
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, Client(lc) as c:
        pids = list(c.run(os.getpid).values())
        out = tmp_path / "killed"
        box: dict = {}
        t = threading.Thread(target=lambda: box.update(r=materialise(vrt, out, dask=lc.scheduler_address, **OPTS)))
        t.start()
        deadline = time.monotonic() + 120
        while len(_records(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_records(out)) < res.collection.pieces, "the run ended before a worker could be killed"
        os.kill(pids[0], signal.SIGKILL)
        t.join(300)
        assert not t.is_alive() and "r" in box
    assert box["r"].collection.pieces == res.collection.pieces
    a, b = files(single), files(out)
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []


def test_killed_job_rerun_fetches_only_the_missing_pieces(cross, s3, tmp_path):
    vrt, single, res, whole = cross
    out = tmp_path / "resume"
    args = ["materialise", str(vrt), str(out), "--bands", ",".join(map(str, BANDS)), "--blocksize", "64",
            "--piece-size", "256", "--workers", "1", "--json", "--quiet"]
    with FaultProxy(s3.url) as proxy:
        p = subprocess.Popen([*TESSVRT, *args, "--endpoint", proxy.url], start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(_records(out)) < 4 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)  # the client and its worker process
        p.wait()
        proxy.settle()  # reads the killed run had in flight are logged when their replies come back
        done = len(_records(out))
        assert 0 < done < res.collection.pieces, done
        assert not (out / "manifest.json").exists()  # the index is written last
        missing = {t.piece.name for t in _tasks(vrt, proxy.url)} - {_piece_of(r, out) for r in _records(out)}
        before = len(proxy.log)
        r = run_cli(*args, "--endpoint", proxy.url)
        rerun = sorted(e[1:3] for e in proxy.log[before:] if e[1].endswith(".npy"))  # (object, range) of each tile read
    got = json.loads(r.stdout)
    assert got["pieces_skipped"] == res.collection.pieces - len(missing) and got["pieces_written"] == len(missing)
    # the reads of a run of only the missing pieces (write_piece on each, nothing to skip), at the same server
    with FaultProxy(s3.url) as proxy:
        only = FolderTarget(tmp_path / "only")
        only.root.mkdir()
        todo = [t for t in _tasks(vrt, proxy.url, only) if t.piece.name in missing]
        assert todo[0].fingerprint == json.loads((out / ".tessvrt" / "run.json").read_text())["fingerprint"]
        for t in todo:
            write_piece(t)
            assert (only.root / t.piece.name).read_bytes() == (single / t.piece.name).read_bytes()
        needed = sorted(e[1:3] for e in proxy.log if e[1].endswith(".npy"))
    assert rerun and rerun == needed, (len(rerun), len(needed))
    assert len(rerun) < whole, (len(rerun), whole)  # and fewer than the whole run's (the cross fixture's)
    a, b = files(single), files(out)
    assert [k for k in a if k not in b] == [] and [k for k in a if a[k] != b[k]] == []
    assert not [k for k in b if k not in a]  # no temporaries of the killed run are left


def _piece_of(record: Path, root: Path) -> str:
    return record.relative_to(root / ".tessvrt" / "done").as_posix().removesuffix(".json")


def _tasks(vrt: Path, endpoint: str, target: FolderTarget | None = None) -> list:
    """The collection's piece tasks for the resume test's arguments (OPTS), as materialise plans them."""
    from tessvrt.cog.profiles import CogProfile
    from tessvrt.collection.pieces import fingerprint, tasks
    from tessvrt.materialise import plan

    _, jobs, _ = plan(vrt, "x", None, None, None, None, endpoint)
    cog = CogProfile("zstd", None, OPTS["blocksize"], OPTS["overviews"])
    fp = fingerprint(jobs, BANDS, cog, OPTS["piece_size"])
    return tasks(jobs, BANDS, cog, OPTS["piece_size"], target or FolderTarget(Path("unused")), fp)


@pytest.mark.parametrize("case", ["foreign", "other-args", "tif-with-workers", "piece-size"])
def test_bad_collection_outputs_are_one_line(cross, tmp_path, case):
    vrt, single, _, _ = cross
    out = tmp_path / "c"
    extra: list[str] = []
    if case == "foreign":
        out.mkdir()
        (out / "mine.txt").write_text("not tessvrt's")
        needle = "holds files tessvrt did not write"
    elif case == "other-args":  # a copy of the fixture's collection (bands 1,37,128, pieces of 256): tessvrt's own
        shutil.copytree(single, out)
        needle = "made with other arguments"
    elif case == "tif-with-workers":
        out = tmp_path / "c.tif"
        extra = ["--workers", "2"]
        needle = "write a COG collection"
    else:
        extra = ["--piece-size", "100"]
        needle = "must be a multiple of --blocksize"
    before = files(tmp_path)
    p = run_cli("materialise", str(vrt), str(out), "--bands", "2", "--blocksize", "64", *extra, check=False)
    assert p.returncode == 1 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert files(tmp_path) == before


def test_npy_collection_to_s3_equals_the_folder_run(cross, s3, monkeypatch):
    """The multi-zone npy region on 2 workers to S3 (moto): every object byte for byte the single-process folder
    run's (pieces, VRTs, GTIs, manifest), and the run's records beside them."""
    from tessvrt import materialise

    vrt, single, res, _ = cross
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s3.client.create_bucket(Bucket="npyout", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    got = materialise(vrt, "s3://npyout/eu/", workers=2, output_endpoint=s3.url, **OPTS)
    assert got.collection.written == res.collection.pieces and got.collection.skipped == 0
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket="npyout", Prefix="eu/")["Contents"]]
    b = {k.removeprefix("eu/"): s3.client.get_object(Bucket="npyout", Key=k)["Body"].read() for k in keys}
    a = files(single)
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []
    assert sum(k.endswith(".tif") for k in a) == res.collection.pieces


def test_zarr_collection_to_s3_equals_the_folder_run(s3, tmp_path, tmp_path_factory, monkeypatch):
    """A Zarr region across zones 31/32 and the equator, on 2 workers, to S3 (moto): pieces byte for byte
    those of the single-process folder run, and equal to the zarr-python reference."""
    pytest.importorskip("zarr")
    from tessvrt import materialise
    from tessvrt.zarrsample import reference, upload, write_store

    root = "s3://us-west-2.opendata.source.coop/tessera/tessera/zarr"
    store = write_store(tmp_path_factory.mktemp("zarr") / "v1.1-dclimate", "upstream")
    upload(store, s3.put, f"{root}/v1.1-dclimate")
    box = "5.9910,-0.0040,6.0080,0.0070"
    kw = {"dataset": "v1.1-dclimate", "bbox": box, "year": 2024, "endpoint": s3.url, **OPTS}
    res = materialise(tmp_path / "folder", **kw)
    assert res.collection.pieces >= 4
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s3.client.create_bucket(Bucket="out", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    materialise("s3://out/run1/", workers=2, output_endpoint=s3.url, **kw)
    a = files(tmp_path / "folder")
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket="out", Prefix="run1/")["Contents"]]
    b = {k.removeprefix("run1/"): s3.client.get_object(Bucket="out", Key=k)["Body"].read() for k in keys}
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []
    from tessvrt.zarrsample import ZONES

    spec = {z.zone: z for z in ZONES}
    man = json.loads(a["manifest.json"])
    for z in man["zones"]:
        for p in z["pieces"]:
            with rasterio.open(tmp_path / "folder" / p["path"]) as d:
                got, t, epsg = d.read(), d.transform, d.crs.to_epsg()
            zone = epsg % 100
            top = t.f - (10_000_000 if epsg >= 32700 else 0)
            r, c = round((spec[zone].oy - top) / 10), round((t.c - spec[zone].ox) / 10)
            ref, _ = reference(store, zone, 2024, slice(r, r + got.shape[1]), slice(c, c + got.shape[2]), BANDS)
            assert_same(got, ref, p["path"])


def test_dry_run_reads_no_tile_and_writes_nothing(cross, s3, tmp_path):
    """materialise --dry-run: the plan's numbers from the record alone (issue 22 item 10)."""
    vrt, _, res, _ = cross
    rec = load_record(vrt)
    with FaultProxy(s3.url) as proxy:
        for out, n in ((tmp_path / "d.tif", len(rec["zones"])), (tmp_path / "col", res.collection.pieces)):
            col = ["--workers", "2", "--piece-size", "256"] if out.suffix == "" else []
            p = run_cli("materialise", str(vrt), str(out), "--bands", "1-3", "--blocksize", "64", "--dry-run", "--json",
                        "--endpoint", proxy.url, *col)
            got = json.loads(p.stdout)
            assert got["outputs"] == n and got["tiles"] == len(rec["tiles"]) and got["bands"] == 3
            px = sum(z["window"]["width"] * z["window"]["height"] for z in rec["zones"])
            assert got["pixels"] == px and got["float32_bytes"] == px * 3 * 4
            assert got["remote_bytes"] == sum(t["grid_size"] + t["scales_size"] for t in rec["tiles"])
        assert proxy.requests == 0
    assert list(tmp_path.iterdir()) == []
    p = run_cli("materialise", str(vrt), str(tmp_path / "d.tif"), "--dry-run", "--endpoint", s3.url)
    assert f"{len(rec['zones'])} file(s) in 2 zone(s), {len(rec['tiles'])} tiles" in p.stdout and " at " in p.stdout


def test_lost_or_unreachable_scheduler_is_one_line_and_keeps_complete_pieces(cross, tmp_path):
    from tessvrt.testing import free_port

    vrt, single, _, _ = cross
    port = free_port()
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", str(port),
                              "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                               "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "lost"
    try:
        run = subprocess.Popen([*TESSVRT, "materialise", str(vrt), str(out), "--bands", ",".join(map(str, BANDS)),
                                "--blocksize", "64", "--piece-size", "256", "--dask", f"tcp://127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(_records(out)) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        sched.kill()
        _, err = run.communicate(timeout=120)
    finally:
        for p in (sched, worker):
            p.kill()
            p.wait()
    # the estimate and progress lines aside (a progress line appears every 5 s: a loaded machine prints one)
    lines = [ln for ln in err.splitlines() if (not ln.startswith("tessvrt: ") or "error" in ln)
             and not re.match(r"\s+[\d.]+% ", ln)]
    assert run.returncode == 1 and len(lines) == 1 and "lost the Dask scheduler" in lines[0], err
    kept = _records(out)
    assert kept and not (out / "manifest.json").exists()
    for rec in kept:  # every piece a record names is whole: the same bytes as the single-process run's
        name = rec.relative_to(out / ".tessvrt" / "done").as_posix().removesuffix(".json")
        assert (out / name).read_bytes() == (single / name).read_bytes()
    t0 = time.monotonic()
    p = run_cli("materialise", str(vrt), str(tmp_path / "x"), "--bands", "1", "--dask", f"tcp://127.0.0.1:{free_port()}",
                check=False)
    assert p.returncode == 1 and "cannot reach the Dask scheduler" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert time.monotonic() - t0 < 40 and not (tmp_path / "x").exists()  # the folder it made is gone again

"""Hostile and half-written Zarr stores (issue 22, red-team round 2, items 1-5 and 12).

Each test writes a small store with zarr-python (tessvrt.zarrsample, the small layout: shard edges
cheap), damages it as the red team did, serves it from a real S3 server (moto, a server of this
module so the shared one's stores are untouched) and runs the CLI: values are compared with a
zarr-python reference, errors must be one line naming the object, exit 1, nothing written.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import assert_same, run_cli
from pyproj import Transformer

from tessvrt.testing import FaultProxy, MotoServer
from tessvrt.zarrsample import ZONES, reference, upload, write_store

pytest.importorskip("zarr")
BUCKET = "us-west-2.opendata.source.coop"
PREFIX = "tessera/tessera/zarr/v1.1-dclimate"
Z31 = ZONES[0]  # zone 31: data rows 4050-4180, cols 4040-4160 (equator at row 4128)
CHUNK = (4096, 4112)  # an embeddings inner chunk (32 x 16 px) under valid scales, left unwritten
SHARD = (31, 64)  # an embeddings shard (128 x 64 px: rows 3968-4095, cols 4096-4159) left unwritten


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """An S3 server of this module's own, with the (empty) bucket anonymous reads are allowed on."""
    empty = tmp_path_factory.mktemp("srv") / BUCKET
    empty.mkdir()
    with MotoServer() as s:
        s.load(empty)
        yield s


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A one-zone sample store (zone 31, small layout), written once; tests damage copies of it."""
    return write_store(tmp_path_factory.mktemp("zbase") / "store", "small", zones=(Z31,))


def publish(srv: MotoServer, folder: Path) -> None:
    """Make folder the store at v1.1-dclimate's key: everything there before is deleted first."""
    c = srv.client
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/"):
        for o in page.get("Contents", []):
            c.delete_object(Bucket=BUCKET, Key=o["Key"])
    upload(folder, srv.put, f"s3://{BUCKET}/{PREFIX}")


def copy(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "store"))


def edit(folder: Path, node: str, change) -> None:  # noqa: ANN001 - change(meta) edits the dict in place
    p = folder / node / "zarr.json"
    meta = json.loads(p.read_text())
    change(meta)
    p.write_text(json.dumps(meta))


def pixel_box(r0: int, r1: int, c0: int, c1: int) -> str:
    """W,S,E,N of zone 31's array rows [r0, r1) x cols [c0, c1), shrunk 1 m so only those pixels' centres are inside."""
    to = Transformer.from_crs(32631, 4326, always_xy=True)
    w, n = to.transform(Z31.ox + 10 * c0 + 1, Z31.oy - 10 * r0 - 1)
    e, s = to.transform(Z31.ox + 10 * c1 - 1, Z31.oy - 10 * r1 + 1)
    return f"{w!r},{s!r},{e!r},{n!r}"


def pixel_point(r: int, c: int) -> str:
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(Z31.ox + 10 * c + 5, Z31.oy - 10 * r - 5)
    return f"{lon!r},{lat!r}"


def refused(srv: MotoServer, tmp_path: Path, needle: str, *, command: str = "materialise", seconds: float = 60) -> str:
    """Run materialise (or sample) on the store: one error line holding needle, exit 1, no traceback, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    if command == "materialise":
        args = ["materialise", str(out / "x.tif"), "--dataset", "v1.1-dclimate", "--bbox", pixel_box(4060, 4120, 4050, 4130),
                "--year", "2024", "--endpoint", srv.url]
    else:  # "sample" or "sample --dataset NAME"
        dataset = command.split()[-1] if " " in command else "v1.1-dclimate"
        args = ["sample", "--dataset", dataset, "--year", "2024", "--endpoint", srv.url, pixel_point(4100, 4100)]
    t0 = time.monotonic()
    p = run_cli(*args, check=False)
    took = time.monotonic() - t0
    assert p.returncode == 1, (p.returncode, p.stdout[-500:], p.stderr[-3000:])
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr[-3000:]
    assert needle in p.stderr, p.stderr
    assert list(out.iterdir()) == [] and p.stdout == ""
    assert took < seconds, f"took {took:.0f} s"
    return p.stderr


def unwritten(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Leave CHUNK and SHARD of the 2024 embeddings unwritten, as upstream's writer does before it fills them
    (zarr-python drops chunks equal to the fill value; a whole empty shard is deleted). Returns the
    (rows, cols) masks over the whole zone of the pixels no stored chunk holds."""
    import zarr

    emb = zarr.open_group(str(folder), mode="r+")["utm31"]["embeddings"]
    r, c = CHUNK
    emb[1, :, r:r + 32, c:c + 16] = 0
    sr, sc = SHARD
    emb[1, :, sr * 128:(sr + 1) * 128, sc * 64:(sc + 1) * 64] = 0
    assert not (folder / "utm31/embeddings/c/1/0" / str(sr) / str(sc)).exists()
    hole = np.zeros((Z31.height, Z31.width), bool)
    hole[r:r + 32, c:c + 16] = True
    hole[sr * 128:(sr + 1) * 128, sc * 64:(sc + 1) * 64] = True
    return hole


# item 1: an absent embeddings chunk or shard under valid scales is never 0.0


def test_absent_embeddings_under_valid_scales_are_nan_and_counted(srv, base, tmp_path):
    """Old code: exit 0 and exactly 0.0 in every band for those pixels, nothing said."""
    import tessvrt

    store = copy(base, tmp_path)
    hole = unwritten(store)
    publish(srv, store)
    rows, cols = slice(4060, 4120), slice(4050, 4130)
    out = tmp_path / "o.tif"
    res = tessvrt.materialise(str(out), dataset="v1.1-dclimate", bbox=pixel_box(4060, 4120, 4050, 4130), year=2024,
                              endpoint=srv.url, blocksize=64)
    with rasterio.open(out) as d:
        got = d.read()
        top = round((Z31.oy - d.transform.f) / 10)
        left = round((d.transform.c - Z31.ox) / 10)
    assert (top, left, *got.shape[1:]) == (rows.start, cols.start, 60, 80)
    ref, raw = reference(store, 31, 2024, rows, cols)  # zarr-python: zeros where nothing is stored
    h = hole[rows, cols] & ((raw > 0) & (raw < 1))  # valid scale, no stored embeddings
    assert h.sum() > 500 and (ref[:, h] == 0).all()
    ref[:, h] = np.nan
    assert_same(got, ref, "absent embeddings chunk/shard vs zarr-python with NaN there")
    assert res.not_written == int(h.sum()), (res.not_written, int(h.sum()))
    cli = run_cli("materialise", str(tmp_path / "c.tif"), "--dataset", "v1.1-dclimate", "--bbox",
                  pixel_box(4060, 4120, 4050, 4130), "--year", "2024", "--endpoint", srv.url, "--blocksize", "64", "--json")
    assert json.loads(cli.stdout)["not_written"] == res.not_written
    with rasterio.open(tmp_path / "c.tif") as d:
        assert_same(d.read(), ref, "the CLI's output")


def test_sample_says_missing_for_absent_embeddings(srv, base, tmp_path):
    """Old code: status valid and 0.0 values."""
    store = copy(base, tmp_path)
    unwritten(store)
    publish(srv, store)
    pts = {"chunk": (4100, 4115), "shard": (4060, 4120), "nodata in the shard": (4084, 4104), "valid": (4070, 4050)}
    p = run_cli("sample", "--dataset", "v1.1-dclimate", "--year", "2024", "--endpoint", srv.url, "--json",
                *[pixel_point(r, c) for r, c in pts.values()])
    rows = json.loads(p.stdout)
    assert [r["status"] for r in rows] == ["missing", "missing", "nodata", "valid"], [r["status"] for r in rows]
    for (r, c), row in zip(pts.values(), rows, strict=True):
        ref, raw = reference(store, 31, 2024, slice(r, r + 1), slice(c, c + 1))
        vals = np.array([np.nan if row[f"embedding_{b:03d}"] is None else row[f"embedding_{b:03d}"] for b in range(128)],
                        np.float32)
        if row["status"] == "missing":
            assert np.isnan(vals).all() and row["scale"] == pytest.approx(float(raw[0, 0]))
        else:
            assert_same(vals, ref[:, 0, 0], f"sample at {r},{c}")


# item 2: a duplicate year


def test_duplicate_year_is_refused(srv, base, tmp_path):
    """Old code: accepted, the first slot (all NaN) used."""
    store = write_store(tmp_path / "dup", "small", zones=(Z31,), years=(2024, 2024))
    publish(srv, store)
    msg = refused(srv, tmp_path, "lists year 2024 2 times")
    assert "utm31/time" in msg


# item 3: store metadata that made tracebacks


def _time_array(folder: Path, data: np.ndarray) -> None:
    import zarr

    g = zarr.open_group(str(folder), mode="r+")["utm31"]
    g.create_array("time", shape=data.shape, dtype=data.dtype, fill_value=0, overwrite=True)[:] = data


def _shape_t(meta: dict) -> None:
    meta["shape"][0] = 10**12


@pytest.mark.parametrize("case, needle", [
    ("chunk shape 0", "chunk shape [1, 128, 0, 64] has a value below 1"),
    ("T of 10^12", "declares 1,000,000,000,000 time steps"),
    ("NaN time", "holds nan, not a year"),
    ("zarr.json a JSON list", "utm31/zarr.json is not Zarr v3 metadata (a JSON list"),
    ("root zarr.json a JSON list", "v1.1-dclimate/zarr.json is not Zarr v3 metadata (a JSON list"),
    ("deeply nested JSON", "utm31/scales/zarr.json is not JSON that tessvrt can read"),
    ("attributes a list", "utm31/zarr.json: attributes are a JSON list"),
    ("NaN fill on int8", "utm31/embeddings/zarr.json: fill_value 'NaN' is not supported for int8"),
])
def test_bad_metadata_is_one_line(srv, base, tmp_path, case, needle):
    """Old code: ZeroDivisionError, MemoryError (3.6 TiB), ValueError (int(nan)), AttributeError inside the error
    message, RecursionError: tracebacks."""
    store = copy(base, tmp_path)
    if case == "chunk shape 0":
        edit(store, "utm31/embeddings", lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[1, 128, 0, 64]))
    elif case == "T of 10^12":
        for a in ("embeddings", "scales", "time"):
            edit(store, f"utm31/{a}", _shape_t)
    elif case == "NaN time":
        _time_array(store, np.array([2023.0, np.nan], np.float64))
    elif case == "zarr.json a JSON list":
        (store / "utm31/zarr.json").write_text("[1, 2]")
    elif case == "root zarr.json a JSON list":
        (store / "zarr.json").write_text('["zarr_format", 3]')
    elif case == "deeply nested JSON":
        (store / "utm31/scales/zarr.json").write_text("[" * 200_000 + "]" * 200_000)
    elif case == "NaN fill on int8":
        edit(store, "utm31/embeddings", lambda m: m.update(fill_value="NaN"))
    elif case == "attributes a list":
        edit(store, "utm31", lambda m: m.update(attributes=["geoemb:model"]))
    publish(srv, store)
    refused(srv, tmp_path, needle, seconds=30)


# item 4: an inner chunk declared 1x1x1x1


def test_tiny_inner_chunks_are_refused_before_chunks_are_listed(srv, base, tmp_path):
    """Declared inner chunks (1, 1, 1, 1) in 4096-px shards: 2.1 billion chunks a shard. Old code listed millions of
    chunk tuples first (33 s, 772 MB in the red team's repro) and then read whatever the keys held."""
    store = copy(base, tmp_path)

    def tiny(m: dict) -> None:
        m["chunk_grid"]["configuration"]["chunk_shape"] = [1, 128, 4096, 4096]
        m["codecs"][0]["configuration"]["chunk_shape"] = [1, 1, 1, 1]

    edit(store, "utm31/embeddings", tiny)
    publish(srv, store)
    msg = refused(srv, tmp_path, "inner chunk shape (1, 1, 1, 1) makes 2,147,483,648 chunks per", seconds=20)
    assert "utm31/embeddings/zarr.json" in msg
    # unsharded 1x1x1x1 chunks: the count of one read is checked before the chunks are listed
    edit(store, "utm31/embeddings", lambda m: m.update(
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": [1, 1, 1, 1]}},
        codecs=m["codecs"][0]["configuration"]["codecs"]))
    publish(srv, store)
    shutil.rmtree(tmp_path / "out")
    refused(srv, tmp_path, "chunk shape (1, 1, 1, 1) makes 614,400 chunks for one (1, 128, 60, 80) read", seconds=20)


# item 5: sample fetches each chunk once per call


def test_sample_fetches_each_chunk_once(srv, base, tmp_path):
    """2,000 identical points and 200 points over a few chunks: one GET per stored inner chunk of each array
    (old code: two chunk GETs per point, 4,000 for the identical ones), values equal zarr-python's."""
    publish(srv, base)
    same = [pixel_point(4070, 4050)] * 2000
    rng = np.random.default_rng(5)
    rc = np.stack([rng.integers(4050, 4096, 200), rng.integers(4040, 4096, 200)], 1)
    spread = [pixel_point(int(r), int(c)) for r, c in rc]
    pts = tmp_path / "p.csv"
    for name, points in (("identical", same), ("spread", spread)):
        pts.write_text("lon,lat\n" + "\n".join(points) + "\n")
        with FaultProxy(srv.url) as proxy:
            p = run_cli("sample", "--dataset", "v1.1-dclimate", "--year", "2024", "--endpoint", proxy.url, "--json",
                        "--bands", "1,77,128", "--points", str(pts))
        rows = json.loads(p.stdout)
        def index(e: tuple) -> bool:  # shard indexes: a suffix (embeddings) or the first bytes (scales, index at the start)
            return e[2].startswith(("bytes=-", "bytes=0-"))

        chunk_gets = [e for e in proxy.log if "/c/" in e[1] and not index(e) and "/time/" not in e[1]]
        index_gets = [e for e in proxy.log if "/c/" in e[1] and index(e)]
        keys = {(e[1], e[2]) for e in chunk_gets}
        assert len(keys) == len(chunk_gets), f"{name}: a chunk range was fetched twice"
        cells = rc if name == "spread" else np.array([[4070, 4050]])
        want = len({(r // 16, c // 64) for r, c in cells}) + len({(r // 32, c // 16) for r, c in cells})
        assert len(chunk_gets) <= want, (name, len(chunk_gets), want)
        assert len(index_gets) <= 2 * 4, index_gets  # each array's shard indexes: once per shard
        cells = rc if name == "spread" else np.array([[4070, 4050]] * 2000)
        # one zarr-python read of the window around every point (not one per point: 2,200 reads), each point's
        # three values compared
        r0, c0 = cells.min(axis=0)
        ref, _ = reference(base, 31, 2024, slice(int(r0), int(cells[:, 0].max()) + 1),
                           slice(int(c0), int(cells[:, 1].max()) + 1), [1, 77, 128])
        for (r, c), row in zip(cells, rows, strict=True):
            vals = np.array([np.nan if row[k] is None else row[k] for k in ("embedding_000", "embedding_076",
                                                                              "embedding_127")], np.float32)
            assert_same(vals, ref[:, r - r0, c - c0], f"{name} point at {r},{c}")


# item 12: a complex time array


def test_complex_time_is_refused(srv, base, tmp_path):
    """Old code: accepted with a ComplexWarning on stderr."""
    store = copy(base, tmp_path)
    _time_array(store, np.array([2023 + 0j, 2024 + 0j], np.complex64))
    publish(srv, store)
    refused(srv, tmp_path, "utm31/time: data type complex64 is not years", command="sample")


# the sample service's message for a dataset with no store


def test_no_store_names_the_key_and_what_the_bucket_holds(srv, base, tmp_path):
    """Old message: "no Zarr store at s3://.../v1.1 ...; check --source and --endpoint", which blamed the wrong thing."""
    publish(srv, base)
    srv.put(f"s3://{BUCKET}/tessera/tessera/npy/v1/manifest.parquet", b"PAR1")  # an npy dataset beside the store
    try:
        msg = refused(srv, tmp_path, f"asked for s3://{BUCKET}/tessera/tessera/zarr/v1.1/zarr.json: not found",
                      command="sample --dataset v1.1-cam")
    finally:
        srv.client.delete_object(Bucket=BUCKET, Key="tessera/tessera/npy/v1/manifest.parquet")
    assert "Zarr stores: v1.1-dclimate (--dataset v1.1-dclimate); npy datasets (--format npy): v1;" in msg, msg

"""Where the data comes from: the live layout through /vsicurl/ with no GDAL settings at all (GDAL < 3.12),
the gateway's bucket and a legacy-layout mirror (each its own bucket on the local S3 server), and the
dataset names users type (`tessvrt datasets`, version-only names, Zarr-only datasets, unknown ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import assert_same, gdal_read, interpreters, run_cli, run_cli_many
from reference import expected, load_record
from test_cli import assert_clean_failure

from tessvrt.gdalconfig import gdal_config
from tessvrt.grid import Tile
from tessvrt.source.datasets import MIRRORS
from tessvrt.testing import FileServer, SampleTile, build_sample

BANDS = [1, 64, 128]
TILES = [Tile.at(4.05, 88.15), Tile.at(4.15, 88.15)]


def check_windows(python, vrt, gdalrc, bucket_root, tmp_path, env=None):
    rec = load_record(vrt)
    g = rec["main"]["window"]
    wins = [[0, 0, g["width"], 40], [g["width"] // 2 - 20, g["height"] // 2, 40, 200], [0, g["height"] - 30, g["width"], 30]]
    if env is None:
        meta, arrays = gdal_read(python, vrt, gdalrc, wins, BANDS, tmp_path)
    else:  # read with exactly this environment
        out = tmp_path / "read.npz"
        spec = json.dumps({"windows": wins, "bands": BANDS})
        from conftest import HERE

        p = subprocess.run([python, str(HERE / "gdal_read.py"), str(vrt), str(out), spec], capture_output=True, text=True,
                           env=env)
        assert p.returncode == 0, p.stderr
        d = np.load(out)
        meta, arrays = json.loads(str(d["meta"])), [d[f"w{i}"] for i in range(len(wins))]
    for (x, y, w, h), got in zip(wins, arrays, strict=True):
        ref = expected(bucket_root, rec, g["epsg"], g["col0"] + x, g["row0"] - y, w, h, [b - 1 for b in BANDS])
        assert_same(got, ref, f"{vrt.name} window {(x, y, w, h)} on GDAL {meta['gdal']}")
        assert np.isfinite(ref).any()
    return meta


def no_gdal_settings() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GDAL_", "CPL_"))}
    env["GDAL_CONFIG_FILE"] = os.devnull  # not even ~/.gdal/gdalrc
    return env


@pytest.fixture(scope="module")
def curl_vrt(bucket_root, tmp_path_factory):
    """A /vsicurl/ build served by a plain HTTP file server (S3 path-style URLs, HEAD and Range, no signing):
    moto answers an anonymous HEAD with 403, which real public S3 buckets do not."""
    out = tmp_path_factory.mktemp("curl") / "c.vrt"
    with FileServer(bucket_root.parent) as srv:
        run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(out), "--endpoint", srv.url,
                "--vsi", "curl")
        yield out, srv.url


def test_vsicurl_needs_no_gdal_settings(curl_vrt, bucket_root, tmp_path):
    """--vsi curl: plain http(s) paths to the bucket, path-style; GDAL 3.10 reads them with no AWS settings."""
    curl_vrt, url = curl_vrt
    text = (curl_vrt.with_suffix(".tessvrt") / "tiles" / "grid_4.05_88.15.vrt").read_text()
    assert f"/vsicurl/{url}/us-west-2.opendata.source.coop/tessera/tessera/npy/v1/2024/grid_4.05_88.15/" in text
    check_windows(sys.executable, curl_vrt, None, bucket_root, tmp_path, env=no_gdal_settings())


def test_vsicurl_gdal36(curl_vrt, bucket_root, tmp_path, gdal_bin):
    curl_vrt, _ = curl_vrt
    out = tmp_path / "p.tif"
    subprocess.run(["gdal_translate", "-q", "-srcwin", "10", "100", "60", "300", "-b", "1", "-b", "128", str(curl_vrt),
                    str(out)], env=no_gdal_settings(), check=True)
    rec = load_record(curl_vrt)
    g = rec["main"]["window"]
    with rasterio.open(out) as d:
        assert_same(d.read(), expected(bucket_root, rec, g["epsg"], g["col0"] + 10, g["row0"] - 100, 60, 300, [0, 127]),
                    "gdal_translate of a /vsicurl/ VRT (GDAL 3.6)")


@pytest.fixture(scope="module")
def mirrors(s3, tmp_path_factory):
    """The gateway's bucket (tessera, keys tessera/npy/...) and a legacy mirror (tessera-embeddings), two tiles each."""
    folder = tmp_path_factory.mktemp("mirrors")
    roots = {}
    rc = folder / "gdalrc"
    for name in ("gateway", "legacy"):
        roots[name] = build_sample(folder, [SampleTile(t) for t in TILES], mirror=MIRRORS[name])
        s3.load(roots[name])
        gdal_config(rc, endpoint=s3.url, source=name)
    return roots, rc


@pytest.fixture(scope="module")
def layout_vrts(mirrors, s3, tmp_path_factory) -> dict[str, Path]:
    """One build per layout, read by each GDAL below (the build does not depend on the reader)."""
    folder = tmp_path_factory.mktemp("layouts")
    vrts = {source: folder / f"{source}.vrt" for source in ("gateway", "legacy")}
    for p in run_cli_many([["build", "--bbox", "4.0,88.1,4.2,88.2", "--year", "2024", "-o", str(vrt), "--endpoint",
                            s3.url, "--source", source] for source, vrt in vrts.items()]):
        assert p.returncode == 0, p.stderr
    return vrts


@pytest.mark.parametrize("python", interpreters())
@pytest.mark.parametrize("source", ["gateway", "legacy"])
def test_other_layouts(source, python, mirrors, layout_vrts, tmp_path):
    roots, rc = mirrors
    vrt = layout_vrts[source]
    rec = load_record(vrt)
    assert {t["grid"].split("/")[2] for t in rec["tiles"]} == {MIRRORS[source].bucket}
    check_windows(python, vrt, rc, roots[source], tmp_path)


def test_datasets_command():
    js, plain = run_cli_many([["datasets", "--json"], ["datasets"]])
    rows = json.loads(js.stdout)
    names = {r["name"]: r for r in rows}
    assert {"v1", "v1.1-cam", "v1.1-dclimate", "v2-2B-L~beta1", "v2-2B-L~beta2"} <= set(names)
    assert names["v1.1-dclimate"]["npy"] is None and names["v1.1-dclimate"]["zarr"] == "v1.1-dclimate"
    assert names["v1"]["variant"] == "vultr" and "build" in names["v1"]["tessvrt"]
    text = plain.stdout
    assert "complete global run" in text and "Zarr only" in text


def test_version_only_name_says_which(s3, tmp_path):
    p = run_cli("build", "--bbox", "4.0,88.1,4.2,88.2", "--year", "2024", "-o", str(tmp_path / "v.vrt"), "--dataset", "v1.1",
                "--endpoint", s3.url)
    assert "--dataset v1.1 means v1.1-cam" in p.stderr and "variant 'cambridge'" in p.stderr
    assert load_record(tmp_path / "v.vrt")["dataset"] == "v1.1-cam"


BAD_DATASETS = [("v1.1-dclimate", "published only as Zarr"), ("dclimate", "only as Zarr"),
                ("v7", "not a TESSERA dataset"), ("../v1", "not a TESSERA dataset")]


@pytest.fixture(scope="module")
def bad_dataset_runs(s3, tmp_path_factory) -> dict:
    """Every BAD_DATASETS build, each in its own folder, in one interpreter: {dataset: (folder, result)}.
    Zarr-only names are built with --format npy (without it build reads their store: tests/test_zarr_vrt.py)."""
    folders = {d: tmp_path_factory.mktemp("dataset") for d, _ in BAD_DATASETS}
    runs = run_cli_many([["build", "--bbox", "4.0,88.1,4.2,88.2", "--year", "2024", "-o", str(folders[d] / "x.vrt"),
                          "--dataset", d, "--endpoint", s3.url, *(["--format", "npy"] if n.endswith("only as Zarr") else [])]
                         for d, n in BAD_DATASETS])
    return {d: (folders[d], p) for (d, _), p in zip(BAD_DATASETS, runs, strict=True)}


@pytest.mark.parametrize("dataset, needle", BAD_DATASETS)
def test_bad_datasets(dataset, needle, bad_dataset_runs):
    folder, p = bad_dataset_runs[dataset]
    assert_clean_failure(p, folder, needle)
    assert "tessvrt datasets" in p.stderr


def test_unknown_source(tmp_path):
    p = run_cli("build", "--bbox", "4.0,88.1,4.2,88.2", "--year", "2024", "-o", str(tmp_path / "x.vrt"), "--source", "ftp",
                check=False)
    assert_clean_failure(p, tmp_path, "--source 'ftp' is not a known layout")

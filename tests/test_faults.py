"""Faults between tessvrt and S3 (a fault-injecting proxy in front of the real local S3 server):
transient faults are survived with output identical to a clean run; corrupted whole-object bodies
are caught by their checksum and retried, never used."""

from __future__ import annotations

import hashlib
import json

import pytest
import rasterio
from conftest import assert_same, run_cli

from tessvrt.testing import FaultProxy

TRANSIENT = {"503": 0.1, "500": 0.1, "429": 0.1, "reset": 0.1, "truncate": 0.1, "delay": 0.1}


@pytest.fixture(scope="module")
def block_vrt(s3, tmp_path_factory):
    vrt = tmp_path_factory.mktemp("faults") / "block.vrt"
    run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(vrt), "--endpoint", s3.url)
    return vrt


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_materialise_under_transient_faults_is_identical(s3, block_vrt, tmp_path):
    # three bands: every tile object is still read whole row by row (the bands are interleaved per pixel), so
    # the GETs and faults are those of a 128-band run, without encoding 128 float32 bands twice
    bands = ["--bands", "1,64,128"]
    clean = tmp_path / "clean.tif"
    run_cli("materialise", str(block_vrt), str(clean), *bands, "--quiet")
    with FaultProxy(s3.url, TRANSIENT, seed=1, delay=0.05) as proxy:
        faulty = tmp_path / "faulty.tif"
        run_cli("materialise", str(block_vrt), str(faulty), *bands, "--quiet", "--endpoint", proxy.url)
    gets = sum(1 for m, *_ in proxy.log if m == "GET")
    assert all(proxy.injected[f] > 0 for f in TRANSIENT), proxy.injected  # every fault was exercised
    assert gets > 50
    with rasterio.open(clean) as a, rasterio.open(faulty) as b:
        assert_same(b.read(), a.read(), "materialise through the fault proxy")
        for k in range(len(a.overviews(1))):
            with rasterio.open(clean, overview_level=k) as oa, rasterio.open(faulty, overview_level=k) as ob:
                assert_same(ob.read(), oa.read(), f"overview {k}")
    assert sha256(faulty) == sha256(clean)  # bit-identical file, not only equal pixels
    print(f"faults injected: {dict(proxy.injected)} over {len(proxy.log)} requests")


@pytest.fixture(scope="module")
def direct_record(s3, tmp_path_factory) -> dict:
    """The record of the same build straight from the server (cold cache): what every faulty build must equal."""
    tmp = tmp_path_factory.mktemp("direct")
    with pytest.MonkeyPatch.context() as mp:
        return build_via(s3.url, tmp / "direct.vrt", tmp / "cache", mp)


def build_via(url: str, out, cache, monkeypatch) -> dict:
    """build with a cold manifest cache (the whole manifest is downloaded); its record."""
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(cache))
    run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(out), "--endpoint", url)
    return json.loads(out.with_suffix(".tessvrt").joinpath("tessvrt.json").read_text())


def assert_same_build(got: dict, want: dict) -> None:
    assert got["tiles"] == want["tiles"]
    assert [z["window"] for z in got["zones"]] == [z["window"] for z in want["zones"]]


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
def test_manifest_download_survives_each_transient_fault(fault, s3, direct_record, tmp_path, monkeypatch):
    with FaultProxy(s3.url, {fault: 0.5}, seed=1, delay=0.05) as proxy:  # seed 1: the first attempt is hit
        got = build_via(proxy.url, tmp_path / "via_proxy.vrt", tmp_path / "cache", monkeypatch)
    assert proxy.injected[fault] > 0, proxy.injected
    assert_same_build(got, direct_record)
    print(f"{fault}: injected {proxy.injected[fault]} over {len(proxy.log)} requests")


def test_manifest_download_survives_faults_and_catches_flipped_bytes(s3, direct_record, tmp_path, monkeypatch):
    with FaultProxy(s3.url, {"flip": 0.4, **TRANSIENT}, seed=3, delay=0.05) as proxy:
        got = build_via(proxy.url, tmp_path / "via_proxy.vrt", tmp_path / "cache", monkeypatch)
    assert proxy.injected["flip"] > 0, proxy.injected
    assert_same_build(got, direct_record)
    print(f"faults injected: {dict(proxy.injected)} over {len(proxy.log)} requests")


def test_flipped_manifest_every_time_is_a_clear_error(s3, tmp_path, monkeypatch):
    """When every body is corrupted, the download gives up with one line and writes nothing."""
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(tmp_path / "cache"))
    with FaultProxy(s3.url, {"flip": 1.0}) as proxy:
        out = tmp_path / "never.vrt"
        p = run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(out), "--endpoint", proxy.url,
                    check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("tessvrt: error:")]
    assert len(errors) == 1 and ("checksum" in errors[0] or "MD5" in errors[0]), p.stderr
    assert all("fetching the manifest" in ln for ln in lines if ln not in errors), p.stderr  # a slow step says so
    assert not out.exists() and not (tmp_path / "never.tessvrt").exists()
    assert proxy.injected["flip"] >= 5

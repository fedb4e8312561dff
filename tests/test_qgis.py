"""QGIS 3.22 (Debian python3-qgis on GDAL 3.6, offscreen) opens a built VRT as a user's QGIS does:
valid layer, identify equal to the numpy reference, a non-blank false-colour render, and a load plus
first render that reads a small fraction of the tiles (requests counted at a proxy in front of the
local S3 server; GDAL configured only by `tessvrt gdal-config`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import HERE, run_cli
from reference import expected, load_record

from tessvrt.grid import PIXEL, owner_cells
from tessvrt.testing import FaultProxy, env_with_gdalrc

QGIS_PYTHON = "/usr/bin/python3"
CANVAS = [800, 600]


@pytest.fixture(scope="module")
def qgis() -> str:
    ok = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True).returncode == 0
    if not ok and not os.environ.get("CI"):
        pytest.skip("Debian python3-qgis not installed (scripts/test.sh installs it)")
    assert ok, "python3-qgis missing: scripts/test.sh should have installed it"
    return QGIS_PYTHON


@pytest.fixture(scope="module")
def counted(s3, tmp_path_factory):
    """A VRT of the 3x3 block, and a gdalrc whose endpoint is a counting proxy in front of S3."""
    out = tmp_path_factory.mktemp("qgis")
    vrt = out / "block" / "block.vrt"
    vrt.parent.mkdir()
    run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(vrt), "--endpoint", s3.url)
    with FaultProxy(s3.url) as proxy:
        rc = out / "gdalrc"
        run_cli("gdal-config", "--endpoint", proxy.url, "--config-file", str(rc))
        yield vrt, rc, proxy


def probe(qgis: str, vrt: Path, rc: Path, proxy: FaultProxy, spec: dict, png: Path) -> tuple[dict, int, int]:
    """Run the probe on a fresh copy of the VRT (QGIS stores statistics into the VRT it opens)."""
    fresh = png.parent / "copy"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(vrt.parent, fresh)
    env = {**env_with_gdalrc(rc), "QT_QPA_PLATFORM": "offscreen"}
    proxy.log.clear()
    p = subprocess.run([qgis, str(HERE / "qgis_probe.py"), str(fresh / vrt.name), str(png), json.dumps(spec)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), *proxy.reads()


def sample_points(rec: dict, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(col, row) pixels: random ones, both sides of tile edges, and nodata (water, stripe)."""
    w = rec["main"]["window"]
    W, H = w["width"], w["height"]
    pts = [(int(rng.integers(0, W)), int(rng.integers(0, H))) for _ in range(5)]
    xs = PIXEL * (w["col0"] + np.arange(W)) + 5.0
    ys = PIXEL * (w["row0"] - np.arange(H)) + 5.0
    ci, _ = owner_cells(w["epsg"], xs, np.full(W, ys[H // 2]))
    _, cj = owner_cells(w["epsg"], np.full(H, xs[W // 2]), ys)
    for c in np.flatnonzero(np.diff(ci))[:2]:
        pts += [(int(c), H // 2), (int(c) + 1, H // 2)]
    for r in np.flatnonzero(np.diff(cj))[:2]:
        pts += [(W // 2, int(r)), (W // 2, int(r) + 1)]
    return pts


def test_qgis_layer_identify_render_and_requests(qgis, counted, bucket_root, tmp_path):
    vrt, rc, proxy = counted
    rec = load_record(vrt)
    w = rec["main"]["window"]
    # nodata points: find one NaN pixel (water / sentinel stripe) in band 1 of the reference
    full = expected(bucket_root, rec, w["epsg"], w["col0"], w["row0"], w["width"], w["height"], [0])[0]
    pts = sample_points(rec, np.random.default_rng(11))
    nan_rows, nan_cols = np.nonzero(np.isnan(full))
    pts.append((int(nan_cols[len(nan_cols) // 2]), int(nan_rows[len(nan_rows) // 2])))
    xy = [[PIXEL * (w["col0"] + c) + 5.0, PIXEL * (w["row0"] - r) + 5.0] for c, r in pts]

    # one QGIS run: load (the layer is valid), first render, identify (a load-only run checked nothing more)
    png = tmp_path / "render.png"
    out, n_all, b_all = probe(qgis, vrt, rc, proxy, {"phase": "all", "size": CANVAS, "points": xy}, png)
    every_row = sum(t["height"] for t in rec["tiles"])
    print(f"QGIS load + render + identify of {len(pts)} points: {n_all} requests {b_all / 1e6:.1f} MB "
          f"{out['seconds']}; every row = {every_row}")

    assert out["valid"]
    assert (out["width"], out["height"], out["bands"]) == (w["width"], w["height"], 128)
    assert out["crs"] == f"EPSG:{w['epsg']}"
    for (c, r), got in zip(pts, out["identify"], strict=True):
        ref = expected(bucket_root, rec, w["epsg"], w["col0"] + c, w["row0"] - r, 1, 1)[:, 0, 0]
        vals = np.array([np.nan if v is None else v for v in got], np.float32)
        assert vals.shape == (128,), f"identify at pixel {(c, r)} gave {len(got)} bands"
        same = (vals == ref) | (np.isnan(vals) & np.isnan(ref))
        assert same.all(), f"identify at pixel {(c, r)}: band {np.argmin(same) + 1} is {vals[~same][0]}, " \
                           f"expected {ref[~same][0]}"
    assert any(v is None for v in out["identify"][-1]) and any(v is not None for v in out["identify"][0])
    # a false-colour image, not a blank canvas: the raster covers its share of the canvas with many colours
    assert png.stat().st_size > 1000
    scale = max(w["width"] / CANVAS[0], w["height"] / CANVAS[1])
    footprint = (w["width"] / scale) * (w["height"] / scale) / (CANVAS[0] * CANVAS[1])
    assert out["png"]["opaque"] > 0.5 * footprint * out["png"]["sampled"], out["png"]
    assert out["png"]["distinct_colours"] >= 50, out["png"]
    # fast to open: load + first full-extent render (+ a few identify reads) under 10% of reading every row
    assert n_all <= 0.10 * every_row, f"{n_all} requests for QGIS load + render; every row = {every_row}"


def test_gdalinfo_reads_no_tile_data(counted, gdal_bin):
    vrt, rc, proxy = counted
    proxy.log.clear()
    info = subprocess.run(["gdalinfo", str(vrt)], capture_output=True, text=True, env=env_with_gdalrc(rc), check=True)
    assert "embedding_127" in info.stdout
    assert proxy.reads() == (0, 0)


def _first_view(qgis: str, vrt: Path, rc: Path, proxy: FaultProxy, png: Path) -> tuple[dict, int, int]:
    """QGIS adds the layer and draws its full extent (default renderer, CANVAS): the first view."""
    out, n, b = probe(qgis, vrt, rc, proxy, {"phase": "all", "size": CANVAS}, png)
    assert out["valid"] and out["bands"] == 128
    assert out["png"]["distinct_colours"] >= 50 and out["png"]["opaque"] > 0, out["png"]
    return out, n, b


def test_qgis_first_view_uses_the_overview(qgis, s3, tmp_path):
    """build --overview: QGIS's first full-extent view of the 3x3 block reads <= 2% of every tile row."""
    vrt = tmp_path / "block" / "block.vrt"
    vrt.parent.mkdir()
    run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(vrt), "--endpoint", s3.url, "--overview")
    every_row = sum(t["height"] for t in load_record(vrt)["tiles"])
    with FaultProxy(s3.url) as proxy:
        rc = tmp_path / "gdalrc"
        run_cli("gdal-config", "--endpoint", proxy.url, "--config-file", str(rc))
        out, n, b = _first_view(qgis, vrt, rc, proxy, tmp_path / "ovr.png")
    print(f"QGIS first view with overviews (88 N): {n} requests {b / 1e6:.1f} MB {out['seconds']}; every row = {every_row}")
    assert n <= 0.02 * every_row, f"{n} requests for QGIS's first view; every row = {every_row}"
    # QGIS may store statistics into the VRT it opened (it does without overviews): the overviews stay listed
    assert (tmp_path / "copy" / "block.vrt").read_text().count("<Overview>") == 128


def quick_arrays(st, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile values for request counts at real tile sizes: bands 1, 2, 3... follow the row, the column and their
    mean in 8-px steps (many colours in QGIS's default band 1-3 render), scales 0.01. The sample's own values
    (tessvrt.testing.tile_arrays) took 14 s a real-size tile under load: 2 min of a 3x3 block's test."""
    r, c = (np.arange(height) // 8 % 41).astype(np.int8), (np.arange(width) // 8 % 41).astype(np.int8)
    emb = np.empty((height, width, 128), np.int8)
    emb[:, :, 0::3] = r[:, None, None]
    emb[:, :, 1::3] = c[None, :, None]
    emb[:, :, 2::3] = ((r[:, None] + c[None, :]) // 2)[:, :, None]
    return emb, np.full((height, width), 0.01, np.float32)


@pytest.mark.parametrize("lat", [0.15, 51.55])
def test_qgis_first_view_with_overview_at_real_tile_sizes(qgis, lat, tmp_path, monkeypatch):
    """The same at the sizes of real tiles (scripts/bench_remote_reads.py's 3x3 block, values from quick_arrays,
    served by a static file server): without overviews this view read 12.3% of every row at the equator
    (docs/performance.md)."""
    import sys

    from tessvrt import build, testing
    from tessvrt.testing import FileServer, SampleTile, build_sample

    monkeypatch.setattr(testing, "tile_arrays", quick_arrays)

    sys.path.insert(0, str(HERE.parent / "scripts"))
    from bench_remote_reads import block

    tiles = block(lat)
    root = build_sample(tmp_path / "bucket", [SampleTile(t) for t in tiles])
    vrt = tmp_path / "block" / "block.vrt"
    vrt.parent.mkdir()
    with FileServer(root.parent) as files, FaultProxy(files.url) as proxy:
        build(vrt, year=2024, tiles=tiles, endpoint=proxy.url, overview=True,
              manifest=f"s3://{root.name}/tessera/tessera/npy/v1/manifest.parquet")
        rc = tmp_path / "gdalrc"
        run_cli("gdal-config", "--endpoint", proxy.url, "--config-file", str(rc))
        every_row = sum(t["height"] for t in load_record(vrt)["tiles"])
        out, n, b = _first_view(qgis, vrt, rc, proxy, tmp_path / "ovr.png")
    print(f"QGIS first view with overviews ({lat} N): {n} requests {b / 1e6:.1f} MB {out['seconds']}; "
          f"every row = {every_row}")
    assert n <= 0.02 * every_row, f"{n} requests for QGIS's first view; every row = {every_row}"

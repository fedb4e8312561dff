"""build --overview: local overview GeoTIFFs of each zone VRT, read by GDAL 3.6 / 3.10 / 3.12 and QGIS 3.22
instead of the remote tiles when zoomed out, with the pixels of the documented rule (tessvrt.overview)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from conftest import HERE, assert_same, deleted, gdal_read, interpreters, run_cli
from reference import expected, load_record

from tessvrt import build
from tessvrt.grid import PIXEL, owner_cells
from tessvrt.overview import GAP, factors, picks, runs
from tessvrt.testing import FaultProxy, env_with_gdalrc

BLOCK = "4.0,88.0,4.3,88.3"  # 3x3 tiles, one zone (175 x 3350 px)
CROSS = "5.8,88.0,6.2,88.2"  # zones 31 and 32


@pytest.fixture(scope="module")
def built(s3, tmp_path_factory):
    """The 3x3 block built with levels 1/4 and 1/16 (Python API) through a counting proxy, a gdalrc pointing GDAL
    at that proxy, and the build's tile (requests, bytes)."""
    out = tmp_path_factory.mktemp("ovr")
    vrt = out / "block" / "block.vrt"
    vrt.parent.mkdir()
    with FaultProxy(s3.url) as proxy:
        build(vrt, bbox=BLOCK, year=2024, endpoint=proxy.url, overview=[4, 16])
        reads = proxy.reads()
        proxy.log.clear()
        rc = out / "gdalrc"
        run_cli("gdal-config", "--endpoint", proxy.url, "--config-file", str(rc))
        yield vrt, rc, proxy, reads


@pytest.fixture(scope="module")
def reference(built, bucket_root):
    """The block's full-resolution pixels (numpy reference from the bucket's files)."""
    rec = load_record(built[0])
    w = rec["main"]["window"]
    return rec, expected(bucket_root, rec, w["epsg"], w["col0"], w["row0"], w["width"], w["height"])


def decimated(full: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """The documented rule: overview pixel (i, j) = full pixel (floor((i+.5)*H/oh), floor((j+.5)*W/ow))."""
    _, h, w = full.shape
    return full[:, picks(h, oh)][:, :, picks(w, ow)]


def test_rule_is_gdal_nearest_and_levels():
    # f divides the size: the centre pixel f*i + f//2; otherwise spread over the whole raster, last pick inside
    assert picks(64, 16).tolist() == [2 + 4 * i for i in range(16)]
    p = picks(3350, 210)
    assert p[0] == 7 and p[-1] == 3342 and (np.diff(p) >= 15).all()
    assert factors(175, 3350) == [4] and factors(3339, 3318) == [4] and factors(10_000, 300) == [4, 16]
    assert factors(16_384, 300) == [4, 16, 64] and factors(16_385, 300) == [16, 64]
    assert factors(50_000, 40_000) == [16, 64] and factors(300_000, 10) == [256, 1024]


def test_runs_of_rows_read_in_one_get():
    # 88 N tile rows (58 px x 128 B): 3 skipped rows (22 kB) are read, 15 (111 kB) are not; 51 N rows (140 kB) never
    r4, r16 = picks(3350, 838), picks(3350, 210)
    assert runs(r4[:128], 58 * 128, 10_000) == [(0, 128)]
    assert runs(r16, 58 * 128, 10_000) == [(i, i + 1) for i in range(210)]
    assert runs(r4[:128], 1100 * 128, 10_000) == [(i, i + 1) for i in range(128)]
    # a run spans at most `most` rows; a gap of exactly GAP bytes splits; nothing is lost or repeated
    assert runs(r4[:128], 58 * 128, 40) == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70),
                                             (70, 80), (80, 90), (90, 100), (100, 110), (110, 120), (120, 128)]
    assert runs(np.array([0, 2, 3]), GAP, 100) == [(0, 1), (1, 3)] and runs(np.array([], int), 1, 1) == []


def test_overview_pixels_equal_the_pixels_they_decimate(built, reference):
    vrt = built[0]
    rec, full = reference
    assert [(o["factor"], o["width"], o["height"]) for o in rec["overviews"]] == [(4, 44, 838), (16, 11, 210)]
    for o in rec["overviews"]:
        with rasterio.open(vrt.with_name("block.tessvrt") / o["file"]) as ds:
            got = ds.read()
            assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata) and ds.crs.to_epsg() == o["epsg"]
            assert ds.descriptions[0] == "embedding_000" and ds.compression is not None
        ref = decimated(full, o["height"], o["width"])
        assert_same(got, ref, f"overview 1/{o['factor']}")
        # every overview pixel compared, across tiles: values and nodata (water, invalid scales) both present
        assert np.isnan(ref).any() and (~np.isnan(ref)).mean() > 0.3
    # the picks cross tile edges: several tiles' pixels in one overview row and column
    assert len(rec["tiles"]) == 9


def test_overview_build_reads_close_rows_in_one_get(built, reference):
    """88 N tile rows are 7 kB: the 1/4 level reads each ROWS block's span of rows in one GET per tile (the 3
    rows skipped between picks cost less than requests), the 1/16 level (15 rows skipped) one GET per row."""
    from tessvrt.grid import Window
    from tessvrt.overview import ROWS
    from tessvrt.pixels.npy import TileTable

    rec = reference[0]
    n, _ = built[3]
    win = Window(**rec["main"]["window"])
    spans = [(win.offset_of(t.window)[1], t.height) for t in TileTable.from_record(rec, win.epsg).tiles()]

    def covering(y0: int, y1: int) -> int:  # tiles holding any output row of [y0, y1]
        return sum(ty <= y1 and y0 < ty + h for ty, h in spans)

    r4, r16 = picks(win.height, 838), picks(win.height, 210)
    level4 = sum(2 * covering(r4[k], r4[min(k + ROWS, 838) - 1]) for k in range(0, 838, ROWS))
    level16 = sum(2 * covering(y, y) for y in r16)
    assert 0 < n <= 2 * len(spans) + level4 + level16, (n, level4, level16)
    assert n < 2 * 838  # one GET a picked row would take more for the 1/4 level alone


def test_gdal_36_uses_the_overview_and_reads_no_tile(built, reference, gdal_bin, tmp_path):
    vrt, rc, proxy, _ = built
    rec, full = reference
    env = env_with_gdalrc(rc)
    for o in rec["overviews"]:
        for how in (["-outsize", str(o["width"]), str(o["height"])], ["-ovr", str(rec["overviews"].index(o))]):
            proxy.log.clear()
            dst = tmp_path / f"o{o['factor']}.tif"
            subprocess.run(["gdal_translate", "-q", "-b", "1", "-b", "64", "-b", "128", *how, str(vrt), str(dst)],
                           env=env, check=True, capture_output=True)
            assert proxy.reads() == (0, 0), f"gdal_translate {how} read tiles"
            with rasterio.open(dst) as ds:
                assert_same(ds.read(), decimated(full[[0, 63, 127]], o["height"], o["width"]),
                            f"GDAL 3.6 gdal_translate {' '.join(how)}")


@pytest.mark.parametrize("python", interpreters())
def test_rasterio_decimated_read_is_the_overview(python, built, reference, tmp_path):
    vrt, rc, proxy, _ = built
    rec, full = reference
    w = rec["main"]["window"]
    for o in rec["overviews"]:
        proxy.log.clear()
        meta, got = _decimated_read(python, vrt, rc, w, o, tmp_path)
        assert meta["overviews"] == [4, 16], meta
        assert proxy.reads() == (0, 0), f"GDAL {meta['gdal']} read tiles for a 1/{o['factor']} read"
        assert_same(got, decimated(full[:3], o["height"], o["width"]), f"GDAL {meta['gdal']} 1/{o['factor']}")
    # a full-resolution window still reads the tiles, unchanged
    proxy.log.clear()
    _, (win,) = gdal_read(python, vrt, rc, [[60, 1100, 40, 30]], [1, 2, 3], tmp_path)
    assert proxy.reads()[0] > 0
    assert_same(win, full[:3, 1100:1130, 60:100], "full-resolution window")


def _decimated_read(python, vrt, rc, w: dict, o: dict, tmp_path) -> tuple[dict, np.ndarray]:
    """Bands 1-3 of the whole VRT read at the overview's size (nearest), by rasterio in that interpreter."""
    out = tmp_path / f"dec{o['factor']}.npz"
    spec = json.dumps({"windows": [[0, 0, w["width"], w["height"]]], "bands": [1, 2, 3],
                       "out_shape": [o["height"], o["width"]]})
    p = subprocess.run([python, str(HERE / "gdal_read.py"), str(vrt), str(out), spec], capture_output=True, text=True,
                       env=env_with_gdalrc(rc))
    assert p.returncode == 0, p.stderr
    d = np.load(out)
    return json.loads(str(d["meta"])), d["w0"]


def test_info_reports_and_materialise_ignores_overviews(built, reference, tmp_path, s3):
    vrt = built[0]
    rec, full = reference
    shown = run_cli("info", str(vrt)).stdout
    assert "overviews: 1/4 44 x 838 (EPSG:32631), 1/16 11 x 210 (EPSG:32631)" in shown
    assert json.loads(run_cli("info", "--json", str(vrt)).stdout)["overviews"][1]["factor"] == 16
    # materialise reads tiles, never overview pixels: garbage in the overview files changes nothing
    copy = tmp_path / "copy"
    shutil.copytree(vrt.parent, copy)
    for o in rec["overviews"]:
        (copy / "block.tessvrt" / o["file"]).write_bytes(b"not a tiff")
    out = tmp_path / "m.tif"
    run_cli("materialise", str(copy / "block.vrt"), str(out), "--bands", "1,2,3", "--no-overviews")
    with rasterio.open(out) as ds:
        assert_same(ds.read(), full[:3], "materialise of a VRT with overviews")


def test_cross_zone_build_gives_each_vrt_its_overview(s3, bucket_root, gdalrc, gdal_bin, tmp_path):
    vrt = tmp_path / "x.vrt"
    run_cli("build", "--bbox", CROSS, "--year", "2024", "-o", str(vrt), "--endpoint", s3.url, "--overview")
    rec = load_record(vrt)
    assert len(rec["zones"]) == 2 and {o["epsg"] for o in rec["overviews"]} == {32631, 32632}
    # the main VRT, whose other-zone tiles GDAL warps: the picked pixels as the warp finds them (reference.py)
    main = [o for o in rec["overviews"] if o.get("vrt") == "main"]
    assert [o["factor"] for o in main] == [4] and vrt.read_text().count("<Overview>") == 128
    w = rec["main"]["window"]
    full = expected(bucket_root, rec, w["epsg"], w["col0"], w["row0"], w["width"], w["height"])
    with rasterio.open(tmp_path / "x.tessvrt" / main[0]["file"]) as ds:
        got = ds.read()
    ref = decimated(full, main[0]["height"], main[0]["width"])
    assert_same(got, ref, "main (warped) VRT 1/4")
    xs = PIXEL * (w["col0"] + picks(w["width"], main[0]["width"])) + 5.0
    ys = PIXEL * (w["row0"] - picks(w["height"], main[0]["height"])) + 5.0
    ci, cj = owner_cells(w["epsg"], *np.meshgrid(xs, ys))
    zone_of = {((round(t["lon"] * 100) - 5) // 10, (round(t["lat"] * 100) - 5) // 10): t["epsg"] for t in rec["tiles"]}
    warped = np.vectorize(lambda a, b: zone_of.get((a, b), w["epsg"]) != w["epsg"])(ci, cj)
    assert (warped & ~np.isnan(ref[0])).sum() > 100  # other zones' (warped) tiles' values are in it
    assert "1/4 58 x 559 (EPSG:32631, main)" in run_cli("info", str(vrt)).stdout
    # GDAL 3.6 reads it for a decimated read of the main VRT
    subprocess.run(["gdal_translate", "-q", "-b", "1", "-b", "128", "-outsize", str(main[0]["width"]), str(main[0]["height"]),
                    str(vrt), str(tmp_path / "d.tif")], env=env_with_gdalrc(gdalrc), check=True, capture_output=True)
    with rasterio.open(tmp_path / "d.tif") as ds:
        assert_same(ds.read(), ref[[0, 127]], "GDAL 3.6 decimated read of the main VRT")
    for z in rec["zones"]:
        text = (tmp_path / z["vrt"]).read_text()
        assert text.count("<Overview>") == 128, z["vrt"]
        w = z["window"]
        own = {**rec, "tiles": [t for t in rec["tiles"] if t["epsg"] == z["epsg"]]}  # a zone VRT: its zone's tiles only
        full = expected(bucket_root, own, w["epsg"], w["col0"], w["row0"], w["width"], w["height"])
        for o in (o for o in rec["overviews"] if o["epsg"] == z["epsg"] and "vrt" not in o):
            assert o["factor"] == 4
            with rasterio.open(tmp_path / "x.tessvrt" / o["file"]) as ds:
                assert_same(ds.read(), decimated(full, o["height"], o["width"]), f"{z['vrt']} 1/4")


def test_overview_build_that_fails_writes_nothing(s3, bucket_root, tmp_path):
    vrt = tmp_path / "gone.vrt"
    uri = "s3://us-west-2.opendata.source.coop/tessera/tessera/npy/v1/2024/grid_4.15_88.15/grid_4.15_88.15_scales.npy"
    with deleted(s3, bucket_root, uri):
        p = run_cli("build", "--bbox", BLOCK, "--year", "2024", "-o", str(vrt), "--endpoint", s3.url, "--overview",
                    check=False)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "grid_4.15_88.15" in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.serial  # exits within 5 s: scripts/test.sh runs it alone
def test_interrupted_overview_build_leaves_nothing(s3, tmp_path):
    """Ctrl-C while the overview's rows are fetched: exit 130 within seconds, no VRT, no sidecar, no temporary."""
    import signal

    from conftest import TESSVRT, interrupt_when

    out = tmp_path / "o.vrt"
    proc = subprocess.Popen([*TESSVRT, "build", "--bbox", BLOCK, "--year", "2024", "-o", str(out), "--endpoint", s3.url,
                             "--overview"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, took, err = interrupt_when(proc, tmp_path, ".o.vrt.*/o.tessvrt/overview_*.tif", signal.SIGINT, wait=120)
    assert code == 130 and "interrupted" in err and "Traceback" not in err and took < 5.0, (code, took, err[-500:])
    assert list(tmp_path.iterdir()) == []

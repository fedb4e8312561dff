"""tessvrt preview against the local S3 server and the Zarr sample store: every RGB byte equals a PCA
computed here from the numpy reference (the sample redrawn by the rule of docs/preview.md, fitted with
numpy's SVD), one colour rule across zones, invalid pixels 0, a quicklook PNG that shows something."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import block_and_cross_vrts, interrupt_when, run_cli
from reference import _owned, expected, load_record, stored

from tessvrt.cog.check import cog_validate
from tessvrt.cog.profiles import overview_factors
from tessvrt.testing import read_tile

QGIS_PYTHON = "/usr/bin/python3"


# ---- the documented rule, written again from docs/preview.md (not imported from tessvrt.preview) ----
def doc_cell(shapes: list[tuple[int, int]]) -> int:
    cell = 32
    while sum(-(-h // cell) * -(-w // cell) for h, w in shapes) * 64 > 32768:
        cell *= 2
    return cell


def doc_rows(n: int, cell: int) -> np.ndarray:
    return np.array([o for o in range(n) if 2 <= o % cell < 6], int)


def doc_cols(n: int, cell: int) -> np.ndarray:
    return np.array([o for o in range(n) if o % cell < 32 and (o % cell) % 2 == 0], int)


def doc_pca(zones: list[np.ndarray]) -> dict:
    """Fit on the lattice pixels of the zones' (128, h, w) references, in zone order, row-major."""
    cell = doc_cell([z.shape[1:] for z in zones])
    rows = []
    for z in zones:
        r, c = doc_rows(z.shape[1], cell), doc_cols(z.shape[2], cell)
        px = z[:, r][:, :, c].reshape(128, -1).T
        rows.append(px[np.isfinite(px).all(axis=1)])
    x = np.concatenate(rows).astype(np.float64)
    mean = x.mean(axis=0)
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    raw = vt[:3].copy()
    comp = raw * np.sign(raw[np.arange(3), np.abs(raw).argmax(axis=1)])[:, None]
    scores = comp @ (x - mean).T
    lo, hi = np.percentile(scores, [2, 98], axis=1)
    return {"cell": cell, "n": len(x), "mean": mean, "raw": raw, "components": comp, "lo": lo, "hi": hi}


def doc_colour(ref: dict, z: np.ndarray, raw: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The colours of a zone's (128, h, w) float32 reference; raw: its stored (128, h, w) int8 values and
    (h, w) one-per-pixel valid scales (NaN elsewhere: per-band-scale tiles, no data), coloured exactly from them."""
    flat = z.reshape(128, -1).astype(np.float64)
    ok = np.isfinite(flat).all(axis=0)
    s = ref["components"] @ (np.where(ok, flat, 0) - ref["mean"][:, None])
    if raw is not None:  # pixels with one scale: s * sum_b q_b * rint(c_kb * 2**30) * 2**-30 - c_k . mean
        q, sc = raw[0].reshape(128, -1), raw[1].reshape(-1)
        one = np.isfinite(sc)
        assert (ok[one]).all()
        fixed = np.rint(ref["components"] * 2.0 ** 30)  # integers: the float64 product is exact (< 2**53)
        t = fixed @ q[:, one].astype(np.float64)
        s[:, one] = sc[one].astype(np.float64) * t * 2.0 ** -30 - (ref["components"] @ ref["mean"])[:, None]
    v = np.clip(np.rint(1 + 254 * (s - ref["lo"][:, None]) / (ref["hi"] - ref["lo"])[:, None]), 1, 255)
    return np.where(ok, v, 0).astype(np.uint8).reshape(3, *z.shape[1:])


def check_outputs(files: list[str], refs: list[np.ndarray], raws: list, random_windows: int = 20) -> dict:
    """Every output equals the reference colouring (whole file, random windows through GDAL, overviews)."""
    ref = doc_pca(refs)
    rng = np.random.default_rng(7)
    tags = set()
    for f, z, raw in zip(files, refs, raws, strict=True):
        want = doc_colour(ref, z, raw)
        with rasterio.open(f) as d:
            assert d.count == 3 and d.dtypes == ("uint8",) * 3 and d.nodata == 0
            assert d.descriptions == ("pc1", "pc2", "pc3")
            assert d.overviews(1) or max(d.shape) <= d.block_shapes[0][0]
            got = d.read()
            mask = d.dataset_mask()
            tags.add(d.tags()["TESSVRT_PCA"])
            for _ in range(random_windows):  # windows read through GDAL on their own (edges included)
                h, w = rng.integers(1, min(200, d.height) + 1), rng.integers(1, min(200, d.width) + 1)
                y, x = rng.integers(0, d.height - h + 1), rng.integers(0, d.width - w + 1)
                win = rasterio.windows.Window(x, y, w, h)
                np.testing.assert_array_equal(d.read(window=win), want[:, y:y + h, x:x + w], f"{f} window {win}")
        diff = got != want
        assert not diff.any(), f"{f}: {int(diff.any(axis=0).sum())} of {got[0].size} pixels differ from the reference PCA"
        invalid = ~np.isfinite(z).all(axis=0)
        assert ((got == 0).all(axis=0) == invalid).all() and (mask == 0).sum() == invalid.sum()
        check_overviews(f, want)
        assert cog_validate(f) == []
    assert len(tags) == 1, "every zone carries the same PCA"
    pca = json.loads(tags.pop())
    comp = np.array(pca["components"])
    # components agree with the reference's up to sign, and the fixed sign makes them equal
    np.testing.assert_allclose(np.abs((comp * ref["raw"]).sum(axis=1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(comp, ref["components"], atol=1e-9)
    assert (comp[np.arange(3), np.abs(comp).argmax(axis=1)] > 0).all()
    return ref


def check_overviews(path: str, want: np.ndarray) -> None:
    with rasterio.open(path) as d:
        factors = overview_factors(d.width, d.height, d.block_shapes[0][0])
    for k, f in enumerate(factors):
        with rasterio.open(path, overview_level=k) as o:
            got = o.read()
        rows = np.minimum(np.arange(got.shape[1]) * f + f // 2, want.shape[1] - 1)
        cols = np.minimum(np.arange(got.shape[2]) * f + f // 2, want.shape[2] - 1)
        np.testing.assert_array_equal(got, want[:, rows][:, :, cols], f"overview x{f}")


def check_png(png: Path, invalid_share: float) -> np.ndarray:
    """The quicklook: RGBA, not blank, many colours, transparent where no data and opaque colour elsewhere."""
    with rasterio.open(png) as d:
        assert d.driver == "PNG" and d.count == 4 and max(d.shape) <= 1024
        a = d.read()
    alpha = a[3]
    assert set(np.unique(alpha)) <= {0, 255} and (alpha == 255).mean() > 0.2, "mostly transparent"
    assert (a[:3, alpha == 0] == 0).all() and (a[:3, alpha == 255] > 0).all()
    colours = np.unique(a[:3, alpha == 255].T, axis=0)
    assert len(colours) > 500, f"only {len(colours)} colours"
    for band in a[:3]:  # each channel spans most of the range (the stretch did its job)
        v = band[alpha == 255]
        assert np.percentile(v, 98) - np.percentile(v, 2) > 150
    if invalid_share > 0.01:
        assert (alpha == 0).any(), "no data is not transparent"
    return a


# ---- npy tiles, through a VRT ----
@pytest.fixture(scope="module")
def vrts(s3, tmp_path_factory):
    return block_and_cross_vrts(s3, tmp_path_factory.mktemp("pv"))


def npy_refs(bucket_root, vrt: Path) -> list[np.ndarray]:
    rec = load_record(vrt)
    out = []
    for z in rec["zones"]:
        w = z["window"]
        r = {**rec, "tiles": [t for t in rec["tiles"] if t["epsg"] == z["epsg"]]}
        out.append(expected(bucket_root, r, w["epsg"], w["col0"], w["row0"], w["width"], w["height"]))
    return out


def npy_raws(bucket_root, vrt: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per zone: the stored int8 values and the one-per-pixel valid scales (NaN: per-band scales, invalid, unowned)."""
    rec = load_record(vrt)
    out = []
    for z in rec["zones"]:
        w = z["window"]
        r = {**rec, "tiles": [t for t in rec["tiles"] if t["epsg"] == z["epsg"]]}
        win = (w["epsg"], w["col0"], w["row0"], w["width"], w["height"])
        s = np.full(w["height"] * w["width"], np.nan, np.float32)
        for t, idx, rr, cc in _owned(r, *win):
            sc = read_tile(bucket_root, t["scales"])
            if sc.ndim == 2:
                v = sc[rr, cc]
                s[idx] = np.where(np.isfinite(v) & (v > 0) & (v < 1.0), v, np.nan)
        out.append((stored(bucket_root, r, *win), s.reshape(w["height"], w["width"])))
    return out


@pytest.fixture(scope="module")
def cross(vrts, bucket_root, tmp_path_factory) -> dict:
    """`tessvrt preview` of the cross-zone VRT (--png, --json) run once, with its per-zone references and raws."""
    tmp = tmp_path_factory.mktemp("pvcross")
    out, png = tmp / "cross.tif", tmp / "cross.png"
    p = run_cli("preview", str(vrts["cross"]), str(out), "--png", str(png), "--json", "--quiet")
    return {"dir": tmp, "png": png, "res": json.loads(p.stdout), "refs": npy_refs(bucket_root, vrts["cross"]),
            "raws": npy_raws(bucket_root, vrts["cross"])}


def test_npy_multizone_equals_reference_pca(vrts, cross):
    tmp_path, png, res, refs = cross["dir"], cross["png"], cross["res"], cross["refs"]
    rec = load_record(vrts["cross"])
    assert res["files"] == [str(tmp_path / f"cross_{z['label']}.tif") for z in rec["zones"]] and len(res["files"]) == 2
    ref = check_outputs(res["files"], refs, cross["raws"])
    assert res["sample_pixels"] == ref["n"] and res["cell"] == ref["cell"]
    # the sample is sparse: a small share of the bytes the stream reads (4 consecutive rows per cell)
    assert 0 < res["sample_bytes"] < 0.5 * 4 / ref["cell"] * res["remote_bytes"] * 4
    invalid = sum((~np.isfinite(z).all(axis=0)).sum() for z in refs) / sum(z[0].size for z in refs)
    assert 0.01 < invalid < 0.9  # the region has no data to mask (water, absent tiles)
    check_png(png, invalid)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([Path(f).name for f in res["files"]] + ["cross.png"])


def test_library_single_zone_and_sign_convention(vrts, bucket_root, tmp_path, gdal_bin):
    from tessvrt import preview
    from tessvrt.preview import fit

    res = preview(vrts["block"], tmp_path / "block.tif", blocksize=256)
    assert res.files == [tmp_path / "block.tif"] and res.png is None
    check_outputs([str(f) for f in res.files], npy_refs(bucket_root, vrts["block"]), npy_raws(bucket_root, vrts["block"]))
    # the sign rule makes the fit independent of what the SVD returns for a sample and its negation
    g = np.random.default_rng(3)
    x = g.normal(size=(500, 128)) @ g.normal(size=(128, 128))
    a, b = fit(x), fit(-x)
    np.testing.assert_allclose(a.components, b.components, atol=1e-12)
    np.testing.assert_allclose(a.lo, -b.hi, atol=1e-9)  # scores negate: the 2-98 stretch mirrors
    # Debian's GDAL 3.6 CLI (what QGIS 3.22 runs on) reads it as RGB with the same bytes
    info = subprocess.run([gdal_bin.replace("gdal_translate", "gdalinfo"), str(res.files[0])], capture_output=True,
                          text=True, check=True).stdout
    assert "ColorInterp=Red" in info and "ColorInterp=Blue" in info and "NoData Value=0" in info
    cut = tmp_path / "cut.tif"
    subprocess.run([gdal_bin, "-q", "-srcwin", "37", "1000", "120", "250", str(res.files[0]), str(cut)], check=True)
    with rasterio.open(cut) as c, rasterio.open(res.files[0]) as d:
        np.testing.assert_array_equal(c.read(), d.read(window=rasterio.windows.Window(37, 1000, 120, 250)))
        rgb = d.read()
        t = d.transform
    # QGIS 3.22 (Debian python3-qgis) shows it as an RGB picture and identifies the same bytes
    if subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True).returncode != 0:
        pytest.skip("Debian python3-qgis not installed")
    rng = np.random.default_rng(5)
    pix = [(int(rng.integers(0, rgb.shape[2])), int(rng.integers(0, rgb.shape[1]))) for _ in range(12)]
    nodata = np.argwhere((rgb == 0).all(axis=0))
    pix.append((int(nodata[len(nodata) // 2][1]), int(nodata[len(nodata) // 2][0])))
    spec = {"points": [list(t * (c + 0.5, r + 0.5)) for c, r in pix], "size": [200, 800]}
    p = subprocess.run([QGIS_PYTHON, str(Path(__file__).parent / "qgis_probe.py"), str(res.files[0]),
                        str(tmp_path / "qgis.png"), json.dumps(spec)], capture_output=True, text=True,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    q = json.loads(p.stdout.strip().splitlines()[-1])
    assert q["valid"] and q["renderer"] == "multibandcolor" and q["png"]["distinct_colours"] > 200
    for (c, r), got in zip(pix, q["identify"], strict=True):  # QGIS reports no data as null
        want = [float(v) for v in rgb[:, r, c]]
        assert got == (want if any(want) else [None, None, None]), (c, r, got, want)


def test_same_values_same_colour_across_zones(cross):
    """Colours are a function of the 128 values alone: pixels with equal embeddings in the two zone
    files of the boundary region get equal colours, and each zone's colour rule is the other's."""
    res, refs = cross["res"], cross["refs"]  # the same preview run as test_npy_multizone_equals_reference_pca
    got = []
    for f in res["files"]:
        with rasterio.open(f) as d:
            got.append(d.read())
    seen: dict[bytes, bytes] = {}
    pairs = 0
    for z, (ref, rgb) in enumerate(zip(refs, got, strict=True)):
        ok = np.isfinite(ref).all(axis=0)
        for v, c in zip(ref[:, ok].T, rgb[:, ok].T, strict=True):
            k = v.tobytes()
            if k in seen:
                assert seen[k] == c.tobytes()
                pairs += z > 0
            seen.setdefault(k, c.tobytes())
    # the two zones' files do not share tile pixels, so also colour zone 2 by zone 1's rule
    with rasterio.open(res["files"][0]) as d:
        pca = json.loads(d.tags()["TESSVRT_PCA"])
    rule = {k: np.array(pca[k]) for k in ("components", "mean", "lo", "hi")}
    np.testing.assert_array_equal(doc_colour(rule, refs[1], cross["raws"][1]), got[1])


def test_every_byte_fetched_is_used_and_the_stream_reads_what_materialise_reads(vrts, s3, tmp_path):
    """The first chunk is fetched while the sample is drawn: the stream must use it, not read it again. What the
    server sends preview is what preview counts, and materialise's reads plus the sample's, byte for byte."""
    from tessvrt.testing import FaultProxy

    with FaultProxy(s3.url) as proxy:
        m = json.loads(run_cli("materialise", str(vrts["cross"]), str(tmp_path / "m.tif"), "--bands", "1", "--json", "-q",
                               "--endpoint", proxy.url).stdout)
        _, by_m = proxy.reads()
        p = json.loads(run_cli("preview", str(vrts["cross"]), str(tmp_path / "p.tif"), "--json", "-q",
                               "--endpoint", proxy.url).stdout)
        _, by_both = proxy.reads()
    assert by_m == m["remote_bytes"]
    assert by_both - by_m == p["remote_bytes"], "preview fetched bytes it did not use"
    assert p["remote_bytes"] == m["remote_bytes"] + p["sample_bytes"] and p["sample_bytes"] > 0


def test_bad_input_is_one_line(vrts, tmp_path):
    out = tmp_path / "x.tif"
    out.write_bytes(b"mine")
    p = run_cli("preview", str(vrts["block"]), str(out), check=False)
    assert p.returncode == 1 and "exists" in p.stderr and "--overwrite" in p.stderr and len(p.stderr.splitlines()) == 1
    assert out.read_bytes() == b"mine"
    p = run_cli("preview", str(vrts["block"]), str(tmp_path / "y.tif"), "--png", str(tmp_path / "y.jpg"), check=False)
    assert p.returncode == 1 and ".png" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("preview", check=False)
    assert p.returncode == 1 and "tessvrt preview" in p.stderr
    p = run_cli("preview", str(vrts["block"]), str(tmp_path / "col") + "/", check=False)
    assert p.returncode == 1 and "not a collection" in p.stderr and len(p.stderr.splitlines()) == 1
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.tif"]


@pytest.mark.parametrize("stage", ["sample", "stream"])
def test_sigterm_takes_effect_in_seconds_and_leaves_nothing(vrts, tmp_path, stage):
    """SIGTERM while the sample is read (just after the lock is taken) or while the zones stream (their
    temporaries exist: the fit is made)."""
    out, png = tmp_path / "o.tif", tmp_path / "o.png"
    cmd = [sys.executable, "-m", "tessvrt", "preview", str(vrts["cross"]), str(out), "--png", str(png), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sign = ".o*.lock.tessvrt-tmp" if stage == "sample" else ".o_utm*.tessvrt-tmp*"
    code, took, err = interrupt_when(proc, tmp_path, sign, signal.SIGTERM, after=0.1)
    assert took < 10, "SIGTERM took more than 10 s"
    assert code == 130 and "interrupted; no output was written" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


# ---- a Zarr store: zones 31/32 and the equator ----
ROOT = "s3://us-west-2.opendata.source.coop/tessera/tessera/zarr"
ZONES_BOX = "5.9910,-0.0040,6.0080,0.0070"  # four outputs: zones 31/32, north and south


@pytest.fixture(scope="module")
def zarr_store(s3, tmp_path_factory) -> Path:
    pytest.importorskip("zarr")
    from tessvrt.zarrsample import upload, write_store

    store = write_store(tmp_path_factory.mktemp("zarr") / "v1.1-dclimate", "upstream")
    upload(store, s3.put, f"{ROOT}/v1.1-dclimate")
    return store


def zarr_refs(store: Path, files: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    from tessvrt.zarrsample import ZONES, reference

    spec = {s.zone: s for s in ZONES}
    out = []
    for f in files:
        with rasterio.open(f) as d:
            epsg, t, h, w = d.crs.to_epsg(), d.transform, d.height, d.width
        zone = epsg % 100
        top = t.f - (10_000_000 if epsg >= 32700 else 0)  # the store's south is on the north EPSG
        r, c = round((spec[zone].oy - top) / 10), round((t.c - spec[zone].ox) / 10)
        out.append(reference(store, zone, 2024, slice(r, r + h), slice(c, c + w)))
    return out


def zarr_raw(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored int8 values behind float32 x = q * s (exact: rint(x / s)) and the valid scales (NaN elsewhere)."""
    ok = np.isfinite(s) & (s > 0) & (s < 1.0) & np.isfinite(x).all(axis=0)
    sv = np.where(ok, s, np.nan).astype(np.float32)
    q = np.rint(np.where(ok, x, 0) / np.where(ok, s, 1).astype(np.float64))
    assert np.abs(q).max() <= 128
    return q, sv


def test_zarr_zones_and_equator_equal_reference_pca(zarr_store, s3, tmp_path):
    out, png = tmp_path / "z.tif", tmp_path / "z.png"
    p = run_cli("preview", str(out), "--dataset", "v1.1-dclimate", "--bbox", ZONES_BOX, "--year", "2024",
                "--endpoint", s3.url, "--png", str(png), "--blocksize", "64", "--json", "-q")
    res = json.loads(p.stdout)
    assert [Path(f).name for f in res["files"]] == ["z_utm31n.tif", "z_utm31s.tif", "z_utm32n.tif", "z_utm32s.tif"]
    both = zarr_refs(zarr_store, res["files"])
    refs = [x for x, _ in both]
    ref = check_outputs(res["files"], refs, [zarr_raw(x, s) for x, s in both])
    assert res["sample_pixels"] == ref["n"]
    invalid = sum((~np.isfinite(z).all(axis=0)).sum() for z in refs) / sum(z[0].size for z in refs)
    check_png(png, invalid)


def test_region_clip_masks_exactly_the_pixels_outside(vrts, tmp_path):
    # --region/--country/--clip as materialise takes them: pixels whose centres fall outside the polygon are no
    # data (0), and the pixels left are exactly materialise --clip's valid ones (valid in every band: the sample's
    # tile 4.25,88.05 has band 8 alone invalid on every 50th row)
    import shapely
    from test_region import U, pixel_centres_lonlat, write_region

    poly = write_region(tmp_path / "u.geojson", [U])
    common = [str(vrts["block"]), "--region", str(poly), "--clip", "--json", "--quiet"]
    pv = json.loads(run_cli("preview", common[0], str(tmp_path / "p.tif"), *common[1:]).stdout)["files"]
    mt = json.loads(run_cli("materialise", common[0], str(tmp_path / "m.tif"), *common[1:], "--bands", "1,8").stdout)["files"]
    assert len(pv) == len(mt) == 1
    with rasterio.open(pv[0]) as p, rasterio.open(mt[0]) as m:
        assert p.transform == m.transform and p.shape == m.shape
        rgb, ref = p.read(), m.read()
    lon, lat = pixel_centres_lonlat(Path(pv[0]))
    outside = ~shapely.intersects_xy(U, lon, lat)
    assert outside.sum() > 10_000 and (rgb[:, outside] == 0).all()
    np.testing.assert_array_equal(rgb[0] != 0, ~np.isnan(ref).any(axis=0))


def test_readme_picture_is_what_the_script_makes_from_the_offline_sample(tmp_path):
    """docs/preview.png (the README's picture) is regenerated by scripts/preview_picture.py from the offline sample:
    the same pixels, and a picture worth showing (check_png: colours, stretch, transparent no data)."""
    import warnings

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "picture.png"
    subprocess.run([sys.executable, str(root / "scripts" / "preview_picture.py"), "--out", str(out)], check=True,
                   capture_output=True, env={**os.environ, "TESSVRT_CACHE_DIR": str(tmp_path / "cache")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        got = check_png(out, 0.05)
        with rasterio.open(root / "docs" / "preview.png") as d:
            committed = d.read()
    assert got.shape == committed.shape and (got == committed).all(), "run scripts/preview_picture.py and commit docs/preview.png"

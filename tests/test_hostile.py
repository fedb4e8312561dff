"""Hostile or broken input is refused with one clear line and nothing written: tile objects
replaced or damaged after build (truncated, not .npy, a header that disagrees), a VRT or build
record edited by hand into nonsense, manifests with wrong types or duplicate tiles."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import manifest_path, replaced, run_cli, run_cli_many

from tessvrt.source import npy

BBOX = ["--bbox", "4.0,88.0,4.3,88.3", "--year", "2024"]


@pytest.fixture(scope="module")
def block(s3, tmp_path_factory):
    vrt = tmp_path_factory.mktemp("hostile") / "block.vrt"
    run_cli("build", *BBOX, "-o", str(vrt), "--endpoint", s3.url)
    return vrt


def copy_vrt(block, folder):
    """A private copy of the block VRT and its sidecar, to edit."""
    folder.mkdir(exist_ok=True)
    shutil.copy(block, folder / "block.vrt")
    shutil.copytree(block.with_name("block.tessvrt"), folder / "block.tessvrt")
    return folder / "block.vrt", folder / "block.tessvrt" / "tessvrt.json"


def assert_refused(p, needle: str, folder) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("tessvrt: error:"), p.stderr
    assert needle in lines[0], lines[0]
    assert not [f for f in os.listdir(folder) if f.endswith(".tif") or "tessvrt-tmp" in f], os.listdir(folder)


def _fortran(head: bytes) -> bytes:
    return head.replace(b"'fortran_order': False", b"'fortran_order': True ")


# each damages the grid (or scales) object of one tile, keeping or changing its size
DAMAGE = {
    "truncated": ("grid", lambda b, h, w: b[: len(b) // 2], "the manifest says"),
    "not_npy": ("grid", lambda b, h, w: bytes(np.random.default_rng(0).integers(0, 256, len(b), np.uint8)),
                "not an .npy file"),
    "float32_header": ("grid", lambda b, h, w: npy.build_header("<f4", (h, w, 32)) + b[128:], "is not an int8"),
    "fortran_order": ("grid", lambda b, h, w: _fortran(b[:128]) + b[128:], "Fortran order"),
    "transposed": ("grid", lambda b, h, w: npy.build_header("|i1", (w, h, 128)) + b[128:], "its shape is"),
    "scales_flat": ("scales", lambda b, h, w: npy.build_header("<f4", (h * w,)) + b[128:], "is not float32"),
    "longer_header": ("grid", lambda b, h, w: b[:8] + (246).to_bytes(2, "little") + b[10:127] + b" " * 128 + b"\n"
                      + b[128 : len(b) - 128], "its data starts at byte 256, not 128"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_tile_object_is_refused_before_writing(kind, block, s3, bucket_root, tmp_path):
    """The object behind one tile is replaced after build: materialise reads every header first,
    so the wrong bytes are never dequantised into an output that looks fine."""
    which, damage, needle = DAMAGE[kind]
    vrt, rec_path = copy_vrt(block, tmp_path / "v")
    rec = json.loads(rec_path.read_text())
    t = rec["tiles"][4]
    original = (bucket_root / t[which].split("/", 3)[3]).read_bytes()
    bad = damage(original, t["height"], t["width"])
    assert bad != original and (kind == "truncated" or len(bad) == len(original))
    args = ["materialise", str(vrt), str(tmp_path / "out.tif"), "--endpoint", s3.url]
    with replaced(s3, bucket_root, t[which], bad):
        p, q = run_cli_many([args, [*args, "--allow-missing"]])
    assert_refused(p, needle, tmp_path)
    assert t["name"] in p.stderr
    assert_refused(q, needle, tmp_path)  # damaged is not missing: --allow-missing does not hide it


def _drop_band(text: str) -> str:
    i = text.rindex("  <VRTRasterBand")
    return text[:i] + text[text.index("</VRTRasterBand>", i) + len("</VRTRasterBand>\n"):]


VRT_EDITS = {
    "truncated_xml": (lambda s: s[: len(s) // 2], "not valid XML"),
    "not_vrt": (lambda s: "<GDAL_WMS/>", "not <VRTDataset>"),
    "size": (lambda s: s.replace('rasterXSize="175"', 'rasterXSize="176"', 1), "the record says 175x3350"),
    "geotransform": (lambda s: s.replace("503310.0, 10.0", "503320.0, 10.0", 1), "GeoTransform"),
    "band_dropped": (_drop_band, "127 bands"),
    "source_elsewhere": (lambda s: s.replace('<SourceFilename relativeToVRT="1">block.tessvrt/mosaic_32631.vrt',
                                             '<SourceFilename relativeToVRT="0">/etc/passwd', 1), "/etc/passwd"),
}


def _tile_edit(key: str, value):
    def edit(rec: dict) -> dict:
        rec["tiles"][2][key] = value
        return rec
    return edit


RECORD_EDITS = {
    "offset": (_tile_edit("grid_offset", 64), "grid_size"),
    "width_text": (_tile_edit("width", "55"), "'width' is missing or not an integer"),
    "local_path": (_tile_edit("grid", "/etc/passwd"), "not an s3://bucket/key URI"),
    "other_bucket": (_tile_edit("scales", "s3://elsewhere/x_scales.npy"), "several buckets"),
    "dotdot_key": (_tile_edit("grid", "s3://us-west-2.opendata.source.coop/../x.npy"), "unsafe key"),
    "other_key": (_tile_edit("grid", "s3://us-west-2.opendata.source.coop/tessera/tessera/npy/v1/x.npy"), "are not"),
    "old_grid": (lambda r: {k: v for k, v in r.items() if k != "pixel_grid"}, "rebuild it"),
    "scale_bands": (_tile_edit("scale_bands", 3), "scale_bands 3"),
    "duplicate": (lambda r: {**r, "tiles": r["tiles"] + r["tiles"][:1]}, "listed twice"),
    "no_tiles": (lambda r: {**r, "tiles": []}, "no tiles"),
    "window": (lambda r: {**r, "main": {"epsg": 32631, "window": {"width": -5}}}, "main window is not a window"),
    "not_object": (lambda r: [r], "not a JSON object"),
}


@pytest.fixture(scope="module")
def edited(block, tmp_path_factory) -> dict:
    """Each edit in its own folder, then every edit's materialise and info in one interpreter (all are refused
    before any read): {edit: (folder, [materialise result, info result])}."""
    cases, argvs = {}, []
    for edit in [*VRT_EDITS, *RECORD_EDITS]:
        folder = tmp_path_factory.mktemp(f"edit_{edit}")
        vrt, rec_path = copy_vrt(block, folder / "v")
        if edit in VRT_EDITS:
            change, _ = VRT_EDITS[edit]
            vrt.write_text(change(vrt.read_text()))
        else:
            change, _ = RECORD_EDITS[edit]
            rec_path.write_text(json.dumps(change(json.loads(rec_path.read_text()))))
        cases[edit] = folder
        argvs += [["materialise", str(vrt), str(folder / "out.tif")], ["info", str(vrt)]]
    results = iter(run_cli_many(argvs))
    return {edit: (folder, [next(results), next(results)]) for edit, folder in cases.items()}


@pytest.mark.parametrize("edit", [*VRT_EDITS, *RECORD_EDITS])
def test_hand_edited_vrt_or_record_is_refused(edit, edited):
    needle = (VRT_EDITS if edit in VRT_EDITS else RECORD_EDITS)[edit][1]
    folder, results = edited[edit]
    for p in results:  # materialise, then info
        assert_refused(p, needle, folder)
        want = "does not match its build record" if edit in VRT_EDITS else "an older tessvrt" if edit == "old_grid" else "is corrupt"
        assert want in p.stderr


def test_unedited_copy_still_materialises(block, s3, tmp_path):
    """The checks refuse edits, not moves: a copied VRT with its folder is accepted (control case)."""
    vrt, _ = copy_vrt(block, tmp_path / "moved")
    out = tmp_path / "ok.tif"
    run_cli("materialise", str(vrt), str(out), "--bands", "1", "--endpoint", s3.url, "--quiet")
    assert out.exists()


def test_build_refuses_objects_whose_header_disagrees(s3, bucket_root, tmp_path):
    """The manifest's size is not the formula's, so build reads the header: a non-npy object or a
    header for another shape refuses the tile (build writes nothing)."""
    df = pd.read_parquet(manifest_path(bucket_root))
    i = df.index[(df.lon == 4.05) & (df.lat == 88.25) & (df.year == 2024)][0]
    uri = "s3://us-west-2.opendata.source.coop/" + df.loc[i, "grid_path"].removeprefix("s3://")
    original = (bucket_root / uri.split("/", 3)[3]).read_bytes()
    cases = {
        "not_npy": (b"PK\x03\x04" + original[4:-4096], "not an .npy file"),
        "float_header": (npy.build_header("<f4", (1117, 55, 16)) + original[128:-4096], "is not an int8"),
        "short": (original[:-4096], "header says (1117, 55, 128) but the manifest size is"),
    }
    for data, needle in cases.values():
        bad = df.copy()
        bad.loc[i, "grid_size"] = len(data)
        bad.to_parquet(tmp_path / "manifest.parquet")
        with replaced(s3, bucket_root, uri, data):
            p = run_cli("build", *BBOX, "-o", str(tmp_path / "x.vrt"), "--manifest", str(tmp_path / "manifest.parquet"),
                        "--endpoint", s3.url, check=False)
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert needle in p.stderr and "grid_4.05_88.25" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert sorted(os.listdir(tmp_path)) == ["manifest.parquet"]


@pytest.mark.parametrize("change, needle", [
    (lambda df: df.assign(grid_size=df.grid_size.astype(str)), "column 'grid_size' holds string"),
    (lambda df: df.assign(year=df.year.astype(float) + 0.5), "column 'year'"),
    (lambda df: df.assign(lon=df.lon.astype(str)), "column 'lon'"),
    (lambda df: pd.concat([df, df.iloc[:1]]), "twice"),
])
def test_manifest_wrong_types_and_duplicates_refused(change, needle, s3, bucket_root, tmp_path):
    df = pd.read_parquet(manifest_path(bucket_root))
    change(df).to_parquet(tmp_path / "manifest.parquet")
    p = run_cli("build", "--tile", f"{df.lon.iloc[0]},{df.lat.iloc[0]}", "--year", str(df.year.iloc[0]),
                "-o", str(tmp_path / "x.vrt"), "--manifest", str(tmp_path / "manifest.parquet"), "--endpoint", s3.url,
                check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and needle in p.stderr, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["manifest.parquet"]

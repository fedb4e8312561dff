"""Bad input: one clear line, non-zero exit, no traceback, nothing half-written left behind."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import manifest_path, run_cli, run_cli_many
from hypothesis import given
from hypothesis import strategies as st

from tessvrt.build import BBox
from tessvrt.errors import TessvrtError


def assert_clean_failure(p, tmp_path, needle: str) -> None:
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessvrt: error:"), p.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in p.stderr
    assert not [f for f in os.listdir(tmp_path) if f != "manifest.parquet"], os.listdir(tmp_path)


BAD_BBOXES = [
    ("1,2,3", "four numbers"),
    ("a,b,c,d", "four numbers"),
    ("4.3,88.0,4.0,88.3", "inverted"),
    ("4.0,88.3,4.3,88.0", "inverted"),
    ("-200,10,10,20", "out of range"),
    ("0,-95,1,1", "out of range"),
    ("35.6,139.6,35.8,139.9", "if you typed LAT,LON: longitude comes first, --bbox 139.6,35.6,139.9,35.8"),
    ("nan,1,2,3", "finite"),
]


@pytest.fixture(scope="module")
def bad_bbox_runs(s3, tmp_path_factory) -> dict:
    """Every BAD_BBOXES build, each in its own folder, in one interpreter: {bbox: (folder, result)}."""
    folders = {bbox: tmp_path_factory.mktemp("bbox") for bbox, _ in BAD_BBOXES}
    runs = run_cli_many([["build", f"--bbox={bbox}", "--year", "2024", "-o", str(f / "x.vrt"), "--endpoint", s3.url]
                         for bbox, f in folders.items()])
    return {bbox: (f, p) for (bbox, f), p in zip(folders.items(), runs, strict=True)}


@pytest.mark.parametrize("bbox, needle", BAD_BBOXES)
def test_bad_bbox(bbox, needle, bad_bbox_runs):
    folder, p = bad_bbox_runs[bbox]
    assert_clean_failure(p, folder, needle)


def test_no_tiles_for_region_or_year(tmp_path, s3):
    p, q = run_cli_many([
        ["build", "--bbox", "20,20,20.2,20.2", "--year", "2024", "-o", str(tmp_path / "x.vrt"), "--endpoint", s3.url],
        ["build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "1999", "-o", str(tmp_path / "x.vrt"), "--endpoint", s3.url]])
    assert_clean_failure(p, tmp_path, "none of the 4 requested tile(s)")
    assert_clean_failure(q, tmp_path, "no tiles for year 1999")


def test_bad_manifests(tmp_path, s3):
    junk = tmp_path / "manifest.parquet"
    junk.write_bytes(b"not parquet at all")
    p = run_cli("build", "--bbox", "4,88,4.3,88.3", "--year", "2024", "-o", str(tmp_path / "x.vrt"), "--manifest", str(junk), check=False)
    assert_clean_failure(p, tmp_path, "not a readable parquet")
    pd.DataFrame({"version": ["1.0"], "year": [2024]}).to_parquet(junk)
    p = run_cli("build", "--bbox", "4,88,4.3,88.3", "--year", "2024", "-o", str(tmp_path / "x.vrt"), "--manifest", str(junk), check=False)
    assert_clean_failure(p, tmp_path, "lacks column(s)")
    p = run_cli("build", "--bbox", "4,88,4.3,88.3", "--year", "2024", "-o", str(tmp_path / "x.vrt"),
                "--manifest", str(tmp_path / "nope.parquet"), check=False)
    assert_clean_failure(p, tmp_path, "does not exist")


def test_manifest_paths_outside_bucket_refused(tmp_path, s3, bucket_root):
    """Keys come from (dataset, year, tile); a manifest row naming any other object refuses the tile."""
    df = pd.read_parquet(manifest_path(bucket_root))
    first = df.loc[df.index[0], "grid_path"]
    df.loc[df.index[0], "grid_path"] = "s3://someone-else/x.npy"
    df.loc[df.index[1], "grid_path"] = "/etc/passwd"
    df.loc[df.index[2], "scales_path"] = first  # another tile's object in the right bucket
    m = tmp_path / "manifest.parquet"
    df.to_parquet(m)
    for p in run_cli_many([["build", "--tile", tile, "--year", "2024", "-o", str(tmp_path / "x.vrt"), "--manifest", str(m),
                            "--endpoint", s3.url] for tile in ("4.05,88.25", "4.15,88.25", "4.25,88.25")]):
        assert_clean_failure(p, tmp_path, "grid_4")


def test_unwritable_output(tmp_path, s3):
    p = run_cli("build", "--bbox", "4,88,4.3,88.3", "--year", "2024", "-o", str(tmp_path / "no" / "x.vrt"),
                "--endpoint", s3.url, check=False)
    assert_clean_failure(p, tmp_path, "does not exist")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions: use a path that is a file instead
        ro.rmdir()
        ro.write_text("")
        target = ro / "x.vrt"
    else:
        target = ro / "x.vrt"
    p = run_cli("build", "--bbox", "4,88,4.3,88.3", "--year", "2024", "-o", str(target), "--endpoint", s3.url, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_missing_tiles_reported_not_fatal(tmp_path, s3):
    p = run_cli("build", "--bbox", "4.0,88.0,4.4,88.3", "--year", "2024", "-o", str(tmp_path / "x.vrt"),
                "--endpoint", s3.url)
    assert "3 tile(s) not in the manifest" in p.stderr and "grid_4.35_88.05" in p.stderr
    info = run_cli("info", str(tmp_path / "x.vrt")).stdout
    assert "tiles (9)" in info and "missing (3)" in info and "remote bytes" in info


def test_versions_and_years_never_mixed(tmp_path, s3):
    for args, tag in ((["--year", "2023"], "/2023/"), (["--year", "2024", "--dataset", "v1.1"], "/v1.1-cam/")):
        out = tmp_path / "y.vrt"
        run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", *args, "-o", str(out), "--endpoint", s3.url, "--overwrite")
        import json

        rec = json.loads((tmp_path / "y.tessvrt" / "tessvrt.json").read_text())
        assert len(rec["tiles"]) == 2 and all(tag in t["grid"] for t in rec["tiles"])


@given(st.floats(-180, 180), st.floats(-90, 90), st.floats(0.001, 10), st.floats(0.001, 10))
def test_bbox_parse_property(w, s, dw, dh):
    e, n = w + dw, s + dh
    text = f"{w!r},{s!r},{e!r},{n!r}"
    if e > 180 or n > 90:
        with pytest.raises(TessvrtError):
            BBox.parse(text)
        return
    box = BBox.parse(text)
    tiles = box.tiles()
    assert tiles
    for t in tiles:  # every selected cell intersects the box, and the corners' cells are selected
        west, south, east, north = t.bounds
        assert west <= e + 1e-9 and east >= w - 1e-9 and south <= n + 1e-9 and north >= s - 1e-9


@given(st.lists(st.integers(1, 128), min_size=1, max_size=20))
def test_band_list_parse_property(bands):
    from tessvrt.materialise import parse_bands

    assert parse_bands(",".join(map(str, bands))) == bands
    lo, hi = min(bands), max(bands)
    assert parse_bands(f"{lo}-{hi}") == list(range(lo, hi + 1))


@given(st.integers(-1799, 1799), st.integers(-899, 899))
def test_tile_parse_property(lon_c, lat_c):
    from tessvrt.build import parse_tile

    lon, lat = lon_c / 10 + 0.05, lat_c / 10 + 0.05
    if lon >= 180 or lat >= 90:
        return
    t = parse_tile(f"{lon:.2f},{lat:.2f}")
    assert abs(t.lon - round(lon, 2)) < 1e-9 and abs(t.lat - round(lat, 2)) < 1e-9


def _parsers():
    from tessvrt.build import parse_tile
    from tessvrt.materialise import parse_bands

    return [(parse_bands, "--bands"), (parse_tile, "--tile")]


@pytest.mark.parametrize(("parse", "option"), _parsers(), ids=["bands", "tile"])
@given(text=st.one_of(st.text(max_size=20), st.tuples(st.floats(), st.floats()).map(lambda p: f"{p[0]!r},{p[1]!r}")))
def test_parsers_never_crash(parse, option, text):
    """Any text or float pair (nan, inf, out of range) parses to something valid or is a TessvrtError
    naming the option, never another exception (found: --tile inf crashed, 200.05 was accepted)."""
    try:
        out = parse(text)
    except TessvrtError as exc:
        assert option in str(exc)
        return
    if option == "--tile":
        assert -180 < out.lon < 180 and -90 < out.lat < 90
    else:
        assert out and all(1 <= b <= 128 for b in out)


def test_build_disk_error_mid_write_is_clean(tmp_path, s3, monkeypatch):
    """A sidecar write failing part-way (disk full): one-line error, nothing left."""
    import errno
    import importlib

    from tessvrt import build

    build_mod = importlib.import_module("tessvrt.build")  # the module: tessvrt.build is the function

    calls = []

    def full(path, text):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    real = build_mod._write_text
    monkeypatch.setattr(build_mod, "_write_text", full)
    with pytest.raises(TessvrtError, match="No space left on device.*free disk space"):
        build(tmp_path / "x.vrt", bbox="4,88,4.3,88.3", year=2024, endpoint=s3.url)
    assert len(calls) > 3 and list(tmp_path.iterdir()) == []

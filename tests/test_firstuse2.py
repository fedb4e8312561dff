"""First use, round 2 (issue 22): help text, did-you-mean, materialise's missing output, the GDAL config
hint of info and doctor, sample --points errors and the swapped-axes hint, signals during start-up,
a full disk while the lock file is written, a GDAL_CONFIG_FILE symlink loop, and human_bytes."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, one_error, run_cli, small_disk, user_env

from tessvrt import errors
from tessvrt.errors import TessvrtError
from tessvrt.publish import TargetLock
from tessvrt.sample import read_points
from tessvrt.zarrstore import Point

BBOX = ["--bbox", "4.0,88.0,4.3,88.3", "--year", "2024"]
COMMANDS = ["build", "materialise", "sample", "gdal-config", "doctor", "info", "datasets"]


@pytest.fixture(scope="module")
def block(s3, tmp_path_factory) -> Path:
    vrt = tmp_path_factory.mktemp("firstuse2") / "block.vrt"
    run_cli("build", *BBOX, "-o", str(vrt), "--endpoint", s3.url)
    return vrt


# --- help ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_plain_metavars_and_h_works(command):
    env = {**os.environ, "COLUMNS": "200"}
    long, short = cli(command, "--help", env=env), cli(command, "-h", env=env)
    assert long.returncode == short.returncode == 0, (long.stderr, short.stderr)
    assert short.stdout == long.stdout and f"Usage: python -m tessvrt {command}" in long.stdout
    assert re.findall(r"<[a-z][a-z\[\], ]*>", long.stdout) == [], long.stdout  # <bool>, <list[str]>, <path>, <int>


def test_top_level_h_and_band_numbering():
    env = {**os.environ, "COLUMNS": "250"}
    assert cli("-h", env=env).stdout == cli("--help", env=env).stdout != ""
    for command in ("materialise", "sample"):
        out = " ".join(cli(command, "--help", env=env).stdout.split())
        assert "1-based, as GDAL numbers bands: band 1 is embedding_000, upstream's (0-based) band 0" in out, out


def test_materialise_vrt_argument_is_not_required():
    out = cli("materialise", "--help", env={**os.environ, "COLUMNS": "250"}).stdout
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("VRT "))
    assert "required" not in row, row
    assert "[VRT] [OUTPUT]" in out.splitlines()[0], out.splitlines()[0]


# --- did you mean, missing output ----------------------------------------------------------------------

def test_misspelt_dataset_gets_a_suggestion(tmp_path):
    err = one_error(cli("build", *BBOX, "-o", str(tmp_path / "x.vrt"), "--dataset", "v1.1-cambridge"))
    assert "--dataset 'v1.1-cambridge' is not a TESSERA dataset (did you mean v1.1-cam?)" in err, err
    err = one_error(cli("materialise", str(tmp_path / "x.tif"), "--dataset", "v1.1-dclimat", "--bbox", "0,51,0.1,51.1",
                        "--year", "2024", "--endpoint", "http://127.0.0.1:9"))
    assert "names no TESSERA Zarr store (did you mean v1.1-dclimate?)" in err, err
    err = one_error(cli("build", *BBOX, "-o", str(tmp_path / "x.vrt"), "--dataset", "nonsense"))
    assert "did you mean" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_materialise_without_output_says_so_in_one_line(block, tmp_path):
    os.chdir(tmp_path)
    err = one_error(cli("materialise", str(block)))
    assert err == f"tessvrt: error: the output .tif is missing: write `tessvrt materialise {block} out.tif`"
    assert "Zarr" not in err
    err = one_error(cli("materialise"))
    assert "no VRT and no output given" in err and "tessvrt materialise london.vrt out.tif" in err, err
    assert list(tmp_path.iterdir()) == []


# --- a new shell without GDAL_CONFIG_FILE ----------------------------------------------------------------

def test_info_and_doctor_say_gdal_lacks_the_settings_and_the_fix(s3, block, tmp_path):
    cache = tmp_path / "cache"
    env = user_env(tmp_path / "home", TESSVRT_CACHE_DIR=str(cache))
    p = cli("info", str(block), env=env)
    assert p.returncode == 0 and p.stdout.startswith(f"{block}: 175 x 3350 pixels"), p
    hint = p.stderr.strip().splitlines()
    assert len(hint) == 1, p.stderr
    assert "has no settings for this source" in hint[0] and 'GDAL says only "ERROR 4: Unable to open /vsis3/' in hint[0]
    assert f"run `tessvrt gdal-config --endpoint {s3.url}`" in hint[0], hint[0]

    # the README's sample config exists, but this shell did not export it: the fix is that export
    sample_rc = cache / "sample" / "gdalrc"
    run_cli("gdal-config", "--config-file", str(sample_rc), "--endpoint", s3.url)
    hint = cli("info", str(block), env=env).stderr.strip().splitlines()
    assert len(hint) == 1 and f"run `export GDAL_CONFIG_FILE={sample_rc}`" in hint[0], hint
    p = cli("doctor", str(block), env=env)
    assert p.returncode == 1 and f"fix:  export GDAL_CONFIG_FILE={sample_rc}" in p.stdout.splitlines(), p.stdout
    assert f"via {s3.url}" in p.stdout.splitlines()[0]  # the VRT's own endpoint, not AWS

    fixed = {**env, "GDAL_CONFIG_FILE": str(sample_rc)}  # the printed fix, applied
    p = cli("info", str(block), env=fixed)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = cli("doctor", str(block), env=fixed)
    assert p.returncode == 0 and "FAIL" not in p.stdout, p.stdout


# --- sample --points ---------------------------------------------------------------------------------

FEATURES = '{"type": "FeatureCollection", "features": [%s]}'
POINT = '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [4.05, 88.25]}}'


@pytest.mark.parametrize("name, data, message", [
    ("latin1.csv", "lon,lat,name\n4.05,88.25,Zürich\n".encode("latin-1"), "not UTF-8 text (byte 0xfc on line 2)"),
    ("garbage.csv", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text (byte 0x89 on line 1)"),
    ("nul.csv", b"lon,lat\n4.05,88.25\n\x00\x00\n", "a NUL byte on line 3"),
    ("word.csv", b"lon,lat\n4.05,88.25\n4.1,abc\n", "line 3 of {f}: lat is 'abc', not a number"),
    ("short.csv", b"lon,lat\n4.05\n", "line 2 of {f}: lat is nothing, not a number"),
    ("range.csv", b"lon,lat\n4.05,88.25\n200,1\n", "point 200,1 on line 3 of {f}: longitude must be within"),
    ("noheader.csv", b"4.05,88.25\n", "no lon,lat (or longitude,latitude or x,y) columns"),
    ("empty.geojson", (FEATURES % '{"type": "Feature", "geometry": {"type": "Point", "coordinates": []}}').encode(),
     "feature 1 of {f}: Point coordinates []: [] is not a position [lon, lat] of two numbers"),
    ("emptymulti.geojson",
     (FEATURES % (POINT + ', {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": []}}')).encode(),
     "feature 2 of {f}: MultiPoint coordinates [] hold no position [lon, lat]"),
    ("flatmulti.geojson", b'{"type": "MultiPoint", "coordinates": [4.05, 88.25]}',
     "feature 1 of {f}: MultiPoint coordinates [4.05, 88.25]: 4.05 is not a position"),
    ("bools.geojson", (FEATURES % '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [true, false]}}'
                       ).encode(), "feature 1 of {f}: Point coordinates [true, false]"),
    ("strings.geojson", b'{"type": "Point", "coordinates": ["4.05", "88.25"]}',
     'feature 1 of {f}: Point coordinates ["4.05", "88.25"]'),
    ("line.geojson", b'{"type": "LineString", "coordinates": [[4.05, 88.25], [4.1, 88.2]]}',
     "feature 1 of {f}: a LineString geometry, not a Point or MultiPoint"),
    ("nullgeom.geojson", (FEATURES % '{"type": "Feature", "geometry": null}').encode(),
     "feature 1 of {f}: null as geometry, not a Point or MultiPoint"),
    ("list.geojson", b"[4.05, 88.25]", "a JSON list, not a GeoJSON FeatureCollection of points"),
    ("deep.geojson", b"[" * 200_000 + b"]" * 200_000, "JSON nested too deeply to be a GeoJSON of points"),
    ("broken.geojson", b'{"type": "Point", ', "not JSON (Expecting property name"),
])
def test_points_file_errors_name_the_row_or_feature_and_value(name, data, message, tmp_path):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(TessvrtError) as exc:
        read_points(f)
    assert message.format(f=f) in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("name, data", [
    ("latin1.csv", "lon,lat,name\n4.05,88.25,Zürich\n".encode("latin-1")),
    ("deep.geojson", b"[" * 200_000 + b"]" * 200_000),
    ("empty.geojson", b'{"type": "Point", "coordinates": []}'),
])
def test_points_file_errors_from_the_cli_are_one_line(name, data, tmp_path):
    f = tmp_path / name
    f.write_bytes(data)
    err = one_error(cli("sample", "--dataset", "v1", "--format", "npy", "--year", "2024", "--points", str(f),
                        "--endpoint", "http://127.0.0.1:9"))
    assert err.startswith("tessvrt: error: --points ") and str(f) in err and "Traceback" not in err, err


def test_points_files_that_are_fine(tmp_path):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefflon,lat\n4.05,88.25\n4.15,88.15\n".encode())
    assert read_points(bom) == [(4.05, 88.25), (4.15, 88.15)]
    multi = tmp_path / "multi.geojson"
    multi.write_text(FEATURES % (POINT + ', {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": '
                                 '[[4.15, 88.15], [4.25, 88.05, 12.0]]}}'))
    assert read_points(multi) == [(4.05, 88.25), (4.15, 88.15), (4.25, 88.05)]


def test_sample_hints_when_points_look_like_lat_lon(s3):
    args = ["sample", "--dataset", "v1", "--format", "npy", "--year", "2024", "--bands", "1", "--endpoint", s3.url]
    p = run_cli(*args, "4.05,88.25", "88.25,4.05", "10,10")
    rows = p.stdout.splitlines()
    assert [r.split(",")[2] for r in rows[1:]] == ["valid", "outside", "outside"], p.stdout
    hint = p.stderr.strip().splitlines()
    assert hint == ["tessvrt: 1 of the 2 point(s) outside the data would be inside with longitude and latitude swapped "
                    "(e.g. 88.25,4.05 -> 4.05,88.25): points are LON,LAT, longitude first"], p.stderr
    p = run_cli(*args, "10,10")
    assert p.stderr == "", p.stderr


def test_swap_hint_needs_an_outside_point_that_swaps_inside():
    from tessvrt.sample import swap_hint

    inside = {(4.05, 88.25)}.__contains__
    pts = [Point(88.25, 4.05, "outside"), Point(4.05, 88.25, "valid"), Point(120.0, 4.05, "outside")]
    assert swap_hint(pts, lambda lon, lat: inside((lon, lat))) == (
        "1 of the 2 point(s) outside the data would be inside with longitude and latitude swapped "
        "(e.g. 88.25,4.05 -> 4.05,88.25): points are LON,LAT, longitude first")
    assert swap_hint([Point(88.25, 4.05, "water")], lambda lon, lat: True) is None  # not outside: no hint
    assert swap_hint([Point(120.0, 4.05, "outside")], lambda lon, lat: True) is None  # swapped lat 120 is no point


# --- signals during start-up ----------------------------------------------------------------------------

def _startup_floor() -> float:
    """Seconds before any of tessvrt's code can run: the interpreter's own start-up, here and now."""
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - t0)
    return max(times)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler (bit 15 of SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(ln.split()[1], 16) for ln in status.splitlines() if ln.startswith("SigCgt:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("command", ["materialise", "sample"])
def test_sigterm_during_start_up_exits_130_and_leaves_nothing(command, block, s3, tmp_path):
    """The handler is in place within ~0.1 s of the interpreter being up (before typer, numpy, pandas...), and
    a SIGTERM at that moment exits 130 with nothing written. Before, materialise installed it after its
    imports (~1-2 s) and sample never did: the default action killed them (exit -15)."""
    out = tmp_path / "out"
    out.mkdir()
    args = {"materialise": ["materialise", str(block), str(out / "x.tif"), "--bands", "1"],
            "sample": ["sample", "--dataset", "v1", "--format", "npy", "--year", "2024", "4.05,88.25",
                       "--endpoint", s3.url]}[command]
    floor = _startup_floor()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tessvrt", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=out)
    while not _catches_sigterm(proc.pid) and proc.poll() is None and time.monotonic() - t0 < 10:
        time.sleep(0.002)
    waited = time.monotonic() - t0
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=30)
    assert waited < floor + 0.25, f"SIGTERM handled only {waited:.2f} s after start (interpreter: {floor:.2f} s)"
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip() == "tessvrt: interrupted" or "interrupted" in err and len(err.strip().splitlines()) == 1, err
    assert stdout == "" and list(out.iterdir()) == []


# --- a full disk while the lock is written ------------------------------------------------------------------

@pytest.fixture
def full_tmpfs(tmp_path):
    """A 64 kB tmpfs with every block taken (inodes are still free: a file can be created, not written)."""
    with small_disk(tmp_path / "full", "64k") as mnt:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        yield mnt


def test_lock_file_on_a_full_disk(full_tmpfs):
    with pytest.raises(TessvrtError) as exc:
        with TargetLock([full_tmpfs / "x.tif"]):
            pass
    assert str(exc.value) == (f"cannot write the lock file {full_tmpfs / '.x.tif.lock.tessvrt-tmp'} (No space left on "
                              f"device); free disk space in {full_tmpfs} or choose another output")
    assert sorted(p.name for p in full_tmpfs.iterdir()) == ["filler"]


def test_materialise_on_a_full_disk_is_one_line_and_leaves_nothing(block, full_tmpfs):
    """materialise takes its lock before anything else: the pid's write is what meets the full disk."""
    err = one_error(cli("materialise", str(block), str(full_tmpfs / "x.tif"), "--bands", "1"))
    assert err == (f"tessvrt: error: cannot write the lock file {full_tmpfs / '.x.tif.lock.tessvrt-tmp'} (No space "
                   f"left on device); free disk space in {full_tmpfs} or choose another output"), err
    assert sorted(p.name for p in full_tmpfs.iterdir()) == ["filler"]


def test_lock_write_error_unit(tmp_path, monkeypatch):
    """The same path without a tmpfs: the pid's write fails with ENOSPC."""
    real = os.fdopen

    class Full:
        def __init__(self, fd: int, mode: str):
            self.f = real(fd, mode)

        def __enter__(self):
            return self

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    monkeypatch.setattr(os, "fdopen", Full)
    with pytest.raises(TessvrtError, match=r"cannot write the lock file .*\(No space left on device\)"):
        with TargetLock([tmp_path / "x.tif"]):
            pass
    assert list(tmp_path.iterdir()) == []


# --- GDAL_CONFIG_FILE that is a symlink loop --------------------------------------------------------------

def test_gdal_config_on_a_symlink_loop(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    env = user_env(tmp_path / "home", GDAL_CONFIG_FILE=str(a))
    err = one_error(cli("gdal-config", env=env))
    assert err == (f"tessvrt: error: {a} (GDAL_CONFIG_FILE names it) is a symbolic link that loops back on itself; "
                   "remove or repoint it, or choose --config-file")
    err = one_error(cli("gdal-config", "--config-file", str(a), "--print", env=env))
    assert f"{a} is a symbolic link that loops back on itself" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "home"]


# --- sizes in messages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n, text", [
    (0, "0 bytes"), (999, "999 bytes"), (1_000, "1 kB"), (45_300, "45 kB"), (999_499, "999 kB"), (999_999, "1.0 MB"),
    (52_400_000, "52.4 MB"), (999_949_999, "999.9 MB"), (999_999_999, "1.0 GB"), (1_640_000_000, "1.6 GB"),
    (2_500_000_000_000, "2,500.0 GB"),
])
def test_human_bytes(n, text):
    assert errors.human_bytes(n) == text


def test_json_of_info_names_the_source(block, s3):
    d = json.loads(run_cli("info", str(block), "--json").stdout)
    assert (d["source"], d["endpoint"], d["vsi"]) == ("source-coop", s3.url, "s3")

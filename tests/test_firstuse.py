"""What a new user meets in the first ten minutes (issue 14): --version and help, interrupts, the
"no tiles" message, renamed VRTs, gdal-config's read-ahead values, the config hint of build,
`tessvrt doctor` on an unconfigured and a configured HOME, and the sample service's folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import cli, one_error, run_cli, run_cli_many, user_env

import tessvrt
from tessvrt.gdalconfig import READ_AHEAD

BBOX = ["--bbox", "4.0,88.0,4.3,88.3", "--year", "2024"]


@pytest.fixture(scope="module")
def built(s3, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("firstuse")
    block, cross = out / "block.vrt", out / "cross.vrt"
    for p in run_cli_many([["build", *BBOX, "-o", str(block), "--endpoint", s3.url],
                           ["build", "--bbox", "5.8,88.0,6.2,88.2", "--year", "2024", "-o", str(cross), "--endpoint", s3.url]]):
        assert p.returncode == 0, p.stderr
    return {"block": block, "cross": cross}


# --- small items ---------------------------------------------------------------------------------

def test_version():
    p = cli("--version")
    assert p.returncode == 0
    assert re.fullmatch(rf"tessvrt {re.escape(tessvrt.__version__)} \(Python 3\.\d+\.\d+, rasterio \S+, GDAL 3\.\d+\.\d+\)",
                        p.stdout.strip()), p.stdout


def test_build_help_says_bbox_or_tile_is_required():
    p = cli("build", "--help", env={**os.environ, "COLUMNS": "250"})
    assert p.returncode == 0 and p.stdout.count("--bbox or --tile is required") == 2, p.stdout


def test_one_tile_is_singular_and_single_zone_has_no_warped_folder(s3, built, tmp_path):
    p = run_cli("build", "--tile", "4.05,88.25", "--year", "2024", "-o", str(tmp_path / "one.vrt"), "--endpoint", s3.url)
    assert p.stdout.strip() == f"wrote {tmp_path / 'one.vrt'} (1 tile)"
    for sidecar in (tmp_path / "one.tessvrt", built["block"].with_name("block.tessvrt")):
        assert not (sidecar / "warped").exists(), sorted(p.name for p in sidecar.iterdir())
    assert any((built["cross"].with_name("cross.tessvrt") / "warped").iterdir())  # cross-zone builds use it


def test_json_seconds_are_rounded(built, tmp_path):
    p = run_cli("materialise", str(built["block"]), str(tmp_path / "x.tif"), "--bands", "1", "--json")
    d = json.loads(p.stdout)
    assert d["seconds"] == round(d["seconds"], 2) and d["mb_per_s"] == round(d["mb_per_s"], 1), d
    assert re.search(r'"seconds": \d+(\.\d{1,2})?,', p.stdout), p.stdout


def test_a_zombie_is_not_alive():
    """A run killed with SIGKILL and not yet reaped by its parent must not keep its temporaries alive."""
    from tessvrt.publish import alive

    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not alive(proc.pid)  # a zombie: killed, its pid still taken until reaped
    finally:
        proc.wait()


class Silent:
    """A TCP server that accepts connections and never answers: a request to it waits until interrupted."""

    def __enter__(self) -> Silent:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []

        def serve() -> None:
            while True:
                try:
                    c, _ = self.sock.accept()
                except OSError:
                    return
                self.conns.append(c)
                self.accepted.set()

        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("command, sig", [
    ("build", signal.SIGINT), ("build", signal.SIGTERM), ("doctor", signal.SIGINT),
    ("materialise", signal.SIGINT), ("materialise", signal.SIGTERM),
])
def test_interrupt_exits_130(command, sig, built, tmp_path):
    """Ctrl-C (and SIGTERM where handled) while waiting on the network: exit 130, one line, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    with Silent() as silent:
        args = {"build": ["build", *BBOX, "-o", str(out / "x.vrt"), "--endpoint", silent.url],
                "materialise": ["materialise", str(built["block"]), str(out / "x.tif"), "--endpoint", silent.url],
                "doctor": ["doctor", "--endpoint", silent.url]}[command]
        proc = subprocess.Popen([sys.executable, "-m", "tessvrt", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert silent.accepted.wait(60), "the command never reached the server"
        time.sleep(0.2)
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"tessvrt {command} still running 20 s after the signal") from None
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    assert list(out.iterdir()) == []


# --- "no tiles" ----------------------------------------------------------------------------------

NO_TILES = [
    (["--bbox", "88.0,4.0,88.3,4.3"], "--bbox 88,4,88.3,4.3 read as W,S,E,N",
     "longitude comes first: --bbox 4,88,4.3,88.3 would select 9 tile(s) that exist"),
    (["--tile", "88.25,4.05"], "--tile 88.25,4.05 read as LON,LAT",
     "longitude comes first: --tile 4.05,88.25 would select 1 tile(s) that exist"),
    (["--bbox", "88.0,4.5,88.1,5.5"], "--bbox 88,4.5,88.1,5.5 read as W,S,E,N",
     "if you typed LAT,LON: longitude comes first, and --bbox 4.5,88,5.5,88.1 lies inside the dataset's coverage"),
    (["--bbox", "-30,40,-29.8,40.2"], "--bbox -30,40,-29.8,40.2 read as W,S,E,N", "try another --year or region"),
]


@pytest.fixture(scope="module")
def no_tiles(s3, tmp_path_factory) -> list[tuple[Path, subprocess.CompletedProcess]]:
    """Each NO_TILES build in its own folder, all in one interpreter: (folder, result) in NO_TILES' order."""
    folders = [tmp_path_factory.mktemp("notiles") for _ in NO_TILES]
    runs = run_cli_many([["build", *args, "--year", "2024", "-o", str(f / "x.vrt"), "--endpoint", s3.url]
                         for f, (args, _, _) in zip(folders, NO_TILES, strict=True)])
    return list(zip(folders, runs, strict=True))


@pytest.mark.parametrize("case", range(len(NO_TILES)), ids=[" ".join(a) for a, _, _ in NO_TILES])
def test_no_tiles_says_what_was_searched_and_whether_swapping_helps(case, no_tiles):
    _, searched, hint = NO_TILES[case]
    folder, p = no_tiles[case]
    line = one_error(p)
    assert "exist in v1 (TESSERA v1, variant 'vultr': the first global release) for 2024" in line, line
    assert searched in line and line.endswith(hint), line
    assert "lon 4.05..10.05, lat -88.15..88.25" in line, line
    assert list(folder.iterdir()) == []


# --- renamed VRTs --------------------------------------------------------------------------------

def test_renamed_or_copied_vrt_with_its_sidecar_works(built, tmp_path):
    block = built["block"]
    renamed = block.with_name("renamed.vrt")  # beside its sidecar, another name
    shutil.copy(block, renamed)
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    shutil.copy(block, elsewhere / "mine.vrt")
    shutil.copytree(block.with_name("block.tessvrt"), elsewhere / "block.tessvrt")
    zone = tmp_path / "zone.vrt"  # a per-zone VRT renamed: its window is the zone's, not the main one
    shutil.copy(built["cross"].with_name("cross_utm32n.vrt"), zone)
    shutil.copytree(built["cross"].with_name("cross.tessvrt"), tmp_path / "cross.tessvrt")
    try:
        ref, out = tmp_path / "ref.tif", tmp_path / "renamed.tif"
        runs = run_cli_many([["info", str(block), "--json"], ["info", str(renamed), "--json"],
                             ["info", str(elsewhere / "mine.vrt"), "--json"], ["info", str(zone)],
                             ["materialise", str(block), str(ref), "--bands", "1,64", "--quiet"],
                             ["materialise", str(renamed), str(out), "--bands", "1,64", "--quiet"]])
        assert [r.returncode for r in runs] == [0] * 6, [r.stderr for r in runs]
        want = json.loads(runs[0].stdout)
        for r in runs[1:3]:  # the renamed VRT and the copy elsewhere
            assert {**json.loads(r.stdout), "vrt": ""} == {**want, "vrt": ""}
        assert "cross_utm32n.vrt" in runs[3].stdout
        with rasterio.open(ref) as a, rasterio.open(out) as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True)
    finally:
        renamed.unlink()


def test_vrt_moved_without_its_sidecar_says_so(built, tmp_path):
    alone = tmp_path / "cross.vrt"
    shutil.copy(built["cross"], alone)
    for p in run_cli_many([["info", str(alone)], ["materialise", str(alone), str(tmp_path / "x.tif")]]):
        line = one_error(p)
        assert f"reads its pixels from cross.tessvrt/, which is not beside it in {tmp_path}" in line, line
        assert "move or copy cross.tessvrt/ together with the VRT" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cross.vrt"]


# --- gdal-config, build's hint, doctor -----------------------------------------------------------

def test_gdal_config_raises_a_small_read_ahead_and_says_so(tmp_path):
    rc = tmp_path / "gdalrc"
    rc.write_text("[configoptions]\nCPL_VSIL_CURL_CACHE_SIZE=16777216\nCPL_VSIL_CURL_CHUNK_SIZE=1048576\n")
    p = run_cli("gdal-config", "--config-file", str(rc), "--endpoint", "http://127.0.0.1:9")
    cache = READ_AHEAD["CPL_VSIL_CURL_CACHE_SIZE"]
    assert p.stderr.strip().splitlines() == [
        f"tessvrt: CPL_VSIL_CURL_CACHE_SIZE was 16777216, less than tessvrt's VRT reads need: raised to {cache}"]
    text = rc.read_text()
    assert f"CPL_VSIL_CURL_CACHE_SIZE={cache}\n" in text and "=16777216" not in text.replace("was 16777216", "")
    assert "CPL_VSIL_CURL_CHUNK_SIZE=1048576" in text  # larger than ours: the user's value stays
    p = run_cli("gdal-config", "--config-file", str(rc), "--endpoint", "http://127.0.0.1:9")
    assert p.stderr == "" and rc.read_text().count(f"CPL_VSIL_CURL_CACHE_SIZE={cache}") == 1
    assert "was 16777216" not in rc.read_text()  # said once; a second run has nothing to say
    big = str(2 * int(cache))
    rc.write_text(f"[configoptions]\nCPL_VSIL_CURL_CACHE_SIZE={big}\n")
    assert run_cli("gdal-config", "--config-file", str(rc)).stderr == ""
    assert f"CPL_VSIL_CURL_CACHE_SIZE={big}" in rc.read_text()


def test_build_hints_at_gdal_config_only_when_needed(s3, tmp_path):
    home = tmp_path / "home"
    bare = user_env(home)
    p = cli("build", *BBOX, "-o", str(tmp_path / "a.vrt"), "--endpoint", s3.url, env=bare)
    assert p.returncode == 0
    hint = p.stderr.strip().splitlines()
    assert len(hint) == 1 and f"run `tessvrt gdal-config --endpoint {s3.url}`" in hint[0] and "tessvrt doctor" in hint[0]
    assert str(home / ".gdal" / "gdalrc") in hint[0]
    cli("gdal-config", "--endpoint", "http://127.0.0.1:9", env=bare)  # configured for another endpoint
    p = cli("build", *BBOX, "-o", str(tmp_path / "b.vrt"), "--endpoint", s3.url, env=bare)
    assert "points /vsis3/us-west-2.opendata.source.coop at 127.0.0.1:9" in p.stderr, p.stderr
    cli("gdal-config", "--endpoint", s3.url, env=bare)
    p = cli("build", *BBOX, "-o", str(tmp_path / "c.vrt"), "--endpoint", s3.url, env=bare)
    assert p.returncode == 0 and p.stderr == ""


def doctor_lines(p: subprocess.CompletedProcess) -> dict[str, str]:
    """'ok'/'FAIL' by the first word of what was checked (config, source, rasterio, gdalinfo, QGIS, fix)."""
    out = {}
    for line in p.stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("ok", "FAIL", "fix:"):
            out[rest.strip().split()[0].rstrip(":") if status != "fix:" else "fix"] = status if status != "fix:" else rest.strip()
    return out


def test_doctor_on_an_unconfigured_then_a_configured_home(s3, tmp_path):
    env = user_env(tmp_path / "home")
    p = cli("doctor", "--endpoint", s3.url, env=env)
    got = doctor_lines(p)
    assert p.returncode == 1, p.stdout
    assert got["config"] == "FAIL" and got["source"] == "ok" and got["rasterio"] == "FAIL", p.stdout
    assert "does not exist" in p.stdout and "cannot read the object" in p.stdout
    assert got["fix"] == f"tessvrt gdal-config --endpoint {s3.url}", p.stdout
    gdalinfo, qgis = shutil.which("gdalinfo"), Path("/usr/bin/python3").exists()
    if gdalinfo:
        assert got["gdalinfo"] == "FAIL" and "ERROR 4: Unable to open /vsis3/" in p.stdout, p.stdout

    fixed = subprocess.run(["bash", "-c", got["fix"].replace("tessvrt ", f"{sys.executable} -m tessvrt ", 1)],
                           env=env, capture_output=True, text=True)  # the printed command, as the user runs it
    assert fixed.returncode == 0, fixed.stderr
    p = cli("doctor", "--endpoint", s3.url, env=env)
    got = doctor_lines(p)
    assert p.returncode == 0 and "FAIL" not in p.stdout and "fix" not in got, p.stdout
    assert got["config"] == got["source"] == got["rasterio"] == "ok"
    if gdalinfo:
        assert got["gdalinfo"] == "ok"
    if qgis and subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"], capture_output=True).returncode == 0:
        assert got["QGIS"] == "ok", p.stdout


def test_doctor_names_a_small_cache_and_an_unreachable_source(s3, tmp_path):
    rc = tmp_path / "gdalrc"
    env = user_env(tmp_path / "home", GDAL_CONFIG_FILE=str(rc))
    cli("gdal-config", "--endpoint", s3.url, env=env)
    rc.write_text(rc.read_text().replace(f"CPL_VSIL_CURL_CACHE_SIZE={READ_AHEAD['CPL_VSIL_CURL_CACHE_SIZE']}",
                                         "CPL_VSIL_CURL_CACHE_SIZE=16777216"))
    p = cli("doctor", "--endpoint", s3.url, env=env)
    got = doctor_lines(p)
    assert p.returncode == 1 and got["config"] == "FAIL" and got["rasterio"] == "FAIL", p.stdout
    assert "CPL_VSIL_CURL_CACHE_SIZE is 16777216" in p.stdout  # the file, and what rasterio's GDAL sees
    assert "CPL_VSIL_CURL_CACHE_SIZE is 16777216 here" in p.stdout
    assert got["fix"] == f"GDAL_CONFIG_FILE={rc} tessvrt gdal-config --endpoint {s3.url}"
    closed = f"http://127.0.0.1:{socket.create_server(('127.0.0.1', 0)).getsockname()[1]}"  # closed once collected
    t0 = time.monotonic()
    p = cli("doctor", "--endpoint", closed, env=env, timeout=60)
    assert p.returncode == 1 and doctor_lines(p)["source"] == "FAIL" and "cannot reach" in p.stdout, p.stdout
    assert time.monotonic() - t0 < 15


def test_doctor_probe_on_gdal_312_needs_the_allow_list(s3, tmp_path, monkeypatch):
    """GDAL >= 3.12 refuses remote raw bands unless allowed: the probe reads only with gdal-config's list."""
    from tessvrt import doctor
    from tessvrt.source.datasets import mirror
    from tessvrt.source.s3 import Endpoint, S3Location

    py312 = os.environ.get("TESSVRT_PY312")
    if not py312:
        if os.environ.get("CI"):
            raise AssertionError("TESSVRT_PY312 must be set in CI")
        pytest.skip("TESSVRT_PY312 not set (scripts/test.sh sets it)")
    rc = tmp_path / "gdalrc"
    run_cli("gdal-config", "--config-file", str(rc), "--endpoint", s3.url)
    m = mirror(None)
    vrt = doctor._probe_vrt(tmp_path, Endpoint.parse(s3.url).vsi_path(S3Location(m.bucket, m.manifest_key(
        next(d for d in doctor.DATASETS if d.npy == "v1")))))
    monkeypatch.setenv("GDAL_CONFIG_FILE", str(rc))
    check = doctor._judge(py312, doctor._python_gdal(py312, "rasterio", vrt), m, [], "fix")
    assert check.ok and "GDAL 3.12" in check.what, check
    rc.write_text("\n".join(ln for ln in rc.read_text().splitlines() if not ln.startswith(doctor.ALLOWED_SOURCE)))
    check = doctor._judge(py312, doctor._python_gdal(py312, "rasterio", vrt), m, [], "fix")
    assert not check.ok and "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE lacks" in check.detail, check
    assert "cannot read the object" in check.detail


# --- the sample service's folder -----------------------------------------------------------------

def test_sample_folder_is_built_once_and_reused(tmp_path):
    from tessvrt.testing import ensure_sample

    root, reused = ensure_sample(tmp_path)
    assert not reused and (tmp_path / "sample.json").is_file()
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.npy")}
    root2, reused = ensure_sample(tmp_path)
    assert reused and root2 == root and {p: p.stat().st_mtime_ns for p in root.rglob("*.npy")} == stamp
    (tmp_path / "sample.json").write_text('{"recipe": "older"}')  # another tessvrt's sample: rebuilt
    assert ensure_sample(tmp_path)[1] is False


def test_serve_on_a_taken_port_says_so(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "tessvrt.testing", "serve", "--port", str(port), "--dir",
                            str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.strip() == (
        f"tessvrt: error: port {port} is in use (is a sample service already running?); choose another with --port N")
    assert list(tmp_path.iterdir()) == []

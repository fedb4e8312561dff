"""Servers that stall, trickle, lie and vanish (issue 13 items 4, 5, 6, 8, 9, 12; issue 14 item 2).

Every server here is real: moto's S3 server, with tessvrt.testing.FaultProxy in front of it, a
BlackHole port that takes connections and never answers, a port nothing listens on, and the
project's FileServer for http(s) manifests. Deadline tests allow for a loaded 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TESSVRT, one_error, run_cli, small_disk

from tessvrt.testing import BlackHole, FaultProxy, FileServer, free_port

BBOX = ["--bbox", "4.0,88.0,4.3,88.3", "--year", "2024"]
HEADER_READS = 18  # materialise's first requests: one npy header per object (9 tiles x 2)


@pytest.fixture(scope="module")
def block(s3, tmp_path_factory):
    """The 9-tile block VRT and the SHA-256 of its clean materialised COG."""
    d = tmp_path_factory.mktemp("network")
    vrt = d / "block.vrt"
    run_cli("build", *BBOX, "-o", str(vrt), "--endpoint", s3.url)
    run_cli("materialise", str(vrt), str(d / "clean.tif"), "--quiet")
    return vrt, sha256(d / "clean.tif")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_lines(p) -> list[str]:
    """The stderr lines of a failed run, asserting there is exactly one error and no traceback."""
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("tessvrt: error:")]
    assert p.returncode != 0 and len(errs) == 1 and "Traceback" not in p.stderr, p.stderr
    return errs


def no_tifs(folder: Path) -> list[str]:
    return [f for f in os.listdir(folder) if f.endswith(".tif") or "tessvrt-tmp" in f]


def materialise_via(url: str, vrt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """materialise through url; a run that hangs fails the test instead of hanging it."""
    return subprocess.run([*TESSVRT, "materialise", str(vrt), str(out), "--quiet", "--endpoint", url, *extra],
                          capture_output=True, text=True, timeout=300)


# --- item 4 and issue 14 item 2: deadlines ----------------------------------------------------

@pytest.mark.parametrize("kind", ["refused", "blackhole"])
def test_unreachable_endpoint_fails_within_15s_with_one_line(kind, tmp_path, monkeypatch):
    """A host that refuses connections, or takes them and never answers: one line within 15 s
    (the manifest download is the first request of build; cold cache)."""
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(tmp_path / "cache"))
    with BlackHole() as hole:
        url = hole.url if kind == "blackhole" else f"http://127.0.0.1:{free_port()}"
        t0 = time.monotonic()
        p = run_cli("build", *BBOX, "-o", str(tmp_path / "x.vrt"), "--endpoint", url, check=False)
        took = time.monotonic() - t0
    (err,) = error_lines(p)
    assert "manifest" in err and "127.0.0.1" in err and "--endpoint" in err, err
    assert took <= 15, f"gave up after {took:.1f} s"
    assert not list(tmp_path.glob("x*")), os.listdir(tmp_path)
    others = [ln for ln in p.stderr.strip().splitlines() if not ln.startswith("tessvrt: error:")]
    assert all("fetching" in ln for ln in others), p.stderr  # at most the line saying what it fetches
    print(f"{kind}: gave up after {took:.1f} s: {err}")


def test_materialise_from_unreachable_endpoint_fails_within_15s(block, tmp_path):
    vrt, _ = block
    with BlackHole() as hole:
        t0 = time.monotonic()
        p = materialise_via(hole.url, vrt, tmp_path / "out.tif")
        took = time.monotonic() - t0
    err = one_error(p, None)
    assert "127.0.0.1" in err and took <= 15, (took, err)
    assert not no_tifs(tmp_path)


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*TESSVRT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for(cond, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "the run never reached the point to interrupt"
        time.sleep(0.05)


def stop_and_time(proc: subprocess.Popen, sig: int) -> tuple[float, str]:
    """Send sig; seconds until the process has exited (killed after 30 s: the test then fails)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return time.monotonic() - t0, err


@pytest.mark.parametrize("fault, skip, sig", [
    ("stall", 0, signal.SIGTERM),  # the npy header reads hang
    ("stall", HEADER_READS, signal.SIGTERM),  # tile row reads hang
    ("stall_body", HEADER_READS, signal.SIGINT),
    ("trickle", HEADER_READS, signal.SIGTERM),
], ids=["header-stall-term", "rows-stall-term", "rows-stallbody-int", "rows-trickle-term"])
def test_interrupt_takes_effect_within_2s_while_the_server_hangs(fault, skip, sig, block, tmp_path):
    vrt, _ = block
    with FaultProxy(vrt_endpoint(block), {fault: 1.0}, skip=skip, trickle=(16, 1.0)) as proxy:
        proc = start("materialise", str(vrt), str(tmp_path / "out.tif"), "--quiet", "--endpoint", proxy.url)
        wait_for(lambda: proxy.injected[fault] >= 4)
        time.sleep(0.5)  # well inside the wait
        took, err = stop_and_time(proc, sig)
    assert proc.returncode != 0 and "interrupted" in err and "Traceback" not in err, err
    assert took <= 2.0, f"{fault}: took {took:.2f} s to stop"
    assert not no_tifs(tmp_path), os.listdir(tmp_path)
    print(f"{fault}: stopped {took:.2f} s after the signal")


def vrt_endpoint(block) -> str:
    """The S3 server the block VRT was built against (its record names it)."""
    rec = json.loads(block[0].with_suffix(".tessvrt").joinpath("tessvrt.json").read_text())
    return rec["endpoint"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_build_interrupted_within_2s_while_the_manifest_download_hangs(sig, s3, tmp_path):
    with FaultProxy(s3.url, {"stall": 1.0}) as proxy:
        proc = start("build", *BBOX, "-o", str(tmp_path / "x.vrt"), "--endpoint", proxy.url,
                     env={"TESSVRT_CACHE_DIR": str(tmp_path / "cache")})
        wait_for(lambda: proxy.injected["stall"] >= 1)
        time.sleep(0.5)
        took, err = stop_and_time(proc, sig)
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert took <= 2.0, f"took {took:.2f} s to stop"
    assert not list(tmp_path.glob("*.vrt")) and not list(tmp_path.glob(".x*")), os.listdir(tmp_path)


def test_stalls_and_trickles_are_survived_with_identical_output(block, tmp_path):
    """Requests that hang (no reply, half a body then silence, a body at 64 bytes/s) are abandoned
    after seconds and retried: the output is bit-identical to a clean run's."""
    vrt, want = block
    script = {3: "stall", HEADER_READS + 2: "stall", HEADER_READS + 5: "stall_body", HEADER_READS + 9: "trickle"}
    with FaultProxy(vrt_endpoint(block), script=script) as proxy:
        t0 = time.monotonic()
        p = materialise_via(proxy.url, vrt, tmp_path / "out.tif")
        took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert all(proxy.injected[f] for f in ("stall", "stall_body", "trickle")), proxy.injected
    assert sha256(tmp_path / "out.tif") == want
    print(f"hangs {dict(proxy.injected)} over {len(proxy.log)} requests survived in {took:.0f} s")


# --- item 5 and item 12: replies that are not the range asked for ------------------------------

@pytest.mark.parametrize("fault, needle", [
    ("wrong_start", "instead of bytes"),
    ("ignore_range", "ignored the byte range"),
])
def test_reply_that_is_not_the_range_asked_for_is_refused(fault, needle, block, tmp_path):
    """Every ranged read answered with other bytes (206 for a shifted range; 200 with the whole
    object): refused with one line saying so, no output - never dequantised."""
    vrt, _ = block
    with FaultProxy(vrt_endpoint(block), {fault: 1.0}, skip=HEADER_READS) as proxy:  # the tile row reads
        p = materialise_via(proxy.url, vrt, tmp_path / "out.tif")
    err = one_error(p, None)
    assert needle in err and "refus" in err, err
    assert proxy.injected[fault] >= 6
    assert not no_tifs(tmp_path), os.listdir(tmp_path)
    if fault == "ignore_range":
        assert "Range" in err and "--endpoint" in err, err


@pytest.mark.parametrize("fault", ["wrong_start", "ignore_range"])
def test_occasional_wrong_range_is_retried_with_identical_output(fault, block, tmp_path):
    vrt, want = block
    script = dict.fromkeys((5, 19, 25, 40, 41, 42), fault)  # header reads and row reads
    with FaultProxy(vrt_endpoint(block), script=script) as proxy:
        p = materialise_via(proxy.url, vrt, tmp_path / "out.tif")
    assert p.returncode == 0, p.stderr
    assert proxy.injected[fault] == len(script), proxy.injected
    assert sha256(tmp_path / "out.tif") == want


# --- item 6: outages -------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [5, 20])
def test_server_outage_mid_materialise_is_survived(seconds, block, tmp_path):
    """The server vanishes (connections refused, open ones dropped) for 5 s / 20 s after the
    header checks, while tile rows are read: the output is bit-identical to a clean run's."""
    vrt, want = block
    with FaultProxy(vrt_endpoint(block), outage_after=HEADER_READS + 6, outage=seconds) as proxy:
        t0 = time.monotonic()
        p = materialise_via(proxy.url, vrt, tmp_path / "out.tif")
        took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert proxy.outages == 1 and took >= seconds
    assert sha256(tmp_path / "out.tif") == want
    print(f"{seconds} s outage survived; run took {took:.0f} s")


def test_outage_longer_than_the_retry_budget_is_one_line(block, tmp_path, monkeypatch):
    """TESSVRT_RETRY_SECONDS shortens the budget (default 75 s) so the test is quick."""
    vrt, _ = block
    monkeypatch.setenv("TESSVRT_RETRY_SECONDS", "3")
    with FaultProxy(vrt_endpoint(block), outage_after=HEADER_READS + 6, outage=60) as proxy:
        t0 = time.monotonic()
        p = materialise_via(proxy.url, vrt, tmp_path / "out.tif")
        took = time.monotonic() - t0
    err = one_error(p, None)
    assert "for 3 s" in err or "for 4 s" in err or "retried" in err, err
    assert took < 20 and proxy.outages == 1
    assert not no_tifs(tmp_path)


def test_manifest_download_survives_an_outage(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(tmp_path / "cache"))
    with FaultProxy(s3.url, outage_after=1, outage=4) as proxy:
        p = run_cli("build", *BBOX, "-o", str(tmp_path / "x.vrt"), "--endpoint", proxy.url, check=False)
    assert p.returncode == 0, p.stderr
    assert proxy.outages == 1


# --- item 12: malformed endpoints ------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:port", "http://", "ftp://127.0.0.1:9000",
                                 "http://127.0.0.1:9000\n", "127.0.0.1:9000"])
@pytest.mark.parametrize("command", ["build", "materialise", "gdal-config"])
def test_malformed_endpoint_is_one_line(url, command, block, tmp_path):
    args = {
        "build": ["build", *BBOX, "-o", str(tmp_path / "x.vrt")],
        "materialise": ["materialise", str(block[0]), str(tmp_path / "x.tif")],
        "gdal-config": ["gdal-config", "--config-file", str(tmp_path / "gdalrc")],
    }[command]
    p = run_cli(*args, "--endpoint", url, check=False)
    err = one_error(p, None)
    assert "--endpoint" in err, err
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


# --- item 9 and item 12: the manifest cache --------------------------------------------------

def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def build_ok(url: str, out: Path, cache: Path, monkeypatch, *extra: str) -> subprocess.CompletedProcess:
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(cache))
    p = run_cli("build", *BBOX, "-o", str(out), "--endpoint", url, *extra, check=False)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return p


@pytest.mark.parametrize("damage", ["empty", "not json", "no etag", "other data", "data gone"])
def test_damaged_cache_metadata_is_no_cache(damage, s3, tmp_path, monkeypatch):
    """Whatever state a crash or full disk left the cache in, the next build works (and repairs it)."""
    cache = tmp_path / "cache"
    build_ok(s3.url, tmp_path / "a.vrt", cache, monkeypatch)
    meta = next(p for p in cache_files(cache) if p.suffix == ".json")
    data = meta.with_suffix(".parquet")
    {"empty": lambda: meta.write_text(""),
     "not json": lambda: meta.write_text("{\"etag\": "),
     "no etag": lambda: meta.write_text("{}"),
     "other data": lambda: data.write_bytes(data.read_bytes()[:-10]),
     "data gone": lambda: data.unlink()}[damage]()
    build_ok(s3.url, tmp_path / "b.vrt", cache, monkeypatch)
    assert json.loads((tmp_path / "b.tessvrt" / "tessvrt.json").read_text())["tiles"] == \
        json.loads((tmp_path / "a.tessvrt" / "tessvrt.json").read_text())["tiles"]
    assert json.loads(meta.read_text())["etag"] and data.is_file()


@pytest.mark.parametrize("how", ["a file", "read-only"])
def test_uncreatable_cache_dir_build_goes_on_without_a_cache(how, s3, tmp_path, monkeypatch):
    if how == "a file":
        cache = tmp_path / "cachefile"
        cache.write_text("")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        cache = ro / "cache"
    p = build_ok(s3.url, tmp_path / "x.vrt", cache, monkeypatch)
    note = [ln for ln in p.stderr.splitlines() if "cache" in ln]
    assert len(note) == 1 and "TESSVRT_CACHE_DIR" in note[0], p.stderr


def test_disk_full_while_caching_leaves_a_usable_cache(s3, tmp_path, monkeypatch, bucket_root):
    """The cache on a full file system: the build still works (without caching), no empty or
    half-written file is left to break a later build, and a later build with space caches."""
    with small_disk(tmp_path / "small", "256k") as small:
        size = (bucket_root / "tessera/tessera/npy/v1/manifest.parquet").stat().st_size
        pages = -(-size // 4096)
        filler = small / "filler"
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        filler.write_bytes(b"\0" * (free - pages * 4096))  # room for the data, not for its metadata
        cache = small / "cache"
        p = build_ok(s3.url, tmp_path / "a.vrt", cache, monkeypatch)
        assert any("cache" in ln for ln in p.stderr.splitlines()), p.stderr
        for f in cache_files(cache):
            assert f.stat().st_size > 0 and not f.name.startswith("."), f  # no empty file, no stray temporary
        build_ok(s3.url, tmp_path / "b.vrt", cache, monkeypatch)  # still full: works again
        filler.unlink()
        build_ok(s3.url, tmp_path / "c.vrt", cache, monkeypatch)
        metas = [f for f in cache_files(cache) if f.suffix == ".json"]
        assert len(metas) == 1 and json.loads(metas[0].read_text())["etag"]


# --- item 8 (manifest and endpoint side): no secret stored -----------------------------------

SECRET = "X-Amz-Signature=deadbeefsecret&X-Amz-Security-Token=tok3nsecret"


def secrets_in(folder: Path) -> list[str]:
    found = []
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            found += [f"{f}: {s}" for s in (b"deadbeefsecret", b"tok3nsecret", b"pa55word") if s in data]
    return found


def test_presigned_manifest_url_leaves_no_secret_in_the_cache(bucket_root, s3, tmp_path, monkeypatch):
    with FileServer(bucket_root.parent) as web:
        url = f"{web.url.replace('//', '//reader:pa55word@')}/{bucket_root.name}/tessera/tessera/npy/v1/manifest.parquet?{SECRET}"
        p = build_ok(s3.url, tmp_path / "x.vrt", tmp_path / "cache", monkeypatch, "--manifest", url)
    assert not secrets_in(tmp_path / "cache"), secrets_in(tmp_path / "cache")
    assert "pa55word" not in p.stderr and "deadbeefsecret" not in p.stderr
    assert any("not stored" in ln for ln in p.stderr.splitlines()), p.stderr


def test_endpoint_credentials_are_not_stored(s3, tmp_path, monkeypatch):
    url = s3.url.replace("//", "//reader:pa55word@")
    p = build_ok(url, tmp_path / "x.vrt", tmp_path / "cache", monkeypatch)
    assert not secrets_in(tmp_path), secrets_in(tmp_path)
    assert any(ln.startswith("tessvrt: --endpoint: using http://127.0.0.1") for ln in p.stderr.splitlines()), p.stderr


def test_presigned_manifest_url_leaves_no_secret_in_outputs(bucket_root, s3, tmp_path, monkeypatch):
    with FileServer(bucket_root.parent) as web:
        url = f"{web.url}/{bucket_root.name}/tessera/tessera/npy/v1/manifest.parquet?{SECRET}"
        build_ok(s3.url, tmp_path / "x.vrt", tmp_path / "cache", monkeypatch, "--manifest", url)
    run_cli("materialise", str(tmp_path / "x.vrt"), str(tmp_path / "x.tif"), "--quiet")
    assert not secrets_in(tmp_path), secrets_in(tmp_path)


# --- issue 14 item 2: long network steps say what they fetch ---------------------------------

def test_slow_manifest_download_says_what_it_fetches(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("TESSVRT_SLOW_STEP", "2")  # the default (conftest raises it for the other tests)
    with FaultProxy(s3.url, {"delay": 1.0}, delay=3.0) as proxy:
        p = build_ok(proxy.url, tmp_path / "x.vrt", tmp_path / "cache", monkeypatch)
        lines = [ln for ln in p.stderr.splitlines() if "fetching" in ln]
        assert len(lines) == 1 and "manifest" in lines[0] and proxy.url in lines[0], p.stderr
        code = ("import sys; from tessvrt.source import s3; s3.set_progress(None); from tessvrt import build; "
                f"build(sys.argv[1], bbox='4.0,88.0,4.3,88.3', year=2024, endpoint={proxy.url!r})")
        monkeypatch.setenv("TESSVRT_CACHE_DIR", str(tmp_path / "cache2"))
        q = subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.vrt")], capture_output=True, text=True)
    assert q.returncode == 0 and q.stderr == "", q.stderr  # silenced (what cli.py does for --quiet)

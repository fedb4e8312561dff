"""Session fixtures: a generated sample bucket served by a real S3 server on 127.0.0.1, and the
GDAL configuration file written by `tessvrt gdal-config` that every GDAL reader in the tests uses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tessvrt.testing import LIVE, MotoServer, _sample_lock, build_sample, env_with_gdalrc

HERE = Path(__file__).parent
TESSVRT = [sys.executable, "-m", "tessvrt"]


@pytest.fixture(scope="session")
def bucket_root(tmp_path_factory) -> Path:
    """The sample bucket's files, built once per run: pytest-xdist workers share one folder (the first to
    take the lock builds it; tests only read it), so a second worker does not pay the build again."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build_sample(tmp_path_factory.mktemp("bucket"))
    shared = tmp_path_factory.getbasetemp().parent / "bucket"  # the run's folder, above each worker's own
    with _sample_lock(shared):
        if not (shared / "built").exists():
            build_sample(shared)
            (shared / "built").touch()
    return shared / LIVE.bucket


@pytest.fixture(scope="session")
def s3(bucket_root):
    with MotoServer() as srv:
        srv.load(bucket_root)
        yield srv


@pytest.fixture(scope="session")
def gdalrc(s3, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gdal") / "gdalrc"
    run_cli("gdal-config", "--endpoint", s3.url, "--config-file", str(path))
    return path


# Modules whose tests assert deadlines and signal timings in seconds: scripts/test.sh runs them (marker serial)
# in one process before the rest run on xdist workers, so another worker's load cannot stretch them.
SERIAL = {"test_network.py", "test_safety.py"}


# The longest modules first (summed durations of a full run, longest first): xdist's --dist loadfile hands whole
# modules to workers in collection order, so starting with the longest keeps one worker from finishing a long
# module alone at the end. Modules not listed keep their order after these.
LONGEST_FIRST = ["test_region.py", "test_build_gti.py", "test_zarr_vrt.py", "test_read.py", "test_zarr.py",
                 "test_collection.py", "test_faults.py", "test_qgis.py", "test_overview.py", "test_hostile.py",
                 "test_preview.py", "test_zarr_region.py", "test_firstuse.py", "test_zarr_hostile.py", "test_oracle.py",
                 "test_materialise.py", "test_readme.py", "test_lazy.py"]


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.name in SERIAL:
            item.add_marker(pytest.mark.serial)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's own order is kept


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    # a manifest fetch slower than 2 s (a loaded CI machine) would add "fetching the manifest ..." to output the
    # tests compare line by line; the tests of that line set it back (test_network)
    monkeypatch.setenv("TESSVRT_SLOW_STEP", "60")


def manifest_path(bucket_root: Path, dataset: str = "v1") -> Path:
    """The sample bucket's manifest of one dataset, at its real key."""
    return bucket_root / "tessera" / "tessera" / "npy" / dataset / "manifest.parquet"


@contextlib.contextmanager
def replaced(s3, bucket_root: Path, uri: str, data: bytes):
    """The object at uri holds data for the duration (keys are derived, so a damaged copy must sit at
    the real key); the original is put back afterwards."""
    original = (bucket_root / uri.split("/", 3)[3]).read_bytes()
    s3.put(uri, data)
    try:
        yield
    finally:
        s3.put(uri, original)


@contextlib.contextmanager
def deleted(s3, bucket_root: Path, uri: str):
    """The object at uri is gone from the bucket for the duration, then put back."""
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3.client.delete_object(Bucket=bucket, Key=key)
    try:
        yield
    finally:
        s3.put(uri, (bucket_root / key).read_bytes())


def _cli_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TESSVRT_CACHE_DIR", str(Path(env.get("TMPDIR", "/tmp")) / "tessvrt-test-cache"))
    return env


def block_and_cross_vrts(s3, out: Path) -> dict[str, Path]:
    """The sample's two standard builds in out: "block", 3x3 tiles in one zone, and "cross", across zones 31/32."""
    block, cross = out / "block.vrt", out / "cross.vrt"
    run_cli("build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(block), "--endpoint", s3.url)
    run_cli("build", "--bbox", "5.8,88.0,6.2,88.2", "--year", "2024", "-o", str(cross), "--endpoint", s3.url)
    return {"block": block, "cross": cross}


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of `size` (mount's size=, e.g. 256k) mounted at folder (made here) while the block runs: a real
    full disk. Skips the test where it cannot be mounted (needs root)."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def interrupt_when(proc: subprocess.Popen, folder: Path, pattern: str, sig: int, *, after: float = 0.0,
                   wait: float = 60.0) -> tuple[int, float, str]:
    """Send sig to proc once folder.glob(pattern) finds something (the command is mid-write; `after` seconds
    later), and time its exit: (exit code, seconds from the signal to the exit, stderr)."""
    import time

    deadline = time.monotonic() + wait
    while not list(folder.glob(pattern)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(after)
    assert proc.poll() is None, f"the command ended before it could be interrupted (waited for {pattern})"
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - t0, err or ""


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment with a private HOME and none of this machine's GDAL/AWS settings."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GDAL_", "CPL_"))}
    return {**env, "HOME": str(home), **extra}


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command as a user runs it, in the given environment (run_cli adds the tests' GDAL settings)."""
    return subprocess.run([*TESSVRT, *args], capture_output=True, text=True, env=env or dict(os.environ),
                          timeout=timeout)


def one_error(p: subprocess.CompletedProcess, code: int | None = 1) -> str:
    """The one line of a failed run whose whole stderr is that line (exit code `code`; None: any but 0)."""
    lines = p.stderr.strip().splitlines()
    assert (p.returncode != 0 if code is None else p.returncode == code) and len(lines) == 1 \
        and lines[0].startswith("tessvrt: error:"), (p.returncode, p.stderr)
    return lines[0]


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*TESSVRT, *args], capture_output=True, text=True, env=_cli_env())
    if check and p.returncode != 0:
        raise AssertionError(f"tessvrt {' '.join(args)} failed:\n{p.stderr}")
    return p


def run_cli_many(argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Command lines run one after another through the CLI's entry point in one interpreter (tests/cli_batch.py):
    one start-up instead of one per command, for tests of what a command says and writes, not of its process
    (signals, exit on a lost process and start-up time keep run_cli)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cli-batch-") as tmp:
        results = Path(tmp) / "results.json"
        p = subprocess.run([sys.executable, str(HERE / "cli_batch.py"), str(results)], input=json.dumps(argvs),
                           capture_output=True, text=True, env=_cli_env())
        assert p.returncode == 0 and results.is_file(), p.stdout[-3000:] + p.stderr[-3000:]
        got = json.loads(results.read_text())
    return [subprocess.CompletedProcess([*TESSVRT, *a], r["returncode"], r["stdout"], r["stderr"])
            for a, r in zip(argvs, got, strict=True)]


def interpreters() -> list:
    """Python interpreters whose rasterio wheels bring different GDALs (3.10 here, 3.12 in CI's venv)."""
    out = [pytest.param(sys.executable, id="py311-gdal3.10")]
    py312 = os.environ.get("TESSVRT_PY312")
    out.append(pytest.param(py312, id="py312-gdal3.12",
                            marks=pytest.mark.skipif(not py312 and not os.environ.get("CI"),
                                                     reason="TESSVRT_PY312 not set (scripts/test.sh sets it)")))
    return out


def vrt_readers() -> list:
    """interpreters() plus GDAL 3.13 (PyPI gdal-wheel 3.13.3 in a python3.12 venv, TESSVRT_PY313): `osgeo`
    bindings with VRT, GTiff, COG and curl but no Zarr or GTI driver, so only for npy VRT reads."""
    py313 = os.environ.get("TESSVRT_PY313")
    return [*interpreters(), pytest.param(py313, id="py312-gdal3.13",
                                          marks=pytest.mark.skipif(not py313 and not os.environ.get("CI"),
                                                                   reason="TESSVRT_PY313 not set (scripts/test.sh sets it)"))]


def gdal_read(python: str, vrt: Path, gdalrc: Path, windows: list, bands: list[int] | None, tmp: Path):
    """Read windows through GDAL in a separate interpreter, configured only by the gdalrc (rasterio, or the
    osgeo bindings for TESSVRT_PY313's gdal-wheel)."""
    out = tmp / f"read_{abs(hash((python, str(vrt), json.dumps(windows))))}.npz"
    spec = json.dumps({"windows": windows, "bands": bands})
    script = "gdal_read_osgeo.py" if python and python == os.environ.get("TESSVRT_PY313") else "gdal_read.py"
    p = subprocess.run([python, str(HERE / script), str(vrt), str(out), spec],
                       capture_output=True, text=True, env=env_with_gdalrc(gdalrc))
    assert p.returncode == 0, p.stderr
    d = np.load(out)
    return json.loads(str(d["meta"])), [d[f"w{i}"] for i in range(len(windows))]


def assert_same(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    if not same.all():
        idx = tuple(np.argwhere(~same)[0])
        raise AssertionError(f"{what}: {int((~same).sum())} of {same.size} pixels differ; first at {idx}: "
                             f"got {got[idx]!r}, expected {ref[idx]!r}")


@pytest.fixture(scope="session")
def gdal_bin() -> str:
    exe = shutil.which("gdal_translate")
    if not exe and not os.environ.get("CI"):
        pytest.skip("Debian gdal-bin not installed (.ci/run installs it)")
    return exe

"""What the benchmarks share: the realistic 51.5 N region, a local file server for it in its own process
(so serving does not share the measured process's GIL), a VRT of it, and upstream's Zarr store of it.

A script imports it after `sys.path.insert(0, <scripts folder>)`; it is not part of the package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tessvrt.grid import Tile
from tessvrt.testing import SampleTile, build_sample, free_port

HERE = Path(__file__).resolve().parent
TESSVRT = [sys.executable, "-m", "tessvrt"]
TILES = [SampleTile(Tile.at(lon, lat)) for lat in (51.55, 51.45) for lon in (0.05, 0.15, 0.25)]  # 6 tiles near London
BBOX = "0.02,51.42,0.28,51.58"  # inside TILES


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    """tessvrt.testing.FileServer over root's parent, in its own process: (process, URL) once it answers."""
    port = free_port()
    code = ("import sys, time; from pathlib import Path; from tessvrt.testing import FileServer\n"
            "s = FileServer(Path(sys.argv[1]), int(sys.argv[2])).__enter__()\nwhile True: time.sleep(3600)")
    p = subprocess.Popen([sys.executable, "-c", code, str(root.parent), str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/" + root.name + "/tessera/tessera/npy/v1/manifest.parquet", timeout=1).read(1)
            return p, url
        except OSError:
            time.sleep(0.1)
    p.terminate()
    raise RuntimeError("file server did not start")


@contextlib.contextmanager
def served_sample(tiles: list[SampleTile], prefix: str, keep: Path | None = None
                  ) -> Iterator[tuple[Path, Path, str, subprocess.Popen]]:
    """(work folder, bucket root, URL, server process): the tiles' sample bucket served locally, tessvrt's cache
    in the work folder; the server is stopped and the folder removed afterwards (unless it is `keep`)."""
    work = keep or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TESSVRT_CACHE_DIR"] = str(work / "cache")
    root = build_sample(work / "bucket", tiles)
    srv, url = serve(root)
    try:
        yield work, root, url, srv
    finally:
        srv.terminate()
        srv.wait(10)
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def build_vrt(vrt: Path, url: str, tiles: list[SampleTile]) -> Path:
    """`tessvrt build` of exactly the tiles (by --tile), as a user runs it."""
    picked = [a for t in tiles for a in ("--tile", f"{t.tile.lon},{t.tile.lat}")]
    subprocess.run([*TESSVRT, "build", *picked, "--year", "2024", "-o", str(vrt), "--endpoint", url, "--overwrite"],
                   check=True, capture_output=True)
    return vrt


def gdal_env(url: str) -> dict[str, str]:
    """An environment in which GDAL's /vsis3/ reads the local server (none of this machine's GDAL/AWS settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GDAL_", "CPL_"))}
    host = url.split("//", 1)[1]
    env.update(AWS_NO_SIGN_REQUEST="YES", AWS_S3_ENDPOINT=host, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE",
               AWS_REGION="us-west-2", GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE="ALL", GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR")
    return env


def upstream_store(work: Path, root: Path, oracle: str, tiles: list[SampleTile]) -> None:
    """Upstream's zarr-init + zarr-fill (geotessera 0.11, in the oracle venv) of the tiles into the bucket's
    zarr/v1, so the npy and Zarr paths read the same pixels; skipped when it is there already."""
    dst = root / "tessera" / "tessera" / "zarr" / "v1"
    if (dst / "zarr.json").exists():
        return
    t0 = time.perf_counter()
    cmd = [oracle, str(HERE.parent / "tests" / "oracle_geotessera.py"), "--root", str(root), "--dataset", "v1",
           "--year", "2024", "--work", str(work / "upstream"), "--out", str(work / "upstream.npz"), "--no-reader"]
    subprocess.run(cmd, check=True, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    shutil.copytree(work / "upstream" / "store.zarr", dst)
    print(f"upstream zarr-init + zarr-fill of {len(tiles)} tiles: {time.perf_counter() - t0:.1f} s")

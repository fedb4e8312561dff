"""Offline demo: sample bucket on a local S3 server -> tessvrt gdal-config -> build -> read -> materialise.

Folders are reused, not made per run: the sample bucket in $TESSVRT_CACHE_DIR/sample (default
~/.cache/tessvrt/sample, built once, rebuilt only when tessvrt's sample changes) and the demo's own
files in $TESSVRT_DEMO_DIR (default ~/.cache/tessvrt/demo), replaced by each run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tessvrt.source.manifest import cache_dir
from tessvrt.testing import SAMPLE_BBOX, MotoServer, _sample_lock, ensure_sample, env_with_gdalrc, sample_dir


def main() -> None:
    work = Path(os.environ.get("TESSVRT_DEMO_DIR") or cache_dir() / "demo")
    work.mkdir(parents=True, exist_ok=True)
    folder = sample_dir()
    with _sample_lock(folder):
        root, reused = ensure_sample(folder)
    print(f"sample bucket: {root} ({'reused' if reused else 'built'})")
    print(f"demo files:    {work} (replaced by each run)")
    exe = [sys.executable, "-m", "tessvrt"]
    with MotoServer() as srv:
        srv.load(root)
        print(f"sample bucket served by a local S3 server at {srv.url}")
        gdalrc = work / "gdalrc"  # not ~/.gdal/gdalrc: this server is gone when the demo ends
        subprocess.run([*exe, "gdal-config", "--endpoint", srv.url, "--config-file", str(gdalrc)], check=True)
        vrt = work / "sample.vrt"
        subprocess.run([*exe, "build", "--bbox", SAMPLE_BBOX, "--year", "2024", "-o", str(vrt), "--overwrite",
                        "--endpoint", srv.url], check=True, env=env_with_gdalrc(gdalrc))
        subprocess.run([*exe, "info", str(vrt)], check=True)
        code = (
            "import rasterio, numpy as np, sys\n"
            "from rasterio.windows import Window\n"
            "with rasterio.open(sys.argv[1]) as d:\n"
            "    a = d.read([1, 2, 3], window=Window(10, 500, 64, 64))\n"
            "    print(f'{d.count} bands {d.dtypes[0]} {d.width}x{d.height} {d.crs}; window mean',"
            " np.nanmean(a, axis=(1, 2)).round(4), 'valid', round(float(np.isfinite(a).mean()), 3))\n"
        )
        subprocess.run([sys.executable, "-c", code, str(vrt)], check=True, env=env_with_gdalrc(gdalrc))
        cog = work / "sample.tif"
        subprocess.run([*exe, "materialise", str(vrt), str(cog), "--overwrite"], check=True)
    print(f"done: {cog} is a float32 COG. The server has stopped; to keep one running and try gdalinfo, QGIS, "
          "info and materialise by hand, run `python -m tessvrt.testing serve` (README, section Use)")


if __name__ == "__main__":
    main()

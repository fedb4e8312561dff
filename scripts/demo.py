"""Offline demo: sample bucket on a local S3 server -> tessvrt gdal-config -> build -> read -> materialise."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tessvrt.testing import MotoServer, build_sample, env_with_gdalrc


def main() -> None:
    work = Path(os.environ.get("TESSVRT_DEMO_DIR") or tempfile.mkdtemp(prefix="tessvrt-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TESSVRT_CACHE_DIR", str(work / "cache"))
    print(f"demo folder: {work}")
    root = build_sample(work / "bucket")
    exe = [sys.executable, "-m", "tessvrt"]
    with MotoServer() as srv:
        srv.load(root)
        print(f"sample bucket served by a local S3 server at {srv.url}")
        gdalrc = work / "gdalrc"
        subprocess.run([*exe, "gdal-config", "--endpoint", srv.url, "--config-file", str(gdalrc)], check=True)
        vrt = work / "sample.vrt"
        subprocess.run([*exe, "build", "--bbox", "4.0,88.0,4.3,88.3", "--year", "2024", "-o", str(vrt),
                        "--endpoint", srv.url], check=True)
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
    print(f"done: {cog} is a float32 COG; open {vrt} with GDAL_CONFIG_FILE={gdalrc} (the server has stopped)")


if __name__ == "__main__":
    main()

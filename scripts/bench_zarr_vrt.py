"""Zarr VRT (Kerchunk references, build --format zarr) against the npy VRT of the same region, read by GDAL 3.12.

The store is upstream's own (geotessera 0.11's zarr-init/zarr-fill, as scripts/bench_zarr.py makes it) from the
same local npy tiles the npy VRT reads, so both VRTs hold the same pixels (the script checks they are equal).
Both are served by tessvrt.testing.FileServer in its own process behind a counting proxy (FaultProxy, no
faults); GDAL reads through /vsis3/ with gdal-config's read-ahead settings (tessvrt.gdalconfig.READ_AHEAD),
each read in a fresh process (cold cache), as a QGIS view or a script would:
  (a) baseline: npy VRT, 3 bands of a 512 x 512 window;  (b) Zarr VRT, the same;
  (c) npy VRT, all 128 bands of it;                       (d) Zarr VRT, the same.
Prints seconds, requests, remote MB and the Zarr/npy ratios.

usage: TESSVRT_ORACLE_PY=.venv-oracle/bin/python TESSVRT_PY312=.venv312/bin/python \
       python scripts/bench_zarr_vrt.py [--keep DIR] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

import tessvrt
from tessvrt.gdalconfig import READ_AHEAD
from tessvrt.testing import FaultProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import BBOX, TILES, gdal_env, served_sample, upstream_store  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZE = 512
_READ = r"""
import json, sys, time
import numpy as np, rasterio
from rasterio.windows import Window
vrt, out, x, y, n, bands = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]), int(sys.argv[6])
t0 = time.perf_counter()
with rasterio.open(vrt) as d:
    a = d.read(list(range(1, bands + 1)), window=Window(x, y, n, n))
np.save(out, a)
print(json.dumps({"s": time.perf_counter() - t0, "gdal": rasterio.__gdal_version__}))
"""


def window_in(vrt: Path, x: float, y: float) -> tuple[int, int]:
    """Pixel offset in vrt of the map point (x, y) (top-left of the read)."""
    with rasterio.open(vrt) as d:
        col, row = ~d.transform * (x, y)
    return round(col), round(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=2, help="reads of each case; the fastest is reported")
    a = ap.parse_args()
    oracle, py312 = os.environ.get("TESSVRT_ORACLE_PY"), os.environ.get("TESSVRT_PY312")
    if not oracle or not py312:
        print("TESSVRT_ORACLE_PY and TESSVRT_PY312 must be set (scripts/test.sh makes both venvs)", file=sys.stderr)
        return 2
    rows: dict[str, dict] = {}
    with served_sample(TILES, "tessvrt-bench-zarr-vrt-", a.keep) as (work, root, url, _):
        upstream_store(work, root, oracle, TILES)
        with FaultProxy(url) as proxy:
            npy, zarr = work / "npy.vrt", work / "zarr.vrt"
            tessvrt.build(npy, bbox=BBOX, year=2024, endpoint=proxy.url, overwrite=True)
            t0 = time.perf_counter()
            n0 = len(proxy.log)
            tessvrt.build(zarr, bbox=BBOX, year=2024, dataset="v1", format="zarr", endpoint=proxy.url, overwrite=True)
            build_s, build_req = time.perf_counter() - t0, len(proxy.log) - n0
            with rasterio.open(zarr) as d:  # a window in the middle of the Zarr VRT, on the map
                cx, cy = d.transform * ((d.width - SIZE) // 2, (d.height - SIZE) // 2)
            env = {**gdal_env(proxy.url), **READ_AHEAD}
            arrays = {}
            for label, vrt, bands in (("(a) npy VRT, 3 bands", npy, 3), ("(b) Zarr VRT, 3 bands", zarr, 3),
                                      ("(c) npy VRT, 128 bands", npy, 128), ("(d) Zarr VRT, 128 bands", zarr, 128)):
                x, y = window_in(vrt, cx, cy)
                best = None
                for i in range(a.repeat):
                    out = work / f"{label[1]}_{i}.npy"
                    n0 = len(proxy.log)
                    t0 = time.perf_counter()
                    p = subprocess.run([py312, "-c", _READ, str(vrt), str(out), str(x), str(y), str(SIZE), str(bands)],
                                       capture_output=True, text=True, env=env, check=True)
                    wall = time.perf_counter() - t0
                    log = proxy.log[n0:]
                    r = {"s": wall, "read_s": json.loads(p.stdout)["s"], "requests": len(log),
                         "mb": sum(e[4] for e in log) / 1e6, "gdal": json.loads(p.stdout)["gdal"]}
                    if best is None or r["s"] < best["s"]:
                        best = r
                    arrays[label] = np.load(out)
                rows[label] = best
    a3, b3 = arrays["(a) npy VRT, 3 bands"], arrays["(b) Zarr VRT, 3 bands"]
    differ = ~((a3 == b3) | (np.isnan(a3) & np.isnan(b3))).all(axis=0)
    drows = np.flatnonzero(differ.any(axis=1))
    same128 = np.array_equal(arrays["(c) npy VRT, 128 bands"][:3], a3, equal_nan=True) and \
        np.array_equal(arrays["(d) Zarr VRT, 128 bands"][:3], b3, equal_nan=True)
    load = os.getloadavg()
    print(f"region {BBOX}: a {SIZE} x {SIZE} window in the middle, GDAL {rows['(a) npy VRT, 3 bands']['gdal']} (rasterio), "
          f"/vsis3/ to a local file server, gdal-config's read-ahead, best of {a.repeat}, cold process each")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores shared)")
    print(f"Zarr build (references): {build_s:.2f} s, {build_req} requests")
    print(f"{'case':<26} {'s':>7} {'read s':>7} {'requests':>9} {'remote MB':>10} {'x npy':>6}")
    for label, r in rows.items():
        base = rows["(a) npy VRT, 3 bands" if "3 bands" in label else "(c) npy VRT, 128 bands"]
        print(f"{label:<26} {r['s']:7.2f} {r['read_s']:7.2f} {r['requests']:9d} {r['mb']:10.1f} {r['s'] / base['s']:6.2f}")
    # upstream's zarr-fill pastes whole tiles, the last written winning where their UTM boxes overlap; the npy VRT
    # takes each pixel from the tile whose cell holds it (SPEC 1): they may differ there and only there
    print(f"pixels differing (Zarr VRT vs npy VRT): {int(differ.sum()):,} of {differ.size:,}"
          + (f", all in window rows {drows[0]}-{drows[-1]} (the overlap of the 51.55 and 51.45 tile rows)" if drows.size else "")
          + f"; 128-band reads equal the 3-band ones: {same128}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if same128 else 1


if __name__ == "__main__":
    sys.exit(main())

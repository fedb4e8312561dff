"""build's GTI form (-o NAME.gti.gpkg) on synthetic manifests of growing size: build time, peak memory, files
written, and the time GDAL takes to open the result (a `gdalinfo`: open, size, bands, CRS, tags), which
must not grow with the tile count.

Baseline, same run: the same boxes built as one .vrt (up to the 50,000-tile cap) and opened the same way.
Each build runs in its own process (peak RSS from wait4); each open in a fresh interpreter, 5 opens,
the first not counted (it pays the imports' page faults). No network: the manifests' sizes fit the
formula geometry, so build reads no header, and opening reads no block. Open times are the fastest of
the last 4 opens: on a loaded machine the median carries tens of ms of scheduling noise.

usage: python scripts/bench_build_gti.py [--out DIR] [--sizes 2400,12000,48000] [--vrt-max 12000]
       python scripts/bench_build_gti.py --cols 400 --lon0 -10 --lat0 36 --sizes 136000 --vrt-max 0
       (the synthetic Europe of tests/test_lazy.py: 400 x 340 tiles in 7 zones)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tessvrt.grid import Tile, tile_grids

COLS = 120  # tiles across: lon -6..6, UTM zones 30 and 31 (--cols/--lon0/--lat0 change it)
LON0, LAT0 = -6.0, 20.0

OPEN = """
import json, sys, time
import rasterio
times = []
for _ in range(5):
    t0 = time.perf_counter()
    with rasterio.open(sys.argv[1]) as d:
        info = (d.width, d.height, d.count, d.crs.to_epsg(), d.dtypes[0], len(d.tags()))
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "info": info, "gdal": rasterio.__gdal_version__}))
"""


def manifest(path: Path, rows: int) -> Path:
    lon_i = (np.arange(COLS) + round(LON0 * 10)) * 10 + 5
    lat_i = (np.arange(rows) + round(LAT0 * 10)) * 10 + 5
    tiles = [Tile(int(a), int(b)) for b in lat_i for a in lon_i]
    hw = np.array([g.width * g.height for g in tile_grids(tiles)], np.int64)
    pq.write_table(pa.table({
        "version": ["1.0"] * len(tiles), "variant": ["vultr"] * len(tiles), "year": np.full(len(tiles), 2024),
        "lon": [t.lon for t in tiles], "lat": [t.lat for t in tiles], "grid_size": 128 + hw * 128,
        "scales_size": 128 + hw * 4}), path)
    return path


def build_in_child(out: Path, rows: int, m: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one build in its own process."""
    bbox = f"{LON0},{LAT0},{LON0 + COLS / 10},{LAT0 + rows / 10}"
    code = (f"from tessvrt import build; build({str(out)!r}, bbox={bbox!r}, year=2024, manifest={str(m)!r}, "
            "max_tiles=10**9 if {gti} else None)").replace("{gti}", str(out.name.endswith(".gti.gpkg")))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code])
    _, status, ru = os.wait4(p.pid, 0)
    took = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build of {out} failed")
    return took, ru.ru_maxrss / 1024


def open_times(python: str, path: Path) -> tuple[float, dict]:
    p = subprocess.run([python, "-c", OPEN, str(path)], capture_output=True, text=True, check=True)
    got = json.loads(p.stdout)
    return float(np.min(got["times"][1:])), got


def folder_bytes(root: Path, names: list[str]) -> tuple[int, int]:
    files = [p for n in names for p in ([root / n] if (root / n).is_file() else (root / n).rglob("*")) if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    global COLS, LON0, LAT0  # the region's shape, used by manifest() and build_in_child()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sizes", default="2400,12000,48000", help="tile counts (multiples of 120)")
    ap.add_argument("--vrt-max", type=int, default=12000, help="largest size also built as one .vrt (the baseline)")
    ap.add_argument("--cols", type=int, default=COLS, help="tiles across")
    ap.add_argument("--lon0", type=float, default=LON0)
    ap.add_argument("--lat0", type=float, default=LAT0)
    a = ap.parse_args()
    COLS, LON0, LAT0 = a.cols, a.lon0, a.lat0
    out = a.out or Path(tempfile.mkdtemp(prefix="bench_gti_"))
    out.mkdir(parents=True, exist_ok=True)
    pythons = [sys.executable] + ([os.environ["TESSVRT_PY312"]] if os.environ.get("TESSVRT_PY312") else [])
    print(f"writing in {out}; load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} "
          "(shared machine)")
    first: dict[str, float] = {}
    for n in (int(s) for s in a.sizes.split(",")):
        rows = n // COLS
        m = manifest(out / f"m{n}.parquet", rows)
        forms = [("gti", out / f"g{n}.gti.gpkg")] + ([("vrt", out / f"v{n}.vrt")] if n <= a.vrt_max else [])
        opened: dict[str, dict[str, float]] = {}
        for form, path in forms:
            took, rss = build_in_child(path, rows, m)
            stem = path.name.removesuffix(".gti.gpkg").removesuffix(".vrt")
            tops = sorted(p.name for p in out.glob(f"{stem}*") if p.is_file() and p.suffix in (".vrt", ".gpkg"))
            tops = [t for t in tops if "_utm" in t] or tops  # per-zone files of both forms (one zone: the file)
            nfiles, nbytes = folder_bytes(out, [p.name for p in out.glob(f"{stem}*") if p.is_file()] + [f"{stem}.tessvrt"])
            opened[form] = {}
            for py in pythons:
                for top in tops:
                    t, got = open_times(py, out / top)
                    opened[form][f"{top} GDAL {got['gdal']}"] = t
            print(f"{n:>7,} tiles {form}: build {took:7.1f} s ({took / n * 1000:.2f} ms/tile), peak RSS {rss:7,.0f} MB "
                  f"({rss * 1e3 / n:.0f} kB/tile), {nfiles:,} files, {nbytes / 1e9:.2f} GB")
            for k, t in opened[form].items():
                key = f"{form} {k.split('_', 1)[1]}"
                first.setdefault(key, t)
                print(f"    open {k}: {t * 1000:8.1f} ms (x{t / first[key]:.2f} of the smallest size)")
        if "vrt" in opened:  # per zone and GDAL: the GTI's open time over the VRT's
            for k, v in opened["vrt"].items():
                g = opened["gti"].get(k.replace(".vrt", ".gti.gpkg").replace(f"v{n}_", f"g{n}_"))
                if g is not None:
                    print(f"    ratio GTI/VRT open, {k.split('_', 1)[1]}: {g / v:.3f}")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if a.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()

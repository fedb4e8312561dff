"""Materialise from a Zarr store against the npy path and against geotessera's own export, on one region.

The store is upstream's own: geotessera 0.11's zarr-init/zarr-fill (tests/oracle_geotessera.py, in the
oracle venv) build it from the same local npy tiles that the npy path reads, so both paths read the
same pixels. Both are served from 127.0.0.1 by tessvrt.testing.FileServer in its own process.

(a) baseline, the npy path: tessvrt build + materialise of the VRT (in this process)
(b) tessvrt materialise --dataset v1 --bbox ... --year 2024 from the Zarr store (in this process)
(c) geotessera's GeoTesseraZarr.export_geotiffs of the same bbox, reading the store from local disk
    (no network: favours it), one float32 LZW GeoTIFF per zone (no overviews)
Prints seconds, MB/s of float32 output, requests and remote MB, and the ratios against (a).

usage: TESSVRT_ORACLE_PY=.venv-oracle/bin/python python scripts/bench_zarr.py [--keep DIR] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

import tessvrt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import BBOX, TILES, served_sample, upstream_store  # noqa: E402

HERE = Path(__file__).resolve().parent


def remote(r: dict) -> str:
    return "-" if r["remote_mb"] is None else f"{r['remote_mb']:.1f}"


def f32_mb(files: list) -> float:
    n = 0
    for f in files:
        with rasterio.open(f) as d:
            n += d.width * d.height * d.count * 4
    return n / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each path; the fastest is reported")
    a = ap.parse_args()
    oracle = os.environ.get("TESSVRT_ORACLE_PY")
    if not oracle:
        print("TESSVRT_ORACLE_PY is not set (scripts/test.sh makes the geotessera venv)", file=sys.stderr)
        return 2
    with served_sample(TILES, "tessvrt-bench-zarr-", a.keep) as (work, root, url, _):
        upstream_store(work, root, oracle, TILES)
        store = root / "tessera" / "tessera" / "zarr" / "v1"
        rows = {}
        vrt = work / "npy.vrt"
        tessvrt.build(vrt, bbox=BBOX, year=2024, endpoint=url, overwrite=True)
        for label, run in (
            ("(a) npy: materialise VRT", lambda out: tessvrt.materialise(vrt, out, overwrite=True, endpoint=url)),
            ("(b) zarr: materialise --dataset", lambda out: tessvrt.materialise(out, dataset="v1", bbox=BBOX, year=2024,
                                                                                 endpoint=url, overwrite=True)),
        ):
            best = None
            for i in range(a.repeat):
                out = work / f"{label[1]}_{i}.tif"
                res = run(out)
                if best is None or res.seconds < best.seconds:
                    best = res
            rows[label] = {"s": best.seconds, "mb": best.output_float32_bytes / 1e6, "remote_mb": best.remote_bytes / 1e6,
                           "requests": getattr(best, "requests", 0) or None, "files": len(best.files)}
        npz = work / "export.npz"
        best_s = None
        for i in range(a.repeat):
            folder = work / f"export_{i}"
            shutil.rmtree(folder, ignore_errors=True)
            subprocess.run([oracle, str(HERE.parent / "tests" / "oracle_geotessera.py"), "--store", str(store),
                            "--year", "2024", "--out", str(npz), "--reader-bbox", BBOX, "--export-dir", str(folder)],
                           check=True, capture_output=True)
            meta = json.loads(str(np.load(npz)["meta"]))
            ex = meta["export"][0]
            if best_s is None or ex["seconds"] < best_s:
                best_s = ex["seconds"]
                files = ex["files"]
        rows["(c) geotessera export_geotiffs"] = {"s": best_s, "mb": f32_mb(files), "remote_mb": None, "requests": None,
                                                  "files": len(files)}
    base = rows["(a) npy: materialise VRT"]
    print(f"region {BBOX}, {len(TILES)} tiles of ~711 x 1123 px, all 128 bands, best of {a.repeat}")
    print(f"{'path':<34} {'s':>6} {'MB f32':>8} {'MB/s':>7} {'x (a)':>6} {'requests':>9} {'remote MB':>10} files")
    for label, r in rows.items():
        rate = r["mb"] / r["s"]
        print(f"{label:<34} {r['s']:6.2f} {r['mb']:8.0f} {rate:7.1f} {rate / (base['mb'] / base['s']):6.2f} "
              f"{r['requests'] or '-':>9} {remote(r):>10} {r['files']}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

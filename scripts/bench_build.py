"""Build speed on a synthetic 10,000-tile manifest (cached locally): seconds per 1,000 tiles.

Baseline, same process: deciding tile ownership the naive way (projecting every pixel centre),
which is what build would cost without tracing cell edges; printed as a ratio.

Each timed build writes a new output after `sync` (not timed): ~0.9 GB of VRT per 10,000 tiles is
left dirty in the page cache, and without the sync the next build would pay for flushing the
previous one, which a user running one build does not. Nothing is deleted until the end: on ext4,
creating a file skips every inode freed in the last 1-5 minutes (kernel `recently_deleted`), so
right after deleting ~10,000 files creating as many costs up to 10x more (measured: 0.05 -> 0.45 ms
per file). Run the bench 5 minutes after any mass delete on the same disk (or its own last run).
Rebuilding over an existing output deletes the old sidecar: timed last.

usage: python scripts/bench_build.py [--out DIR]   (DIR: where the builds are written; default a temp dir)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tessvrt import build
from tessvrt.grid import Tile, owner_cells, tile_grids
from tessvrt.source.datasets import DATASETS
from tessvrt.source.manifest import cache_dir
from tessvrt.testing import LIVE

LON0, LON1 = 0.0, 6.0  # one UTM zone, 60 tiles wide
LAT0 = 40.0
V1 = DATASETS[0]


def synthetic_manifest() -> Path:
    path = cache_dir() / "bench" / "manifest_10k_live.parquet"
    if path.is_file():
        return path
    tiles = [Tile(i * 10 + 5, j * 10 + 5) for j in range(400, 400 + 167) for i in range(0, 60)]
    grids = tile_grids(tiles)
    rows = []
    for t, g in zip(tiles, grids, strict=True):
        gkey, skey = LIVE.tile_keys(V1, 2024, t)  # named through the gateway's bucket, as published manifests may
        rows.append({"version": "1.0", "variant": "vultr", "year": 2024, "lon": t.lon, "lat": t.lat,
                     "grid_path": f"s3://tessera/{gkey.removeprefix('tessera/')}",
                     "scales_path": f"s3://tessera/{skey.removeprefix('tessera/')}",
                     "grid_size": 128 + g.width * g.height * 128, "scales_size": 128 + g.width * g.height * 4})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder to write the builds in (a temp folder is made inside it)")
    args = ap.parse_args()
    manifest = synthetic_manifest()
    out = Path(tempfile.mkdtemp(prefix="tessvrt-bench-", dir=args.out))
    print(f"manifest: {manifest} (10,020 tiles, cached); writing in {out}")
    print("each size built 3 times; min and median seconds")
    print(f"{'tiles':>7} {'min s':>7} {'median s':>9} {'s/1000 (min)':>13} {'s/1000 (median)':>16}")
    per_k = []
    try:
        for rows in (17, 42, 84, 167):  # 60 tiles per row of cells
            n_lat = rows / 10
            times = []
            bbox = f"{LON0 + 1e-6},{LAT0 + 1e-6},{LON1 - 1e-6},{LAT0 + n_lat - 1e-6}"
            for rep in range(3):
                os.sync()
                t0 = time.perf_counter()
                res = build(out / f"b{rows}_{rep}.vrt", bbox=bbox, year=2024, manifest=str(manifest))
                times.append(time.perf_counter() - t0)
            n = len(res.tiles)
            best, med = min(times), statistics.median(times)
            per_k.append(med / n * 1000)
            print(f"{n:>7} {best:>7.2f} {med:>9.2f} {best / n * 1000:>13.3f} {per_k[-1]:>16.3f}")
        # floor: only creating the files this build wrote (same count, same bytes), on the same disk
        files = [f for f in res.sidecar.rglob("*") if f.is_file()] + [res.vrt]
        nbytes = sum(f.stat().st_size for f in files)
        chunk = b"x" * (nbytes // len(files))
        floor_dir = out / "floor"
        floor_dir.mkdir()
        os.sync()
        t0 = time.perf_counter()
        for i in range(len(files)):
            (floor_dir / f"f{i}.vrt").write_bytes(chunk)
        floor = (time.perf_counter() - t0) / len(res.tiles) * 1000
        print(f"floor (writing {len(files)} files, {nbytes / 1e6:.0f} MB, nothing computed): {floor:.3f} s/1000 tiles; "
              f"build / floor: {per_k[-1] / floor:.2f}")
        os.sync()
        t0 = time.perf_counter()
        build(res.vrt, bbox=bbox, year=2024, manifest=str(manifest), overwrite=True)
        rebuild = (time.perf_counter() - t0) / len(res.tiles) * 1000
        print(f"rebuild over the last output (old sidecar deleted): {rebuild:.3f} s/1000 tiles")
        # baseline: per-pixel ownership for a few tiles, extrapolated per 1,000 tiles
        sample = [Tile(i * 10 + 5, 4505) for i in range(0, 60, 12)]
        t0 = time.perf_counter()
        for g in tile_grids(sample):
            xs, ys = g.window.pixel_centres()
            X, Y = np.meshgrid(xs, ys)
            owner_cells(g.epsg, X, Y)
        base = (time.perf_counter() - t0) / len(sample) * 1000
        print(f"baseline (per-pixel ownership only): {base:.2f} s/1000 tiles")
        print(f"ratio baseline / build (median) at 10k tiles: {base / per_k[-1]:.1f}x; linearity (s/1000 at 10k vs 1k): "
              f"{per_k[-1] / per_k[0]:.2f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

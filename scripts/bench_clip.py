"""What --clip costs: materialise of the same region with and without it, in one run, alternating.

Four realistic tiles near London (51.5 N, ~1,100 x 700 px each) on a local range-capable file server; the
region is a polygon whose edge (a zig-zag) crosses every tile, so every chunk pays the per-pixel test
(the worst case: chunks wholly inside or outside are decided from their outline). Prints seconds,
MB/s of float32 output, and the ratio clip / no clip (median of the rounds).

usage: python scripts/bench_clip.py [--rounds 3] [--bands 1-128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import served_sample  # noqa: E402

from tessvrt.grid import Tile  # noqa: E402
from tessvrt.testing import SampleTile  # noqa: E402

TILES = [SampleTile(Tile.at(lon, lat)) for lat in (51.55, 51.45) for lon in (0.05, 0.15)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bands", default="1-128")
    args = ap.parse_args()
    from tessvrt.build import build
    from tessvrt.materialise import materialise

    with served_sample(TILES, "tessvrt-bench-clip-") as (t, _, url, _):
        xs = np.linspace(0.0, 0.2, 41)
        zig = [(x, 51.5 + (0.03 if k % 2 else -0.03)) for k, x in enumerate(xs)]
        poly = shapely.Polygon([(0.0, 51.4), (0.2, 51.4), *zig[::-1]])
        import pyogrio

        region = t / "zig.geojson"
        pyogrio.raw.write(region, np.array([shapely.to_wkb(poly)], object), [], [], geometry_type="Polygon",
                          crs="EPSG:4326")
        vrt = t / "r.vrt"
        build(vrt, year=2024, bbox="0.0,51.4,0.2,51.6", endpoint=url)
        times: dict[bool, list[float]] = {False: [], True: []}
        mb = 0.0
        for r in range(args.rounds):
            for clip in (False, True):
                out = t / f"o_{r}_{clip}.tif"
                t0 = time.perf_counter()
                res = materialise(vrt, out, bands=args.bands, region=region if clip else None, clip=clip)
                times[clip].append(time.perf_counter() - t0)
                mb = res.output_float32_bytes / 1e6
                out.unlink()
        a, b = statistics.median(times[False]), statistics.median(times[True])
        print(f"region: 4 tiles, {mb:,.0f} MB float32 ({args.bands} bands), edge crossing every tile")
        print(f"no clip: {a:6.2f} s  {mb / a:7.1f} MB/s   (rounds: {', '.join(f'{v:.2f}' for v in times[False])})")
        print(f"--clip : {b:6.2f} s  {mb / b:7.1f} MB/s   (rounds: {', '.join(f'{v:.2f}' for v in times[True])})")
        print(f"ratio clip / no clip: {b / a:.2f}")
        print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()

"""Cost of `tessvrt.sample` on a Zarr store as the number of points grows: time, peak memory, requests.

Writes the sample store (tessvrt.zarrsample, upstream's 4096-px shards and 32-px chunks) into a bucket
folder served by tessvrt.testing.FileServer (a fast local S3-style server: the server is not what is
measured), then samples N random points in a child process per run, so each run's peak RSS is its own.
Two spreads: `dense` (all points in the store's data rectangles: many points per chunk) and `spread`
(uniform over both zone grids: many distinct chunks, most of them never written). The baseline is the
first N (default 1,000); memory beyond the result (N x bands float32) is what queues and caches hold.

usage: python scripts/bench_sample.py [--points 1000 1000000] [--bands 128 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tessvrt.testing import LIVE, FileServer
from tessvrt.zarrsample import ZONES

STORE = "v1.1-dclimate"


def points(n: int, spread: str, seed: int = 0) -> list[tuple[float, float]]:
    """n lon/lat points inside the store's zone groups (data rectangles only, or anywhere on the grids)."""
    from pyproj import Transformer

    rng = np.random.default_rng(seed)
    out = []
    for i, z in enumerate(ZONES):
        k = n // len(ZONES) + (i < n % len(ZONES))
        r0, r1, c0, c1 = z.data if spread == "dense" else (0, z.height, 0, z.width)
        r = rng.uniform(r0, r1, k)
        c = rng.uniform(c0, c1, k)
        x, y = z.ox + 10 * c, z.oy - 10 * r
        south = y < 0
        lon, lat = np.empty(k), np.empty(k)
        for s, epsg in ((~south, 32600 + z.zone), (south, 32700 + z.zone)):
            lo, la = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x[s], y[s] + (10_000_000 if epsg > 32700 else 0))
            lon[s], lat[s] = lo, la
        out += list(zip(lon.tolist(), lat.tolist(), strict=True))
    return out


def child(args: argparse.Namespace) -> None:
    """One measured run: sample N points, print time, peak RSS and the store's traffic as JSON."""
    import tessvrt
    from tessvrt import zarrstore

    pts = points(args.child, args.spread)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    opened = zarrstore.open_store(STORE, endpoint=args.endpoint)
    t0 = time.perf_counter()
    res = zarrstore.sample_store(opened, 2024, pts, list(range(1, args.bands + 1)))
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    statuses: dict[str, int] = {}
    for p in res:
        statuses[p.status] = statuses.get(p.status, 0) + 1
    assert tessvrt.__version__
    print(json.dumps({"points": len(pts), "seconds": secs, "rss_before_mb": base / 1024, "rss_peak_mb": peak / 1024,
                      "requests": opened.store.traffic.requests, "bytes": opened.store.traffic.bytes,
                      "result_mb": len(pts) * args.bands * 4 / 2**20, "statuses": statuses}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, nargs="+", default=[1000, 1_000_000])
    ap.add_argument("--bands", type=int, nargs="+", default=[128, 3])
    ap.add_argument("--spread", nargs="+", default=["dense", "spread"])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.bands, args.spread = args.bands[0], args.spread[0]
        child(args)
        return
    from tessvrt.testing import build_zarr_sample

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / LIVE.bucket
        build_zarr_sample(root)
        with FileServer(Path(d)) as srv:
            print(f"{'spread':7s} {'bands':>5s} {'points':>9s} {'seconds':>8s} {'peak RSS MB':>11s} {'(before)':>9s} "
                  f"{'result MB':>9s} {'requests':>8s}  statuses")
            for spread in args.spread:
                for bands in args.bands:
                    for n in args.points:
                        p = subprocess.run([sys.executable, __file__, "--child", str(n), "--bands", str(bands), "--spread",
                                            spread, "--endpoint", srv.url], capture_output=True, text=True, timeout=3600)
                        if p.returncode:
                            sys.exit(p.stderr)
                        r = json.loads(p.stdout)
                        print(f"{spread:7s} {bands:5d} {r['points']:9,d} {r['seconds']:8.1f} {r['rss_peak_mb']:11.0f} "
                              f"{r['rss_before_mb']:9.0f} {r['result_mb']:9.0f} {r['requests']:8d}  {r['statuses']}", flush=True)


if __name__ == "__main__":
    main()

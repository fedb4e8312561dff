"""preview against `materialise --bands 1,2,3` on the same region, in one run (target: <= 1.2x).

Both read every byte of the region's tiles (npy tiles are pixel-interleaved: 3 bands cost the rows of
all 128); preview also reads its sample lattice first, then projects each chunk's stored int8 values
(pixel sources' quantised(): no 128-band float32 array) where materialise dequantises 3 bands.
A local bucket of 6 realistic tiles at 51.5 N (as bench_materialise), served from 127.0.0.1 by a plain
range-capable file server in its own process. Runs alternate (materialise, preview, ...) so a change in
the machine's load hits both; prints each run, the medians, the ratio and the sample's share of bytes.
--before TREE: also run preview from another source tree (e.g. `git worktree add /tmp/before main`) in each
round, so an older preview is timed against the same materialise runs (its own VRT build, same bytes).

usage: python scripts/bench_preview.py [--repeat 3] [--keep DIR] [--before TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_materialise import TILES, serve  # noqa: E402

from tessvrt.testing import build_sample  # noqa: E402

TESSVRT = [sys.executable, "-m", "tessvrt"]


def timed(args: list[str], tree: Path | None = None) -> tuple[float, dict]:
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree.resolve())}
    t0 = time.perf_counter()
    p = subprocess.run([*TESSVRT, *args, "--json", "--quiet", "--overwrite"], check=True, capture_output=True, text=True,
                       env=env, cwd=tree)
    return time.perf_counter() - t0, json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--before", type=Path, default=None, help="another source tree whose preview is timed too")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tessvrt-bench-preview-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TESSVRT_CACHE_DIR"] = str(work / "cache")
    root = build_sample(work / "bucket", TILES)
    srv, url = serve(root)
    try:
        vrt = work / "bench.vrt"
        subprocess.run([*TESSVRT, "build", *sum((["--tile", f"{t.tile.lon},{t.tile.lat}"] for t in TILES), []),
                        "--year", "2024", "-o", str(vrt), "--endpoint", url, "--overwrite"], check=True,
                       capture_output=True)
        w = json.loads((work / "bench.tessvrt" / "tessvrt.json").read_text())["main"]["window"]
        print(f"region: {len(TILES)} tiles at 51.5 N, {w['width']}x{w['height']} px; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        mat, pre, old = [], [], []
        for i in range(args.repeat):
            if args.before is not None:
                t, o = timed(["preview", str(vrt), str(work / "o.tif")], args.before)
                old.append(t)
                print(f"run {i + 1}: preview ({args.before.name})  {t:6.1f} s, {o['remote_bytes'] / 1e6:,.0f} MB fetched")
            t, m = timed(["materialise", str(vrt), str(work / "m.tif"), "--bands", "1,2,3"])
            mat.append(t)
            print(f"run {i + 1}: materialise --bands 1,2,3 {t:6.1f} s, {m['remote_bytes'] / 1e6:,.0f} MB fetched")
            t, p = timed(["preview", str(vrt), str(work / "p.tif")])
            pre.append(t)
            print(f"run {i + 1}: preview                   {t:6.1f} s, {p['remote_bytes'] / 1e6:,.0f} MB fetched "
                  f"({p['sample_bytes'] / 1e6:,.0f} MB sample: {p['sample_pixels']:,} pixels, cell {p['cell']})")
        a, b = statistics.median(mat), statistics.median(pre)
        if old:
            print(f"median: preview ({args.before.name}) {statistics.median(old):.1f} s: ratio "
                  f"{statistics.median(old) / a:.2f}x")
        print(f"median: materialise --bands 1,2,3 {a:.1f} s, preview {b:.1f} s: ratio {b / a:.2f}x (target <= 1.2x); "
              f"bytes ratio {p['remote_bytes'] / m['remote_bytes']:.3f}; load average now {os.getloadavg()[0]:.1f}")
    finally:
        srv.terminate()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

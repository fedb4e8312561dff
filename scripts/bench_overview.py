"""Cost of `build --overview` against a plain build, single-zone and cross-zone, on the offline sample.

The generated sample bucket (tessvrt.testing.build_sample, tiles near 88 N) is served by the static
S3-style FileServer behind a counting FaultProxy (no faults); each region is built without and with
overviews in this process, and tile requests, bytes and seconds are printed with the ratio to the plain
build. Cross-zone regions also write the main (warped) VRT's overview, which needs nearly every row of
the other zone's tiles (docs/layout.md, "Overviews").
Each --overview build runs twice: with tessvrt.overview.GAP = 0 (one ranged GET per picked row: the
baseline before runs of rows were merged) and with the shipped GAP (a run of picked rows whose skipped
rows hold < GAP bytes is one GET per tile); the last columns compare the two.

usage: python scripts/bench_overview.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from tessvrt import build, overview
from tessvrt.testing import FaultProxy, FileServer, build_sample

REGIONS = {"3x3 block, one zone": "4.0,88.0,4.3,88.3", "6 tiles across zones 31/32": "5.8,88.0,6.2,88.2"}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tessvrt-bench-overview-"))
    try:
        root = build_sample(tmp / "bucket")
        manifest = f"s3://{root.name}/tessera/tessera/npy/v1/manifest.parquet"
        print("| region | objects MB | build: requests / MB / s | --overview, one GET a row: requests / MB / s | "
              f"--overview, GAP {overview.GAP // 1024} kB: requests / MB / s | fetched / objects | requests ratio | s ratio | levels |")
        print("|---|---|---|---|---|---|---|---|---|")
        with FileServer(root.parent) as files, FaultProxy(files.url) as proxy:
            gap = overview.GAP
            for label, bbox in REGIONS.items():
                runs = []
                for k, (ovr, g) in enumerate(((False, gap), (True, 0), (True, gap))):
                    overview.GAP = g
                    proxy.log.clear()
                    t0 = time.perf_counter()
                    (tmp / f"r{label[:1]}{k}").mkdir()
                    build(tmp / f"r{label[:1]}{k}" / "x.vrt", bbox=bbox, year=2024, endpoint=proxy.url,
                          manifest=manifest, overview=ovr)
                    runs.append((*proxy.reads(), time.perf_counter() - t0))
                overview.GAP = gap
                rec = json.loads((tmp / f"r{label[:1]}2" / "x.tessvrt" / "tessvrt.json").read_text())
                objects = sum(t["grid_size"] + t["scales_size"] for t in rec["tiles"])
                (n0, b0, s0), (n1, b1, s1), (n2, b2, s2) = runs
                levels = ", ".join(f"{o.get('vrt', o['epsg'])} 1/{o['factor']}" for o in rec["overviews"])
                print(f"| {label} | {objects / 1e6:.1f} | {n0} / {b0 / 1e6:.1f} / {s0:.1f} | {n1:,} / {b1 / 1e6:.1f} / {s1:.1f} "
                      f"| {n2:,} / {b2 / 1e6:.1f} / {s2:.1f} | {100 * b1 / objects:.1f}% -> {100 * b2 / objects:.1f}% "
                      f"| x{n2 / n1:.3f} | x{s2 / s1:.2f} | {levels} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

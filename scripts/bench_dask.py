"""Distributed materialise: the same region through the single-process path, 1 worker and 2 workers, in one run.

The region: 6 realistic tiles near 51.5 N (as bench_materialise), 128 bands, cut into pieces; tiles are served
from 127.0.0.1 by a range-capable file server in its own process. For each run: time, float32 MB/s, the ratio
to the single-process COG collection (the baseline), per-task overhead (the same region cut into 64x64-px
pieces of one band without overviews: time per piece x workers, where pixel work is ~nothing), and bytes
moved between workers (Dask's own counters: should be ~none, each task reads and writes for itself).

usage: python scripts/bench_dask.py [--piece 1024] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import TILES, build_vrt, served_sample  # noqa: E402


def transfer_bytes(address: str) -> int:
    """Bytes workers sent each other (gather_dep traffic), from each worker's own counter."""
    from distributed import Client

    with Client(address, timeout=20) as c:
        return int(sum(c.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values()))


def main() -> None:
    from distributed import LocalCluster

    from tessvrt import materialise

    ap = argparse.ArgumentParser()
    ap.add_argument("--piece", type=int, default=1024)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    with served_sample(TILES, "tessvrt-bench-dask-", a.keep) as (work, _, url, _):
        vrt = build_vrt(work / "bench.vrt", url, TILES)
        runs: dict[str, dict] = {}

        def one(name: str, **kw: object) -> None:
            out = work / name
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            r = materialise(vrt, out, piece_size=a.piece, **kw)
            t = time.perf_counter() - t0
            runs[name] = {"seconds": t, "mb_s": r.output_float32_bytes / 1e6 / t, "pieces": r.collection.pieces,
                          "f32": r.output_float32_bytes, "remote": r.remote_bytes}

        one("single")
        for n in (1, 2):
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
                one(f"w{n}", dask=lc.scheduler_address)
                runs[f"w{n}"]["moved"] = transfer_bytes(lc.scheduler_address)
                # per-task overhead: 64x64-px pieces of the same region, 1 band, no overviews (pixel work ~0)
                out = work / f"tiny{n}"
                t1 = time.perf_counter()
                r = materialise(vrt, out, piece_size=64, blocksize=64, bands=[1], overviews=False,
                                dask=lc.scheduler_address)
                runs[f"w{n}"]["task_ms"] = (time.perf_counter() - t1) / r.collection.pieces * 1e3 * n
                runs[f"w{n}"]["tiny_pieces"] = r.collection.pieces
        same = all((work / "single" / p).read_bytes() == (work / "w2" / p).read_bytes()
                   for p in json.loads((work / "single" / "manifest.json").read_text())["zones"][0]["pieces"][0:1]
                   for p in [p["path"]])
        base = runs["single"]
        print(f"region: {len(TILES)} tiles, {base['f32'] / 1e6:,.0f} MB float32 (128 bands), {base['pieces']} pieces of "
              f"{a.piece} px, {base['remote'] / 1e6:,.0f} MB fetched; pieces byte-identical single vs 2 workers: {same}")
        for name, r in runs.items():
            extra = "" if name == "single" else (f", per task {r['task_ms']:.0f} ms x worker ({r['tiny_pieces']} tiny "
                                                 f"pieces), moved between workers {r['moved']:,} bytes")
            print(f"{name:>6}: {r['seconds']:6.1f} s  {r['mb_s']:6.1f} MB/s  ratio to single {base['seconds'] / r['seconds']:.2f}x"
                  f"{extra}")


if __name__ == "__main__":
    main()

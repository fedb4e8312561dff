"""Many runs through the fault-injecting proxy: the figures of docs/reliability.md.

Starts moto with the sample bucket, builds the 9-tile block VRT, materialises it once directly
(the reference), then:
- `--runs` materialise runs through FaultProxy, each with its own seed and RATE of each transient
  fault; every output's SHA-256 must equal the reference's;
- `--manifest-runs` cold-cache manifest downloads (build) with the same faults plus RATE byte flips; every
  build record must equal the direct build's.
Prints the faults injected per type, requests, bytes compared and corruptions caught.

usage: python scripts/fault_soak.py [--runs 10] [--manifest-runs 50] [--rate 0.1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tessvrt.testing import TRANSIENT_FAULTS, FaultProxy, MotoServer, build_sample

TESSVRT = [sys.executable, "-m", "tessvrt"]
BBOX = ["--bbox", "4.0,88.0,4.3,88.3", "--year", "2024"]


def tessvrt(*args: str, cache: Path) -> None:
    subprocess.run([*TESSVRT, *args], check=True, capture_output=True, env={**os.environ, "TESSVRT_CACHE_DIR": str(cache)})


def record(vrt: Path) -> dict:
    rec = json.loads(vrt.with_suffix(".tessvrt").joinpath("tessvrt.json").read_text())
    return {"tiles": rec["tiles"], "zones": rec["zones"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--manifest-runs", type=int, default=50)
    ap.add_argument("--rate", type=float, default=0.1)
    args = ap.parse_args()
    rates = dict.fromkeys(TRANSIENT_FAULTS, args.rate)
    with tempfile.TemporaryDirectory() as d, MotoServer() as s3:
        tmp = Path(d)
        s3.load(build_sample(tmp / "bucket"))
        vrt, ref = tmp / "block.vrt", tmp / "ref.tif"
        tessvrt("build", *BBOX, "-o", str(vrt), "--endpoint", s3.url, cache=tmp / "cache")
        tessvrt("materialise", str(vrt), str(ref), "--quiet", cache=tmp / "cache")
        want = hashlib.sha256(ref.read_bytes()).hexdigest()
        want_rec = record(vrt)

        totals: dict[str, Counter] = {"materialise": Counter(), "manifest": Counter()}
        requests = Counter()
        compared = 0
        t0 = time.perf_counter()
        for seed in range(args.runs):
            out = tmp / f"run{seed}.tif"
            with FaultProxy(s3.url, rates, seed=seed, delay=0.05) as proxy:
                tessvrt("materialise", str(vrt), str(out), "--quiet", "--endpoint", proxy.url, cache=tmp / "cache")
            got = hashlib.sha256(out.read_bytes()).hexdigest()
            assert got == want, f"run {seed}: output differs from the clean run"
            compared += out.stat().st_size
            out.unlink()
            totals["materialise"] += proxy.injected
            requests["materialise"] += len(proxy.log)

        for seed in range(args.manifest_runs):
            built = tmp / f"b{seed}" / "block.vrt"
            built.parent.mkdir()
            with FaultProxy(s3.url, {**rates, "flip": args.rate}, seed=seed, delay=0.05) as proxy:
                tessvrt("build", *BBOX, "-o", str(built), "--endpoint", proxy.url, cache=tmp / f"cache{seed}")
            assert record(built) == want_rec, f"run {seed}: build differs from the direct build"
            totals["manifest"] += proxy.injected
            requests["manifest"] += len(proxy.log)
        secs = time.perf_counter() - t0

    print(f"{args.runs} materialise runs, {args.manifest_runs} manifest downloads, {args.rate:.0%} of each fault, "
          f"{secs:.0f} s")
    for what, c in totals.items():
        print(f"{what:12s} requests {requests[what]:5d}  injected {sum(c.values()):4d}: "
              + ", ".join(f"{k} {c[k]}" for k in (*TRANSIENT_FAULTS, "flip") if k in c or what == "manifest"))
    print(f"materialise outputs SHA-256-identical to the clean run: {args.runs}/{args.runs} "
          f"({compared / 1e6:,.0f} MB compared)")
    print(f"manifest downloads equal to a direct build: {args.manifest_runs}/{args.manifest_runs}; "
          f"corrupted bodies caught: {totals['manifest']['flip'] + totals['manifest']['truncate']} "
          f"(flips {totals['manifest']['flip']}, truncated {totals['manifest']['truncate']}), none used")


if __name__ == "__main__":
    main()

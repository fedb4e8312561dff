"""Many runs through the fault-injecting proxy: the figures of docs/reliability.md.

Starts moto with the sample bucket, builds the 9-tile block VRT, materialises it once directly
(the reference), then runs materialise through FaultProxy (tessvrt.testing) in five mixes, each run
with its own seed:
- transient: RATE of each of 503, 500, 429, reset, truncate, delay;
- hanging: the transient mix plus HANG_RATE of each of stall (no reply), stall_body (half a body,
  then silence) and trickle (64 bytes/s);
- outage: the server vanishes (connections refused, open ones dropped) for 5-30 s at a random
  point after the header checks;
- lying: RATE of each of wrong_start (206 for a range 128 bytes away) and ignore_range (200 with
  the whole object);
- lying always: every ranged read answered with a wrong range or the whole object.
The Zarr path gets the same mixes (`--zarr-*` counts): materialise --dataset v1.1-dclimate of a box
across zones 31/32 and the equator (four outputs, from the Zarr sample store that `serve` serves),
and sample of points at shard and chunk edges, water, +inf and unwritten chunks (stdout must equal
the direct run's, byte for byte, or be one error line).
Every materialise writes over a previous, different output (--overwrite): the run must either
give output SHA-256-equal to the reference, or fail with exactly one error line, leaving the
previous output byte-identical and no temporary behind. Then `--manifest-runs` cold-cache manifest
downloads (build) with the transient and hanging faults plus RATE byte flips: every build record
must equal the direct build's. Prints faults injected per type, requests, outcomes and time.

usage: python scripts/fault_soak.py [--runs 10] [--hang-runs 4] [--outage-runs 4] [--lie-runs 6]
                                    [--manifest-runs 50] [--rate 0.1] [--hang-rate 0.02]
                                    [--zarr-runs 6] [--zarr-hang-runs 2] [--zarr-outage-runs 2] [--zarr-lie-runs 4]
                                    [--sample-runs 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tessvrt.testing import (
    HANGING_FAULTS,
    LYING_FAULTS,
    TRANSIENT_FAULTS,
    FaultProxy,
    MotoServer,
    build_sample,
    build_zarr_sample,
)

TESSVRT = [sys.executable, "-m", "tessvrt"]
BBOX = ["--bbox", "4.0,88.0,4.3,88.3", "--year", "2024"]
HEADER_READS = 18  # the block's npy header reads come first
ZARR = ["--dataset", "v1.1-dclimate", "--bbox", "5.9910,-0.0040,6.0080,0.0070", "--year", "2024"]  # 4 outputs
POINTS = ["5.99252,0.0061", "5.99737,0.00393", "5.99485,0.00158", "5.99611,0.0052", "5.9963,-0.0002", "6.0011,0.0003",
          "5.9990,0.0040", "6.0050,-0.0010"]  # valid, nodata, water, the hole, south of the equator, zone 32, ...


def tessvrt(*args: str, cache: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*TESSVRT, *args], check=check, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TESSVRT_CACHE_DIR": str(cache)})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(vrt: Path) -> dict:
    rec = json.loads(vrt.with_suffix(".tessvrt").joinpath("tessvrt.json").read_text())
    return {"tiles": rec["tiles"], "zones": rec["zones"]}


class Soak:
    def __init__(self, tmp: Path, s3: MotoServer):
        self.tmp, self.s3 = tmp, s3
        self.vrt = tmp / "block.vrt"
        tessvrt("build", *BBOX, "-o", str(self.vrt), "--endpoint", s3.url, cache=tmp / "cache")
        tessvrt("materialise", str(self.vrt), str(tmp / "ref.tif"), "--quiet", cache=tmp / "cache")
        tessvrt("materialise", str(self.vrt), str(tmp / "prev.tif"), "--quiet", "--bands", "1,2,3", cache=tmp / "cache")
        self.want, self.prev = sha(tmp / "ref.tif"), sha(tmp / "prev.tif")
        z = tmp / "zarr"
        z.mkdir()
        tessvrt("materialise", str(z / "ref.tif"), *ZARR, "--quiet", "--endpoint", s3.url, cache=tmp / "cache")
        tessvrt("materialise", str(z / "prev.tif"), *ZARR, "--quiet", "--bands", "1,2,3", "--endpoint", s3.url,
                cache=tmp / "cache")
        self.zwant = {p.name.replace("ref", "out"): sha(p) for p in sorted(z.glob("ref_*.tif"))}
        self.zprev = {p.name.replace("prev", "out"): sha(p) for p in sorted(z.glob("prev_*.tif"))}
        assert len(self.zwant) == len(self.zprev) == 4, self.zwant
        self.swant = tessvrt("sample", "--json", "--dataset", "v1.1-dclimate", "--year", "2024", "--endpoint", s3.url,
                             *POINTS, cache=tmp / "cache").stdout
        self.injected: dict[str, Counter] = {}
        self.requests: Counter = Counter()
        self.outcomes: dict[str, Counter] = {}
        self.errors: dict[str, Counter] = {}
        self.seconds: Counter = Counter()
        self.outage_secs: list[float] = []

    def materialise(self, mix: str, seed: int, kind: str = "npy", **proxy_args: object) -> None:
        """One run over a previous output: identical to the reference, or one error line and the previous output kept.
        kind: npy (the VRT), zarr (materialise --dataset: four outputs) or sample (stdout compared)."""
        out = self.tmp / "run" / "out.tif"
        shutil.rmtree(out.parent, ignore_errors=True)
        out.parent.mkdir()
        want, prev = ({"out.tif": self.want}, {"out.tif": self.prev}) if kind == "npy" else (self.zwant, self.zprev)
        if kind == "npy":
            shutil.copy(self.tmp / "prev.tif", out)
        elif kind == "zarr":
            for name in prev:
                shutil.copy(self.tmp / "zarr" / name.replace("out", "prev"), out.parent / name)
        else:
            want = prev = {}
        args = {"npy": ["materialise", str(self.vrt), str(out), "--quiet", "--overwrite"],
                "zarr": ["materialise", str(out), *ZARR, "--quiet", "--overwrite"],
                "sample": ["sample", "--json", "--dataset", "v1.1-dclimate", "--year", "2024", *POINTS]}[kind]
        t0 = time.perf_counter()
        with FaultProxy(self.s3.url, seed=seed, delay=0.05, **proxy_args) as proxy:
            p = tessvrt(*args, "--endpoint", proxy.url, cache=self.tmp / "cache", check=False)
        self.seconds[mix] += time.perf_counter() - t0
        left = sorted(os.listdir(out.parent))
        assert left == sorted(prev), f"{mix} run {seed}: files left {left}"
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("tessvrt: error:")]
        if p.returncode == 0:
            assert {n: sha(out.parent / n) for n in want} == want, f"{mix} run {seed}: output differs from the clean run"
            assert kind != "sample" or p.stdout == self.swant, f"{mix} run {seed}: sample differs from the clean run"
            outcome = "identical"
        else:
            assert len(errors) == 1 and "Traceback" not in p.stderr, f"{mix} run {seed}: {p.stderr}"
            assert p.stdout == "", f"{mix} run {seed}: a failed run printed {p.stdout[:200]!r}"
            assert {n: sha(out.parent / n) for n in prev} == prev, f"{mix} run {seed}: the previous output was changed"
            outcome = "one-line error, previous output intact" if prev else "one-line error, nothing printed"
            text = re.sub(r"s3://\S+|tile grid_\S+ ", "", errors[0].removeprefix("tessvrt: error: "))
            self.errors.setdefault(mix, Counter())[text[:110]] += 1
        self.outcomes.setdefault(mix, Counter())[outcome] += 1
        self.injected.setdefault(mix, Counter()).update(proxy.injected)
        self.requests[mix] += len(proxy.log)

    def manifest(self, seed: int, rates: dict[str, float]) -> None:
        built = self.tmp / f"b{seed}" / "block.vrt"
        built.parent.mkdir()
        t0 = time.perf_counter()
        with FaultProxy(self.s3.url, rates, seed=seed, delay=0.05) as proxy:
            tessvrt("build", *BBOX, "-o", str(built), "--endpoint", proxy.url, cache=self.tmp / f"cache{seed}")
        self.seconds["manifest"] += time.perf_counter() - t0
        assert record(built) == record(self.vrt), f"run {seed}: build differs from the direct build"
        self.injected.setdefault("manifest", Counter()).update(proxy.injected)
        self.requests["manifest"] += len(proxy.log)
        self.outcomes.setdefault("manifest", Counter())["record equal to a direct build"] += 1

    def report(self, args: argparse.Namespace) -> None:
        print(f"rates: {args.rate:.0%} of each transient/lying fault, {args.hang_rate:.0%} of each hanging fault")
        for mix, outcomes in self.outcomes.items():
            c = self.injected.get(mix, Counter())
            print(f"{mix:20s} runs {sum(outcomes.values()):3d}  {self.seconds[mix]:6.0f} s  requests {self.requests[mix]:5d}  "
                  f"injected {sum(c.values()):4d} ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})")
            for o, n in outcomes.items():
                print(f"{'':20s} {n:3d} x {o}")
            for e, n in self.errors.get(mix, Counter()).items():
                print(f"{'':20s}       {n} x {e}")
        if self.outage_secs:
            print(f"outages: {', '.join(f'{s:.0f}' for s in self.outage_secs)} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hang-runs", type=int, default=4)
    ap.add_argument("--outage-runs", type=int, default=4)
    ap.add_argument("--lie-runs", type=int, default=6)
    ap.add_argument("--manifest-runs", type=int, default=50)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--hang-rate", type=float, default=0.02)
    ap.add_argument("--zarr-runs", type=int, default=6)
    ap.add_argument("--zarr-hang-runs", type=int, default=2)
    ap.add_argument("--zarr-outage-runs", type=int, default=2)
    ap.add_argument("--zarr-lie-runs", type=int, default=4)
    ap.add_argument("--sample-runs", type=int, default=4)
    args = ap.parse_args()
    transient = dict.fromkeys(TRANSIENT_FAULTS, args.rate)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d, MotoServer() as s3:
        tmp = Path(d)
        root = build_sample(tmp / "bucket")
        build_zarr_sample(root)
        s3.load(root)
        soak = Soak(tmp, s3)
        for seed in range(args.runs):
            soak.materialise("transient", seed, rates=transient)
        for seed in range(args.hang_runs):
            soak.materialise("hanging", seed, rates={**transient, **dict.fromkeys(HANGING_FAULTS, args.hang_rate)})
        rnd = random.Random(0)
        for seed in range(args.outage_runs):
            secs = rnd.uniform(5, 30)
            soak.outage_secs.append(secs)
            soak.materialise("outage", seed, outage_after=HEADER_READS + rnd.randrange(1, 40), outage=secs)
        for seed in range(args.lie_runs):
            soak.materialise("lying", seed, rates=dict.fromkeys(LYING_FAULTS, args.rate))
        for fault in LYING_FAULTS:
            soak.materialise("lying always", 0, rates={fault: 1.0})
        hanging = {**transient, **dict.fromkeys(HANGING_FAULTS, args.hang_rate)}
        for kind, runs in (("zarr", args.zarr_runs), ("sample", args.sample_runs)):
            for seed in range(runs):
                soak.materialise(f"{kind} transient", seed, kind, rates=transient)
            for seed in range(args.zarr_hang_runs if kind == "zarr" else min(args.zarr_hang_runs, runs)):
                soak.materialise(f"{kind} hanging", seed, kind, rates=hanging)
            for seed in range(args.zarr_outage_runs if kind == "zarr" else min(args.zarr_outage_runs, runs)):
                secs = rnd.uniform(5, 30)
                soak.outage_secs.append(secs)
                soak.materialise(f"{kind} outage", seed, kind, outage_after=rnd.randrange(2, 30), outage=secs)
            for seed in range(args.zarr_lie_runs if kind == "zarr" else min(args.zarr_lie_runs, runs)):
                soak.materialise(f"{kind} lying", seed, kind, rates=dict.fromkeys(LYING_FAULTS, args.rate))
            for fault in LYING_FAULTS:
                soak.materialise(f"{kind} lying always", 0, kind, rates={fault: 1.0})
        for seed in range(args.manifest_runs):
            soak.manifest(seed, {**transient, "flip": args.rate, **dict.fromkeys(HANGING_FAULTS, args.hang_rate)})
        soak.report(args)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Wall and CPU time of test files as they were at a git ref (the baseline) and as they are now, each file run
back to back in this process (baseline first), with the load average around each run.

    .venv/bin/python scripts/bench_test_files.py [--base main] [--runs 1] tests/test_x.py [tests/test_y.py ...]

The baseline's tests/ and pyproject.toml are taken from BASE (git archive) into a temporary folder and run with
this interpreter and this checkout's tessvrt, so only the tests differ. TESSVRT_PY312 and TESSVRT_ORACLE_PY
should be set as scripts/test.sh sets them. On a loaded machine the wall time is noisy; the CPU time (every
process the run started: user + system) says whether the work itself changed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cwd: Path, test: str) -> dict:
    """One pytest run of one file: wall and CPU seconds, the load average before, its summary line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=cwd,
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = (p.stdout.strip().splitlines() or ["?"])[-1]
    return {"wall": wall, "cpu": cpu, "load": load, "rc": p.returncode, "last": last}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main", help="git ref of the baseline tests (default main)")
    ap.add_argument("--runs", type=int, default=1, help="pairs of runs per file (default 1)")
    ap.add_argument("tests", nargs="+", help="test files, relative to the checkout")
    a = ap.parse_args()
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", a.base, "tests", "pyproject.toml"], capture_output=True,
                         check=True).stdout
    with tempfile.TemporaryDirectory(prefix="bench-tests-base-") as tmp:
        tarfile.open(fileobj=BytesIO(tar)).extractall(tmp, filter="data")
        print(f"{'file':32} {'run':>3} {'base wall':>9} {'base cpu':>8} {'now wall':>8} {'now cpu':>7} "
              f"{'wall ratio':>10} {'cpu ratio':>9}  load  result (base | now)")
        totals = {"bw": 0.0, "bc": 0.0, "nw": 0.0, "nc": 0.0}
        for test in a.tests:
            for i in range(a.runs):
                b, n = run(Path(tmp), test), run(ROOT, test)
                for k, v in (("bw", b["wall"]), ("bc", b["cpu"]), ("nw", n["wall"]), ("nc", n["cpu"])):
                    totals[k] += v
                print(f"{Path(test).name:32} {i + 1:>3} {b['wall']:9.1f} {b['cpu']:8.1f} {n['wall']:8.1f} {n['cpu']:7.1f} "
                      f"{n['wall'] / b['wall']:10.2f} {n['cpu'] / b['cpu']:9.2f}  {b['load']:.1f}/{n['load']:.1f}  "
                      f"{b['last']} | {n['last']}", flush=True)
        print(f"{'total':32} {'':>3} {totals['bw']:9.1f} {totals['bc']:8.1f} {totals['nw']:8.1f} {totals['nc']:7.1f} "
              f"{totals['nw'] / totals['bw']:10.2f} {totals['nc'] / totals['bc']:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

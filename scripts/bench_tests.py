"""Wall and CPU time of the test suite (or a part of it) in one process (the baseline) and on N pytest-xdist
workers, measured back to back in this process, with the load average around each run.

    .venv/bin/python scripts/bench_tests.py [--workers 2] [--dist loadfile] [-- PYTEST-ARGS...]

PYTEST-ARGS default to the whole suite; TESSVRT_PY312 and TESSVRT_ORACLE_PY should be set as
scripts/test.sh sets them. The machine's other load makes wall times noisy: the CPU time (children's
user + system) says whether the work itself changed, the wall time what a run costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> dict[str, float | int | str]:
    """One pytest run: wall seconds, CPU seconds of everything it started, exit status, its last line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    return {"wall": wall, "cpu": cpu, "rc": p.returncode, "summary": tail, "load": f"{load0:.1f}-{os.getloadavg()[0]:.1f}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dist", default="loadfile")
    ap.add_argument("pytest_args", nargs="*", help="after --: what pytest runs (default: the whole suite)")
    a = ap.parse_args()
    base = run(a.pytest_args)
    para = run(["-n", str(a.workers), "--dist", a.dist, *a.pytest_args])
    for name, r in (("one process", base), (f"-n {a.workers} --dist {a.dist}", para)):
        print(f"{name:>24}: wall {r['wall']:7.1f} s  cpu {r['cpu']:7.1f} s  load {r['load']}  exit {r['rc']}  {r['summary']}")
    print(f"wall ratio (one process / workers): {base['wall'] / para['wall']:.2f}; "
          f"cpu ratio: {base['cpu'] / max(para['cpu'], 1e-9):.2f}")
    return 0 if base["rc"] == para["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Start-up time of tessvrt commands, whole process, before and after (issue 22: --help, datasets, info < 0.5 s).

Each command runs as a user runs it (`python -m tessvrt ...`, a new process, output discarded), RUNS
times, in turn with the same command of an older tessvrt (default: git revision `main`, extracted
with `git archive` into a temp folder and put first on PYTHONPATH) and with a yardstick process that
only imports the heavy libraries the old start-up loaded (`python -c 'import rasterio, pandas,
pyarrow, botocore'`). Interleaving keeps the comparison fair on a machine whose speed drifts.
Prints min and median seconds and the median after/before ratio. `info` reads a VRT built from the
offline sample bucket (built once under $TESSVRT_CACHE_DIR/sample, served on a free port) unless
--vrt names one.

usage: python scripts/bench_startup.py [--runs N] [--before REV] [--vrt X.vrt]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
YARDSTICK = "import rasterio, pandas, pyarrow, botocore"
# `python -m tessvrt ARGS` with the tessvrt of sys.argv[1] (both sides the same way): the editable install's
# finder would otherwise serve the work tree's package to both
LAUNCH = ("import runpy, sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
          "getattr(f, '__module__', '')]; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'tessvrt'; "
          "runpy.run_module('tessvrt', run_name='__main__', alter_sys=True)")


def extract(rev: str, folder: Path) -> Path:
    """The tessvrt package of a git revision, unpacked under folder (nothing in the work tree changes)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "tessvrt"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {p.returncode}): {p.stderr.decode()[-300:]}")
    return dt


def sample_vrt(folder: Path) -> Path:
    """A 3x3-tile VRT of the offline sample bucket (what the README's Use block builds)."""
    from tessvrt import build
    from tessvrt.testing import SAMPLE_BBOX, MotoServer, _sample_lock, ensure_sample, sample_dir

    with _sample_lock(sample_dir()):
        root, _ = ensure_sample()
    with MotoServer() as srv:
        srv.load(root)
        vrt = folder / "sample.vrt"
        build(vrt, bbox=SAMPLE_BBOX, year=2024, endpoint=srv.url)
    return vrt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs of each command (default 7)")
    ap.add_argument("--before", default="main",
                    help="git revision to compare with (default main; issue 22 compared with ab83005)")
    ap.add_argument("--vrt", type=Path, help="VRT for `info` (default: one built from the offline sample)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tessvrt-bench-startup-") as tmp:
        old = extract(args.before, Path(tmp) / "before")
        vrt = args.vrt or sample_vrt(Path(tmp))
        base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        roots = {"after": str(REPO), "before": str(old)}
        for side, root in roots.items():  # each side imports its own copy of tessvrt
            probe = LAUNCH.replace("runpy.run_module('tessvrt', run_name='__main__', alter_sys=True)",
                                   "import tessvrt; print(tessvrt.__file__)")
            where = subprocess.run([sys.executable, "-c", probe, root], env=base, capture_output=True, text=True,
                                   check=True).stdout.strip()
            print(f"{side} ({args.before if side == 'before' else 'work tree'}): {where}")
        commands = {"--help": ["--help"], "datasets": ["datasets"], "info": ["info", str(vrt)]}
        yard = [sys.executable, "-c", YARDSTICK]
        print(f"{args.runs} runs each, whole process, seconds (python {sys.version.split()[0]}, {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.1f})")
        print(f"{'command':<10} {'after min':>10} {'after med':>10} {'before min':>11} {'before med':>11} "
              f"{'after/before':>13}")
        t_yard: list[float] = []
        for label, argv in commands.items():
            times: dict[str, list[float]] = {"after": [], "before": []}
            cmds = {side: [sys.executable, "-c", LAUNCH, root, *argv] for side, root in roots.items()}
            for cmd in cmds.values():
                timed(cmd, base)  # warm the page cache and .pyc files
            for _ in range(args.runs):
                for side, cmd in cmds.items():
                    times[side].append(timed(cmd, base))
                t_yard.append(timed(yard, base))
            a, b = times["after"], times["before"]
            ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
            print(f"{label:<10} {min(a):>10.3f} {statistics.median(a):>10.3f} {min(b):>11.3f} "
                  f"{statistics.median(b):>11.3f} {ratio:>13.2f}")
        print(f"yardstick `python -c '{YARDSTICK}'`: min {min(t_yard):.3f} s, median {statistics.median(t_yard):.3f} s")
        print(f"bare `python -c pass`: min {min(timed([sys.executable, '-c', 'pass'], base) for _ in range(5)):.3f} s")


if __name__ == "__main__":
    main()

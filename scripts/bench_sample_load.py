"""Loading the sample bucket into moto's S3 server (the tests' session fixture `s3`, each pytest-xdist worker,
and `python -m tessvrt.testing serve`): MotoServer.load against the baseline of one upload at a time, on
fresh servers, alternated, in this process.

    .venv/bin/python scripts/bench_sample_load.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from tessvrt.testing import MotoServer, build_sample


def one_at_a_time(srv: MotoServer, root: Path) -> None:
    """The baseline: what MotoServer.load did before (bucket, policy, then each file in turn)."""
    srv.load(root.parent / "empty" / root.name)  # the bucket and its policy only
    for p in sorted(root.rglob("*")):
        if p.is_file():
            srv.put(f"s3://{root.name}/{p.relative_to(root).as_posix()}", p.read_bytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        root = build_sample(folder)
        (folder / "empty" / root.name).mkdir(parents=True)
        files = [p for p in root.rglob("*") if p.is_file()]
        print(f"sample bucket: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB")
        times: dict[str, list[float]] = {"one at a time": [], "MotoServer.load": []}
        for _ in range(a.rounds):
            for name, how in (("one at a time", lambda s: one_at_a_time(s, root)), ("MotoServer.load", lambda s: s.load(root))):
                with MotoServer() as srv:
                    t0 = time.monotonic()
                    how(srv)
                    times[name].append(time.monotonic() - t0)
                print(f"{name:>16}: {times[name][-1]:6.1f} s  (load average {os.getloadavg()[0]:.1f})", flush=True)
        base, new = min(times["one at a time"]), min(times["MotoServer.load"])
        print(f"best of {a.rounds}: one at a time {base:.1f} s, MotoServer.load {new:.1f} s, ratio {base / new:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

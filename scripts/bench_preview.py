"""preview against `materialise --bands 1,2,3` on the same region, in one run (target: <= 1.2x).

Both read every byte of the region's tiles (npy tiles are pixel-interleaved: 3 bands cost the rows of
all 128); preview also reads its sample lattice first, then projects each chunk's stored int8 values
(pixel sources' quantised(): no 128-band float32 array) where materialise dequantises 3 bands.
A local bucket of 6 realistic tiles at 51.5 N (as bench_materialise), served from 127.0.0.1 by a plain
range-capable file server in its own process. Runs alternate (materialise, preview, ...) so a change in
the machine's load hits both; prints each run (wall seconds, and CPU seconds of the command and the file server:
steadier than wall time on a machine others load), the medians, the ratios and the sample's share of bytes.
--before TREE: also run preview from another source tree (e.g. `git worktree add /tmp/before main`) in each
round, so an older preview is timed against the same materialise runs (its own VRT build, same bytes).

usage: python scripts/bench_preview.py [--repeat 3] [--keep DIR] [--before TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import TESSVRT, TILES, build_vrt, served_sample  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process (the file server) has used so far."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def timed(args: list[str], server: int, tree: Path | None = None) -> tuple[float, float, dict]:
    """(wall s, CPU s of the command and of the file server, the command's --json) of one run."""
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree.resolve())}
    before, srv = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_seconds(server)
    t0 = time.perf_counter()
    p = subprocess.run([*TESSVRT, *args, "--json", "--quiet", "--overwrite"], check=True, capture_output=True, text=True,
                       env=env, cwd=tree)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime + cpu_seconds(server) - srv
    return wall, cpu, json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--before", type=Path, default=None, help="another source tree whose preview is timed too")
    args = ap.parse_args()
    with served_sample(TILES, "tessvrt-bench-preview-", args.keep) as (work, _, url, srv):
        vrt = build_vrt(work / "bench.vrt", url, TILES)
        w = json.loads((work / "bench.tessvrt" / "tessvrt.json").read_text())["main"]["window"]
        print(f"region: {len(TILES)} tiles at 51.5 N, {w['width']}x{w['height']} px; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        runs: dict[str, list[tuple[float, float]]] = {}
        commands = [("materialise --bands 1,2,3", ["materialise", str(vrt), str(work / "m.tif"), "--bands", "1,2,3"], None),
                    ("preview", ["preview", str(vrt), str(work / "p.tif")], None)]
        if args.before is not None:
            commands.insert(0, (f"preview ({args.before.name})", ["preview", str(vrt), str(work / "o.tif")], args.before))
        for i in range(args.repeat):
            for name, cmd, tree in commands:
                t, c, r = timed(cmd, srv.pid, tree)
                runs.setdefault(name, []).append((t, c))
                more = (f" ({r['sample_bytes'] / 1e6:,.0f} MB sample: {r['sample_pixels']:,} pixels, cell {r['cell']})"
                        if "sample_bytes" in r else "")
                print(f"run {i + 1}: {name:28s} {t:6.1f} s wall, {c:5.1f} s CPU, {r['remote_bytes'] / 1e6:,.0f} MB fetched{more}")
                if name == "preview":
                    pre = r
                elif name.startswith("materialise"):
                    mat = r
        base = [statistics.median(x[k] for x in runs["materialise --bands 1,2,3"]) for k in (0, 1)]
        for name, got in runs.items():
            t, c = (statistics.median(x[k] for x in got) for k in (0, 1))
            print(f"median: {name:28s} {t:5.1f} s wall ({t / base[0]:.2f}x), {c:5.1f} s CPU ({c / base[1]:.2f}x)")
        print(f"target: preview <= 1.2x materialise; bytes ratio {pre['remote_bytes'] / mat['remote_bytes']:.3f}; "
              f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

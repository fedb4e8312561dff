"""How well preview's sample lattice fits the region's PCA: lattice rules against a dense fit, on bench_preview's region.

Reads the region (6 tiles at 51.5 N of bench_materialise, served locally) in strips, fits the PCA of a dense
sample (every 2nd row and column: ~1.25 M pixels) and of each lattice rule's pixels, and prints, per rule: its
pixels, the tile rows it reads (npy bytes), the principal angles between its first three components and the dense
fit's, and the share of the dense sample's variance its three components capture against the dense fit's own.

usage: python scripts/bench_preview_sample.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import TILES, build_vrt, served_sample  # noqa: E402

from tessvrt.grid import Window  # noqa: E402
from tessvrt.pixels import npy_jobs, read_window  # noqa: E402
from tessvrt.record import read_record  # noqa: E402
from tessvrt.source.s3 import Endpoint  # noqa: E402

STRIP = 128


def rule_8x8_step4(n: int, cell: int, rows: bool) -> np.ndarray:  # main before this change: rows like columns
    o = np.arange(n)
    return o[(o % cell < 32) & (o % cell % 4 == 2)]


def rule_8_rows(n: int, cell: int, rows: bool) -> np.ndarray:  # rows 2..9 of a cell, columns 2, 6, ..., 30
    o = np.arange(n)
    return o[(o % cell >= 2) & (o % cell < 10)] if rows else o[(o % cell < 32) & (o % cell % 4 == 2)]


def rule_4_rows(n: int, cell: int, rows: bool) -> np.ndarray:  # rows 2..5, columns 0, 2, ..., 30
    o = np.arange(n)
    return o[(o % cell >= 2) & (o % cell < 6)] if rows else o[(o % cell < 32) & (o % cell % 2 == 0)]


RULES = {"8x8 lattice, step 4 (before)": rule_8x8_step4, "8 consecutive rows x 8 columns": rule_8_rows,
         "4 consecutive rows x 16 columns": rule_4_rows}


def pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    c = x - mean
    var, vec = np.linalg.eigh(c.T @ c)
    return mean, vec[:, ::-1].T[:3]


def main() -> None:
    with served_sample(TILES, "tessvrt-bench-sample-") as (work, _, url, _):
        vrt = build_vrt(work / "bench.vrt", url, TILES)
        job = npy_jobs(read_record(vrt), Endpoint.parse(url))[0]
        win = job.window
        cell = 128  # what preview's rule gives this region (bench_preview prints it)
        picks = {k: (f(win.height, cell, True), f(win.width, cell, False)) for k, f in RULES.items()}
        dense, samples = [], {k: [] for k in RULES}
        for y0 in range(0, win.height, STRIP):
            h = min(STRIP, win.height - y0)
            x = read_window(job.spec, Window(win.epsg, win.col0, win.row0 - y0, win.width, h))  # (128, h, w)
            px = x[:, ::2, ::2].reshape(128, -1).T
            dense.append(px[np.isfinite(px).all(axis=1)].astype(np.float64))
            for k, (r, c) in picks.items():
                rr = r[(r >= y0) & (r < y0 + h)] - y0
                p = x[:, rr][:, :, c].reshape(128, -1).T
                samples[k].append(p[np.isfinite(p).all(axis=1)].astype(np.float64))
        d = np.concatenate(dense)
        dm, dc = pca(d)
        centred = d - dm
        total = (centred ** 2).sum()
        best = ((centred @ dc.T) ** 2).sum() / total
        print(f"region {win.width}x{win.height} px, cell {cell}; dense sample {len(d):,} px: its 3 components capture "
              f"{best:.2%} of its variance")
        for k, parts in samples.items():
            s = np.concatenate(parts)
            _, sc = pca(s)
            angles = np.degrees(np.arccos(np.clip(np.linalg.svd(sc @ dc.T, compute_uv=False), -1, 1)))
            q, _ = np.linalg.qr(sc.T)
            got = ((centred @ q) ** 2).sum() / total
            rows = len(picks[k][0])
            print(f"{k:34s} {len(s):6,} px, {rows:3d} tile rows read ({rows / win.height:.1%} of the bytes): principal angles "
                  f"to the dense fit {', '.join(f'{a:.2f}' for a in angles)} deg; captures {got:.3%} of the variance "
                  f"({got / best:.4f} of the dense fit's)")


if __name__ == "__main__":
    main()

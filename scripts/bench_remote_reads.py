"""Remote read cost of real clients on a 3x3-tile VRT: requests and bytes, against the minimum.

A sample bucket of 3x3 tiles (real sizes from the SPEC formula at --lat) is served by a local
static S3-style server behind a counting proxy (tessvrt.testing.FileServer + FaultProxy with no
faults). GDAL is configured only by the file `tessvrt gdal-config --endpoint PROXY` writes, and
every client runs as a subprocess with nothing else in its environment, as a user's would.

Rows printed:
- gdalinfo (Debian GDAL 3.6), which must issue no tile-data request;
- a 512x512 all-band window and a full-width 64-row strip read with gdal_translate (GDAL 3.6),
  against the minimum the .npy layout allows: the bytes of the tile rows the window touches,
  one range per object touched;
- QGIS 3.22 (Debian python3-qgis, offscreen): loading the layer, then its first full-extent
  render, against the baseline of reading every row of the 9 tiles (one request per row).

The ratio against the baseline is measured in the same process: the same client actions are run
with the gdal-config of an earlier tessvrt (no read-ahead options, no overviews) first. The VRT is
also built with `overview=True` (build --overview): its cost (tile requests, bytes, seconds) is
printed against the plain build, and the *after* client actions are repeated on it.

usage: python scripts/bench_remote_reads.py [--lat 88.15] [--canvas 800x600] [--no-qgis]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tessvrt import build, gdalconfig
from tessvrt.grid import Tile, Window, tile_grids
from tessvrt.testing import FaultProxy, FileServer, SampleTile, build_sample, env_with_gdalrc
from tessvrt.vrt import BANDS

HERE = Path(__file__).resolve().parent
PROBE = HERE.parent / "tests" / "qgis_probe.py"
QGIS_PYTHON = "/usr/bin/python3"


def block(lat: float) -> list[Tile]:
    """3x3 tiles centred on (4.15, lat): one UTM zone."""
    return [Tile.at(4.15 + dx, lat + dy) for dy in (0.1, 0.0, -0.1) for dx in (-0.1, 0.0, 0.1)]


class Counter:
    def __init__(self, proxy: FaultProxy, env: dict[str, str]):
        self.proxy, self.env = proxy, env

    def run(self, cmd: list[str]) -> tuple[int, int, float, str]:
        """(requests, body bytes, seconds, stdout) of one client run; tile-data requests only."""
        self.proxy.log.clear()
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=3600)
        dt = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {res.stderr.strip()[-400:]}")
        return (*self.proxy.reads(), dt, res.stdout)


def minimum(window: Window, grids: list, scale_bands: int) -> tuple[int, int]:
    """Fewest requests and bytes the .npy layout allows: whole touched rows, one range per object."""
    reqs = nbytes = 0
    for g in grids:
        part = window.intersection(g.window)
        if part is None:
            continue
        reqs += 2
        nbytes += part.height * g.width * (BANDS + 4 * scale_bands)
    return reqs, nbytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lat", type=float, default=88.15, help="centre latitude of the 3x3 block")
    ap.add_argument("--canvas", default="800x600", help="QGIS map canvas size WxH")
    ap.add_argument("--no-qgis", action="store_true")
    ap.add_argument("--after-only", action="store_true", help="skip the baseline runs")
    ap.add_argument("--png", type=Path, help="keep QGIS's render (gdal-config as written) here")
    ap.add_argument("--opt", action="append", default=[], help="try KEY=VALUE as a read-ahead option instead")
    args = ap.parse_args()
    if args.opt:
        gdalconfig.READ_AHEAD.clear()
        gdalconfig.READ_AHEAD.update(o.split("=", 1) for o in args.opt)
    canvas = [int(v) for v in args.canvas.split("x")]
    tiles = block(args.lat)
    grids = tile_grids(tiles)
    tmp = Path(tempfile.mkdtemp(prefix="tessvrt-bench-remote-"))
    try:
        t0 = time.perf_counter()
        root = build_sample(tmp / "bucket", [SampleTile(t) for t in tiles])
        print(f"sample bucket: 3x3 tiles at {args.lat} N, {grids[4].width} x {grids[4].height} px each, "
              f"{sum(p.stat().st_size for p in root.rglob('*.npy')) / 1e6:.0f} MB of objects "
              f"({time.perf_counter() - t0:.0f} s to generate)")
        every_row = sum(g.height for g in grids)
        with FileServer(root.parent) as files, FaultProxy(files.url) as proxy:
            out, ovr = tmp / "out", tmp / "ovr"
            out.mkdir()
            ovr.mkdir()
            manifest = f"s3://{root.name}/tessera/tessera/npy/v1/manifest.parquet"
            cost = {}
            for label, folder, overview in (("build", out, False), ("build --overview", ovr, True)):
                proxy.log.clear()
                t1 = time.perf_counter()
                build(folder / "block.vrt", year=2024, tiles=tiles, endpoint=proxy.url, manifest=manifest,
                      overview=overview)
                cost[label] = (*proxy.reads(), time.perf_counter() - t1)
            (n0, b0, s0), (n1, b1, s1) = cost["build"], cost["build --overview"]
            objects = sum(p.stat().st_size for p in root.rglob("*.npy"))
            print(f"build: {n0} tile requests, {b0 / 1e6:.1f} MB, {s0:.1f} s; build --overview: {n1:,} tile requests, "
                  f"{b1 / 1e6:.1f} MB ({100 * b1 / objects:.1f}% of the objects), {s1:.1f} s (x{s1 / s0:.1f} the build); "
                  f"overview files {sum(p.stat().st_size for p in ovr.rglob('overview_*.tif')) / 1e6:.1f} MB")
            rec = json.loads((out / "block.tessvrt" / "tessvrt.json").read_text())
            mw = rec["main"]["window"]
            main = Window(rec["main"]["epsg"], mw["col0"], mw["row0"], mw["width"], mw["height"])
            print(f"VRT: {main.width} x {main.height} px, 128 bands; baseline 'every row' = {every_row:,} requests "
                  f"(one per tile row), 10% = {every_row // 10:,}")
            rows = []
            for label, read_ahead in (("before", False), ("after", True))[args.after_only:]:
                rc = tmp / f"gdalrc_{label}"
                gdalconfig.gdal_config(rc, endpoint=proxy.url, read_ahead=read_ahead)
                c = Counter(proxy, env_with_gdalrc(rc))
                vrt = tmp / f"{label}" / "block.vrt"
                rows += measure(c, label, out, vrt, main, grids, rec["scale_bands"], canvas, not args.no_qgis)
                if label == "after":  # the same client actions on the build with overviews
                    rows += measure(c, "after, build --overview", ovr, tmp / "ovr_after" / "block.vrt", main, grids,
                                    rec["scale_bands"], canvas, not args.no_qgis)
                if args.png and not args.no_qgis and label == "after":
                    shutil.copyfile(vrt.parent / "q.png", args.png)
        print()
        print("| client action | gdal-config | requests | MB | s | minimum requests | minimum MB | % of every-row requests |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            mreq, mby = r.get("min", ("-", None))
            print(f"| {r['what']} | {r['label']} | {r['req']:,} | {r['bytes'] / 1e6:.1f} | {r['s']:.1f} | {mreq} | "
                  f"{'-' if mby is None else f'{mby / 1e6:.2f}'} | {100 * r['req'] / every_row:.1f}% |")
        by = {(r["what"], r["label"]): r for r in rows}
        for what in dict.fromkeys(r["what"] for r in rows):
            if (what, "before") in by and (what, "after") in by:
                b, a = by[what, "before"]["req"], by[what, "after"]["req"]
                print(f"{what}: requests after/before = {a / b if b else float('nan'):.3f}")
            if (what, "after") in by and (what, "after, build --overview") in by:
                a, o = by[what, "after"]["req"], by[what, "after, build --overview"]["req"]
                print(f"{what}: requests with overviews / without = {o / a if a else float('nan'):.3f} "
                      f"({100 * o / every_row:.2f}% of every-row)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fresh_copy(src: Path, vrt: Path) -> Path:
    """A fresh copy of the built VRT and sidecar: QGIS stores statistics into the VRT it opens."""
    if vrt.parent.exists():
        shutil.rmtree(vrt.parent)
    shutil.copytree(src, vrt.parent)
    return vrt


def measure(c: Counter, label: str, src: Path, vrt: Path, main: Window, grids: list, scale_bands: int,
            canvas: list[int], qgis: bool) -> list[dict]:
    rows = []
    fresh_copy(src, vrt)
    n, b, s, _ = c.run(["gdalinfo", str(vrt)])
    rows.append({"what": "gdalinfo", "label": label, "req": n, "bytes": b, "s": s, "min": (0, 0)})
    w = min(512, main.width)
    h = min(512, main.height)
    x0, y0 = (main.width - w) // 2, (main.height - h) // 2
    for what, (x, y, ww, hh) in ((f"{w}x{h} window, 128 bands", (x0, y0, w, h)),
                                 (f"full-width strip {main.width}x64, 128 bands", (0, y0, main.width, 64))):
        dst = vrt.parent / "patch.tif"
        n, b, s, _ = c.run(["gdal_translate", "-q", "-srcwin", str(x), str(y), str(ww), str(hh), str(vrt), str(dst)])
        win = Window(main.epsg, main.col0 + x, main.row0 - y, ww, hh)
        rows.append({"what": what, "label": label, "req": n, "bytes": b, "s": s, "min": minimum(win, grids, scale_bands)})
    if qgis:
        spec = json.dumps({"size": canvas, "phase": "load"})
        n, b, s, _ = c.run([QGIS_PYTHON, str(PROBE), str(fresh_copy(src, vrt)), str(vrt.parent / "q.png"), spec])
        rows.append({"what": "QGIS load", "label": label, "req": n, "bytes": b, "s": s})
        spec = json.dumps({"size": canvas, "phase": "all"})
        n2, b2, s2, _ = c.run([QGIS_PYTHON, str(PROBE), str(fresh_copy(src, vrt)), str(vrt.parent / "q.png"), spec])
        rows.append({"what": f"QGIS load + first render {canvas[0]}x{canvas[1]}", "label": label, "req": n2,
                     "bytes": b2, "s": s2})
    return rows


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.exit(main())

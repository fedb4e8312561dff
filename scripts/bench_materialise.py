"""Materialise speed against the alternatives, in one run, on a local bucket of 6 realistic tiles.

(a) tessvrt materialise (a subprocess: its peak RSS is reported)
(b) GDAL's own path: gdal_translate -of COG of the same VRT (pixel functions), on a strip of it
(c) today's path: download whole tiles, dequantise in numpy, one float32 GeoTIFF per tile,
    gdalbuildvrt, then a COG of that
(d) the floor: only fetching the bytes (a) fetches, and only compressing (a)'s output once
Prints MB/s of float32 output for each and the ratios. The tiles are served from 127.0.0.1 by a
plain range-capable file server in its own process (not the bottleneck: see its MB/s line).

usage: python scripts/bench_materialise.py [--compress zstd] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling

from tessvrt.cog.profiles import DEFAULT_LEVEL, cog_options, overview_factors
from tessvrt.grid import Tile
from tessvrt.source.s3 import Endpoint, S3Location, client, fetch_range
from tessvrt.testing import SampleTile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import TESSVRT, TILES, build_vrt, gdal_env, served_sample  # noqa: E402


def cog_driver_options(compress: str) -> dict[str, str]:
    """GDAL's COG driver with the compression, level and predictor (a) uses."""
    opts = {"COMPRESS": compress.upper(), "NUM_THREADS": "ALL_CPUS"}
    if compress in ("zstd", "deflate", "lzw"):
        opts["PREDICTOR"] = "FLOATING_POINT"
    if compress in DEFAULT_LEVEL:
        opts["LEVEL"] = str(DEFAULT_LEVEL[compress])
    return opts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compress", default="zstd")
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--wide", type=int, default=0, metavar="N",
                    help="instead: peak RSS of materialise on a row of N tiles (memory bound of wide regions)")
    args = ap.parse_args()
    tiles = [SampleTile(Tile.at(0.05 + 0.1 * i, 51.55)) for i in range(args.wide)] if args.wide else TILES
    with served_sample(tiles, "tessvrt-bench-mat-", args.keep) as (work, root, url, _):
        if args.wide:
            wide(work, url, tiles, args.compress)
        else:
            run(work, root, url, args.compress)


def wide(work: Path, url: str, tiles: list[SampleTile], compress: str) -> None:
    vrt = build_vrt(work / "wide.vrt", url, tiles)
    w = json.loads((work / "wide.tessvrt" / "tessvrt.json").read_text())["main"]["window"]
    out_f32 = w["width"] * w["height"] * 128 * 4
    t0 = time.perf_counter()
    subprocess.run([*TESSVRT, "materialise", str(vrt), str(work / "wide.tif"), "--compress", compress, "--quiet"],
                   check=True)
    t = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"wide: {len(tiles)} tiles in a row, {w['width']}x{w['height']} px = {out_f32 / 1e6:,.0f} MB float32 in {t:.1f} s "
          f"({out_f32 / 1e6 / t:,.1f} MB/s), peak RSS {rss:,.0f} MB (target < 2048)")


def run(work: Path, root: Path, url: str, compress: str) -> None:
    ep = Endpoint(url)
    vrt = build_vrt(work / "bench.vrt", url, TILES)
    rec = json.loads((work / "bench.tessvrt" / "tessvrt.json").read_text())
    w = rec["main"]["window"]
    out_f32 = w["width"] * w["height"] * 128 * 4
    print(f"region: {len(rec['tiles'])} tiles, {w['width']}x{w['height']} px x 128 bands = {out_f32 / 1e6:,.0f} MB float32; "
          f"compress={compress}")

    # server speed: whole objects, 8 in parallel
    locs = [S3Location.parse(t["grid"]) for t in rec["tiles"]] + [S3Location.parse(t["scales"]) for t in rec["tiles"]]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        total = sum(pool.map(lambda loc: len(client(ep).get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()), locs))
    print(f"server: {total / 1e6:,.0f} MB of whole objects in {time.perf_counter() - t0:.2f} s "
          f"= {total / 1e6 / (time.perf_counter() - t0):,.0f} MB/s")

    # (a) tessvrt materialise, in a subprocess for its peak RSS
    out_a = work / "a.tif"
    t0 = time.perf_counter()
    p = subprocess.run([*TESSVRT, "materialise", str(vrt), str(out_a), "--compress", compress, "--json", "--quiet"],
                       check=True, capture_output=True, text=True)
    ta = time.perf_counter() - t0
    rss_a = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res_a = json.loads(p.stdout)
    print(f"(a) tessvrt materialise: {ta:.1f} s, {out_f32 / 1e6 / ta:,.1f} MB/s, output {out_a.stat().st_size / 1e6:,.0f} MB, "
          f"fetched {res_a['remote_bytes'] / 1e6:,.0f} MB, peak RSS {rss_a:,.0f} MB")

    # (b) gdal_translate -of COG of the VRT (pixel functions), on a full-width strip, all bands
    rows = min(64, w["height"])
    out_b = work / "b.tif"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c",
                    "import sys, json, rasterio.shutil as s, rasterio\n"
                    "with rasterio.Env(): s.copy(sys.argv[1], sys.argv[2], driver='COG', **json.loads(sys.argv[3]))",
                    f"vrt://{vrt}?srcwin=0,0,{w['width']},{rows}", str(out_b), json.dumps(cog_driver_options(compress))],
                   check=True, env=gdal_env(url))
    tb = time.perf_counter() - t0
    b_f32 = w["width"] * rows * 128 * 4
    mb_b = b_f32 / 1e6 / tb
    print(f"(b) GDAL COG of the VRT: {b_f32 / 1e6:,.0f} MB float32 (a {rows}-row strip) in {tb:.1f} s = {mb_b:,.1f} MB/s")

    # (c) today's path: whole tiles -> numpy -> per-tile GeoTIFF -> gdalbuildvrt -> COG
    cdir = work / "c"
    cdir.mkdir()
    t0 = time.perf_counter()
    paths = []
    for t in rec["tiles"]:
        g = S3Location.parse(t["grid"])
        s = S3Location.parse(t["scales"])
        emb = np.load(io.BytesIO(client(ep).get_object(Bucket=g.bucket, Key=g.key)["Body"].read()))
        sc = np.load(io.BytesIO(client(ep).get_object(Bucket=s.bucket, Key=s.key)["Body"].read()))
        ok = np.isfinite(sc) & (sc > 0) & (sc < 1e6)
        val = emb.astype(np.float32) * np.where(ok, sc, np.nan).astype(np.float32)[..., None]
        tp = cdir / f"{t['name']}.tif"
        with rasterio.open(tp, "w", driver="GTiff", width=t["width"], height=t["height"], count=128, dtype="float32",
                           crs=f"EPSG:{t['epsg']}", transform=rasterio.Affine(10, 0, t["origin"][0], 0, -10, t["origin"][1]),
                           nodata=float("nan"), tiled=True) as d:
            d.write(np.moveaxis(val, 2, 0))
        paths.append(str(tp))
    subprocess.run(["gdalbuildvrt", "-q", str(cdir / "all.vrt"), *paths], check=True)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(cdir / "all.vrt", work / "c.tif", driver="COG", **cog_driver_options(compress))
    tc = time.perf_counter() - t0
    with rasterio.open(work / "c.tif") as d:
        c_f32 = d.width * d.height * 128 * 4
    print(f"(c) whole tiles + numpy + per-tile GeoTIFF + gdalbuildvrt + COG: {tc:.1f} s, {c_f32 / 1e6 / tc:,.1f} MB/s")

    # (d) floor: the same ranged GETs as (a), then compressing (a)'s pixels once (with overviews)
    with rasterio.open(out_a) as d:
        arr, prof = d.read(), d.profile
    t0 = time.perf_counter()
    ranges = []
    for t in rec["tiles"]:
        for key, off, size, per_row in (("grid", t["grid_offset"], t["grid_size"], t["width"] * 128),
                                         ("scales", t["scales_offset"], t["scales_size"], t["width"] * 4 * t["scale_bands"])):
            for r0 in range(0, t["height"], 512):
                n = min(512, t["height"] - r0)
                ranges.append((S3Location.parse(t[key]), off + r0 * per_row, n * per_row, size))
    with ThreadPoolExecutor(8) as pool:
        fetched = sum(pool.map(lambda r: len(fetch_range(ep, r[0], r[1], r[2], r[3], what="bench")), ranges))
    tf = time.perf_counter() - t0
    t0 = time.perf_counter()
    mem = work / "d_stage.tif"
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS", GDAL_CACHEMAX=512):  # as (a)
        with rasterio.open(mem, "w", **{**prof, "compress": "none", "interleave": "band", "bigtiff": "yes"}) as d:
            d.write(arr)
            d.build_overviews(overview_factors(prof["width"], prof["height"], 512), Resampling.nearest)
        tstage = time.perf_counter() - t0
        t1 = time.perf_counter()
        rasterio.shutil.copy(mem, work / "d.tif", driver="GTiff", COPY_SRC_OVERVIEWS="YES",
                             **cog_options(compress, None, 512))
    tcomp = time.perf_counter() - t1
    td = tf + tcomp
    print(f"(d) floor: fetch {fetched / 1e6:,.0f} MB in {tf:.1f} s + compress once {tcomp:.1f} s = {td:.1f} s, "
          f"{out_f32 / 1e6 / td:,.1f} MB/s (overview/stage prep {tstage:.1f} s not counted)")

    codec_table(arr[:, :512], work)
    ma = out_f32 / 1e6 / ta
    print(f"ratios (MB/s): a/b = {ma / mb_b:.1f}x (target >= 10), a/c = {ma / (c_f32 / 1e6 / tc):.2f}x (target >= 2), "
          f"a/d = {ta / td:.2f}x slower than the floor (target <= 1.5); peak RSS of (a) {rss_a:,.0f} MB (target < 2048)")


CODECS = [("none", {}), ("zstd", {"zstd_level": 1}), ("zstd", {"zstd_level": 3}), ("zstd", {"zstd_level": 6}),
          ("zstd", {"zstd_level": 9}), ("deflate", {"zlevel": 1}), ("deflate", {"zlevel": 6}), ("lzw", {}),
          ("lerc", {"max_z_error": 0})]


def codec_table(arr: np.ndarray, work: Path) -> None:
    """Write speed, read speed and size of each codec on a 512-row strip of (a)'s output."""
    print(f"codecs on a {arr.shape[1]}-row strip, {arr.nbytes / 1e6:,.0f} MB float32 (512 blocks, band interleave, 2 threads):")
    for comp, opts in CODECS:
        opts = {**opts, "predictor": 3} if comp in ("zstd", "deflate", "lzw") else opts
        path = work / "codec.tif"
        with rasterio.Env(GDAL_CACHEMAX=512):
            t0 = time.perf_counter()
            with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                               dtype="float32", crs="EPSG:32631", transform=rasterio.Affine(10, 0, 0, 0, -10, 0),
                               tiled=True, blockxsize=512, blockysize=512, interleave="band", compress=comp,
                               num_threads="ALL_CPUS", **opts) as d:
                d.write(arr)
            tw = time.perf_counter() - t0
            t0 = time.perf_counter()
            with rasterio.open(path) as d:
                back = d.read()
            tr = time.perf_counter() - t0
        assert np.array_equal(back, arr, equal_nan=True), comp
        print(f"  {comp:8s} {' '.join(f'{k}={v}' for k, v in opts.items()):24s} write {arr.nbytes / 1e6 / tw:5.0f} MB/s  "
              f"read {arr.nbytes / 1e6 / tr:5.0f} MB/s  size {path.stat().st_size / arr.nbytes:.3f} of float32")


if __name__ == "__main__":
    main()

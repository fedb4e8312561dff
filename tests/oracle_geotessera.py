"""Test oracle: build upstream geotessera's own Zarr store from local .npy tiles and dump what it holds.

Run with the oracle venv's interpreter (Python 3.12 + PyPI geotessera==0.11.0, see scripts/test.sh), never
with the project's own venv; this file does not import tessvrt:

    $TESSVRT_ORACLE_PY tests/oracle_geotessera.py --root ROOT --dataset v1 --year 2024 --work DIR --out OUT.npz \\
        [--tile LON,LAT ...] [--workers 1] [--no-reader] [--no-stretch-stats] [--reader-bbox W,S,E,N ...] [--margin 2]

ROOT is laid out like the bucket: ROOT/tessera/tessera/npy/{dataset}/{year}/grid_{lon}_{lat}/grid_{lon}_{lat}.npy
and ..._scales.npy. ROOT is only read. In DIR the script makes upstream's "local mirror" (a symlink to the
dataset's npy tree, a manifest.parquet, a landmasks.parquet and one all-land landmask GeoTIFF per tile on the
grid of upstream's own geotessera.zarr.project_tile), then runs upstream's CLI as a user would:

    geotessera-registry zarr-init DIR/mirror --years YEAR --output DIR/store.zarr --dataset-version V --dataset-variant X
    geotessera-registry zarr-fill DIR/mirror DIR/store.zarr --year YEAR --workers N --dataset-version V --dataset-variant X

Logs go to DIR/zarr-init.log and DIR/zarr-fill.log. The manifest lists the tiles sorted by (year, lon, lat), the
order of upstream's s3scan manifests; zarr-fill pastes tiles in manifest order, so where tiles overlap the last
one wins (--reverse-order flips it, to show that the order decides).

OUT.npz (np.load(..., allow_pickle=False)):
  meta                 JSON string: inputs, commands, timings, root attrs, per group attrs and array layout,
                       the windows and reader reads listed below, versions.
  Zone groups are 4096-px sharded and mostly empty, so each group is dumped as one or more windows: the
  pixel rectangles of its tiles (upstream's project_tile corner, floor to the 10 m grid) grown by --margin
  pixels on every side, then merged where they overlap or touch. For window i:
  w{i}_group           str, e.g. "utm31" (south tiles live in the same group, on the north EPSG, northing - 1e7)
  w{i}_epsg            int, from the group's proj:code
  w{i}_transform       float64 (6,), the group's spatial:transform [a, b, c, d, e, f] (c, f = grid origin x, y)
  w{i}_origin          float64 (2,), (c, f) again for convenience
  w{i}_offset          int64 (2,), (row0, col0) of the window in the group's arrays
  w{i}_x, w{i}_y       float64, the group's x / y coordinate arrays (pixel centres) over the window
  w{i}_embeddings      int8 (128, h, w): band-first, as stored (array layout (time, band, y, x))
  w{i}_scales          float32 (h, w): as stored (+inf = never written, NaN = invalid or water)
  Reader reads (unless --no-reader), for reader read j:
  r{j}_bbox            float64 (4,), the lon/lat bbox given to GeoTesseraZarr.read_region
  r{j}_values          float32 (H, W, 128), band-last, dequantised, NaN where the stored scale is not finite
  r{j}_transform       float64 (6,), rasterio Affine (a, b, c, d, e, f) of the returned window
  r{j}_crs             str, e.g. "EPSG:32631"
Exit status: non-zero when zarr-init or zarr-fill fails (the log tail is printed).

Reading an existing store instead (tessvrt's sample stores, tests/test_zarr.py and scripts/bench_zarr.py):

    $TESSVRT_ORACLE_PY tests/oracle_geotessera.py --store STORE --year 2024 --out OUT.npz --reader-bbox W,S,E,N ...
        [--export-dir DIR]

writes meta and r{j}_* as above for each bbox (GeoTesseraZarr(STORE).read_region), and with --export-dir also
times upstream's own export (GeoTesseraZarr.export_geotiffs(bbox, year, DIR)) of each bbox: meta["export"].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GRID_RE = re.compile(r"^grid_(-?\d+\.\d+)_(-?\d+\.\d+)$")
PX = 10.0


def parse_pair(text: str) -> tuple[float, float]:
    lon, lat = (float(v) for v in text.split(","))
    return round(lon, 2), round(lat, 2)


def grid_name(lon: float, lat: float) -> str:
    return f"grid_{lon:.2f}_{lat:.2f}"


def discover(npy_root: Path, year: int, wanted: list[tuple[float, float]] | None) -> list[dict]:
    ydir = npy_root / str(year)
    if wanted:
        names = [grid_name(lon, lat) for lon, lat in wanted]
    else:
        names = sorted(p.name for p in ydir.glob("grid_*") if GRID_RE.match(p.name))
    tiles = []
    for name in names:
        m = GRID_RE.match(name)
        emb, sc = ydir / name / f"{name}.npy", ydir / name / f"{name}_scales.npy"
        if not (m and emb.is_file() and sc.is_file()):
            raise SystemExit(f"tile {name}: {emb} or {sc} missing")
        tiles.append({"name": name, "lon": float(m.group(1)), "lat": float(m.group(2)),
                      "grid_size": emb.stat().st_size, "scales_size": sc.stat().st_size,
                      "emb_shape": list(np.load(emb, mmap_mode="r").shape),
                      "scales_shape": list(np.load(sc, mmap_mode="r").shape)})
    if not tiles:
        raise SystemExit(f"no tiles under {ydir}")
    return tiles


def make_mirror(work: Path, npy_root: Path, year: int, tiles: list[dict], reverse: bool) -> Path:
    """Upstream's flat local mirror: global_0.1_degree_representation/, global_0.1_degree_tiff_all/, registries."""
    import pandas as pd
    import rasterio
    from geotessera.registry import EMBEDDINGS_DIR_NAME, LANDMASKS_DIR_NAME
    from geotessera.zarr import project_tile

    mirror = work / "mirror"
    (mirror / LANDMASKS_DIR_NAME).mkdir(parents=True)
    (mirror / EMBEDDINGS_DIR_NAME).symlink_to(npy_root.resolve(), target_is_directory=True)
    lm_rows = []
    for t in tiles:
        ti = project_tile(t["lon"], t["lat"], year)
        t.update(epsg=ti.epsg, corner=[ti.transform.c, ti.transform.f], width=ti.width, height=ti.height)
        path = mirror / LANDMASKS_DIR_NAME / f"{t['name']}.tiff"
        with rasterio.open(path, "w", driver="GTiff", width=ti.width, height=ti.height, count=1, dtype="uint8",
                           crs=f"EPSG:{ti.epsg}", transform=ti.transform, compress="deflate") as dst:
            dst.write(np.ones((1, ti.height, ti.width), np.uint8))  # 1 = land everywhere
        lm_rows.append({"lon": t["lon"], "lat": t["lat"], "file_size": path.stat().st_size})
    df = pd.DataFrame([{"year": year, "lon": t["lon"], "lat": t["lat"], "grid_size": t["grid_size"],
                        "scales_size": t["scales_size"]} for t in tiles])
    df = df.sort_values(["year", "lon", "lat"], ascending=not reverse)
    lm = pd.DataFrame(lm_rows).sort_values(["lon", "lat"])
    for d in (df, lm):
        d["lon_i"] = (d["lon"] * 100).round().astype(np.int32)
        d["lat_i"] = (d["lat"] * 100).round().astype(np.int32)
    df.to_parquet(mirror / "manifest.parquet", index=False)
    lm.to_parquet(mirror / "landmasks.parquet", index=False)
    return mirror


def run_cli(args: list[str], log: Path, env: dict) -> tuple[int, float]:
    exe = Path(sys.executable).with_name("geotessera-registry")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from geotessera.registry_cli import main; "
                                                                 "sys.exit(main())"]
    t0 = time.monotonic()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd + args, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    return rc, time.monotonic() - t0


def rects_to_windows(rects: list[tuple[int, int, int, int, str]]) -> list[tuple[int, int, int, int, list[str]]]:
    """Merge (r0, r1, c0, c1) rectangles that overlap or touch into bounding windows."""
    wins = [(r0, r1, c0, c1, [n]) for r0, r1, c0, c1, n in rects]
    merged = True
    while merged:
        merged = False
        for i in range(len(wins)):
            for j in range(i + 1, len(wins)):
                a, b = wins[i], wins[j]
                if a[0] <= b[1] and b[0] <= a[1] and a[2] <= b[3] and b[2] <= a[3]:
                    wins[i] = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]), a[4] + b[4])
                    del wins[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(wins)


def array_layout(arr) -> dict:
    md = arr.metadata.to_dict()
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks),
            "shards": list(arr.shards) if arr.shards else None, "fill_value": str(md.get("fill_value")),
            "dimension_names": md.get("dimension_names"), "codecs": md.get("codecs")}


def dump_store(store: Path, year: int, tiles: list[dict], margin: int, out: dict, meta: dict) -> None:
    import zarr

    root = zarr.open_group(str(store), mode="r")
    meta["root_attrs"] = dict(root.attrs)
    meta["groups"], meta["windows"] = {}, []
    for gname in sorted(k for k in root.group_keys() if k.startswith("utm")):
        g = root[gname]
        attrs = dict(g.attrs)
        tr = [float(v) for v in attrs["spatial:transform"]]
        ox, oy = tr[2], tr[5]
        epsg = int(attrs["proj:code"].split(":")[1])
        years = [int(v) for v in g["time"][:]]
        ti = years.index(year)
        meta["groups"][gname] = {"attrs": attrs, "years": years, "arrays": {k: array_layout(g[k]) for k in g.array_keys()}}
        H, W = g["scales"].shape[1:]
        rects = []
        for t in tiles:
            if f"utm{int(math.floor((t['lon'] + 180) / 6)) + 1:02d}" != gname:
                continue
            e0, n0 = t["corner"]
            n0c = n0 - 10_000_000.0 if t["lat"] < 0 else n0  # south tiles sit on the north EPSG, negative northing
            c0, r0 = math.floor((e0 - ox) / PX) - margin, math.floor((oy - n0c) / PX) - margin
            rects.append((max(r0, 0), min(r0 + t["height"] + 2 * margin, H),
                          max(c0, 0), min(c0 + t["width"] + 2 * margin, W), t["name"]))
        x, y = g["x"][:], g["y"][:]
        for r0, r1, c0, c1, names in rects_to_windows(rects):
            i = len(meta["windows"])
            meta["windows"].append({"key": f"w{i}", "group": gname, "epsg": epsg, "transform": tr,
                                    "row0": r0, "col0": c0, "height": r1 - r0, "width": c1 - c0, "tiles": names})
            out[f"w{i}_group"] = np.array(gname)
            out[f"w{i}_epsg"] = np.array(epsg)
            out[f"w{i}_transform"] = np.array(tr, np.float64)
            out[f"w{i}_origin"] = np.array([ox, oy], np.float64)
            out[f"w{i}_offset"] = np.array([r0, c0], np.int64)
            out[f"w{i}_x"], out[f"w{i}_y"] = x[c0:c1], y[r0:r1]
            out[f"w{i}_embeddings"] = np.asarray(g["embeddings"][ti, :, r0:r1, c0:c1])
            out[f"w{i}_scales"] = np.asarray(g["scales"][ti, r0:r1, c0:c1])


def read_with_reader(store: Path, year: int, bboxes: list[tuple[float, ...]], out: dict, meta: dict) -> None:
    """Upstream's public reader: GeoTesseraZarr(local path).read_region(lon/lat bbox, year)."""
    from geotessera import GeoTesseraZarr

    gz = GeoTesseraZarr(str(store))
    meta["reader"] = {"call": "geotessera.GeoTesseraZarr(store).read_region(bbox, year)", "reads": []}
    for j, bbox in enumerate(bboxes):
        values, transform, crs = gz.read_region(tuple(bbox), year)
        out[f"r{j}_bbox"] = np.array(bbox, np.float64)
        out[f"r{j}_values"] = np.asarray(values, np.float32)
        out[f"r{j}_transform"] = np.array(tuple(transform)[:6], np.float64)
        out[f"r{j}_crs"] = np.array(str(crs))
        meta["reader"]["reads"].append({"key": f"r{j}", "bbox": list(bbox), "crs": str(crs),
                                        "transform": list(tuple(transform)[:6]), "shape": list(values.shape)})
        del values


def read_store(a: argparse.Namespace) -> int:
    """--store mode: GeoTesseraZarr.read_region (and, with --export-dir, export_geotiffs) of an existing store."""
    import geotessera
    from geotessera import GeoTesseraZarr

    bboxes = [tuple(float(v) for v in b.split(",")) for b in a.reader_bbox]
    meta: dict = {"geotessera": geotessera.__version__, "python": sys.version.split()[0], "store": str(a.store),
                  "year": a.year, "seconds": {}}
    out: dict = {}
    t0 = time.monotonic()
    read_with_reader(a.store, a.year, bboxes, out, meta)
    meta["seconds"]["reader"] = round(time.monotonic() - t0, 3)
    if a.export_dir is not None:
        meta["export"] = []
        for j, bbox in enumerate(bboxes):
            folder = a.export_dir / f"e{j}"
            t0 = time.monotonic()
            files = GeoTesseraZarr(str(a.store)).export_geotiffs(bbox, a.year, str(folder))
            meta["export"].append({"bbox": list(bbox), "seconds": round(time.monotonic() - t0, 3),
                                   "files": [str(f) for f in files]})
    out["meta"] = np.array(json.dumps(meta, default=str))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **out)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, help="required unless --store")
    ap.add_argument("--dataset", help="npy/ directory, e.g. v1, v1.1-cam, v2-2B-L~beta1 (required unless --store)")
    ap.add_argument("--year", required=True, type=int)
    ap.add_argument("--work", type=Path, help="scratch directory (mirror/, store.zarr, logs; required unless --store)")
    ap.add_argument("--store", type=Path, help="read this existing store with GeoTesseraZarr instead of building one")
    ap.add_argument("--export-dir", type=Path, help="with --store: also time export_geotiffs of each --reader-bbox")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tile", action="append", default=[], metavar="LON,LAT", help="restrict to these tiles (repeatable)")
    ap.add_argument("--workers", type=int, default=1, help="zarr-fill workers (each can peak ~6 GiB; default 1)")
    ap.add_argument("--margin", type=int, default=2, help="pixels dumped around each tile's rectangle (default 2)")
    ap.add_argument("--no-reader", action="store_true", help="skip the GeoTesseraZarr.read_region reads")
    ap.add_argument("--no-stretch-stats", action="store_true",
                    help="pass zarr-fill --no-stretch-stats (display statistics, not embeddings or scales)")
    ap.add_argument("--reader-bbox", action="append", default=[], metavar="W,S,E,N",
                    help="lon/lat bbox for the reader (repeatable; default: each tile's own 0.1-degree cell)")
    ap.add_argument("--reverse-order", action="store_true", help="write the manifest in descending (lon, lat) order")
    a = ap.parse_args(argv)
    if a.store is not None:
        return read_store(a)
    if a.root is None or a.dataset is None or a.work is None:
        ap.error("--root, --dataset and --work are required unless --store is given")

    import geotessera
    from geotessera.registry import dataset_from_path

    ds = dataset_from_path(a.dataset)
    if ds is None:
        raise SystemExit(f"--dataset {a.dataset!r} is not an npy dataset directory name")
    version, variant = ds
    npy_root = a.root / "tessera" / "tessera" / "npy" / a.dataset
    tiles = discover(npy_root, a.year, [parse_pair(t) for t in a.tile] or None)

    a.work.mkdir(parents=True, exist_ok=True)
    for leftover in ("mirror", "store.zarr", "store.zarr.build", "cache"):  # only what this script makes
        p = a.work / leftover
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.exists():
            shutil.rmtree(p)
    mirror = make_mirror(a.work, npy_root, a.year, tiles, a.reverse_order)
    store = a.work / "store.zarr"

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["XDG_CACHE_HOME"] = str(a.work / "cache")  # upstream caches registries there; keep ~/.cache clean
    env.setdefault("COLUMNS", "160")
    dsargs = ["--dataset-version", version, "--dataset-variant", variant]
    init_args = ["zarr-init", str(mirror), "--years", str(a.year), "--output", str(store), *dsargs]
    fill_args = ["zarr-fill", str(mirror), str(store), "--year", str(a.year), "--workers", str(a.workers), *dsargs,
                 *(["--no-stretch-stats"] if a.no_stretch_stats else [])]
    meta: dict = {"geotessera": geotessera.__version__, "python": sys.version.split()[0], "root": str(a.root),
                  "dataset": a.dataset, "version": version, "variant": variant, "year": a.year,
                  "embeddings_layout": "(128, h, w) int8 band-first, as stored", "commands": {}, "seconds": {}}
    for label, args in (("zarr-init", init_args), ("zarr-fill", fill_args)):
        log = a.work / f"{label}.log"
        rc, secs = run_cli(args, log, env)
        meta["commands"][label] = "geotessera-registry " + " ".join(args)
        meta["seconds"][label] = round(secs, 2)
        print(f"{label}: rc={rc} in {secs:.1f} s (log {log})", file=sys.stderr)
        if rc != 0:
            print(log.read_text()[-4000:], file=sys.stderr)
            return rc
    meta["tiles"] = tiles

    out: dict = {}
    dump_store(store, a.year, tiles, a.margin, out, meta)
    if not a.no_reader:
        bboxes = [tuple(float(v) for v in b.split(",")) for b in a.reader_bbox] or [
            (t["lon"] - 0.05, t["lat"] - 0.05, t["lon"] + 0.05, t["lat"] + 0.05) for t in tiles]
        t0 = time.monotonic()
        read_with_reader(store, a.year, bboxes, out, meta)
        meta["seconds"]["reader"] = round(time.monotonic() - t0, 2)
    out["meta"] = np.array(json.dumps(meta, default=str))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **out)
    print(f"wrote {a.out}: {len(meta['windows'])} window(s), {len(meta.get('reader', {}).get('reads', []))} reader read(s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

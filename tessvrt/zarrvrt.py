"""tessvrt build --format zarr: VRTs over upstream's sharded Zarr stores, through Kerchunk references.

Layers, as for npy (docs/zarr_vrt.md), all in the sidecar folder but the user-facing VRTs:
  refs_utmNN_<array>.json  Kerchunk v1 references to the inner chunks the region needs (tessvrt.kerchunk);
  mosaic_<epsg>.vrt  128 Int8 bands and one Float32 scales band of the zone group's arrays for the
                     year (the JSON files, opened by GDAL's Zarr driver), shifted onto the region's window; a LUT turns
                     invalid scales (upstream's rule, tessvrt.scales) into NaN;
  <name>.vrt         128 Float32 bands = mul(embedding, scale) over the mosaic (vrt.dequant_vrt).
A region (--region/--country, --clip) narrows the pixels as materialise narrows them (pixels.clip.narrow):
  clip_<epsg>.vrt    a part's scales with a mask band clearing the pixels the region leaves out; the mosaics
                     take their scales from it (UseMaskBand), so those pixels read NaN in every band.
GDAL reads it from 3.11 (Kerchunk) with its Zarr driver and Blosc (doctor checks both).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from . import __version__, vrt
from .errors import TessvrtError, human_bytes
from .grid import Window
from .kerchunk import RefStats, check_layout, dumps, zone_refs
from .publish import TargetLock, clean_stale, publish, tmp_path
from .record import PIXEL_GRID, RECORD
from .source.datasets import DATASETS
from .source.s3 import Endpoint, Pool

FORMAT = "zarr"
MIN_GDAL = (3, 11)  # /vsikerchunk_json_ref/
REF_BYTES = 80  # JSON bytes of one chunk reference (measured: 75-100 KB per 1,000)
MAX_CHUNKS = 500_000  # references in one build: GDAL parses the whole JSON file when it opens the VRT


@dataclass
class _Part:
    """One zone part of the region (one EPSG): its window and where it sits in its group's arrays."""

    label: str
    window: Window
    group: str  # utmNN
    t: int  # time index of the year
    row: int  # group array row/col of the window's top-left pixel
    col: int
    height: int  # the group's grid
    width: int
    meta: dict
    clip: str = ""  # its masked scales (clip_<epsg>.vrt, sidecar-relative) when a region leaves pixels out


def refs_name(group: str, array: str) -> str:
    """The sidecar file of an array's references: GDAL's Zarr driver opens it directly (the array at its root)."""
    return f"refs_{group}_{array}.json"


def on_grid(win: Window, epsg: int) -> Window:
    """A window of one zone's 326NN or 327NN grid on the other (the same pixels: northings differ by 10,000 km)."""
    if win.epsg == epsg:
        return win
    shift = 1_000_000 if epsg > win.epsg else -1_000_000  # rows of 10 m in the false northing
    return Window(epsg, win.col0, win.row0 + shift, win.width, win.height)


def native_sources(part: _Part, window: Window) -> tuple[list[str], str]:
    """(one source per embedding band, the scales source) placing a part's group pixels in a window of the same zone.

    Clipped to the group's grid; beyond it the mosaic has no source: scales NaN there. A part with a clip file
    takes its scales from it, through its mask."""
    dx, dy = window.offset_of(on_grid(part.window, window.epsg))
    w = part.window
    r0, c0 = max(part.row, 0), max(part.col, 0)
    r1, c1 = min(part.row + w.height, part.height), min(part.col + w.width, part.width)
    if r1 <= r0 or c1 <= c0:
        return [""] * vrt.BANDS, ""
    dst = f'<DstRect xOff="{dx + c0 - part.col}" yOff="{dy + r0 - part.row}" xSize="{c1 - c0}" ySize="{r1 - r0}"/>'
    rects = f'<SrcRect xOff="{c0}" yOff="{r0}" xSize="{c1 - c0}" ySize="{r1 - r0}"/>{dst}'
    emb = escape(refs_name(part.group, "embeddings"))
    bands = [f'<SimpleSource><SourceFilename relativeToVRT="1">{emb}</SourceFilename>'
             f"<SourceBand>{part.t * vrt.BANDS + b + 1}</SourceBand>{rects}</SimpleSource>" for b in range(vrt.BANDS)]
    if part.clip:
        src = f'<SrcRect xOff="{c0 - part.col}" yOff="{r0 - part.row}" xSize="{c1 - c0}" ySize="{r1 - r0}"/>{dst}'
        return bands, (f'<ComplexSource><SourceFilename relativeToVRT="1">{escape(part.clip)}</SourceFilename>'
                       f"<SourceBand>1</SourceBand>{src}<UseMaskBand>true</UseMaskBand></ComplexSource>")
    return bands, _scales_source(part, rects)


def _scales_source(part: _Part, rects: str) -> str:
    """The year's scales of a part's group through the valid-scale LUT (invalid -> NaN)."""
    sc = escape(refs_name(part.group, "scales"))
    return (f'<ComplexSource><SourceFilename relativeToVRT="1">{sc}</SourceFilename><SourceBand>{part.t + 1}</SourceBand>'
            f"{rects}<LUT>{vrt.SCALE_LUT}</LUT></ComplexSource>")


def clip_xml(part: _Part, carve: np.ndarray, const: str) -> str:
    """A part's scales on its own window (NaN beyond the group's grid) with a mask band clearing the carve
    rectangles: the pixels a region leaves out (const: the constant mask source, relative to this file)."""
    w = part.window
    r0, c0 = max(part.row, 0), max(part.col, 0)
    r1, c1 = min(part.row + w.height, part.height), min(part.col + w.width, part.width)
    src = ""
    if r1 > r0 and c1 > c0:
        src = _scales_source(part, f'<SrcRect xOff="{c0}" yOff="{r0}" xSize="{c1 - c0}" ySize="{r1 - r0}"/>'
                                   f'<DstRect xOff="{c0 - part.col}" yOff="{r0 - part.row}" xSize="{c1 - c0}" '
                                   f'ySize="{r1 - r0}"/>')
    return (f'<VRTDataset rasterXSize="{w.width}" rasterYSize="{w.height}">\n'
            + vrt._srs_gt(w.epsg, vrt.window_gt(w))  # noqa: SLF001 - shared SRS/geotransform writer
            + f'  <VRTRasterBand dataType="Float32" band="1"><NoDataValue>nan</NoDataValue>{src}</VRTRasterBand>\n'
            + vrt.mask_band(w.width, w.height, carve, const) + "</VRTDataset>\n")


def left_out(region, win: Window, block: int = 1024) -> np.ndarray:  # noqa: ANN001 - a tessvrt.region.Region
    """(n, 4) rectangles x, y, w, h of win whose pixel centres the region leaves out (Region.carve), computed a
    block at a time so memory stays bounded and blocks wholly inside or outside cost one outline test."""
    out = []
    for b in win.blocks(block):
        r = region.carve(b)
        if len(r):
            x, y = win.offset_of(b)
            out.append(r + np.array([x, y, 0, 0], np.int64))
    return np.concatenate(out) if out else np.empty((0, 4), np.int64)


def raw_xml(window: Window, bands: list[list[str]], scales: list[str]) -> str:
    """A mosaic of raw bands: 128 Int8 embeddings then Float32 scales (NaN = no data), given each band's sources."""
    out = [f'<VRTDataset rasterXSize="{window.width}" rasterYSize="{window.height}">\n',
           vrt._srs_gt(window.epsg, vrt.window_gt(window))]  # noqa: SLF001 - shared SRS/geotransform writer
    for b in range(vrt.BANDS):
        out.append(f'  <VRTRasterBand dataType="Int8" band="{b + 1}">{"".join(s[b] for s in bands)}</VRTRasterBand>\n')
    out.append(f'  <VRTRasterBand dataType="Float32" band="{vrt.BANDS + 1}"><NoDataValue>nan</NoDataValue>{"".join(scales)}'
               "</VRTRasterBand>\n</VRTDataset>\n")
    return "".join(out)


def mosaic_xml(part: _Part) -> str:
    """Raw bands of one part on its own window: embeddings (Int8, band t*128+b of the 4-D array) and scales
    through the valid-scale LUT."""
    bands, scales = native_sources(part, part.window)
    return raw_xml(part.window, [bands], [scales])


def _url(ep: Endpoint, bucket: str, prefix: str, vsi: str):  # noqa: ANN202 - key -> URL
    """A chunk object's URL in the references: s3:// (GDAL's /vsis3/, the gdalrc's bucket settings) or https."""
    if vsi == "s3":
        return lambda key: f"s3://{bucket}/{prefix}{key}"
    return lambda key: f"{ep.https_base}/{bucket}/{prefix}{key}"


def build_zarr(out: Path, sidecar: Path, previous: dict | None, *, year: int, bbox: tuple[float, float, float, float],
               dataset: str, source: str | None, endpoint: str | None, vsi: str, overwrite: bool,
               crs: str | None = None, area=None, clip: bool = False):  # noqa: ANN001, ANN201
    """Write out (the main VRT), per-zone VRTs when the region spans zones, and the sidecar with the references.

    area (a tessvrt.region.Region), clip: a polygon or --clip narrows the pixels exactly as materialise --dataset
    with the same options does (the same zone parts, pixels outside the polygon or its cells NaN)."""
    from .build import BuildResult, _check_zone_names
    from .pixels.clip import ClippedSpec, unwrap
    from .pixels.zarr import forget

    ts, jobs = _jobs(dataset, bbox, year, source, endpoint, area, clip)
    kept = jobs[0].spec if isinstance(jobs[0].spec, ClippedSpec) else None  # the pixels the region keeps
    token = unwrap(jobs[0].spec).token
    try:
        parts = _zone_parts(ts, jobs, year)
        refused = cap_refusal(coverage(ts, parts).chunks)
        if refused:
            raise TessvrtError(refused)
        carves = {p.window.epsg: left_out(kept.region(), p.window) for p in parts} if kept else {}
        stem, parent = out.name[:-4], out.parent
        main = _main_part(parts, crs)
        multi = len(parts) > 1
        zone_names = [f"{stem}_{p.label}.vrt" for p in parts] if multi else []
        _check_zone_names(parent, zone_names, previous, overwrite)
        store = ts.store
        url = _url(store.ep, store.bucket, store.prefix, vsi)
        refs: dict[str, tuple[dict[str, dict], RefStats]] = {}
        with Pool(8, "tessvrt-refs") as pool:
            for gname in dict.fromkeys(p.group for p in parts):
                mine = [p for p in parts if p.group == gname]
                g = ts.require(int(gname[3:]))
                spans = [(slice(p.row, p.row + p.window.height), slice(p.col, p.col + p.window.width)) for p in mine]
                refs[gname] = zone_refs(g, mine[0].t, spans, url, pool)
    finally:
        forget(token)
    clipped = None
    if kept is not None:
        label = area.label if clip else f"{area.label} (its cells)"  # as narrow() clips: the polygon or its cells
        clipped = {"label": label, "wkb": kept.wkb.hex(), "carves": carves}
    with TargetLock([out]):
        clean_stale(parent, [out])
        tmp = tmp_path(out)
        tmp.mkdir()
        try:
            return _write(tmp, out, sidecar, parts, main, refs, zone_names, previous, ts, year, vsi, bbox, source,
                          BuildResult, clipped)
        except OSError as exc:
            raise TessvrtError(f"cannot write {out} and its {sidecar.name} folder ({exc.strerror or exc}); "
                               "free disk space or choose another -o") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _jobs(dataset: str, bbox: tuple[float, float, float, float], year: int, source: str | None, endpoint: str | None,
          area, clip: bool):  # noqa: ANN001, ANN202 - a Region; (TesseraStore, ZoneJobs)
    """The zone jobs materialise --dataset makes for the same options: a polygon or --clip narrows them."""
    from .pixels.zarr import zarr_jobs

    if area is None or not (clip or area.is_polygon):
        return zarr_jobs(dataset, bbox, year, source, endpoint)
    from .pixels.clip import zarr_region_jobs

    if area.tiles:
        raise TessvrtError("--tile with --region, --country or --clip is not supported for Zarr VRTs; give the "
                           "region alone (or --bbox around the tiles)")
    return zarr_region_jobs(dataset, area, year, source, endpoint, clip)


def _zone_parts(ts, jobs: list, year: int) -> list[_Part]:  # noqa: ANN001 - a zarrstore.TesseraStore, ZoneJobs
    """Each zone job's place in its group's arrays (metadata only: the groups' zarr.json and years)."""
    parts = []
    for j in jobs:
        g = ts.require(j.window.epsg % 100)
        r, c = g.offset(j.window)
        parts.append(_Part(j.label, j.window, g.name, g.time_index(year, ts.uri), r, c, g.height, g.width, j.meta))
    return parts


@dataclass
class Coverage:
    """What a build's references would cover, from array metadata alone (no shard index read)."""

    chunks: int  # inner chunks of embeddings and scales under the parts: at most this many references
    shards: int  # shard objects whose index the build reads (one suffix GET each)
    index_bytes: int  # their indexes' bytes


def coverage(ts, parts: list[_Part]) -> Coverage:  # noqa: ANN001 - a zarrstore.TesseraStore
    """The inner chunks and shards under the parts, counted as kerchunk.zone_refs lists them (each part clipped
    to its group's grid, a chunk shared by two parts of one group counted once). An upper bound of the
    references: a chunk the shard index marks empty gets none."""
    total = Coverage(0, 0, 0)
    for gname in dict.fromkeys(p.group for p in parts):
        g = ts.require(int(gname[3:]))
        check_layout(g)
        spans = []
        for p in parts:
            r0, c0 = max(p.row, 0), max(p.col, 0)
            r1, c1 = min(p.row + p.window.height, g.height), min(p.col + p.window.width, g.width)
            if p.group == gname and r1 > r0 and c1 > c0:
                spans.append((r0, r1, c0, c1))
        for arr in (g.embeddings, g.scales):
            shards = _cells(arr.shape, arr.outer, spans)
            total.chunks += _cells(arr.shape, arr.chunk, spans)
            total.shards += shards
            total.index_bytes += shards * arr.index_nbytes
    return total


def _cells(shape: tuple[int, ...], unit: tuple[int, ...], spans: list[tuple[int, int, int, int]]) -> int:
    """Chunks (or shards) of size unit under pixel spans (r0, r1, c0, c1) of an array's last two axes, each
    counted once; all of the middle (band) axis, one time step."""
    mid = math.prod(-(-shape[d] // unit[d]) for d in range(1, len(shape) - 2))
    ys, xs = unit[-2], unit[-1]
    return mid * _union([(r0 // ys, (r1 - 1) // ys + 1, c0 // xs, (c1 - 1) // xs + 1) for r0, r1, c0, c1 in spans])


def _union(rects: list[tuple[int, int, int, int]]) -> int:
    """Cells covered by half-open (y0, y1, x0, x1) rectangles (a few: one per zone part of a group)."""
    ys = sorted({v for r in rects for v in r[:2]})
    xs = sorted({v for r in rects for v in r[2:]})
    return sum((y1 - y0) * (x1 - x0) for y0, y1 in itertools.pairwise(ys) for x0, x1 in itertools.pairwise(xs)
               if any(r[0] <= y0 and y1 <= r[1] and r[2] <= x0 and x1 <= r[3] for r in rects))


def cap_refusal(chunks: int) -> str | None:
    """Why a build of this many chunk references is refused (None: it is not): GDAL loads the JSON whole on open."""
    if chunks <= MAX_CHUNKS:
        return None
    return (f"the region spans up to {chunks:,} inner chunks: up to {human_bytes(chunks * REF_BYTES)} of references "
            f"that GDAL loads whole when it opens the VRT; split it into builds of at most {MAX_CHUNKS:,} chunks "
            "(about 1.4 degrees square near the equator), or use tessvrt materialise")


def dry_run_zarr(*, year: int, bbox: tuple[float, float, float, float], dataset: str, source: str | None,
                 endpoint: str | None, crs: str | None = None, area=None,  # noqa: ANN001 - a Region
                 clip: bool = False):  # noqa: ANN201 - an estimate.ZarrBuildEstimate
    """build --dry-run of a Zarr VRT: the parts, the references' chunks and size, the shard indexes the build
    would read, and what materialising it all costs, from the store's zarr.json documents and years alone
    (no shard index or chunk is read, nothing is written). A region over MAX_CHUNKS gets its refusal as
    `refused` instead of an error, so the figures that say how to split it are still given."""
    from .estimate import ZarrBuildEstimate, estimate
    from .pixels.clip import unwrap
    from .pixels.zarr import forget

    ts, jobs = _jobs(dataset, bbox, year, source, endpoint, area, clip)
    try:
        parts = _zone_parts(ts, jobs, year)
        _main_part(parts, crs)  # a --crs the build would refuse
        cover = coverage(ts, parts)
    finally:
        forget(unwrap(jobs[0].spec).token)
    return ZarrBuildEstimate(cover.chunks, cover.shards, cover.index_bytes, cover.chunks * REF_BYTES, MAX_CHUNKS,
                             cap_refusal(cover.chunks), estimate(jobs, vrt.BANDS, len(jobs)))


def _main_part(parts: list[_Part], crs: str | None) -> _Part:
    """The part whose grid the main VRT is on: --crs when given (one of the parts' EPSG), else the largest."""
    if crs:
        code = crs.upper().removeprefix("EPSG:")
        hit = [p for p in parts if str(p.window.epsg) == code]
        if not hit:
            raise TessvrtError(f"--crs {crs!r}: a Zarr VRT's main grid is one of its zone parts' "
                               f"({', '.join(f'EPSG:{p.window.epsg}' for p in parts)}); choose one of those")
        return hit[0]
    return max(parts, key=lambda p: (p.window.width * p.window.height, -p.window.epsg))


def _write(tmp: Path, out: Path, sidecar: Path, parts: list[_Part], main: _Part, refs: dict, zone_names: list[str],
           previous: dict | None, ts, year: int, vsi: str, bbox: tuple, source: str | None,  # noqa: ANN001
           result: type, clipped: dict | None = None):  # noqa: ANN202
    folder = tmp / sidecar.name
    folder.mkdir()
    size = [1, 1]  # of the constant mask source one.tif: the largest mask

    def const(width: int, height: int) -> str:
        size[:] = [max(size[0], width), max(size[1], height)]
        return "one.tif"

    for p in parts:  # parts the region leaves pixels out of: their scales through a mask (clip_<epsg>.vrt)
        carve = clipped["carves"][p.window.epsg] if clipped else ()
        if len(carve):
            p.clip = f"clip_{p.window.epsg}.vrt"
            (folder / p.clip).write_text(clip_xml(p, carve, const(p.window.width, p.window.height)))
    for gname, (docs, _) in refs.items():
        for array, doc in docs.items():
            (folder / refs_name(gname, array)).write_text(dumps(doc))
    written: dict[str, str] = {}
    zone_vrts = {}
    for p, name in zip(parts, zone_names or [out.name], strict=False):
        mosaic = f"mosaic_{p.window.epsg}.vrt"
        (folder / mosaic).write_text(mosaic_xml(p))
        written[name] = vrt.dequant_vrt(p.window, f"{sidecar.name}/{mosaic}", 1, {**p.meta, "TESSVRT_FORMAT": FORMAT},
                                        signed=True)
        zone_vrts[p.window.epsg] = out.with_name(name)
    main_window = main.window
    if zone_names:  # the main VRT: every part on the grid of the part holding most pixels
        from .zarrcross import cross_zone

        def write(rel: str, text: str) -> None:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)

        main_window = cross_zone(write, parts, main, bbox, lambda w, h: "../" + const(w, h))
        written[out.name] = vrt.dequant_vrt(main_window, f"{sidecar.name}/mosaic.vrt", 1,
                                            {**main.meta, "TESSVRT_FORMAT": FORMAT}, signed=True)
    if zone_names or any(p.clip for p in parts):
        from .build import _write_const

        _write_const(folder / "one.tif", *size)
    stats = {g: s for g, (_, s) in refs.items()}
    record = {
        "tessvrt": __version__, "format": FORMAT, "pixel_grid": PIXEL_GRID, "dataset": ts.dataset.name,
        "dataset_version": ts.dataset.version, "variant": ts.dataset.variant, "year": year, "store": ts.uri,
        "endpoint": ts.store.ep.url, "region": ts.store.ep.region, "vsi": vsi,
        "bbox": list(bbox), "source": source,
        "main": {"epsg": main_window.epsg, "window": {"epsg": main_window.epsg, "col0": main_window.col0,
                                                      "row0": main_window.row0, "width": main_window.width,
                                                      "height": main_window.height}},
        "zones": [{"epsg": p.window.epsg, "label": p.label, "vrt": zone_vrts[p.window.epsg].name, "group": p.group,
                   "window": {"epsg": p.window.epsg, "col0": p.window.col0, "row0": p.window.row0,
                              "width": p.window.width, "height": p.window.height}} for p in parts],
        "refs": {g: {"chunks": s.chunks, "bytes": s.bytes, "absent": s.absent, "shards": len(s.indexed),
                     "dropped_scales": s.dropped_scales, "objects": len(s.keys)} for g, s in stats.items()},
    }
    if clipped:  # what the region keeps: materialise and open_region of this VRT narrow its pixels the same way
        record["clip"] = {"label": clipped["label"], "wkb": clipped["wkb"]}
    (folder / RECORD).write_text(json.dumps(record))
    for name, text in written.items():
        (tmp / name).write_text(text)
    trash = tmp / "previous"
    trash.mkdir()
    publish([(tmp / name, out.parent / name) for name in (sidecar.name, *written)], trash)
    for old in (previous or {}).get("zones", []):
        p = out.parent / str(old.get("vrt", ""))
        if p.name not in written and p.parent == out.parent and p.is_file() and not p.is_symlink():
            os.replace(p, trash / p.name)
    n = sum(s.chunks for s in stats.values())
    mb = sum(s.bytes for s in stats.values()) / 1e6
    return result(out, zone_vrts, sidecar, [], [], [f"Zarr store {ts.uri}: {n:,} inner chunks referenced "
                                                   f"({mb:,.1f} MB remote); GDAL >= 3.11 reads it"])


def check_record(rec: dict, path: Path) -> None:
    """The fields info and materialise use, typed: a hand-edited record is one line, not a traceback."""
    ok = (isinstance(rec.get("dataset"), str) and isinstance(rec.get("year"), int) and isinstance(rec.get("zones"), list)
          and rec["zones"] and isinstance(rec.get("bbox"), list) and len(rec["bbox"]) == 4
          and all(isinstance(v, int | float) for v in rec["bbox"]) and isinstance(rec.get("refs"), dict)
          and all(isinstance(z, dict) and isinstance(z.get("window"), dict) for z in rec["zones"]))
    if not ok:
        raise TessvrtError(f"{path} is not a readable Zarr VRT record (edited after tessvrt build?); rebuild with "
                           "tessvrt build --format zarr")


def gdal_problem(version: str, drivers: set[str], compressors: str | None) -> str | None:
    """Why a GDAL cannot read Zarr VRTs (None: it can): Kerchunk needs >= 3.11, the Zarr driver, and Blosc."""
    v = _version(version)
    why = (f"is older than {MIN_GDAL[0]}.{MIN_GDAL[1]} (no Kerchunk references)" if v < MIN_GDAL else
           "has no Zarr driver" if "Zarr" not in drivers else
           "has no Blosc codec in its Zarr driver" if compressors is not None and "blosc" not in compressors.split(",")
           else None)
    if why is None:
        return None
    npy = ", ".join(d.npy for d in DATASETS if d.npy)
    return (f"GDAL {version} {why}: Zarr VRTs need GDAL >= {MIN_GDAL[0]}.{MIN_GDAL[1]} with the Zarr driver and "
            f"Blosc; with this GDAL use --format npy (datasets {npy}) or `tessvrt materialise` (COGs any GDAL reads)")


def local_gdal_problem() -> str | None:
    """gdal_problem for rasterio's GDAL in this process."""
    import rasterio
    from rasterio.env import GDALVersion  # noqa: F401 - rasterio's GDAL is loaded with it

    with rasterio.Env() as env:
        drivers = set(env.drivers())
    return gdal_problem(rasterio.__gdal_version__, drivers, None)


PROBE_VALUES = bytes(range(0, 16))  # int8 0..15 in one Blosc zstd bitshuffle chunk: upstream's embeddings codec


def write_probe(folder: Path) -> Path:
    """A 4x4 Kerchunk JSON with one inline chunk coded as upstream codes embeddings: a GDAL that reads its
    values back reads Zarr VRTs (Kerchunk, Zarr driver, Blosc zstd, bitshuffle), with no network."""
    import base64

    from numcodecs import Blosc

    chunk = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE).encode(PROBE_VALUES)
    zarray = {"zarr_format": 2, "shape": [4, 4], "chunks": [4, 4], "dtype": "|i1", "filters": None, "fill_value": None,
              "order": "C", "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0}}
    p = folder / "zarr_probe.json"
    p.write_text(dumps({"version": 1, "refs": {".zarray": json.dumps(zarray),
                                                "0.0": "base64:" + base64.b64encode(bytes(chunk)).decode()}}))
    return p


def zarr_check(what: str, res: dict):  # noqa: ANN201 - a doctor.Check
    """doctor's verdict on one GDAL for Zarr VRTs: the probe's values read back, else the one line saying why not."""
    from .doctor import Check

    got = res.get("zarr")
    if got == PROBE_VALUES.hex():
        return Check(f"{what}: Zarr VRTs", True, "reads Kerchunk references with the Zarr driver and Blosc")
    problem = gdal_problem(res["gdal"], set(), None) or gdal_problem(res["gdal"], {"Zarr"}, "") or ""
    if _version(res["gdal"]) >= MIN_GDAL:
        problem = (f"GDAL {res['gdal']} did not read a Blosc-coded Kerchunk chunk ({str(got)[:120]}): it lacks the Zarr "
                   "driver or Blosc; " + problem.split("; ", 1)[-1])
    return Check(f"{what}: Zarr VRTs", False, problem)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:2] if p.isdigit())


__all__ = ["build_zarr", "dry_run_zarr", "mosaic_xml", "refs_name", "MIN_GDAL"]

"""tessvrt build: from manifest rows to VRTs that read TESSERA embeddings remotely."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, blockindex, vrt
from .errors import TessvrtError, check_name, check_output_folder, human_bytes
from .grid import Tile, TileGrid, Window, _to_utm, ownerships, tile_grids, zone_label
from .publish import TargetLock, clean_stale, publish, tmp_path
from .record import PIXEL_GRID, RECORD, SIDECAR_SUFFIX
from .region import BBox, Region, parse_tile  # noqa: F401 - BBox and parse_tile: old callers import them from here
from .source import datasets, npy
from .source.datasets import DEFAULT_DATASET, Mirror, npy_dataset
from .source.manifest import ManifestSource, Selection, read_manifest, select
from .source.s3 import Endpoint, S3Location, get_range


@dataclass
class TileSource:
    tile: Tile
    grid: TileGrid
    raw: vrt.RawTile
    grid_uri: str
    scales_uri: str
    grid_size: int
    scales_size: int


@dataclass
class BuildResult:
    vrt: Path
    zone_vrts: dict[int, Path]
    sidecar: Path
    tiles: list[str]
    missing: list[str]  # names of requested tiles not in the manifest (at most MISSING_LISTED)
    notes: list[str] = field(default_factory=list)  # said on stderr, e.g. which dataset a short name picked
    missing_count: int = 0  # all of them
    estimate: object = None  # dry_run: an estimate.BuildEstimate, nothing written


def _raw_layout(t: Tile, g: TileGrid, row: dict, sel: Selection, mirror: Mirror, endpoint: Endpoint, vsi: str) -> TileSource:
    """Where a tile's bytes are: keys derived as upstream derives them, offsets checked against manifest
    sizes; reads the headers only when the sizes disagree with the computed geometry."""
    gkey, skey = mirror.tile_keys(sel.dataset, sel.year, t)
    gloc, sloc = S3Location(mirror.bucket, gkey), S3Location(mirror.bucket, skey)
    for col, loc in (("grid_path", gloc), ("scales_path", sloc)):
        named = row.get(col)
        if isinstance(named, str) and named and not mirror.same_object(named, loc.key):
            raise TessvrtError(f"manifest row for {t.name} names {named!r}, not {loc.uri} (or the same object in "
                               "another bucket of this repository); refusing it: check --manifest and --source")
    gsize = int(row["grid_size"])
    ssize = row.get("scales_size")
    ssize = int(ssize) if ssize is not None and ssize == ssize else -1  # absent or NaN: read the header
    h, w = g.height, g.width
    goff, soff, nscale = gsize - h * w * vrt.BANDS, None, 1
    if ssize - h * w * 4 == npy.TYPICAL_HEADER:
        soff = npy.TYPICAL_HEADER
    elif ssize - h * w * 4 * vrt.BANDS == npy.TYPICAL_HEADER:
        soff, nscale = npy.TYPICAL_HEADER, vrt.BANDS
    if goff != npy.TYPICAL_HEADER or soff is None:
        # sizes disagree with the computed geometry: believe the bytes, one ranged GET each
        gh = _header(endpoint, gloc)
        try:
            h, w = npy.embedding_shape(gh, vrt.BANDS)
        except ValueError as exc:
            raise TessvrtError(f"{gloc.uri} {exc}; refusing tile {t.name}") from None
        if gh.data_offset + h * w * vrt.BANDS != gsize:
            raise TessvrtError(f"{gloc.uri}: header says {gh.shape} but the manifest size is {gsize}; refusing tile {t.name}")
        sh = _header(endpoint, sloc)
        try:
            nscale = npy.scale_bands(sh, h, w, vrt.BANDS)
        except ValueError as exc:
            raise TessvrtError(f"{sloc.uri} {exc}; refusing tile {t.name}") from None
        goff, soff = gh.data_offset, sh.data_offset
        if ssize < 0:
            ssize = soff + h * w * 4 * nscale
        elif soff + h * w * 4 * nscale != ssize:
            raise TessvrtError(f"{sloc.uri}: header and manifest size {ssize} disagree; refusing tile {t.name}")
        g = TileGrid(t, g.epsg, g.corner_e, g.corner_n, w, h)
    raw = vrt.RawTile(endpoint.vsi_path(gloc, vsi), endpoint.vsi_path(sloc, vsi), goff, soff, nscale, w, h)
    return TileSource(t, g, raw, gloc.uri, sloc.uri, gsize, ssize)


def _header(endpoint: Endpoint, loc: S3Location) -> npy.NpyHeader:
    try:
        head = get_range(endpoint, loc, 0, npy.HEADER_PROBE)
    except Exception as exc:
        raise TessvrtError(f"cannot read the header of {loc.uri}: {exc}") from None
    try:
        return npy.parse_header(head)
    except ValueError as exc:
        raise TessvrtError(f"{loc.uri}: {exc}") from None


def _box_window(epsg: int, west: float, south: float, east: float, north: float, samples: int, margin: float) -> Window:
    """Grid window covering a lon/lat box projected into a zone (edges densified, plus a margin in metres)."""
    k = np.linspace(0, 1, samples)
    lon = np.concatenate([west + (east - west) * k, np.full(samples, east), east - (east - west) * k, np.full(samples, west)])
    lat = np.concatenate([np.full(samples, south), south + (north - south) * k, np.full(samples, north), north - (north - south) * k])
    x, y = _to_utm(epsg).transform(lon, lat)
    return Window.covering(epsg, float(np.min(x)) - margin, float(np.min(y)) - margin,
                           float(np.max(x)) + margin, float(np.max(y)) + margin)


def _region_window(epsg: int, windows: list[Window], bbox: BBox | None) -> Window:
    out = windows[0]
    for w in windows[1:]:
        out = out.union(w)
    if bbox is not None:
        clip = _box_window(epsg, bbox.west, bbox.south, bbox.east, bbox.north, 64, 0.0)
        out = out.intersection(clip) or out
    return out


def _footprint(t: Tile, epsg: int) -> Window:
    """The cell's bounding window on another zone's grid."""
    return _box_window(epsg, *t.bounds, 16, 10.0)


class _Writer:
    """Writes the sidecar folder's files, all relative to it.

    Synchronous on purpose: a background writer thread was measured (session 5) and gave no gain
    at 10,000 tiles: the GIL-bound XML making and ~100 KB of file per tile do not overlap well.
    """

    def __init__(self, folder: Path, clip: Region | None = None):
        self.folder, self.clip = folder, clip  # clip: pixels whose centres are outside it are masked too (--clip)
        (folder / "tiles").mkdir(parents=True)
        self._dirs = {"tiles"}  # warped/ only when a cross-zone tile is written
        self._const = "one.tif"
        self._const_size = (1, 1)

    def write(self, rel: str, text: str | Iterable[bytes]) -> None:
        sub = rel.rpartition("/")[0]
        if sub and sub not in self._dirs:
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
            self._dirs.add(sub)
        _write_text(self.folder / rel, text)

    def mask(self, own, depth: int) -> str:
        cw, ch = self._const_size
        self._const_size = (max(cw, own.window.width), max(ch, own.window.height))
        carve = own.carve if self.clip is None else np.concatenate([np.reshape(own.carve, (-1, 4)), self.clip.carve(own.window)])
        return vrt.mask_band(own.window.width, own.window.height, carve, "../" * depth + self._const)

    def close(self) -> None:
        _write_const(self.folder / self._const, *self._const_size)


def _write_text(path: Path, text: str | Iterable[bytes]) -> None:
    with open(path, "wb") as f:
        if isinstance(text, str):
            f.write(text.encode())
        else:
            f.writelines(text)


def _write_const(path: Path, width: int, height: int) -> None:
    """An empty sparse GeoTIFF as large as the largest mask: the constant source of mask rectangles.

    Each carve rectangle copies its zeros 1:1 (SrcRect = DstRect); the full one scales them to 255. A 1x1 source
    stretched over a rectangle is NOT safe: GDAL drops it when a read window holds only the rectangle's
    last row (found on GDAL 3.10 and 3.12: pixels of a tile's last row read as not owned).
    """
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it has no georeferencing on purpose
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                           tiled=True, blockxsize=512, blockysize=512, sparse_ok=True, compress="deflate"):
            pass


def _selection(bbox: str | BBox | None, tiles: list | None, dataset: str, year: int, source: str | None,
               manifest: str | None, endpoint: str | None, columns: list[str] | None = None,
               region: Region | None = None) -> tuple:
    """What build and npy_region_jobs both start from: the region asked for (a box, tiles, a polygon), the
    dataset, the bucket layout and endpoint, and the manifest's (fetched, cached) selection for the year."""
    reg = region if region is not None else Region.from_options(bbox=bbox, tiles=tiles)
    if reg is None:
        raise TessvrtError("nothing selected: give --bbox W,S,E,N, --tile LON,LAT, --region FILE or --country NAME")
    choice = npy_dataset(dataset)
    mirror = datasets.mirror(source)
    ep = Endpoint.parse(endpoint or mirror.endpoint)
    src = ManifestSource.resolve(manifest, choice.dataset, mirror, ep)
    path = src.fetch()
    sel = select(read_manifest(path, columns), choice.dataset, year)
    return reg, choice, mirror, ep, src, path, sel


def build(
    output: str | os.PathLike,
    *,
    year: int,
    bbox: str | BBox | None = None,
    tiles: list[str] | list[Tile] | None = None,
    dataset: str = DEFAULT_DATASET,
    source: str | None = None,
    manifest: str | None = None,
    endpoint: str | None = None,
    vsi: str = "s3",
    crs: str | None = None,
    overwrite: bool = False,
    overview: bool | list[int] = False,
    format: str | None = None,  # noqa: A002 - the CLI's --format
    region: Region | None = None,
    clip: bool = False,
    dry_run: bool = False,
    max_tiles: int | None = None,
    block_size: int = blockindex.BLOCK,
) -> BuildResult:
    """Write output (a .vrt), per-zone VRTs beside it when zones differ, and its sidecar folder.

    An output ending in .gti.gpkg is instead a GDAL GTI index of per-block VRTs (blockindex; GDAL >= 3.9),
    one per zone when zones differ (stem_utmNN.gti.gpkg, as materialise names per-zone COGs): the form
    for more than max_tiles tiles, which a .vrt refuses.
    dataset: an npy dataset name (`tessvrt datasets`); source: the bucket layout (datasets.MIRRORS),
    default Source Cooperative's AWS bucket; endpoint replaces only the S3 endpoint. region (Region.from_options:
    a polygon file or a country) replaces bbox/tiles: tiles whose cells its polygon covers in part. clip: the
    VRT's masks also clear pixels whose centres are outside the box or polygon (and materialise keeps that).
    format: npy or zarr (tessvrt.zarrvrt); default npy when the dataset has npy tiles, else zarr.
    overview: also fetch decimated rows into local overview GeoTIFFs of each zone VRT (tessvrt.overview);
    a list of factors instead of True picks the levels.
    dry_run: select and check only (the manifest, or a Zarr store's metadata; no tile, shard index or chunk read,
    nothing written): result.estimate (estimate.BuildEstimate or ZarrBuildEstimate) says what the build and a full
    read of it would cost.
    max_tiles, block_size: the VRT cap (default MAX_TILES) and the GTI's block size in pixels (smaller in tests).
    """
    out = Path(output)
    max_tiles = MAX_TILES if max_tiles is None else max_tiles
    gti = blockindex.is_gti(out)
    if out.suffix.lower() != ".vrt" and not gti:
        raise TessvrtError(f"output {out} must end in .vrt (or {blockindex.SUFFIX} for a GTI index of many tiles)")
    if vsi not in ("s3", "curl"):
        raise TessvrtError(f"--vsi {vsi!r} must be s3 or curl")
    if gti and crs:
        raise TessvrtError(f"--crs picks the zone a .vrt build warps other zones into; a {blockindex.SUFFIX} build "
                           "writes one index per zone and warps nothing: drop --crs")
    parent = out.resolve().parent
    check_output_folder(parent, "-o")
    stem = blockindex.stem(out)
    sidecar = out.with_name(stem + SIDECAR_SUFFIX)
    check_name(out, len(f".{out.name}.{os.getpid()}.tessvrt-tmp"), "-o")
    previous = _previous_build(out, sidecar, overwrite)
    if datasets.build_format(dataset, format) == "zarr":
        from .zarrvrt import build_zarr, dry_run_zarr

        if overview or gti:
            raise TessvrtError("--overview and -o NAME.gti.gpkg are for npy VRTs, not yet for Zarr VRTs; drop "
                               "them or add --format npy where the dataset has npy tiles")
        area = region if region is not None else Region.from_options(bbox=bbox, tiles=tiles)
        if dry_run:  # the store's metadata only: zarrvrt.dry_run_zarr
            return BuildResult(out, {}, sidecar, [], [], estimate=dry_run_zarr(
                year=year, bbox=_lonlat_box(area), dataset=dataset, source=source, endpoint=endpoint, crs=crs,
                area=area, clip=clip))
        return build_zarr(out, sidecar, previous, year=year, bbox=_lonlat_box(area), dataset=dataset,
                          source=source, endpoint=endpoint, vsi=vsi, overwrite=overwrite, crs=crs, area=area, clip=clip)
    if gti and overview:
        raise TessvrtError(f"--overview is for .vrt builds; a {blockindex.SUFFIX} build has none yet: drop --overview")
    reg, choice, mirror, ep, src, _, sel = _selection(bbox, tiles, dataset, year, source, manifest, endpoint, region=region)
    box = reg.box
    present, missing, wanted = _requested(sel, reg)
    if len(present) > max_tiles and not gti:
        raise TessvrtError(f"{len(present):,} tiles would make about {human_bytes(len(present) * BYTES_PER_TILE)} of VRT that "
                           f"GDAL parses whole on open (at most {max_tiles:,} tiles in one): write a GTI index of per-block "
                           f"VRTs instead with -o {stem}{blockindex.SUFFIX} (GDAL >= {blockindex.MIN_GDAL}), or split the "
                           f"region into boxes of at most {max_tiles:,} tiles for older GDAL and QGIS on it")
    if not present:
        raise _no_tiles(sel, reg, wanted, choice.dataset.label, year)
    if dry_run:
        return BuildResult(out, {}, sidecar, [t.name for t in present], missing, [choice.note] if choice.note else [],
                           wanted - len(present), estimate=_estimate(sel, present, box))
    _check_disk(parent, len(present))
    rows = sel.rows.loc[[(t.lon_i, t.lat_i) for t in present]]
    grids = tile_grids(present)
    cols = [c for c in ("grid_path", "scales_path", "grid_size", "scales_size") if c in rows.columns]
    records = rows[cols].to_dict("records")
    sources = [_raw_layout(t, g, r, sel, mirror, ep, vsi) for t, g, r in zip(present, grids, records, strict=True)]

    by_zone: dict[int, list[TileSource]] = {}
    for s in sources:
        by_zone.setdefault(s.grid.epsg, []).append(s)
    main_epsg = _main_epsg(by_zone, crs)
    multi = len(by_zone) > 1 or main_epsg not in by_zone
    scale_bands = max(s.raw.scale_bands for s in sources)

    if gti:
        multi = len(by_zone) > 1
    zone_names = ([blockindex.zone_index_name(stem, e) if gti else f"{stem}_{zone_label(e)}.vrt" for e in by_zone]
                  if multi else [])
    _check_zone_names(parent, zone_names, previous, overwrite)
    with TargetLock([out]):
        clean_stale(parent, [out])
        tmp = tmp_path(out)
        tmp.mkdir()
        plan = _Plan(sel, src, mirror, ep, vsi, box, by_zone, main_epsg, multi, sources, missing, wanted - len(sources),
                     scale_bands, choice.note, overview, reg if clip else None)
        try:
            if gti:
                return _write_gti_build(tmp, out, sidecar, plan, previous, block_size)
            return _write_build(tmp, out, sidecar, plan, previous)
        except OSError as exc:
            raise TessvrtError(f"cannot write {out} and its {sidecar.name} folder ({exc.strerror or exc}); "
                               "free disk space or choose another -o") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _lonlat_box(area: Region | None) -> tuple[float, float, float, float]:
    """The lon/lat box a Zarr build reads: the region's box and the box around its --tile cells."""
    if area is None:
        raise TessvrtError("nothing selected: give --bbox W,S,E,N or --tile LON,LAT")
    box = area.box
    bounds = [t.bounds for t in area.tiles] + ([(box.west, box.south, box.east, box.north)] if box else [])
    return (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds), max(b[3] for b in bounds))


@dataclass(frozen=True)
class _Plan:
    """A resolved build: what to write, decided before anything is written."""

    sel: Selection
    src: ManifestSource
    mirror: Mirror
    ep: Endpoint
    vsi: str
    box: BBox | None
    by_zone: dict[int, list[TileSource]]
    main_epsg: int
    multi: bool
    sources: list[TileSource]
    missing: list[str]  # names, at most MISSING_LISTED
    n_missing: int
    scale_bands: int
    note: str | None
    overview: bool | list[int] = False
    clip: Region | None = None


def _write_tiles(w: _Writer, plan: _Plan) -> dict[int, Window]:
    """Each native tile's raw VRT with its ownership mask on its own zone grid; returns each zone's window."""
    zone_windows: dict[int, Window] = {}
    for epsg, zs in plan.by_zone.items():
        owns = ownerships([s.tile for s in zs], [s.grid.window for s in zs])
        for s, own in zip(zs, owns, strict=False):
            g = s.grid
            w.write(f"tiles/{s.tile.name}.vrt", vrt.tile_vrt(s.raw, epsg, g.transform.to_gdal(), w.mask(own, 1)))
        zone_windows[epsg] = _region_window(epsg, [s.grid.window for s in zs], plan.box)
    return zone_windows


def _metadata(plan: _Plan) -> dict[str, str]:
    """The dataset tags every VRT of a build carries."""
    sel, missing, n_missing = plan.sel, plan.missing, plan.n_missing
    return {
        "TESSERA_DATASET": sel.dataset.name,
        "TESSERA_DATASET_VERSION": sel.dataset.version,
        "TESSERA_VARIANT": sel.dataset.variant,
        "TESSERA_YEAR": str(sel.year),
        "TESSVRT_TILES": ",".join(s.tile.name for s in plan.sources),
        "TESSVRT_MISSING_TILES": ",".join(missing) + (f",... ({n_missing:,} in all)" if n_missing > len(missing) else ""),
        "TESSVRT_SOURCE": plan.src.public,  # no password, signature or token of a --manifest URL
        "TESSVRT_VERSION": __version__,
    }


def _publish(tmp: Path, out: Path, sidecar: Path, written: list[str], previous: dict | None) -> None:
    """Publish the sidecar and the written top-level files together; move aside the previous build's per-zone
    files this one has not written."""
    parent = out.parent
    trash = tmp / "previous"
    trash.mkdir()
    publish([(tmp / name, parent / name) for name in (sidecar.name, *written)], trash)
    for old in (previous or {}).get("zones", []):
        p = parent / str(old.get("vrt", ""))
        if p.name not in written and p.parent == parent and p.is_file() and not p.is_symlink():
            os.replace(p, trash / p.name)


def _record_clip(record: dict, plan: _Plan) -> None:
    """A --clip build's polygon in its record: materialise and open_region clip its pixels the same way."""
    if plan.clip is not None:
        import shapely

        record["clip"] = {"label": plan.clip.label, "wkb": shapely.to_wkb(plan.clip.clip_shape, output_dimension=2, hex=True)}


def _write_gti_build(tmp: Path, out: Path, sidecar: Path, plan: _Plan, previous: dict | None, size: int) -> BuildResult:
    """The GTI form (blockindex): tiles as in a VRT build, then per zone aligned block VRTs and a GTI index of them."""
    w = _Writer(tmp / sidecar.name, plan.clip)
    zone_windows = _write_tiles(w, plan)
    metadata = {k: v for k, v in _metadata(plan).items() if k != "TESSVRT_TILES"}  # per block: write_zone_blocks
    zone_files: dict[int, Path] = {}
    for epsg, zs in plan.by_zone.items():
        name = blockindex.zone_index_name(blockindex.stem(out), epsg) if plan.multi else out.name
        blocks = blockindex.write_zone_blocks(w.write, sidecar.name, epsg, zone_windows[epsg], _native(zs),
                                              plan.scale_bands, {**metadata, "TESSVRT_ZONE": f"EPSG:{epsg}"}, size)
        blockindex.write_index(tmp / name, zone_windows[epsg], blocks)
        zone_files[epsg] = out.with_name(name)
    w.close()
    main = plan.main_epsg if plan.main_epsg in zone_files else next(iter(zone_files))
    record = _record(plan.sel, plan.src.public, plan.mirror, plan.ep, plan.vsi, main, zone_windows[main], zone_windows,
                     zone_files, plan.sources, plan.missing, plan.n_missing, plan.scale_bands)
    _record_clip(record, plan)
    (w.folder / RECORD).write_text(json.dumps({**record, "index": "gti", "block": size}))
    _publish(tmp, out, sidecar, [p.name for p in zone_files.values()], previous)
    note = (f"GDAL >= {blockindex.MIN_GDAL} opens {blockindex.SUFFIX} (GTI) indexes; for older GDAL and QGIS on it, build "
            f"a .vrt of a box of at most {MAX_TILES:,} tiles")
    return BuildResult(zone_files[main], zone_files, sidecar, [s.tile.name for s in plan.sources], plan.missing,
                       ([plan.note] if plan.note else []) + [note], plan.n_missing)


def _write_build(tmp: Path, out: Path, sidecar: Path, plan: _Plan, previous: dict | None) -> BuildResult:
    """Every file of the build into tmp, then published together over the previous build of this name."""
    box, by_zone, sources, scale_bands = plan.box, plan.by_zone, plan.sources, plan.scale_bands
    main_epsg, missing, n_missing = plan.main_epsg, plan.missing, plan.n_missing
    stem = out.name[:-4]
    w = _Writer(tmp / sidecar.name, plan.clip)
    folder = w.folder
    zone_windows = _write_tiles(w, plan)
    for epsg, zs in by_zone.items():
        _write_mosaic(w, f"mosaic_{epsg}.vrt", zone_windows[epsg], _native(zs), scale_bands)
    metadata = _metadata(plan)
    written: dict[str, str] = {}
    zone_vrts: dict[int, Path] = {}
    if plan.multi:
        main_window = _write_cross_zone(w, by_zone, main_epsg, box, scale_bands)
        written[out.name] = vrt.dequant_vrt(main_window, f"{sidecar.name}/mosaic.vrt", scale_bands,
                                            {**metadata, "TESSVRT_ZONE": f"EPSG:{main_epsg}"})
        for epsg in by_zone:
            name = f"{stem}_{zone_label(epsg)}.vrt"
            zone_tiles = ",".join(s.tile.name for s in by_zone[epsg])
            written[name] = vrt.dequant_vrt(zone_windows[epsg], f"{sidecar.name}/mosaic_{epsg}.vrt", scale_bands,
                                            {**metadata, "TESSVRT_TILES": zone_tiles, "TESSVRT_ZONE": f"EPSG:{epsg}"})
            zone_vrts[epsg] = out.with_name(name)
    else:
        main_window = zone_windows[main_epsg]
        written[out.name] = vrt.dequant_vrt(main_window, f"{sidecar.name}/mosaic_{main_epsg}.vrt", scale_bands,
                                            {**metadata, "TESSVRT_ZONE": f"EPSG:{main_epsg}"})
        zone_vrts[main_epsg] = out
    w.close()
    record = _record(plan.sel, plan.src.public, plan.mirror, plan.ep, plan.vsi, main_epsg, main_window, zone_windows, zone_vrts, sources,
                     missing, n_missing, scale_bands)
    _record_clip(record, plan)
    if plan.overview:  # local overview GeoTIFFs of each zone VRT, listed in the record (tessvrt.overview)
        from .overview import write_overviews

        for name, files in write_overviews(folder, record, plan.ep, plan.overview).items():
            name = name or out.name  # "": the cross-zone main VRT
            written[name] = vrt.add_overviews(written[name], [f"{sidecar.name}/{f}" for f in files])
    (folder / RECORD).write_text(json.dumps(record))
    for name, text in written.items():
        (tmp / name).write_text(text)
    _publish(tmp, out, sidecar, list(written), previous)
    return BuildResult(out, zone_vrts, sidecar, [s.tile.name for s in sources], missing, [plan.note] if plan.note else [],
                       n_missing)


def _main_epsg(by_zone: dict[int, list[TileSource]], crs: str | None) -> int:
    if crs:
        code = crs.upper().removeprefix("EPSG:")
        if not code.isdigit() or not (32601 <= int(code) <= 32660 or 32701 <= int(code) <= 32760):
            raise TessvrtError(f"--crs {crs!r} must be a UTM zone EPSG code such as EPSG:32631")
        return int(code)
    # the zone holding most of the area (cells shrink with cos(latitude))
    return max(by_zone, key=lambda e: (sum(math.cos(math.radians(s.tile.lat)) for s in by_zone[e]), -e))


def _write_mosaic(w: _Writer, name: str, window: Window, placed: list[tuple[str, Window, int]], scale_bands: int) -> None:
    """A mosaic of the placed tiles; past vrt.MOSAIC_BLOCK pixels, a mosaic of blocks/<name>_<k>.vrt."""
    blocks = window.blocks(vrt.MOSAIC_BLOCK)
    if len(blocks) == 1:
        w.write(name, vrt.mosaic_vrt(window, vrt.mosaic_sources(window, placed), scale_bands))
        return
    (w.folder / "blocks").mkdir(exist_ok=True)  # only big regions have one
    size, across = vrt.MOSAIC_BLOCK, -(-window.width // vrt.MOSAIC_BLOCK)  # blocks are row by row
    reach: dict[int, list[tuple[str, Window, int]]] = {}  # block index -> tiles overlapping it
    for path, tw, nscale in placed:
        x, y = window.offset_of(tw)
        for by in range(max(y, 0) // size, min(y + tw.height - 1, window.height - 1) // size + 1):
            for bx in range(max(x, 0) // size, min(x + tw.width - 1, window.width - 1) // size + 1):
                reach.setdefault(by * across + bx, []).append(("../" + path, tw, nscale))
    parts = []
    for k in sorted(reach):  # a block no tile reaches stays out: NaN there
        srcs = vrt.mosaic_sources(blocks[k], reach[k])
        if srcs:
            parts.append((f"blocks/{name[:-4]}_{k}.vrt", blocks[k]))
            w.write(parts[-1][0], vrt.mosaic_vrt(blocks[k], srcs, scale_bands))
    w.write(name, vrt.blocks_vrt(window, parts, scale_bands))


def _native(zs: list[TileSource]) -> list[tuple[str, Window, int]]:
    return [(f"tiles/{s.tile.name}.vrt", s.grid.window, s.raw.scale_bands) for s in zs]


def _write_cross_zone(w: _Writer, by_zone, main_epsg: int, box: BBox | None, scale_bands: int) -> Window:
    """The main mosaic in one zone: its own tiles shifted, other zones' tiles warped (nearest)."""
    native = by_zone.get(main_epsg, [])
    others = [s for e, zs in by_zone.items() if e != main_epsg for s in zs]
    foot = [_footprint(s.tile, main_epsg) for s in others]
    owns = ownerships([s.tile for s in others], foot)
    for s, fw, own in zip(others, foot, owns, strict=False):
        nb = vrt.BANDS + s.raw.scale_bands
        name = s.tile.name
        # a maskless copy of the raw tile, so the warper sees every source pixel
        w.write(f"warped/{name}_raw.vrt", vrt.tile_vrt(s.raw, s.grid.epsg, s.grid.transform.to_gdal(), ""))
        w.write(f"warped/{name}_{main_epsg}.vrt", vrt.warped_vrt(fw, f"{name}_raw.vrt", s.grid.epsg, s.grid.transform.to_gdal(), nb))
        w.write(f"warped/{name}_{main_epsg}_owned.vrt", vrt.placed_vrt(fw, f"{name}_{main_epsg}.vrt", nb, w.mask(own, 1)))
    windows = [s.grid.window for s in native] + foot
    main = _region_window(main_epsg, windows, box)
    warped = [(f"warped/{s.tile.name}_{main_epsg}_owned.vrt", fw, s.raw.scale_bands) for s, fw in zip(others, foot, strict=True)]
    _write_mosaic(w, "mosaic.vrt", main, _native(native) + warped, scale_bands)
    return main


def _record(sel: Selection, manifest: str, mirror: Mirror, ep: Endpoint, vsi: str, main_epsg: int, main_window: Window,
            zone_windows: dict[int, Window], zone_vrts: dict[int, Path], sources: list[TileSource], missing: list[str],
            missing_count: int, scale_bands: int) -> dict:
    def win(w: Window) -> dict:
        return {"epsg": w.epsg, "col0": w.col0, "row0": w.row0, "width": w.width, "height": w.height}

    return {
        "tessvrt": __version__,
        "pixel_grid": PIXEL_GRID,
        "dataset": sel.dataset.name,
        "dataset_version": sel.dataset.version,
        "variant": sel.dataset.variant,
        "year": sel.year,
        "manifest": manifest,
        "source": mirror.name,
        "endpoint": ep.url,
        "region": ep.region,
        "vsi": vsi,
        "scale_bands": scale_bands,
        "main": {"epsg": main_epsg, "window": win(main_window)},
        "zones": [
            {"epsg": e, "label": zone_label(e), "vrt": zone_vrts[e].name, "window": win(zw)}
            for e, zw in zone_windows.items()
        ],
        "tiles": [
            {
                "name": s.tile.name, "lon": s.tile.lon, "lat": s.tile.lat, "epsg": s.grid.epsg,
                "origin": list(s.grid.origin), "corner": [s.grid.corner_e, s.grid.corner_n],
                "width": s.grid.width, "height": s.grid.height,
                "grid": s.grid_uri, "scales": s.scales_uri, "grid_offset": s.raw.grid_offset,
                "scales_offset": s.raw.scales_offset, "scale_bands": s.raw.scale_bands,
                "grid_size": s.grid_size, "scales_size": s.scales_size,
            }
            for s in sources
        ],
        "missing": missing,
        "missing_count": missing_count,
    }


# Measured (session 6): ~90.5 KB of VRT per tile in one zone; tiles warped into another zone add three
# small files each. Memory peaked near 95 KB per tile on a 100,200-tile run (issue 13).
BYTES_PER_TILE = 100_000
MAX_TILES = 50_000
MISSING_LISTED = 100  # missing tiles named in messages, metadata and the record; the rest are counted


def _requested(sel: Selection, reg: Region) -> tuple[list[Tile], list[str], int]:
    """(tiles present, missing names (at most MISSING_LISTED), how many were requested), north to south.

    A region's cells are not enumerated when there are many (the whole world is 6.48 M cells): the
    manifest's rows are matched against the region instead, and missing names come from a bounded scan.
    """
    lon_i = sel.rows.index.get_level_values(0).to_numpy()
    lat_i = sel.rows.index.get_level_values(1).to_numpy()
    inside = reg.selects((lon_i - 5) // 10, (lat_i - 5) // 10)
    present = {Tile(int(a), int(b)) for a, b in zip(lon_i[inside], lat_i[inside], strict=True)}
    have = np.sort(_tile_key(lon_i[inside], lat_i[inside]))
    order = sorted(present, key=lambda t: (-t.lat_i, t.lon_i))
    return order, _missing_names(have, reg), reg.count


def _estimate(sel: Selection, present: list[Tile], box: BBox | None):  # noqa: ANN202 - an estimate.BuildEstimate
    """build --dry-run's figures from the manifest alone: tiles, zone windows' pixels, object sizes (a scales
    size the manifest lacks is the (H, W) float32 one), VRT bytes at BYTES_PER_TILE."""
    from .estimate import BuildEstimate, Estimate

    grids = tile_grids(present)
    by_zone: dict[int, list[Window]] = {}
    for g in grids:
        by_zone.setdefault(g.epsg, []).append(g.window)
    pixels = sum(w.width * w.height for w in (_region_window(e, ws, box) for e, ws in by_zone.items()))
    rows = sel.rows.loc[[(t.lon_i, t.lat_i) for t in present]]
    scales = rows["scales_size"].astype(float) if "scales_size" in rows.columns else None
    fallback = np.array([npy.TYPICAL_HEADER + g.width * g.height * 4 for g in grids], float)
    remote = rows["grid_size"].astype(float).to_numpy().sum() + (
        np.where(np.isnan(scales.to_numpy()), fallback, scales.to_numpy()).sum() if scales is not None else fallback.sum())
    read = Estimate(len(by_zone), len(by_zone), len(present), pixels, vrt.BANDS, int(remote), True, 1)
    return BuildEstimate(len(present), len(present) * BYTES_PER_TILE, read)


def _check_disk(parent: Path, n_tiles: int) -> None:
    need, free = n_tiles * BYTES_PER_TILE, shutil.disk_usage(parent).free
    if need > free:
        raise TessvrtError(f"not enough free disk space in {parent}: {n_tiles:,} tiles need about {human_bytes(need)} of VRT "
                           f"and {human_bytes(free)} are free; free space or choose a smaller region")


def _previous_build(out: Path, sidecar: Path, overwrite: bool) -> dict | None:
    """The record of the build already at this name (replaced only with overwrite); refuse what tessvrt did not make."""
    for p in (out, sidecar):
        if p.is_symlink() or (p.exists() and (p.is_dir() != (p == sidecar))):
            raise TessvrtError(f"{p} exists and is not what tessvrt build writes there; move it away or choose another -o")
    rec = None
    if sidecar.exists():
        try:
            rec = json.loads((sidecar / RECORD).read_text())
            if not isinstance(rec, dict) or "tessvrt" not in rec:
                raise ValueError
        except (OSError, ValueError):
            raise TessvrtError(f"{sidecar} exists but holds no tessvrt build record, so tessvrt did not make it; "
                               "move it away or choose another -o") from None
    if (out.exists() or rec is not None) and not overwrite:
        raise TessvrtError(f"{out if out.exists() else sidecar} exists; pass --overwrite to replace that build")
    return rec


def _check_zone_names(parent: Path, names: list[str], previous: dict | None, overwrite: bool) -> None:
    """Per-zone VRTs may replace only the previous build's own (with overwrite), never anything else."""
    ours = {str(z.get("vrt")) for z in (previous or {}).get("zones", []) if isinstance(z, dict)}
    for name in names:
        p = parent / name
        if not (p.exists() or p.is_symlink()):
            continue
        if p.is_dir() or p.is_symlink() or name not in ours:
            raise TessvrtError(f"{p} exists and was not written by this build's previous run; move it away or choose "
                               "another -o")
        if not overwrite:
            raise TessvrtError(f"{p} exists; pass --overwrite to replace that build")


def _no_tiles(sel: Selection, reg: Region, wanted: int, label: str, year: int) -> TessvrtError:
    """Say what was searched, the dataset's coverage, and whether the axes typed the other way round would find tiles."""
    have = set(sel.rows.index)
    lons, lats = [i / 100 for i, _ in have], [j / 100 for _, j in have]
    if reg.is_polygon:
        return TessvrtError(f"none of the {wanted} tile(s) whose cells {reg.label} covers exist in {label} for {year} "
                            f"(its {len(have)} tile(s) for {year} span lon {min(lons):g}..{max(lons):g}, lat "
                            f"{min(lats):g}..{max(lats):g}); try another --year or region")
    box, picked = reg.box, list(reg.tiles)
    searched = [f"--bbox {box.west:g},{box.south:g},{box.east:g},{box.north:g} read as W,S,E,N"] if box else []
    searched += [f"--tile {t.lon:.2f},{t.lat:.2f} read as LON,LAT" for t in picked[:5]]
    swap = box is not None and max(abs(box.west), abs(box.east)) <= 90 and (box.west, box.east) != (box.south, box.north)
    alt = BBox(box.south, box.west, box.north, box.east) if box is not None and swap else None
    alt_tiles = [Tile(t.lat_i, t.lon_i) for t in picked if abs(t.lon_i) < 9000 and t.lon_i != t.lat_i]
    i0, i1, j0, j1 = alt.cells() if alt else (0, 0, 0, 0)
    found = sum(1 for a, b in have if i0 <= (a - 5) // 10 < i1 and j0 <= (b - 5) // 10 < j1)
    found += sum(1 for t in alt_tiles if (t.lon_i, t.lat_i) in have)
    alt_text = " ".join(([f"--bbox {alt.west:g},{alt.south:g},{alt.east:g},{alt.north:g}"] if alt else [])
                        + [f"--tile {t.lon:.2f},{t.lat:.2f}" for t in alt_tiles[:5]])
    boxes = ([(alt.west, alt.south, alt.east, alt.north)] if alt else []) + [t.bounds for t in alt_tiles]
    inside = bool(boxes) and all(min(lons) - 0.05 <= w and e <= max(lons) + 0.05 and min(lats) - 0.05 <= s
                                 and n <= max(lats) + 0.05 for w, s, e, n in boxes)
    hint = (f"longitude comes first: {alt_text} would select {found} tile(s) that exist" if found else
            f"if you typed LAT,LON: longitude comes first, and {alt_text} lies inside the dataset's coverage" if inside
            else "try another --year or region")
    return TessvrtError(f"none of the {wanted} requested tile(s) exist in {label} for {year} "
                        f"({'; '.join(searched)}; its {len(have)} tile(s) for {year} span lon {min(lons):g}..{max(lons):g}, "
                        f"lat {min(lats):g}..{max(lats):g}); {hint}")



REGION_COLUMNS = ["version", "variant", "year", "lon", "lat", "grid_size", "scales_size"]  # no path strings


def npy_region_jobs(*, year: int, bbox: str | BBox | None = None, tiles: list[str] | list[Tile] | None = None,
                    dataset: str = DEFAULT_DATASET, source: str | None = None, manifest: str | None = None,
                    endpoint: str | None = None, allow_missing: bool = False, region: Region | None = None) -> list:
    """The zones `build` would write for these arguments, as pixel-source jobs (tessvrt.pixels.ZoneJob), with
    nothing written and no tile read: only the manifest (open_region's npy form without a VRT).

    The same selection, derived keys, manifest-size and named-path checks and zone windows as build, but
    columnar: no object per tile (a continent is 10^5 tiles; build's per-tile objects would be ~1 GB), the
    manifest's path strings are checked in batches and dropped, and each zone's tiles stay a TileTable.
    No MAX_TILES cap (no XML is written). A tile whose manifest sizes disagree with its computed geometry
    has its headers read, as build does.
    """
    from .grid import PIXEL, tile_geometry
    from .pixels import NpySpec, ZoneJob
    from .pixels.npy import NAME, TILE_FIELDS, TileTable

    reg, choice, mirror, ep, src, path, sel = _selection(bbox, tiles, dataset, year, source, manifest, endpoint,
                                                         REGION_COLUMNS, region)
    box = reg.box
    lon_all, lat_all = sel.rows["lon_i"].to_numpy(np.int64), sel.rows["lat_i"].to_numpy(np.int64)
    keys = _tile_key(lon_all, lat_all)
    idx = np.flatnonzero(reg.selects((lon_all - 5) // 10, (lat_all - 5) // 10))
    if idx.size == 0:
        raise _no_tiles(sel, reg, reg.count, choice.dataset.label, year)
    idx = idx[np.lexsort((lon_all[idx], -lat_all[idx]))]  # north to south, then west to east, as build
    rows = sel.rows.iloc[idx]
    lon_i, lat_i = lon_all[idx], lat_all[idx]
    first = Tile(int(lon_i[0]), int(lat_i[0]))
    gkey, skey = (k.replace(first.name, NAME) for k in mirror.tile_keys(sel.dataset, sel.year, first))
    _check_named_paths(path, sel, keys[idx], mirror, gkey, skey)
    missing = _missing_names(np.sort(keys[idx]), reg)
    epsg, ce, cn, w, h = tile_geometry(lon_i, lat_i)
    gsize = rows["grid_size"].to_numpy(np.int64)
    ssize = (rows["scales_size"].astype(float).fillna(-1).to_numpy(np.int64) if "scales_size" in rows.columns
             else np.full(len(rows), -1, np.int64))
    nscale = np.where(ssize - h * w * 4 * vrt.BANDS == npy.TYPICAL_HEADER, vrt.BANDS, 1)
    table = np.zeros(len(rows), TILE_FIELDS)
    table["lon_i"], table["lat_i"], table["width"], table["height"] = lon_i, lat_i, w, h
    table["col0"], table["row0"] = np.floor(ce / PIXEL), np.ceil(cn / PIXEL) - 1  # TileGrid.window
    table["grid_offset"] = table["scales_offset"] = npy.TYPICAL_HEADER
    table["grid_size"], table["scales_size"], table["scale_bands"] = gsize, ssize, nscale
    fits = (gsize - h * w * vrt.BANDS == npy.TYPICAL_HEADER) & (ssize - h * w * 4 * nscale == npy.TYPICAL_HEADER)
    for i in np.flatnonzero(~fits):  # sizes disagree with the computed geometry: believe the headers, as build does
        t = Tile(int(lon_i[i]), int(lat_i[i]))
        g = TileGrid(t, int(epsg[i]), float(ce[i]), float(cn[i]), int(w[i]), int(h[i]))
        s = _raw_layout(t, g, rows.iloc[i].to_dict(), sel, mirror, ep, "s3")
        table[i] = (t.lon_i, t.lat_i, s.grid.window.col0, s.grid.window.row0, s.grid.width, s.grid.height,
                    s.raw.grid_offset, s.raw.scales_offset, s.grid_size, s.scales_size, s.raw.scale_bands)
    meta = {"TESSERA_DATASET": sel.dataset.name, "TESSERA_DATASET_VERSION": sel.dataset.version,
            "TESSERA_VARIANT": sel.dataset.variant, "TESSERA_YEAR": str(sel.year),
            "TESSVRT_MISSING_TILES": ",".join(missing), "TESSVRT_SOURCE": src.public, "TESSVRT_VERSION": __version__}
    jobs = []
    for code in dict.fromkeys(epsg.tolist()):  # zones in build's order: of their first tile, north to south
        zt = TileTable(code, table[epsg == code], f"s3://{mirror.bucket}/{gkey}", f"s3://{mirror.bucket}/{skey}")
        r = zt.rows
        union = Window(code, int(r["col0"].min()), int(r["row0"].max()), int((r["col0"] + r["width"]).max() - r["col0"].min()),
                       int(r["row0"].max() - (r["row0"] - r["height"]).min()))  # as _region_window's unions
        window = union
        if box is not None:
            window = union.intersection(_box_window(code, box.west, box.south, box.east, box.north, 64, 0.0)) or union
        jobs.append(ZoneJob(zone_label(code), window, NpySpec(ep, zt, allow_missing),
                            {**meta, "TESSVRT_TILE_COUNT": str(len(zt)), "TESSVRT_ZONE": f"EPSG:{code}"}))
    return jobs


def _tile_key(lon_i: np.ndarray | int, lat_i: np.ndarray | int) -> np.ndarray | int:
    """One int64 per tile centre (hundredths of a degree), for vectorised membership."""
    return (np.asarray(lon_i, np.int64) + 20_000) * 40_000 + (np.asarray(lat_i, np.int64) + 10_000)


def _check_named_paths(path: Path, sel: Selection, keys: np.ndarray, mirror: Mirror, gkey: str, skey: str) -> None:
    """Refuse a manifest row of the selection naming another object than its derived key (as _raw_layout does).

    Vectorised in Arrow, one path column at a time in batches, so a continent's strings are never all in
    memory nor made Python objects: a URI is the derived one iff it is a known bucket root + the key's text
    around the tile names, with names grid_{lon:.2f}_{lat:.2f} (no leading zeros) of the row's own centre.
    """
    import re

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .pixels.npy import NAME

    pf = pq.ParquetFile(path)
    have = set(pf.schema_arrow.names)
    want = np.sort(keys)
    kept = {c: [str(v) for v in sel.rows[c].dropna().unique()] for c in ("version", "variant") if c in sel.rows.columns}
    num = r"-?(?:0|[1-9][0-9]*)\.[0-9]{2}"
    for col, pat in (("grid_path", gkey), ("scales_path", skey)):
        if col not in have:
            continue
        head, *parts = pat[len(mirror.prefix):].split(NAME)
        roots = "|".join(re.escape(f"s3://{r}{head}") for r in mirror.roots)
        regex = f"^(?:{roots})" + "".join(f"grid_(?P<lon{k}>{num})_(?P<lat{k}>{num}){re.escape(p)}"
                                            for k, p in enumerate(parts)) + "$"
        for b in pf.iter_batches(batch_size=8192, columns=[col, "year", "lon", "lat", *kept], use_threads=False):
            lon = np.round(b.column("lon").to_numpy(zero_copy_only=False).astype(float) * 100).astype(np.int64)
            lat = np.round(b.column("lat").to_numpy(zero_copy_only=False).astype(float) * 100).astype(np.int64)
            k = _tile_key(lon, lat)
            pos = np.minimum(np.searchsorted(want, k), want.size - 1)
            mine = (want[pos] == k) & (b.column("year").to_numpy(zero_copy_only=False) == sel.year)
            for c, ok in kept.items():
                mine &= pc.is_in(pc.cast(b.column(c), "string"), pa_array(ok)).to_numpy(zero_copy_only=False)
            uri = b.column(col)
            named = (pc.fill_null(pc.greater(pc.utf8_length(uri), 0), False)).to_numpy(zero_copy_only=False)
            m = pc.extract_regex(pc.fill_null(uri, ""), regex)
            good = pc.is_valid(m).to_numpy(zero_copy_only=False)
            for n in range(len(parts)):
                f = {a: pc.struct_field(m, f"{a}{n}") for a in ("lon", "lat")}
                good &= pc.fill_null(pc.equal(pc.round(pc.multiply(pc.cast(pc.if_else(pc.is_valid(m), f["lon"], "0"), "float64"), 100)),
                                              pc.cast(lon, "float64")), False).to_numpy(zero_copy_only=False)
                good &= pc.fill_null(pc.equal(pc.round(pc.multiply(pc.cast(pc.if_else(pc.is_valid(m), f["lat"], "0"), "float64"), 100)),
                                              pc.cast(lat, "float64")), False).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(mine & named & ~good)
            if bad.size:
                i = int(bad[0])
                name = Tile(int(lon[i]), int(lat[i])).name
                raise TessvrtError(f"manifest row for {name} names {uri[i].as_py()!r}, not s3://{mirror.bucket}/"
                                   f"{pat.replace(NAME, name)} (or the same object in another bucket of this repository); "
                                   "refusing it: check --manifest and --source")


def pa_array(values: list[str]):  # noqa: ANN201 - a pyarrow string array
    import pyarrow as pa

    return pa.array(values, pa.string())


def _missing_names(have: np.ndarray, reg: Region) -> list[str]:
    """The first MISSING_LISTED requested tiles not in the manifest, north to south (cells scanned row by row,
    at most 1,000,000); have: sorted tile keys present."""
    def absent(k: np.ndarray) -> np.ndarray:
        if have.size == 0:
            return np.ones(k.shape, bool)
        pos = np.minimum(np.searchsorted(have, k), have.size - 1)
        return have[pos] != k

    out = {t for t in reg.tiles if absent(np.array([_tile_key(t.lon_i, t.lat_i)]))[0]}
    scanned = 0
    for ci, j in reg.cell_rows():
        if len(out) >= MISSING_LISTED + len(reg.tiles) or scanned >= 1_000_000:
            break
        lon = ci * 10 + 5
        lat = np.full(lon.size, j * 10 + 5, np.int64)
        gone = np.flatnonzero(absent(_tile_key(lon, lat)))[:MISSING_LISTED]
        out |= {Tile(int(lon[g]), int(lat[0])) for g in gone}
        scanned += lon.size
    return [t.name for t in sorted(out, key=lambda t: (-t.lat_i, t.lon_i))[:MISSING_LISTED]]

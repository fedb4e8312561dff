"""tessvrt build: from manifest rows to VRTs that read TESSERA embeddings remotely."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, vrt
from .errors import TessvrtError, check_output_folder
from .grid import Tile, TileGrid, Window, _to_utm, ownerships, tile_grids, zone_label
from .record import PIXEL_GRID, RECORD, SIDECAR_SUFFIX
from .source import datasets, npy
from .source.datasets import DEFAULT_DATASET, Mirror, npy_dataset
from .source.manifest import ManifestSource, Selection, read_manifest, select
from .source.s3 import Endpoint, S3Location, get_range


@dataclass(frozen=True)
class BBox:
    west: float
    south: float
    east: float
    north: float

    @classmethod
    def parse(cls, text: str) -> BBox:
        parts = [p.strip() for p in text.split(",")]
        try:
            w, s, e, n = (float(p) for p in parts)
        except ValueError:
            raise TessvrtError(f"--bbox {text!r} must be four numbers W,S,E,N (e.g. -0.2,51.4,0.1,51.6)") from None
        if not all(math.isfinite(v) for v in (w, s, e, n)):
            raise TessvrtError(f"--bbox {text!r} must hold finite numbers")
        if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
            raise TessvrtError(f"--bbox {text!r} is out of range: longitudes -180..180, latitudes -90..90")
        if w >= e or s >= n:
            raise TessvrtError(f"--bbox {text!r} is empty or inverted: need W < E and S < N, in that order")
        return cls(w, s, e, n)

    def tiles(self) -> list[Tile]:
        """Every tile whose cell [c-0.05, c+0.05) intersects the box."""
        i0, i1 = math.floor(self.west * 10 + 1e-9), math.ceil(self.east * 10 - 1e-9)
        j0, j1 = math.floor(self.south * 10 + 1e-9), math.ceil(self.north * 10 - 1e-9)
        return [Tile(i * 10 + 5, j * 10 + 5) for j in range(j0, max(j1, j0 + 1)) for i in range(i0, max(i1, i0 + 1))]


def parse_tile(text: str) -> Tile:
    try:
        lon, lat = (float(p) for p in text.split(","))
        if not (-180 < lon < 180 and -90 < lat < 90):  # also refuses nan and inf
            raise ValueError("longitude must be within (-180, 180) and latitude within (-90, 90)")
        return Tile.at(lon, lat)
    except ValueError as exc:
        raise TessvrtError(f"--tile {text!r}: {exc}; write LON,LAT of a tile centre, e.g. -0.05,51.55") from None


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
    missing: list[str]
    notes: list[str] = field(default_factory=list)  # said on stderr, e.g. which dataset a short name picked


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

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "tiles").mkdir(parents=True)
        (folder / "warped").mkdir()
        self._const = "one.tif"
        self._const_size = (1, 1)

    def write(self, rel: str, text: str | Iterable[bytes]) -> None:
        _write_text(self.folder / rel, text)

    def mask(self, own, depth: int) -> str:
        cw, ch = self._const_size
        self._const_size = (max(cw, own.window.width), max(ch, own.window.height))
        return vrt.mask_band(own.window.width, own.window.height, own.carve, "../" * depth + self._const)

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
) -> BuildResult:
    """Write output (a .vrt), per-zone VRTs beside it when zones differ, and its sidecar folder.

    dataset: an npy dataset name (`tessvrt datasets`); source: the bucket layout (datasets.MIRRORS),
    default Source Cooperative's AWS bucket; endpoint replaces only the S3 endpoint.
    """
    out = Path(output)
    if out.suffix.lower() != ".vrt":
        raise TessvrtError(f"output {out} must end in .vrt")
    if vsi not in ("s3", "curl"):
        raise TessvrtError(f"--vsi {vsi!r} must be s3 or curl")
    parent = out.resolve().parent
    check_output_folder(parent, "-o")
    box = BBox.parse(bbox) if isinstance(bbox, str) else bbox
    wanted: list[Tile] = []
    if box is not None:
        wanted += box.tiles()
    for t in tiles or []:
        wanted.append(parse_tile(t) if isinstance(t, str) else t)
    wanted = sorted(set(wanted), key=lambda t: (-t.lat_i, t.lon_i))
    if not wanted:
        raise TessvrtError("nothing selected: give --bbox W,S,E,N or --tile LON,LAT")

    choice = npy_dataset(dataset)
    mirror = datasets.mirror(source)
    ep = Endpoint.parse(endpoint or mirror.endpoint)
    src = ManifestSource.resolve(manifest, choice.dataset, mirror, ep)
    sel = select(read_manifest(src.fetch()), choice.dataset, year)
    present = [t for t in wanted if (t.lon_i, t.lat_i) in sel.rows.index]
    missing = [t.name for t in wanted if (t.lon_i, t.lat_i) not in sel.rows.index]
    if not present:
        raise TessvrtError(f"none of the {len(wanted)} requested tile(s) exist in {choice.dataset.label} for {year}; "
                           "try another --year or region")
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

    stem = out.name[:-4]
    sidecar = out.with_name(stem + SIDECAR_SUFFIX)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".tmp", dir=parent))
    w = _Writer(tmp / sidecar.name)
    try:
        folder = w.folder
        zone_windows: dict[int, Window] = {}
        # native tiles: raw VRT with an ownership mask on their own zone grid
        for epsg, zs in by_zone.items():
            owns = ownerships([s.tile for s in zs], [s.grid.window for s in zs])
            for s, own in zip(zs, owns, strict=False):
                g = s.grid
                w.write(f"tiles/{s.tile.name}.vrt", vrt.tile_vrt(s.raw, epsg, g.transform.to_gdal(), w.mask(own, 1)))
            zone_windows[epsg] = _region_window(epsg, [s.grid.window for s in zs], box)
            _write_mosaic(w, f"mosaic_{epsg}.vrt", zone_windows[epsg], _native(zs), scale_bands)

        metadata = {
            "TESSERA_DATASET": sel.dataset.name,
            "TESSERA_DATASET_VERSION": sel.dataset.version,
            "TESSERA_VARIANT": sel.dataset.variant,
            "TESSERA_YEAR": str(sel.year),
            "TESSVRT_TILES": ",".join(s.tile.name for s in sources),
            "TESSVRT_MISSING_TILES": ",".join(missing),
            "TESSVRT_SOURCE": src.location,
            "TESSVRT_VERSION": __version__,
        }
        written: dict[str, str] = {}
        zone_vrts: dict[int, Path] = {}
        if multi:
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
        record = _record(sel, src.location, mirror, ep, vsi, main_epsg, main_window, zone_windows, zone_vrts, sources, missing, scale_bands)
        (folder / RECORD).write_text(json.dumps(record))
        for name, text in written.items():
            (tmp / name).write_text(text)
        _publish(tmp, parent, [sidecar.name, *written])
    except OSError as exc:
        raise TessvrtError(f"cannot write {out} and its {sidecar.name} folder ({exc.strerror or exc}); "
                           "free disk space or choose another -o") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notes = [choice.note] if choice.note else []
    return BuildResult(out, zone_vrts, sidecar, [s.tile.name for s in sources], missing, notes)


def _main_epsg(by_zone: dict[int, list[TileSource]], crs: str | None) -> int:
    if crs:
        code = crs.upper().removeprefix("EPSG:")
        if not code.isdigit() or not (32601 <= int(code) <= 32660 or 32701 <= int(code) <= 32760):
            raise TessvrtError(f"--crs {crs!r} must be a UTM zone EPSG code such as EPSG:32631")
        return int(code)
    # the zone holding most of the area (cells shrink with cos(latitude))
    return max(by_zone, key=lambda e: (sum(math.cos(math.radians(s.tile.lat)) for s in by_zone[e]), -e))


def _sources(window: Window, placed: list[tuple[str, Window, int]]) -> list[vrt.MosaicSource]:
    """Mosaic sources for (path, source window on this grid, scale bands), clipped to the window."""
    out = []
    for path, tw, nscale in placed:
        part = window.intersection(tw)
        if part is None:
            continue
        sx, sy = tw.offset_of(part)
        dx, dy = window.offset_of(part)
        out.append(vrt.MosaicSource(path, nscale, (sx, sy, part.width, part.height), (dx, dy, part.width, part.height)))
    return out


def _write_mosaic(w: _Writer, name: str, window: Window, placed: list[tuple[str, Window, int]], scale_bands: int) -> None:
    """A mosaic of the placed tiles; past vrt.MOSAIC_BLOCK pixels, a mosaic of blocks/<name>_<k>.vrt."""
    blocks = window.blocks(vrt.MOSAIC_BLOCK)
    if len(blocks) == 1:
        w.write(name, vrt.mosaic_vrt(window, _sources(window, placed), scale_bands))
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
        srcs = _sources(blocks[k], reach[k])
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
            scale_bands: int) -> dict:
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
    }


def _publish(tmp: Path, parent: Path, names: list[str]) -> None:
    """Move finished files into place; an old sidecar is replaced only once the new one is whole."""
    for name in names:
        dst, src = parent / name, tmp / name
        if dst.is_dir():
            old = tmp / (name + ".old")
            os.replace(dst, old)
        os.replace(src, dst)

"""npy tiles as a pixel source: the owner tiles' rows under each chunk (ranged GETs), dequantised.

A build record lists every tile of a region with its byte offsets and zone window; `NpySpec`
carries the tiles of one zone (or of one piece of it) and nothing open, so it pickles to a Dask
worker, which traces the tiles' ownership and opens its own S3 connections.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .. import __version__, scales
from ..errors import MissingObject, TessvrtError
from ..grid import Ownership, Tile, TileGrid, Window, ownerships
from ..source import npy
from ..source.s3 import Endpoint, Pool, S3Location, fetch_range
from .base import BANDS, Quantised, Stats, ZoneJob


@dataclass(frozen=True)
class NpyTile:
    """One tile as materialise reads it: where its bytes are, where it lands, what it owns (own: set by open)."""

    name: str
    tile: Tile
    grid: S3Location
    scales: S3Location
    grid_offset: int
    scales_offset: int
    scale_bands: int
    grid_size: int
    scales_size: int
    window: Window  # its pixels on the zone grid: the whole tile, unshifted (zones are never warped here)
    own: Ownership | None = None  # the pixels of that window it owns

    @property
    def width(self) -> int:
        return self.window.width

    @property
    def height(self) -> int:
        return self.window.height


# one row a tile (~60 bytes): a zone of 20,000 tiles pickles to ~1.2 MB, where as many NpyTiles (with their
# S3 locations as strings) would be ~40x that and take seconds to build, pickle and send to each worker
TILE_FIELDS = np.dtype([("lon_i", "<i4"), ("lat_i", "<i4"), ("col0", "<i8"), ("row0", "<i8"), ("width", "<i4"),
                        ("height", "<i4"), ("grid_offset", "<i8"), ("scales_offset", "<i8"), ("grid_size", "<i8"),
                        ("scales_size", "<i8"), ("scale_bands", "<i2")])
NAME = "{name}"  # in a URI pattern: the tile's name, grid_{lon:.2f}_{lat:.2f}


@dataclass(frozen=True, eq=False)
class TileTable:
    """The tiles of one zone as columns: where their bytes are and where their pixels land.

    `grid`/`scales` are one URI pattern holding NAME (object keys are derived from the tile name, as
    upstream derives them) or, when a record's URIs follow no single pattern, one URI per row.
    Tiles become NpyTiles only for the window a task reads (`tiles(mask)`).
    """

    epsg: int
    rows: np.ndarray  # TILE_FIELDS
    grid: str | tuple[str, ...]
    scales: str | tuple[str, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def touching(self, win: Window) -> np.ndarray:
        """Which tiles' windows intersect win (as Window.intersection decides it)."""
        r = self.rows
        c0, c1 = np.maximum(r["col0"], win.col0), np.minimum(r["col0"] + r["width"], win.col0 + win.width)
        t, b = np.minimum(r["row0"], win.row0), np.maximum(r["row0"] - r["height"], win.row0 - win.height)
        return (c1 > c0) & (t > b)

    def take(self, mask: np.ndarray) -> TileTable:
        """The rows selected by a boolean mask."""
        idx = np.flatnonzero(mask)
        grid = self.grid if isinstance(self.grid, str) else tuple(self.grid[i] for i in idx)
        scales = self.scales if isinstance(self.scales, str) else tuple(self.scales[i] for i in idx)
        return TileTable(self.epsg, self.rows[idx], grid, scales)

    def names(self) -> list[str]:
        return [Tile(int(a), int(b)).name for a, b in zip(self.rows["lon_i"], self.rows["lat_i"], strict=True)]

    def tiles(self) -> list[NpyTile]:
        """Every row as an NpyTile (ownership not traced yet)."""
        out = []
        for k, (r, name) in enumerate(zip(self.rows, self.names(), strict=True)):
            g = self.grid.replace(NAME, name) if isinstance(self.grid, str) else self.grid[k]
            s = self.scales.replace(NAME, name) if isinstance(self.scales, str) else self.scales[k]
            out.append(NpyTile(name, Tile(int(r["lon_i"]), int(r["lat_i"])), S3Location.parse(g), S3Location.parse(s),
                               int(r["grid_offset"]), int(r["scales_offset"]), int(r["scale_bands"]), int(r["grid_size"]),
                               int(r["scales_size"]), Window(self.epsg, int(r["col0"]), int(r["row0"]), int(r["width"]),
                                                             int(r["height"]))))
        return out

    @classmethod
    def from_record(cls, rec: dict, epsg: int) -> TileTable:
        """A zone's tiles of a build record (its tiles' windows from their corners, as TileGrid places them)."""
        tiles = [t for t in rec["tiles"] if t["epsg"] == epsg]
        rows = np.zeros(len(tiles), TILE_FIELDS)
        for i, t in enumerate(tiles):
            win = TileGrid(Tile(round(t["lon"] * 100), round(t["lat"] * 100)), epsg, t["corner"][0], t["corner"][1],
                           t["width"], t["height"]).window
            rows[i] = (round(t["lon"] * 100), round(t["lat"] * 100), win.col0, win.row0,
                       win.width, win.height, t["grid_offset"], t["scales_offset"], t["grid_size"], t["scales_size"],
                       t["scale_bands"])
        return cls(epsg, rows, uri_pattern([t["grid"] for t in tiles], [t["name"] for t in tiles]),
                   uri_pattern([t["scales"] for t in tiles], [t["name"] for t in tiles]))


def uri_pattern(uris: list[str], names: list[str]) -> str | tuple[str, ...]:
    """One pattern (the tile name replaced by NAME) when every URI follows it, else the URIs themselves."""
    if not uris or names[0] not in uris[0] or NAME in uris[0]:
        return tuple(uris)
    pat = uris[0].replace(names[0], NAME)
    return pat if all(u == pat.replace(NAME, n) for u, n in zip(uris, names, strict=True)) else tuple(uris)


@dataclass(frozen=True)
class NpySpec:
    """The tiles of one zone of a region (a build record's, or a manifest's selection), read from an endpoint.

    Holds a TileTable, nothing open: `part(win)` keeps the rows a window touches (what a task
    carries); `open(win)` makes NpyTiles of those rows only and traces their ownership where it runs.
    """

    endpoint: Endpoint
    table: TileTable
    allow_missing: bool = False

    @property
    def tiles(self) -> tuple[NpyTile, ...]:
        return tuple(self.table.tiles())

    def covers(self, win: Window) -> bool:
        return bool(self.table.touching(win).any())

    def footprint(self) -> tuple[int, int]:
        """(tiles, bytes of their objects): what reading all of it costs at most, known without a request."""
        r = self.table.rows
        return len(r), int(r["grid_size"].sum() + r["scales_size"].sum())

    def names(self) -> list[str]:
        return self.table.names()

    def part(self, win: Window) -> NpySpec:
        """Only the tiles a window touches: what a piece's task carries."""
        return replace(self, table=self.table.take(self.table.touching(win)))

    def release(self) -> None:
        pass

    def open(self, win: Window) -> NpyPixels:
        tiles = self.table.take(self.table.touching(win)).tiles()
        if tiles:  # ownership is traced where the pixels are read (cheap, and not pickled); tiles are independent
            owns = ownerships([t.tile for t in tiles], [t.window for t in tiles])
            tiles = [replace(t, own=o) for t, o in zip(tiles, owns, strict=True)]
        return NpyPixels(_Source(self.endpoint, self.allow_missing), tiles, win)


def record_tiles(rec: dict, epsg: int) -> list[NpyTile]:
    """A zone's tiles of a build record, with their ownership traced (one batch for the zone)."""
    tiles = TileTable.from_record(rec, epsg).tiles()
    owns = ownerships([t.tile for t in tiles], [t.window for t in tiles])
    return [replace(t, own=o) for t, o in zip(tiles, owns, strict=True)]


def npy_jobs(rec: dict, endpoint: Endpoint, allow_missing: bool = False) -> list[ZoneJob]:
    """A build record's zones as jobs: window, tiles (a TileTable: ownership is traced when opened) and GeoTIFF tags."""
    out = []
    for z in rec["zones"]:
        table = TileTable.from_record(rec, z["epsg"])
        out.append(ZoneJob(z["label"], Window(**z["window"]), NpySpec(endpoint, table, allow_missing),
                           _metadata(rec, z, table.names())))
    return out


def _metadata(rec: dict, zone: dict, names: list[str]) -> dict[str, str]:
    return {
        "TESSERA_DATASET": str(rec["dataset"]),
        "TESSERA_DATASET_VERSION": str(rec["dataset_version"]),
        "TESSERA_VARIANT": str(rec["variant"]),
        "TESSERA_YEAR": str(rec["year"]),
        "TESSVRT_TILES": ",".join(names),
        "TESSVRT_MISSING_TILES": ",".join(rec.get("missing", [])),
        "TESSVRT_SOURCE": str(rec["manifest"]),  # build stores it without user-info or query string
        "TESSVRT_VERSION": __version__,
        "TESSVRT_ZONE": f"EPSG:{zone['epsg']}",
    }


@dataclass
class _Source:
    """Where tile bytes come from, and which tiles turned out to be gone (with --allow-missing)."""

    ep: Endpoint
    allow_missing: bool = False
    missing: set[str] = field(default_factory=set)


@dataclass
class _TileRows:
    tile: NpyTile
    r0: int  # first tile row held
    emb: Future  # -> (rows, width, 128) int8
    scales: Future  # -> (rows, width) or (rows, width, 128) float32
    nbytes: int  # bytes requested
    first_x0: int  # the chunk that fetched them (later chunks of the same block row reuse them)


@dataclass
class NpyPixels:
    """A window's pixels from npy tiles."""

    src: _Source
    tiles: list[NpyTile]
    win: Window
    remote_bytes: int = 0

    def check(self, threads: int) -> int:
        """Compare every tile object's npy header with the record (one small ranged GET each); bytes read.

        build trusts manifest sizes (no per-tile request), so this is where an object replaced or
        damaged since is refused, before a pixel is written, instead of dequantising the wrong bytes.
        """
        src = self.src

        def one(t: NpyTile, grid: bool) -> int:
            loc, off, size = (t.grid, t.grid_offset, t.grid_size) if grid else (t.scales, t.scales_offset, t.scales_size)
            try:
                head = fetch_range(src.ep, loc, 0, off, size, what=f"tile {t.name}")
                start = npy.data_offset(head)
                if start != off:
                    raise ValueError(f"its data starts at byte {start}, not {off}")
                h = npy.parse_header(head)
                if grid and npy.embedding_shape(h, BANDS) != (t.height, t.width):
                    raise ValueError(f"its shape is {h.shape}, not ({t.height}, {t.width}, {BANDS})")
                if not grid and npy.scale_bands(h, t.height, t.width, BANDS) != t.scale_bands:
                    raise ValueError(f"its shape is {h.shape}, the VRT expects {t.scale_bands} scale band(s)")
            except MissingObject:
                if not src.allow_missing:
                    raise
                src.missing.add(t.name)
                return 0
            except ValueError as exc:
                raise TessvrtError(f"tile {t.name}: {loc.uri}: {exc}; the object no longer matches the VRT - "
                                   "rebuild it with tessvrt build") from None
            return off

        with Pool(threads, "tessvrt-header") as pool:  # the first error, or an interrupt, ends it without waiting
            n = sum(pool.map(lambda a: one(*a), [(t, g) for t in self.tiles for g in (True, False)]))
        self.remote_bytes += n
        return n

    def fetch(self, pool: Pool, y0: int, x0: int, bs: int, cw: int, prev: list[_TileRows] | None) -> list[_TileRows]:
        """Ranged GETs (started, not awaited) of the tile rows under output rows [y0, y0+bs) of the
        tiles that own pixels in columns [x0, x0+cw); rows already fetched for this block row are reused."""
        have = {id(tr.tile): tr for tr in prev or []}
        win, src = self.win, self.src
        h, w = min(bs, win.height - y0), min(cw, win.width - x0)
        out = []
        for t in self.tiles:
            tx, ty = win.offset_of(t.window)  # tile's top-left on the output
            r0, r1 = max(y0 - ty, 0), min(y0 + h - ty, t.height)
            c0, c1 = max(x0 - tx, 0), min(x0 + w - tx, t.width)
            if r1 <= r0 or c1 <= c0:
                continue
            own = t.own.cols[r0:r1]  # type: ignore[union-attr]
            if not (np.minimum(own[:, 1], c1) > np.maximum(own[:, 0], c0)).any():
                continue
            if id(t) in have:
                out.append(have[id(t)])
                continue
            if t.name in src.missing:  # found gone by the header check (--allow-missing): stays NaN, no request
                continue
            line = t.width * BANDS
            emb = pool.submit(_get, src, t.grid, t.grid_offset + r0 * line, (r1 - r0) * line, t.grid_size, t.name,
                              np.int8, (r1 - r0, t.width, BANDS))
            sline = t.width * 4 * t.scale_bands
            sshape = (r1 - r0, t.width) if t.scale_bands == 1 else (r1 - r0, t.width, BANDS)
            sc = pool.submit(_get, src, t.scales, t.scales_offset + r0 * sline, (r1 - r0) * sline, t.scales_size,
                             t.name, np.dtype("<f4"), sshape)
            out.append(_TileRows(t, r0, emb, sc, (r1 - r0) * (line + sline), x0))
        return out

    def chunk(self, cpu: Pool, cur: list[_TileRows], y0: int, x0: int, h: int, w: int,
              bands: list[int]) -> np.ndarray:
        """(bands, h, w) float32 of output window [y0, y0+h) x [x0, x0+w): owner tile's value, NaN elsewhere.

        Tiles own disjoint pixels, so each is dequantised into the chunk by its own thread.
        """
        out = np.full((len(bands), h, w), np.nan, np.float32)
        sel = None if bands == list(range(1, BANDS + 1)) else np.asarray(bands) - 1
        list(cpu.map(lambda tr: _dequantise_into(out, tr, self.win, y0, x0, sel), cur))
        self._count(cur, x0)
        return out

    def quantised(self, cpu: Pool, cur: list[_TileRows], y0: int, x0: int, h: int, w: int) -> list[Quantised]:
        """The chunk as pieces, one per tile: its fetched int8 rows (views, not copied) and the scales of the
        pixels it owns (NaN elsewhere); per-band-scale tiles: their dequantised values."""
        pieces = [p for p in (_piece(tr, self.win, y0, x0, h, w) for tr in cur if tr.tile.scale_bands == 1) if p]
        per_band = [tr for tr in cur if tr.tile.scale_bands != 1]
        if per_band:
            pb = np.full((BANDS, h, w), np.nan, np.float32)
            list(cpu.map(lambda tr: _dequantise_into(pb, tr, self.win, y0, x0, None), per_band))
            pieces.append(Quantised(np.broadcast_to(np.int8(0), (h, w, BANDS)), np.full((h, w), np.nan, np.float32), pb))
        self._count(cur, x0)
        return pieces

    def _count(self, cur: list[_TileRows], x0: int) -> None:
        self.remote_bytes += sum(tr.nbytes for tr in cur if tr.first_x0 == x0 and tr.emb.result() is not None)

    def stats(self) -> Stats:
        return Stats(remote_bytes=self.remote_bytes, missing=sorted({t.name for t in self.tiles} & self.src.missing))

    def close(self, wait: bool = True) -> None:
        pass


def _get(src: _Source, loc: S3Location, start: int, length: int, total: int, tile: str, dtype: Any,
         shape: tuple[int, ...]) -> np.ndarray | None:
    """The rows as an array, or None for a gone object when missing tiles are allowed."""
    try:
        body = fetch_range(src.ep, loc, start, length, total, what=f"tile {tile}")
    except MissingObject:
        if not src.allow_missing:
            raise
        src.missing.add(tile)
        return None
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _owned_part(tr: _TileRows, win: Window, y0: int, x0: int, h: int, w: int) -> tuple | None:
    """What of tile rows tr lands in the chunk at output (x0, y0) of size (h, w): tile rows, columns,
    chunk row and column of their first pixel, and the ownership mask; None when nothing."""
    t = tr.tile
    tx, ty = win.offset_of(t.window)
    r_lo, r_hi = max(y0 - ty, tr.r0), min(y0 + h - ty, tr.r0 + tr.emb.result().shape[0])  # tile rows in this chunk
    c0, c1 = max(x0 - tx, 0), min(x0 + w - tx, t.width)  # tile columns in this chunk
    if r_hi <= r_lo or c1 <= c0:
        return None
    owned = t.own.mask(slice(r_lo, r_hi), slice(c0, c1))  # type: ignore[union-attr]
    return (r_lo, r_hi), (c0, c1), ty + r_lo - y0, tx + c0 - x0, owned


def _piece(tr: _TileRows, win: Window, y0: int, x0: int, h: int, w: int) -> Quantised | None:
    """The part of tile rows tr in the chunk at output (x0, y0) of size (h, w), as a piece: the int8 rows as
    fetched and the scales of the pixels this tile owns where valid (NaN elsewhere); None when nothing."""
    emb, sc = tr.emb.result(), tr.scales.result()
    if emb is None or sc is None:  # a gone object, allowed: its pixels stay no data
        return None
    part = _owned_part(tr, win, y0, x0, h, w)
    if part is None:
        return None
    (r_lo, r_hi), (c0, c1), oy, ox, owned = part
    s = sc[r_lo - tr.r0:r_hi - tr.r0, c0:c1]
    return Quantised(emb[r_lo - tr.r0:r_hi - tr.r0, c0:c1], np.where(scales.valid(s) & owned, s, np.float32(np.nan)),
                     y=oy, x=ox)


def _dequantise_into(out: np.ndarray, tr: _TileRows, win: Window, y0: int, x0: int, sel: np.ndarray | None) -> None:
    """Write the pixels this tile owns into `out` (whose top-left is output pixel (x0, y0)).

    Row by row: transposing a (width, 128) int8 row to (128, width) stays in cache, where
    transposing the whole (rows, width, 128) block at once was 4x slower (measured).
    """
    t = tr.tile
    emb, sc = tr.emb.result(), tr.scales.result()
    if emb is None or sc is None:  # a gone object, allowed: its pixels stay NaN
        return
    tx, ty = win.offset_of(t.window)
    _, h, w = out.shape
    r_lo, r_hi = max(y0 - ty, tr.r0), min(y0 + h - ty, tr.r0 + emb.shape[0])  # tile rows in this chunk
    c0, c1 = max(x0 - tx, 0), min(x0 + w - tx, t.width)  # tile columns in this chunk
    if r_hi <= r_lo or c1 <= c0:
        return
    owned = t.own.mask(slice(r_lo, r_hi), slice(c0, c1))  # type: ignore[union-attr]
    full = owned.all(axis=1)
    ox = tx + c0 - x0  # chunk column of tile column c0
    for r in np.flatnonzero(owned.any(axis=1)):
        e = emb[r_lo - tr.r0 + r, c0:c1]  # (w, 128) int8
        s = sc[r_lo - tr.r0 + r, c0:c1]  # (w,) or (w, 128)
        if sel is not None:
            e = e[:, sel]
            s = s[:, sel] if s.ndim == 2 else s
        s = np.where(scales.valid(s), s, np.float32(np.nan))
        np.multiply(e.T, s.T, out=out[:, ty + r_lo + r - y0, ox:ox + c1 - c0], where=True if full[r] else owned[r])

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
from .base import BANDS, Stats, ZoneJob


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


@dataclass(frozen=True)
class NpySpec:
    """The tiles of one zone of a build record, read from an endpoint."""

    endpoint: Endpoint
    tiles: tuple[NpyTile, ...]
    allow_missing: bool = False

    def covers(self, win: Window) -> bool:
        return any(t.window.intersection(win) for t in self.tiles)

    def part(self, win: Window) -> NpySpec:
        """Only the tiles a window touches: what a piece's task carries."""
        return replace(self, tiles=tuple(t for t in self.tiles if t.window.intersection(win)))

    def release(self) -> None:
        pass

    def open(self, win: Window) -> NpyPixels:
        tiles = [t for t in self.tiles if t.window.intersection(win)]
        owned = [t if t.own is not None else None for t in tiles]
        todo = [i for i, t in enumerate(owned) if t is None]
        if todo:  # ownership is traced where the pixels are read (cheap, and not pickled)
            owns = ownerships([tiles[i].tile for i in todo], [tiles[i].window for i in todo])
            for i, o in zip(todo, owns, strict=True):
                owned[i] = replace(tiles[i], own=o)
        return NpyPixels(_Source(self.endpoint, self.allow_missing), owned, win)  # type: ignore[arg-type]


def record_tiles(rec: dict, epsg: int) -> list[NpyTile]:
    """A zone's tiles of a build record, with their ownership traced (one batch for the zone)."""
    tiles = [t for t in rec["tiles"] if t["epsg"] == epsg]
    grids = [TileGrid(Tile(round(t["lon"] * 100), round(t["lat"] * 100)), t["epsg"], t["corner"][0], t["corner"][1],
                      t["width"], t["height"]) for t in tiles]
    owns = ownerships([g.tile for g in grids], [g.window for g in grids])
    return [
        NpyTile(t["name"], g.tile, S3Location.parse(t["grid"]), S3Location.parse(t["scales"]), t["grid_offset"],
                t["scales_offset"], t["scale_bands"], t["grid_size"], t["scales_size"], g.window, own)
        for t, g, own in zip(tiles, grids, owns, strict=True)
    ]


def npy_jobs(rec: dict, endpoint: Endpoint, allow_missing: bool = False) -> list[ZoneJob]:
    """A build record's zones as jobs: window, tiles and GeoTIFF tags of each."""
    out = []
    for z in rec["zones"]:
        tiles = record_tiles(rec, z["epsg"])
        out.append(ZoneJob(z["label"], Window(**z["window"]), NpySpec(endpoint, tuple(tiles), allow_missing),
                           _metadata(rec, z, tiles)))
    return out


def _metadata(rec: dict, zone: dict, tiles: list[NpyTile]) -> dict[str, str]:
    return {
        "TESSERA_DATASET": str(rec["dataset"]),
        "TESSERA_DATASET_VERSION": str(rec["dataset_version"]),
        "TESSERA_VARIANT": str(rec["variant"]),
        "TESSERA_YEAR": str(rec["year"]),
        "TESSVRT_TILES": ",".join(t.name for t in tiles),
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
        self.remote_bytes += sum(tr.nbytes for tr in cur if tr.first_x0 == x0 and tr.emb.result() is not None)
        return out

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

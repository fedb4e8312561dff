"""Regions: what a command covers, as one concept (a lon/lat box, tiles, a polygon file or a country).

A Region lives in EPSG:4326. It answers the two questions every command asks: which 0.1-degree tile
cells it selects (`cells`, `selects`), and, for `--clip`, which pixel centres of a zone grid window fall
inside it (`inside`). A cell is selected when its interior meets the polygon's interior (a cell that
only shares an edge or a corner with the polygon is not), so concave shapes and holes select exactly
the cells they cover in part. A pixel is kept by --clip when its centre is inside the polygon or on
its boundary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import TessvrtError
from .grid import Tile, Window

if TYPE_CHECKING:
    from shapely import Geometry

CELL = 0.1  # degrees: the tile grid
SEGMENT_M = 100.0  # a projected file's edges are densified to this before reprojection (straight there, curved here)


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
            swapped = -90 <= w <= 90 and -90 <= e <= 90 and -180 <= s <= 180 and -180 <= n <= 180
            raise TessvrtError(f"--bbox {text!r} is out of range: longitudes -180..180, latitudes -90..90"
                               + (f"; if you typed LAT,LON: longitude comes first, --bbox {s:g},{w:g},{n:g},{e:g}"
                                  if swapped else ""))
        if w >= e or s >= n:
            raise TessvrtError(f"--bbox {text!r} is empty or inverted: need W < E and S < N, in that order")
        return cls(w, s, e, n)

    def cells(self) -> tuple[int, int, int, int]:
        """Cell index ranges [i0, i1) x [j0, j1) (floor(10 lon), floor(10 lat)) of the cells the box intersects."""
        i0, i1 = math.floor(self.west * 10 + 1e-9), math.ceil(self.east * 10 - 1e-9)
        j0, j1 = math.floor(self.south * 10 + 1e-9), math.ceil(self.north * 10 - 1e-9)
        return i0, max(i1, i0 + 1), j0, max(j1, j0 + 1)

    @property
    def count(self) -> int:
        i0, i1, j0, j1 = self.cells()
        return (i1 - i0) * (j1 - j0)

    def tiles(self) -> list[Tile]:
        """Every tile whose cell [c-0.05, c+0.05) intersects the box."""
        i0, i1, j0, j1 = self.cells()
        return [Tile(i * 10 + 5, j * 10 + 5) for j in range(j0, j1) for i in range(i0, i1)]

    def text(self) -> str:
        return f"{self.west:g},{self.south:g},{self.east:g},{self.north:g}"


def parse_tile(text: str) -> Tile:
    try:
        lon, lat = (float(p) for p in text.split(","))
        if not (-180 < lon < 180 and -90 < lat < 90):  # also refuses nan and inf
            raise ValueError("longitude must be within (-180, 180) and latitude within (-90, 90)")
        return Tile.at(lon, lat)
    except ValueError as exc:
        raise TessvrtError(f"--tile {text!r}: {exc}; write LON,LAT of a tile centre, e.g. -0.05,51.55") from None


@dataclass(frozen=True)
class Region:
    """An area in EPSG:4326: a box (`box`), a polygon (`shape`, with `box` its bounds), plus explicit tiles.

    label says where it came from ("--bbox ...", "--region FILE", "--country NAME") in messages and tags.
    """

    box: BBox | None = None
    shape: Geometry | None = field(default=None, compare=False)  # None: the box is the region (or tiles only)
    tiles: tuple[Tile, ...] = ()
    label: str = ""

    @classmethod
    def from_options(cls, bbox: str | BBox | tuple | None = None, tiles: list | None = None, region: str | Path | None = None,
                     country: str | None = None) -> Region | None:
        """The region of a command's --bbox, --tile, --region FILE and --country options; None when none is given.

        At most one of bbox, region and country (tiles may be added to any of them)."""
        given = [o for o, v in (("--bbox", bbox), ("--region", region), ("--country", country)) if v is not None]
        if len(given) > 1:
            raise TessvrtError(f"give one of {', '.join(given)}, not several: each one is a whole region")
        picked = tuple(parse_tile(t) if isinstance(t, str) else t for t in tiles or [])
        if region is not None:
            return cls.polygon(read_region_file(region), f"--region {region}", picked)
        if country is not None:
            from .country import country_shape

            shape, name = country_shape(country)
            return cls.polygon(shape, f"--country {name}", picked)
        if bbox is not None:
            box = BBox.parse(bbox) if isinstance(bbox, str) else bbox if isinstance(bbox, BBox) else BBox(*bbox)
            return cls(box, None, picked, f"--bbox {box.text()}")
        if picked:
            return cls(None, None, picked, "--tile " + " ".join(f"{t.lon:.2f},{t.lat:.2f}" for t in picked[:5]))
        return None

    @classmethod
    def polygon(cls, shape: Geometry, label: str, tiles: tuple[Tile, ...] = ()) -> Region:
        import shapely

        shapely.prepare(shape)
        w, s, e, n = shape.bounds
        return cls(BBox(w, s, e, n), shape, tiles, label)

    @property
    def is_polygon(self) -> bool:
        return self.shape is not None

    @cached_property
    def area_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) of every cell the area selects (not the explicit tiles), north to south then west to east.

        A polygon is cut into rows of cells first, so only cells near it are tested (a country's box can
        hold millions of cells)."""
        if self.box is None:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        i0, i1, j0, j1 = self.box.cells()
        if self.shape is None:
            j, i = np.meshgrid(np.arange(j1 - 1, j0 - 1, -1), np.arange(i0, i1), indexing="ij")
            return i.ravel().astype(np.int64), j.ravel().astype(np.int64)
        import shapely

        out_i, out_j = [], []
        for j in range(j1 - 1, j0 - 1, -1):
            strip = shapely.intersection(self.shape, shapely.box(i0 * CELL - 1, j * CELL, i1 * CELL + 1, (j + 1) * CELL))
            if strip.is_empty or strip.area == 0:
                continue
            a, _, b, _ = strip.bounds
            ii = np.arange(max(math.floor(a * 10) - 1, i0), min(math.ceil(b * 10) + 1, i1), dtype=np.int64)
            keep = _interiors_meet(self.shape, ii, np.full(ii.size, j, np.int64))
            out_i.append(ii[keep])
            out_j.append(np.full(int(keep.sum()), j, np.int64))
        if not out_i:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(out_i), np.concatenate(out_j)

    def cell_rows(self) -> Iterator[tuple[np.ndarray, int]]:
        """(i of the selected cells, j) per row of the area, north to south: a box's rows are made as they are
        asked for (the world is 6.48 M cells), a polygon's come from area_cells."""
        if self.box is None:
            return
        if self.shape is None:
            i0, i1, j0, j1 = self.box.cells()
            for j in range(j1 - 1, j0 - 1, -1):
                yield np.arange(i0, i1, dtype=np.int64), j
            return
        ai, aj = self.area_cells
        if ai.size == 0:
            return
        cut = np.flatnonzero(np.diff(aj)) + 1
        for ii, jj in zip(np.split(ai, cut), np.split(aj, cut), strict=True):
            yield ii, int(jj[0])

    @property
    def count(self) -> int:
        """Cells requested: the area's and the explicit tiles' outside it."""
        extra = [t for t in self.tiles if not self.selects(np.array([t.cell[0]]), np.array([t.cell[1]]), tiles=False)[0]]
        if self.shape is None and self.box is not None:
            return self.box.count + len(extra)
        return len(self.area_cells[0]) + len(extra)

    def selects(self, ci: np.ndarray, cj: np.ndarray, tiles: bool = True) -> np.ndarray:
        """Which cells (i = floor(10 lon), j = floor(10 lat)) the region selects (with its explicit tiles)."""
        ci, cj = np.asarray(ci, np.int64), np.asarray(cj, np.int64)
        m = np.zeros(ci.shape, bool)
        if self.box is not None:
            i0, i1, j0, j1 = self.box.cells()
            m = (ci >= i0) & (ci < i1) & (cj >= j0) & (cj < j1)
            if self.shape is not None and m.any():
                ai, aj = self.area_cells
                m &= np.isin(_key(ci, cj), _key(ai, aj))
        if tiles and self.tiles:
            m |= np.isin(_key(ci, cj), _key(*(np.array(v, np.int64) for v in zip(*(t.cell for t in self.tiles), strict=True))))
        return m

    def cells_region(self) -> Region:
        """The union of the cells the area selects, as a polygon region (what npy tiles cover of it)."""
        import shapely

        ai, aj = self.area_cells
        cells = shapely.box(ai * CELL, aj * CELL, (ai + 1) * CELL, (aj + 1) * CELL)
        return Region.polygon(shapely.coverage_union_all(cells) if len(cells) else shapely.Polygon(),
                              f"{self.label} (its cells)")

    @cached_property
    def clip_shape(self) -> Geometry:
        """What --clip keeps: the polygon, the box, or (tiles only) the union of the tiles' cells; and the tiles' cells."""
        import shapely

        parts = [self.shape] if self.shape is not None else []
        if self.shape is None and self.box is not None:
            b = self.box
            parts.append(shapely.box(b.west, b.south, b.east, b.north))
        parts += [shapely.box(*t.bounds) for t in self.tiles]
        out = shapely.union_all(parts) if len(parts) > 1 else parts[0]
        shapely.prepare(out)
        return out

    def contains(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Which lon/lat points lie inside the region or on its boundary."""
        import shapely

        return shapely.intersects_xy(self.clip_shape, np.asarray(lon, float), np.asarray(lat, float))

    def inside(self, win: Window) -> np.ndarray:
        """(height, width) bool: pixel centres of a zone grid window inside the region (or on its boundary).

        Whole windows inside or outside are decided from their outline (densified) without a per-pixel test."""
        import shapely

        from .grid import _to_lonlat

        shape = self.clip_shape
        xs, ys = win.pixel_centres()
        n = max(17, max(win.width, win.height) // 32 + 1)  # outline points per side: <= 320 m apart, far below
        k = np.linspace(0.0, 1.0, n)  # the 5 m from an edge to the nearest pixel centre even where meridians converge
        x0, x1, y0, y1 = xs[0] - 5, xs[-1] + 5, ys[-1] - 5, ys[0] + 5
        ex = np.concatenate([x0 + (x1 - x0) * k, np.full(n, x1), x1 - (x1 - x0) * k, np.full(n, x0)])
        ey = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * k, np.full(n, y1), y1 - (y1 - y0) * k])
        lon, lat = _to_lonlat(win.epsg).transform(ex, ey)
        outline = shapely.Polygon(np.column_stack([lon, lat])).buffer(1e-6)  # ~10 cm: covers the curved edges
        if shapely.contains_properly(shape, outline):
            return np.ones((win.height, win.width), bool)
        if not shapely.intersects(shape, outline):
            return np.zeros((win.height, win.width), bool)
        gx, gy = np.meshgrid(xs, ys)
        lon, lat = _to_lonlat(win.epsg).transform(gx.ravel(), gy.ravel())
        return shapely.intersects_xy(shape, lon, lat).reshape(win.height, win.width)

    def carve(self, win: Window) -> np.ndarray:
        """(n, 4) rectangles x, y, w, h (window pixel coordinates) covering exactly the pixels whose centres are
        outside: a VRT mask clears them. Runs of a row, merged with the same run in the rows below."""
        keep = self.inside(win)
        if keep.all():
            return np.empty((0, 4), np.int64)
        rects: list[tuple[int, int, int, int]] = []
        open_: dict[tuple[int, int], int] = {}  # run (x0, x1) -> first row
        for r in range(win.height + 1):
            runs = set()
            if r < win.height:
                row = np.concatenate([[True], keep[r], [True]])
                edges = np.flatnonzero(np.diff(row.astype(np.int8)))
                runs = {(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)}
            for run in [k for k in open_ if k not in runs]:
                y0 = open_.pop(run)
                rects.append((run[0], y0, run[1] - run[0], r - y0))
            for run in runs:
                open_.setdefault(run, r)
        return np.array(rects, np.int64).reshape(-1, 4)

    def fingerprint(self) -> str:
        """A short hash of the clip shape: tags and a collection's fingerprint change with it."""
        import hashlib

        import shapely

        return hashlib.sha256(shapely.to_wkb(self.clip_shape, output_dimension=2)).hexdigest()[:16]


def _key(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return (np.asarray(i, np.int64) + 4000) * 4000 + (np.asarray(j, np.int64) + 2000)


def _interiors_meet(shape: Geometry, ci: np.ndarray, cj: np.ndarray) -> np.ndarray:
    """Per cell: does its interior meet the (prepared) shape's interior? Cells wholly inside skip the exact test."""
    import shapely

    cells = shapely.box(ci * CELL, cj * CELL, (ci + 1) * CELL, (cj + 1) * CELL)
    hit = shapely.intersects(shape, cells)
    edge = np.flatnonzero(hit & ~shapely.contains_properly(shape, cells))
    if edge.size:
        hit[edge] = shapely.relate_pattern(shape, cells[edge], "T********")
    return hit


def read_region_file(path: str | Path) -> Geometry:
    """The polygons of a GeoJSON, GeoPackage or Shapefile (its first layer), in EPSG:4326, unioned.

    Any CRS: a projected file's edges are densified (SEGMENT_M) before reprojection, so a straight edge
    there stays that edge here. Points and lines are ignored; no polygon at all is an error."""
    import shapely

    p = Path(path)
    if not p.exists():
        raise TessvrtError(f"--region {p}: no such file; give a GeoJSON, GeoPackage or Shapefile of polygons")
    if p.is_dir() and not any(p.glob("*.shp")):
        raise TessvrtError(f"--region {p} is a folder; give a GeoJSON, GeoPackage or Shapefile of polygons")
    import pyogrio
    import pyogrio.errors

    try:
        meta, _, wkb, _ = pyogrio.raw.read(p, read_geometry=True, columns=[])
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.GeometryError,
            pyogrio.errors.FieldError, OSError, ValueError) as exc:
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise TessvrtError(f"--region {p} cannot be read as a vector file ({why}); give a GeoJSON, GeoPackage or "
                           "Shapefile of polygons") from None
    geoms = shapely.from_wkb(wkb) if wkb is not None and len(wkb) else np.empty(0, object)
    geoms = geoms[~shapely.is_missing(geoms)] if len(geoms) else geoms
    if len(geoms) == 0:
        raise TessvrtError(f"--region {p} holds no features; give a file with at least one polygon")
    polys = shapely.get_parts(geoms)
    polys = polys[np.isin(shapely.get_type_id(polys), [3, 6])]  # Polygon, MultiPolygon
    polys = polys[~shapely.is_empty(polys)] if len(polys) else polys
    if len(polys) == 0:
        kinds = sorted({g.geom_type for g in geoms})
        raise TessvrtError(f"--region {p} holds no polygons (only {', '.join(kinds)}); give a file of polygons or "
                           "use --bbox")
    shape = shapely.union_all(shapely.make_valid(polys))
    shape = _to_lonlat(shape, meta.get("crs"), p)
    shape = _polygonal(shapely.make_valid(shape))
    if shape.is_empty or shape.area == 0:
        raise TessvrtError(f"--region {p}: its polygons have no area; give a file of polygons")
    return shape


def _to_lonlat(shape: Geometry, crs: str | None, p: Path) -> Geometry:
    import shapely
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    w, s, e, n = shape.bounds
    if not crs:
        if -180 <= w and e <= 180 and -90 <= s and n <= 90:
            return shape  # no CRS said (a Shapefile without .prj): coordinates that fit are read as lon/lat
        raise TessvrtError(f"--region {p} has no coordinate reference system and its coordinates are not "
                           "longitudes/latitudes; add one (a .prj beside a Shapefile) or save it as GeoJSON")
    try:
        src = CRS.from_user_input(crs)
    except CRSError:
        raise TessvrtError(f"--region {p}: its CRS {crs[:60]!r} is not one PROJ knows; save it in EPSG:4326") from None
    if src.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        return shape
    if src.is_projected:
        unit = src.axis_info[0].unit_conversion_factor or 1.0
        shape = shapely.segmentize(shape, SEGMENT_M / unit)
    tr = Transformer.from_crs(src, 4326, always_xy=True)
    out = shapely.transform(shape, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    w, s, e, n = out.bounds
    if not all(math.isfinite(v) for v in (w, s, e, n)) or not (-180 <= w and e <= 180 and -90 <= s and n <= 90):
        raise TessvrtError(f"--region {p}: its polygons lie outside where {src.name} can be converted to "
                           "longitude/latitude; check the file's CRS")
    return out


def _polygonal(geom: Geometry) -> Geometry:
    """Only the polygon parts of a geometry (make_valid can return lines and points beside them)."""
    import shapely

    parts = shapely.get_parts(geom)
    parts = parts[np.isin(shapely.get_type_id(parts), [3, 6])]
    return shapely.union_all(parts) if len(parts) else shapely.Polygon()


__all__ = ["BBox", "Region", "parse_tile", "read_region_file"]

"""The main Zarr VRT of a region that spans zone parts: one grid (the main part's EPSG), every part on it.

Parts of the main zone (its other hemisphere too) are the same group arrays shifted, so they are placed
directly from the references. Parts of other zones are their raw mosaic warped onto the main grid (nearest,
exact transform, as npy cross-zone tiles are: vrt.warped_vrt) and restricted by a mask to the main-grid
pixels whose centres lie in that part's zone and hemisphere and outside the native parts: each pixel
comes from exactly one part. Derived (mul) bands sit only on top, as for npy (SPEC's mosaic pitfall).
"""

from __future__ import annotations

import numpy as np

from . import vrt
from .grid import PIXEL, Window, _to_lonlat, zone_label


def owned_carve(fw: Window, zone: int, south: bool, native: list[Window]) -> np.ndarray:
    """(n, 4) rectangles x, y, w, h of fw NOT owned by a part of (zone, hemisphere): to clear from its mask.

    Every pixel centre is projected (fine for the regions a VRT is read over; a continent would trace edges
    as grid.ownerships does). Equal consecutive rows share one rectangle."""
    xs = PIXEL * (fw.col0 + np.arange(fw.width)) + 5.0
    ys = PIXEL * (fw.row0 - np.arange(fw.height)) + 5.0
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = (np.asarray(a) for a in _to_lonlat(fw.epsg).transform(gx, gy))
    owned = (np.clip(np.floor((lon + 180.0) / 6.0).astype(np.int64) + 1, 1, 60) == zone) & ((lat < 0) == south)
    for w in native:
        part = fw.intersection(w)
        if part is not None:
            x, y = fw.offset_of(part)
            owned[y:y + part.height, x:x + part.width] = False
    rects = []
    y = 0
    while y < fw.height:
        y1 = y + 1
        while y1 < fw.height and np.array_equal(owned[y1], owned[y]):
            y1 += 1
        row = np.concatenate([[True], owned[y], [True]])
        edges = np.flatnonzero(np.diff(row.astype(np.int8)))  # starts and ends of not-owned runs
        rects += [(int(a), y, int(b - a), y1 - y) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        y = y1
    return np.array(rects, np.int64).reshape(-1, 4)


def cross_zone(write, parts: list, main, bbox: tuple[float, float, float, float], const) -> Window:  # noqa: ANN001
    """Write mosaic.vrt (and warped/*) of every part on the main part's grid; returns the main window.

    write(rel, text): a sidecar file; const(width, height) -> path of the constant mask source, relative to
    warped/ (grown to the largest mask)."""
    from .build import _box_window
    from .zarrvrt import native_sources, on_grid, raw_xml

    epsg = main.window.epsg
    same = [p for p in parts if p.group == main.group]
    others = [p for p in parts if p.group != main.group]
    window = _box_window(epsg, *bbox, 64, 0.0)
    native = [on_grid(p.window, epsg) for p in same]
    for w in native:
        window = window.union(w)
    bands: list[list[str]] = []
    scales: list[str] = []
    for p in same:
        b, s = native_sources(p, window)
        bands.append(b)
        scales.append(s)
    for p in others:
        w, s, e, n = bbox
        zw, ze = -180.0 + 6 * (p.window.epsg % 100 - 1), -180.0 + 6 * (p.window.epsg % 100)
        south = p.window.epsg >= 32700
        box = (max(w, zw), max(s, -90.0) if south else max(s, 0.0), min(e, ze), min(n, 0.0) if south else n)
        fw = _box_window(epsg, *box, 16, 10.0).intersection(window)
        if fw is None:
            continue
        carve = owned_carve(fw, p.window.epsg % 100, south, native)
        name = f"warped/{zone_label(p.window.epsg)}_{epsg}"
        nb = vrt.BANDS + 1
        write(f"{name}.vrt", vrt.warped_vrt(fw, f"../mosaic_{p.window.epsg}.vrt", p.window.epsg,
                                            vrt.window_gt(p.window), nb, "Int8"))
        mask = vrt.mask_band(fw.width, fw.height, carve, const(fw.width, fw.height))
        write(f"{name}_owned.vrt", vrt.placed_vrt(fw, f"{name.split('/')[1]}.vrt", nb, mask, "Int8"))
        dx, dy = window.offset_of(fw)
        fn = f'<SourceFilename relativeToVRT="1">{name}_owned.vrt</SourceFilename>'
        rects = (f'<SrcRect xOff="0" yOff="0" xSize="{fw.width}" ySize="{fw.height}"/>'
                 f'<DstRect xOff="{dx}" yOff="{dy}" xSize="{fw.width}" ySize="{fw.height}"/>')
        bands.append([f"<ComplexSource>{fn}<SourceBand>{b + 1}</SourceBand>{rects}<UseMaskBand>true</UseMaskBand>"
                      "</ComplexSource>" for b in range(vrt.BANDS)])
        scales.append(f"<ComplexSource>{fn}<SourceBand>{nb}</SourceBand>{rects}<LUT>{vrt.SCALE_LUT}</LUT>"
                      "<UseMaskBand>true</UseMaskBand></ComplexSource>")
    write("mosaic.vrt", raw_xml(window, bands, scales))
    return window


__all__ = ["cross_zone", "owned_carve"]

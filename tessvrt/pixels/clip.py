"""--clip: any pixel source, with NaN wherever a pixel's centre lies outside a region's polygon.

A wrapper spec, so every output that reads through the pixel-source interface (materialise's COGs, a
collection's pieces on Dask workers, open_region's chunks) clips the same way. It carries the polygon
as WKB (picklable, no prepared state); chunks wholly outside it are not read at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..grid import Window
from ..source.s3 import Pool
from .base import Quantised, Spec, Stats, ZoneJob, open_source


@dataclass(frozen=True)
class ClippedSpec:
    """inner's pixels, NaN outside the polygon (wkb: EPSG:4326 polygons)."""

    inner: Spec
    wkb: bytes = field(repr=False)

    def region(self):  # noqa: ANN201 - a tessvrt.region.Region
        return _region(self.wkb)

    def open(self, win: Window) -> ClippedPixels:
        return ClippedPixels(open_source(self.inner, win), win, self.region())

    def covers(self, win: Window) -> bool:
        return self.inner.covers(win)

    def part(self, win: Window) -> ClippedSpec:
        return replace(self, inner=self.inner.part(win))

    def footprint(self) -> tuple[int, int] | None:
        return self.inner.footprint()

    def names(self) -> list[str]:
        return self.inner.names()

    def release(self) -> None:
        self.inner.release()


_REGIONS: dict[bytes, Any] = {}  # wkb -> Region with a prepared shape, per process (one run holds one or two)


def _region(wkb: bytes):  # noqa: ANN202
    r = _REGIONS.get(wkb)
    if r is None:
        import shapely

        from ..region import Region

        if len(_REGIONS) > 4:
            _REGIONS.clear()
        r = _REGIONS[wkb] = Region.polygon(shapely.from_wkb(wkb), "--clip")
    return r


class ClippedPixels:
    """A pixel source whose chunks are NaN where the pixel centre is outside the region."""

    def __init__(self, inner: Any, win: Window, region: Any):
        self.inner, self.win, self.region = inner, win, region

    def _part(self, y0: int, x0: int, h: int, w: int) -> Window:
        h, w = min(h, self.win.height - y0), min(w, self.win.width - x0)
        return Window(self.win.epsg, self.win.col0 + x0, self.win.row0 - y0, w, h)

    def check(self, threads: int) -> int:
        return self.inner.check(threads)

    def fetch(self, pool: Pool, y0: int, x0: int, bs: int, cw: int, prev: Any) -> Any:
        keep = self.region.inside(self._part(y0, x0, bs, cw))
        if not keep.any():
            return keep, None  # nothing of it is kept: read nothing
        return keep, self.inner.fetch(pool, y0, x0, bs, cw, prev[1] if prev is not None else None)

    def chunk(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int, bands: list[int]) -> np.ndarray:
        keep, inner = pending
        if inner is None:
            return np.full((len(bands), h, w), np.nan, np.float32)
        out = self.inner.chunk(cpu, inner, y0, x0, h, w, bands)
        k = keep[:h, :w]
        if not k.all():
            out[:, ~k] = np.nan
        return out

    def quantised(self, cpu: Pool, pending: Any, y0: int, x0: int, h: int, w: int) -> list[Quantised]:
        keep, inner = pending
        if inner is None:
            return []
        pieces = self.inner.quantised(cpu, inner, y0, x0, h, w)
        for p in pieces:
            hh, ww = p.s.shape
            k = keep[p.y:p.y + hh, p.x:p.x + ww]
            if not k.all():
                p.s = np.where(k, p.s, np.float32(np.nan))
                if p.per_band is not None:
                    p.per_band[:, ~k] = np.nan
        return pieces

    def stats(self) -> Stats:
        return self.inner.stats()

    def close(self, wait: bool = True) -> None:
        self.inner.close(wait)


def clip_jobs(jobs: list[ZoneJob], region: Any) -> list[ZoneJob]:
    """The jobs with their pixels clipped to the region (a tessvrt.region.Region), tagged with what clipped them."""
    import shapely

    wkb = shapely.to_wkb(region.clip_shape, output_dimension=2)
    return [ZoneJob(j.label, j.window, ClippedSpec(j.spec, wkb),
                    {**j.meta, "TESSVRT_CLIP": f"{region.label} (sha256 {region.fingerprint()})"}) for j in jobs]


def unwrap(spec: Any) -> Any:
    """The spec under any clipping (what decides chunking and tile counts)."""
    while isinstance(spec, ClippedSpec):
        spec = spec.inner
    return spec


def narrow(jobs: list[ZoneJob], area: Any, clip: bool) -> list[ZoneJob]:
    """Jobs as a region asks: --clip NaNs pixels whose centres are outside it; without --clip a polygon keeps
    the pixels whose centres are in the cells it selects (what npy tiles give: a pixel belongs to its cell's
    tile); a box or tiles alone need nothing."""
    if area is None:
        return jobs
    if clip:
        return clip_jobs(jobs, area)
    return clip_jobs(jobs, area.cells_region()) if area.is_polygon else jobs


def zarr_region_jobs(dataset: str, area: Any, year: int, source: str | None, endpoint: str | None,
                     clip: bool = False) -> tuple[Any, list[ZoneJob]]:
    """zarr_jobs over a region's box, narrowed to the region (see narrow)."""
    from ..errors import TessvrtError
    from .zarr import zarr_jobs

    if area.box is None:
        raise TessvrtError("a Zarr region is a --bbox, --region FILE or --country, not --tile")
    b = area.box
    ts, jobs = zarr_jobs(dataset, (b.west, b.south, b.east, b.north), year, source, endpoint)
    return ts, narrow(jobs, area, clip)


def record_clip(rec: dict) -> Any:
    """The Region a build record was clipped to (build --clip), or None."""
    c = rec.get("clip")
    if not isinstance(c, dict):
        return None
    import shapely

    from ..region import Region

    return Region.polygon(shapely.from_wkb(c["wkb"]), str(c.get("label")))


def clip_picks(block: np.ndarray, area: Any, win: Window, rows: np.ndarray, cols: np.ndarray) -> None:
    """NaN, in place, the (bands, len(rows), len(cols)) block of picked full-resolution pixels (window row and
    column indices) whose centres are outside the area: an overview of a clipped VRT is clipped too."""
    if area is None:
        return
    from ..grid import PIXEL, _to_lonlat

    gx, gy = np.meshgrid(PIXEL * (win.col0 + np.asarray(cols)) + 5.0, PIXEL * (win.row0 - np.asarray(rows)) + 5.0)
    lon, lat = _to_lonlat(win.epsg).transform(gx.ravel(), gy.ravel())
    out = ~area.contains(lon, lat).reshape(gx.shape)
    block[:, out] = np.nan

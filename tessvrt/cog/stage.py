"""Overview levels picked from the strips as they pass, kept uncompressed until the end.

A COG holds its overviews before its full-resolution tiles, and an overview needs rows from
the whole zone. materialise compresses full-resolution tiles once as they are made (see
cog.layout); the overview pixels, nearest-neighbour picks, go to one small uncompressed
striped GeoTIFF per level and are compressed once at the end. GDAL's own BuildOverviews was
measured at about 1 GB of memory on a 2,168-pixel-wide, 128-band zone (all bands at once).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..grid import Window
from .profiles import stage_options


def picks(n: int, f: int, size: int) -> np.ndarray:
    """Full-resolution index of each of the n overview pixels of factor f: the pixel under the
    overview pixel's centre (i*f + f//2), clamped to the last one."""
    return np.minimum(np.arange(n) * f + f // 2, size - 1)


def _take(a: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """a.take(idx, axis), as a strided view when idx is evenly spaced (the usual case)."""
    step = int(idx[1] - idx[0]) if len(idx) > 1 else 1
    if step > 0 and np.array_equal(np.diff(idx), np.full(len(idx) - 1, step)):
        sl = [slice(None)] * a.ndim
        sl[axis] = slice(int(idx[0]), int(idx[-1]) + 1, step)
        return a[tuple(sl)]
    return a.take(idx, axis=axis)


class Overviews:
    """One uncompressed striped GeoTIFF per overview factor, filled window by window."""

    def __init__(self, base: Path, win: Window, nbands: int, rows: int, factors: list[int], dtype: str = "float32",
                 nodata: float = float("nan")):
        import rasterio

        self.paths = [base.with_name(f"{base.name}.ov{f}.tif") for f in factors]
        t = win.transform
        self.files, self.picks = [], []
        for path, f in zip(self.paths, factors, strict=True):
            w, h = -(-win.width // f), -(-win.height // f)
            self.picks.append((picks(h, f, win.height), picks(w, f, win.width)))
            self.files.append(rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=nbands, dtype=dtype,
                                            crs=f"EPSG:{win.epsg}", transform=t @ t.scale(win.width / w, win.height / h),
                                            nodata=nodata, **stage_options(max(1, rows // f))))

    def write(self, block: np.ndarray, y0: int, x0: int) -> None:
        """Take the overview pixels that fall in the zone window [y0, y0+h) x [x0, x0+w)."""
        from rasterio.windows import Window as RioWindow

        _, h, w = block.shape
        for (rows, cols), dst in zip(self.picks, self.files, strict=True):
            ri = np.flatnonzero((rows >= y0) & (rows < y0 + h))
            ci = np.flatnonzero((cols >= x0) & (cols < x0 + w))
            if len(ri) and len(ci):
                dst.write(_take(_take(block, rows[ri] - y0, 1), cols[ci] - x0, 2),
                          window=RioWindow(int(ci[0]), int(ri[0]), len(ci), len(ri)))

    def close(self) -> list[Path]:
        for d in self.files:
            d.close()
        return self.paths

    def remove(self) -> None:
        self.close()
        for p in self.paths:
            p.unlink(missing_ok=True)

"""A quicklook PNG of RGB COGs that lie in different UTM zones: one picture of the whole region.

Every zone is drawn into the CRS of the largest one (nearest neighbour, from the COG's overviews),
so a region across a zone boundary is one picture; pixels no zone covers, and no-data pixels (0),
are transparent (alpha 0).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

QUICKLOOK = 1024  # pixels on the picture's long side at most


def write_png(dest: Path, files: list[Path], size: int = QUICKLOOK) -> None:
    """An RGBA PNG at dest of the 3-band uint8 GeoTIFFs in files (0 = no data), at most size pixels across."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_bounds
    from rasterio.warp import reproject, transform_bounds

    with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():  # no .aux.xml beside the picture
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a PNG is a picture, not a map
        metas = []
        for f in files:
            with rasterio.open(f) as d:
                metas.append((d.crs, d.bounds, d.width * d.height))
        crs = max(metas, key=lambda m: m[2])[0]
        boxes = np.array([transform_bounds(c, crs, *b, densify_pts=21) for c, b, _ in metas])
        west, south = boxes[:, 0].min(), boxes[:, 1].min()
        east, north = boxes[:, 2].max(), boxes[:, 3].max()
        res = max(east - west, north - south) / size
        width, height = max(1, round((east - west) / res)), max(1, round((north - south) / res))
        dst_t = from_bounds(west, south, east, north, width, height)
        rgba = np.zeros((4, height, width), np.uint8)
        for f in files:
            with rasterio.open(f) as d:
                # read at about the picture's resolution: GDAL takes the nearest overview
                f_out = max(1, int(res / abs(d.transform.a)))
                h, w = max(1, d.height // f_out), max(1, d.width // f_out)
                src = d.read(out_shape=(3, h, w), resampling=Resampling.nearest)
                src_t = d.transform * d.transform.scale(d.width / w, d.height / h)
                part = np.zeros((3, height, width), np.uint8)
                reproject(src, part, src_transform=src_t, src_crs=d.crs, dst_transform=dst_t, dst_crs=crs,
                          src_nodata=0, dst_nodata=0, resampling=Resampling.nearest)
            fill = (rgba[3] == 0) & (part > 0).all(axis=0)
            rgba[:3, fill] = part[:, fill]
            rgba[3, fill] = 255
        # PNG has no Create(): rasterio buffers the image in memory and copies it out on close
        with rasterio.open(dest, "w", driver="PNG", width=width, height=height, count=4, dtype="uint8",
                           ZLEVEL=6) as out:
            out.write(rgba)

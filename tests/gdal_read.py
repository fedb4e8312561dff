"""Read windows of a VRT with this interpreter's rasterio/GDAL; run as a subprocess by the tests.

usage: python gdal_read.py VRT OUT.npz JSON   (JSON: list of [xoff, yoff, w, h]; bands 1-based in 'bands';
       optional 'out_shape' [h, w]: a decimated nearest-neighbour read of every window at that size)
"""

import json
import sys

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

vrt, out, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
arrays = {}
with rasterio.open(vrt) as ds:
    meta = {"count": ds.count, "dtypes": list(ds.dtypes), "nodata": str(ds.nodata), "crs": ds.crs.to_string(),
            "descriptions": list(ds.descriptions), "width": ds.width, "height": ds.height,
            "tags": ds.tags(), "gdal": rasterio.__gdal_version__, "overviews": ds.overviews(1)}
    for i, (x, y, w, h) in enumerate(spec["windows"]):
        shape = spec.get("out_shape")
        kw = {} if not shape else {"out_shape": (len(spec.get("bands") or range(ds.count)), *shape),
                                   "resampling": Resampling.nearest}
        arrays[f"w{i}"] = ds.read(spec.get("bands"), window=Window(x, y, w, h), **kw)
np.savez(out, meta=json.dumps(meta), **arrays)

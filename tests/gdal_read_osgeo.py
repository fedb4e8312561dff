"""gdal_read.py for GDALs that come as `osgeo` bindings without rasterio (PyPI gdal-wheel 3.13.3): the same
arguments, the same .npz (meta fields and window arrays), read with gdal.Open / ReadAsArray.

usage: python gdal_read_osgeo.py VRT OUT.npz JSON   (JSON: {"windows": [[xoff, yoff, w, h], ...], "bands": [...]})
"""

import json
import sys

import numpy as np
from osgeo import gdal

gdal.UseExceptions()
vrt, out, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ds = gdal.Open(vrt)
bands = spec.get("bands") or list(range(1, ds.RasterCount + 1))
first = ds.GetRasterBand(1)
srs = ds.GetSpatialRef()
meta = {"count": ds.RasterCount, "width": ds.RasterXSize, "height": ds.RasterYSize,
        "dtypes": [gdal.GetDataTypeName(ds.GetRasterBand(b).DataType).lower() for b in range(1, ds.RasterCount + 1)],
        "nodata": str(first.GetNoDataValue()), "crs": f"{srs.GetAuthorityName(None)}:{srs.GetAuthorityCode(None)}",
        "descriptions": [ds.GetRasterBand(b).GetDescription() for b in range(1, ds.RasterCount + 1)],
        "tags": ds.GetMetadata() or {}, "gdal": gdal.__version__}
arrays = {}
for i, (x, y, w, h) in enumerate(spec["windows"]):
    arrays[f"w{i}"] = np.stack([ds.GetRasterBand(b).ReadAsArray(x, y, w, h) for b in bands])
np.savez(out, meta=json.dumps(meta), **arrays)

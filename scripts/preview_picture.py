"""Make docs/preview.png, the README's preview picture, from the offline sample (no network).

The sample's npy tiles sit at 88 N, where a tile is ~40 px wide and 1,111 px tall; its Zarr store (upstream's
layout, tessvrt.zarrsample) holds a region on the equator across the zone 31/32 boundary at 6 E, so a box there
gives a wide picture with four zone parts (31N, 31S, 32N, 32S) coloured by one PCA: water (NaN scales), pixels
"not computed yet" (+inf) and invalid scales are transparent. The picture is preview's own --png quicklook
(1024 px on the long side, nearest neighbour).

usage: python scripts/preview_picture.py [--out docs/preview.png]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

BOX = "5.9910,-0.0040,6.0080,0.0070"  # the test's four-zone-part box: 189 x 122 px


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "preview.png")
    args = ap.parse_args()
    import rasterio
    import rasterio.errors

    from tessvrt import preview
    from tessvrt.testing import MotoServer, ensure_sample

    with tempfile.TemporaryDirectory(prefix="tessvrt-picture-") as tmp:
        work = Path(tmp)
        root, _ = ensure_sample(work / "sample")
        with MotoServer() as srv:
            srv.load(root)
            res = preview(work / "rgb.tif", dataset="v1.1-dclimate", bbox=BOX, year=2024, endpoint=srv.url,
                          png=work / "rgb.png", blocksize=64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a PNG has no georeferencing
            with rasterio.open(res.png) as d:
                w, h = d.width, d.height
        shutil.copyfile(res.png, args.out)
    print(f"{args.out}: {w} x {h} px; zone parts {[f.name for f in res.files]}, sample {res.sample_pixels} pixels, "
          f"cell {res.cell}, explained variance {np.round(res.pca.explained, 3).tolist()}")

if __name__ == "__main__":
    main()

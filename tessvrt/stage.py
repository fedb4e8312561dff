"""The uncompressed stage a zone is streamed into before GDAL writes its COG layout.

A COG holds its overviews before its full-resolution tiles, so the whole zone must exist
somewhere before the first output byte is written. The stage is that place: one
uncompressed striped GeoTIFF for full resolution and one per overview level, tied together
by a VRT whose <Overview> elements GDAL's GTiff COPY_SRC_OVERVIEWS copies. Overviews are
nearest-neighbour picks taken from each strip as it passes, so the stage is written once and
read once, and nothing is ever compressed twice. GDAL's own BuildOverviews was measured at
about 1 GB of memory on a 2,168-pixel-wide, 128-band stage (it works on all bands at once).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lxml import etree

from .grid import Window
from .profiles import stage_options


def strip_height(rows: int) -> int:
    """The largest power of two <= rows: every overview factor <= it then divides it, so each
    strip yields whole overview strips."""
    return 1 << (max(rows, 1).bit_length() - 1)


class Stage:
    """Full-resolution and overview GeoTIFFs of one zone, written strip by strip from the top."""

    def __init__(self, base: Path, win: Window, names: list[str], meta: dict[str, str], rows: int,
                 factors: list[int]):
        import rasterio

        self.base, self.win, self.names, self.meta, self.rows = base, win, names, meta, rows
        self.factors = factors
        self.paths = [self._file(".tif")] + [self._file(f".ov{f}.tif") for f in factors]
        common = {"driver": "GTiff", "count": len(names), "dtype": "float32", "crs": f"EPSG:{win.epsg}",
                  "nodata": float("nan")}
        t = win.transform
        self.files = []
        for path, f in zip(self.paths, [1, *factors], strict=True):
            w, h = -(-win.width // f), -(-win.height // f)
            self.files.append(rasterio.open(path, "w", width=w, height=h, transform=t @ t.scale(win.width / w, win.height / h),
                                            **common, **stage_options(max(1, rows // f))))

    def _file(self, ext: str) -> Path:
        return self.base.with_name(self.base.name + ext)  # base keeps its own dots (pid, temp mark)

    def write(self, block: np.ndarray, y0: int) -> None:
        """Output rows [y0, y0 + block.shape[1]) of every band; strips come in order, `rows` high."""
        from rasterio.windows import Window as RioWindow

        h = block.shape[1]
        self.files[0].write(block, window=RioWindow(0, y0, self.win.width, h))
        for f, dst in zip(self.factors, self.files[1:], strict=True):
            # overview pixel i takes full-resolution pixel i*f + f//2 (clamped to the edge)
            i = np.arange(max(0, -(-(y0 - f // 2) // f)), dst.height)
            src = np.minimum(i * f + f // 2, self.win.height - 1)
            keep = (src >= y0) & (src < y0 + h)
            if not keep.any():
                continue
            i, src = i[keep], src[keep]
            cols = np.minimum(np.arange(dst.width) * f + f // 2, self.win.width - 1)
            dst.write(block[:, src - y0][:, :, cols], window=RioWindow(0, int(i[0]), dst.width, len(i)))

    def close(self) -> Path:
        """Close the GeoTIFFs and write the VRT GDAL copies from; returns its path."""
        for d in self.files:
            d.close()
        w = self.win
        root = etree.Element("VRTDataset", rasterXSize=str(w.width), rasterYSize=str(w.height))
        etree.SubElement(root, "SRS").text = f"EPSG:{w.epsg}"
        etree.SubElement(root, "GeoTransform").text = ",".join(repr(float(v)) for v in w.transform.to_gdal())
        md = etree.SubElement(root, "Metadata")
        for k, v in self.meta.items():
            etree.SubElement(md, "MDI", key=k).text = v
        for i, name in enumerate(self.names, 1):
            band = etree.SubElement(root, "VRTRasterBand", dataType="Float32", band=str(i))
            etree.SubElement(band, "Description").text = name
            etree.SubElement(band, "NoDataValue").text = "nan"
            src = etree.SubElement(band, "SimpleSource")
            etree.SubElement(src, "SourceFilename", relativeToVRT="1").text = self.paths[0].name
            etree.SubElement(src, "SourceBand").text = str(i)
            for p in self.paths[1:]:
                ov = etree.SubElement(band, "Overview")
                etree.SubElement(ov, "SourceFilename", relativeToVRT="1").text = p.name
                etree.SubElement(ov, "SourceBand").text = str(i)
        vrt = self._file(".vrt")
        vrt.write_bytes(etree.tostring(root))
        return vrt

    def remove(self) -> None:
        for d in self.files:
            d.close()
        for p in [*self.paths, self._file(".vrt")]:
            p.unlink(missing_ok=True)

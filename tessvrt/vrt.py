"""GDAL VRT XML for tessvrt's layered layout (see docs/layout.md).

Layers, each a plain VRT that GDAL 3.6+ opens:
  tiles/<tile>.vrt     raw bands over the remote .npy (int8 as Byte, scales as Float32) and
                       a mask band of the pixels the tile owns on its zone grid;
  mosaic_<epsg>.vrt    integer-offset mosaic of the tile VRTs, each source restricted to its
                       owned pixels (UseMaskBand); a LUT turns invalid scales into NaN;
  <name>.vrt           128 Float32 bands = mul(signed embedding, scale) over the mosaic, a LUT
                       turning the stored Byte into signed values.
Derived bands sit only on top of the mosaic, never under it (SPEC: the mosaic-of-derived-bands
pitfall returns wrong pixels).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from . import scales
from .grid import Window

BANDS = 128
# A zone mosaic wider or taller than this many pixels is a mosaic of blocks of this size, each
# a mosaic of its tiles: GDAL parses a whole VRT when it opens it, and one flat mosaic of 10,000
# tiles (1.3 M sources, 360 MB) took 20-26 s and 3.8 GB to open on GDAL 3.6-3.12. Blocks are
# opened only when a read touches them.
MOSAIC_BLOCK = 8192
# Byte -> signed (GDAL 3.6 has no Int8): every value listed, so no lookup is an interpolation
INT8_LUT = ",".join(f"{v}:{v - 256 if v > 127 else v}" for v in range(256))
# every invalid float32 scale -> NaN, valid ones unchanged (tessvrt.scales holds the rule)
SCALE_LUT = scales.GDAL_LUT


def band_name(i: int) -> str:
    return f"embedding_{i:03d}"


@dataclass(frozen=True)
class RawTile:
    """Byte layout of one tile's two objects, as GDAL paths."""

    grid_path: str
    scales_path: str
    grid_offset: int  # first data byte of the embeddings .npy
    scales_offset: int
    scale_bands: int  # 1 for (H, W) scales, 128 for (H, W, 128)
    width: int
    height: int


def _srs_gt(epsg: int, gt: tuple[float, ...]) -> str:
    return (
        f'  <SRS dataAxisToSRSAxisMapping="1,2">EPSG:{epsg}</SRS>\n'
        f"  <GeoTransform>{', '.join(repr(float(v)) for v in gt)}</GeoTransform>\n"
    )


def _rect(tag: str, x: int, y: int, w: int, h: int) -> str:
    return f'<{tag} xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/>'


def mask_band(width: int, height: int, carve: np.ndarray, const: str) -> str:
    """A mask band: everything owned (255), then the carve rectangles (x, y, w, h) cleared to 0.

    The full rectangle is the all-zero constant GeoTIFF scaled to 255; each carve rectangle copies
    its zeros 1:1 (SrcRect = DstRect; see build._write_const for why a stretched 1x1 source is not used).
    """
    fn = f'<SourceFilename relativeToVRT="1">{escape(const)}</SourceFilename>'
    # SourceBand defaults to 1: carve rectangles omit it to keep files small
    rect = ("<SimpleSource>" + fn.replace("%", "%%") + '<SrcRect xOff="%d" yOff="%d" xSize="%d" ySize="%d"/>'
            '<DstRect xOff="%d" yOff="%d" xSize="%d" ySize="%d"/></SimpleSource>')
    r = np.asarray(carve, np.int64).reshape(-1, 4)
    full = ("<ComplexSource>" + fn + "<SourceBand>1</SourceBand>" + _rect("SrcRect", 0, 0, width, height)
            + _rect("DstRect", 0, 0, width, height) + "<ScaleOffset>255</ScaleOffset><ScaleRatio>0</ScaleRatio></ComplexSource>")
    body = (rect * len(r)) % tuple(np.concatenate([r, r], axis=1).ravel().tolist())  # SrcRect = DstRect
    return '  <MaskBand><VRTRasterBand dataType="Byte">' + full + body + "</VRTRasterBand></MaskBand>\n"


@cache
def _image_offsets(grid_offset: int) -> tuple[str, ...]:
    return tuple(str(grid_offset + b) for b in range(BANDS))


def tile_vrt(t: RawTile, epsg: int, gt: tuple[float, ...], mask: str) -> str:
    """Raw bands over a tile's .npy pair, in the tile's native grid."""
    gp, sp = escape(t.grid_path), escape(t.scales_path)
    # the 128 embedding bands differ only in ImageOffset: one join instead of 128 formats
    head = (f'  <VRTRasterBand dataType="Byte" subClass="VRTRawRasterBand"><SourceFilename>{gp}</SourceFilename>'
            "<ImageOffset>")
    tail = (f"</ImageOffset><PixelOffset>{BANDS}</PixelOffset><LineOffset>{t.width * BANDS}</LineOffset>"
            "</VRTRasterBand>\n")
    out = [f'<VRTDataset rasterXSize="{t.width}" rasterYSize="{t.height}">\n', _srs_gt(epsg, gt),
           head, (tail + head).join(_image_offsets(t.grid_offset)), tail]
    step = 4 * t.scale_bands
    for s in range(t.scale_bands):
        out.append(
            f'  <VRTRasterBand dataType="Float32" band="{BANDS + s + 1}" subClass="VRTRawRasterBand">'
            f'<SourceFilename relativeToVRT="0">{sp}</SourceFilename>'
            f"<ImageOffset>{t.scales_offset + 4 * s}</ImageOffset><PixelOffset>{step}</PixelOffset>"
            f"<LineOffset>{t.width * step}</LineOffset><ByteOrder>LSB</ByteOrder></VRTRasterBand>\n"
        )
    out.append(mask)
    out.append("</VRTDataset>\n")
    return "".join(out)


@dataclass(frozen=True)
class MosaicSource:
    path: str  # relative to the mosaic VRT
    scale_bands: int
    src: tuple[int, int, int, int]  # x, y, w, h in the source
    dst: tuple[int, int, int, int]  # x, y, w, h in the mosaic


def window_gt(w: Window) -> tuple[float, ...]:
    t = w.transform
    return (t.c, t.a, t.b, t.f, t.d, t.e)


def _mosaic_band(b: int) -> str:
    """Opening tag of mosaic band b (0-based): Byte embeddings as stored, then Float32 scales, NaN = none.

    Shared by tile mosaics and mosaics of blocks, whose bands must match one for one.
    """
    if b < BANDS:
        return f'  <VRTRasterBand dataType="Byte" band="{b + 1}">'
    return f'  <VRTRasterBand dataType="Float32" band="{b + 1}"><NoDataValue>nan</NoDataValue>'


def mosaic_sources(window: Window, placed: list[tuple[str, Window, int]]) -> list[MosaicSource]:
    """Mosaic sources for (path, source window on this grid, scale bands), clipped to the window."""
    out = []
    for path, tw, nscale in placed:
        part = window.intersection(tw)
        if part is None:
            continue
        sx, sy = tw.offset_of(part)
        dx, dy = window.offset_of(part)
        out.append(MosaicSource(path, nscale, (sx, sy, part.width, part.height), (dx, dy, part.width, part.height)))
    return out


def mosaic_vrt(window: Window, sources: list[MosaicSource], scale_bands: int) -> Iterator[bytes]:
    """Bands 1-128: the embeddings as stored (Byte); then 1 or 128 scale bands (NaN = no data).

    Yielded in pieces, a band at a time: a flat mosaic of 10,000 tiles is ~360 MB and is never held whole.
    """
    yield (f'<VRTDataset rasterXSize="{window.width}" rasterYSize="{window.height}">\n'
           + _srs_gt(window.epsg, window_gt(window))).encode()
    heads = [
        (
            f'<SourceFilename relativeToVRT="1">{escape(s.path)}</SourceFilename>',
            _rect("SrcRect", *s.src) + _rect("DstRect", *s.dst),
        )
        for s in sources
    ]
    # every embedding band lists the same sources; only SourceBand differs: split a template once
    parts = "".join(
        f"<ComplexSource>{fn}<SourceBand>\0</SourceBand>{rects}<UseMaskBand>true</UseMaskBand></ComplexSource>"
        for fn, rects in heads
    ).encode().split(b"\0")
    for b in range(BANDS):
        yield _mosaic_band(b).encode()
        yield str(b + 1).encode().join(parts)
        yield b"</VRTRasterBand>\n"
    for s in range(scale_bands):
        srcs = "".join(
            f"<ComplexSource>{fn}<SourceBand>{BANDS + 1 + min(s, src.scale_bands - 1)}</SourceBand>"
            f"{rects}<LUT>{SCALE_LUT}</LUT><UseMaskBand>true</UseMaskBand></ComplexSource>"
            for (fn, rects), src in zip(heads, sources, strict=False)
        )
        yield f"{_mosaic_band(BANDS + s)}{srcs}</VRTRasterBand>\n".encode()
    yield b"</VRTDataset>\n"


def blocks_vrt(window: Window, blocks: list[tuple[str, Window]], scale_bands: int) -> str:
    """A zone mosaic made of block mosaics (path relative to it, block window) that tile it
    without overlap, so each is copied as is (NaN scales where no block or tile is)."""
    out = [f'<VRTDataset rasterXSize="{window.width}" rasterYSize="{window.height}">\n']
    out.append(_srs_gt(window.epsg, window_gt(window)))
    srcs = [
        (f'<SimpleSource><SourceFilename relativeToVRT="1">{escape(path)}</SourceFilename><SourceBand>\0</SourceBand>'
         + _rect("SrcRect", 0, 0, b.width, b.height) + _rect("DstRect", *window.offset_of(b), b.width, b.height)
         + "</SimpleSource>")
        for path, b in blocks
    ]
    tpl = "".join(srcs)
    for b in range(BANDS + scale_bands):
        out.append(f"{_mosaic_band(b)}{tpl.replace(chr(0), str(b + 1))}</VRTRasterBand>\n")
    out.append("</VRTDataset>\n")
    return "".join(out)


def _xml_text(v: str) -> str:
    """XML 1.0 cannot hold control characters even escaped (a user's path may): they become '?'."""
    return "".join(ch if ch >= " " or ch in "\t\n\r" else "?" for ch in v)


def dequant_vrt(window: Window, mosaic: str, scale_bands: int, metadata: dict[str, str], signed: bool = False) -> str:
    """The user-facing raster: band i = signed(embedding_i) * scale, NaN where no valid data.

    The Byte -> signed LUT sits here, once per band, rather than on each tile's mosaic source
    (128 per tile): it lists all 256 values so every lookup is exact, never interpolated.
    signed: the mosaic's embeddings are Int8 already (Zarr VRTs, GDAL >= 3.11): no LUT.
    """
    md = "".join(f"<MDI key={quoteattr(k)}>{escape(_xml_text(v))}</MDI>" for k, v in metadata.items())
    out = [f'<VRTDataset rasterXSize="{window.width}" rasterYSize="{window.height}">\n']
    out.append(_srs_gt(window.epsg, window_gt(window)))
    out.append(f"  <Metadata>{md}</Metadata>\n")
    fn = f'<SourceFilename relativeToVRT="1">{escape(mosaic)}</SourceFilename>'
    lut = "" if signed else f"<LUT>{INT8_LUT}</LUT>"
    for b in range(BANDS):
        sb = BANDS + 1 + (b if scale_bands > 1 else 0)
        out.append(
            f'  <VRTRasterBand dataType="Float32" band="{b + 1}" subClass="VRTDerivedRasterBand">'
            f"<Description>{band_name(b)}</Description><NoDataValue>nan</NoDataValue>"
            "<PixelFunctionType>mul</PixelFunctionType>"
            '<PixelFunctionArguments propagateNoData="true"/>'
            "<SourceTransferType>Float64</SourceTransferType>"
            f"<ComplexSource>{fn}<SourceBand>{b + 1}</SourceBand>{lut}</ComplexSource>"
            f"<SimpleSource>{fn}<SourceBand>{sb}</SourceBand></SimpleSource>"
            "</VRTRasterBand>\n"
        )
    out.append("</VRTDataset>\n")
    return "".join(out)


def add_overviews(text: str, files: list[str]) -> str:
    """A dequant_vrt text whose band i lists band i of each file (relative to the VRT) as an explicit
    <Overview>, finest first: GDAL (3.6+) and QGIS read those instead of the remote tiles when zoomed out."""
    parts = text.split("</VRTRasterBand>")
    assert len(parts) == BANDS + 1, "not a dequant_vrt text"
    refs = [f'<Overview><SourceFilename relativeToVRT="1">{escape(f)}</SourceFilename><SourceBand>\0</SourceBand></Overview>'
            for f in files]
    tpl = "".join(refs)
    return "".join(p + tpl.replace("\0", str(b + 1)) + "</VRTRasterBand>" for b, p in enumerate(parts[:-1])) + parts[-1]


def warped_vrt(target: Window, source: str, src_epsg: int, src_gt: tuple[float, ...], nbands: int,
               emb_type: str = "Byte") -> str:
    """A tile's raw bands warped (nearest, exact transform) onto another zone's grid (emb_type: Int8 for Zarr)."""
    from affine import Affine

    dst_gt = window_gt(target)
    inv_src = ~Affine.from_gdal(*src_gt)
    inv_dst = ~Affine.from_gdal(*dst_gt)

    def g(a: Affine) -> str:
        return ",".join(repr(float(v)) for v in a.to_gdal())

    bands = "".join(
        f'  <VRTRasterBand dataType="{emb_type if b < BANDS else "Float32"}" band="{b + 1}" subClass="VRTWarpedRasterBand"/>\n'
        for b in range(nbands)
    )
    mapping = "".join(f'<BandMapping src="{b + 1}" dst="{b + 1}"/>' for b in range(nbands))
    return (
        f'<VRTDataset rasterXSize="{target.width}" rasterYSize="{target.height}" subClass="VRTWarpedDataset">\n'
        + _srs_gt(target.epsg, dst_gt)
        + bands
        + "  <BlockXSize>256</BlockXSize><BlockYSize>256</BlockYSize>\n"
        "  <GDALWarpOptions><WarpMemoryLimit>67108864</WarpMemoryLimit>"
        "<ResampleAlg>NearestNeighbour</ResampleAlg><WorkingDataType>Float32</WorkingDataType>"
        '<Option name="INIT_DEST">0</Option>'
        f'<SourceDataset relativeToVRT="1">{escape(source)}</SourceDataset>'
        "<Transformer><GenImgProjTransformer>"
        f"<SrcGeoTransform>{','.join(repr(float(v)) for v in src_gt)}</SrcGeoTransform>"
        f"<SrcInvGeoTransform>{g(inv_src)}</SrcInvGeoTransform>"
        f"<DstGeoTransform>{','.join(repr(float(v)) for v in dst_gt)}</DstGeoTransform>"
        f"<DstInvGeoTransform>{g(inv_dst)}</DstInvGeoTransform>"
        "<ReprojectTransformer><ReprojectionTransformer>"
        f"<SourceSRS>EPSG:{src_epsg}</SourceSRS><TargetSRS>EPSG:{target.epsg}</TargetSRS>"
        "</ReprojectionTransformer></ReprojectTransformer>"
        "</GenImgProjTransformer></Transformer>"
        f"<BandList>{mapping}</BandList></GDALWarpOptions>\n</VRTDataset>\n"
    )


def placed_vrt(target: Window, warped: str, nbands: int, mask: str, emb_type: str = "Byte") -> str:
    """A warped tile restricted to the pixels it owns on the target grid."""
    fn = f'<SourceFilename relativeToVRT="1">{escape(warped)}</SourceFilename>'
    out = [f'<VRTDataset rasterXSize="{target.width}" rasterYSize="{target.height}">\n']
    out.append(_srs_gt(target.epsg, window_gt(target)))
    for b in range(nbands):
        dt = emb_type if b < BANDS else "Float32"
        out.append(
            f'  <VRTRasterBand dataType="{dt}" band="{b + 1}"><SimpleSource>{fn}'
            f"<SourceBand>{b + 1}</SourceBand></SimpleSource></VRTRasterBand>\n"
        )
    out.append(mask)
    out.append("</VRTDataset>\n")
    return "".join(out)


__all__ = ["RawTile", "MosaicSource", "tile_vrt", "mosaic_vrt", "blocks_vrt", "dequant_vrt", "add_overviews", "mask_band"]

"""Named GeoTIFF creation profiles for materialise, kept in one place (chosen by measurement:
see docs/performance.md)."""

from __future__ import annotations

COMPRESSIONS = ("zstd", "deflate", "lzw", "lerc", "none")

# Default level per compression when --level is absent. On embedding-like float32 with the
# floating-point predictor, ZSTD 1 writes 5.5x faster than ZSTD 9 for a 4% larger file, and
# DEFLATE 1 1.5x faster than DEFLATE 6 for 2% (table in docs/performance.md).
DEFAULT_LEVEL = {"zstd": 1, "deflate": 1}


def cog_options(compress: str, level: int | None, blocksize: int) -> dict[str, str]:
    """GTiff creation options that, copying a stage that has overviews, give a COG layout.

    GTiff with COPY_SRC_OVERVIEWS=YES writes all IFDs first, then overview tiles smallest
    first, then full-resolution tiles: what GDAL's COG driver itself does. Used instead of the
    COG driver because it allows INTERLEAVE=BAND on every GDAL here: a reader of 3 of the 128
    bands then decompresses 3 blocks, not one 128-band block (and the COG driver before 3.11
    regenerated overviews on 128-band pixel-interleaved blocks, measured at minutes for 300 MB).
    """
    opts = {
        "TILED": "YES",
        "BLOCKXSIZE": str(blocksize),
        "BLOCKYSIZE": str(blocksize),
        "COMPRESS": compress.upper(),
        "INTERLEAVE": "BAND",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
        "COPY_SRC_OVERVIEWS": "YES",
    }
    if compress in ("zstd", "deflate", "lzw"):
        opts["PREDICTOR"] = "3"  # floating-point predictor
    if compress == "lerc":
        opts["MAX_Z_ERROR"] = "0"  # lossless
    lv = level if level is not None else DEFAULT_LEVEL.get(compress)
    if lv is not None and compress == "zstd":
        opts["ZSTD_LEVEL"] = str(lv)
    if lv is not None and compress == "deflate":
        opts["ZLEVEL"] = str(lv)
    return opts


def overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """2, 4, 8, ... until the smallest overview fits in one block (what GDAL's COG driver does)."""
    out, f = [], 2
    while max(width, height) / (f // 2) > blocksize:
        out.append(f)
        f *= 2
    return out


def stage_options(rows: int) -> dict[str, object]:
    """The uncompressed striped GeoTIFF overview picks are written to before being compressed once.

    Striped with `rows` rows per strip, so each chunk's picks fill whole strips when they span
    the zone's width; uncompressed, so partial strips cost nothing but a block-cache copy.
    """
    return {"tiled": False, "blockysize": rows, "compress": "none", "interleave": "band", "bigtiff": "YES"}

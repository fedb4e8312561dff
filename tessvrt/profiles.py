"""Named GeoTIFF creation profiles for materialise, kept in one place (chosen by measurement:
see docs/performance.md)."""

from __future__ import annotations

COMPRESSIONS = ("zstd", "deflate", "lzw", "lerc", "none")

# Default level per compression when --level is absent. On embedding-like float32 with the
# floating-point predictor, ZSTD 1 writes 3.9x faster than ZSTD 9 for a 4% larger file, and
# DEFLATE 1 1.8x faster than DEFLATE 6 for 2% (table in docs/performance.md).
DEFAULT_LEVEL = {"zstd": 1, "deflate": 1}


def cog_options(compress: str, level: int | None, blocksize: int) -> dict[str, str]:
    """GTiff creation options of every image in a materialised COG (full resolution and overviews).

    Tiled and band-interleaved: a reader of 3 of the 128 bands decompresses 3 blocks, not one
    128-band block. (GDAL's COG driver only writes pixel interleave before 3.11 and regenerated
    overviews on such blocks for minutes on 300 MB, measured; coglayout lays the COG out instead.)
    """
    opts = {
        "TILED": "YES",
        "BLOCKXSIZE": str(blocksize),
        "BLOCKYSIZE": str(blocksize),
        "COMPRESS": compress.upper(),
        "INTERLEAVE": "BAND",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
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

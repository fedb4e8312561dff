"""Named GeoTIFF creation profiles for materialise, kept in one place (chosen by measurement:
see docs/performance.md)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TessvrtError

COMPRESSIONS = ("zstd", "deflate", "lzw", "lerc", "none")

# Default level per compression when --level is absent. On embedding-like float32 with the
# floating-point predictor, ZSTD 1 writes 3.9x faster than ZSTD 9 for a 4% larger file, and
# DEFLATE 1 1.8x faster than DEFLATE 6 for 2% (table in docs/performance.md).
DEFAULT_LEVEL = {"zstd": 1, "deflate": 1}


def cog_options(compress: str, level: int | None, blocksize: int) -> dict[str, str]:
    """GTiff creation options of every image in a materialised COG (full resolution and overviews).

    Tiled and band-interleaved: a reader of 3 of the 128 bands decompresses 3 blocks, not one
    128-band block. (GDAL's COG driver only writes pixel interleave before 3.11 and regenerated
    overviews on such blocks for minutes on 300 MB, measured; cog.layout lays the COG out instead.)
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


@dataclass(frozen=True)
class CogProfile:
    """How materialise writes every zone's COG."""

    dtype = "float32"  # class attributes: what write_cog writes (RgbProfile: 8-bit colour)
    nodata = float("nan")
    compress: str = "zstd"
    level: int | None = None  # None: DEFAULT_LEVEL of the compression
    blocksize: int = 512
    overviews: bool = True

    def __post_init__(self) -> None:
        if self.compress not in COMPRESSIONS:
            raise TessvrtError(f"--compress {self.compress!r} is not one of {', '.join(COMPRESSIONS)}")
        if self.blocksize % 16 or not 64 <= self.blocksize <= 4096:
            raise TessvrtError(f"--blocksize {self.blocksize} must be a multiple of 16 between 64 and 4096")

    def options(self) -> dict[str, str]:
        return cog_options(self.compress, self.level, self.blocksize)

    def factors(self, width: int, height: int) -> list[int]:
        """The overview factors of a width x height image (none with overviews off)."""
        return overview_factors(width, height, self.blocksize) if self.overviews else []

    def description(self, band: int) -> str:
        """The description of output band `band` (1-based band of the source)."""
        return f"embedding_{band - 1:03d}"


@dataclass(frozen=True)
class RgbProfile(CogProfile):
    """How preview writes its 8-bit RGB COGs: 0 is no data (valid colours are 1-255), so GDAL and QGIS
    mask invalid pixels from the nodata value alone; the horizontal predictor suits 8-bit images."""

    dtype = "uint8"
    nodata = 0.0
    compress: str = "deflate"
    level: int | None = 6  # the output is 1/170 of the bytes read: a smaller file costs nothing noticeable

    def options(self) -> dict[str, str]:
        opts = cog_options(self.compress, self.level, self.blocksize)
        if "PREDICTOR" in opts:
            opts["PREDICTOR"] = "2"  # horizontal differencing (integers)
        opts["PHOTOMETRIC"] = "RGB"
        return opts

    def description(self, band: int) -> str:
        return f"pc{band}"


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

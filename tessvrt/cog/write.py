"""Write one COG from a pixel source: compressed tiles as chunks are made, overviews picked on the way.

The writer only writes: where pixels come from is the PixelSource's business (tessvrt.pixels).
Each pixel is compressed once (cog.stage picks overview pixels, cog.layout assembles the file by
copying compressed tiles), and the zone is walked in chunks of one block row by a few block
columns, so memory is bounded by the chunk (MEMORY_BUDGET), never by the region.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

from ..grid import Window
from ..pixels.base import PixelSource
from ..source.s3 import Pool
from .layout import assemble, read_image
from .profiles import CogProfile
from .stage import Overviews

# bytes the float32 buffer of one chunk (blocksize rows x some block columns x bands) may use
MEMORY_BUDGET = 384 * 2**20


def chunk_width(width: int, bands: int, blocksize: int, budget: int | None = None) -> int:
    """Columns per chunk: whole blocks, as many as the float32 buffer budget allows (at least one)."""
    budget = MEMORY_BUDGET if budget is None else budget
    blocks = max(1, budget // (bands * blocksize * blocksize * 4))
    return min(blocks * blocksize, -(-width // blocksize) * blocksize)


def write_cog(tmp: Path, dest: Path, win: Window, pixels: PixelSource, bands: list[int], cog: CogProfile,
              meta: dict[str, str], progress: Callable[[int], None] | None = None, threads: int = 8,
              read_bands: int | None = None) -> None:
    """The window's COG at dest, built in temporaries named tmp.* that are all removed (dest excepted).

    dest appears by one rename when the file is complete. progress gets output bytes as chunks are done.
    read_bands: bands the source reads per pixel when more than it returns (preview reads 128 and
    returns 3 colours): the chunk's memory budget counts those.
    """
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window as RioWindow

    main, final = tmp.with_name(tmp.name + ".main.tif"), tmp.with_name(tmp.name + ".tif")
    bs = cog.blocksize
    cw = chunk_width(win.width, max(len(bands), read_bands or 0), bs)
    chunks = [(y0, x0) for y0 in range(0, win.height, bs) for x0 in range(0, win.width, cw)]
    factors = cog.factors(win.width, win.height)
    tiled = cog.options()
    profile = {"driver": "GTiff", "width": win.width, "height": win.height, "count": len(bands), "dtype": cog.dtype,
               "crs": f"EPSG:{win.epsg}", "transform": win.transform, "nodata": cog.nodata, **tiled}
    ovs = None
    level_files: list[Path] = []
    try:
        with rasterio.Env(GDAL_CACHEMAX=256, GDAL_NUM_THREADS="ALL_CPUS"):
            ovs = Overviews(tmp, win, len(bands), bs, factors, cog.dtype, cog.nodata)
            # s3.Pool, not concurrent.futures: an interrupt or error leaves without waiting for stalled reads
            with (rasterio.open(main, "w", **profile) as dst,
                  Pool(threads, "tessvrt-fetch") as pool,
                  Pool(os.cpu_count() or 2, "tessvrt-dequant") as cpu):
                for i, b in enumerate(bands):
                    dst.set_band_description(i + 1, cog.description(b))
                dst.update_tags(**meta)
                nxt = pixels.fetch(pool, *chunks[0], bs, cw, None) if chunks else None
                for i, (y0, x0) in enumerate(chunks):
                    cur = nxt
                    if i + 1 < len(chunks):  # fetch the next chunk while this one is dequantised and compressed
                        same_rows = chunks[i + 1][0] == y0
                        nxt = pixels.fetch(pool, *chunks[i + 1], bs, cw, cur if same_rows else None)
                    h, w = min(bs, win.height - y0), min(cw, win.width - x0)
                    block = pixels.chunk(cpu, cur, y0, x0, h, w, bands)
                    dst.write(block, window=RioWindow(x0, y0, w, h))  # whole blocks: compressed once
                    ovs.write(block, y0, x0)
                    if progress:
                        progress(block.nbytes)
                    del block, cur
                gone = pixels.stats().missing
                if gone:  # --allow-missing: say in the file which tiles are NaN because their objects were gone
                    dst.update_tags(TESSVRT_MISSING_TILES=",".join(filter(None, [meta.get("TESSVRT_MISSING_TILES"), *gone])))
            for f, path in zip(factors, ovs.close(), strict=True):
                level_files.append(tmp.with_name(f"{tmp.name}.ov{f}.z.tif"))
                rio_copy(path, level_files[-1], driver="GTiff", **tiled)
                path.unlink()
        assemble(final, read_image(main), [read_image(p) for p in level_files])
        os.replace(final, dest)
    finally:
        if ovs is not None:
            ovs.remove()
        # every temporary, also those an interrupted Overviews() made before it was assigned
        for p in tmp.parent.glob(glob.escape(tmp.name) + "*"):
            if p != dest:
                p.unlink(missing_ok=True)

"""cog_validate: is a GeoTIFF laid out as a Cloud-Optimized GeoTIFF? (pure TIFF structure walk)"""

from __future__ import annotations

import struct
from pathlib import Path

from .tiff import TILE_OFFSETS, read_ifds


def cog_validate(path: str | Path) -> list[str]:
    """Problems that make this file not a COG (empty when it is one).

    Checks what a COG reader relies on: every image tiled, every IFD before any image data,
    overviews after the full-resolution IFD and decreasing in size, and each level's tiles
    stored after those of the smaller levels (smallest overview first, full resolution last).
    """
    errors = []
    try:
        ifds = read_ifds(path)
    except (ValueError, struct.error, KeyError) as exc:
        return [str(exc) or "unreadable TIFF structure"]
    if not ifds:
        return ["no image"]
    starts = [min((o for o in d.ints(TILE_OFFSETS) if o), default=0) for d in ifds]  # first tile byte per level
    first_data = min((s for s in starts if s), default=2**63)
    for i, d in enumerate(ifds):
        if 322 not in d.tags or TILE_OFFSETS not in d.tags:
            errors.append(f"image {i} is not tiled")
        if d.offset > first_data:
            errors.append(f"IFD {i} is after image data (offset {d.offset} > {first_data})")
    sizes = [(d.ints(256, [0])[0], d.ints(257, [0])[0]) for d in ifds]
    if any(sizes[i + 1][0] >= sizes[i][0] for i in range(len(sizes) - 1)):
        errors.append(f"overviews are not in decreasing size: {sizes}")
    for i in range(len(ifds) - 1):
        if starts[i] and starts[i + 1] and starts[i] < starts[i + 1]:
            errors.append(f"tiles of level {i} precede those of the smaller level {i + 1}")
    return errors

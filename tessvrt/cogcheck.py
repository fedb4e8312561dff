"""cog_validate: is a GeoTIFF laid out as a Cloud-Optimized GeoTIFF? (pure TIFF structure walk)"""

from __future__ import annotations

import struct
from pathlib import Path

_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # SHORT, LONG, LONG8


def _ifds(f) -> list[dict[int, list[int]]]:
    head = f.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        raise ValueError("not a TIFF file")
    version = struct.unpack(order + "H", head[2:4])[0]
    big = version == 43
    if version not in (42, 43):
        raise ValueError("not a TIFF file")
    off = struct.unpack(order + "Q", head[8:16])[0] if big else struct.unpack(order + "I", head[4:8])[0]
    ifds = []
    while off and len(ifds) < 64:
        f.seek(off)
        n = struct.unpack(order + ("Q" if big else "H"), f.read(8 if big else 2))[0]
        entry = 20 if big else 12
        raw = f.read(n * entry)
        tags: dict[int, list[int]] = {"_offset": [off]}  # type: ignore[dict-item]
        for i in range(n):
            e = raw[i * entry:(i + 1) * entry]
            tag, typ = struct.unpack(order + "HH", e[:4])
            count = struct.unpack(order + ("Q" if big else "I"), e[4:12] if big else e[4:8])[0]
            if typ not in _TYPES or tag not in (256, 257, 322, 323, 324, 325, 254):
                continue
            fmt, size = _TYPES[typ]
            inline = e[12:20] if big else e[8:12]
            if count * size <= len(inline):
                data = inline[:count * size]
            else:
                pos = f.tell()
                f.seek(struct.unpack(order + ("Q" if big else "I"), inline)[0])
                data = f.read(count * size)
                f.seek(pos)
            tags[tag] = list(struct.unpack(order + fmt * count, data))
        ifds.append(tags)
        nxt = f.read(8 if big else 4)
        off = struct.unpack(order + ("Q" if big else "I"), nxt)[0] if len(nxt) == (8 if big else 4) else 0
    return ifds


def cog_validate(path: str | Path) -> list[str]:
    """Problems that make this file not a COG (empty when it is one).

    Checks what a COG reader relies on: every image tiled, every IFD before any image data,
    overviews after the full-resolution IFD and decreasing in size, and each level's tiles
    stored after those of the smaller levels (smallest overview first, full resolution last).
    """
    errors = []
    with open(path, "rb") as f:
        try:
            ifds = _ifds(f)
        except (ValueError, struct.error) as exc:
            return [str(exc)]
    if not ifds:
        return ["no image"]
    starts = [min((o for o in d.get(324, []) if o), default=0) for d in ifds]  # first tile byte per level
    first_data = min((s for s in starts if s), default=2**63)
    for i, d in enumerate(ifds):
        if 322 not in d or 324 not in d:
            errors.append(f"image {i} is not tiled")
        if d["_offset"][0] > first_data:
            errors.append(f"IFD {i} is after image data (offset {d['_offset'][0]} > {first_data})")
    sizes = [(d.get(256, [0])[0], d.get(257, [0])[0]) for d in ifds]
    if any(sizes[i + 1][0] >= sizes[i][0] for i in range(len(sizes) - 1)):
        errors.append(f"overviews are not in decreasing size: {sizes}")
    for i in range(len(ifds) - 1):
        if starts[i] and starts[i + 1] and starts[i] < starts[i + 1]:
            errors.append(f"tiles of level {i} precede those of the smaller level {i + 1}")
    return errors

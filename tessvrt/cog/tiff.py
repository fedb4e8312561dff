"""Reading TIFF directories (IFDs): what cog_validate checks and what cog.layout copies."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

TILE_OFFSETS, TILE_BYTE_COUNTS, NEW_SUBFILE_TYPE = 324, 325, 254
TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
_INT_FORMAT = {3: "H", 4: "I", 16: "Q"}


@dataclass
class Ifd:
    """One image directory: where it sits and its tags as (type, count, value bytes in file order)."""

    offset: int
    order: str  # "<" or ">"
    tags: dict[int, tuple[int, int, bytes]]

    def ints(self, tag: int, default: list[int] | None = None) -> list[int]:
        """An integer tag's values (SHORT, LONG or LONG8)."""
        if tag not in self.tags:
            return list(default or [])
        typ, count, data = self.tags[tag]
        return list(struct.unpack(f"{self.order}{count}{_INT_FORMAT[typ]}", data))


def read_ifds(path: str | Path, limit: int = 64) -> list[Ifd]:
    """Every IFD of a (Big)TIFF in chain order; ValueError when it is not a TIFF."""
    with open(path, "rb") as f:
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        version = struct.unpack(order + "H", head[2:4])[0] if order and len(head) >= 8 else 0
        if version not in (42, 43):
            raise ValueError("not a TIFF file")
        big = version == 43
        word = "Q" if big else "I"
        off = struct.unpack(order + word, head[8:16] if big else head[4:8])[0]
        out = []
        while off and len(out) < limit:
            f.seek(off)
            n = struct.unpack(order + ("Q" if big else "H"), f.read(8 if big else 2))[0]
            esize = 20 if big else 12
            raw = f.read(n * esize)
            tags = {}
            for i in range(n):
                e = raw[i * esize:(i + 1) * esize]
                tag, typ = struct.unpack(order + "HH", e[:4])
                count = struct.unpack(order + word, e[4:12] if big else e[4:8])[0]
                inline = e[12:20] if big else e[8:12]
                nbytes = TYPE_SIZE.get(typ, 1) * count
                if nbytes <= len(inline):
                    data = inline[:nbytes]
                else:
                    pos = f.tell()
                    f.seek(struct.unpack(order + word, inline)[0])
                    data = f.read(nbytes)
                    f.seek(pos)
                tags[tag] = (typ, count, data)
            out.append(Ifd(off, order, tags))
            nxt = f.read(8 if big else 4)
            off = struct.unpack(order + word, nxt)[0] if len(nxt) == (8 if big else 4) else 0
    return out

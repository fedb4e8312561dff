"""Assemble a Cloud-Optimized GeoTIFF from GeoTIFFs whose tiles are already compressed.

materialise compresses each full-resolution tile once, while strips stream in; a COG must
still hold its overviews before those tiles. Instead of decompressing and recompressing
everything (GDAL's COPY_SRC_OVERVIEWS: 2-3x the cost of compressing once, measured), this
module writes the TIFF structure itself and copies the compressed tiles byte for byte:
header, every IFD (full resolution first, then overviews, largest first), then tile data,
smallest overview first and full resolution last, each level in its own order.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .tiff import NEW_SUBFILE_TYPE, TILE_BYTE_COUNTS, TILE_OFFSETS, read_ifds

# what an overview IFD keeps from its own file (no georeferencing or metadata: those live on the main IFD)
_STRUCTURAL = {256, 257, 258, 259, 262, 277, 284, 317, 322, 323, 338, 339, 42113}


@dataclass
class Image:
    """One IFD of a tiled TIFF: tags as (type, count, little-endian value bytes) and its tiles."""

    path: Path
    tags: dict[int, tuple[int, int, bytes]]
    offsets: list[int]
    counts: list[int]


def read_image(path: Path) -> Image:
    """The first IFD of a little-endian tiled (Big)TIFF, as GDAL writes it on this platform."""
    ifd = read_ifds(path, limit=1)[0]
    if ifd.order != "<":
        raise ValueError(f"{path}: not a little-endian TIFF")
    return Image(path, ifd.tags, ifd.ints(TILE_OFFSETS), ifd.ints(TILE_BYTE_COUNTS))


def assemble(out: Path, main: Image, overviews: list[Image], bigtiff: bool | None = None) -> None:
    """Write `out` as a COG of `main` with `overviews` (largest first), copying compressed tiles.

    Where the file system can insert a range at the head of a file (ext4, XFS: fallocate
    INSERT_RANGE), the main file becomes `out` in place: the IFDs and overview tiles go into
    the inserted range and no full-resolution byte is copied. Elsewhere everything is copied.
    BigTIFF when the file needs 64-bit offsets (`bigtiff` forces either).
    """
    levels = [main, *overviews]
    tags = _level_tags(levels)
    head = _head_size(levels, tags, big=True)  # an upper bound: the format is not chosen yet
    block = os.statvfs(main.path).f_bsize
    inserted = -(-head // block) * block
    big = inserted + main.path.stat().st_size + 2**20 > 2**32 - 1 if bigtiff is None else bigtiff
    if not big:
        tags = [{t: (4, c, struct.pack(f"<{c}I", *struct.unpack(f"<{c}Q", d))) if typ == 16 else (typ, c, d)
                 for t, (typ, c, d) in lt.items()} for lt in tags]  # LONG8 is BigTIFF-only
    if _insert_head(main.path, inserted):
        with open(main.path, "r+b") as f:
            _write_head(f, levels, tags, big, [o + inserted if o else 0 for o in main.offsets])
            if f.tell() > inserted:
                raise RuntimeError(f"COG head is {f.tell()} bytes, {inserted} were inserted")
        os.replace(main.path, out)
        return
    pos = _head_size(levels, tags, big)
    main_offsets = []
    for c in main.counts:
        main_offsets.append(pos if c else 0)
        pos += c
    with open(out, "wb") as f:
        _write_head(f, levels, tags, big, main_offsets)
        _copy_tiles(f, main)
        if f.tell() != pos:
            raise RuntimeError(f"COG assembly wrote {f.tell()} bytes, planned {pos}")


def _level_tags(levels: list[Image]) -> list[dict[int, tuple[int, int, bytes]]]:
    out = []
    for k, img in enumerate(levels):
        keep = img.tags if k == 0 else {t: v for t, v in img.tags.items() if t in _STRUCTURAL}
        tags = {t: v for t, v in keep.items() if t not in (TILE_OFFSETS, TILE_BYTE_COUNTS, NEW_SUBFILE_TYPE)}
        if k:
            tags[NEW_SUBFILE_TYPE] = (4, 1, struct.pack("<I", 1))  # reduced-resolution image
        out.append(tags)
    return out


def _head_size(levels: list[Image], tags: list[dict], big: bool) -> int:
    """Bytes of the header, every IFD and the overview tiles: where full resolution starts."""
    ifds = sum(_ifd_size(t, len(img.offsets), big) for t, img in zip(tags, levels, strict=True))
    return (16 if big else 8) + ifds + sum(sum(img.counts) for img in levels[1:])


def _ifd_size(tags: dict, ntiles: int, big: bool) -> int:
    esize, inline, word = (20, 8, 8) if big else (12, 4, 4)
    extra = sum(_pad(len(d)) for _, _, d in tags.values() if len(d) > inline)
    extra += 2 * _pad(ntiles * word) if ntiles * word > inline else 0
    return word + (len(tags) + 2) * esize + word + extra if big else 2 + (len(tags) + 2) * esize + 4 + extra


def _write_head(f, levels: list[Image], tags: list[dict], big: bool, main_offsets: list[int]) -> None:
    """Header, every IFD, then the overview tiles (smallest level first), from the file's start."""
    off_type, off_fmt = (16, "Q") if big else (4, "I")
    pos = 16 if big else 8
    ifd_pos = []
    for t, img in zip(tags, levels, strict=True):
        ifd_pos.append(pos)
        pos += _ifd_size(t, len(img.offsets), big)
    offsets = [main_offsets] + [[] for _ in levels[1:]]
    for k in reversed(range(1, len(levels))):
        for c in levels[k].counts:
            offsets[k].append(pos if c else 0)
            pos += c
    f.seek(0)
    f.write(b"II" + (struct.pack("<HHHQ", 43, 8, 0, 16) if big else struct.pack("<HI", 42, 8)))
    for k, (t, img) in enumerate(zip(tags, levels, strict=True)):
        n = len(img.offsets)
        entries = {**t, TILE_OFFSETS: (off_type, n, struct.pack(f"<{n}{off_fmt}", *offsets[k])),
                   TILE_BYTE_COUNTS: (off_type, n, struct.pack(f"<{n}{off_fmt}", *img.counts))}
        f.write(_ifd_bytes(ifd_pos[k], entries, ifd_pos[k + 1] if k + 1 < len(levels) else 0, big))
    for k in reversed(range(1, len(levels))):
        _copy_tiles(f, levels[k])
    if f.tell() != pos:
        raise RuntimeError(f"COG head wrote {f.tell()} bytes, planned {pos}")


def _insert_head(path: Path, length: int) -> bool:
    """Insert `length` zero bytes at the start of `path` without moving data; False if unsupported."""
    import ctypes
    import ctypes.util

    falloc_fl_insert_range = 0x20
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        return libc.fallocate(fd, falloc_fl_insert_range, 0, length) == 0
    finally:
        os.close(fd)


def _pad(n: int) -> int:
    return n + (n & 1)  # values start on a word boundary


def _ifd_bytes(at: int, tags: dict[int, tuple[int, int, bytes]], nxt: int, big: bool) -> bytes:
    esize, inline = (20, 8) if big else (12, 4)
    n = len(tags)
    head = struct.pack("<Q", n) if big else struct.pack("<H", n)
    values_at = at + len(head) + n * esize + (8 if big else 4)
    entries, values = [], []
    for tag in sorted(tags):
        typ, count, data = tags[tag]
        cnt = struct.pack("<Q", count) if big else struct.pack("<I", count)
        if len(data) <= inline:
            val = data.ljust(inline, b"\0")
        else:
            val = struct.pack("<Q" if big else "<I", values_at)
            values.append(data + b"\0" * (len(data) & 1))
            values_at += _pad(len(data))
        entries.append(struct.pack("<HH", tag, typ) + cnt + val)
    return head + b"".join(entries) + (struct.pack("<Q", nxt) if big else struct.pack("<I", nxt)) + b"".join(values)


def _copy_tiles(f, img: Image) -> None:
    """Append img's tiles in tile order; runs of adjacent tiles are copied in one call, inside
    the kernel (copy_file_range) where the platform has it."""
    f.flush()
    out_fd = f.fileno()
    with open(img.path, "rb") as src:
        fd = src.fileno()
        i, n = 0, len(img.offsets)
        while i < n:
            j, end = i, img.offsets[i] + img.counts[i]
            while j + 1 < n and img.offsets[j + 1] == end:
                j += 1
                end += img.counts[j]
            _copy_range(fd, out_fd, img.offsets[i], end - img.offsets[i], img.path)
            i = j + 1
    f.seek(os.lseek(out_fd, 0, os.SEEK_CUR))  # the file object follows the kernel copies


def _copy_range(src: int, dst: int, start: int, length: int, path: Path) -> None:
    while length > 0:
        try:
            n = os.copy_file_range(src, dst, min(length, 1 << 30), start)
        except (AttributeError, OSError):  # no copy_file_range here: through user space
            chunk = os.pread(src, min(length, 64 << 20), start)
            n = os.write(dst, chunk) if chunk else 0
        if n == 0:
            raise OSError(f"{path} ends before its tile data")
        start += n
        length -= n

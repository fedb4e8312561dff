"""The few facts tessvrt needs about .npy files: header parsing and byte layout."""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass

MAGIC = b"\x93NUMPY"
TYPICAL_HEADER = 128  # real TESSERA tiles; anything else is read from the object itself
HEADER_PROBE = 4096  # bytes fetched to read an unexpected header


@dataclass(frozen=True)
class NpyHeader:
    descr: str
    fortran_order: bool
    shape: tuple[int, ...]
    data_offset: int


def _header_span(buf: bytes) -> tuple[int, int]:
    """(start, end) of the header text: after magic, version and length field; end = data offset."""
    if len(buf) < 10 or not buf.startswith(MAGIC):
        raise ValueError("not an .npy file (bad magic)")
    major = buf[6]
    if major == 1:
        return 10, 10 + struct.unpack("<H", buf[8:10])[0]
    if major in (2, 3) and len(buf) >= 12:
        return 12, 12 + struct.unpack("<I", buf[8:12])[0]
    raise ValueError(f"unsupported .npy version {major}" if major not in (2, 3) else "truncated .npy header")


def data_offset(buf: bytes) -> int:
    """Where the array data starts, from the first 12 bytes."""
    return _header_span(buf)[1]


def parse_header(buf: bytes) -> NpyHeader:
    """Parse an npy v1/v2/v3 header from the first bytes of a file."""
    start, end = _header_span(buf)
    if len(buf) < end:
        raise ValueError("truncated .npy header")
    try:
        d = ast.literal_eval(buf[start:end].decode("latin1"))
        return NpyHeader(str(d["descr"]), bool(d["fortran_order"]), tuple(d["shape"]), end)
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable .npy header ({exc})") from None


def build_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """An npy v1.0 header padded to 64 bytes, as numpy writes it (used for test data)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = -(10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def embedding_shape(h: NpyHeader, bands: int) -> tuple[int, int]:
    """(H, W) of an int8 (H, W, bands) C-order array, or ValueError saying what the header holds instead."""
    if h.descr not in ("|i1", "i1") or h.fortran_order or len(h.shape) != 3 or h.shape[2] != bands:
        raise ValueError(f"is not an int8 (H, W, {bands}) C-order array (header: {h.descr}, "
                         f"{'Fortran' if h.fortran_order else 'C'} order, shape {h.shape})")
    return h.shape[0], h.shape[1]


def scale_bands(h: NpyHeader, height: int, width: int, bands: int) -> int:
    """1 for (H, W) float32 scales, `bands` for (H, W, bands); ValueError for anything else."""
    if h.descr != "<f4" or h.fortran_order or h.shape[:2] != (height, width) or h.shape[2:] not in ((), (bands,)):
        raise ValueError(f"is not float32 C-order scales of {height}x{width} (header: {h.descr}, "
                         f"{'Fortran' if h.fortran_order else 'C'} order, shape {h.shape})")
    return bands if h.shape[2:] else 1

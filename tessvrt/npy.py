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


def parse_header(buf: bytes) -> NpyHeader:
    """Parse an npy v1/v2/v3 header from the first bytes of a file."""
    if len(buf) < 10 or not buf.startswith(MAGIC):
        raise ValueError("not an .npy file (bad magic)")
    major = buf[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", buf[8:10]), 10
    elif major in (2, 3):
        if len(buf) < 12:
            raise ValueError("truncated .npy header")
        (hlen,), start = struct.unpack("<I", buf[8:12]), 12
    else:
        raise ValueError(f"unsupported .npy version {major}")
    if len(buf) < start + hlen:
        raise ValueError("truncated .npy header")
    try:
        d = ast.literal_eval(buf[start : start + hlen].decode("latin1"))
        return NpyHeader(str(d["descr"]), bool(d["fortran_order"]), tuple(d["shape"]), start + hlen)
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable .npy header ({exc})") from None


def build_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """An npy v1.0 header padded to 64 bytes, as numpy writes it (used for test data)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = -(10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")

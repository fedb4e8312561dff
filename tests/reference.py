"""The numpy reference of the pixel rule, straight from the sample bucket's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pyproj import Transformer

from tessvrt import scales
from tessvrt.grid import PIXEL, owner_cells
from tessvrt.testing import read_tile


def load_record(vrt: Path) -> dict:
    return json.loads((vrt.with_name(vrt.name[:-4] + ".tessvrt") / "tessvrt.json").read_text())


def _owned(record: dict, epsg: int, col0: int, row0: int, width: int, height: int):
    """Per tile: the window's flat pixel indices it owns and the tile row/col under each."""
    xs = PIXEL * (col0 + np.arange(width)) + 5.0
    ys = PIXEL * (row0 - np.arange(height)) + 5.0
    X, Y = np.meshgrid(xs, ys)
    ci, cj = owner_cells(epsg, X, Y)
    for t in record["tiles"]:
        lon_i, lat_i = round(t["lon"] * 100), round(t["lat"] * 100)
        sel = (ci == (lon_i - 5) // 10) & (cj == (lat_i - 5) // 10)
        if not sel.any():
            continue
        px, py = X[sel], Y[sel]
        if t["epsg"] != epsg:
            px, py = Transformer.from_crs(epsg, t["epsg"], always_xy=True).transform(px, py)
        oe, on = t["origin"]
        col = np.floor((np.asarray(px) - oe) / PIXEL).astype(np.int64)
        row = np.floor((on - np.asarray(py)) / PIXEL).astype(np.int64)
        inside = (col >= 0) & (col < t["width"]) & (row >= 0) & (row < t["height"])
        yield t, np.flatnonzero(sel.ravel())[inside], row[inside], col[inside]


def expected(bucket_root: Path, record: dict, epsg: int, col0: int, row0: int, width: int, height: int,
             bands: list[int] | None = None) -> np.ndarray:
    """(bands, height, width) float32 of what a VRT on zone grid epsg must return for this window.

    col0/row0 are global grid indices (see tessvrt.grid.Window); bands are 0-based.
    """
    bands = list(range(128)) if bands is None else bands
    out = np.full((len(bands), height, width), np.nan, np.float32)
    for t, idx, rr, cc in _owned(record, epsg, col0, row0, width, height):
        emb = read_tile(bucket_root, t["grid"])
        sc = read_tile(bucket_root, t["scales"])
        e = emb[rr, cc][:, bands].astype(np.float32)  # (n, nb)
        s = sc[rr, cc]
        s = s[:, bands] if s.ndim == 2 else np.repeat(s[:, None], len(bands), axis=1)
        ok = scales.valid(s)
        v = np.where(ok, e * np.where(ok, s, 0).astype(np.float32), np.nan).astype(np.float32)
        out.reshape(len(bands), -1)[:, idx] = v.T
    return out


def stored(bucket_root: Path, record: dict, epsg: int, col0: int, row0: int, width: int, height: int) -> np.ndarray:
    """(128, height, width) of the stored int8 behind each pixel as int16; 999 where no tile owns it."""
    out = np.full((128, height, width), 999, np.int16)
    for t, idx, rr, cc in _owned(record, epsg, col0, row0, width, height):
        out.reshape(128, -1)[:, idx] = read_tile(bucket_root, t["grid"])[rr, cc].T
    return out

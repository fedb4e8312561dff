"""Which per-pixel scales are valid: upstream's rule, shared by the VRT, materialise and the tests.

A scale is valid when finite and 0 < s < 1.0 (geotessera 0.11's MAX_VALID_SCALE, after upstream
issue #355: a published tile with absurd scales gave values near -161,685). Everything else (NaN
water, +-inf, zeros, negatives, sentinels near the float32 maximum, 1.0 and above) is no data.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

MAX_SCALE = 1.0
_TOP = float(np.nextafter(np.float32(MAX_SCALE), np.float32(0)))  # the largest valid float32
_TINY = float(np.nextafter(np.float32(0), np.float32(1)))  # the smallest valid float32

# GDAL LUT over float32 scales: every invalid value maps to NaN, valid ones to themselves
# (the identity between the two inner points is exact, checked against numpy in the tests).
GDAL_LUT = f"-3.4028234663852886e+38:nan,0:nan,{_TINY!r}:{_TINY!r},{_TOP!r}:{_TOP!r},{MAX_SCALE!r}:nan"


def valid(s: np.ndarray) -> np.ndarray:
    """Boolean mask of valid scales."""
    return np.isfinite(s) & (s > 0) & (s < MAX_SCALE)


def dequantise_into(cpu: Executor | None, out: np.ndarray, emb: np.ndarray, sc: np.ndarray, bands: list[int]) -> None:
    """out (bands, h, w) = int8 (128, h, w) x scale (h, w), bit for bit numpy's float32, NaN where the scale is invalid.

    Cut into row bands so both cores share the work (cpu: a thread pool, or None for here).
    """
    sel = None if len(bands) == emb.shape[0] and bands == list(range(1, emb.shape[0] + 1)) else np.asarray(bands) - 1
    s = np.where(valid(sc), sc, np.float32(np.nan))

    def rows(a: int, b: int) -> None:
        e = emb[:, a:b] if sel is None else emb[sel, a:b]
        np.multiply(e, s[None, a:b], out=out[:, a:b])

    h = out.shape[1]
    step = max(1, -(-h // 8))
    parts = [(a, min(a + step, h)) for a in range(0, h, step)]
    if cpu is None:
        for a, b in parts:
            rows(a, b)
    else:
        list(cpu.map(lambda ab: rows(*ab), parts))

"""Pixel sources: the dequantised float32 pixels of a window of a zone grid, whatever the format.

A source is described by a small picklable spec (`NpySpec`: tiles of a build record; `ZarrSpec`:
a zone group of a dataset's store) that holds no sockets or threads; `spec.open(window)` opens the
reader in the process that uses it (a Dask worker opens its own connections). materialise, the
piece writer of a distributed run and `open_region` all read through this one interface.
"""

from .base import PixelSource, Spec, Stats, ZoneJob, open_source, read_window
from .npy import NpySpec, NpyTile, npy_jobs
from .zarr import ZarrSpec, zarr_jobs

__all__ = ["PixelSource", "Spec", "open_source", "Stats", "ZoneJob", "read_window", "NpySpec", "NpyTile", "npy_jobs",
           "ZarrSpec", "zarr_jobs"]

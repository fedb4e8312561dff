"""tessvrt: TESSERA embeddings as GDAL VRTs and Cloud-Optimized GeoTIFFs."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from .errors import TessvrtError

__version__ = "0.1.0"

__all__ = ["build", "materialise", "preview", "sample", "open_region", "TessvrtError", "__version__"]

if TYPE_CHECKING:
    from .build import build
    from .lazy import open_region
    from .materialise import materialise
    from .preview import preview
    from .sample import sample

# The public functions share their names with the modules that hold them, and those modules import
# numpy, pandas, pyarrow, pyproj and rasterio: they are imported on first use, so `tessvrt --help`,
# `datasets` and `info` start without them.
_LAZY = ("build", "materialise", "preview", "sample")


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        importlib.import_module(f".{name}", __name__)  # binds the function (see _Package)
        return globals()[name]
    if name == "open_region":  # imported on first use: it brings xarray and dask
        from .lazy import open_region

        return open_region
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps tessvrt.build/materialise/preview/sample the functions: importing the submodule of the same name
    (e.g. `from .materialise import parse_bands` anywhere) would otherwise bind the module there."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

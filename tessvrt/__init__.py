"""tessvrt: TESSERA embeddings as GDAL VRTs and Cloud-Optimized GeoTIFFs."""

__version__ = "0.1.0"

from .build import build  # noqa: E402
from .errors import TessvrtError  # noqa: E402
from .materialise import materialise  # noqa: E402
from .sample import sample  # noqa: E402

__all__ = ["build", "materialise", "sample", "open_region", "TessvrtError", "__version__"]


def __getattr__(name: str) -> object:
    if name == "open_region":  # imported on first use: it brings xarray and dask
        from .lazy import open_region

        return open_region
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""tessvrt: TESSERA embeddings as GDAL VRTs and Cloud-Optimized GeoTIFFs."""

__version__ = "0.1.0"

from .build import build  # noqa: E402
from .errors import TessvrtError  # noqa: E402
from .materialise import materialise  # noqa: E402
from .sample import sample  # noqa: E402

__all__ = ["build", "materialise", "sample", "TessvrtError", "__version__"]

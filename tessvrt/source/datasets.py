"""What upstream publishes and where: the dataset table and the bucket layouts (mirrors) that hold it.

Object keys are derived from (dataset, year, tile) exactly as geotessera does, never taken from
the manifest: a manifest's path columns are only checked against them (shared/SPEC.md section 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import TessvrtError

if TYPE_CHECKING:  # grid imports numpy and pyproj: `tessvrt datasets` starts without them
    from ..grid import Tile


@dataclass(frozen=True)
class Dataset:
    """One feature space: a (version, variant) pair and the formats upstream publishes it in."""

    version: str  # the manifest's 'version' column
    variant: str  # the manifest's 'variant' column: which run produced it
    npy: str | None  # npy directory (and tessvrt's --dataset name), None when only Zarr exists
    zarr: str | None  # Zarr store name under zarr/
    about: str

    @property
    def name(self) -> str:
        """The name tessvrt uses: the npy directory, else the Zarr store."""
        return self.npy or self.zarr or ""

    @property
    def label(self) -> str:
        """How errors name it: the name plus what the variant is."""
        return f"{self.name} (TESSERA v{self.version.removesuffix('.0')}, variant {self.variant!r}: {self.about})"


# geotessera 0.11's table (SPEC section 1); the first npy dataset of a version is what the
# version-only name picks.
DATASETS: tuple[Dataset, ...] = (
    Dataset("1.0", "vultr", "v1", "v1", "the first global release"),
    Dataset("1.1", "cambridge", "v1.1-cam", "v1.1", "the Cambridge run"),
    Dataset("1.1", "dclimate", None, "v1.1-dclimate", "the complete global run, upstream's default"),
    Dataset("2.0", "2B-L~beta2", "v2-2B-L~beta2", "v2-2B-L~beta2", "v2 model 2B-L, beta 2"),
    Dataset("2.0", "2B-L~beta1", "v2-2B-L~beta1", "v2-2B-L~beta1", "v2 model 2B-L, beta 1"),
)
DEFAULT_DATASET = "v1"


@dataclass(frozen=True)
class Choice:
    dataset: Dataset
    note: str | None = None  # said on stderr when a short name was resolved to a dataset


def npy_dataset(name: str) -> Choice:
    """The npy dataset a --dataset name means, or a one-line error saying what to pass instead."""
    key = name.strip()
    for d in DATASETS:
        if key == d.npy:
            return Choice(d)
    short = key.lower().removeprefix("v")
    version = short if "." in short else short + ".0"
    same = [d for d in DATASETS if d.version == version]
    readable = [d for d in same if d.npy]
    if readable and key.lower() in (f"v{short}", short):
        others = ", ".join(d.label for d in same if d is not readable[0])
        note = f"--dataset {key} means {readable[0].label}" + (f"; also published: {others}" if others else "")
        return Choice(readable[0], note)
    zarr_only = [d for d in DATASETS if d.npy is None and key in (d.zarr, d.variant)]
    if zarr_only:
        z = zarr_only[0].zarr
        raise TessvrtError(f"--dataset {key}: {zarr_only[0].label} is published only as Zarr, so it has no npy tiles; "
                           "build a VRT of its store with --format zarr (GDAL >= 3.11 reads it), write COGs with `tessvrt "
                           f"materialise out.tif --dataset {z} --bbox W,S,E,N --year Y` or read points with `tessvrt sample "
                           f"--dataset {z} --year Y LON,LAT`; build needs .npy tiles: choose one of "
                           f"{', '.join(d.npy for d in DATASETS if d.npy)} (tessvrt datasets lists them)")
    raise TessvrtError(f"--dataset {key!r} is not a TESSERA dataset{did_you_mean(key, 'npy')}; choose one of "
                       f"{', '.join(d.npy for d in DATASETS if d.npy)} (tessvrt datasets lists them)")


def build_format(name: str, fmt: str | None) -> str:
    """npy or zarr for `build`: npy by default where both exist (its VRTs read on GDAL >= 3.6 and QGIS 3.22;
    Zarr VRTs need GDAL >= 3.11), zarr for datasets published only as Zarr."""
    if fmt not in (None, "npy", "zarr"):
        raise TessvrtError(f"--format {fmt!r} must be zarr or npy")
    key = name.strip()
    zarr_only = any(d.npy is None and key in (d.zarr, d.variant) for d in DATASETS)
    if fmt == "npy" or (fmt is None and not zarr_only):
        return "npy"
    return "zarr"


def did_you_mean(key: str, fmt: str) -> str:
    """' (did you mean v1.1-cam?)' for a misspelt name, matched against names and variants; '' when none is close."""
    import difflib

    names: dict[str, str] = {}
    for d in DATASETS:
        name = d.name if fmt == "npy" else d.zarr  # npy: a Zarr-only name leads to its own pointer
        if name:
            for alias in (name, d.variant, f"v{d.version.removesuffix('.0')}-{d.variant}"):
                names.setdefault(alias.lower(), name)
    close = difflib.get_close_matches(key.lower(), names, n=3, cutoff=0.6)
    picks = list(dict.fromkeys(names[c] for c in close))
    return f" (did you mean {' or '.join(picks)}?)" if picks else ""


def zarr_dataset(name: str) -> Dataset:
    """The dataset whose Zarr store a --dataset name means: its store name, npy directory or variant."""
    key = name.strip()
    for d in DATASETS:
        if d.zarr and key in (d.zarr, d.npy, d.variant):
            return d
    raise TessvrtError(f"--dataset {key!r} names no TESSERA Zarr store{did_you_mean(key, 'zarr')}; choose one of "
                       f"{', '.join(d.zarr for d in DATASETS if d.zarr)} (tessvrt datasets lists them)")


@dataclass(frozen=True)
class Mirror:
    """A bucket layout: where one copy of upstream's repository keeps manifests and tiles.

    `roots` are every "bucket/prefix" that names this repository's objects (the AWS bucket and the
    gateway's bucket hold the same objects): a manifest path under any of them is accepted.
    """

    name: str
    bucket: str
    prefix: str  # key prefix of the repository inside the bucket
    endpoint: str | None  # default S3 endpoint URL; None = AWS S3 in us-west-2
    legacy: bool  # the old tessera-embeddings layout
    roots: tuple[str, ...]
    about: str

    def _dir(self, dataset: Dataset) -> str:
        return f"{self.prefix}{dataset.npy}" if self.legacy else f"{self.prefix}npy/{dataset.npy}"

    def manifest_key(self, dataset: Dataset) -> str:
        return f"{self._dir(dataset)}/manifest.parquet"

    def tile_keys(self, dataset: Dataset, year: int, tile: Tile) -> tuple[str, str]:
        """(embeddings, scales) keys, built as upstream builds them: from dataset, year and centre only."""
        mid = "global_0.1_degree_representation/" if self.legacy else ""
        base = f"{self._dir(dataset)}/{mid}{year}/{tile.name}/{tile.name}"
        return f"{base}.npy", f"{base}_scales.npy"

    def zarr_prefix(self, dataset: Dataset) -> str:
        """Key prefix of the dataset's Zarr store (upstream's zarr/{store}/), ending with '/'."""
        if self.legacy or not dataset.zarr:
            where = f"the {self.name} layout" if self.legacy else dataset.label
            raise TessvrtError(f"{where} has no Zarr store; use --source source-coop or gateway with one of "
                               f"{', '.join(d.zarr for d in DATASETS if d.zarr)}")
        return f"{self.prefix}zarr/{dataset.zarr}/"

    def npy_prefix(self) -> str:
        """The key prefix every tile object lies under (GDAL >= 3.12's raw-band allow-list is limited to it)."""
        return f"{self.prefix}{'' if self.legacy else 'npy/'}"

    def same_object(self, uri: str, key: str) -> bool:
        """Whether an s3:// URI from a manifest names our object `key` (in this or an equivalent bucket)."""
        if not uri.startswith("s3://"):
            return False
        path = uri[5:]
        rel = key[len(self.prefix):]
        return any(path == root + rel for root in self.roots)


_COOP_ROOTS = ("us-west-2.opendata.source.coop/tessera/tessera/", "tessera/tessera/")
MIRRORS: dict[str, Mirror] = {
    m.name: m
    for m in (
        Mirror("source-coop", "us-west-2.opendata.source.coop", "tessera/tessera/", None, False, _COOP_ROOTS,
               "Source Cooperative's AWS bucket, anonymous, path-style (upstream's default since geotessera 0.10)"),
        Mirror("gateway", "tessera", "tessera/", "https://data.source.coop", False, _COOP_ROOTS,
               "the same objects through Source Cooperative's S3 gateway https://data.source.coop"),
        Mirror("legacy", "tessera-embeddings", "", None, True, ("tessera-embeddings/",),
               "the retired tessera-embeddings layout, for old mirrors (pass --endpoint)"),
    )
}
DEFAULT_MIRROR = "source-coop"


def mirror(name: str | None) -> Mirror:
    m = MIRRORS.get(name or DEFAULT_MIRROR)
    if m is None:
        raise TessvrtError(f"--source {name!r} is not a known layout; choose one of {', '.join(MIRRORS)}")
    return m


def table() -> list[dict[str, str | bool | None]]:
    """Every dataset, for `tessvrt datasets`."""
    return [
        {"name": d.name, "version": d.version, "variant": d.variant, "about": d.about, "npy": d.npy, "zarr": d.zarr,
         "tessvrt": "build, materialise, sample" if d.npy else "materialise --bbox, sample (Zarr only)"}
        for d in DATASETS
    ]

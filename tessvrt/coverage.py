"""tessvrt coverage: which tiles exist, per dataset and year, over a region; counts, remote bytes and a map.

npy datasets are counted from their manifests (one row per tile and year, with object sizes): exact
counts and bytes without reading a tile. A Zarr-only dataset has no per-tile listing: what is cheap to
know is which zone groups its store holds over the region and their years (a few metadata GETs), so
that is what is said for it; its pixels' coverage is not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TessvrtError
from .region import Region

PNG_MAX = 1600  # pixels on the long side of the map
# map colours (RGB): no tile, a tile in some years, in every year listed, the region's outline
ABSENT, SOME, ALL, OUTLINE, OUTSIDE = (215, 215, 215), (120, 190, 120), (20, 120, 40), (200, 30, 30), (255, 255, 255)


@dataclass
class YearCoverage:
    year: int
    tiles: int  # tiles of the region present
    requested: int | None  # cells the region selects (None: no region, the whole dataset)
    grid_bytes: int
    scales_bytes: int

    @property
    def remote_bytes(self) -> int:
        return self.grid_bytes + self.scales_bytes


@dataclass
class DatasetCoverage:
    dataset: str
    format: str  # "npy" (manifest) or "zarr" (store metadata only)
    years: list[YearCoverage] = field(default_factory=list)
    zones: dict[str, list[int]] = field(default_factory=dict)  # zarr: zone group -> its years
    note: str = ""  # what could not be known, or why the dataset is not listed
    cells: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # year -> present cells (i, j) as (n, 2)


@dataclass
class CoverageResult:
    region: str
    datasets: list[DatasetCoverage]
    png: Path | None = None
    png_grid: dict | None = None  # how cells map to the picture's pixels (i0, j1, pixels per cell or cells per pixel)

    def as_json(self) -> dict:
        return {"region": self.region, "png": str(self.png) if self.png else None, "png_grid": self.png_grid,
                "datasets": [{"dataset": d.dataset, "format": d.format, "note": d.note, "zones": d.zones,
                              "years": [{"year": y.year, "tiles": y.tiles, "requested": y.requested,
                                         "grid_bytes": y.grid_bytes, "scales_bytes": y.scales_bytes,
                                         "remote_bytes": y.remote_bytes} for y in d.years]} for d in self.datasets]}


def coverage(*, bbox: str | None = None, region: str | os.PathLike | None = None, country: str | None = None,
             dataset: str | None = None, year: int | None = None, source: str | None = None,
             endpoint: str | None = None, manifest: str | None = None, png: str | os.PathLike | None = None,
             overwrite: bool = False) -> CoverageResult:
    """Tiles present per dataset and year over the region (the whole dataset without one); png: a map of them.

    dataset: one name (npy or Zarr); default every dataset upstream publishes (those whose manifest or store
    cannot be read are listed with the reason)."""
    from .source.datasets import DATASETS

    area = Region.from_options(bbox=bbox, region=region, country=country)
    out = Path(png) if png is not None else None
    if out is not None:
        _check_png_target(out, overwrite)
    if dataset is not None:
        names = [dataset]
    else:
        names = [d.name for d in DATASETS]
    if manifest is not None and dataset is None:
        raise TessvrtError("--manifest belongs to one dataset: give --dataset too")
    found = []
    for name in names:
        try:
            found.append(_one(name, area, year, source, endpoint, manifest))
        except TessvrtError as exc:
            if dataset is not None:
                raise
            found.append(DatasetCoverage(name, "?", note=str(exc)))
    res = CoverageResult(area.label if area else "everywhere", found)
    if out is not None:
        pick = next((d for d in found if d.cells), None)
        if pick is None:
            raise TessvrtError("--png: no npy dataset has tiles to draw here (a Zarr-only dataset has no tile listing); "
                               "nothing was written")
        res.png, res.png_grid = out, draw(out, pick, area)
    return res


def _one(name: str, area: Region | None, year: int | None, source: str | None, endpoint: str | None,
         manifest: str | None) -> DatasetCoverage:
    from .source.datasets import DATASETS

    ds = next((d for d in DATASETS if name.strip() in (d.npy, d.zarr, d.name)), None)
    if ds is not None and not ds.npy:
        return _zarr(ds.zarr or name, area, year, source, endpoint)
    return _npy(name, area, year, source, endpoint, manifest)


def _npy(name: str, area: Region | None, year: int | None, source: str | None, endpoint: str | None,
         manifest: str | None) -> DatasetCoverage:
    from .source import datasets
    from .source.manifest import ManifestSource, read_manifest, select
    from .source.s3 import Endpoint

    choice = datasets.npy_dataset(name)
    mirror = datasets.mirror(source)
    ep = Endpoint.parse(endpoint or mirror.endpoint)
    path = ManifestSource.resolve(manifest, choice.dataset, mirror, ep).fetch()
    df = read_manifest(path, ["version", "variant", "year", "lon", "lat", "grid_size", "scales_size"])
    out = DatasetCoverage(choice.dataset.name, "npy")
    years = sorted(int(y) for y in df["year"].dropna().unique()) if year is None else [year]
    for y in years:
        try:
            rows = select(df, choice.dataset, y).rows
        except TessvrtError:
            if year is not None:
                raise
            continue  # a year only another version or variant of this manifest has
        lon_i, lat_i = rows["lon_i"].to_numpy(np.int64), rows["lat_i"].to_numpy(np.int64)
        ci, cj = (lon_i - 5) // 10, (lat_i - 5) // 10
        keep = area.selects(ci, cj) if area is not None else np.ones(len(rows), bool)
        sizes = rows["scales_size"].astype(float).fillna(0).to_numpy() if "scales_size" in rows else np.zeros(len(rows))
        out.years.append(YearCoverage(y, int(keep.sum()), area.count if area is not None else None,
                                      int(rows["grid_size"].to_numpy()[keep].sum()), int(sizes[keep].sum())))
        out.cells[y] = np.column_stack([ci[keep], cj[keep]])
    if not out.years:
        out.note = "no rows of this dataset in its manifest"
    return out


def _zarr(name: str, area: Region | None, year: int | None, source: str | None, endpoint: str | None) -> DatasetCoverage:
    """Zone groups of the store over the region and their years: a few metadata GETs, nothing per tile."""
    from .grid import utm_zone
    from .zarrstore import open_store

    ts = open_store(name, source, endpoint)
    if area is not None and area.box is not None:
        zones = range(utm_zone(area.box.west), utm_zone(area.box.east) + 1)
    else:
        zones = range(1, 61)
    out = DatasetCoverage(ts.dataset.name, "zarr")
    for z in zones:
        g = ts.zone(z)
        if g is not None and (year is None or year in g.years):
            out.zones[g.name] = list(g.years)
    out.note = ("Zarr only: no per-tile listing exists (npy manifests only); shown are the store's zone groups over the "
                "region and their years, not which pixels are computed")
    return out


def _check_png_target(out: Path, overwrite: bool) -> None:
    from .errors import check_output_folder

    if out.suffix.lower() != ".png":
        raise TessvrtError(f"--png {out} must end in .png")
    check_output_folder(out.resolve().parent, "--png")
    if out.is_dir() or out.is_symlink():
        raise TessvrtError(f"--png {out} exists and is not a file tessvrt writes; choose another name")
    if out.exists() and not overwrite:
        raise TessvrtError(f"--png {out} exists; pass --overwrite to replace it")


def draw(out: Path, cov: DatasetCoverage, area: Region | None) -> dict:
    """A map of the dataset's tiles over the region: dark green in every year listed, light green in some, grey
    where the region asks for a cell no year has, red the region's outline. Written whole or not at all."""
    import warnings

    import rasterio
    from affine import Affine

    from .publish import TargetLock, clean_stale, tmp_path

    allc = np.concatenate(list(cov.cells.values()))
    if area is not None and area.box is not None:
        i0, i1, j0, j1 = area.box.cells()
    else:
        i0, i1, j0, j1 = int(allc[:, 0].min()), int(allc[:, 0].max()) + 1, int(allc[:, 1].min()), int(allc[:, 1].max()) + 1
    ni, nj = i1 - i0, j1 - j0
    ppc = max(1, min(32, PNG_MAX // max(ni, nj)))  # pixels per cell
    cpp = max(1, -(-max(ni, nj) // PNG_MAX))  # cells per pixel (large regions; then ppc is 1)
    gw, gh = -(-ni // cpp), -(-nj // cpp)
    counts = np.zeros((gh, gw), np.int32)
    asked = np.zeros((gh, gw), bool)
    for cells in cov.cells.values():
        m = np.zeros((gh, gw), bool)
        m[(j1 - 1 - cells[:, 1]) // cpp, (cells[:, 0] - i0) // cpp] = True
        counts += m
    if area is not None:
        for ci, j in area.cell_rows():
            asked[(j1 - 1 - j) // cpp, (ci - i0) // cpp] = True
    counts = np.repeat(np.repeat(counts, ppc, 0), ppc, 1)
    asked = np.repeat(np.repeat(asked, ppc, 0), ppc, 1)
    h, w = counts.shape
    img = np.empty((3, h, w), np.uint8)
    img[:] = np.array(OUTSIDE, np.uint8)[:, None, None]
    n = len(cov.cells)
    for mask, colour in ((asked, ABSENT), ((counts > 0) & (counts < n), SOME), (counts >= n, ALL)):
        img[:, mask] = np.array(colour, np.uint8)[:, None]
    step = 0.1 * cpp / ppc
    transform = Affine(step, 0, i0 / 10, 0, -step, j1 / 10)
    if area is not None and area.is_polygon:
        from rasterio.features import rasterize

        line = rasterize([(area.shape.boundary, 1)], out_shape=(h, w), transform=transform, all_touched=True, dtype="uint8")
        img[:, line > 0] = np.array(OUTLINE, np.uint8)[:, None]
    with TargetLock([out]):
        clean_stale(out.parent, [out])
        tmp = tmp_path(out, ".png")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a plain picture: no georeferencing on purpose
                with rasterio.open(tmp, "w", driver="PNG", width=w, height=h, count=3, dtype="uint8") as d:
                    d.write(img)
            os.replace(tmp, out)
        except OSError as exc:
            raise TessvrtError(f"cannot write {out} ({exc.strerror or exc}); nothing was written") from None
        finally:
            tmp.unlink(missing_ok=True)
            for p in out.parent.glob(tmp.name + ".*"):
                p.unlink(missing_ok=True)
    return {"i0": i0, "j1": j1, "pixels_per_cell": ppc, "cells_per_pixel": cpp, "width": w, "height": h,
            "dataset": cov.dataset, "years": sorted(cov.cells)}

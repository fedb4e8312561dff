"""tessvrt coverage: counts and bytes equal the manifest's, the map shows tiles where they are.

The sample bucket on the moto S3 server; references are computed here from the manifest parquet with pandas.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from conftest import manifest_path, run_cli
from test_region import U, write_region

from tessvrt.coverage import ABSENT, ALL, OUTLINE, SOME


def manifest_counts(bucket_root: Path, dataset: str, keep=None) -> dict[int, tuple[int, int]]:
    """year -> (tiles, grid + scales bytes) from the parquet itself; keep(lon, lat) filters tiles."""
    m = pd.read_parquet(manifest_path(bucket_root, dataset))
    if keep is not None:
        m = m[[keep(a, b) for a, b in zip(m["lon"], m["lat"], strict=True)]]
    return {int(y): (len(g), int(g["grid_size"].sum() + g["scales_size"].sum())) for y, g in m.groupby("year")}


def cov(s3, *args: str) -> dict:
    return json.loads(run_cli("coverage", "--endpoint", s3.url, "--json", *args).stdout)


def by_year(d: dict) -> dict[int, tuple[int, int]]:
    return {y["year"]: (y["tiles"], y["remote_bytes"]) for y in d["years"]}


def test_counts_equal_the_manifest_everywhere(s3, bucket_root):
    res = cov(s3)
    ds = {d["dataset"]: d for d in res["datasets"]}
    for name in ("v1", "v1.1-cam"):
        assert ds[name]["format"] == "npy"
        assert by_year(ds[name]) == manifest_counts(bucket_root, name), name
    assert by_year(ds["v1"])[2024][0] > by_year(ds["v1"])[2023][0] > 0
    # datasets the sample bucket does not hold are listed with the reason, not a failure of the whole command
    assert ds["v2-2B-L~beta2"]["format"] == "?" and "manifest.parquet not found" in ds["v2-2B-L~beta2"]["note"]
    assert ds["v2-2B-L~beta2"]["years"] == []


def test_counts_over_a_box_and_a_polygon(s3, bucket_root, tmp_path):
    res = cov(s3, "--dataset", "v1", "--bbox", "4.0,88.0,4.3,88.3")
    assert by_year(res["datasets"][0]) == manifest_counts(bucket_root, "v1", lambda a, b: 4.0 < a < 4.3 and 88.0 < b < 88.3)
    assert res["datasets"][0]["years"][0]["requested"] == 9
    f = write_region(tmp_path / "u.geojson", [U])

    def in_u(lon: float, lat: float) -> bool:
        return shapely.box(lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05).intersection(U).area > 0

    res = cov(s3, "--dataset", "v1", "--region", str(f), "--year", "2024")
    want = manifest_counts(bucket_root, "v1", in_u)
    assert by_year(res["datasets"][0]) == {2024: want[2024]} and want[2024][0] == 8


def test_zarr_only_dataset_says_what_it_knows(s3, tmp_path):
    pytest.importorskip("zarr")
    from tessvrt.zarrsample import upload, write_store

    upload(write_store(tmp_path / "s", "upstream"), s3.put, "s3://us-west-2.opendata.source.coop/tessera/tessera/zarr/v1.1-dclimate")
    d = cov(s3, "--dataset", "v1.1-dclimate", "--bbox", "5.99,-0.01,6.01,0.01")["datasets"][0]
    assert d["format"] == "zarr" and d["zones"] == {"utm31": [2023, 2024], "utm32": [2023, 2024]}
    assert "no per-tile listing" in d["note"] and d["years"] == []
    p = run_cli("coverage", "--endpoint", s3.url, "--dataset", "v1.1-dclimate", "--bbox", "5.99,-0.01,6.01,0.01",
                "--png", str(tmp_path / "z.png"), check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr and not (tmp_path / "z.png").exists()


def cell_colour(img: np.ndarray, grid: dict, lon: float, lat: float) -> tuple[int, int, int]:
    """The colour at the centre of a tile's cell on the map."""
    i, j = int(np.floor(lon * 10)), int(np.floor(lat * 10))
    ppc, cpp = grid["pixels_per_cell"], grid["cells_per_pixel"]
    r = (grid["j1"] - 1 - j) * ppc // cpp + ppc // 2
    c = (i - grid["i0"]) * ppc // cpp + ppc // 2
    return tuple(int(v) for v in img[:, r, c])


def test_png_map_shows_tiles_where_they_are(s3, bucket_root, tmp_path):
    f = write_region(tmp_path / "u.geojson", [U])
    out = tmp_path / "map.png"
    res = cov(s3, "--dataset", "v1", "--region", str(f), "--png", str(out))
    assert res["png"] == str(out) and sorted(p.name for p in tmp_path.iterdir()) == ["map.png", "u.geojson"]
    with rasterio.open(out) as d:
        img = d.read()
    assert img.shape[0] == 3 and img.shape[1] > 50 and len(np.unique(img.reshape(3, -1), axis=1).T) >= 3  # not blank
    g = res["png_grid"]
    m = pd.read_parquet(manifest_path(bucket_root))
    years = {(round(a * 100), round(b * 100)): set(s["year"]) for (a, b), s in m.groupby(["lon", "lat"])}
    all_years = set(g["years"])
    for lon in (4.05, 4.15, 4.25):
        for lat in (88.05, 88.15, 88.25):
            touched = shapely.box(lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05).intersection(U).area > 0
            colour = cell_colour(img, g, lon, lat)
            if not touched:  # the notch's cell: not asked for, white (outline may pass nearby, not at the centre)
                assert colour == (255, 255, 255), (lon, lat, colour)
                continue
            have = years.get((round(lon * 100), round(lat * 100)), set()) & all_years
            want = ALL if have == all_years else SOME if have else ABSENT
            assert colour == want, (lon, lat, colour, want)
    assert (img.transpose(1, 2, 0) == np.array(OUTLINE, np.uint8)).all(axis=2).sum() > 20  # the outline is drawn
    p = run_cli("coverage", "--endpoint", s3.url, "--dataset", "v1", "--region", str(f), "--png", str(out), check=False)
    assert p.returncode == 1 and "--overwrite" in p.stderr  # an existing picture is not replaced unasked


def test_png_of_a_box_marks_missing_cells(s3, tmp_path):
    out = tmp_path / "b.png"
    res = cov(s3, "--dataset", "v1", "--bbox", "3.9,87.9,4.4,88.4", "--year", "2024", "--png", str(out))
    with rasterio.open(out) as d:
        img = d.read()
    g = res["png_grid"]
    assert cell_colour(img, g, 4.15, 88.15) == ALL  # a tile of the 3x3 block
    assert cell_colour(img, g, 3.95, 87.95) == ABSENT  # asked for, not in the manifest
    assert res["datasets"][0]["years"][0]["requested"] == 25

"""Pure unit tests: geometry against published tiles and upstream's pixel grid, ownership against
per-pixel projection, the valid-scale rule, datasets and layouts, gdal-config merging, npy headers,
manifest ETag revalidation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tessvrt.gdalconfig import READ_AHEAD, gdal_config
from tessvrt.grid import Tile, owner_cells, ownerships, tile_grids
from tessvrt.source import npy


def test_published_tile_geometry():
    g = tile_grids([Tile.at(0.05, 51.95)])[0]
    assert g.epsg == 32631 and (g.width, g.height) == (732, 1140)
    assert abs(g.corner_e - 293612.221) < 1e-3 and abs(g.corner_n - 5765288.255) < 1e-3
    # pixels on the 10 m grid snapped from the corner (floor east, ceil north), as upstream places them
    assert g.origin == (293610.0, 5765290.0) and g.transform.c == 293610.0 and g.transform.f == 5765290.0
    g = tile_grids([Tile.at(-99.95, 80.05)])[0]
    assert (g.width, g.height) == (211, 1119)
    assert tile_grids([Tile.at(10.05, -40.05)])[0].epsg == 32732


def test_upstream_zone17_pair_abuts():
    """Upstream's test_adjacent_tiles_abut_without_a_seam (geotessera issue #429): tiles (-79.35,-0.55) and
    (-79.25,-0.55) in zone 17 abut exactly. The second has corner fractions 5-10 m east and 0-5 m north,
    where placing by the nearest pixel centre to the unsnapped corner is one pixel off in x and y."""
    a, b = tile_grids([Tile.at(-79.35, -0.55), Tile.at(-79.25, -0.55)])
    assert a.epsg == b.epsg == 32717
    assert 5 < b.corner_e % 10 < 10 and 0 < b.corner_n % 10 < 5
    assert a.window.col0 + a.window.width == b.window.col0, "a seam or an overlap between the pair"
    assert a.window.row0 == b.window.row0
    # tile pixel (r, c): left edge floor(e0/10)*10 + 10c, top edge ceil(n0/10)*10 - 10r
    for g in (a, b):
        left, top = g.transform @ (3, 5)
        assert left == math.floor(g.corner_e / 10) * 10 + 30 and top == math.ceil(g.corner_n / 10) * 10 - 50
    # the old rule (nearest pixel centre to the unsnapped corner) put tile b one pixel east (a seam) and south
    assert -math.floor((5.0 - b.corner_e) / 10) == b.window.col0 + 1
    assert math.floor((b.corner_n - 5.0) / 10) == b.window.row0 - 1


def test_valid_scales_follow_upstream():
    from tessvrt import scales

    s = np.array([1.0, 1.5, 1e5, 0.9999999, 0.5, 1e-30, 0.0, -0.5, np.nan, np.inf, 3.4e38], np.float32)
    assert scales.valid(s).tolist() == [False, False, False, True, True, True, False, False, False, False, False]


def test_datasets_and_layouts():
    from tessvrt.errors import TessvrtError
    from tessvrt.source import datasets

    assert datasets.npy_dataset("v1").dataset.variant == "vultr" and datasets.npy_dataset("v1").note is None
    c = datasets.npy_dataset("v1.1")
    assert c.dataset.npy == "v1.1-cam" and "v1.1-cam" in c.note and "dclimate" in c.note
    assert datasets.npy_dataset("v2").dataset.npy == "v2-2B-L~beta2"
    with pytest.raises(TessvrtError, match="only as Zarr"):
        datasets.npy_dataset("v1.1-dclimate")
    with pytest.raises(TessvrtError, match="not a TESSERA dataset"):
        datasets.npy_dataset("v9")
    ds, t = datasets.npy_dataset("v1.1-cam").dataset, Tile.at(-0.05, 51.55)
    live = datasets.mirror(None)
    assert live.bucket == "us-west-2.opendata.source.coop"
    assert live.tile_keys(ds, 2024, t) == ("tessera/tessera/npy/v1.1-cam/2024/grid_-0.05_51.55/grid_-0.05_51.55.npy",
                                           "tessera/tessera/npy/v1.1-cam/2024/grid_-0.05_51.55/grid_-0.05_51.55_scales.npy")
    assert live.manifest_key(ds) == "tessera/tessera/npy/v1.1-cam/manifest.parquet"
    key = live.tile_keys(ds, 2024, t)[0]
    # the gateway's bucket names the same object; anything else does not
    assert live.same_object("s3://" + key, key) and live.same_object(f"s3://{live.bucket}/{key}", key)
    assert not live.same_object("s3://" + key.replace("2024", "2023"), key)
    assert not live.same_object("s3://tessera/" + key, key)
    assert not live.same_object("s3://evil/" + key, key)
    gw = datasets.mirror("gateway")
    assert gw.bucket == "tessera" and gw.tile_keys(ds, 2024, t)[0] == key.removeprefix("tessera/")
    legacy = datasets.mirror("legacy")
    assert legacy.tile_keys(datasets.npy_dataset("v1").dataset, 2024, t)[0] == \
        "v1/global_0.1_degree_representation/2024/grid_-0.05_51.55/grid_-0.05_51.55.npy"


@pytest.mark.parametrize("lon, lat", [(0.05, 51.95), (5.95, 84.05), (6.05, 84.05), (3.05, -84.95),
                                      (179.95, 88.05), (-0.15, 51.45), (2.95, 0.05), (-179.95, -0.05)])
def test_ownership_equals_per_pixel_projection(lon, lat):
    t = Tile.at(lon, lat)
    g = tile_grids([t])[0]
    own = ownerships([t], [g.window])[0]
    xs, ys = g.window.pixel_centres()
    X, Y = np.meshgrid(xs, ys)
    ci, cj = owner_cells(g.epsg, X, Y)
    ref = (ci == t.cell[0]) & (cj == t.cell[1])
    assert np.array_equal(own.mask(), ref)
    carved = np.ones_like(ref)
    for x, y, w, h in own.carve:
        carved[y:y + h, x:x + w] = False
    assert np.array_equal(carved, ref)
    assert 0.3 < ref.mean() <= 1.0


def test_ownership_batch_equals_per_pixel_projection():
    """Tracing many tiles in one call (one interpolation over all of them) changes nothing."""
    tiles = [Tile.at(lon, lat) for lon in (5.75, 5.85, 5.95) for lat in (-0.05, 0.05, 60.05)]
    tiles = [t for t in tiles if t.epsg == 32631]
    grids = tile_grids(tiles)
    for t, g, own in zip(tiles, grids, ownerships(tiles, [g.window for g in grids]), strict=True):
        xs, ys = g.window.pixel_centres()
        ci, cj = owner_cells(g.epsg, *np.meshgrid(xs, ys))
        assert np.array_equal(own.mask(), (ci == t.cell[0]) & (cj == t.cell[1])), t.name


def test_ownership_batches_equal_single_tiles():
    """More tiles than one tracing batch: tiles on both sides of a batch boundary match a lone trace."""
    from tessvrt import grid

    tiles = [Tile(i * 10 + 5, j * 10 + 5) for j in range(500, 505) for i in range(0, 60)][: grid._BATCH + 44]
    grids = tile_grids(tiles)
    owns = ownerships(tiles, [g.window for g in grids])
    assert len(owns) == len(tiles)
    for k in (0, grid._BATCH - 1, grid._BATCH, len(tiles) - 1):
        alone = ownerships([tiles[k]], [grids[k].window])[0]
        assert owns[k].window == alone.window
        for a, b in ((owns[k].cols, alone.cols), (owns[k].rows, alone.rows), (owns[k].carve, alone.carve)):
            assert np.array_equal(a, b), tiles[k].name


def test_tile_names_and_parsing():
    assert Tile.at(-0.05, 51.55).name == "grid_-0.05_51.55"
    assert Tile.containing(-0.2, 51.4) == Tile.at(-0.15, 51.45)
    with pytest.raises(ValueError):
        Tile.at(0.1, 51.55)


def test_npy_header_roundtrip():
    h = npy.build_header("|i1", (1140, 732, 128))
    assert len(h) == 128
    p = npy.parse_header(h)
    assert p.shape == (1140, 732, 128) and p.descr == "|i1" and p.data_offset == 128
    with pytest.raises(ValueError):
        npy.parse_header(b"PK\x03\x04 not npy")


def test_gdal_config_merges_and_is_idempotent(tmp_path):
    rc = tmp_path / "gdalrc"
    rc.write_text("[configoptions]\nGDAL_CACHEMAX=512\nCPL_VSIL_CURL_CHUNK_SIZE=1048576\n"
                  "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE=/data/raw/:/vsis3/mine/\n\n[credentials]\n\n[.mine]\n"
                  "path=/vsis3/mine\nAWS_PROFILE=me\n\n[directives]\nignore-env-vars=no\n")
    _, first = gdal_config(rc, endpoint="http://127.0.0.1:9999")
    _, second = gdal_config(rc, endpoint="http://127.0.0.1:9999")
    assert first == second == rc.read_text()
    for kept in ("GDAL_CACHEMAX=512", "[.mine]", "AWS_PROFILE=me", "ignore-env-vars=no"):
        assert kept in first
    # read-ahead defaults are added, but a value the user set wins
    assert first.count("CPL_VSIL_CURL_CHUNK_SIZE=") == 1 and "CPL_VSIL_CURL_CHUNK_SIZE=1048576" in first
    assert f"CPL_VSIL_CURL_CACHE_SIZE={READ_AHEAD['CPL_VSIL_CURL_CACHE_SIZE']}" in first
    # our npy prefix is added to the user's own allow-list, never ALL
    assert ("GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE=/data/raw/:/vsis3/mine/:"
            "/vsis3/us-west-2.opendata.source.coop/tessera/tessera/npy/") in first
    assert first.count("GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE") == 1 and "=ALL" not in first
    assert "path=/vsis3/us-west-2.opendata.source.coop" in first and "AWS_VIRTUAL_HOSTING=FALSE" in first
    assert "AWS_S3_ENDPOINT=127.0.0.1:9999" in first and "AWS_HTTPS=NO" in first
    _, third = gdal_config(rc)  # back to AWS: the local endpoint is gone, the bucket's regional endpoint is set
    assert "127.0.0.1" not in third and "AWS_S3_ENDPOINT=s3.us-west-2.amazonaws.com" in third
    assert "AWS_HTTPS=YES" in third and "AWS_REGION=us-west-2" in third and "GDAL_CACHEMAX=512" in third
    assert third.count("[.tessvrt_us_west_2_opendata_source_coop]") == 1
    _, fourth = gdal_config(rc, source="legacy", endpoint="http://127.0.0.1:9998")  # a second bucket beside it
    assert "[.tessvrt_us_west_2_opendata_source_coop]" in fourth and "[.tessvrt_tessera_embeddings]" in fourth
    assert ":/vsis3/tessera-embeddings/" in fourth


def test_gdal_config_keeps_file_properties(tmp_path, monkeypatch):
    """A symlink is followed, CRLF and permissions are kept, a read-only file is refused, and with
    GDAL_CONFIG_FILE set that file is the one written (it is the one GDAL reads)."""
    import os
    import stat

    from tessvrt.errors import TessvrtError

    real = tmp_path / "real.rc"
    real.write_bytes(b"[configoptions]\r\nGDAL_CACHEMAX=64\r\n")
    real.chmod(0o640)
    link = tmp_path / "link.rc"
    link.symlink_to(real)
    gdal_config(link)
    assert link.is_symlink() and b"\r\nGDAL_CACHEMAX=64\r\n" in real.read_bytes()
    assert b"\n" not in real.read_bytes().replace(b"\r\n", b"")
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    real.chmod(0o440)
    if os.geteuid() != 0:  # root may write anything: the check is os.access, which says so
        with pytest.raises(TessvrtError, match="read-only"):
            gdal_config(link)
    monkeypatch.setenv("GDAL_CONFIG_FILE", str(tmp_path / "env.rc"))
    path, _ = gdal_config()
    assert path == tmp_path / "env.rc" and path.is_file()


def test_manifest_cached_and_revalidated(s3, tmp_path, monkeypatch):
    from tessvrt.source import manifest
    from tessvrt.source.s3 import Endpoint

    monkeypatch.setenv("TESSVRT_CACHE_DIR", str(tmp_path))
    from tessvrt.source import datasets

    ep = Endpoint.parse(s3.url)
    src = manifest.ManifestSource.resolve(None, datasets.npy_dataset("v1").dataset, datasets.mirror(None), ep)
    calls = []
    real = manifest._get_s3

    def spy(endpoint, loc, etag):
        body, tag = real(endpoint, loc, etag)
        calls.append((etag, body is None))
        return body, tag

    monkeypatch.setattr(manifest, "_get_s3", spy)
    p1 = src.fetch()
    p2 = src.fetch()
    assert p1 == p2 and p1.is_file()
    assert calls[0] == (None, False)
    assert calls[1][0] and calls[1][1], "second fetch must send If-None-Match and get a 304 with no body"


def test_whole_object_check_catches_md5_and_length():
    import hashlib

    from tessvrt.source.s3 import check_whole_object

    body = b"manifest bytes"
    md5 = hashlib.md5(body).hexdigest()
    check_whole_object(body, {"ContentLength": len(body), "ETag": f'"{md5}"'}, "s3://b/k")
    check_whole_object(body, {"ETag": '"0123456789abcdef0123456789abcdef-3"'}, "s3://b/k")  # multipart: no MD5
    flipped = bytes([body[0] ^ 1]) + body[1:]
    with pytest.raises(OSError, match="MD5"):
        check_whole_object(flipped, {"ContentLength": len(body), "ETag": f'"{md5}"'}, "s3://b/k")
    with pytest.raises(OSError, match="short read"):
        check_whole_object(body[:-1], {"ContentLength": len(body)}, "s3://b/k")


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("bigtiff", ["NO", "YES"])
def test_cog_assembly_copies_tiles_exactly(tmp_path, monkeypatch, in_place, bigtiff):
    """bigtiff: the sources' format and the output's (forced; automatic above 4 GB)."""
    """coglayout puts GDAL-compressed tiles into COG order; GDAL reads back every pixel and level."""
    import rasterio

    from tessvrt.cog import layout as coglayout
    from tessvrt.cog.check import cog_validate

    if not in_place:
        monkeypatch.setattr(coglayout, "_insert_head", lambda path, length: False)
    w, h, nb = 1300, 900, 3
    a = np.random.default_rng(0).normal(size=(nb, h, w)).astype(np.float32)
    a[:, 100:200, 50:60] = np.nan
    opts = dict(driver="GTiff", count=nb, dtype="float32", crs="EPSG:32631", nodata=float("nan"), tiled=True,
                blockxsize=256, blockysize=256, compress="zstd", predictor=3, interleave="band", bigtiff=bigtiff)
    with rasterio.open(tmp_path / "main.tif", "w", width=w, height=h,
                       transform=rasterio.Affine(10, 0, 500000, 0, -10, 5e6), **opts) as o:
        o.write(a)
        o.set_band_description(1, "embedding_000")
        o.update_tags(TESSERA_YEAR="2024")
    levels = [a[:, f // 2::f, f // 2::f] for f in (2, 4, 8)]
    for f, ov in zip((2, 4, 8), levels, strict=True):
        with rasterio.open(tmp_path / f"ov{f}.tif", "w", width=ov.shape[2], height=ov.shape[1], **opts) as o:
            o.write(ov)
    out = tmp_path / "cog.tif"
    coglayout.assemble(out, coglayout.read_image(tmp_path / "main.tif"),
                       [coglayout.read_image(tmp_path / f"ov{f}.tif") for f in (2, 4, 8)], bigtiff=bigtiff == "YES")
    assert out.read_bytes()[2] == (43 if bigtiff == "YES" else 42)
    assert cog_validate(out) == []
    with rasterio.open(out) as o:
        assert np.array_equal(o.read(), a, equal_nan=True)
        assert o.descriptions[0] == "embedding_000" and o.tags()["TESSERA_YEAR"] == "2024"
        assert o.crs.to_epsg() == 32631 and o.transform.c == 500000 and np.isnan(o.nodata)
        assert len(o.overviews(1)) == 3
    for k, ov in enumerate(levels):
        with rasterio.open(out, overview_level=k) as o:
            assert np.array_equal(o.read(), ov, equal_nan=True)


def test_one_s3_client_under_parallel_first_use():
    """Parallel first requests share one botocore client (each used to build its own: ~2 s)."""
    from concurrent.futures import ThreadPoolExecutor

    from tessvrt.source import s3

    ep = s3.Endpoint.parse("http://127.0.0.1:9")
    s3._new_client.cache_clear()
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: s3.client(ep), range(8)))
    assert len({id(c) for c in clients}) == 1

"""build --dry-run of a Zarr VRT (the default dataset v1.1-dclimate has no npy tiles): figures from the store's
metadata alone, checked against the real build's record and against counts made here from the zone windows.

The store is the served sample's v1.1-dclimate (tessvrt.testing.build_zarr_sample, upstream's layout: 32x32 inner
chunks, 4096x4096 shards) uploaded to the session's S3 server; a FaultProxy in front of it (no faults) logs every
request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HERE, _cli_env, run_cli_many
from test_zarr import INSIDE, ZONES_BOX, store_rows
from test_zarr_vrt import zone_vrts

from tessvrt.errors import human_bytes
from tessvrt.testing import LIVE, FaultProxy, build_zarr_sample
from tessvrt.zarrsample import upload

zarr = pytest.importorskip("zarr")
STORE = "tessera/tessera/zarr/v1.1-dclimate"  # its key prefix in the bucket


@pytest.fixture(scope="module")
def store(s3, tmp_path_factory) -> Path:
    """The sample store written locally (the reference for the counts) and uploaded at its real key."""
    root = tmp_path_factory.mktemp("zdry")
    build_zarr_sample(root)
    upload(root / STORE, s3.put, f"s3://{LIVE.bucket}/{STORE}")
    return root / STORE


def cmd(verb: str, out: Path, bbox: str, endpoint: str, *args: str) -> list[str]:
    where = [str(out)] if verb == "materialise" else ["-o", str(out)]
    return [verb, *where, "--dataset", "v1.1-dclimate", "--bbox", bbox, "--year", "2024", "--endpoint", endpoint, *args]


def covered(store: Path, parts: list[tuple[int, int, int, int, int]]) -> tuple[int, int, int]:
    """(inner chunks, shards, shard index bytes) of embeddings and scales under the parts (zone, group row, col,
    height, width), counted pixel by pixel with zarr-python's view of the store (each clipped to its group)."""
    root = zarr.open_group(str(store), mode="r")
    chunks, shards, index = set(), set(), 0
    for zone, r, c, h, w in parts:
        for name in ("embeddings", "scales"):
            a = root[f"utm{zone:02d}"][name]
            (ch, cw), (sh, sw) = a.chunks[-2:], a.shards[-2:]
            rows = range(max(r, 0), min(r + h, a.shape[-2]))
            cols = range(max(c, 0), min(c + w, a.shape[-1]))
            chunks |= {(zone, name, y // ch, x // cw) for y in rows for x in cols}
            new = {(zone, name, y // sh, x // sw) for y in rows for x in cols} - shards
            shards |= new
            index += len(new) * (16 * (sh // ch) * (sw // cw) + 4)  # (offset, size) u8 per inner chunk + crc32c
    return len(chunks), len(shards), index


def metadata_only(log: list[tuple]) -> None:
    """Every request the proxy saw is a zarr.json or the tiny `time` coordinate (the years), never a shard
    index or chunk of embeddings or scales."""
    gets = [e for e in log if e[0] == "GET"]
    assert any(e[1].endswith("/zarr.json") for e in gets), log
    bad = [e for e in log if not (e[1].endswith("/zarr.json") or "/time/" in e[1])]
    assert not bad, bad


@pytest.mark.parametrize("bbox, n_parts", [(INSIDE, 1), (ZONES_BOX, 4)], ids=["one-zone", "cross-zone"])
def test_dry_run_figures_equal_the_real_build(store, s3, tmp_path, bbox, n_parts):
    """The dry run's pixels are the real build's zone windows; its chunk count bounds the references the build
    wrote and equals the count made here; its shards are those the build read the index of; it reads only
    metadata and writes nothing. ZONES_BOX has two zones each split at the equator: 2 parts per group."""
    dry, real = tmp_path / "dry", tmp_path / "real"
    dry.mkdir()
    real.mkdir()
    with FaultProxy(s3.url) as proxy:  # the real build goes straight to the server, the dry runs through the proxy
        text, js, b = run_cli_many([cmd("build", dry / "r.vrt", bbox, proxy.url, "--dry-run"),
                                    cmd("build", dry / "r.vrt", bbox, proxy.url, "--dry-run", "--json"),
                                    cmd("build", real / "r.vrt", bbox, s3.url)])
    metadata_only(proxy.log)
    assert list(dry.iterdir()) == []
    assert text.returncode == 0 and js.returncode == 0 and b.returncode == 0, text.stderr + js.stderr + b.stderr
    got = json.loads(js.stdout)
    rec = json.loads((real / "r.tessvrt" / "tessvrt.json").read_text())
    assert len(rec["zones"]) == n_parts == got["zones"] == got["outputs"]
    pixels = sum(z["window"]["width"] * z["window"]["height"] for z in rec["zones"])
    assert got["pixels"] == pixels and got["tiles"] is None and got["format"] == "zarr" and got["dry_run"] is True
    assert got["remote_bytes"] == pixels * 132 and got["remote_bytes_exact"] is False  # int8 x 128 + float32 scale
    assert got["float32_bytes"] == pixels * 128 * 4 and got["bands"] == 128
    chunks, shards, index = covered(store, [store_rows(v) for v in zone_vrts(real / "r.vrt")])
    build = got["build"]
    referenced = sum(g["chunks"] for g in rec["refs"].values())
    assert build["chunks"] == chunks >= referenced > 0, (build, rec["refs"])
    assert build["shards"] == shards == sum(g["shards"] for g in rec["refs"].values())
    assert build["index_bytes"] == index and build["refs_bytes"] == 80 * chunks and build["refused"] is None
    line = text.stdout.strip()
    assert len(text.stdout.strip().splitlines()) == 1 and text.stderr == "", text.stdout + text.stderr
    assert f"{pixels:,} pixels" in line and f"at most {chunks:,} inner chunks" in line and "no chunk" in line, line
    assert f"index of {shards:,} shard(s)" in line and f"~{human_bytes(pixels * 132)} of Zarr chunks (uncompressed size)" in line


def capped(runs: list[tuple[int, list[str]]], tmp: Path) -> list[subprocess.CompletedProcess]:
    """(cap, command line) pairs through the CLI's entry point (tests/cli_batch.py's run_one) in one process, each
    with zarrvrt.MAX_CHUNKS = cap: the sample store is far too small to reach the real 500,000."""
    driver = ("import json, sys; here, results = sys.argv[1:]; sys.path.insert(0, here); import tessvrt.zarrvrt as z\n"
              "from cli_batch import run_one\nout = []\nfor cap, argv in json.load(sys.stdin):\n    z.MAX_CHUNKS = cap\n"
              "    out.append(run_one(argv))  # sets sys.argv\nopen(results, 'w').write(json.dumps(out))")
    results = tmp / "capped.json"
    p = subprocess.run([sys.executable, "-c", driver, str(HERE), str(results)], input=json.dumps(runs),
                       capture_output=True, text=True, env=_cli_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    got = json.loads(results.read_text())
    results.unlink()
    return [subprocess.CompletedProcess(a, r["returncode"], r["stdout"], r["stderr"]) for (_, a), r in zip(runs, got, strict=True)]


def test_over_the_chunk_cap_the_dry_run_says_the_build_would_be_refused(store, s3, tmp_path):
    """Over MAX_CHUNKS the dry run still prints its figures (how big, to split it) and exits 1 with the real
    build's own refusal; at the cap exactly it passes. --overview and .gti.gpkg stay refused for Zarr VRTs, and a
    --crs the build would refuse is refused by the dry run too."""
    out, runs = tmp_path / "out" / "r.vrt", tmp_path / "runs"
    out.parent.mkdir()
    runs.mkdir()
    probe, ov, gti, crs = run_cli_many([cmd("build", out, ZONES_BOX, s3.url, "--dry-run", "--json"),
                                        cmd("build", out, ZONES_BOX, s3.url, "--dry-run", "--overview"),
                                        cmd("build", out.with_name("r.gti.gpkg"), ZONES_BOX, s3.url, "--dry-run"),
                                        cmd("build", out, ZONES_BOX, s3.url, "--dry-run", "--crs", "EPSG:32633")])
    for p in (ov, gti):
        assert p.returncode == 1 and "--overview and -o NAME.gti.gpkg are for npy VRTs" in p.stderr, p.stderr
    assert crs.returncode == 1 and "main grid is one of its zone parts'" in crs.stderr and not crs.stdout, crs.stderr
    n = json.loads(probe.stdout)["build"]["chunks"]
    text, js, real, at_cap = capped([(n - 1, cmd("build", out, ZONES_BOX, s3.url, "--dry-run")),
                                     (n - 1, cmd("build", out, ZONES_BOX, s3.url, "--dry-run", "--json")),
                                     (n - 1, cmd("build", out, ZONES_BOX, s3.url)),
                                     (n, cmd("build", out, ZONES_BOX, s3.url, "--dry-run", "--json"))], runs)
    assert real.returncode == 1 and len(real.stderr.strip().splitlines()) == 1, real.stderr
    refusal = real.stderr.strip().removeprefix("tessvrt: error: ")
    assert f"up to {n:,} inner chunks" in refusal and f"at most {n - 1:,} chunks" in refusal, refusal
    for p in (text, js):
        assert p.returncode == 1 and p.stderr.strip() == f"tessvrt: error: the build would be refused: {refusal}", p.stderr
    assert "WOULD BE REFUSED" in text.stdout and f"at most {n:,} inner chunks" in text.stdout
    assert json.loads(js.stdout)["build"] | {"refused": None} == json.loads(probe.stdout)["build"] | {"max_chunks": n - 1}
    assert json.loads(js.stdout)["build"]["refused"] == refusal
    assert at_cap.returncode == 0 and json.loads(at_cap.stdout)["build"]["refused"] is None, at_cap.stderr
    assert list(out.parent.iterdir()) == []


def test_materialise_dry_run_of_the_store(store, s3, tmp_path):
    """materialise --dry-run on the Zarr store: the same figures as build's dry run, one COG per zone part, tiles
    null, remote bytes not exact; with no output too (a real run still needs one); metadata only, nothing written."""
    bare = ["materialise", "--dataset", "v1.1-dclimate", "--bbox", ZONES_BOX, "--year", "2024", "--dry-run", "--json"]
    with FaultProxy(s3.url) as proxy:
        m, b, n, no = run_cli_many([cmd("materialise", tmp_path / "r.tif", ZONES_BOX, proxy.url, "--dry-run", "--json"),
                                    cmd("build", tmp_path / "r.vrt", ZONES_BOX, proxy.url, "--dry-run", "--json"),
                                    [*bare, "--endpoint", proxy.url], [*bare[:-2], "--endpoint", proxy.url]])
    metadata_only(proxy.log)
    assert m.returncode == 0 and b.returncode == 0 and n.returncode == 0, m.stderr + b.stderr + n.stderr
    got, built = json.loads(m.stdout), json.loads(b.stdout)
    assert got == {k: v for k, v in built.items() if k not in ("format", "build")} == json.loads(n.stdout)
    assert no.returncode == 1 and no.stderr.startswith("tessvrt: error: no VRT and no output given"), no.stderr
    assert got["tiles"] is None and got["outputs"] == got["zones"] == 4 and got["remote_bytes_exact"] is False
    assert list(tmp_path.iterdir()) == []


def test_union_of_chunk_ranges_counts_each_cell_once():
    """The dry run's count of chunks under several parts of one group (zarrvrt._union) against a set of cells."""
    import random

    from tessvrt.zarrvrt import _union

    rng = random.Random(22)
    for _ in range(500):
        rects = []
        for _ in range(rng.randint(0, 4)):
            y, x = rng.randint(0, 10), rng.randint(0, 10)
            rects.append((y, y + rng.randint(1, 6), x, x + rng.randint(1, 6)))
        assert _union(rects) == len({(y, x) for a, b, c, d in rects for y in range(a, b) for x in range(c, d)}), rects


def test_npy_build_dry_run_json_has_the_same_figures_as_its_line(s3, tmp_path):
    """build --json (added with the Zarr dry run) gives the npy dry run's figures too: the line's tiles, pixels and
    bytes, the full read's fields as materialise --dry-run names them; --json without --dry-run is one line."""
    from tessvrt.testing import SAMPLE_BBOX

    args = ["build", "-o", str(tmp_path / "n.vrt"), "--bbox", SAMPLE_BBOX, "--year", "2024", "--endpoint", s3.url]
    text, js, bare = run_cli_many([[*args, "--dry-run"], [*args, "--dry-run", "--json"], [*args, "--json"]])
    got = json.loads(js.stdout)
    assert got["format"] == "npy" and got["tiles"] == got["build"]["tiles"] == 9 and got["remote_bytes_exact"] is True
    line = text.stdout.strip()
    assert line.startswith(f"build: 9 tiles, writes ~{human_bytes(got['build']['sidecar_bytes'])} of VRTs"), line
    assert f"{got['pixels']:,} pixels x 128 bands" in line and f"reads ~{human_bytes(got['remote_bytes'])} of tiles" in line
    assert got["float32_bytes"] == got["pixels"] * 128 * 4
    assert bare.returncode == 1 and bare.stderr.strip() == ("tessvrt: error: --json prints the figures of --dry-run: "
                                                            "add --dry-run, or drop --json"), bare.stderr
    assert list(tmp_path.iterdir()) == []


def test_materialise_without_output_is_refused_unless_a_dry_run(tmp_path, monkeypatch):
    """The library's materialise(None, None, dataset=...) wrote a COG collection into ./None; now one line."""
    from tessvrt.errors import TessvrtError
    from tessvrt.materialise import materialise

    monkeypatch.chdir(tmp_path)
    with pytest.raises(TessvrtError, match="^no output given: name out.tif"):
        materialise(None, None, dataset="v1.1-dclimate", bbox=INSIDE, year=2024, endpoint="http://127.0.0.1:9")
    assert list(tmp_path.iterdir()) == []

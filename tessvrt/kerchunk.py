"""Kerchunk v1 JSON references over a zone group's sharded Zarr v3 arrays, so GDAL >= 3.11 reads them.

GDAL reads Zarr v3 sharding only from 3.13, but from 3.11 it reads Kerchunk references
(`/vsikerchunk_json_ref/`): a Zarr v2 view whose chunks are byte ranges of other objects. Each
*inner* chunk of a shard becomes one v2 chunk `[url, offset, length]` taken from the shard index
(one suffix GET per shard, the same cached and CRC-checked read as materialise's); an inner chunk the
index marks empty gets no reference. The v2 `.zarray` carries the codec chain read from the array's
own zarr.json (Blosc, Zstd or GZip after `bytes`), never an assumed one.

Two choices make the dequantised VRT equal materialise's output (issue 21):
- embeddings `fill_value` is null: a number there makes GDAL mask that value (0) as nodata;
- scales `fill_value` is NaN and a scales chunk whose embeddings chunk is absent gets no reference,
  so a pixel with valid scales but no embeddings reads NaN (materialise's `not_written`), never 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import product

from .errors import TessvrtError
from .source.s3 import Pool
from .source.zarr import EMPTY, Array
from .zarrstore import BANDS, ZoneGroup

# v3 Blosc shuffle names -> numcodecs' (Zarr v2) integers
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def compressor(arr: Array) -> dict | None:
    """The Zarr v2 compressor equal to an array's inner v3 codecs after `bytes` (None: uncompressed)."""
    codecs = arr._codecs  # noqa: SLF001 - the chain Array parsed from zarr.json
    where = arr.store.uri(arr.path)
    if any(c.get("name") == "crc32c" for c in codecs) or len(codecs) > 1:
        raise TessvrtError(f"{where}: chunk codecs {[c.get('name') for c in codecs]} have no Zarr v2 form GDAL reads "
                           "through Kerchunk; use `tessvrt materialise` for this store")
    if not codecs:
        return None
    c = codecs[0]
    cfg = c.get("configuration") or {}
    if c["name"] == "blosc":
        shuffle = cfg.get("shuffle", "noshuffle")
        return {"id": "blosc", "cname": cfg.get("cname", "lz4"), "clevel": int(cfg.get("clevel", 5)),
                "shuffle": _SHUFFLE.get(shuffle, shuffle) if isinstance(shuffle, str) else int(shuffle),
                "blocksize": int(cfg.get("blocksize", 0))}
    if c["name"] == "zstd":
        return {"id": "zstd", "level": int(cfg.get("level", 0))}
    return {"id": "gzip", "level": int(cfg.get("level", 5))}


def _zarray(arr: Array, fill: object) -> str:
    dt = arr._dt  # noqa: SLF001 - dtype with the byte order of the `bytes` codec
    return json.dumps({"zarr_format": 2, "shape": list(arr.shape), "chunks": list(arr.chunk), "dtype": dt.str,
                       "compressor": compressor(arr), "filters": None, "fill_value": fill, "order": "C",
                       "dimension_separator": "."})


@dataclass
class RefStats:
    """What the references cover: inner chunks referenced and their bytes, shards read for their index."""

    chunks: int = 0
    bytes: int = 0
    absent: int = 0  # inner chunks the region needs that the store does not hold
    indexed: set[str] = field(default_factory=set)  # shard objects whose index was read (or found absent)
    dropped_scales: int = 0  # scales chunks left out because their embeddings chunk is absent
    keys: dict[str, int] = field(default_factory=dict)  # object -> referenced bytes in it


def _chunk_refs(arr: Array, t: int, rows: slice, cols: slice, pool: Pool, url: Callable[[str], str],
                stats: RefStats) -> Iterator[tuple[tuple[int, ...], list | None]]:
    """(inner chunk coordinates, [url, offset, length] or None when absent) of every chunk under the window."""
    nd = len(arr.shape)
    ch = arr.chunk
    ry = range(rows.start // ch[-2], (rows.stop - 1) // ch[-2] + 1)
    rx = range(cols.start // ch[-1], (cols.stop - 1) // ch[-1] + 1)
    mid = [range(0, -(-arr.shape[d] // ch[d])) for d in range(1, nd - 2)]  # the band axis: one chunk upstream
    coords = [(t, *m, y, x) for y, x in product(ry, rx) for m in product(*mid)]
    per = arr.per_shard  # sharded: check_layout
    shards = sorted({tuple(v // p for v, p in zip(c, per, strict=True)) for c in coords})
    futs = {s: arr._index_future(s, pool) for s in shards}  # noqa: SLF001 - shared, cached, CRC-checked index reads
    stats.indexed |= {arr.key(sh) for sh in shards}
    for c in coords:
        s = tuple(v // p for v, p in zip(c, per, strict=True))
        got = futs[s].result()
        if got is None:
            yield c, None
            continue
        off, n = got[1][tuple(v % p for v, p in zip(c, per, strict=True))]
        if int(off) == EMPTY:
            yield c, None
            continue
        key = arr.key(s)
        stats.keys[key] = stats.keys.get(key, 0) + int(n)
        yield c, [url(key), int(off), int(n)]


def check_layout(group: ZoneGroup) -> None:
    """Refuse, from the arrays' zarr.json alone, a zone group whose references GDAL could not read as the VRT
    needs: unsharded arrays, codecs with no Zarr v2 form, embeddings and scales chunked differently in y/x."""
    emb, sc = group.embeddings, group.scales
    for arr in (emb, sc):
        if arr.inner is None:
            raise TessvrtError(f"{arr.store.uri(arr.path)} is not sharded; tessvrt's Zarr VRTs read upstream's sharded "
                               "stores (use `tessvrt materialise`)")
        compressor(arr)
    if emb.chunk[-2:] != sc.chunk[-2:] or emb.chunk[1] != BANDS:
        raise TessvrtError(f"{emb.store.uri(group.name)}: embeddings chunks {emb.chunk} and scales chunks {sc.chunk} "
                           "differ in y/x (or split the bands), so a VRT cannot tell absent embeddings from data; "
                           "use `tessvrt materialise` for this store")


def zone_refs(group: ZoneGroup, t: int, parts: list[tuple[slice, slice]], url: Callable[[str], str],
              pool: Pool) -> tuple[dict[str, dict], RefStats]:
    """Kerchunk v1 references for one zone group and year, one document per array ("embeddings", "scales"),
    the array at the document's root (GDAL then opens the JSON file itself, so a VRT can name it by a
    relative path: GDAL 3.12 does not resolve `ZARR:"path":/array` relative to the VRT): the chunks
    under each (rows, cols) part of the group's arrays."""
    emb, sc = group.embeddings, group.scales
    check_layout(group)
    stats = RefStats()
    er: dict[str, object] = {".zarray": _zarray(emb, None),
                             ".zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["time", "band", "y", "x"]})}
    sr: dict[str, object] = {".zarray": _zarray(sc, "NaN"), ".zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["time", "y", "x"]})}
    seen: set[tuple[int, ...]] = set()
    for rows, cols in parts:
        rows = slice(max(rows.start, 0), min(rows.stop, group.height))
        cols = slice(max(cols.start, 0), min(cols.stop, group.width))
        if rows.stop <= rows.start or cols.stop <= cols.start:
            continue
        have_emb = {}
        for c, ref in _chunk_refs(emb, t, rows, cols, pool, url, stats):
            if c in seen:
                continue
            seen.add(c)
            have_emb[(c[0], c[-2], c[-1])] = ref is not None
            if ref is None:
                stats.absent += 1
            else:
                er[".".join(map(str, c))] = ref
                stats.chunks += 1
                stats.bytes += ref[2]
        for c, ref in _chunk_refs(sc, t, rows, cols, pool, url, stats):
            if ref is None or c in seen:
                continue
            seen.add(c)
            if not have_emb.get(c, True):
                stats.dropped_scales += 1  # read as NaN: the embeddings are not written yet
                continue
            sr[".".join(map(str, c))] = ref
            stats.chunks += 1
            stats.bytes += ref[2]
    return {"embeddings": {"version": 1, "refs": er}, "scales": {"version": 1, "refs": sr}}, stats


def dumps(refs: dict) -> str:
    """The JSON text; GDAL wants `version` as the first key."""
    assert next(iter(refs)) == "version"
    return json.dumps(refs, separators=(",", ":"))

"""Zarr v3 arrays over S3, read as materialise reads npy tiles: ranged GETs of only what a window needs.

A sharded array (codec `sharding_indexed`) keeps many inner chunks in one object, with an index of
(offset, nbytes) per chunk at the object's end (or start). Reading a window costs the shard index
(one suffix-range GET per shard, cached and checked against its CRC32C) plus the inner chunks the
window touches, neighbours in the object coalesced into one request; never a whole shard. Chunks
are decoded with numcodecs (the Blosc/Zstd bindings zarr-python itself uses): this module owns the
HTTP side (our anonymous botocore client and checked, retried GETs from s3.py) and the layout
arithmetic, not the codecs. Shapes, codecs and key encodings come from each array's zarr.json.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from ..errors import MissingObject, TessvrtError
from .s3 import Endpoint, Pool, S3Location, check_whole_object, content_range, get_checked, suffix_range

EMPTY = 2**64 - 1  # shard index entry of a chunk never written: read as the fill value
COALESCE_GAP = 32 * 1024  # read two chunks in one request when at most this many bytes lie between them
MAX_REQUEST = 8 * 2**20  # bytes one coalesced request may span (keeps requests parallel and memory bounded)
INDEX_CACHE = 64  # shard indexes kept (256 KB each for upstream's 4096/32 layout)
MAX_PER_SHARD = 2**20  # inner chunks one shard may declare (a 16 MB index; upstream's layout has 16,384)
MAX_READ_CHUNKS = 2**16  # chunks one read may touch (checked before they are listed; materialise's reads touch ~1,000)
_BYTES_CODECS = ("blosc", "zstd", "gzip", "crc32c")
_FILL = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}


class ZarrError(ValueError):
    """A store object that is not what its metadata promises (corrupt index or chunk, bad metadata)."""


@dataclass
class Traffic:
    """Requests and body bytes a store has read (thread-safe): for results and benchmarks."""

    requests: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += n


@dataclass
class Store:
    """A Zarr store under an S3 key prefix, read anonymously through s3.py's client."""

    ep: Endpoint
    bucket: str
    prefix: str  # key prefix of the store, ending with "/"
    traffic: Traffic = field(default_factory=Traffic)

    def loc(self, path: str) -> S3Location:
        return S3Location(self.bucket, self.prefix + path)

    def uri(self, path: str = "") -> str:
        return self.loc(path).uri

    def metadata(self, path: str) -> dict | None:
        """The zarr.json of the node at path ("" for the root), or None when there is none (404)."""
        loc = self.loc(f"{path}/zarr.json" if path else "zarr.json")
        try:
            body, _ = get_checked(self.ep, loc, f"Zarr store {self.uri()}",
                                  lambda b, r: check_whole_object(b, r, loc.uri))
        except MissingObject as exc:
            if exc.status == 404:
                return None
            raise
        self.traffic.add(len(body))
        try:
            meta = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's parser goes
            raise TessvrtError(f"{loc.uri} is not JSON that tessvrt can read: not a Zarr v3 store") from None
        if not isinstance(meta, dict):
            raise TessvrtError(f"{loc.uri} is not Zarr v3 metadata (a JSON {type(meta).__name__}, not an object); "
                               "tessvrt reads Zarr v3 stores as upstream publishes them")
        if meta.get("zarr_format") != 3:
            raise TessvrtError(f"{loc.uri} is not Zarr v3 metadata (zarr_format {str(meta.get('zarr_format'))[:40]!r}); "
                               "tessvrt reads Zarr v3 stores as upstream publishes them")
        return meta

    def get(self, path: str, start: int | None = None, length: int | None = None,
            total: int | None = None, meter: Traffic | None = None) -> tuple[bytes, int] | None:
        """(bytes, object size) of a whole object, its bytes [start, start+length), or its last
        `length` bytes (start None); None when the object does not exist (404: not written yet).
        meter: also counted there (the reader's own traffic; the store's counts every reader's)."""
        loc = self.loc(path)
        size = [0]

        def check(body: bytes, resp: dict) -> None:
            rng = str(resp.get("ContentRange", ""))
            n = rng.rpartition("/")[2]
            size[0] = int(n) if n.isdigit() else int(resp.get("ContentLength", len(body)))
            if total is not None and size[0] != total:
                raise TessvrtError(f"{loc.uri} changed size ({total} -> {size[0]} bytes) while it was read; "
                                   "the store is being rewritten: try again later")
            whole = start is None and len(body) == size[0]  # a suffix longer than the object: all of it
            if length is not None and len(body) != length and not whole:
                raise OSError(f"short body ({len(body)} of {length} bytes)")

        def head(resp: dict) -> None:  # a reply that is not the range asked for is never used
            if length is not None and start is not None:
                content_range(resp, start, length, total, what, loc)
            elif length is not None:
                suffix_range(resp, length, loc)

        what = f"Zarr store {self.uri()}"
        params = {}
        if length is not None:
            params["Range"] = f"bytes=-{length}" if start is None else f"bytes={start}-{start + length - 1}"
        try:
            body, _ = get_checked(self.ep, loc, what, check, head=head, **params)
        except MissingObject as exc:
            if exc.status == 404:
                return None
            raise
        self.traffic.add(len(body))
        if meter is not None:
            meter.add(len(body))
        return body, size[0]


def _ints(values: object, what: str, least: int) -> tuple[int, ...]:
    """A list of whole numbers >= least from zarr.json (a 0 in a chunk shape divided by zero before)."""
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ZarrError(f"{what} {str(values)[:60]} is not a list of whole numbers")
    if any(v < least or v >= 2**53 for v in values):
        raise ZarrError(f"{what} {values} has a value below {least} or too large")
    return tuple(values)


def _fill(value: object, dtype: np.dtype) -> object:
    if isinstance(value, str):
        if value in _FILL and dtype.kind == "f":
            return _FILL[value]
        raise ZarrError(f"fill_value {value[:40]!r} is not supported for {dtype}")
    if dtype.kind == "c" and isinstance(value, list) and len(value) == 2:  # [real, imaginary]
        return dtype.type(complex(*(_fill(v, np.dtype("f8")) for v in value)))
    if not isinstance(value, int | float) or isinstance(value, bool) and dtype.kind != "b":
        raise ZarrError(f"fill_value {str(value)[:40]} is not a number")
    return dtype.type(value)


def _bytes_endian(codec: dict, dtype: np.dtype) -> np.dtype:
    endian = (codec.get("configuration") or {}).get("endian", "little")
    return dtype.newbyteorder("<" if endian == "little" else ">") if dtype.itemsize > 1 else dtype


def _chain(codecs: list, what: str) -> tuple[dict, list[dict]]:
    """(array->bytes codec, bytes->bytes codecs) of a codec list; ZarrError for what tessvrt cannot decode."""
    if not codecs or codecs[0].get("name") != "bytes":
        raise ZarrError(f"{what}: codecs {[c.get('name') for c in codecs]} are not supported "
                        "(tessvrt reads 'bytes' followed by blosc, zstd, gzip or crc32c)")
    rest = codecs[1:]
    bad = [c.get("name") for c in rest if c.get("name") not in _BYTES_CODECS]
    if bad:
        raise ZarrError(f"{what}: codec {bad[0]!r} is not supported (tessvrt reads blosc, zstd, gzip, crc32c)")
    return codecs[0], rest


def _crc32c(data: bytes) -> bytes:
    import google_crc32c

    return google_crc32c.value(data).to_bytes(4, "little")


def _unwrap(data: bytes, codecs: list[dict]) -> bytes:
    """Undo bytes->bytes codecs, last first."""
    for c in reversed(codecs):
        name = c["name"]
        if name == "crc32c":
            if len(data) < 4 or _crc32c(data[:-4]) != data[-4:]:
                raise ZarrError("CRC32C checksum mismatch")
            data = data[:-4]
        elif name == "blosc":
            from numcodecs import blosc

            data = blosc.decompress(data)
        elif name == "zstd":
            from numcodecs import Zstd

            data = bytes(Zstd().decode(data))
        else:
            from numcodecs import GZip

            data = bytes(GZip().decode(data))
    return data


class Array:
    """One Zarr v3 array of a store: its layout from zarr.json, and windows of it read over S3."""

    def __init__(self, store: Store, path: str, meta: dict):
        self.store, self.path = store, path
        what = store.uri(path)
        try:
            if meta.get("node_type") != "array":
                raise ZarrError("not an array")
            self.shape = _ints(meta["shape"], "shape", 0)
            if not isinstance(meta["data_type"], str):
                raise ZarrError(f"data_type {str(meta['data_type'])[:60]} is not supported")
            self.dtype = np.dtype(meta["data_type"])
            if self.dtype.kind not in "biufc":
                raise ZarrError(f"data_type {meta['data_type']!r} is not supported (tessvrt reads numeric arrays)")
            grid = meta["chunk_grid"]
            if grid.get("name") != "regular":
                raise ZarrError(f"chunk grid {grid.get('name')!r} is not supported")
            self.outer = _ints(grid["configuration"]["chunk_shape"], "chunk shape", 1)
            enc = meta.get("chunk_key_encoding") or {"name": "default"}
            default = enc.get("name") == "default"
            self._sep = (enc.get("configuration") or {}).get("separator", "/" if default else ".")
            self._prefix = "c" + self._sep if default else ""
            self.fill = _fill(meta.get("fill_value", 0), self.dtype)
            codecs = meta["codecs"]
            if codecs and codecs[0].get("name") == "sharding_indexed":
                if len(codecs) != 1:
                    raise ZarrError("codecs after sharding_indexed are not supported")
                cfg = codecs[0]["configuration"]
                self.inner = _ints(cfg["chunk_shape"], "inner chunk shape", 1)
                head, self._codecs = _chain(cfg["codecs"], what)
                ihead, self._icodecs = _chain(cfg.get("index_codecs") or [{"name": "bytes"}, {"name": "crc32c"}], what)
                if any(c["name"] != "crc32c" for c in self._icodecs):
                    raise ZarrError("shard index codecs other than bytes and crc32c are not supported")
                self._ity = _bytes_endian(ihead, np.dtype("u8"))
                self._at_end = cfg.get("index_location", "end") == "end"
                if len(self.inner) != len(self.outer) or any(o % i for o, i in zip(self.outer, self.inner, strict=True)):
                    raise ZarrError(f"shard shape {self.outer} is not a multiple of chunk shape {self.inner}")
                if math.prod(self.per_shard) > MAX_PER_SHARD:  # before any index is sized or chunk listed
                    raise ZarrError(f"inner chunk shape {self.inner} makes {math.prod(self.per_shard):,} chunks per "
                                    f"{self.outer} shard (at most {MAX_PER_SHARD:,} are read; upstream's layout has "
                                    "16,384): not a layout tessvrt reads")
            else:
                self.inner = None
                head, self._codecs = _chain(codecs, what)
            self._dt = _bytes_endian(head, self.dtype)
            if len(self.outer) != len(self.shape) or (self.inner and len(self.inner) != len(self.shape)):
                raise ZarrError("chunk shape and array shape differ in rank")
        except ZarrError as exc:  # before ValueError, its base
            raise TessvrtError(f"{what}/zarr.json: {exc}") from None
        except (KeyError, TypeError, IndexError, ValueError, AttributeError, OverflowError) as exc:
            detail = str(exc).strip()[:120] or type(exc).__name__
            raise TessvrtError(f"{what}/zarr.json: not readable Zarr v3 array metadata ({detail})") from None
        self._lock = threading.Lock()
        self._indexes: OrderedDict[tuple[int, ...], Future] = OrderedDict()

    @property
    def chunk(self) -> tuple[int, ...]:
        """The unit of reading: the inner chunk of a sharded array, else the chunk."""
        return self.inner or self.outer

    @property
    def per_shard(self) -> tuple[int, ...]:
        return tuple(o // i for o, i in zip(self.outer, self.chunk, strict=True))

    @property
    def index_nbytes(self) -> int:
        """Bytes of a shard's index: an offset and a size (u8 each) per inner chunk, then each index codec's checksum."""
        return 16 * math.prod(self.per_shard) + 4 * len(self._icodecs)

    def key(self, coords: Iterable[int]) -> str:
        """Object path of a chunk (or shard) from its grid coordinates, per the array's key encoding."""
        parts = self._sep.join(str(c) for c in coords) or "0"
        return f"{self.path}/{self._prefix}{parts}"

    def read(self, sel: tuple[slice, ...], pool: Pool | Executor,
             absent: list[tuple[slice, ...]] | None = None, meter: Traffic | None = None) -> np.ndarray:
        """The window sel (one slice per dimension, inside the array) as an array; fill where not written.

        Shard indexes first (cached), then the chunks the window touches, coalesced, in parallel on pool.
        With `absent` (a list), the parts of the window (as slices of the result) that no stored chunk
        holds are appended to it: absent shards, empty index entries, and chunks holding only the fill
        value (zarr-python leaves such chunks unwritten, so for the reader they are the same). A caller
        can then tell "the store has no bytes here" from data that happens to equal the fill value.
        meter: where this read's requests are counted too (a shard index is counted by the read that loads it).
        """
        starts = [s.start for s in sel]
        out = np.full([s.stop - s.start for s in sel], self.fill, self.dtype)
        if out.size == 0:
            return out
        ranges = [range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(sel, self.chunk, strict=True)]
        n = math.prod(len(r) for r in ranges)
        if n > MAX_READ_CHUNKS:  # counted before the chunks are listed: a 1x1x1x1 chunk made millions
            raise TessvrtError(f"{self.store.uri(self.path)}: chunk shape {self.chunk} makes {n:,} chunks for one "
                               f"{tuple(out.shape)} read (at most {MAX_READ_CHUNKS:,}): not a layout tessvrt reads")
        chunks = list(product(*ranges))

        def gone(c: tuple[int, ...]) -> None:
            if absent is not None:
                absent.append(self._window(starts, sel, c)[1])

        def paste(c: tuple[int, ...], arr: np.ndarray) -> None:
            if absent is not None and _all_fill(arr, self.fill):
                gone(c)
            self._paste(out, starts, sel, c, arr)

        if self.inner is None:  # one object per chunk
            futs = [pool.submit(self._whole_chunk, c, meter) for c in chunks]
            for c, f in zip(chunks, futs, strict=True):
                arr = f.result()
                if arr is None:
                    gone(c)
                else:
                    paste(c, arr)
            return out
        by_shard: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for c in chunks:
            by_shard.setdefault(tuple(v // p for v, p in zip(c, self.per_shard, strict=True)), []).append(c)
        idx = {s: self._index_future(s, pool, meter) for s in by_shard}
        futs = []
        for s, cs in by_shard.items():
            got = idx[s].result()
            if got is None:  # shard never written: all fill
                for c in cs:
                    gone(c)
                continue
            size, entries = got
            local = [(c, *entries[tuple(v % p for v, p in zip(c, self.per_shard, strict=True))]) for c in cs]
            for c, o, _ in local:
                if o == EMPTY:
                    gone(c)
            for group in coalesce([(c, int(o), int(n)) for c, o, n in local if o != EMPTY]):
                futs.append(pool.submit(self._chunks, s, size, group, meter))
        for f in futs:
            for c, arr in f.result():
                paste(c, arr)
        return out

    def _window(self, starts: list[int], sel: tuple[slice, ...], c: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """(slices of chunk c, slices of the result) where chunk c and the window sel overlap."""
        src, dst = [], []
        for v, size, s, st in zip(c, self.chunk, sel, starts, strict=True):
            lo, hi = max(v * size, s.start), min((v + 1) * size, s.stop)
            src.append(slice(lo - v * size, hi - v * size))
            dst.append(slice(lo - st, hi - st))
        return tuple(src), tuple(dst)

    def _paste(self, out: np.ndarray, starts: list[int], sel: tuple[slice, ...], c: tuple[int, ...],
               arr: np.ndarray) -> None:
        src, dst = self._window(starts, sel, c)
        out[dst] = arr[src]

    def _decode(self, data: bytes, where: str) -> np.ndarray:
        try:
            raw = _unwrap(data, self._codecs)
            n = math.prod(self.chunk) * self.dtype.itemsize
            if len(raw) != n:
                raise ZarrError(f"decodes to {len(raw)} bytes, not {n}")
            return np.frombuffer(raw, self._dt).reshape(self.chunk)
        except (ZarrError, ValueError, RuntimeError, TypeError) as exc:
            raise TessvrtError(f"{where}: corrupt chunk ({str(exc).strip() or type(exc).__name__}); "
                               "the store object is damaged: report it upstream") from None

    def _whole_chunk(self, c: tuple[int, ...], meter: Traffic | None = None) -> np.ndarray | None:
        key = self.key(c)
        got = self.store.get(key, meter=meter)
        return None if got is None else self._decode(got[0], self.store.uri(key))

    def _index_future(self, shard: tuple[int, ...], pool: Pool | Executor, meter: Traffic | None = None) -> Future:
        with self._lock:
            fut = self._indexes.get(shard)
            if fut is None or (fut.done() and fut.exception() is not None):
                fut = self._indexes[shard] = pool.submit(self._load_index, shard, meter)
            self._indexes.move_to_end(shard)
            while len(self._indexes) > INDEX_CACHE:
                self._indexes.popitem(last=False)
            return fut

    def index(self, shard: tuple[int, ...], pool: Pool | Executor) -> tuple[int, np.ndarray] | None:
        """(shard object size, (chunks per shard..., 2) offsets and sizes) or None for an absent shard."""
        return self._index_future(shard, pool).result()

    def _load_index(self, shard: tuple[int, ...], meter: Traffic | None = None) -> tuple[int, np.ndarray] | None:
        key = self.key(shard)
        nbytes = self.index_nbytes
        got = self.store.get(key, None if self._at_end else 0, nbytes, meter=meter)
        if got is None:
            return None
        body, size = got
        where = self.store.uri(key)
        try:
            if len(body) != nbytes or size < nbytes:
                raise ZarrError(f"the object is {size} bytes, smaller than its {nbytes}-byte index")
            raw = _unwrap(body, self._icodecs)
            entries = np.frombuffer(raw, self._ity).astype(np.uint64).reshape(*self.per_shard, 2)
            used = entries[..., 0] != EMPTY
            lo = 0 if self._at_end else nbytes
            hi = size - nbytes if self._at_end else size
            off, ln = entries[..., 0][used], entries[..., 1][used]
            if used.any() and (off.min() < lo or (off + ln).max() > hi):
                raise ZarrError("an entry points outside the object")
        except ZarrError as exc:
            raise TessvrtError(f"{where}: corrupt shard index ({exc}); the store object is damaged: "
                               "report it upstream") from None
        return size, entries

    def _chunks(self, shard: tuple[int, ...], size: int, group: list[tuple[tuple[int, ...], int, int]],
                meter: Traffic | None = None) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """One ranged GET of neighbouring chunks of a shard, decoded."""
        key = self.key(shard)
        start = group[0][1]
        end = max(o + n for _, o, n in group)
        got = self.store.get(key, start, end - start, total=size, meter=meter)
        where = self.store.uri(key)
        if got is None:
            raise TessvrtError(f"{where} disappeared while it was read; the store is being rewritten: try again later")
        body = got[0]
        return [(c, self._decode(body[o - start:o - start + n], f"{where} (chunk {c})")) for c, o, n in group]


def _all_fill(arr: np.ndarray, fill: object) -> bool:
    """Whether a decoded chunk holds only the fill value (NaN fill: only NaN)."""
    if isinstance(fill, float) and math.isnan(fill):
        return bool(np.isnan(arr).all())
    return not bool((arr != fill).any())


def coalesce(chunks: list[tuple[tuple[int, ...], int, int]], gap: int = COALESCE_GAP,
             limit: int = MAX_REQUEST) -> list[list[tuple[tuple[int, ...], int, int]]]:
    """Chunks (coords, offset, nbytes) grouped into runs that one ranged GET each can read.

    Sorted by offset; a chunk joins the run when it starts at most `gap` bytes after the run's end
    and the run stays within `limit` bytes.
    """
    out: list[list[tuple[tuple[int, ...], int, int]]] = []
    end = start = -1
    for ch in sorted(chunks, key=lambda t: t[1]):
        _, o, n = ch
        if out and o - end <= gap and max(end, o + n) - start <= limit:
            out[-1].append(ch)
            end = max(end, o + n)
        else:
            out.append([ch])
            start, end = o, o + n
    return out


__all__ = ["Store", "Array", "Traffic", "coalesce", "EMPTY"]

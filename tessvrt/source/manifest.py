"""The manifest: where it comes from, its local cache, its schema, and row selection."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MissingObject, TessvrtError
from .datasets import Dataset, Mirror
from .s3 import Endpoint, GaveUp, NotModified, S3Location, announced, check_whole_object, get_checked, get_url, masked, notice, public_url

# geotessera itself needs only lat, lon, year and grid_size; the others are used when present
REQUIRED = {"year": "integer", "lon": "floating", "lat": "floating", "grid_size": "integer"}
OPTIONAL = {"version": "string", "variant": "string", "grid_path": "string", "scales_path": "string",
            "scales_size": "integer"}


def cache_dir() -> Path:
    """User cache directory (TESSVRT_CACHE_DIR, else $XDG_CACHE_HOME/tessvrt)."""
    if os.environ.get("TESSVRT_CACHE_DIR"):
        return Path(os.environ["TESSVRT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tessvrt"


@dataclass(frozen=True)
class ManifestSource:
    """A manifest to read: an S3 object, an http(s) URL or a local file."""

    location: str  # s3://..., https://..., or a local path; may hold a signature or password: store `public`
    endpoint: Endpoint

    @classmethod
    def resolve(cls, manifest: str | None, dataset: Dataset, mirror: Mirror, endpoint: Endpoint) -> ManifestSource:
        """--manifest if given, else the dataset's manifest in the mirror."""
        if manifest is None:
            return cls(f"s3://{mirror.bucket}/{mirror.manifest_key(dataset)}", endpoint)
        if _is_url(manifest):
            _check_url(manifest)
        return cls(manifest, endpoint)

    @property
    def public(self) -> str:
        """The location as outputs and the cache may hold it: no user-info, query string or fragment
        (presigned URLs carry signatures and tokens there). Says once on stderr when something was removed."""
        clean, stripped = public_url(self.location)
        if stripped:
            notice(f"--manifest: the user name, password or query string of the URL is not stored; {clean} is "
                   "recorded instead")
        return clean

    def fetch(self) -> Path:
        """A local copy, downloaded once and revalidated by ETag (a 304 costs no body).

        The cache is written atomically (data, then metadata naming the data's SHA-256), and a copy
        whose metadata is missing, unreadable or names other data is no copy: a crash or a full
        disk never leaves a cache that breaks later builds. A cache that cannot be written is said
        once, and the build goes on with a temporary copy.
        """
        loc = self.location
        if not _is_url(loc):
            p = Path(loc)
            if not p.is_file():
                raise TessvrtError(f"manifest {loc} does not exist; pass an existing file or URL to --manifest")
            return p
        key = f"{self.endpoint.url or self.endpoint.region}|{loc}"
        slot = cache_dir() / "manifests" / f"{abs(hash_str(key)):016x}"
        data, meta = slot.with_suffix(".parquet"), slot.with_suffix(".json")
        etag = _cached_etag(data, meta)
        public = self.public
        where = "" if loc.startswith(("http://", "https://")) else f" from {self.endpoint.https_base}"
        try:
            with announced(f"fetching the manifest {public}{where}{' (revalidating the cached copy)' if etag else ''}"):
                body, new_etag = (_get_s3(self.endpoint, S3Location.parse(loc), etag) if loc.startswith("s3://")
                                  else _get_http(loc, etag))
        except GaveUp as exc:  # the network gave up: a copy already here is still good to use
            if etag is None:
                raise
            notice(f"using the cached manifest: {exc}")
            return data
        if body is None:  # 304 Not Modified
            return data
        return _store(body, new_etag, data, meta, public)


def _is_url(loc: str) -> bool:
    return loc.startswith(("s3://", "http://", "https://"))


def _check_url(url: str) -> None:
    """A --manifest URL that cannot be read as one is one line, before any work."""
    bad = f"--manifest {masked(url)!r} is not a valid URL; pass s3://bucket/key, http(s)://host/path or a file"
    try:
        clean, _ = public_url(url)
        if url.startswith("s3://"):
            S3Location.parse(clean)
        elif not urlsplit_host(url):
            raise ValueError(url)
    except ValueError:
        raise TessvrtError(bad) from None


def urlsplit_host(url: str) -> str | None:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    u.port  # noqa: B018 - raises ValueError on a port that is not a number
    return u.hostname


def hash_str(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big")


def _cached_etag(data: Path, meta: Path) -> str | None:
    """The ETag of a cached copy whose metadata is readable and names exactly this data; else None (no copy)."""
    try:
        m = json.loads(meta.read_text())
        if not isinstance(m, dict) or not isinstance(m.get("etag"), str) or not m["etag"]:
            return None
        if hashlib.sha256(data.read_bytes()).hexdigest() != m.get("sha256"):
            return None
        return m["etag"]
    except (OSError, ValueError):
        return None


def _store(body: bytes, etag: str, data: Path, meta: Path, source: str) -> Path:
    """Cache a downloaded manifest: data, then metadata, each by temporary + rename. A crash between
    the two leaves metadata naming other data, which reads as no copy. Returns where the body is."""
    try:
        data.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(data, body)
        _write_atomic(meta, json.dumps({"etag": etag, "sha256": hashlib.sha256(body).hexdigest(),
                                        "source": source}).encode())
        return data
    except OSError as exc:
        notice(f"cannot cache the manifest in {data.parent} ({exc.strerror or exc}); going on without a cache "
               "(set TESSVRT_CACHE_DIR to a writable folder with free space)")
        return _uncached(body, data.parent, exc)


def _write_atomic(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _uncached(body: bytes, cache: Path, why: OSError) -> Path:
    """The manifest in a temporary file removed at exit (the cache could not hold it)."""
    fd, tmp = -1, ""
    try:
        fd, tmp = tempfile.mkstemp(prefix="tessvrt-manifest-", suffix=".parquet")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise TessvrtError(f"cannot store the manifest: not in the cache {cache} ({why.strerror or why}) nor in "
                           f"{tempfile.gettempdir()} ({exc.strerror or exc}); free disk space or set "
                           "TESSVRT_CACHE_DIR") from None
    atexit.register(Path(tmp).unlink, missing_ok=True)
    return Path(tmp)


def _get_s3(endpoint: Endpoint, loc: S3Location, etag: str | None) -> tuple[bytes | None, str]:
    """The whole manifest (checksum-verified, retried), or None when the cached copy's ETag still matches."""
    kw = {"IfNoneMatch": etag} if etag else {}
    try:
        body, resp = get_checked(endpoint, loc, "manifest", lambda b, r: check_whole_object(b, r, loc.uri),
                                 ChecksumMode="ENABLED", **kw)
    except NotModified:
        return None, etag or ""
    except MissingObject as exc:
        if exc.status == 403:
            raise TessvrtError(f"manifest {loc.uri} is forbidden (403); check --endpoint") from None
        raise TessvrtError(f"manifest {loc.uri} not found; check --dataset or --manifest") from None
    return body, resp.get("ETag", "")


def _get_http(url: str, etag: str | None) -> tuple[bytes | None, str]:
    try:
        return get_url(url, "manifest", etag)
    except MissingObject as exc:
        raise TessvrtError(f"{exc}; check --manifest") from None


def read_manifest(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read and validate a manifest file; wrong schema is a clear error, not a KeyError later.

    columns: read only those of them the file has (a continent's path strings are most of its memory).
    """
    try:
        if columns is not None:
            names = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in names]
        table = pq.read_table(path, columns=columns, use_threads=columns is None)  # a few columns: 16 MB less peak
    except (pa.ArrowInvalid, OSError) as exc:
        raise TessvrtError(f"manifest {path} is not a readable parquet file ({exc}); pass a TESSERA manifest.parquet") from None
    df = table.to_pandas()
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise TessvrtError(f"manifest {path} lacks column(s) {', '.join(missing)}; pass a TESSERA manifest.parquet")
    for col, kind in {**REQUIRED, **{k: v for k, v in OPTIONAL.items() if k in df.columns}}.items():
        inferred = pd.api.types.infer_dtype(df[col], skipna=True)
        ok = {
            "string": inferred in ("string", "empty"),
            "integer": inferred in ("integer", "empty"),
            "floating": inferred in ("floating", "integer", "mixed-integer-float", "empty"),
        }[kind]
        if not ok:
            raise TessvrtError(f"manifest {path}: column {col!r} holds {inferred}, expected {kind}")
    return df


@dataclass(frozen=True)
class Selection:
    dataset: Dataset
    year: int
    rows: pd.DataFrame  # one row per tile, indexed by (lon_i, lat_i)


def select(df: pd.DataFrame, dataset: Dataset, year: int) -> Selection:
    """The rows of one dataset and year: never mixed across versions or variants.

    Each npy directory has its own manifest; its version and variant columns, when present, must
    name the dataset (a variant spelled differently is accepted only when it is the only one).
    """
    if "version" in df.columns:
        have = sorted(str(v) for v in df["version"].dropna().unique())
        df = df[df["version"] == dataset.version]
        if df.empty:
            raise TessvrtError(f"the manifest has no rows of TESSERA v{dataset.version} for {dataset.label} "
                               f"(it holds versions {', '.join(have) or 'none'}); check --dataset or --manifest")
    if "variant" in df.columns:
        variants = sorted(str(v) for v in df["variant"].dropna().unique())
        if dataset.variant in variants:
            df = df[df["variant"] == dataset.variant]
        elif len(variants) > 1:
            raise TessvrtError(f"the manifest mixes variants {', '.join(variants)} and none is {dataset.variant!r} "
                               f"({dataset.label}); check --dataset or --manifest")
    rows = df[df["year"] == year].copy()
    bad = ~(np.isfinite(rows["lon"].astype(float)) & np.isfinite(rows["lat"].astype(float)))
    if bad.any():
        raise TessvrtError(f"manifest row {rows.index[bad][0]} has no valid lon/lat ({rows['lon'][bad].iloc[0]}, "
                           f"{rows['lat'][bad].iloc[0]}); fix the manifest")
    if rows.empty:
        years = ", ".join(str(y) for y in sorted(df["year"].unique())) or "none"
        raise TessvrtError(f"no tiles for year {year} in {dataset.label} (years: {years}); choose --year")
    rows["lon_i"] = (rows["lon"] * 100).round().astype("int64")
    rows["lat_i"] = (rows["lat"] * 100).round().astype("int64")
    off = (rows["lon_i"] % 10 != 5) | (rows["lat_i"] % 10 != 5) | (rows["lon_i"].abs() > 18000) | (rows["lat_i"].abs() > 9000)
    if off.any():
        r = rows[off].iloc[0]
        raise TessvrtError(f"manifest lists {r['lon']},{r['lat']}, which is not a tile centre (odd multiples of 0.05); "
                           "fix the manifest")
    dup = rows.duplicated(["lon_i", "lat_i"])
    if dup.any():
        r = rows[dup].iloc[0]
        raise TessvrtError(f"manifest lists tile {r['lon']:.2f},{r['lat']:.2f} twice for {dataset.name} {year}; "
                           "fix the manifest")
    return Selection(dataset, int(year), rows.set_index(["lon_i", "lat_i"], drop=False))

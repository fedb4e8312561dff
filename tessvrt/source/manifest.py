"""The manifest: where it comes from, its local cache, its schema, and row selection."""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MissingObject, TessvrtError
from .datasets import Dataset, Mirror
from .s3 import Endpoint, S3Location, check_whole_object, get_checked

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

    location: str  # s3://..., https://..., or a local path
    endpoint: Endpoint

    @classmethod
    def resolve(cls, manifest: str | None, dataset: Dataset, mirror: Mirror, endpoint: Endpoint) -> ManifestSource:
        """--manifest if given, else the dataset's manifest in the mirror."""
        if manifest is None:
            return cls(f"s3://{mirror.bucket}/{mirror.manifest_key(dataset)}", endpoint)
        return cls(manifest, endpoint)

    def fetch(self) -> Path:
        """A local copy, downloaded once and revalidated by ETag (a 304 costs no body)."""
        loc = self.location
        if not (loc.startswith("s3://") or loc.startswith("http://") or loc.startswith("https://")):
            p = Path(loc)
            if not p.is_file():
                raise TessvrtError(f"manifest {loc} does not exist; pass an existing file or URL to --manifest")
            return p
        key = f"{self.endpoint.url or self.endpoint.region}|{loc}"
        slot = cache_dir() / "manifests" / f"{abs(hash_str(key)):016x}"
        data, meta = slot.with_suffix(".parquet"), slot.with_suffix(".json")
        etag = json.loads(meta.read_text())["etag"] if meta.is_file() and data.is_file() else None
        try:
            body, new_etag = (
                _get_s3(self.endpoint, S3Location.parse(loc), etag)
                if loc.startswith("s3://")
                else _get_http(loc, etag)
            )
        except TessvrtError:
            raise
        except Exception as exc:  # network trouble: an existing copy is still good to use
            if etag is not None:
                return data
            raise TessvrtError(f"cannot download manifest {loc}: {exc}; check --endpoint/--manifest") from None
        if body is None:  # 304 Not Modified
            return data
        data.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data.parent, delete=False) as tmp:
            tmp.write(body)
        os.replace(tmp.name, data)
        meta.write_text(json.dumps({"etag": new_etag, "source": loc}))
        return data


def hash_str(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big")


def _get_s3(endpoint: Endpoint, loc: S3Location, etag: str | None) -> tuple[bytes | None, str]:
    """The whole manifest (checksum-verified, retried), or None when the cached copy's ETag still matches."""
    from botocore.exceptions import ClientError

    kw = {"IfNoneMatch": etag} if etag else {}
    try:
        body, resp = get_checked(endpoint, loc, "manifest", lambda b, r: check_whole_object(b, r, loc.uri), attempts=8,
                                 ChecksumMode="ENABLED", **kw)
    except ClientError:  # 304 Not Modified
        return None, etag or ""
    except MissingObject as exc:
        if exc.status == 403:
            raise TessvrtError(f"manifest {loc.uri} is forbidden (403); check --endpoint") from None
        raise TessvrtError(f"manifest {loc.uri} not found; check --dataset or --manifest") from None
    return body, resp.get("ETag", "")


def _get_http(url: str, etag: str | None) -> tuple[bytes | None, str]:
    req = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read(), resp.headers.get("ETag", "")
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None, etag or ""
        raise TessvrtError(f"manifest {url} answered HTTP {exc.code}; check --manifest") from None


def read_manifest(path: Path) -> pd.DataFrame:
    """Read and validate a manifest file; wrong schema is a clear error, not a KeyError later."""
    try:
        table = pq.read_table(path)
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

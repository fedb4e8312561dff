"""Where a collection is written: a folder (local or shared) or an S3 prefix.

Both keep the same relative layout and the same commit point: a piece becomes visible by one
atomic step (a rename in a folder, CompleteMultipartUpload on S3) and its checksum record is
written after it, so a record always describes a whole piece. Workers write through the target
themselves: it pickles to a value (path or bucket/prefix/endpoint) and opens clients where used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from ..errors import TessvrtError
from ..publish import TMP_MARK

PART = 64 * 2**20  # multipart upload part size (S3 allows 10,000 parts: pieces up to 640 GB)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FolderTarget:
    root: Path

    def __str__(self) -> str:
        return str(self.root)

    def scratch(self, rel: str) -> tuple[Path, Path]:
        """(temporary base, finished file) for a piece: beside its final place, so commit is a rename."""
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        base = final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}{TMP_MARK}")
        return base, base.with_name(base.name + ".done.tif")

    def commit(self, rel: str, done: Path, sha256: str) -> None:
        os.replace(done, self.root / rel)

    def size_and_sha(self, rel: str, known_sha: str | None) -> tuple[int, str] | None:
        """(bytes, sha256 of the bytes now there) of a piece, or None when absent (verified by reading it)."""
        p = self.root / rel
        if not p.is_file():
            return None
        return p.stat().st_size, sha256_file(p)

    def read_json(self, rel: str) -> dict | None:
        p = self.root / rel
        try:
            v = json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return v if isinstance(v, dict) else {}

    def write_text(self, rel: str, text: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}{TMP_MARK}")
        tmp.write_text(text)
        os.replace(tmp, p)

    def write_file(self, rel: str, make: Callable[[str], None]) -> None:
        """A file another library writes (make(path)), published by one rename."""
        p = self.root / rel
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}{TMP_MARK}{p.suffix}")
        try:
            make(str(tmp))
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def clean_temporaries(self, folders: list[str]) -> None:
        """Temporaries of runs that died (a killed worker's half piece): only names with tessvrt's mark."""
        for f in folders:
            d = self.root / f
            if d.is_dir():
                for p in d.glob(f".*{TMP_MARK}*"):
                    p.unlink(missing_ok=True)


@dataclass(frozen=True)
class S3Target:
    """s3://bucket/prefix/, written with the credentials botocore finds (environment, profile, role)."""

    bucket: str
    prefix: str  # "" or ending with "/"
    endpoint: str | None = None  # None: AWS
    region: str | None = None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, rel: str) -> str:
        return self.prefix + rel

    def scratch(self, rel: str) -> tuple[Path, Path]:
        d = Path(tempfile.mkdtemp(prefix="tessvrt-piece-"))
        base = d / f".{Path(rel).name}{TMP_MARK}"
        return base, base.with_name(base.name + ".done.tif")

    def commit(self, rel: str, done: Path, sha256: str) -> None:
        c, key = _client(self.endpoint, self.region), self._key(rel)
        try:
            up = c.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata={"sha256": sha256},
                                           ContentType="image/tiff")
            parts = []
            try:
                with open(done, "rb") as f:
                    n = 1
                    while data := f.read(PART):
                        r = c.upload_part(Bucket=self.bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data)
                        parts.append({"ETag": r["ETag"], "PartNumber": n})
                        n += 1
                c.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up["UploadId"],
                                            MultipartUpload={"Parts": parts})
            except BaseException:
                c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up["UploadId"])
                raise
        except _client_errors() as exc:
            raise TessvrtError(f"uploading {self}{rel} failed ({exc}); check the output bucket and your "
                               "credentials, then run again (complete pieces are kept)") from None
        finally:
            shutil.rmtree(done.parent, ignore_errors=True)

    def size_and_sha(self, rel: str, known_sha: str | None) -> tuple[int, str] | None:
        """(bytes, sha256) of a piece from its object metadata (the upload stored it: S3 has no sha256 of its own)."""
        try:
            h = _client(self.endpoint, self.region).head_object(Bucket=self.bucket, Key=self._key(rel))
        except _client_errors() as exc:
            if _status(exc) in (404, 403):
                return None
            raise TessvrtError(f"reading {self}{rel} failed ({exc}); check the output bucket") from None
        return int(h["ContentLength"]), str((h.get("Metadata") or {}).get("sha256", ""))

    def read_json(self, rel: str) -> dict | None:
        try:
            body = _client(self.endpoint, self.region).get_object(Bucket=self.bucket, Key=self._key(rel))["Body"].read()
        except _client_errors() as exc:
            if _status(exc) in (404, 403):
                return None
            raise TessvrtError(f"reading {self}{rel} failed ({exc}); check the output bucket") from None
        try:
            v = json.loads(body)
        except ValueError:
            return {}
        return v if isinstance(v, dict) else {}

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def write_file(self, rel: str, make: Callable[[str], None]) -> None:
        d = Path(tempfile.mkdtemp(prefix="tessvrt-index-"))
        try:
            make(str(d / Path(rel).name))
            self.write_bytes(rel, (d / Path(rel).name).read_bytes())
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        try:
            _client(self.endpoint, self.region).put_object(Bucket=self.bucket, Key=self._key(rel), Body=data)
        except _client_errors() as exc:
            raise TessvrtError(f"writing {self}{rel} failed ({exc}); check the output bucket and your credentials") from None

    def remove(self, rel: str) -> None:
        _client(self.endpoint, self.region).delete_object(Bucket=self.bucket, Key=self._key(rel))

    def is_empty(self) -> bool:
        try:
            got = _client(self.endpoint, self.region).list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except _client_errors() as exc:
            raise TessvrtError(f"cannot list {self} ({exc}); check the output bucket and your credentials") from None
        return not got.get("KeyCount", len(got.get("Contents", [])))

    def clean_temporaries(self, folders: list[str]) -> None:
        """Uploads a dead worker never completed are invisible; abort them so they cost nothing."""
        c = _client(self.endpoint, self.region)
        try:
            ups = c.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix).get("Uploads", [])
        except _client_errors():
            return
        for u in ups:
            c.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])


def _client_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, OSError)


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


@lru_cache(maxsize=4)
def _client(endpoint: str | None, region: str | None):  # noqa: ANN202 - botocore client type is dynamic
    import botocore.session
    from botocore.config import Config

    from ..source.s3 import CONNECT_TIMEOUT, READ_TIMEOUT

    cfg = Config(s3={"addressing_style": "path"}, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT * 6,
                 retries={"total_max_attempts": 5, "mode": "standard"})
    return botocore.session.get_session().create_client("s3", region_name=region or "us-west-2",
                                                        endpoint_url=endpoint, config=cfg)


def parse_target(output: str | os.PathLike, endpoint: str | None = None) -> FolderTarget | S3Target:
    """A folder path, or s3://bucket/prefix/ (the collection's root)."""
    text = str(output)
    if text.startswith("s3://"):
        u = urlparse(text)
        if not u.netloc:
            raise TessvrtError(f"{text}: not an s3://bucket/prefix/ URL; write e.g. s3://my-bucket/france-2024/")
        prefix = u.path.lstrip("/")
        return S3Target(u.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/", endpoint)
    return FolderTarget(Path(text))

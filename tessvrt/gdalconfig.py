"""tessvrt gdal-config: the GDAL configuration file that lets plain GDAL tools read the bucket.

GDAL >= 3.5 reads ~/.gdal/gdalrc (or $GDAL_CONFIG_FILE) at start-up: [configoptions] hold
global options, [credentials] subsections hold options for one path prefix only.  We own
exactly one line in [configoptions] and one [.tessvrt_<bucket>] subsection, and leave every
other line of the file alone, so running the command twice changes nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import TessvrtError
from .s3 import DEFAULT_BUCKET, Endpoint

ALLOWED_SOURCE = "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE"


def default_path() -> Path:
    return Path(os.path.expanduser("~")) / ".gdal" / "gdalrc"


# /vsicurl read-ahead, global in GDAL (these are not path-specific options). Raw bands read a
# .npy row by row; larger chunks serve several rows per request, and a cache that holds a whole
# render stops each band re-downloading the rows the previous band fetched. Measured with
# scripts/bench_remote_reads.py (docs/performance.md).
READ_AHEAD: dict[str, str] = {
    "CPL_VSIL_CURL_CHUNK_SIZE": str(256 * 1024),
    "CPL_VSIL_CURL_CACHE_SIZE": str(1024 * 1024 * 1024),  # RAM, filled only as data is read
}


def config_options(bucket: str) -> dict[str, str]:
    """Options we own: GDAL >= 3.12 needs remote raw bands allowed, limited to the bucket prefix."""
    return {ALLOWED_SOURCE: f"/vsis3/{bucket}/"}


def credentials(endpoint: Endpoint, bucket: str) -> dict[str, str]:
    return {"path": f"/vsis3/{bucket}", **endpoint.gdal_options}


def render(endpoint: Endpoint, bucket: str = DEFAULT_BUCKET, existing: str = "", read_ahead: bool = True) -> str:
    """The merged file text: our keys replaced or added, everything else kept in order.

    Read-ahead options are added only where the file does not set them already: a user's own
    value wins, and a second run changes nothing.
    """
    lines = existing.splitlines()
    opts = config_options(bucket)
    sub = f"[.tessvrt_{bucket.replace('-', '_')}]"
    creds = [sub, *(f"{k}={v}" for k, v in credentials(endpoint, bucket).items())]

    def is_header(s: str) -> bool:
        return s.strip().startswith("[") and s.strip().endswith("]")

    # drop our previous subsection (header up to the next header)
    out: list[str] = []
    skipping = False
    for ln in lines:
        if is_header(ln):
            skipping = ln.strip() == sub
        if not skipping:
            out.append(ln)
    lines = out
    # replace our keys inside [configoptions]
    section = None
    out = []
    present = set()
    for ln in lines:
        if is_header(ln):
            section = ln.strip() if not ln.strip().startswith("[.") else section
        key = ln.split("=", 1)[0].strip()
        if section == "[configoptions]" and "=" in ln:
            if key in opts:
                continue
            present.add(key)
        out.append(ln)
    lines = out
    if read_ahead:
        opts.update((k, v) for k, v in READ_AHEAD.items() if k not in present)
    ours = [f"{k}={v}" for k, v in opts.items()]
    if "[configoptions]" in (s.strip() for s in lines):
        i = [s.strip() for s in lines].index("[configoptions]")
        lines[i + 1 : i + 1] = ours
    else:
        lines[0:0] = ["[configoptions]", *ours, ""]
    if "[credentials]" in (s.strip() for s in lines):
        i = [s.strip() for s in lines].index("[credentials]")
        lines[i + 1 : i + 1] = ["", *creds]
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines += ["[credentials]", "", *creds]
    # collapse runs of blank lines our edits may leave
    text: list[str] = []
    for ln in lines:
        if not ln.strip() and text and not text[-1].strip():
            continue
        text.append(ln)
    return "\n".join(text).strip("\n") + "\n"


def gdal_config(
    config_file: str | os.PathLike | None = None,
    endpoint: str | None = None,
    bucket: str = DEFAULT_BUCKET,
    print_only: bool = False,
    read_ahead: bool = True,
) -> tuple[Path, str]:
    """Write (or only render) the merged GDAL configuration; returns its path and text."""
    path = Path(config_file) if config_file else default_path()
    ep = Endpoint.parse(endpoint)
    try:
        existing = path.read_text() if path.is_file() else ""
    except OSError as exc:
        raise TessvrtError(f"cannot read {path}: {exc.strerror}; choose --config-file") from None
    text = render(ep, bucket, existing, read_ahead)
    if print_only:
        return path, text
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".gdalrc.") as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    except OSError as exc:
        raise TessvrtError(f"cannot write {path}: {exc.strerror}; choose --config-file") from None
    return path, text

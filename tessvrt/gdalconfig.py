"""tessvrt gdal-config: the GDAL configuration file that lets plain GDAL tools read the bucket.

GDAL >= 3.5 reads ~/.gdal/gdalrc (or $GDAL_CONFIG_FILE) at start-up: [configoptions] hold
global options, [credentials] subsections hold options for one path prefix only.  We own one
[.tessvrt_<bucket>] subsection per bucket and one entry in the raw-band allow-list (added to the
user's own list), and leave every other line of the file alone, so running the command twice
changes nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import TessvrtError
from .source.datasets import Mirror, mirror
from .source.s3 import Endpoint

ALLOWED_SOURCE = "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE"


def default_path() -> Path:
    """The file GDAL reads: $GDAL_CONFIG_FILE when set, else ~/.gdal/gdalrc."""
    if os.environ.get("GDAL_CONFIG_FILE"):
        return Path(os.environ["GDAL_CONFIG_FILE"])
    return Path(os.path.expanduser("~")) / ".gdal" / "gdalrc"


# /vsicurl read-ahead, global in GDAL (these are not path-specific options). Raw bands read a
# .npy row by row; larger chunks serve several rows per request, and a cache that holds a whole
# render stops each band re-downloading the rows the previous band fetched. Measured with
# scripts/bench_remote_reads.py (docs/performance.md). Zarr VRTs (Kerchunk, GDAL >= 3.11) need the
# same two: GDAL reads a 128-band inner chunk once per band, so without the cache every band refetches
# it (scripts/bench_zarr_vrt.py: a 128-band read costs the 3-band read's requests with these settings).
READ_AHEAD: dict[str, str] = {
    "CPL_VSIL_CURL_CHUNK_SIZE": str(256 * 1024),
    "CPL_VSIL_CURL_CACHE_SIZE": str(1024 * 1024 * 1024),  # RAM, filled only as data is read
}


def allowed_prefix(m: Mirror) -> str:
    """GDAL >= 3.12 refuses remote raw bands unless allowed: only the mirror's npy prefix, never ALL."""
    return f"/vsis3/{m.bucket}/{m.npy_prefix()}"


def credentials(endpoint: Endpoint, bucket: str) -> dict[str, str]:
    return {"path": f"/vsis3/{bucket}", **endpoint.gdal_options}


def _merge_allowed(value: str | None, prefix: str) -> str:
    """The user's allow-list with our prefix added; ALL / ONLY_REMOTE already allow it and are kept."""
    if value is not None and value.strip().upper() in ("ALL", "ONLY_REMOTE"):
        return value.strip()
    items = [v for v in (value or "").strip().split(":") if v]
    return ":".join(items if prefix in items else [*items, prefix])


NOTE = "# tessvrt gdal-config: "  # comment lines saying what a run replaced (the CLI repeats them on stderr)


def render(endpoint: Endpoint, m: Mirror, existing: str = "", read_ahead: bool = True) -> str:
    """The merged file text: our subsection replaced, our prefix added to the allow-list, the rest kept in order.

    Read-ahead options are added where the file does not set them; a user's own value is kept when it
    is at least ours and otherwise replaced, with a NOTE line saying so (a small cache made a cross-zone
    80x80 read take 573 s instead of 2.4 s). A second run changes nothing.
    """
    lines = [ln for ln in existing.splitlines() if not ln.startswith(NOTE)]  # last run's notes
    sub = f"[.tessvrt_{m.bucket.replace('-', '_').replace('.', '_')}]"
    creds = [sub, *(f"{k}={v}" for k, v in credentials(endpoint, m.bucket).items())]

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
    # take the allow-list out of [configoptions] (it goes back merged), note which keys are set
    section = None
    out = []
    present: dict[str, str] = {}
    allowed: str | None = None
    for ln in lines:
        if is_header(ln):
            section = ln.strip() if not ln.strip().startswith("[.") else section
        key = ln.split("=", 1)[0].strip()
        if section == "[configoptions]" and "=" in ln and not ln.lstrip().startswith(("#", ";")):
            if key == ALLOWED_SOURCE:
                allowed = ln.split("=", 1)[1]
                continue
            present[key] = ln.split("=", 1)[1].strip()
            if read_ahead and key in READ_AHEAD and not _at_least(present[key], READ_AHEAD[key]):
                continue  # too small: replaced below
        out.append(ln)
    lines = out
    opts = {ALLOWED_SOURCE: _merge_allowed(allowed, allowed_prefix(m))}
    notes: list[str] = []
    if read_ahead:
        for k, v in READ_AHEAD.items():
            if k in present and not _at_least(present[k], v):
                notes.append(f"{NOTE}{k} was {present[k]}, less than tessvrt's VRT reads need: raised to {v}")
            if k not in present or not _at_least(present[k], v):
                opts[k] = v
    ours = [*notes, *(f"{k}={v}" for k, v in opts.items())]
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


def _at_least(value: str, ours: str) -> bool:
    try:
        return int(value) >= int(ours)
    except ValueError:
        return False  # GDAL would not read it as a size either


def gdal_config(
    config_file: str | os.PathLike | None = None,
    endpoint: str | None = None,
    source: str | None = None,
    print_only: bool = False,
    read_ahead: bool = True,
) -> tuple[Path, str]:
    """Write (or only render) the merged GDAL configuration; returns its path and text.

    A symlinked file is edited where it points; its permissions and line endings are kept; a
    read-only file is refused rather than replaced.
    """
    path = Path(config_file) if config_file else default_path()
    m = mirror(source)
    ep = Endpoint.parse(endpoint or m.endpoint)
    try:
        target = path.resolve(strict=False) if path.is_symlink() else path
    except (RuntimeError, OSError):  # a symlink loop: RuntimeError before Python 3.13, OSError (ELOOP) after
        named = "" if config_file else " (GDAL_CONFIG_FILE names it)" if os.environ.get("GDAL_CONFIG_FILE") else ""
        raise TessvrtError(f"{path}{named} is a symbolic link that loops back on itself; remove or repoint it, or "
                           "choose --config-file") from None
    try:
        existing = target.read_bytes().decode() if target.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise TessvrtError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}; choose --config-file") from None
    newline = "\r\n" if "\r\n" in existing else "\n"
    text = render(ep, m, existing, read_ahead)
    if print_only:
        return path, text
    if target.exists() and not os.access(target, os.W_OK):
        raise TessvrtError(f"{path} is read-only; make it writable or choose --config-file")
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=target.parent, delete=False, prefix=f".{target.name}.") as f:
            tmp = Path(f.name)
            f.write(text.replace("\n", newline).encode())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise TessvrtError(f"cannot write {path}: {exc.strerror}; choose --config-file") from None
    return path, text

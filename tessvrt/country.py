"""--country: Natural Earth admin-0 boundaries, the file upstream geotessera 0.11 uses for its --country.

The file (1:110 m scale, Natural Earth v5.1.2 from its GitHub release, about 840 KB) is downloaded once,
checked against a pinned SHA-256 and cached under TESSVRT_CACHE_DIR/countries/. A country is found by
its English name (NAME_EN), long name (NAME_LONG), ISO 3166 alpha-3 or alpha-2 code; Natural Earth writes
-99 where a code is disputed or missing (France and Norway have ISO_A3 -99), so the `_EH` columns fill in.

TESSVRT_COUNTRIES names another copy in the same schema: a local file (read in place) or an http(s) URL,
which then needs TESSVRT_COUNTRIES_SHA256 (tests serve a small hand-made copy this way).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import TessvrtError

if TYPE_CHECKING:
    from shapely import Geometry

URL = "https://raw.githubusercontent.com/nvkelso/natural-earth-vector/v5.1.2/geojson/ne_110m_admin_0_countries.geojson"
SHA256 = "6866c877d39cba9c357620878839b336d569f8c662d3cfab4cb1dbe2d39c977f"
ENV_FILE, ENV_SHA = "TESSVRT_COUNTRIES", "TESSVRT_COUNTRIES_SHA256"
NAME_FIELDS = ("NAME_EN", "NAME_LONG", "ADMIN", "NAME")
CODE_FIELDS = ("ISO_A3", "ISO_A2", "ISO_A3_EH", "ISO_A2_EH", "ADM0_A3")


def boundaries() -> Path:
    """The boundaries file: the override, or the pinned download (cached; fetched on first use, all or none)."""
    from .source.manifest import cache_dir

    where = os.environ.get(ENV_FILE) or URL
    if not where.startswith(("http://", "https://")):
        p = Path(where)
        if not p.is_file():
            raise TessvrtError(f"{ENV_FILE}={where}: no such file; unset it or name a Natural Earth admin-0 file")
        return p
    want = SHA256 if where == URL else os.environ.get(ENV_SHA, "").strip().lower()
    if not want:
        raise TessvrtError(f"{ENV_FILE} is a URL: set {ENV_SHA} to its SHA-256 too, so the download can be checked")
    cached = cache_dir() / "countries" / f"{want}.geojson"
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == want:
        return cached
    return _download(where, want, cached)


def _download(url: str, want: str, cached: Path) -> Path:
    from .source.manifest import _write_atomic
    from .source.s3 import GaveUp, announced, get_url

    try:
        with announced(f"fetching country boundaries {url}"):
            body, _ = get_url(url, "country boundaries")
    except GaveUp as exc:
        raise TessvrtError(f"--country needs the Natural Earth boundaries once and there is no cached copy in "
                           f"{cached.parent} ({exc}); run it once with internet access, or give the area as "
                           "--region FILE") from None
    except TessvrtError as exc:
        raise TessvrtError(f"--country: {exc}") from None
    got = hashlib.sha256(body or b"").hexdigest()
    if got != want:
        raise TessvrtError(f"--country: {url} sent a file whose SHA-256 is {got[:12]}..., not the pinned {want[:12]}...; "
                           "nothing was cached: try again later")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(cached, body or b"")
    except OSError as exc:
        raise TessvrtError(f"cannot cache the country boundaries in {cached.parent} ({exc.strerror or exc}); "
                           "set TESSVRT_CACHE_DIR to a writable folder") from None
    return cached


def _table(path: Path) -> tuple[list[dict[str, str]], list]:
    """(attributes per country, geometries) of the boundaries file."""
    import pyogrio
    import shapely

    try:
        meta, _, wkb, fields = pyogrio.raw.read(path)
    except Exception as exc:  # noqa: BLE001 - a damaged override file: one line
        raise TessvrtError(f"cannot read the country boundaries {path} ({str(exc).splitlines()[0][:120]})") from None
    names = list(meta["fields"])
    rows = [{n: ("" if fields[k][i] is None else str(fields[k][i]).strip()) for k, n in enumerate(names)}
            for i in range(len(wkb))]
    return rows, list(shapely.from_wkb(wkb))


def lookup(rows: list[dict[str, str]]) -> dict[str, int]:
    """Lower-case names and codes -> row; a code of -99 (Natural Earth's "none") is not a code."""
    out: dict[str, int] = {}
    for i, r in enumerate(rows):
        for f in CODE_FIELDS + NAME_FIELDS:
            v = r.get(f, "")
            if v and v != "-99":
                out.setdefault(v.lower(), i)
    return out


def country_shape(text: str) -> tuple[Geometry, str]:
    """(the country's polygons in EPSG:4326, its English name) for a name or an ISO code, any case."""
    import shapely

    from .region import _polygonal

    query = text.strip().lower()
    if not query:
        raise TessvrtError("--country is empty; give a country name or ISO code, e.g. --country France or --country FRA")
    rows, geoms = _table(boundaries())
    table = lookup(rows)
    if query not in table:
        names = sorted({r.get("NAME_EN") or r.get("ADMIN") or r.get("NAME", "") for r in rows} - {""})
        near = difflib.get_close_matches(query, [n.lower() for n in names], n=3, cutoff=0.6)
        near_names = [n for q in near for n in names if n.lower() == q]
        hint = f"did you mean {' or '.join(near_names)}?" if near_names else "give an English name or an ISO code"
        raise TessvrtError(f"--country {text!r} is not a Natural Earth admin-0 country name or ISO code; {hint}")
    i = table[query]
    shape = _polygonal(shapely.make_valid(geoms[i]))
    if shape.is_empty:
        raise TessvrtError(f"--country {text!r}: its boundary in the file has no polygon")
    r = rows[i]
    return shape, r.get("NAME_EN") or r.get("ADMIN") or r.get("NAME") or text

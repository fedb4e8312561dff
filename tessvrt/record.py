"""The build record (sidecar tessvrt.json): the contract between build and materialise/info.

materialise trusts the record for byte offsets and windows, so a record or VRT edited by hand
into something else must be refused before any byte is fetched or written: a wrong offset
would dequantise the wrong bytes into a file that looks fine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import TessvrtError
from .grid import PIXEL, Tile, Window
from .source.datasets import DATASETS, MIRRORS
from .source.s3 import S3Location
from .vrt import BANDS

SIDECAR_SUFFIX = ".tessvrt"
RECORD = "tessvrt.json"
# Which pixel grid the record's tiles are placed on. "snapped-10m": upstream's (geotessera 0.11,
# issue #429), pixels on the 10 m grid snapped from the tile corner. Records without it were placed
# at the unsnapped corner (tessvrt < 0.2): about 75% of their tiles lie 10 m off upstream's.
PIXEL_GRID = "snapped-10m"


class _Bad(ValueError):
    """One thing wrong with the record or VRT, worded for the user."""


def read_record(vrt_path: str | Path) -> dict:
    """The checked build record of a tessvrt VRT (main or per-zone).

    The sidecar is the folder the VRT's own sources point into, so a VRT renamed or copied together
    with its folder still works; the folder named after the VRT is only the fallback (damaged XML).
    """
    p = Path(vrt_path)
    if not p.is_file():
        raise TessvrtError(f"{p} does not exist; pass a VRT written by tessvrt build")
    from .blockindex import check_index, is_gti
    from .blockindex import stem as name_stem

    gti = is_gti(p)
    stem = name_stem(p) if gti or p.name.lower().endswith(".vrt") else p.name
    referenced = [] if gti else _referenced_sidecars(p)
    candidates = [p.with_name(name) for name in referenced]
    candidates.append(p.with_name(stem + SIDECAR_SUFFIX))
    if "_utm" in stem:  # a per-zone VRT shares the main VRT's folder
        candidates.append(p.with_name(stem.rsplit("_utm", 1)[0] + SIDECAR_SUFFIX))
    for folder in dict.fromkeys(candidates):
        path = folder / RECORD
        if not path.is_file():
            continue
        try:
            rec = json.loads(path.read_text())
        except ValueError as exc:
            raise TessvrtError(f"{path} is corrupt ({exc}); rebuild with tessvrt build") from None
        if isinstance(rec, dict) and rec.get("format") == "zarr":  # a Zarr VRT: no tiles, references instead
            from .zarrvrt import check_record as check_zarr

            check_zarr(rec, path)
            return rec
        if isinstance(rec, dict) and "tiles" in rec and rec.get("pixel_grid") != PIXEL_GRID:
            raise TessvrtError(f"{p} was built by an older tessvrt ({rec.get('tessvrt', '?')}) on a pixel grid 10 m off "
                               "upstream's; rebuild it with tessvrt build")
        try:
            check_record(rec)
        except _Bad as exc:
            raise TessvrtError(f"{path} is corrupt ({exc}); rebuild with tessvrt build") from None
        try:
            if gti:
                _need(rec.get("index") == "gti", f"{folder.name}/ holds a VRT build, not a GTI one")
                problem = check_index(p, rec, folder.name)
                _need(problem is None, str(problem))
            else:
                check_vrt(p, rec, folder.name)
        except _Bad as exc:
            raise TessvrtError(f"{p} does not match its build record ({exc}): it was edited after tessvrt build; "
                               "rebuild it with tessvrt build") from None
        return rec
    if referenced:
        name = referenced[0]
        raise TessvrtError(f"{p} reads its pixels from {name}/, which is not beside it in {p.resolve().parent}: "
                           f"move or copy {name}/ together with the VRT, or rebuild with tessvrt build")
    raise TessvrtError(f"{p} is not a tessvrt VRT (no {candidates[0].name}/{RECORD} beside it); rebuild with tessvrt build")


def _referenced_sidecars(p: Path) -> list[str]:
    """The *.tessvrt folders the VRT's relative sources point into, in order ([] if it is not XML)."""
    from lxml import etree

    try:
        root = etree.parse(str(p), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except (etree.XMLSyntaxError, OSError):
        return []
    names: list[str] = []
    for el in root.iter("SourceFilename"):
        first = (el.text or "").strip().split("/", 1)[0]
        if el.get("relativeToVRT") == "1" and first.endswith(SIDECAR_SUFFIX) and first not in ("", ".", "..") \
                and first not in names:
            names.append(first)
    return names


def check_record(rec: object) -> None:
    """Types, ranges and byte arithmetic of every field materialise relies on."""
    _need(isinstance(rec, dict), "not a JSON object")
    assert isinstance(rec, dict)
    for key, typ in (("dataset", str), ("dataset_version", str), ("variant", str), ("year", int), ("manifest", str),
                     ("main", dict), ("zones", list), ("tiles", list), ("missing", list)):
        _need(isinstance(rec.get(key), typ), f"'{key}' is missing or not a {typ.__name__}")
    _window(rec["main"].get("window"), "main window")
    _need(bool(rec["zones"]), "no zones")
    for z in rec["zones"]:
        _need(isinstance(z, dict) and _is_int(z.get("epsg")) and isinstance(z.get("vrt"), str), f"bad zone {z!r}")
        _window(z.get("window"), f"zone {z.get('epsg')} window")
    names, buckets = set(), set()
    _need(bool(rec["tiles"]), "no tiles")
    for t in rec["tiles"]:
        _need(isinstance(t, dict) and isinstance(t.get("name"), str), f"bad tile entry {str(t)[:60]!r}")
        name = t["name"]
        _need(name not in names, f"tile {name} is listed twice")
        names.add(name)
        for key in ("epsg", "width", "height", "grid_offset", "scales_offset", "scale_bands", "grid_size", "scales_size"):
            _need(_is_int(t.get(key)), f"tile {name}: '{key}' is missing or not an integer")
        for key in ("lon", "lat"):
            _need(_is_num(t.get(key)), f"tile {name}: '{key}' is missing or not a number")
        for key in ("origin", "corner"):
            _need(isinstance(t.get(key), list) and len(t[key]) == 2 and all(map(_is_num, t[key])),
                  f"tile {name}: '{key}' is not two numbers")
        snapped = [PIXEL * math.floor(t["corner"][0] / PIXEL), PIXEL * math.ceil(t["corner"][1] / PIXEL)]
        _need(t["origin"] == snapped, f"tile {name}: origin {t['origin']} is not its corner snapped to the 10 m grid")
        _need(t["width"] > 0 and t["height"] > 0, f"tile {name}: size {t['width']}x{t['height']}")
        _need(t["scale_bands"] in (1, BANDS), f"tile {name}: scale_bands {t['scale_bands']} (1 or {BANDS})")
        _need(t["grid_offset"] >= 10 and t["scales_offset"] >= 10, f"tile {name}: byte offsets inside the npy magic")
        pixels = t["width"] * t["height"]
        _need(t["grid_size"] == t["grid_offset"] + pixels * BANDS,
              f"tile {name}: grid_size {t['grid_size']} != offset + {t['width']}x{t['height']}x{BANDS} bytes")
        _need(t["scales_size"] == t["scales_offset"] + pixels * 4 * t["scale_bands"],
              f"tile {name}: scales_size {t['scales_size']} != offset + float32 scales")
        for key in ("grid", "scales"):
            try:
                buckets.add(S3Location.parse(str(t.get(key))).bucket)
            except ValueError as exc:
                raise _Bad(f"tile {name}: {exc}") from None
    _need(len(buckets) == 1, f"tiles point into several buckets ({', '.join(sorted(buckets))})")
    _need(rec.get("endpoint") is None or (isinstance(rec["endpoint"], str) and _safe_host(rec["endpoint"])),
          f"endpoint {rec.get('endpoint')!r} is not a public http(s) S3 endpoint")
    _need(rec.get("source") in MIRRORS, f"source {rec.get('source')!r} is not one of {', '.join(MIRRORS)}")
    dataset = next((d for d in DATASETS if d.npy and d.npy == rec["dataset"]), None)
    _need(dataset is not None, f"dataset {rec['dataset']!r} has no npy tiles")
    mirror = MIRRORS[rec["source"]]
    for t in rec["tiles"]:  # every object is the one upstream names for this dataset, year and tile
        keys = mirror.tile_keys(dataset, rec["year"], Tile(round(t["lon"] * 100), round(t["lat"] * 100)))
        want = tuple(S3Location(mirror.bucket, k).uri for k in keys)
        _need((t["grid"], t["scales"]) == want, f"tile {t['name']}: objects {t['grid']}, {t['scales']} are not {want[0]}")
    zones = {z["epsg"] for z in rec["zones"]}
    _need(all(t["epsg"] in zones for t in rec["tiles"]), "a tile's zone has no zone entry")


def check_vrt(vrt_path: Path, rec: dict, sidecar: str) -> None:
    """The VRT's size, georeferencing, bands and sources are the ones build wrote for the record."""
    from lxml import etree

    try:
        root = etree.parse(str(vrt_path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except etree.XMLSyntaxError as exc:
        raise _Bad(f"not valid XML: {exc}") from None
    _need(root.tag == "VRTDataset", f"root element is <{root.tag}>, not <VRTDataset>")
    # which zone by what it reads, not by its name (it may be renamed): a zone's mosaic, else the main one
    refs = {(el.text or "").strip() for el in root.iter("SourceFilename")}
    zone = next((z for z in rec["zones"] if f"{sidecar}/mosaic_{z['epsg']}.vrt" in refs), None)
    w = Window(**(zone or rec["main"])["window"])
    size = (root.get("rasterXSize"), root.get("rasterYSize"))
    _need(size == (str(w.width), str(w.height)), f"size {size[0]}x{size[1]}, the record says {w.width}x{w.height}")
    gt = root.findtext("GeoTransform") or ""
    try:
        got = [float(v) for v in gt.split(",")]
    except ValueError:
        got = []
    want = w.transform.to_gdal()
    _need(len(got) == 6 and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, want, strict=True)),
          f"GeoTransform {gt.strip()!r}, the record says {', '.join(map(str, want))}")
    bands = root.findall("VRTRasterBand")
    _need(len(bands) == BANDS, f"{len(bands)} bands, not {BANDS}")
    for el in root.iter("SourceFilename"):
        ref = (el.text or "").strip()
        _need(el.get("relativeToVRT") == "1" and ref.startswith(sidecar + "/") and ".." not in ref.split("/"),
              f"source {ref!r} is not in {sidecar}/")


def _window(w: object, what: str) -> None:
    _need(isinstance(w, dict) and set(w) == {"epsg", "col0", "row0", "width", "height"}
          and all(_is_int(v) for v in w.values()), f"{what} is not a window")
    assert isinstance(w, dict)
    _need(w["width"] > 0 and w["height"] > 0, f"{what} is empty")


def _safe_host(url: str) -> bool:
    """A record is a file anyone may hand over: its endpoint must not point materialise at link-local
    services (cloud metadata at 169.254.169.254 / fd00:ec2::254) or carry credentials."""
    import ipaddress
    from urllib.parse import urlparse

    try:
        u = urlparse(url)
        host = u.hostname or ""
    except ValueError:
        return False
    if u.scheme not in ("http", "https") or not host or u.username or u.password:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() not in ("metadata.google.internal", "metadata")
    return not (ip.is_link_local or ip == ipaddress.ip_address("fd00:ec2::254"))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)  # type: ignore[arg-type]


def _need(ok: bool, problem: str) -> None:
    if not ok:
        raise _Bad(problem)

"""tessvrt info: what a built VRT covers and what it reads remotely."""

from __future__ import annotations

import json
from pathlib import Path

from .build import RECORD, SIDECAR_SUFFIX
from .errors import TessvrtError


def read_record(vrt_path: str | Path) -> dict:
    """The build record of a tessvrt VRT (its sidecar folder's tessvrt.json)."""
    p = Path(vrt_path)
    if not p.is_file():
        raise TessvrtError(f"{p} does not exist; pass a VRT written by tessvrt build")
    stem = p.name[:-4] if p.name.lower().endswith(".vrt") else p.name
    candidates = [p.with_name(stem + SIDECAR_SUFFIX)]
    if "_utm" in stem:  # a per-zone VRT shares the main VRT's folder
        candidates.append(p.with_name(stem.rsplit("_utm", 1)[0] + SIDECAR_SUFFIX))
    for folder in candidates:
        rec = folder / RECORD
        if rec.is_file():
            try:
                return json.loads(rec.read_text())
            except ValueError:
                raise TessvrtError(f"{rec} is corrupt; rebuild with tessvrt build") from None
    raise TessvrtError(f"{p} is not a tessvrt VRT (no {candidates[0].name}/{RECORD} beside it); rebuild with tessvrt build")


def info(vrt_path: str | Path) -> dict:
    rec = read_record(vrt_path)
    w = rec["main"]["window"]
    remote = sum(t["grid_size"] + t["scales_size"] for t in rec["tiles"])
    return {
        "vrt": str(vrt_path),
        "dataset_version": rec["dataset_version"],
        "variant": rec["variant"],
        "year": rec["year"],
        "crs": f"EPSG:{rec['main']['epsg']}",
        "width": w["width"],
        "height": w["height"],
        "bands": 128,
        "tiles": [t["name"] for t in rec["tiles"]],
        "missing": rec["missing"],
        "zones": [{"crs": f"EPSG:{z['epsg']}", "vrt": z["vrt"], "width": z["window"]["width"],
                   "height": z["window"]["height"]} for z in rec["zones"]],
        "remote_bytes": remote,
    }

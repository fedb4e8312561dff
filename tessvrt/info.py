"""tessvrt info: what a built VRT covers and what it reads remotely."""

from __future__ import annotations

from pathlib import Path

from .record import read_record


def info(vrt_path: str | Path) -> dict:
    """What `tessvrt info` prints, from the VRT's checked build record (no network)."""
    from .doctor import record_source

    rec = read_record(vrt_path)
    endpoint, source, vsi = record_source(rec)
    w = rec["main"]["window"]
    remote = sum(t["grid_size"] + t["scales_size"] for t in rec["tiles"])
    return {
        "vrt": str(vrt_path),
        "dataset": rec["dataset"],
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
        "source": source,
        "endpoint": endpoint,  # None: the layout's own (AWS for source-coop)
        "vsi": vsi,
        "overviews": [{"crs": f"EPSG:{o['epsg']}", "factor": o["factor"], "width": o["width"], "height": o["height"],
                       "file": o["file"], "main": o.get("vrt") == "main"}  # main: the cross-zone (warped) VRT's
                      for o in rec.get("overviews", [])],  # local files made by build --overview
    }

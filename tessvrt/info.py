"""tessvrt info: what a built VRT covers and what it reads remotely."""

from __future__ import annotations

from pathlib import Path

from .record import read_record


def info(vrt_path: str | Path) -> dict:
    """What `tessvrt info` prints, from the VRT's checked build record (no network)."""
    from .doctor import record_source

    rec = read_record(vrt_path)
    endpoint, source, vsi = record_source(rec)
    if rec.get("format") == "zarr":
        return _zarr_info(vrt_path, rec, endpoint, source, vsi)
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


def _zarr_info(vrt_path: str | Path, rec: dict, endpoint: str | None, source: str, vsi: str) -> dict:
    """A Zarr VRT: its zone parts and the inner chunks its Kerchunk references point at (their bytes are what
    a full read fetches)."""
    main = next((z for z in rec["zones"] if z["vrt"] == Path(vrt_path).name), rec.get("main") or rec["zones"][0])
    refs = rec["refs"]
    return {
        "vrt": str(vrt_path), "format": "zarr", "store": rec.get("store"), "dataset": rec["dataset"],
        "dataset_version": rec.get("dataset_version"), "variant": rec.get("variant"), "year": rec["year"],
        "crs": f"EPSG:{main['epsg']}", "width": main["window"]["width"], "height": main["window"]["height"],
        "bands": 128, "tiles": [], "missing": [],
        "zones": [{"crs": f"EPSG:{z['epsg']}", "vrt": z["vrt"], "width": z["window"]["width"],
                   "height": z["window"]["height"]} for z in rec["zones"]],
        "chunks": sum(int(r.get("chunks", 0)) for r in refs.values()),
        "absent_chunks": sum(int(r.get("absent", 0)) for r in refs.values()),
        "remote_bytes": sum(int(r.get("bytes", 0)) for r in refs.values()),
        "source": source, "endpoint": endpoint, "vsi": vsi,
        "overviews": [],  # build --overview is for npy VRTs
        "clip": (rec.get("clip") or {}).get("label"),  # --region/--country/--clip: what the pixels are narrowed to
    }

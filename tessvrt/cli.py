"""The tessvrt command line: parses arguments, calls the library, prints results."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import typer

from .errors import TessvrtError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="TESSERA embeddings as GDAL VRTs and Cloud-Optimized GeoTIFFs.")


def _fail(msg: str) -> None:
    typer.echo(f"tessvrt: error: {msg}", err=True)
    raise typer.Exit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def build(
    output: Path = typer.Option(..., "-o", "--output", help="VRT to write, e.g. london.vrt"),
    year: int = typer.Option(..., help="Embedding year, e.g. 2024"),
    bbox: str | None = typer.Option(None, help="W,S,E,N in degrees"),
    tile: list[str] | None = typer.Option(None, help="LON,LAT of a tile centre (repeatable)"),
    dataset: str = typer.Option("v1", help="npy dataset: v1, v1.1-cam, v2-2B-L~beta2, ... (tessvrt datasets lists them)"),
    source: str = typer.Option("source-coop", help="Bucket layout: source-coop (Source Cooperative on AWS), "
                               "gateway (https://data.source.coop) or legacy (old tessera-embeddings mirrors)"),
    manifest: str | None = typer.Option(None, help="Manifest path or URL instead of the dataset's own"),
    endpoint: str | None = typer.Option(None, help="S3 endpoint URL of a mirror or local server (bucket and keys stay)"),
    vsi: str = typer.Option("s3", help="GDAL paths: s3 (/vsis3/) or curl (/vsicurl/https://)"),
    crs: str | None = typer.Option(None, help="UTM EPSG code of the main VRT when zones differ"),
) -> None:
    """Write GDAL VRTs reading TESSERA embeddings remotely, dequantised per pixel."""
    from .build import build as run

    try:
        res = run(output, year=year, bbox=bbox, tiles=tile, dataset=dataset, source=source,
                  manifest=manifest, endpoint=endpoint, vsi=vsi, crs=crs)
    except TessvrtError as exc:
        _fail(str(exc))
    for note in res.notes:
        typer.echo(f"tessvrt: {note}", err=True)
    if res.missing:
        typer.echo(f"tessvrt: {len(res.missing)} tile(s) not in the manifest: {', '.join(res.missing)}", err=True)
    typer.echo(f"wrote {res.vrt} ({len(res.tiles)} tiles)")
    for epsg, p in res.zone_vrts.items():
        if p != res.vrt:
            typer.echo(f"wrote {p} (EPSG:{epsg})")


@app.command()
def materialise(
    vrt: Path = typer.Argument(..., help="A VRT written by tessvrt build"),
    output: Path = typer.Argument(..., help="GeoTIFF to write; one file per UTM zone (out_utm31n.tif ...)"),
    bands: str | None = typer.Option(None, help="Bands to write, in order, e.g. 1,2,3 or 1-16 (default all 128)"),
    compress: str = typer.Option("zstd", help="zstd, deflate, lzw, lerc or none"),
    level: int | None = typer.Option(None, help="Compression level (zstd, deflate)"),
    blocksize: int = typer.Option(512, help="Internal tile size in pixels"),
    overviews: bool = typer.Option(True, "--overviews/--no-overviews", help="Write internal overviews"),
    overwrite: bool = typer.Option(False, help="Replace existing output files"),
    endpoint: str | None = typer.Option(None, help="S3 endpoint URL (default: the one the VRT was built with)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output"),
    as_json: bool = typer.Option(False, "--json", help="Print the files written as JSON"),
    allow_missing: bool = typer.Option(False, help="Write NaN for tile objects that are gone (404/403) instead of failing"),
) -> None:
    """Write dequantised float32 Cloud-Optimized GeoTIFFs, one per UTM zone, reading tile bytes directly."""
    from .materialise import materialise as run
    from .materialise import progress_printer

    signal.signal(signal.SIGTERM, _interrupt)  # clean up temporaries as on Ctrl-C
    try:
        res = run(vrt, output, bands=bands, compress=compress, level=level, blocksize=blocksize, overviews=overviews,
                  overwrite=overwrite, endpoint=endpoint, progress=None if quiet else progress_printer(),
                  allow_missing=allow_missing)
    except TessvrtError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; no output was written (run the same command again to restart)")
    if res.missing:
        typer.echo(f"tiles gone from the bucket, written as NaN: {', '.join(res.missing)}", err=True)
    if as_json:
        typer.echo(json.dumps({"files": [str(p) for p in res.files], "bytes": res.bytes_written, "seconds": res.seconds,
                               "remote_bytes": res.remote_bytes, "mb_per_s": res.mb_per_s,
                               "missing": res.missing}))
        return
    for p in res.files:
        typer.echo(f"wrote {p}")
    if not quiet:
        typer.echo(f"{len(res.files)} file(s), {res.bytes_written / 1e6:,.1f} MB in {res.seconds:.1f} s "
                   f"({res.mb_per_s:,.1f} MB/s of float32, {res.remote_bytes / 1e6:,.1f} MB fetched)", err=True)


@app.command("gdal-config")
def gdal_config(
    config_file: Path | None = typer.Option(None, help="File to write (default ~/.gdal/gdalrc)"),
    endpoint: str | None = typer.Option(None, help="S3 endpoint URL of a mirror or local server"),
    source: str = typer.Option("source-coop", help="Bucket layout, as for build: source-coop, gateway or legacy"),
    print_only: bool = typer.Option(False, "--print", help="Only print the merged file"),
) -> None:
    """Let gdalinfo, gdal_translate, rasterio and QGIS read tessvrt VRTs with no environment variables.

    Writes ~/.gdal/gdalrc (or $GDAL_CONFIG_FILE): anonymous path-style access to the bucket, and
    GDAL >= 3.12's raw-band allow-list limited to its npy prefix (added to any list already there).

    Also adds /vsicurl read-ahead (256 KB chunks, up to 1 GB cache) unless the file already sets it.
    """
    from .gdalconfig import gdal_config as run

    try:
        path, text = run(config_file, endpoint=endpoint, source=source, print_only=print_only)
    except TessvrtError as exc:
        _fail(str(exc))
    if print_only:
        sys.stdout.write(text)
    else:
        typer.echo(f"wrote {path}")


@app.command()
def info(
    vrt: Path = typer.Argument(..., help="A VRT written by tessvrt build"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Tiles, zones, size in pixels and remote bytes behind a VRT."""
    from .info import info as run

    try:
        d = run(vrt)
    except TessvrtError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(d, indent=1))
        return
    typer.echo(f"{d['vrt']}: {d['width']} x {d['height']} pixels, 128 float32 bands, {d['crs']}")
    typer.echo(f"dataset {d['dataset']} (TESSERA v{d['dataset_version']}, variant {d['variant']}), year {d['year']}")
    typer.echo(f"tiles ({len(d['tiles'])}): {', '.join(d['tiles'])}")
    if d["missing"]:
        typer.echo(f"missing ({len(d['missing'])}): {', '.join(d['missing'])}")
    for z in d["zones"]:
        typer.echo(f"zone {z['crs']}: {z['vrt']} {z['width']} x {z['height']}")
    typer.echo(f"remote bytes: {d['remote_bytes']:,} ({d['remote_bytes'] / 1e6:.1f} MB)")


@app.command()
def datasets(as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """The TESSERA datasets upstream publishes, in which formats, and which tessvrt reads."""
    from .source.datasets import table

    rows = table()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    typer.echo(f"{'name':<15} {'version':<8} {'variant':<12} {'npy':<15} {'zarr':<15} tessvrt")
    for r in rows:
        typer.echo(f"{r['name']:<15} {r['version']:<8} {r['variant']:<12} {r['npy'] or '-':<15} {r['zarr'] or '-':<15} "
                   f"{r['tessvrt']}")
        typer.echo(f"{'':<15} {r['about']}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("tessvrt: interrupted", err=True)
        sys.exit(130)

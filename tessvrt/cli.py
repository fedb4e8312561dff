"""The tessvrt command line: parses arguments, calls the library, prints results."""

from __future__ import annotations

import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _handle_signals() -> None:
    """SIGTERM and SIGHUP (a closed terminal) take the Ctrl-C path, which removes temporaries and exits 130."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def _exit_130(signum: int, frame: object) -> None:
    """Start-up's handler: nothing is written yet, so stop at once (SystemExit leaves even a half-done import cleanly)."""
    sys.stderr.write("tessvrt: interrupted\n")
    raise SystemExit(130)


# Installed before anything slow is imported (typer here, then each command's numpy/pandas/rasterio):
# otherwise a signal in the first second kills with the default action instead of exiting 130.
try:
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _exit_130)
except ValueError:  # imported outside the main thread (not as the CLI): leave the process's handlers alone
    pass

import contextlib  # noqa: E402
import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402

from .errors import TessvrtError  # noqa: E402

# rich_markup_mode=None: click's plain help (importing rich's help renderer costs ~0.3 s of start-up)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 160},
                  help="TESSERA embeddings as GDAL VRTs and Cloud-Optimized GeoTIFFs.")

# An argument's help row is its metavar alone (typer appends <path>, <list[str]>: Python types, not what to type)
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]

REGION_HELP = "Polygons (GeoJSON, GeoPackage, Shapefile; any CRS): tiles whose cells they cover in part"
COUNTRY_HELP = "Country name or ISO code (Natural Earth admin-0, downloaded once and cached), e.g. France or FRA"
BANDS_HELP = ("1-based, as GDAL numbers bands: band 1 is embedding_000, upstream's (0-based) band 0")


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"tessvrt: error: {msg}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _reported(interrupted: str | None = None) -> Iterator[None]:
    """A library error as its one line (exit 1); Ctrl-C or SIGTERM as `interrupted` (exit 130; without it,
    main's plain "interrupted"), never a traceback."""
    try:
        yield
    except TessvrtError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        _fail(interrupted, 130)


@app.command()
def build(
    output: Path = typer.Option(..., "-o", "--output", metavar="FILE.vrt", help="VRT to write, e.g. london.vrt; or "
                                "FILE.gti.gpkg: a GTI index of per-block VRTs (GDAL >= 3.9), the form above 50,000 tiles"),
    year: int = typer.Option(..., metavar="YEAR", help="Embedding year, e.g. 2024"),
    bbox: str | None = typer.Option(None, metavar="W,S,E,N", help="W,S,E,N in degrees, longitude first (--bbox or --tile is required)"),
    tile: list[str] | None = typer.Option(None, metavar="LON,LAT",
                                          help="LON,LAT of a tile centre, repeatable (--bbox or --tile is required)"),
    dataset: str = typer.Option("v1", metavar="NAME", help="npy dataset: v1, v1.1-cam, v2-2B-L~beta2, ... (tessvrt datasets lists them)"),
    source: str = typer.Option("source-coop", metavar="LAYOUT", help="Bucket layout: source-coop (Source Cooperative on AWS), "
                               "gateway (https://data.source.coop) or legacy (old tessera-embeddings mirrors)"),
    manifest: str | None = typer.Option(None, metavar="PATH|URL", help="Manifest path or URL instead of the dataset's own"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint URL of a mirror or local server (bucket and keys stay)"),
    vsi: str = typer.Option("s3", metavar="s3|curl", help="GDAL paths: s3 (/vsis3/) or curl (/vsicurl/https://)"),
    crs: str | None = typer.Option(None, metavar="EPSG:CODE", help="UTM EPSG code of the main VRT when zones differ"),
    overwrite: bool = typer.Option(False, help="Replace a previous build of the same name (its VRTs and sidecar)"),
    overview: bool = typer.Option(False, "--overview", help="Also write local overviews (1/4, 1/16, ...) that GDAL and "
                                  "QGIS use when zoomed out; fetches 1/4 of the tile rows (docs/layout.md)"),
    fmt: str | None = typer.Option(None, "--format", metavar="npy|zarr",
                                   help="npy tiles (default where published; GDAL >= 3.6) or the Zarr store (GDAL >= 3.11)"),
    region: Path | None = typer.Option(None, metavar="FILE", help=REGION_HELP),
    country: str | None = typer.Option(None, metavar="NAME|ISO", help=COUNTRY_HELP),
    clip: bool = typer.Option(False, "--clip", help="Mask pixels whose centres are outside --bbox/--region/--country"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print tiles, pixels, remote bytes, VRT bytes and times from the "
                                 "manifest (Zarr: the store's metadata); read no tile or chunk, write nothing"),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the figures as JSON"),
) -> None:
    """Write GDAL VRTs reading TESSERA embeddings remotely, dequantised per pixel. Needs --bbox, --tile, --region or --country."""
    from .build import build as run
    from .doctor import config_hint
    from .region import Region
    from .source.s3 import public_url

    _handle_signals()  # SIGTERM/SIGHUP clean up temporaries as Ctrl-C does
    if as_json and not dry_run:
        _fail("--json prints the figures of --dry-run: add --dry-run, or drop --json")
    with _reported("interrupted; nothing was written (run the same command again)"):
        area = Region.from_options(bbox=bbox, tiles=tile, region=region, country=country)
        res = run(output, year=year, bbox=bbox, tiles=tile, dataset=dataset, source=source,
                  manifest=manifest, endpoint=endpoint, vsi=vsi, crs=crs, overwrite=overwrite,
                  overview=overview, format=fmt, region=area, clip=clip, dry_run=dry_run)
    for note in res.notes:
        typer.echo(f"tessvrt: {note}", err=True)
    if res.estimate is not None:
        est = res.estimate
        typer.echo(json.dumps({"dry_run": True, **est.fields()}) if as_json else est.line())  # type: ignore[attr-defined]
        if getattr(est, "refused", None):  # exit as the real build would (a Zarr region over the chunk cap)
            _fail(f"the build would be refused: {est.refused}")  # type: ignore[attr-defined]
        return
    if res.missing_count:
        more = f" and {res.missing_count - len(res.missing):,} more" if res.missing_count > len(res.missing) else ""
        typer.echo(f"tessvrt: {res.missing_count:,} tile(s) not in the manifest: "
                   f"{', '.join(res.missing)}{more}", err=True)
    typer.echo(f"wrote {res.vrt}" + (f" ({len(res.tiles)} tile{'' if len(res.tiles) == 1 else 's'})" if res.tiles else ""))
    for epsg, p in res.zone_vrts.items():
        if p != res.vrt:
            typer.echo(f"wrote {p} (EPSG:{epsg})")
    # GDAL tools would fail with ERROR 4 and no pointer to gdal-config (no password of --endpoint is echoed)
    hint = config_hint(public_url(endpoint)[0] if endpoint else None, source, vsi)
    if hint:
        typer.echo(f"tessvrt: {hint}", err=True)


@app.command()
def materialise(
    vrt: str | None = typer.Argument(None, metavar="VRT", show_default=False,
                                      help="A VRT written by tessvrt build (omit it with --dataset/--bbox/--year)"),
    output: str | None = typer.Argument(None, metavar="OUTPUT", show_default=False,
                                        help="out.tif (one COG per UTM zone: out_utm31n.tif ...), or a folder or "
                                             "s3://bucket/prefix/ for a COG collection"),
    dataset: str | None = typer.Option(None, metavar="NAME",
                                       help="Without a VRT: the dataset whose Zarr store to read, e.g. v1.1-dclimate"),
    bbox: str | None = typer.Option(None, metavar="W,S,E,N", help="Without a VRT: W,S,E,N in degrees"),
    year: int | None = typer.Option(None, metavar="YEAR", help="Without a VRT: embedding year, e.g. 2024"),
    source: str | None = typer.Option(None, metavar="LAYOUT", help="Without a VRT: bucket layout, source-coop (default) or gateway"),
    bands: str | None = typer.Option(None, metavar="LIST", help="Bands to write, in order, e.g. 1,2,3 or 1-16 (default all 128); "
                                     + BANDS_HELP),
    compress: str = typer.Option("zstd", metavar="CODEC", help="zstd, deflate, lzw, lerc or none"),
    level: int | None = typer.Option(None, metavar="N", help="Compression level (zstd, deflate)"),
    blocksize: int = typer.Option(512, metavar="PIXELS", help="Internal tile size in pixels"),
    overviews: bool = typer.Option(True, "--overviews/--no-overviews", help="Write internal overviews"),
    overwrite: bool = typer.Option(False, help="Replace existing output files"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint URL (default: the one the VRT was built with)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output"),
    as_json: bool = typer.Option(False, "--json", help="Print the files written as JSON"),
    allow_missing: bool = typer.Option(False, help="Write NaN for tile objects that are gone (404/403) instead of failing"),
    workers: int | None = typer.Option(None, metavar="N", help="Run on a local Dask cluster of N worker processes "
                                       "(output: a folder or s3:// prefix)"),
    dask: str | None = typer.Option(None, metavar="ADDRESS", help="Run on the Dask scheduler at ADDRESS, e.g. "
                                    "tcp://host:8786 (output: a folder or s3:// prefix)"),
    piece_size: int | None = typer.Option(None, metavar="PIXELS", help="Collection piece size in pixels (default 4096)"),
    output_endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint of an s3:// output (default AWS)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print tiles, pixels, remote and output bytes and the time "
                                 "it would take; read no tile, write nothing (a Zarr region needs no OUTPUT: one COG "
                                 "per zone)"),
    region: Path | None = typer.Option(None, metavar="FILE", help="Without a VRT: " + REGION_HELP + "; with --clip: "
                                       "what to keep"),
    country: str | None = typer.Option(None, metavar="NAME|ISO", help=COUNTRY_HELP),
    clip: bool = typer.Option(False, "--clip", help="NaN wherever a pixel's centre is outside --bbox/--region/--country"),
) -> None:
    """Write dequantised float32 Cloud-Optimized GeoTIFFs, one per UTM zone, reading tile bytes directly.

    An output folder or s3://bucket/prefix/ gets a COG collection instead: aligned pieces, one COG each, with
    a VRT and a GTI index per zone that GDAL opens as one raster; a rerun finishes an interrupted one.

    From a VRT (tessvrt build): materialise london.vrt out.tif. From a dataset's Zarr store, no VRT:
    materialise out.tif --dataset v1.1-dclimate --bbox -0.2,51.4,0.1,51.6 --year 2024.
    """
    from .materialise import materialise as run
    from .materialise import progress_printer
    from .source.s3 import set_progress

    _handle_signals()
    _check_materialise_args(vrt, output, dataset, bbox, year, dry_run=dry_run)
    if quiet:
        set_progress(None)  # no "fetching ..." lines either
    with _reported("interrupted; no output was written (run the same command again to restart)"):
        res = run(vrt, output, dataset=dataset, bbox=bbox, year=year, source=source, bands=bands, compress=compress,
                  level=level, blocksize=blocksize, overviews=overviews, overwrite=overwrite, endpoint=endpoint,
                  progress=None if quiet else progress_printer(), allow_missing=allow_missing, workers=workers,
                  dask=dask, piece_size=piece_size, output_endpoint=output_endpoint,
                  dry_run=dry_run, region=region, country=country, clip=clip)
    if res.missing:
        typer.echo(f"tiles gone from the bucket, written as NaN: {', '.join(res.missing)}", err=True)
    if res.estimate is not None:
        est = res.estimate
        if as_json:
            typer.echo(json.dumps({"dry_run": True, **est.fields()}))
        else:
            typer.echo(est.line())
        return
    col = res.collection
    if as_json:
        extra = {} if col is None else {"collection": col.target, "pieces": col.pieces, "pieces_written": col.written,
                                        "pieces_skipped": col.skipped}
        typer.echo(json.dumps({**extra, "files": [str(p) for p in res.files], "bytes": res.bytes_written,
                               "seconds": round(res.seconds, 2), "remote_bytes": res.remote_bytes,
                               "requests": res.requests, "mb_per_s": round(res.mb_per_s, 1), "missing": res.missing,
                               "not_computed": res.not_computed, "outside": res.outside, "not_written": res.not_written}))
        return
    for p in res.files:
        typer.echo(f"wrote {p}")
    if col is not None:
        typer.echo(f"{col.target}: {col.pieces} piece(s), {col.written} written, {col.skipped} already complete", err=True)
    if res.not_computed or res.outside:
        typer.echo(f"{res.not_computed:,} pixel(s) of the region not computed yet by upstream and {res.outside:,} beyond "
                   "the store's zone grids: written as NaN", err=True)
    if res.not_written:
        typer.echo(f"{res.not_written:,} pixel(s) have valid scales but no embeddings in the store yet (upstream writes "
                   "embeddings after scales): written as NaN, not 0.0", err=True)
    if not quiet:
        typer.echo(f"{len(res.files)} file(s), {res.bytes_written / 1e6:,.1f} MB in {res.seconds:.1f} s "
                   f"({res.mb_per_s:,.1f} MB/s of float32, {res.remote_bytes / 1e6:,.1f} MB fetched)", err=True)


def _check_materialise_args(vrt: str | None, output: str | None, dataset: str | None, bbox: str | None,
                            year: int | None, command: str = "materialise", dry_run: bool = False) -> None:
    """The two forms' missing pieces in one line each, before the library guesses which form was meant
    (a dry run of a Zarr region needs no output: it estimates one COG per zone)."""
    zarr_form = dataset is not None or bbox is not None or year is not None
    if vrt is None and not (dry_run and zarr_form):
        _fail(f"no VRT and no output given: write `tessvrt {command} london.vrt out.tif` (a VRT from tessvrt build), or "
              f"`tessvrt {command} out.tif --dataset NAME --bbox W,S,E,N --year YEAR` (a Zarr store)")
    if output is None and not zarr_form and vrt is not None and Path(vrt).suffix.lower() == ".vrt":
        _fail(f"the output .tif is missing: write `tessvrt {command} {vrt} out.tif`")


@app.command()
def preview(
    vrt: str | None = typer.Argument(None, metavar="VRT", show_default=False,
                                      help="A VRT written by tessvrt build (omit it with --dataset/--bbox/--year)"),
    output: str | None = typer.Argument(None, metavar="OUTPUT", show_default=False,
                                        help="out.tif (one RGB COG per UTM zone: out_utm31n.tif ...)"),
    dataset: str | None = typer.Option(None, metavar="NAME", help="Without a VRT: the dataset whose Zarr store to read"),
    bbox: str | None = typer.Option(None, metavar="W,S,E,N", help="Without a VRT: W,S,E,N in degrees"),
    year: int | None = typer.Option(None, metavar="YEAR", help="Without a VRT: embedding year, e.g. 2024"),
    source: str | None = typer.Option(None, metavar="LAYOUT", help="Without a VRT: bucket layout, source-coop (default) or gateway"),
    png: Path | None = typer.Option(None, metavar="FILE", help="Also write a quicklook PNG of the whole region (all zones)"),
    blocksize: int = typer.Option(512, metavar="PIXELS", help="Internal tile size in pixels"),
    overwrite: bool = typer.Option(False, help="Replace existing output files"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint URL (default: the one the VRT was built with)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output"),
    as_json: bool = typer.Option(False, "--json", help="Print the files written as JSON"),
    allow_missing: bool = typer.Option(False, help="Leave tile objects that are gone (404/403) as no data instead of failing"),
    region: Path | None = typer.Option(None, metavar="FILE", help="Without a VRT: " + REGION_HELP + "; with --clip: "
                                       "what to keep"),
    country: str | None = typer.Option(None, metavar="NAME|ISO", help=COUNTRY_HELP),
    clip: bool = typer.Option(False, "--clip", help="No data wherever a pixel's centre is outside --bbox/--region/--country"),
) -> None:
    """Write a false-colour picture: the first three principal components as 8-bit RGB COGs, one per UTM zone.

    One PCA for the whole region (a fixed lattice of pixels, docs/preview.md), so colours agree across zones;
    0 is no data. preview london.vrt out.tif --png out.png, or from a Zarr store:
    preview out.tif --dataset v1.1-dclimate --bbox -0.2,51.4,0.1,51.6 --year 2024.
    """
    from .materialise import progress_printer
    from .preview import preview as run
    from .source.s3 import set_progress

    _handle_signals()
    _check_materialise_args(vrt, output, dataset, bbox, year, "preview")
    if quiet:
        set_progress(None)
    with _reported("interrupted; no output was written (run the same command again to restart)"):
        res = run(vrt, output, dataset=dataset, bbox=bbox, year=year, source=source, png=png, blocksize=blocksize,
                  overwrite=overwrite, endpoint=endpoint, progress=None if quiet else progress_printer(),
                  allow_missing=allow_missing, region=region, country=country, clip=clip)
    if as_json:
        typer.echo(json.dumps({"files": [str(p) for p in res.files], "png": str(res.png) if res.png else None,
                               "bytes": res.bytes_written, "seconds": round(res.seconds, 2),
                               "remote_bytes": res.remote_bytes, "sample_bytes": res.sample_bytes,
                               "sample_pixels": res.sample_pixels, "cell": res.cell,
                               "explained": [round(float(v), 4) for v in res.pca.explained]}))
        return
    for p in [*res.files, *([res.png] if res.png else [])]:
        typer.echo(f"wrote {p}")
    if not quiet:
        typer.echo(f"PCA of {res.sample_pixels:,} sample pixels (components explain "
                   f"{', '.join(f'{v:.0%}' for v in res.pca.explained)}); {res.remote_bytes / 1e6:,.1f} MB fetched "
                   f"({res.sample_bytes / 1e6:,.1f} MB for the sample) in {res.seconds:.1f} s", err=True)


@app.command(context_settings={"ignore_unknown_options": True})  # points like -0.1,51.5 are not options
def sample(
    points: list[str] | None = typer.Argument(None, metavar="LON,LAT", show_default=False,
                                              help="LON,LAT points (or --points FILE)"),
    dataset: str = typer.Option(..., metavar="NAME", help="Dataset: a Zarr store (v1.1-dclimate, v1, ...) or npy dataset (--format npy)"),
    year: int = typer.Option(..., metavar="YEAR", help="Embedding year, e.g. 2024"),
    points_file: Path | None = typer.Option(None, "--points", metavar="FILE", help="CSV (lon,lat columns) or GeoJSON of points"),
    bands: str | None = typer.Option(None, metavar="LIST", help="Bands, e.g. 1,2,3 or 1-16 (default all 128); " + BANDS_HELP),
    fmt: str | None = typer.Option(None, "--format", metavar="zarr|npy", help="zarr (default when the dataset has a store) or npy"),
    source: str | None = typer.Option(None, metavar="LAYOUT", help="Bucket layout: source-coop (default), gateway or legacy (npy)"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint URL of a mirror or local server (bucket and keys stay)"),
    manifest: str | None = typer.Option(None, metavar="PATH|URL", help="npy: manifest path or URL instead of the dataset's own"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of CSV"),
    region: Path | None = typer.Option(None, metavar="FILE", help="Keep only the points inside these polygons"),
    country: str | None = typer.Option(None, metavar="NAME|ISO", help="Keep only the points inside this country"),
) -> None:
    """The dequantised values at points, with a status: valid, water, nodata (not computed yet), invalid, outside."""
    from .materialise import parse_bands
    from .sample import points_inside, read_points, to_csv, to_rows
    from .sample import sample_with_hint as run

    _handle_signals()
    with _reported("interrupted; nothing was printed (run the same command again)"):
        pts = list(points or []) + (read_points(points_file) if points_file else [])
        if region is not None or country is not None:
            pts, dropped = points_inside(pts, region=region, country=country)
            if dropped:
                typer.echo(f"tessvrt: {dropped:,} point(s) outside the region left out", err=True)
        band_list = parse_bands(bands)
        res, hint = run(dataset, year, pts, bands=band_list, format=fmt, source=source, endpoint=endpoint,
                        manifest=manifest)
    if hint:
        typer.echo(f"tessvrt: {hint}", err=True)
    rows = to_rows(res, band_list)
    typer.echo(json.dumps(rows) if as_json else to_csv(rows), nl=as_json)


@app.command()
def coverage(
    bbox: str | None = typer.Option(None, metavar="W,S,E,N", help="W,S,E,N in degrees (default: everywhere)"),
    region: Path | None = typer.Option(None, metavar="FILE", help=REGION_HELP),
    country: str | None = typer.Option(None, metavar="NAME|ISO", help=COUNTRY_HELP),
    dataset: str | None = typer.Option(None, metavar="NAME", help="One dataset (default: every one tessvrt datasets lists)"),
    year: int | None = typer.Option(None, metavar="YEAR", help="One year (default: every year)"),
    source: str | None = typer.Option(None, metavar="LAYOUT", help="Bucket layout: source-coop (default), gateway or legacy"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint URL of a mirror or local server"),
    manifest: str | None = typer.Option(None, metavar="PATH|URL", help="With --dataset: manifest path or URL instead of its own"),
    png: Path | None = typer.Option(None, metavar="FILE.png", help="Also draw a map of the tiles over the region"),
    overwrite: bool = typer.Option(False, help="Replace an existing --png file"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Which tiles exist per dataset and year over a region: counts and remote bytes (from the npy manifests)."""
    from .coverage import coverage as run

    _handle_signals()
    with _reported("interrupted; nothing was written"):
        res = run(bbox=bbox, region=region, country=country, dataset=dataset, year=year, source=source,
                  endpoint=endpoint, manifest=manifest, png=png, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(res.as_json(), indent=1))
        return
    typer.echo(f"coverage of {res.region}")
    for d in res.datasets:
        if d.format == "zarr":
            zones = ", ".join(f"{z} ({', '.join(map(str, ys))})" for z, ys in d.zones.items()) or "none"
            typer.echo(f"{d.dataset:<15} zarr  zone groups: {zones}")
            typer.echo(f"{'':<15}       {d.note}")
            continue
        if not d.years:
            typer.echo(f"{d.dataset:<15} -     {d.note}")
        for y in d.years:
            of = f" of {y.requested:,} cells" if y.requested is not None else ""
            typer.echo(f"{d.dataset:<15} {y.year}  {y.tiles:>7,} tiles{of}  {y.remote_bytes / 1e9:10,.2f} GB")
    if res.png:
        typer.echo(f"wrote {res.png}")


@app.command("gdal-config")
def gdal_config(
    config_file: Path | None = typer.Option(None, metavar="FILE", help="File to write (default ~/.gdal/gdalrc)"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint URL of a mirror or local server"),
    source: str = typer.Option("source-coop", metavar="LAYOUT", help="Bucket layout, as for build: source-coop, gateway or legacy"),
    print_only: bool = typer.Option(False, "--print", help="Only print the merged file"),
) -> None:
    """Let gdalinfo, gdal_translate, rasterio and QGIS read tessvrt VRTs with no environment variables.

    Writes ~/.gdal/gdalrc (or $GDAL_CONFIG_FILE): anonymous path-style access to the bucket, and
    GDAL >= 3.12's raw-band allow-list limited to its npy prefix (added to any list already there).

    Also sets /vsicurl read-ahead (256 KB chunks, up to 1 GB cache), keeping values already there only
    when they are at least as large (and saying so when it raises one). `tessvrt doctor` checks the result.
    """
    from .gdalconfig import NOTE
    from .gdalconfig import gdal_config as run

    with _reported():
        path, text = run(config_file, endpoint=endpoint, source=source, print_only=print_only)
    if print_only:
        sys.stdout.write(text)
    else:
        typer.echo(f"wrote {path}")
        for line in text.splitlines():
            if line.startswith(NOTE):
                typer.echo(f"tessvrt: {line[len(NOTE):]}", err=True)


@app.command()
def doctor(
    vrt: str | None = typer.Argument(None, metavar="VRT", show_default=False,
                                      help="A VRT: check the source and endpoint it was built with"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="S3 endpoint URL, as given to gdal-config and build"),
    source: str | None = typer.Option(None, metavar="LAYOUT",
                                      help="Bucket layout, as for gdal-config: source-coop (default), gateway or legacy"),
) -> None:
    """Check that rasterio's GDAL, gdalinfo and QGIS find gdal-config's settings and can read the source.

    Prints what is missing and the command that fixes it; exits 1 when something is missing. Run it when
    GDAL says "ERROR 4: Unable to open /vsis3/...": `tessvrt doctor X.vrt` checks what X.vrt reads.
    """
    from .doctor import doctor as run

    with _reported():
        rep = run(endpoint=endpoint, source=source, vrt=vrt)
    typer.echo(f"checking {rep.source}")
    for c in rep.checks:
        typer.echo(f"{'ok' if c.ok else 'FAIL':<5} {c.what}: {c.detail}")
    for fix in rep.fixes:
        typer.echo(f"fix:  {fix}")
    if not rep.ok:
        raise typer.Exit(1)


@app.command()
def info(
    vrt: Path = typer.Argument(..., metavar="VRT", help="A VRT written by tessvrt build"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Tiles, zones, size in pixels and remote bytes behind a VRT."""
    from .doctor import config_hint
    from .info import info as run

    with _reported():
        d = run(vrt)
    # GDAL tools would fail on this VRT with only "ERROR 4: Unable to open /vsis3/...": say why, and the fix
    hint = config_hint(d["endpoint"], d["source"], d["vsi"])
    if hint:
        typer.echo(f"tessvrt: {hint}", err=True)
    if d.get("format") == "zarr":  # GDAL < 3.11 fails on it with only "not recognized as being in a supported format"
        from .zarrvrt import local_gdal_problem

        problem = local_gdal_problem()
        if problem:
            typer.echo(f"tessvrt: {problem}", err=True)
    if as_json:
        typer.echo(json.dumps(d, indent=1))
        return
    typer.echo(f"{d['vrt']}: {d['width']} x {d['height']} pixels, 128 float32 bands, {d['crs']}")
    typer.echo(f"dataset {d['dataset']} (TESSERA v{d['dataset_version']}, variant {d['variant']}), year {d['year']}")
    if d.get("format") == "zarr":
        typer.echo(f"Zarr store {d['store']}: {d['chunks']:,} inner chunks referenced, {d['absent_chunks']:,} absent")
        if d.get("clip"):
            typer.echo(f"pixels outside {d['clip']} read as NaN")
    else:
        typer.echo(f"tiles ({len(d['tiles'])}): {', '.join(d['tiles'])}")
    if d["missing"]:
        typer.echo(f"missing ({len(d['missing'])}): {', '.join(d['missing'])}")
    for z in d["zones"]:
        typer.echo(f"zone {z['crs']}: {z['vrt']} {z['width']} x {z['height']}")
    typer.echo(f"remote bytes: {d['remote_bytes']:,} ({d['remote_bytes'] / 1e6:.1f} MB)")
    typer.echo("overviews: " + (", ".join(f"1/{o['factor']} {o['width']} x {o['height']} ({o['crs']}{', main' if o['main'] else ''})"
                                          for o in d["overviews"])
                                or "none (build --overview writes local ones for zoomed-out views)"))


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


def _version(value: bool) -> None:
    if value:
        import platform

        import rasterio

        from . import __version__

        typer.echo(f"tessvrt {__version__} (Python {platform.python_version()}, rasterio {rasterio.__version__}, "
                   f"GDAL {rasterio.__gdal_version__})")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version (and rasterio's GDAL) and exit")) -> None:
    pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _handle_signals()  # from here on a signal is a KeyboardInterrupt: commands clean up, typer exits 130
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("tessvrt: interrupted", err=True)
        sys.exit(130)

"""tessvrt doctor: can the GDALs on this machine read the bucket the way tessvrt VRTs do?

Forgetting `tessvrt gdal-config` shows only later, as GDAL's own "ERROR 4: Unable to open /vsis3/...".
doctor looks at each GDAL a user may open a VRT with (rasterio's, the gdalinfo on PATH, QGIS's):
whether the configuration file is found, whether the options tessvrt needs are in force there, and
whether one object of the source (the dataset's manifest) reads through /vsis3/ the way a VRT's raw
bands read tiles. Each GDAL runs in its own process, as the user's would, so it loads the file at
start-up exactly as it will later. It says what is missing and the command that fixes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .gdalconfig import ALLOWED_SOURCE, READ_AHEAD, allowed_prefix, credentials, default_path
from .source.datasets import DATASETS, DEFAULT_DATASET, DEFAULT_MIRROR, Mirror, mirror
from .source.s3 import Endpoint, S3Location

MAGIC = b"PAR1"  # the first bytes of every manifest.parquet: what the probe must read back
QGIS_PYTHON = "/usr/bin/python3"  # Debian's python3-qgis
TIMEOUT = 90  # seconds for one GDAL's probe (its own HTTP timeouts are shorter)
# HTTP timeouts for the probes: an unreachable host fails in seconds instead of GDAL's long defaults
# (environment variables: a value the user set in the config file still wins, as it would for them)
PROBE_ENV = {"GDAL_HTTP_CONNECTTIMEOUT": "10", "GDAL_HTTP_TIMEOUT": "20", "GDAL_HTTP_MAX_RETRY": "1"}

# Run by each Python GDAL: prints its version, the options it sees and the probe's first bytes.
_PROBE = r"""
import json, logging, sys
vrt, mode, keys = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
out = {"errors": []}
if mode == "rasterio":
    class Keep(logging.Handler):
        def emit(self, record):
            out["errors"].append(record.getMessage())
    logging.getLogger().addHandler(Keep(logging.WARNING))
    import rasterio
    from rasterio.env import get_gdal_config
    out["gdal"], out["runtime"] = rasterio.__gdal_version__, "rasterio " + rasterio.__version__
    with rasterio.Env():
        out["options"] = {k: get_gdal_config(k, normalize=False) for k in keys}
        try:
            with rasterio.open(vrt) as d:
                out["bytes"] = d.read(1).tobytes().hex()
        except Exception as exc:
            out["errors"].append(str(exc))
        if len(sys.argv) > 4:
            try:
                with rasterio.open(sys.argv[4]) as d:
                    out["zarr"] = d.read(1).tobytes().hex()
            except Exception as exc:
                out["zarr"] = str(exc)
else:
    import qgis.core
    from osgeo import gdal
    out["gdal"], out["runtime"] = gdal.__version__, "QGIS " + qgis.core.Qgis.QGIS_VERSION
    gdal.PushErrorHandler(lambda cls, no, msg: out["errors"].append(msg))
    out["options"] = {k: gdal.GetConfigOption(k) for k in keys}
    ds = gdal.Open(vrt)
    data = ds.GetRasterBand(1).ReadRaster() if ds is not None else None
    if data is not None:
        out["bytes"] = bytes(data).hex()
    if len(sys.argv) > 4:
        zds = gdal.Open(sys.argv[4])
        zdata = zds.GetRasterBand(1).ReadRaster() if zds is not None else None
        out["zarr"] = bytes(zdata).hex() if zdata is not None else (out["errors"][-1] if out["errors"] else "cannot open")
print(json.dumps(out))
"""


@dataclass
class Check:
    what: str  # e.g. "rasterio 1.4.4 (GDAL 3.10.3, /usr/bin/python3)"
    ok: bool
    detail: str
    fix: str | None = None  # the command (or action) that fixes it


@dataclass
class Report:
    config_file: Path
    source: str  # the object probed, as s3:// URI and endpoint
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def fixes(self) -> list[str]:
        return list(dict.fromkeys(c.fix for c in self.checks if not c.ok and c.fix))


def fix_command(endpoint: str | None, source: str | None) -> str:
    """The gdal-config command for this endpoint and layout, as the user would type it."""
    cmd = "tessvrt gdal-config"
    if source and source != DEFAULT_MIRROR:
        cmd += f" --source {source}"
    if endpoint:
        cmd += f" --endpoint {endpoint}"
    if os.environ.get("GDAL_CONFIG_FILE"):
        cmd = f"GDAL_CONFIG_FILE={os.environ['GDAL_CONFIG_FILE']} {cmd}"
    return cmd


def parse_config(text: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """([configoptions] key -> value, [credentials] subsection -> its options), as GDAL reads them."""
    options: dict[str, str] = {}
    subs: dict[str, dict[str, str]] = {}
    section, sub = None, None
    for raw in text.splitlines():
        ln = raw.strip()
        if not ln or ln.startswith(("#", ";")):
            continue
        if ln.startswith("[") and ln.endswith("]"):
            if ln.startswith("[."):
                sub = ln[2:-1]
                subs[sub] = {}
            else:
                section, sub = ln, None
            continue
        if "=" not in ln:
            continue
        key, value = (p.strip() for p in ln.split("=", 1))
        if section == "[configoptions]":
            options[key] = value
        elif section == "[credentials]" and sub is not None:
            subs[sub][key] = value
    return options, subs


def _config_problems(text: str, ep: Endpoint, m: Mirror) -> list[str]:
    """What the file lacks for reading this bucket through this endpoint ([] when nothing)."""
    options, subs = parse_config(text)
    want = credentials(ep, m.bucket)
    have = next((s for s in subs.values() if s.get("path", "").rstrip("/") == want["path"]), None)
    problems = []
    if have is None:
        problems.append(f"no [credentials] subsection for {want['path']}")
    else:
        wrong = [k for k, v in want.items() if have.get(k, "").upper() != v.upper()]
        if wrong:
            problems.append(f"its {want['path']} subsection has {', '.join(f'{k}={have.get(k)}' for k in wrong)}, "
                            f"not {', '.join(f'{k}={want[k]}' for k in wrong)}")
    allowed = options.get(ALLOWED_SOURCE, "")
    if allowed.upper() not in ("ALL", "ONLY_REMOTE") and allowed_prefix(m) not in allowed.split(":"):
        problems.append(f"{ALLOWED_SOURCE} does not list {allowed_prefix(m)} (GDAL >= 3.12 refuses the raw bands)")
    for k, v in READ_AHEAD.items():
        if not _at_least(options.get(k), v):
            problems.append(f"{k} is {options.get(k) or 'not set'}, tessvrt's reads need {v} (slow reads without it)")
    return problems


def _at_least(value: str | None, ours: str) -> bool:
    try:
        return value is not None and int(value) >= int(ours)
    except ValueError:
        return False


GDAL_ERROR = "ERROR 4: Unable to open /vsis3/...npy"  # what GDAL says without the settings (and nothing more)


def _bucket_settings(path: Path, ep: Endpoint, m: Mirror) -> dict[str, str] | None:
    """The [credentials] subsection a config file holds for the mirror's bucket (None: none, or unreadable)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    want = credentials(ep, m.bucket)
    return next((s for s in parse_config(text)[1].values() if s.get("path", "").rstrip("/") == want["path"]), None)


def _has_settings(path: Path, ep: Endpoint, m: Mirror) -> bool:
    have = _bucket_settings(path, ep, m)
    return have is not None and have.get("AWS_S3_ENDPOINT") == credentials(ep, m.bucket)["AWS_S3_ENDPOINT"]


def _other_configs() -> list[Path]:
    """Config files tessvrt may have written that GDAL does not read now: ~/.gdal/gdalrc when GDAL_CONFIG_FILE
    names another, and the sample service's ($TESSVRT_CACHE_DIR or ~/.cache/tessvrt)/sample/gdalrc: a new
    shell without the README's `export GDAL_CONFIG_FILE` lands here."""
    cache = os.environ.get("TESSVRT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tessvrt")
    found = [Path(os.path.expanduser("~")) / ".gdal" / "gdalrc", Path(cache) / "sample" / "gdalrc"]
    return [p for p in dict.fromkeys(found) if p != default_path()]


def config_fix(endpoint: str | None, source: str | None) -> str:
    """The command that gives GDAL the settings: pointing GDAL_CONFIG_FILE at a file that has them, else gdal-config."""
    m = mirror(source)
    ep = Endpoint.parse(endpoint or m.endpoint)
    for p in _other_configs():
        if p.is_file() and _has_settings(p, ep, m):
            return f"export GDAL_CONFIG_FILE={p}"
    return fix_command(endpoint, source)


def config_hint(endpoint: str | None, source: str | None, vsi: str = "s3") -> str | None:
    """One line for build and info to print when GDAL's config file lacks the bucket's settings (None when fine).

    Only the credentials are looked at (cheap, no network): without them GDAL tools fail with
    "ERROR 4: Unable to open /vsis3/...npy.Success" and nothing points at gdal-config.
    """
    if vsi != "s3":
        return None
    m = mirror(source)
    ep = Endpoint.parse(endpoint or m.endpoint)
    path = default_path()
    if _has_settings(path, ep, m):
        return None
    have = _bucket_settings(path, ep, m)
    why = "has no settings for" if have is None else f"points {credentials(ep, m.bucket)['path']} at " \
                                                      f"{have.get('AWS_S3_ENDPOINT')} for"
    return (f"GDAL's config file {path} {why} this source, so gdalinfo and QGIS cannot read the VRT yet (GDAL says "
            f"only \"{GDAL_ERROR}\"): run `{config_fix(endpoint, source)}` (`tessvrt doctor` checks it)")


def record_source(rec: dict) -> tuple[str | None, str, str]:
    """(endpoint, source, vsi) a VRT's build record reads from: the endpoint None when it is the layout's own."""
    source = rec.get("source") or DEFAULT_MIRROR
    endpoint = rec.get("endpoint")
    if endpoint == mirror(source).endpoint:
        endpoint = None
    return endpoint, source, rec.get("vsi") or "s3"


def _probe_vrt(folder: Path, vsi_path: str) -> Path:
    """A 4x1 Byte raw band over the object's first bytes: what a tile VRT's raw bands do, on a tiny read."""
    p = folder / "probe.vrt"
    p.write_text(
        '<VRTDataset rasterXSize="4" rasterYSize="1">\n'
        '  <VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">\n'
        f'    <SourceFilename relativeToVRT="0">{vsi_path}</SourceFilename>\n'
        "    <ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>4</LineOffset>\n"
        "  </VRTRasterBand>\n</VRTDataset>\n")
    return p


def _reachable(ep: Endpoint, loc: S3Location) -> str | None:
    """None when the object's first bytes come back over plain HTTP (path-style, unsigned), else why not."""
    url = f"{ep.https_base}/{loc.bucket}/{quote(loc.key)}"
    req = urllib.request.Request(url, headers={"Range": "bytes=0-3"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read(4)
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"cannot reach {url}: {getattr(exc, 'reason', None) or exc}"
    return None if body == MAGIC else f"{url} does not start with {MAGIC!r}"


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:2] if p.isdigit())


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess | str:
    env = {**PROBE_ENV, **os.environ}
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return f"no answer in {TIMEOUT} s"
    except OSError as exc:
        return str(exc)


def _python_gdal(python: str, mode: str, vrt: Path, zarr_probe: Path | None = None) -> dict:
    p = _run([python, "-c", _PROBE, str(vrt), mode, ",".join([ALLOWED_SOURCE, *READ_AHEAD]),
              *([str(zarr_probe)] if zarr_probe else [])])
    if isinstance(p, str) or p.returncode != 0:
        tail = p if isinstance(p, str) else (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return {"failed": tail}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _cli_gdal(gdalinfo: str, vrt: Path) -> dict:
    """The command-line tools: version from gdalinfo, the read by gdallocationinfo beside it."""
    p = _run([gdalinfo, "--version"])
    if isinstance(p, str) or p.returncode != 0:
        return {"failed": f"{gdalinfo} --version did not run"}
    version = p.stdout.split()[1].rstrip(",") if len(p.stdout.split()) > 1 else "?"
    out: dict = {"gdal": version, "runtime": "gdalinfo", "errors": []}
    loc = Path(gdalinfo).with_name("gdallocationinfo")
    if not loc.exists():
        return {**out, "failed": f"no gdallocationinfo beside {gdalinfo} to read with"}
    p = _run([str(loc), "-valonly", str(vrt)], stdin="0 0\n1 0\n2 0\n3 0\n")
    if isinstance(p, str):
        return {**out, "failed": p}
    out["errors"] = [ln for ln in p.stderr.splitlines() if ln.strip()]
    try:
        out["bytes"] = bytes(int(v) for v in p.stdout.split()).hex()
    except ValueError:
        pass
    return out


def _judge(what: str, res: dict, m: Mirror, file_problems: list[str], fix: str) -> Check:
    """One GDAL's verdict: the options it sees, and whether it read the object's first bytes."""
    if "failed" in res and "gdal" not in res:
        return Check(what, False, res["failed"])
    gdal = res["gdal"]
    what = f"{res['runtime']} (GDAL {gdal}, {what})" if res["runtime"] != "gdalinfo" else f"gdalinfo (GDAL {gdal}, {what})"
    if _version(gdal) < (3, 5):
        return Check(what, False, f"GDAL {gdal} ignores config files (3.5 added them): set the options as environment "
                                  "variables (`tessvrt gdal-config --print` lists them)")
    missing = []
    opts = res.get("options")
    if opts is not None:  # Python GDALs say which options are in force
        for k, v in READ_AHEAD.items():
            if not _at_least(opts.get(k), v):
                missing.append(f"{k} is {opts.get(k) or 'not set'} here")
        allowed = opts.get(ALLOWED_SOURCE) or ""
        if _version(gdal) >= (3, 12) and allowed.upper() not in ("ALL", "ONLY_REMOTE") \
                and allowed_prefix(m) not in allowed.split(":"):
            missing.append(f"{ALLOWED_SOURCE} lacks {allowed_prefix(m)} here (GDAL >= 3.12 needs it)")
    if res.get("bytes") != MAGIC.hex():
        err = next((e for e in reversed(res.get("errors", [])) if e.strip()), res.get("failed", "read no data"))
        missing.append(f"cannot read the object: {err.strip()[:200]}")
    if not missing:
        return Check(what, True, "options in force, read the object" if opts is not None else
                     "read the object (a command-line GDAL cannot show its options: the file above is what it reads)")
    if file_problems:
        hint = fix
    elif os.environ.get("GDAL_CONFIG_FILE"):
        hint = f"this GDAL does not see {os.environ['GDAL_CONFIG_FILE']}: run it with GDAL_CONFIG_FILE set (QGIS too)"
    else:
        hint = "this GDAL does not see ~/.gdal/gdalrc: run it as the same user (HOME), or set GDAL_CONFIG_FILE"
    return Check(what, False, "; ".join(missing), hint)


def doctor(endpoint: str | None = None, source: str | None = None, qgis_python: str = QGIS_PYTHON,
           vrt: str | os.PathLike | None = None) -> Report:
    """Check the config file, the source, and every GDAL found; see the module docstring.

    With a VRT, the source and endpoint it was built with are checked (those given explicitly win).
    """
    zarr_vrt = False
    if vrt is not None:
        from .record import read_record

        rec = read_record(vrt)
        zarr_vrt = rec.get("format") == "zarr"
        rec_endpoint, rec_source, _ = record_source(rec)
        endpoint = endpoint if endpoint is not None else rec_endpoint
        source = source if source is not None else rec_source
    m = mirror(source)
    ep = Endpoint.parse(endpoint or m.endpoint)
    dataset = next(d for d in DATASETS if d.npy == DEFAULT_DATASET)
    loc = S3Location(m.bucket, m.manifest_key(dataset))
    path = default_path()
    fix = config_fix(endpoint, source)
    rep = Report(path, f"{loc.uri} via {ep.https_base}")

    try:
        text = path.read_text() if path.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        text, why = None, f"cannot be read ({exc})"
    else:
        why = "does not exist"
    where = "GDAL_CONFIG_FILE" if os.environ.get("GDAL_CONFIG_FILE") else "GDAL's default"
    if text is None:
        file_problems = [f"{path} ({where}) {why}"]
        rep.checks.append(Check("config file", False, file_problems[0], fix))
    else:
        file_problems = _config_problems(text, ep, m)
        rep.checks.append(Check("config file", not file_problems,
                                f"{path} ({where}): " + ("; ".join(file_problems) or "has tessvrt's settings"), fix))

    unreachable = _reachable(ep, loc)
    rep.checks.append(Check("source", unreachable is None, unreachable or f"{loc.uri} answers at {ep.https_base}",
                            f"is the server at {endpoint} running? (check --endpoint)" if endpoint else
                            "check the network connection (and --source)"))
    if unreachable:
        rep.checks.append(Check("GDAL reads", False, "not tried: the source is unreachable"))
        return rep

    gdalinfo = shutil.which("gdalinfo")
    qgis = qgis_python if Path(qgis_python).exists() else None
    with tempfile.TemporaryDirectory(prefix="tessvrt-doctor-") as tmp:
        vrt = _probe_vrt(Path(tmp), ep.vsi_path(loc))
        zp = None
        if zarr_vrt:
            from .zarrvrt import write_probe

            zp = write_probe(Path(tmp))
        jobs = {sys.executable: lambda: _python_gdal(sys.executable, "rasterio", vrt, zp)}
        if gdalinfo:
            jobs[gdalinfo] = lambda: _cli_gdal(gdalinfo, vrt)
        if qgis:
            jobs[qgis] = lambda: _python_gdal(qgis, "qgis", vrt, zp)
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = {where: pool.submit(job) for where, job in jobs.items()}
            for where, fut in results.items():
                res = fut.result()
                if where == qgis and "gdal" not in res and "qgis" in res.get("failed", "").lower():
                    rep.checks.append(Check("QGIS", True, f"not installed for {qgis} (not checked)"))
                    continue
                rep.checks.append(_judge(where, res, m, file_problems, fix))
                if zarr_vrt and "gdal" in res:
                    from .zarrvrt import zarr_check

                    rep.checks.append(zarr_check(rep.checks[-1].what, res))
    if not gdalinfo:
        rep.checks.append(Check("gdalinfo", True, "not on PATH (not checked)"))
    if not qgis:
        rep.checks.append(Check("QGIS", True, f"no {qgis_python} (not checked)"))
    return rep

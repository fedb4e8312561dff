"""README's "Use" section, run as written against the local sample service it documents.

The commands come from README.md itself, so README and test cannot drift: the serve command is
started as a user would start it (a subprocess), the lines it prints to paste must be the first lines
of README's offline block, and every line of that block then runs in bash, one by one, in an empty
folder with a private HOME (no GDAL settings of this machine), each checked for success and, where
cheap, for its values.
"""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import assert_same

from tessvrt.testing import LIVE, SERVE_PORT, free_port

README = Path(__file__).resolve().parents[1] / "README.md"
BUCKET = LIVE.bucket


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end > 0 else len(text)]


def bash_blocks(text: str) -> list[list[str]]:
    """The ```bash blocks of a README section, as lists of non-empty lines (comments left for bash)."""
    out, block = [], None
    for line in text.splitlines():
        if line.strip() == "```bash":
            block = []
        elif line.strip() == "```" and block is not None:
            out.append(block)
            block = None
        elif block is not None and line.strip():
            block.append(line)
    return out


def words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def use_blocks() -> tuple[list[str], list[str], list[str]]:
    """(the serve command block, the offline block, the real-data block) of README's "Use" section."""
    blocks = bash_blocks(section("Use"))
    serve = [b for b in blocks if any("tessvrt.testing serve" in ln for ln in b)]
    offline = [b for b in blocks if b[0].startswith("export ENDPOINT=")]
    real = [b for b in blocks if any("london.vrt" in ln for ln in b)]
    assert len(serve) == len(offline) == len(real) == 1, "README's Use section lost one of its three blocks"
    return serve[0], offline[0], real[0]


class _Lines:
    """A subprocess's stdout lines, read in a thread so that waiting for one can time out."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []

        def pump() -> None:
            for line in proc.stdout:
                self.q.put(line.rstrip("\n"))
            self.q.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, done, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            line = self.q.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                raise AssertionError("the service stopped early:\n" + "\n".join(self.seen))
            self.seen.append(line)
        return self.seen


@pytest.fixture
def user(tmp_path) -> dict:
    """A user's shell: private HOME, none of this machine's GDAL/AWS settings, tessvrt on PATH."""
    home, work, bin_ = tmp_path / "home", tmp_path / "work", tmp_path / "bin"
    for d in (home, work, bin_):
        d.mkdir()
    shim = bin_ / "tessvrt"  # the venv's console script may not be installed (an editable checkout)
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tessvrt "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "GDAL_", "CPL_", "TESSVRT_")) and k != "XDG_CACHE_HOME"}
    env.update(HOME=str(home), PATH=f"{bin_}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return {"env": env, "home": home, "work": work}


def _check(cmd: list[str], p: subprocess.CompletedProcess, env: dict, port: int, home: Path) -> None:
    """What each README command must print or make, beyond exit status 0."""
    out = p.stdout
    if cmd[:2] == ["tessvrt", "gdal-config"]:
        assert f"AWS_S3_ENDPOINT=127.0.0.1:{port}" in Path(env["GDAL_CONFIG_FILE"]).read_text()
        assert not (home / ".gdal").exists(), "the sample's settings went into ~/.gdal/gdalrc"
    elif cmd[:2] == ["tessvrt", "doctor"]:
        assert "FAIL" not in out and "rasterio" in out, out
        if shutil.which("gdalinfo"):
            assert "ok    gdalinfo" in out, out
    elif cmd[:2] == ["tessvrt", "datasets"]:
        assert "v1.1-cam" in out and "v1.1-dclimate" in out
    elif cmd[:2] == ["tessvrt", "build"]:
        assert out.strip() == "wrote sample.vrt (9 tiles)", out
        assert p.stderr == "", f"build complained although gdal-config ran: {p.stderr}"
    elif cmd[0] == "gdalinfo":
        for want in ("Size is 175, 3350", "Band 128 ", "Type=Float32", "embedding_000", "embedding_127",
                     "NoData Value=nan"):
            assert want in out, want
    elif cmd[:2] == ["tessvrt", "info"]:
        assert "tiles (9)" in out and "EPSG:32631" in out
    elif cmd[:2] == ["tessvrt", "preview"]:
        assert out.split() == ["wrote", cmd[3], "wrote", cmd[5]], out  # the COG, then the PNG


def test_use_section_runs_offline(user, gdal_bin):
    """Start the service as README says, paste what it prints, run the offline block top to bottom."""
    serve_block, offline, _ = use_blocks()
    env, work, home = user["env"], user["work"], user["home"]
    port = free_port()  # README's port may be taken on this machine; --port is the documented way out
    serve_cmd = words(serve_block[0])
    assert serve_cmd[:4] == ["python", "-m", "tessvrt.testing", "serve"] and len(serve_block) == 1
    proc = subprocess.Popen([sys.executable, *serve_cmd[1:], "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=work)
    t0 = time.monotonic()
    try:
        seen = _Lines(proc).until(lambda s: any(x.startswith("tessvrt gdal-config") for x in s), timeout=600)
        print(f"{time.monotonic() - t0:6.1f} s  the service is ready")  # where the time goes (pytest -s shows it)
        paste = seen[next(i for i, x in enumerate(seen) if x.startswith("Paste")) + 1:]
        # the block starts with exactly what the service prints; README shows the default port and folder
        assert len(offline) > len(paste)
        for printed, written in zip(paste, offline, strict=False):
            if printed.startswith("export "):
                name, value = words(printed)[1].split("=", 1)
                wname, wvalue = words(written)[1].split("=", 1)
                assert name == wname, (printed, written)
                expect = {"ENDPOINT": f"http://127.0.0.1:{SERVE_PORT}",
                          "GDAL_CONFIG_FILE": value.replace(str(home), "$HOME")}[name]
                assert wvalue == expect, f"README's {name}={wvalue}, the service's default is {expect}"
            else:
                assert words(printed) == words(written), (printed, written)
        assert f"http://127.0.0.1:{port}" in paste[0]
        lines = paste + offline[len(paste):]  # the printed exports (real port), then README's lines as written

        ran, srcwin, sampled = [], None, None
        for line in lines:
            if line.startswith("export "):
                name = words(line)[1].split("=", 1)[0]
                p = subprocess.run(["bash", "-c", f'{line}\nprintf %s "${name}"'], capture_output=True, text=True,
                                   env=env, cwd=work, timeout=30)
                assert p.returncode == 0 and p.stdout, p.stderr
                env[name] = p.stdout
                continue
            t0 = time.monotonic()
            p = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, cwd=work, timeout=600)
            print(f"{time.monotonic() - t0:6.1f} s  {line}")
            assert p.returncode == 0, f"README command failed: {line}\n{p.stdout}\n{p.stderr}"
            _check(words(line), p, env, port, home)
            ran.append(words(line)[:2])
            if words(line)[:2] == ["tessvrt", "sample"]:
                sampled = p.stdout
            if words(line)[0] == "gdal_translate":
                x, y, w, h = (int(v) for v in words(line)[2:6])  # -srcwin X Y W H
                srcwin = ((y, y + h), (x, x + w))
        assert ["tessvrt", "materialise"] in ran and srcwin is not None and sampled is not None
    finally:
        proc.send_signal(2)  # Ctrl-C
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in err, err
    with pytest.raises(OSError):  # the S3 server went with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    # values: gdal_translate's patch (GDAL 3.6 through the VRT) is the materialised COG at the same place
    with rasterio.open(work / "patch.tif") as d:
        patch = d.read()
    with rasterio.open(work / "out.tif") as d:
        cog = d.read(window=srcwin)
        cog3 = d.read([1, 2, 3])
    assert patch.shape == (128, srcwin[0][1] - srcwin[0][0], srcwin[1][1] - srcwin[1][0])
    assert np.isfinite(patch).mean() > 0.5, "README's window shows mostly NaN: pick one with data"
    assert_same(patch, cog, "gdal_translate patch vs materialised COG")
    with rasterio.open(work / "rgb.tif") as d:
        assert_same(d.read(), cog3, "--bands 1,2,3 vs bands 1-3 of the full COG")
    assert (home / ".cache" / "tessvrt" / "sample" / "sample.json").is_file()  # the documented folder
    zarr_values(offline, work, home / ".cache" / "tessvrt" / "sample" / BUCKET / "tessera/tessera/zarr/v1.1-dclimate",
                sampled)


def zarr_values(offline: list[str], work: Path, store: Path, sampled: str) -> None:
    """The Zarr commands' outputs equal zarr-python's reading of the store the service served: the COG pixel for
    pixel (NaN where the scale is invalid), each sampled point's status and 128 values."""
    import csv
    import io

    from pyproj import Transformer

    from tessvrt.zarrsample import reference

    cmd = next(words(ln) for ln in offline if words(ln)[:2] == ["tessvrt", "materialise"] and "--dataset" in ln)
    out = work / cmd[2]
    with rasterio.open(out) as d:
        got, t, epsg = d.read(), d.transform, d.crs.to_epsg()
    zone = epsg % 100
    g = zarr_group(store, zone)
    r0, c0 = round((g["oy"] - t.f) / 10), round((t.c - g["ox"]) / 10)
    ref, raw = reference(store, zone, 2024, slice(r0, r0 + got.shape[1]), slice(c0, c0 + got.shape[2]))
    assert_same(got, ref, f"{out.name} vs zarr-python")
    assert np.isfinite(got).mean() > 0.3 and np.isposinf(raw).any() and np.isnan(raw).any()
    pts = [w for w in next(words(ln) for ln in offline if words(ln)[:2] == ["tessvrt", "sample"])[2:] if "," in w]
    rows = list(csv.DictReader(io.StringIO(sampled)))
    assert len(rows) == len(pts) >= 3
    statuses = []
    for pt, row in zip(pts, rows, strict=True):
        lon, lat = (float(v) for v in pt.split(","))
        x, y = Transformer.from_crs(4326, 32600 + zone, always_xy=True).transform(lon, lat)
        r, c = int((g["oy"] - y) // 10), int((x - g["ox"]) // 10)
        ref, raw = reference(store, zone, 2024, slice(r, r + 1), slice(c, c + 1))
        vals = np.array([float(row[f"embedding_{b:03d}"] or "nan") for b in range(128)], np.float32)
        assert_same(vals, ref[:, 0, 0], f"sample at {pt}")
        s = raw[0, 0]
        statuses.append(row["status"])
        assert row["status"] == ("valid" if 0 < s < 1 else "water" if np.isnan(s) else "nodata" if s == np.inf else "invalid")
    assert statuses == ["valid", "nodata", "water"], statuses  # as README's comment says


def zarr_group(store: Path, zone: int) -> dict[str, float]:
    """The grid origin of a zone group, from its zarr.json as upstream writes it."""
    import json

    tr = json.loads((store / f"utm{zone:02d}" / "zarr.json").read_text())["attributes"]["spatial:transform"]
    return {"ox": tr[2], "oy": tr[5]}


def test_real_data_block_is_the_offline_block():
    """README's real-data commands are the offline ones without the exports and --endpoint (London for the
    sample's box), so they too are what the test above ran."""
    _, offline, real = use_blocks()

    def norm(block: list[str]) -> list[list[str]]:
        cmds = [words(ln) for ln in block if not ln.startswith("export ")]
        bbox = next(c[c.index("--bbox") + 1] for c in cmds if "--bbox" in c)
        out = []
        for c in cmds:
            c = [w for i, w in enumerate(c) if w != "--endpoint" and (i == 0 or c[i - 1] != "--endpoint")]
            out.append([("BBOX" if w == bbox else w.replace("london", "NAME").replace("sample", "NAME")) for w in c])
        return out

    have = norm(offline)
    for cmd in norm(real):
        assert cmd in have, f"README's real-data command {' '.join(cmd)} has no offline twin"
    assert "--endpoint" not in " ".join(real)

"""A sample TESSERA bucket and a local S3 server, for the demo, the tests and the benchmarks.

The bucket imitates the live service (Source Cooperative: bucket us-west-2.opendata.source.coop,
keys tessera/tessera/npy/{dataset}/..., one manifest per dataset whose path columns name the
gateway's bucket, as upstream's published manifests may), or the legacy layout for old mirrors.
Tiles have the real geometry of the SPEC formula (high latitudes keep them small), smooth
values, NaN water, a huge-sentinel stripe, zero scales, scales at and above upstream's 1.0
limit, one tile with (H, W, 128) scales, one tile with an unusual .npy header, tiles across the
UTM 31/32 boundary, southern tiles, a second year and a second dataset (v1.1-cam); and, for
`serve` and the demo, the Zarr store v1.1-dclimate (tessvrt.zarrsample) at its real key.
Needs moto[server] and zarr (the `test` extra).
"""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .grid import Tile, tile_grids
from .source import npy
from .source.datasets import DATASETS, MIRRORS, Mirror

LIVE = MIRRORS["source-coop"]
GATEWAY_ROOT = "tessera/tessera/"  # bucket/prefix the sample manifests name (the gateway's, as published)
# pixels of every sample tile given scales around upstream's limit of 1.0: (row, col, scale)
EDGE_SCALES = ((7, 1, 1.0), (7, 2, 1.5), (7, 3, 1e5), (7, 4, 0.9999999), (8, 1, 0.5))


@dataclass(frozen=True)
class SampleTile:
    tile: Tile
    year: int = 2024
    dataset: str = "v1"  # npy dataset name
    scales_3d: bool = False
    header_pad: int = 0  # extra header bytes: forces the header-read path


def sample_tiles() -> list[SampleTile]:
    block = [Tile.at(lon, lat) for lat in (88.25, 88.15, 88.05) for lon in (4.05, 4.15, 4.25)]
    tiles = [SampleTile(t, scales_3d=(t == Tile.at(4.25, 88.05))) for t in block]
    # across the zone 31 / 32 boundary at 6 E
    tiles += [SampleTile(Tile.at(lon, 88.05)) for lon in (5.85, 5.95, 6.05, 6.15)]
    tiles += [SampleTile(Tile.at(lon, 88.15)) for lon in (5.95, 6.05)]
    # southern hemisphere, one with an unusual header
    tiles += [SampleTile(Tile.at(10.05, -88.05)), SampleTile(Tile.at(10.05, -88.15), header_pad=64)]
    # another year and another dataset version over part of the block
    tiles += [SampleTile(Tile.at(4.05, 88.15), year=2023), SampleTile(Tile.at(4.15, 88.15), year=2023)]
    tiles += [SampleTile(Tile.at(4.05, 88.15), dataset="v1.1-cam"), SampleTile(Tile.at(4.15, 88.15), dataset="v1.1-cam")]
    return tiles


def tile_arrays(st: SampleTile, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic embedding-like values: smooth in space and band, distinct per tile/year/version."""
    seed = (st.tile.lon_i * 7919 + st.tile.lat_i * 104729 + st.year * 31 + int(st.dataset != "v1") * 17) % (2**32)
    rng = np.random.default_rng(seed)
    r = np.arange(height, dtype=np.float32)[:, None, None]
    c = np.arange(width, dtype=np.float32)[None, :, None]
    b = np.arange(128, dtype=np.float32)[None, None, :]
    ph = rng.uniform(0, 6.28, 3).astype(np.float32)
    v = 70 * np.sin(r / 37 + b * 0.21 + ph[0]) * np.cos(c / 23 - b * 0.13 + ph[1]) + 40 * np.sin(b * 0.5 + ph[2])
    v += rng.normal(0, 3, (1, 1, 128)).astype(np.float32)
    emb = np.clip(np.rint(v), -128, 127).astype(np.int8)
    # row 1 holds every int8 value (-128..127 across columns and bands), so reads of the rows next
    # to a tile edge check the whole Byte -> signed mapping, not only the smooth values' range
    if height > 1:
        emb[1] = ((np.arange(width)[:, None] * 128 + np.arange(128)[None, :]) % 256 - 128).astype(np.int8)
    rr, cc = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    s = (0.01 + 0.004 * np.sin(rr / 50.0 + ph[0]) + 0.003 * np.cos(cc / 9.0 + ph[1])).astype(np.float32)
    s[(rr - height * 0.7) ** 2 / 40**2 + (cc - width * 0.3) ** 2 / 12**2 < 1] = np.nan  # water
    s[height // 3 : height // 3 + 3, :] = np.float32(3.4e38)  # huge sentinel stripe
    s[: height // 10, width // 2 : width // 2 + 5] = 0.0  # zero scales
    s[5, 2] = -0.5
    s[6, 3] = np.inf
    for r, c, v in EDGE_SCALES:
        if r < height and c < width:
            s[r, c] = v
    if st.scales_3d:
        with np.errstate(over="ignore"):  # the sentinel stripe overflows to inf: still invalid
            s3 = np.repeat(s[:, :, None], 128, axis=2) * (1 + np.arange(128, dtype=np.float32) / 256)
        s3[:, :, 7] = np.where(rr % 50 == 0, 0.0, s3[:, :, 7])  # band-specific invalid scales
        return emb, s3.astype(np.float32)
    return emb, s


def _npy_bytes(arr: np.ndarray, pad: int) -> bytes:
    head = npy.build_header(arr.dtype.str, arr.shape)
    if pad:
        text = head[10:].decode("latin1").rstrip("\n") + " " * pad + "\n"
        head = head[:8] + len(text).to_bytes(2, "little") + text.encode("latin1")
    return head + np.ascontiguousarray(arr).tobytes()


def build_sample(folder: Path, tiles: list[SampleTile] | None = None, mirror: Mirror = LIVE) -> Path:
    """Write the sample bucket as files under folder/<bucket>/<keys>; returns that bucket folder.

    Keys follow the mirror's layout; each dataset's manifest lists its own rows, with path columns
    naming the gateway's bucket (live layouts) or the bucket itself (legacy).
    """
    tiles = tiles or sample_tiles()
    root = folder / mirror.bucket
    rows: dict[str, list[dict]] = {}
    grids = tile_grids([st.tile for st in tiles])
    named = GATEWAY_ROOT if not mirror.legacy else mirror.roots[0]
    for st, g in zip(tiles, grids, strict=False):
        ds = next(d for d in DATASETS if d.npy == st.dataset)
        gkey, skey = mirror.tile_keys(ds, st.year, st.tile)
        emb, sc = tile_arrays(st, g.height, g.width)
        gb, sb = _npy_bytes(emb, st.header_pad), _npy_bytes(sc, st.header_pad)
        for key, data in ((gkey, gb), (skey, sb)):
            p = root / key
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists() or p.stat().st_size != len(data):
                p.write_bytes(data)
        rows.setdefault(st.dataset, []).append({
            "version": ds.version, "variant": ds.variant, "year": st.year, "lon": st.tile.lon, "lat": st.tile.lat,
            "grid_path": f"s3://{named}{gkey[len(mirror.prefix):]}",
            "scales_path": f"s3://{named}{skey[len(mirror.prefix):]}",
            "grid_size": len(gb), "scales_size": len(sb),
            "grid_mtime": pd.Timestamp("2025-01-01", tz="UTC"), "scales_mtime": pd.Timestamp("2025-01-01", tz="UTC"),
            "lon_i": np.int32(st.tile.lon_i), "lat_i": np.int32(st.tile.lat_i),
            "directory": f"s3://{named}{gkey[len(mirror.prefix):].rsplit('/', 2)[0]}",
        })
    for name, rs in rows.items():
        ds = next(d for d in DATASETS if d.npy == name)
        p = root / mirror.manifest_key(ds)
        p.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rs).to_parquet(p, index=False)
    return root


def read_tile(bucket_root: Path, uri: str) -> np.ndarray:
    """Load a sample tile's array straight from the files (the test reference); uri is s3://<bucket>/<key>."""
    key = uri.split("/", 3)[3]
    return np.load(bucket_root / key, mmap_mode="r")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """moto's standalone S3 server on 127.0.0.1, loaded with a bucket folder, anonymous reads allowed."""

    module = "tessvrt.s3server"  # moto.server, plain ranged GETs read in place (stock: "moto.server")

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MotoServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # seen once at load 17: werkzeug still finishing a request
                self.proc.kill()
                self.proc.wait(10)

    @functools.cached_property
    def client(self):  # noqa: ANN201 - a boto3 S3 client (boto3 comes with moto)
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-west-2",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def load(self, bucket_root: Path) -> None:
        s3 = self.client
        bucket = bucket_root.name
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                  "Action": ["s3:GetObject", "s3:ListBucket"],
                  "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        # uploads side by side: one at a time, each waits on the server's Python (about 2.4x slower measured)
        from concurrent.futures import ThreadPoolExecutor

        files = [p for p in sorted(bucket_root.rglob("*")) if p.is_file()]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: self.put(f"s3://{bucket}/{p.relative_to(bucket_root).as_posix()}", p.read_bytes()), files))

    def put(self, uri: str, data: bytes) -> None:
        """Store an object (tests use it to plant damaged copies of tiles)."""
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        self.client.upload_fileobj(io.BytesIO(data), bucket, key)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def env_with_gdalrc(gdalrc: Path) -> dict[str, str]:
    """The environment a GDAL tool needs: only where the tessvrt-written config file is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GDAL_", "CPL_"))}
    env["GDAL_CONFIG_FILE"] = str(gdalrc)
    return env


class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 for the life of a `with` block."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._httpd = None

    def _serve(self, handler: type):  # noqa: ANN202 - returns the subclass instance
        import threading
        from http.server import ThreadingHTTPServer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()


class FileServer(_LocalServer):
    """A minimal S3-style (path-style, unsigned GET/HEAD with Range) file server on 127.0.0.1.

    For benchmarks: it serves a bucket folder at hundreds of MB/s, so the server is not what is
    measured (moto's server parses and copies every object through Python and is far slower).
    """

    def __init__(self, folder: Path, port: int | None = None):
        super().__init__(port)
        self.folder = folder

    def __enter__(self) -> FileServer:
        from http.server import BaseHTTPRequestHandler

        root = self.folder

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _target(self) -> Path | None:
                path = self.path.split("?", 1)[0].lstrip("/")
                p = (root / path).resolve()
                return p if p.is_file() and root.resolve() in p.parents else None

            def _send(self, head_only: bool) -> None:
                p = self._target()
                if p is None:
                    body = b"<Error><Code>NoSuchKey</Code></Error>"
                    self.send_response(404)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head_only:
                        self.wfile.write(body)
                    return
                size = p.stat().st_size
                start, end = 0, size - 1
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start, end = (int(a), min(int(b) if b else size - 1, size - 1)) if a else (max(size - int(b), 0), size - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{int(p.stat().st_mtime_ns)}-{size}"')
                self.end_headers()
                if head_only:
                    return
                with open(p, "rb") as f:
                    f.seek(start)
                    left = end - start + 1
                    while left > 0:
                        chunk = f.read(min(left, 8 << 20))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        left -= len(chunk)

            def do_GET(self) -> None:  # noqa: N802
                self._send(False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._send(True)

        return self._serve(Handler)


class BlackHole:
    """A TCP port on 127.0.0.1 that takes connections and never answers: an unreachable host, locally.

    It listens with the smallest backlog and never accepts, so the first connections hang waiting
    for a reply and later ones for the connection itself (their SYNs are dropped).
    """

    def __enter__(self) -> BlackHole:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


TRANSIENT_FAULTS = ("503", "500", "429", "reset", "truncate", "delay")
HANGING_FAULTS = ("stall", "stall_body", "trickle")  # a request that never ends unless the client gives up
LYING_FAULTS = ("wrong_start", "ignore_range")  # a well-formed reply that is not the byte range asked for


class FaultProxy(_LocalServer):
    """An HTTP proxy on 127.0.0.1 in front of an S3 server that injects faults at given rates.

    Faults (one at most per request, each drawn with its own rate): "503", "500", "429" (an S3
    error reply), "reset" (the connection closes mid-body), "truncate" (a well-formed reply whose
    body and Content-Length are cut short), "delay" (`delay` seconds before replying) and "flip"
    (one byte of the body inverted, headers untouched); hanging: "stall" (the request is never
    answered), "stall_body" (headers and half the body, then silence), "trickle" (the body at
    `trickle` = (bytes, every seconds), slow enough to defeat a read timeout), each lasting up to
    `stall` seconds; lying: "wrong_start" (a ranged GET answered 206 for the range `shift` bytes
    away, Content-Range saying so) and "ignore_range" (200 with the whole object). The first `skip`
    requests pass untouched; `script` puts given faults on given request numbers (from 1). An
    outage (`go_down`, or `outage` seconds from request number `outage_after`) refuses connections
    and drops requests on open ones. `injected` counts what was done and `log` keeps (method,
    path, range, status, body bytes) of every request.
    """

    def __init__(self, upstream: str, rates: dict[str, float] | None = None, seed: int = 0, delay: float = 0.2, *,
                 stall: float = 600.0, trickle: tuple[int, float] = (64, 1.0), shift: int = 128, skip: int = 0,
                 outage_after: int | None = None, outage: float = 0.0, script: dict[int, str] | None = None):
        import random
        import threading
        from collections import Counter

        self.upstream = upstream.rstrip("/")
        self.rates = dict(rates or {})
        self.script = dict(script or {})  # request number (from 1) -> fault, instead of drawing one
        unknown = {*self.rates, *self.script.values()} - {*TRANSIENT_FAULTS, *HANGING_FAULTS, *LYING_FAULTS, "flip"}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self.delay, self.stall, self.trickle, self.shift, self.skip = delay, stall, trickle, shift, skip
        self.outage_after, self.outage = outage_after, outage
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.log: list[tuple[str, str, str, int, int]] = []
        self.requests = 0
        self.in_flight = 0
        self.outages = 0
        self._down_until = 0.0
        self._closing = threading.Event()
        self._state = threading.Lock()
        super().__init__()

    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def go_down(self, seconds: float) -> None:
        """Vanish for `seconds`: connections are refused and requests on connections already open are dropped."""
        import threading

        self._down_until = time.monotonic() + seconds
        self.outages += 1
        threading.Thread(target=self._outage, daemon=True).start()

    def _outage(self) -> None:
        with self._state:
            httpd, self._httpd = self._httpd, None
        if httpd:
            httpd.shutdown()
            httpd.server_close()
        if self._closing.wait(max(0.0, self._down_until - time.monotonic())):
            return
        with self._state:
            if not self._closing.is_set():
                self._serve(self._handler)  # the same port again

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # ends stalls and trickles, and any outage for good
        with self._state:
            super().__exit__(*exc)
            self._httpd = None

    def settle(self, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Wait until no request is in flight and none has arrived for `quiet` seconds.

        A client killed mid-request leaves the proxy finishing (and logging) its upstream reads
        afterwards; a test that counts a later run's requests must not count those.
        """
        deadline = time.monotonic() + timeout
        seen, since = (self.requests, len(self.log)), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = (self.requests, len(self.log))
            if now != seen or self.in_flight:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
        raise TimeoutError(f"the proxy still had {self.in_flight} requests in flight after {timeout:.0f} s")

    def reads(self, suffix: str = ".npy") -> tuple[int, int]:
        """(requests, body bytes) logged so far for objects whose path ends with suffix (tile data)."""
        hits = [e for e in self.log if e[1].endswith(suffix)]
        return len(hits), sum(e[4] for e in hits)

    def _pick(self) -> str | None:
        for fault, rate in self.rates.items():
            if self.rng.random() < rate:
                return fault
        return None

    def __enter__(self) -> FaultProxy:
        import http.client
        import socket
        import threading
        import time as _time
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import urlparse

        proxy = self
        up = urlparse(self.upstream)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (ConnectionError, TimeoutError):  # a client that gave up on a hanging reply: expected here
                    pass

            def _drop(self) -> None:
                """Close the connection without (more of) a reply: a server gone mid-request."""
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _hit(self, fault: str) -> None:
                with lock:
                    proxy.injected[fault] += 1

            def _upstream_headers(self, fault: str | None) -> tuple[dict[str, str], str | None]:
                """The headers to forward, Range changed by a lying fault (returned as None where it does not apply)."""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                if fault not in LYING_FAULTS:
                    return headers, fault
                a, sep, b = headers.get("Range", "").removeprefix("bytes=").partition("-")
                if self.command != "GET" or not (sep and a.isdigit() and b.isdigit()):
                    return headers, None
                if fault == "ignore_range":
                    del headers["Range"]
                else:
                    d = -proxy.shift if int(a) >= proxy.shift else proxy.shift
                    headers["Range"] = f"bytes={int(a) + d}-{int(b) + d}"
                return headers, fault

            def _forward(self) -> None:
                with lock:
                    proxy.in_flight += 1
                try:
                    self._forward_one()
                finally:
                    with lock:
                        proxy.in_flight -= 1

            def _forward_one(self) -> None:
                with lock:
                    proxy.requests += 1
                    if proxy.outage_after is not None and proxy.requests == proxy.outage_after:
                        proxy.go_down(proxy.outage)
                    fault = proxy._pick() if proxy.requests > proxy.skip else None
                    fault = proxy.script.get(proxy.requests, fault)
                rng = self.headers.get("Range", "")
                if proxy.is_down():
                    proxy.log.append((self.command, self.path, rng, 0, 0))
                    self._drop()
                    return
                if fault in ("503", "500", "429"):
                    self._hit(fault)
                    code = {"503": "SlowDown", "500": "InternalError", "429": "SlowDown"}[fault]
                    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    proxy.log.append((self.command, self.path, rng, int(fault), len(body)))
                    return
                if fault == "delay":
                    _time.sleep(proxy.delay)
                if fault == "stall":  # taken, never answered
                    self._hit(fault)
                    proxy.log.append((self.command, self.path, rng, 0, 0))
                    proxy._closing.wait(proxy.stall)
                    self._drop()
                    return
                headers, fault = self._upstream_headers(fault)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if self.command == "GET" and len(body) > 1 and resp.status in (200, 206):
                    if fault == "flip":
                        i = proxy.rng.randrange(len(body))
                        body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
                    elif fault == "truncate":
                        body = body[: len(body) // 2]
                elif fault in ("flip", "truncate", "reset", *HANGING_FAULTS):
                    fault = None  # nothing to corrupt: pass through
                if fault:
                    self._hit(fault)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                proxy.log.append((self.command, self.path, rng, resp.status, len(body)))
                if self.command == "HEAD":
                    return
                if fault in ("reset", "stall_body"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if fault == "stall_body":
                        proxy._closing.wait(proxy.stall)
                    self._drop()
                    return
                if fault == "trickle":
                    self._trickle(body)
                    return
                self.wfile.write(body)

            def _trickle(self, body: bytes) -> None:
                n, every = proxy.trickle
                for i in range(0, len(body), n):
                    if proxy._closing.wait(every):
                        break
                    try:
                        self.wfile.write(body[i:i + n])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        break
                self._drop()

            def do_GET(self) -> None:  # noqa: N802
                self._forward()

            def do_HEAD(self) -> None:  # noqa: N802
                self._forward()

        self._handler = Handler
        return self._serve(Handler)


# The sample service: `python -m tessvrt.testing serve` keeps the sample bucket on a local S3 server
# so that README's "Use" commands (gdal-config, build, gdalinfo, QGIS, info, materialise) run offline.

SERVE_PORT = 8421
SAMPLE_BBOX = "4.0,88.0,4.3,88.3"  # the 3x3 block of 2024 tiles at 88 N


def sample_dir() -> Path:
    """The one folder `serve` and the demo keep the sample bucket in (reused, not made per run):
    $TESSVRT_CACHE_DIR/sample, else ~/.cache/tessvrt/sample."""
    from .source.manifest import cache_dir

    return cache_dir() / "sample"


def _recipe() -> str:
    """A fingerprint of the code that makes the sample: a changed generator rebuilds the folder."""
    import hashlib
    import inspect

    from . import zarrsample

    parts = [inspect.getsource(f) for f in (sample_tiles, tile_arrays, _npy_bytes, build_sample, npy.build_header,
                                            build_zarr_sample)]
    parts += [inspect.getsource(zarrsample), repr(EDGE_SCALES), repr(DATASETS), repr(LIVE), repr(ZARR_STORES)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def ensure_sample(folder: Path | None = None) -> tuple[Path, bool]:
    """(the sample bucket under folder, whether an existing one was reused); rebuilt only when missing or outdated.

    Callers hold `_sample_lock(folder)`: a rebuild deletes the old bucket first.
    """
    import shutil

    folder = folder or sample_dir()
    stamp, root = folder / "sample.json", folder / LIVE.bucket
    recipe = _recipe()
    try:
        if json.loads(stamp.read_text()).get("recipe") == recipe and root.is_dir():
            return root, True
    except (OSError, ValueError):
        pass
    stamp.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    build_sample(folder)
    build_zarr_sample(root)
    stamp.write_text(json.dumps({"recipe": recipe}))
    return root, False


class _sample_lock:  # noqa: N801 - used as a context manager
    """An exclusive lock on the sample folder (two serves or a serve and a demo may start together)."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"

    def __enter__(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self._f, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        self._f.close()


ZARR_STORES = {"v1.1-dclimate": "upstream"}  # store -> zarrsample layout served beside the npy tiles
ZARR_BBOX = "5.9930,0.0030,5.9955,0.0060"  # inside one shard of the served store's zone 31 (near 6 E, 0 N)


def build_zarr_sample(root: Path, stores: dict[str, str] = ZARR_STORES) -> None:
    """Write the sample Zarr stores (tessvrt.zarrsample: upstream's layout, written by zarr-python) under the
    bucket folder at the keys tessvrt reads, tessera/tessera/zarr/{store}/: about 4 MB and 3 s a store."""
    import shutil
    import warnings

    from .zarrsample import write_store

    for name, layout in stores.items():
        folder = root / LIVE.zarr_prefix(next(d for d in DATASETS if d.zarr == name))
        shutil.rmtree(folder, ignore_errors=True)
        with warnings.catch_warnings():  # zarr-python says consolidated metadata is not in the v3 spec: upstream writes it
            warnings.simplefilter("ignore")
            write_store(folder, layout)


def paste_lines(url: str, folder: Path) -> list[str]:
    """What a user pastes into another shell to use the service (README "Use" starts with these)."""
    return [f"export ENDPOINT={url}", f"export GDAL_CONFIG_FILE={folder / 'gdalrc'}",
            "tessvrt gdal-config --endpoint $ENDPOINT"]


def serve(port: int = SERVE_PORT, folder: Path | None = None) -> int:
    """Serve the sample bucket on 127.0.0.1:port until Ctrl-C (or SIGTERM); returns the exit status.

    The GDAL config it recommends lives in the sample folder, not ~/.gdal/gdalrc: pointing the real
    bucket's name at a local server there would break reading the real data once the server stops.
    """
    import importlib.util
    import signal

    def fail(msg: str) -> int:
        print(f"tessvrt: error: {msg}", file=sys.stderr)
        return 1

    for module, what in (("moto", "moto's S3 server"), ("zarr", "zarr-python (it writes the sample Zarr stores)")):
        if importlib.util.find_spec(module) is None:
            return fail(f"the sample service needs {what}: pip install 'tessvrt[test]' (or '.[test]')")
    folder = (folder or sample_dir()).expanduser().resolve()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return fail(f"port {port} is in use (is a sample service already running?); choose another with --port N")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)  # stop as on Ctrl-C: the S3 server goes too
    srv = MotoServer(port)
    try:
        with _sample_lock(folder):
            try:
                root, reused = ensure_sample(folder)
            except OSError as exc:
                return fail(f"cannot write the sample bucket in {folder} ({exc.strerror or exc}); choose --dir")
            srv.start()
            srv.load(root)
        print(f"sample bucket: {root} ({'reused' if reused else 'built'}; tiles at 88 N, e.g. --bbox {SAMPLE_BBOX} "
              f"--year 2024; Zarr store {', '.join(ZARR_STORES)} near 6 E, 0 N, e.g. --bbox {ZARR_BBOX})")
        print(f"local S3 server: {srv.url} (anonymous reads; Ctrl-C stops it)\n")
        print("Paste into another shell (README, section Use):")
        print("\n".join(paste_lines(srv.url, folder)), flush=True)
        assert srv.proc is not None
        code = srv.proc.wait()
        return fail(f"the S3 server stopped on its own (exit {code})")
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m tessvrt.testing serve [--port N] [--dir DIR]`."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tessvrt.testing",
                                 description="Keep tessvrt's sample bucket on a local S3 server, to try tessvrt offline.")
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("serve", help="serve the sample bucket until Ctrl-C and print the lines to paste")
    sp.add_argument("--port", type=int, default=SERVE_PORT, help=f"port on 127.0.0.1 (default {SERVE_PORT})")
    sp.add_argument("--dir", type=Path, default=None,
                    help="folder of the sample bucket (default $TESSVRT_CACHE_DIR/sample or ~/.cache/tessvrt/sample)")
    args = ap.parse_args(argv)
    return serve(args.port, args.dir)


if __name__ == "__main__":
    sys.exit(main())

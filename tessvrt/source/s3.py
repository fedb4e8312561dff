"""Where tile bytes live: s3:// URIs, GDAL /vsi paths to them, an anonymous S3 client, and reads
that check every reply, wait on nothing without a deadline and give up in bounded time."""

from __future__ import annotations

import hashlib
import os
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlparse, urlsplit, urlunsplit

from ..errors import MissingObject, TessvrtError

DEFAULT_REGION = "us-west-2"

# Deadlines (issue 13): no network wait is longer than these, and every request gives up in bounded time.
CONNECT_TIMEOUT = 5.0  # s to open a connection
READ_TIMEOUT = 10.0  # s a connection may stay silent mid-reply
LOW_SPEED = (16 * 1024, 10.0)  # fewer bytes than this in this many s: a trickle, abandoned like a stall
RETRY_SECONDS = 75.0  # retrying lasts this long once the server has answered (outages up to ~60 s survived)
FIRST_CONTACT_SECONDS = 10.0  # ... and this long before it ever has: an unreachable host is said within ~10 s
BACKOFF = (0.25, 5.0)  # first and longest pause between attempts
SLOW_STEP = 2.0  # a step still running after this many s says what it fetches
WRONG_TRIES = 6  # replies that are not the bytes asked for (wrong range, failed checksum): tried this often, then refused

T = TypeVar("T")


# --- what the user is told ---------------------------------------------------------------------

def _stderr(line: str) -> None:
    sys.stderr.write(f"tessvrt: {line}\n")
    sys.stderr.flush()


_report: Callable[[str], None] | None = _stderr
_said: set[str] = set()


def set_progress(report: Callable[[str], None] | None) -> None:
    """Where lines about slow network steps go (default: stderr); None silences them (--quiet)."""
    global _report
    _report = report


def progress(line: str) -> None:
    if _report is not None:
        _report(line)


def notice(line: str) -> None:
    """A line the user sees whatever --quiet says (a secret kept out of what is stored), once per process."""
    if line not in _said:
        _said.add(line)
        _stderr(line)


def slow_step() -> float:
    """SLOW_STEP, or TESSVRT_SLOW_STEP's seconds (the tests raise it: on a loaded machine the line would join
    output that they compare exactly)."""
    try:
        return float(os.environ.get("TESSVRT_SLOW_STEP", SLOW_STEP))
    except ValueError:
        return SLOW_STEP


@contextmanager
def announced(line: str, after: float | None = None) -> Iterator[None]:
    """Say `line` if the step is still running after `after` s (default slow_step()): long steps say what they
    fetch, short ones stay quiet."""
    timer = threading.Timer(slow_step() if after is None else after, progress, (line,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# --- locations and endpoints -------------------------------------------------------------------

def public_url(url: str) -> tuple[str, bool]:
    """`url` without user-info, query string and fragment (where passwords, signatures and tokens travel),
    and whether anything was removed. Local paths and unparseable text come back unchanged."""
    try:
        u = urlsplit(url)
    except ValueError:
        return url, False
    if u.scheme.lower() not in ("http", "https", "s3") or not u.netloc:
        return url, False
    clean = urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, "", ""))
    return clean, clean != url


def masked(url: str) -> str:
    """`url` fit for a message even when it does not parse: user-info and query string hidden."""
    return re.sub(r"\?.*", "?...", re.sub(r"//[^/@]*@", "//...@", url), flags=re.S)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        u = urlparse(uri)
        if u.scheme != "s3" or not u.netloc or not u.path.strip("/"):
            raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
        key = u.path.lstrip("/")
        if ".." in key.split("/") or key.startswith("/"):
            raise ValueError(f"unsafe key in {uri!r}")
        return cls(u.netloc, key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Endpoint:
    """An S3 service: AWS in a region (url None) or a mirror / local server.

    `url` never holds a user name, password or query string (parse removes them: reads are anonymous),
    so it can be written into records and GDAL settings as it is.
    """

    url: str | None = None
    region: str = DEFAULT_REGION

    @property
    def https_base(self) -> str:
        return (self.url or f"https://s3.{self.region}.amazonaws.com").rstrip("/")

    @property
    def gdal_options(self) -> dict[str, str]:
        """Options GDAL's /vsis3/ needs to read this endpoint anonymously."""
        u = urlparse(self.https_base)
        # path-style always: Source Cooperative's bucket name has dots, which break virtual hosting over TLS
        return {"AWS_NO_SIGN_REQUEST": "YES", "AWS_REGION": self.region, "AWS_S3_ENDPOINT": u.netloc,
                "AWS_HTTPS": "YES" if u.scheme == "https" else "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}

    def vsi_path(self, loc: S3Location, vsi: str = "s3") -> str:
        if vsi == "s3":
            return f"/vsis3/{loc.bucket}/{loc.key}"
        return f"/vsicurl/{self.https_base}/{loc.bucket}/{loc.key}"

    @classmethod
    def parse(cls, url: str | None) -> Endpoint:
        """--endpoint as given: malformed is one line; user-info and query string are removed, saying so."""
        if url is None:
            return cls()
        bad = f"--endpoint {masked(url)!r} is not an http(s) URL with a host; use e.g. http://127.0.0.1:9000"
        if any(c.isspace() or not c.isprintable() for c in url):
            raise TessvrtError(bad.replace("is not", "contains spaces or control characters, not"))
        try:
            u = urlsplit(url)
            ok = u.scheme.lower() in ("http", "https") and bool(u.hostname)
            u.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError:
            ok = False
        if not ok:
            raise TessvrtError(bad)
        clean, stripped = public_url(url)
        if stripped:
            notice(f"--endpoint: using {clean} (tessvrt reads anonymously; the user name, password or query string "
                   "given is not used and not stored)")
        return cls(clean.rstrip("/"))


# --- the client --------------------------------------------------------------------------------

_CLIENT_LOCK = threading.Lock()


def client(endpoint: Endpoint, max_pool: int = 16):  # noqa: ANN201 - botocore client type is dynamic
    """A pooled, anonymous (unsigned) botocore S3 client, made once per endpoint.

    The lock matters: without it the first parallel requests each built their own client (loading
    botocore's S3 model every time), measured 1.8-2.4 s for materialise's 12 header reads.
    """
    with _CLIENT_LOCK:
        return _new_client(endpoint, max_pool)


@lru_cache(maxsize=8)
def _new_client(endpoint: Endpoint, max_pool: int):  # noqa: ANN202
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    cfg = Config(
        signature_version=UNSIGNED,
        s3={"addressing_style": "path"},
        # one attempt: retries are ours (get_checked), in a time budget; botocore's multiplied them (issue 13)
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_pool,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )
    session = botocore.session.get_session()
    return session.create_client(
        # always explicit: botocore would otherwise follow AWS_ENDPOINT_URL(_S3) from the environment,
        # which the GDAL paths and gdal-config do not, and reads would come from another server than GDAL's
        "s3", region_name=endpoint.region, endpoint_url=endpoint.https_base, config=cfg
    )


# --- worker threads that never hold up an interrupt ----------------------------------------------

_local = threading.local()


class Pool:
    """Worker threads for blocking reads that never hold up an interrupt or the end of the process.

    concurrent.futures joins its threads on shutdown and at exit, so an interrupted materialise
    waited for every stalled read (issue 13: 945 s). These are daemon threads; leaving the `with`
    block with an error sets `stop`, which cancels queued work and makes running reads and retry
    pauses of this pool end at once, while the caller goes on without waiting for them.
    """

    def __init__(self, workers: int, name: str = "tessvrt-io"):
        self.stop = threading.Event()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., T], *args: object, **kwargs: object) -> Future:
        f: Future = Future()
        self._jobs.put((f, fn, args, kwargs))
        return f

    def map(self, fn: Callable[..., T], items: Iterable) -> list[T]:
        """fn over items in parallel, results in order; the first error is raised as soon as it happens."""
        futures = [self.submit(fn, x) for x in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f in done and not f.cancelled() and f.exception() is not None:
                raise f.exception()
        return [f.result() for f in futures]

    def _work(self) -> None:
        _local.stop = self.stop
        while (job := self._jobs.get()) is not None:
            f, fn, args, kwargs = job
            if self.stop.is_set():
                f.cancel()
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                f.set_exception(exc)

    def close(self, wait: bool = True) -> None:
        if not wait:
            self.stop.set()
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for t in self._threads:
                t.join()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(wait=exc_type is None)


def _stop_event(stop: threading.Event | None) -> threading.Event | None:
    """The stop that applies: the one given, else the Pool's whose thread runs this."""
    return stop if stop is not None else getattr(_local, "stop", None)


# --- one attempt and its retries ---------------------------------------------------------------

class Interrupted(TessvrtError):
    """The run is stopping: a request gives up at once."""


class GaveUp(TessvrtError):
    """The server could not be reached or kept failing for the whole retry budget."""


class _Retry(Exception):
    """A failure worth another attempt within the time budget (its text says what happened)."""


class CorruptBody(OSError):
    """A whole-object body that fails its checksum or MD5 ETag: tried WRONG_TRIES times, then refused."""


class _Wrong(Exception):
    """A reply that is not what was asked for: tried WRONG_TRIES times, then refused with `advice`."""

    def __init__(self, detail: str, advice: str):
        super().__init__(detail)
        self.advice = advice


_answered: set[str] = set()  # servers that gave an HTTP reply in this process (a longer retry budget)
_slow: set[str] = set()  # servers already said to be retried


def retry_seconds() -> float:
    """The retry budget: TESSVRT_RETRY_SECONDS if set (tests shorten it; a user on a flaky link may lengthen it)."""
    try:
        return max(0.0, float(os.environ.get("TESSVRT_RETRY_SECONDS", RETRY_SECONDS)))
    except ValueError:
        return RETRY_SECONDS


def retrying(attempt: Callable[[], T], what: str, target: str, server: str, stop: threading.Event | None = None) -> T:
    """attempt() until it returns. _Retry is tried again after a growing pause for as long as the budget allows
    (FIRST_CONTACT_SECONDS until `server` has answered once, then retry_seconds()); _Wrong a few times;
    anything else is final. A set `stop` ends it at once. Giving up is one line naming the last problem."""
    stop = _stop_event(stop)
    t0, n, wrong, last = time.monotonic(), 0, 0, ""
    while True:
        if stop is not None and stop.is_set():
            raise Interrupted(f"{what}: interrupted")
        n += 1
        down = False  # no answer (as opposed to a wrong one): worth a line if it lasts
        try:
            return attempt()
        except _Wrong as exc:
            wrong, last = wrong + 1, str(exc)
            if wrong >= WRONG_TRIES:
                raise TessvrtError(f"{what}: {target}: {exc} ({wrong} times); refusing it - {exc.advice}") from None
        except _Retry as exc:
            last, down = str(exc), True
        elapsed = time.monotonic() - t0
        answered = server in _answered
        limit = retry_seconds() if answered else min(FIRST_CONTACT_SECONDS, retry_seconds())
        pause = min(random.uniform(0.5, 1.0) * min(BACKOFF[0] * 2 ** (n - 1), BACKOFF[1]), limit - elapsed)
        if pause <= 0:
            raise GaveUp(_give_up(what, target, server, answered, elapsed, n, last)) from None
        if down and answered and elapsed + pause > 5 and server not in _slow:  # an outage mid-run: say why it waits
            _slow.add(server)
            progress(f"{server} is not answering ({last}); retrying for up to {limit:.0f} s")
        if stop is not None and stop.wait(pause):
            raise Interrupted(f"{what}: interrupted")
        if stop is None:
            time.sleep(pause)


def _give_up(what: str, target: str, server: str, answered: bool, elapsed: float, n: int, last: str) -> str:
    if not answered:
        return (f"{what}: cannot reach {server} ({last}; tried {n} time{'s' if n > 1 else ''} in {elapsed:.0f} s); "
                "check --endpoint/--manifest and the network")
    return (f"{what}: reading {target} failed for {elapsed:.0f} s ({n} attempts, last: {last}); "
            "the server is down or overloaded - check the network and run again (TESSVRT_RETRY_SECONDS sets how long to retry)")


def read_body(body: object, stop: threading.Event | None = None) -> bytes:
    """A reply body read as it arrives, so a stop ends it between socket reads and a trickle (fewer than
    LOW_SPEED bytes in its window) is abandoned like a stall, where a plain read() waits for every byte."""
    raw = getattr(body, "_raw_stream", body)  # botocore's StreamingBody reads only whole amounts
    read = getattr(raw, "read1", None) or raw.read
    stop = _stop_event(stop)
    parts: list[bytes] = []
    since, got = time.monotonic(), 0
    while True:
        if stop is not None and stop.is_set():
            raise Interrupted("interrupted")
        chunk = read(1 << 20)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
        now = time.monotonic()
        if now - since >= LOW_SPEED[1]:
            if got < LOW_SPEED[0]:
                raise _Retry(f"stalled: {got} bytes in {now - since:.0f} s")
            since, got = now, 0


def _describe(exc: BaseException) -> str:
    """A short name for a network failure."""
    from botocore import exceptions as bx

    names = ((bx.ConnectTimeoutError, "connect timeout"), (bx.ReadTimeoutError, f"no data for {READ_TIMEOUT:.0f} s"),
             (TimeoutError, "timed out"), (ConnectionRefusedError, "connection refused"),
             (ConnectionResetError, "connection reset"))
    for cls, name in names:
        if isinstance(exc, cls):
            return name
    if isinstance(exc, bx.EndpointConnectionError):
        inner = str(getattr(exc, "kwargs", {}).get("error", "")).lower()
        for text, name in (("refused", "connection refused"), ("not known", "host name not found"),
                           ("resolution", "host name not found"), ("unreachable", "network unreachable")):
            if text in inner:
                return name
        return "cannot connect"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


# --- S3 reads ----------------------------------------------------------------------------------

def _status(exc: Exception) -> tuple[int, str]:
    resp = getattr(exc, "response", {}) or {}
    return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0), str(resp.get("Error", {}).get("Code", ""))


def _s3_attempt(endpoint: Endpoint, loc: S3Location, what: str, params: dict, head: Callable[[dict], None] | None,
                check: Callable[[bytes, dict], None]) -> tuple[bytes, dict] | None:
    """One GET: (body, response) accepted by head() and check(), None for 304, or one of _Retry, _Wrong, TessvrtError."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    try:
        resp = client(endpoint).get_object(Bucket=loc.bucket, Key=loc.key, **params)
    except ClientError as exc:
        _answered.add(endpoint.https_base)
        status, code = _status(exc)
        if status == 304 or code == "304":
            return None
        if code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404:
            raise MissingObject(f"{what}: {loc.uri} does not exist (404)", 404) from None
        if code in ("AccessDenied", "403") or status == 403:
            raise MissingObject(f"{what}: access to {loc.uri} is forbidden (403)", 403) from None
        if status == 416 or code == "InvalidRange":
            raise TessvrtError(f"{what}: {loc.uri} is shorter than the bytes asked for (416); the bucket changed "
                               "since - rebuild the VRT") from None
        if status in (408, 429) or status >= 500 or code in ("RequestTimeout", "SlowDown", "InternalError"):
            raise _Retry(f"HTTP {status} {code}".strip()) from None
        raise TessvrtError(f"{what}: {loc.uri}: the server answered HTTP {status} {code}; check --endpoint") from None
    except (BotoCoreError, HTTPError, OSError) as exc:
        raise _Retry(_describe(exc)) from None
    _answered.add(endpoint.https_base)
    body = resp["Body"]
    try:
        if head is not None:
            head(resp)  # before the body: a 200 with a whole tile is not downloaded to be refused
        data = _checked_body(body, resp)
        check(data, resp)
    except CorruptBody as exc:
        raise _Wrong(str(exc), "check the network and the server") from None
    except (BotoCoreError, HTTPError, OSError) as exc:  # resets, short bodies
        raise _Retry(_describe(exc)) from None
    finally:
        body.close()
    return data, resp


def _checked_body(body: object, resp: dict) -> bytes:
    """The body; when botocore set up a flexible checksum (ChecksumMode=ENABLED), verified against it
    here, since read_body reads past botocore's own check."""
    data = read_body(body)
    checksum = getattr(body, "checksum", None)
    if checksum is not None:
        checksum.update(data)
        headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        want = {v for k, v in headers.items() if k.startswith("x-amz-checksum-") and k != "x-amz-checksum-type"}
        if want and checksum.b64digest() not in want:
            raise CorruptBody(f"the body does not match its checksum {checksum.b64digest()}")
    return data


def get_checked(endpoint: Endpoint, loc: S3Location, what: str, check: Callable[[bytes, dict], None], *,
                head: Callable[[dict], None] | None = None, stop: threading.Event | None = None,
                **params: str) -> tuple[bytes, dict]:
    """GET an object (get_object `params`: Range, IfNoneMatch, ...) until its reply is accepted.

    `head(response)` sees the reply before its body; `check(body, response)` after. Either raises
    OSError for a bad reply worth another try (short body), _Wrong for one that is not what was asked
    (a few tries), TessvrtError for a final verdict. Resets, timeouts, stalls, 5xx and 429 are retried
    within the time budget (retrying); 404/403 raise MissingObject naming `what`; a 304 (a conditional
    GET whose copy is current) raises NotModified.
    """

    def attempt() -> tuple[bytes, dict]:
        got = _s3_attempt(endpoint, loc, what, params, head, check)
        if got is None:
            raise NotModified(loc.uri)
        return got

    return retrying(attempt, what, loc.uri, endpoint.https_base, stop)


class NotModified(Exception):
    """A conditional GET's answer: the cached copy is current (HTTP 304)."""


def check_whole_object(body: bytes, resp: dict, uri: str) -> None:
    """Raise OSError when a whole-object body disagrees with its length or its MD5 ETag.

    The flexible checksums S3 returns under ChecksumMode=ENABLED (CRC32/CRC32C/SHA, and
    CRC64NVMe when awscrt is installed) are verified while the body is read; an ETag of 32 hex
    digits is the MD5 of a single-part upload and is checked here. A multipart ETag ("...-N")
    and ranged reads carry no checksum of the bytes returned: length only.
    """
    if "ContentLength" in resp and len(body) != resp["ContentLength"]:
        raise OSError(f"short read of {uri}: {len(body)} of {resp['ContentLength']} bytes")
    etag = str(resp.get("ETag", "")).strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag) and hashlib.md5(body).hexdigest() != etag:
        raise CorruptBody(f"the body does not match its MD5 ETag {etag}")


def content_range(resp: dict, start: int, length: int, total: int | None, what: str, loc: S3Location) -> int:
    """Check a ranged reply's status and Content-Range against the range asked; the body length it promises.

    The start, the end and the object size are all checked: a 206 for another range, or a 200
    with the whole object (a server ignoring Range), is never used (issue 13 item 5).
    """
    end = start + length - 1
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    asked = f"bytes {start}-{end}"
    if status == 200 or not resp.get("ContentRange"):
        size = resp.get("ContentLength")
        raise _Wrong(f"the server ignored the byte range (asked for {asked}, it answered {status} with "
                     f"{'the whole object' if status == 200 else 'no Content-Range'}{f', {size:,} bytes' if size else ''})",
                     "tessvrt and GDAL need HTTP Range requests; use a server or --endpoint that supports them")
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", str(resp["ContentRange"]).strip())
    if not m:
        raise _Wrong(f"unreadable Content-Range {resp['ContentRange']!r} for {asked}", "check the server")
    a, b, size = int(m.group(1)), int(m.group(2)), m.group(3)
    if total is not None and size != str(total):
        raise TessvrtError(f"{what}: {loc.uri} is {size} bytes, the manifest says {total}; the bucket changed "
                           "since the VRT was built - rebuild it")
    if total is None and size != "*":
        end = min(end, int(size) - 1)  # a probe past the end of a small object
    if (a, b) != (start, end):
        raise _Wrong(f"the server sent bytes {a}-{b}/{size} instead of bytes {start}-{end}",
                     "the server or a proxy between answers wrong ranges; check --endpoint")
    return b - a + 1


def suffix_range(resp: dict, length: int, loc: S3Location) -> None:
    """Check a suffix-range reply (`bytes=-N`): the last min(N, size) bytes of the object, nothing else."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", str(resp.get("ContentRange", "")).strip())
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if not m:
        raise _Wrong(f"the server ignored the byte range (asked for the last {length} bytes of {loc.uri}, it answered "
                     f"{status} without a Content-Range)", "tessvrt needs HTTP Range requests; use a server that supports them")
    a, b, size = (int(g) for g in m.groups())
    if (a, b) != (max(size - length, 0), size - 1):
        raise _Wrong(f"the server sent bytes {a}-{b}/{size} instead of the last {length} bytes",
                     "the server or a proxy between answers wrong ranges; check --endpoint")


def fetch_range(endpoint: Endpoint, loc: S3Location, start: int, length: int, total: int | None, what: str,
                stop: threading.Event | None = None) -> bytes:
    """Exactly bytes [start, start+length) of an object of `total` bytes (None: unknown; the range may then
    end at the object's end), or a TessvrtError.

    Status, Content-Range (start, end, object size) and body length are checked on every read (S3 has
    no checksum of a range); a short body is retried, a wrong range retried then refused, a changed
    object size is final.
    """
    expect: list[int] = []

    def head(resp: dict) -> None:
        expect[:] = [content_range(resp, start, length, total, what, loc)]

    def check(body: bytes, resp: dict) -> None:
        if len(body) != expect[0]:
            raise OSError(f"short body ({len(body)} of {expect[0]} bytes)")

    return get_checked(endpoint, loc, what, check, head=head, stop=stop, Range=f"bytes={start}-{start + length - 1}")[0]


def get_range(endpoint: Endpoint, loc: S3Location, start: int, length: int) -> bytes:
    """Bytes [start, start+length) of an object, fewer only where the object ends; checked and retried as fetch_range."""
    return fetch_range(endpoint, loc, start, length, None, what="ranged read")


# --- plain http(s) GETs (a --manifest URL) -----------------------------------------------------

def get_url(url: str, what: str, etag: str | None = None, stop: threading.Event | None = None) -> tuple[bytes | None, str]:
    """The body of an http(s) URL and its ETag, or (None, etag) when `etag` is still current (304).

    User-info in the URL is sent as basic authentication, never kept; deadlines and retries as for S3.
    """
    import base64
    import urllib.request

    u = urlsplit(url)
    clean, _ = public_url(url)
    headers = {"If-None-Match": etag} if etag else {}
    if u.username is not None:
        cred = f"{u.username}:{u.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
    req = urllib.request.Request(urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, u.query, "")),
                                 headers=headers)
    server = f"{u.scheme}://{u.netloc.rpartition('@')[2]}"
    return retrying(lambda: _url_attempt(req, clean, what, server, etag), what, clean, server, stop)


def _url_attempt(req: object, clean: str, what: str, server: str, etag: str | None) -> tuple[bytes | None, str]:
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(req, timeout=READ_TIMEOUT) as resp:
            _answered.add(server)
            body = read_body(resp)
            size = resp.headers.get("Content-Length")
            if size is not None and size.isdigit() and len(body) != int(size):
                raise _Retry(f"short body ({len(body)} of {size} bytes)")
            return body, resp.headers.get("ETag", "")
    except urllib.error.HTTPError as exc:
        _answered.add(server)
        if exc.code == 304:
            return None, etag or ""
        if exc.code in (404, 410, 403):
            raise MissingObject(f"{what}: {clean} answered HTTP {exc.code}", exc.code) from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code}") from None
        raise TessvrtError(f"{what}: {clean} answered HTTP {exc.code}; check --manifest") from None
    except urllib.error.URLError as exc:
        raise _Retry(_describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)) from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Retry(_describe(exc)) from None

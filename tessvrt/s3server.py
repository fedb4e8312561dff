"""moto's standalone S3 server, with ranged GETs served from the stored object in place.

moto 5 answers a ranged GET by reading the whole object from its buffer (objects over 5 MB sit in a
temporary file) and slicing it afterwards: 11 ms of a 12 ms request for a 35 MB object, measured with
cProfile, so a test reading tile rows paid for whole tiles on every row. Here a plain in-bounds range
(`bytes=A-B`, A <= B < size) of a GET reads only its bytes; moto still parses the request, checks the
bucket, key, policy and conditions, and writes every header and the 206 itself. Any other range
(suffix, open-ended, several, out of bounds, unparsable) goes through moto unchanged.

Run as `python -m tessvrt.s3server -H 127.0.0.1 -p PORT` (moto.server's arguments).
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

_PLAIN = re.compile(r"bytes=(\d+)-(\d+)")
_asked = threading.local()  # the range of the GET this request thread is answering


class _Span(bytes):
    """Bytes begin..end of an object, standing in for the whole object in moto's range handler: it takes
    the object's length with len() and the range's bytes with one slice, which is all it asks of them."""

    length: int
    begin: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: Any) -> bytes:
        if isinstance(item, slice) and item.start == self.begin and item.stop == self.begin + super().__len__():
            return bytes(self)
        raise RuntimeError(f"s3server: moto asked for {item!r} of a {self.begin}+ span")  # a 500, never a wrong byte


def _patch() -> None:
    from moto.s3 import models, responses

    whole = models.FakeKey.value.fget
    key_response = responses.S3Response.key_response

    def value(self: Any) -> bytes:
        span, _asked.span = getattr(_asked, "span", None), None
        if span is None or span[1] >= self.size:
            return whole(self)
        begin, end = span
        with self.lock:
            self._value_buffer.seek(begin)
            out = _Span(self._value_buffer.read(end - begin + 1))
        out.length, out.begin = self.size, begin
        return out

    def ranged_key_response(self: Any, request: Any, full_url: str, *rest: Any) -> Any:
        m = _PLAIN.fullmatch(request.headers.get("range", "")) if request.method == "GET" else None
        plain = m and int(m[1]) <= int(m[2]) and "partNumber" not in full_url and "versionId" not in full_url
        _asked.span = (int(m[1]), int(m[2])) if plain else None
        try:
            return key_response(self, request, full_url, *rest)
        finally:
            _asked.span = None

    models.FakeKey.value = property(value, models.FakeKey.value.fset)
    responses.S3Response.key_response = ranged_key_response


def main(argv: list[str] | None = None) -> None:
    _patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()

"""tessvrt.s3server (the tests' moto, with plain ranged GETs read in place) answers every kind of GET exactly as
stock moto.server does: status, Content-Range, length and bytes, or the error code."""

from __future__ import annotations

import re

import numpy as np
from botocore.exceptions import ClientError

from tessvrt.testing import MotoServer

N = 7_000_000  # over moto's 5 MB buffer: the object sits in a temporary file


class StockMoto(MotoServer):
    module = "moto.server"


def _get(client, key: str, rng: str):
    try:
        o = client.get_object(Bucket="bkt1", Key=key, **({"Range": rng} if rng else {}))
        return o["ResponseMetadata"]["HTTPStatusCode"], o.get("ContentRange"), o["ContentLength"], o["Body"].read()
    except ClientError as e:
        return "error", e.response["Error"]["Code"]


def test_every_kind_of_range_is_answered_as_stock_moto_answers_it():
    rng = np.random.default_rng(5)
    objects = {"big": rng.bytes(N), "small": rng.bytes(1000)}
    with MotoServer() as ours, StockMoto() as stock:
        for srv in (ours, stock):
            srv.client.create_bucket(Bucket="bkt1", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
            for k, v in objects.items():
                srv.client.put_object(Bucket="bkt1", Key=k, Body=v)
        served = 0
        for key, data in objects.items():
            n = len(data)
            ranges = ["", "bytes=0-0", "bytes=5-4", f"bytes={n - 1}-{n - 1}", f"bytes={n - 10}-{n + 10}", f"bytes={n}-{n + 5}",
                      "bytes=-100", "bytes=100-", "bytes=0-9,20-29", "bytes=abc", f"bytes=0-{n - 1}", f"bytes=0-{n}"]
            ranges += [f"bytes={a}-{a + int(rng.integers(0, 100_000))}" for a in rng.integers(0, n, 12)]
            for r in ranges:
                got, want = _get(ours.client, key, r), _get(stock.client, key, r)
                assert got == want, (key, r, str(got)[:200], str(want)[:200])
                m = re.fullmatch(r"bytes=(\d+)-(\d+)", r)
                if m and want[0] == 206:
                    assert got[3] == data[int(m[1]):int(m[2]) + 1]  # and they are the object's bytes
                    served += 1
        assert served >= 20

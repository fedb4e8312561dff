"""Ranged GETs from the tests' S3 server (tessvrt.s3server) against stock moto.server, alternating in one process.

    python scripts/bench_s3server.py [--size-mb 13] [--gets 40] [--rounds 5]

Prints milliseconds per ranged GET (5,000 bytes each, a tile row's order of size) of one object of --size-mb on
each server, and the ratio. Stock moto reads the whole object for every ranged GET; ours reads the range.
"""

from __future__ import annotations

import argparse
import os
import time

from tessvrt.testing import MotoServer


class StockMoto(MotoServer):
    module = "moto.server"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=float, default=13.0)
    ap.add_argument("--gets", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    data = os.urandom(int(a.size_mb * 1e6))
    with StockMoto() as stock, MotoServer() as ours:
        servers = {"stock moto.server": stock, "tessvrt.s3server": ours}
        for srv in servers.values():
            srv.client.create_bucket(Bucket="bench", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
            srv.client.put_object(Bucket="bench", Key="obj", Body=data)
        spent = dict.fromkeys(servers, 0.0)
        for _ in range(a.rounds):
            for name, srv in servers.items():
                t = time.perf_counter()
                for i in range(a.gets):
                    rng = f"bytes={i * 5000}-{i * 5000 + 4999}"
                    srv.client.get_object(Bucket="bench", Key="obj", Range=rng)["Body"].read()
                spent[name] += time.perf_counter() - t
    n = a.gets * a.rounds
    ms = {k: v / n * 1000 for k, v in spent.items()}
    for k, v in ms.items():
        print(f"{k:>18}: {v:6.1f} ms per ranged GET of a {a.size_mb:g} MB object ({n} GETs)")
    print(f"ratio tessvrt.s3server / stock: {ms['tessvrt.s3server'] / ms['stock moto.server']:.2f}; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

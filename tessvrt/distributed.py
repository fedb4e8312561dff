"""Running a run's tasks: in this process, on a LocalCluster of worker processes, or on a Dask scheduler.

Dask `distributed` is the engine (never a scheduler of our own): tasks are independent (each reads
the bucket and writes its piece itself, returning a few numbers), so nothing moves between workers,
a dead worker's tasks are simply run again elsewhere, and the same task gives the same bytes anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from .errors import TessvrtError

T = TypeVar("T")
CONNECT_SECONDS = 20  # to reach a scheduler given by --dask


@contextmanager
def cluster(workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """A distributed.Client: to the scheduler at address, or to a LocalCluster of `workers` processes."""
    from distributed import Client, LocalCluster

    if address is not None:
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise TessvrtError(f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}); start it "
                               "(dask scheduler) or check --dask") from None
        try:
            yield client
        finally:
            client.close()
        return
    if workers is None or workers < 1:
        raise TessvrtError(f"--workers {workers}: give a number of worker processes, 1 or more")
    # one thread per worker process: each task runs its own fetch and compression threads
    lc = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR)
    client = Client(lc)
    try:
        yield client
    finally:
        client.close()
        lc.close()


def run(fn: Callable[[Any], T], items: Sequence[Any], keys: Sequence[str], on_result: Callable[[T], None],
        workers: int | None = None, address: str | None = None, on_start: Callable[[int], None] | None = None) -> None:
    """fn(item) for every item, here (no workers, no address) or on Dask; on_result as each completes.

    on_start(n) is told how many workers run the tasks once they are known. The first task error
    stops the run (remaining tasks cancelled) and is raised as it is; a lost scheduler is one
    TessvrtError. Results already delivered stay delivered.
    """
    if workers is None and address is None:
        if on_start:
            on_start(1)
        for item in items:
            on_result(fn(item))
        return
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    # the client logs a lost connection as tracebacks on stderr: the one line below says it instead
    for name in ["distributed", *[n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with cluster(workers, address) as client:
        if on_start:
            on_start(len(client.scheduler_info().get("workers", {})) or workers or 1)
        futures = client.map(fn, items, key=list(keys), pure=False)
        try:
            for fut in as_completed(futures):
                on_result(fut.result())
        except TessvrtError:
            client.cancel(futures)
            raise
        except (OSError, TimeoutError, FutureCancelledError) as exc:
            where = address or "the local cluster"
            raise TessvrtError(f"lost the Dask scheduler at {where} ({type(exc).__name__}); the pieces already "
                               "complete are kept: run the same command again to finish the rest") from None
        except BaseException:
            client.cancel(futures)
            raise

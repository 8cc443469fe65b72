"""Where the CPU-heavy work of requests runs: parsing uploads, rendering, decoding.

In one server process (the Jupyter extension lives in Jupyter's), Python threads take turns on one
interpreter: a render on a worker thread holds up the event loop and every other request. A pool
of processes (``c.DicomWeb.cpu_processes``) runs that work beside it, on the other cores. It pays
where the work costs more than handing it over (arguments and answer pickled through a pipe, about
0.1-0.2 ms a call, measured with ``benchmarks/bench_cpu_pool.py``): parsing an upload (~0.8 ms for
a small CT instance) and rendering a large or compressed image do; JSON building from the stored
metadata (string joins) and reading frames (sendfile) do not and stay on the threads, and a light
render (a JPEG of an uncompressed 512x512 slice, ~0.6 ms: ``transcode.render_is_light``) runs on the
request's own thread (``run_cpu(..., inline=True)``): handing it over costs about what it does.
``dicomweb-nb serve --workers N`` uses the cores with its worker processes, so it runs the work on
its threads unless told otherwise.

Pool processes come from a fork server (a clean process forked once, before any thread or
connection exists), never from a fork of the server itself: a forked copy of a process that has
threads (Jupyter's, the store's sweeper, connection pools) may inherit a lock held by a thread that
does not exist in the copy.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dicomweb_nb.server")

# What pool processes import once, in the fork server, so that a new one starts warm.
_PRELOAD = ["dicomweb_nb.store.store", "dicomweb_nb.store.transcode", "dicomweb_nb.server.cpu"]


@dataclass(frozen=True)
class Refusal:
    """An expected failure of work done in a pool process, as a value: the request's answer (status
    and message). Exceptions of the package do not all survive pickling back to the server."""

    status: int
    message: str


def default_cpu_processes() -> int:
    """One pool process per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class CpuPool:
    """``submit(fn, *args)`` runs ``fn`` in a pool process (``processes`` > 0) or on ``threads``.

    A pool that broke (a process killed, a codec that crashed) is replaced at the next submission;
    the work that was in it fails with BrokenProcessPool.
    """

    def __init__(self, processes: int, threads: Executor):
        self.processes = max(0, processes)
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def in_processes(self) -> bool:
        return self.processes > 0

    def _process_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                methods = multiprocessing.get_all_start_methods()
                context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
                if "forkserver" in methods:
                    context.set_forkserver_preload(_PRELOAD)
                self._pool = ProcessPoolExecutor(max_workers=self.processes, mp_context=context)
            return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        if not self.processes:
            return self.threads.submit(fn, *args, **kwargs)
        pool = self._process_pool()
        try:
            return pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            log.warning("a process of the CPU pool died; starting a new pool")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return self._process_pool().submit(fn, *args, **kwargs)

    def warm_up(self) -> None:
        """Start the pool's processes now rather than at the first request that needs one."""
        if self.processes:
            for future in [self._process_pool().submit(os.getpid) for _ in range(self.processes)]:
                future.result()

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["CpuPool", "Refusal", "default_cpu_processes"]

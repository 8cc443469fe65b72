"""Metrics in Prometheus' text format (prometheus_client), and per-request performance logs.

Every request is counted by the service it belongs to (``capabilities.service_of``: QIDO-RS,
WADO-RS, STOW-RS, rendered, thumbnail, WADO-URI, delete, changefeed, proxy, jobs, ...):

- ``dicomweb_requests_total{service, method, status}``
- ``dicomweb_request_duration_seconds{service}`` (histogram)
- ``dicomweb_request_bytes_total{service}`` / ``dicomweb_response_bytes_total{service}``: bodies in / out

and, read from the store when scraped (so every process on a shared store reports the same):
``dicomweb_store_studies``, ``_series``, ``_instances``, ``_bytes`` and ``dicomweb_jobs{state}``
(the job queue: Pending, Running, ... as recorded in the store), each labelled with the ``store``.

Where they are served: ``dicomweb-nb serve`` at ``/metrics`` (authenticated like the rest, ``read``);
under Jupyter in Jupyter's own ``/metrics`` (its prometheus registry, where these register).
Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set (in the environment, before each
process installs its server: ``install``), each process writes its counters there and
``/metrics`` adds up every process's (prometheus_client's MultiProcessCollector); the store's
figures are read once, not once per process.

``c.DicomWeb.enable_performance_logs`` logs one line per request (logger ``dicomweb_nb.performance``;
under Jupyter, Jupyter's log): service, method, path, status, elapsed microseconds, bytes and rate.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .base import DicomWebMixin

__all__ = ["RequestMetricsMixin", "MetricsMixin", "install", "uninstall", "exposition", "multiprocess_dir"]

perf_log = logging.getLogger("dicomweb_nb.performance")

REQUESTS = Counter("dicomweb_requests", "DICOMweb requests answered, by service, method and status",
                   ["service", "method", "status"])
DURATION = Histogram("dicomweb_request_duration_seconds", "Time to answer a DICOMweb request, by service", ["service"],
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
RECEIVED = Counter("dicomweb_request_bytes", "Bytes of request bodies received, by service", ["service"])
SENT = Counter("dicomweb_response_bytes", "Bytes of response bodies sent, by service", ["service"])
JOB_STATES = ("Pending", "Running", "Paused", "Success", "Failure", "Retry")
STORE_CACHE_SECONDS = 5.0  # scrapes close together must not count a large store each time


def multiprocess_dir() -> str | None:
    """The folder shared by a server's worker processes for their metrics, when there is one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None  # (the lower-case name is deprecated by prometheus_client)


class StoreCollector(Collector):
    """The store's size and job queue, read from the index when scraped (cached a few seconds)."""

    def __init__(self) -> None:
        self._contexts: dict[int, Any] = {}  # by id: a context is a dataclass, not hashable
        self._cache: dict[int, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def add(self, ctx: Any) -> None:
        self._contexts[id(ctx)] = ctx

    def discard(self, ctx: Any) -> None:
        self._contexts.pop(id(ctx), None)
        self._cache.pop(id(ctx), None)

    def _usage(self, ctx: Any) -> dict[str, Any] | None:
        with self._lock:
            cached = self._cache.get(id(ctx))
            if cached is not None and time.monotonic() - cached[0] < STORE_CACHE_SECONDS:
                return cached[1]
        try:
            usage = ctx.store.usage()
        except Exception:
            logging.getLogger("dicomweb_nb.server").exception("cannot read the store's usage for the metrics")
            return None
        with self._lock:
            self._cache[id(ctx)] = (time.monotonic(), usage)
        return usage

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metric names without reading the store (the registry asks when this is registered)."""
        return self._families(read=False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(read=True)

    def _families(self, *, read: bool) -> Iterator[GaugeMetricFamily]:
        families = {
            "studies": GaugeMetricFamily("dicomweb_store_studies", "Studies in the store", labels=["store"]),
            "series": GaugeMetricFamily("dicomweb_store_series", "Series in the store", labels=["store"]),
            "instances": GaugeMetricFamily("dicomweb_store_instances", "Instances in the store", labels=["store"]),
            "bytes": GaugeMetricFamily("dicomweb_store_bytes", "Bytes of the stored instances", labels=["store"]),
        }
        jobs = GaugeMetricFamily("dicomweb_jobs", "Proxy jobs recorded in the store, by state", labels=["store", "state"])
        for ctx in list(self._contexts.values()) if read else []:
            usage = self._usage(ctx)
            if usage is None:
                continue
            store = ctx.store.location
            for key, family in families.items():
                family.add_metric([store], usage[key])
            for state in sorted(set(JOB_STATES) | set(usage["jobs"])):
                jobs.add_metric([store, state], usage["jobs"].get(state, 0))
        yield from families.values()
        yield jobs


_store_collector = StoreCollector()
_registered = False
_register_lock = threading.Lock()


def _use_multiprocess_values() -> None:
    """prometheus_client chooses how it keeps values when it is first imported; a process whose
    multiprocess folder was set after that (a supervisor that imported this module, then set the
    folder and forked its workers) switches before its first sample, so its counts reach the folder.
    (Labelled samples take ``values.ValueClass`` when first used, and none is used before a request.)"""
    from prometheus_client import values

    if multiprocess_dir() is not None and values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()


def install(ctx: Any) -> None:
    """Report this server's store in the metrics (the process registry, Jupyter's included)."""
    global _registered
    _use_multiprocess_values()
    _store_collector.add(ctx)
    with _register_lock:
        if not _registered and multiprocess_dir() is None:
            REGISTRY.register(_store_collector)
            _registered = True
    if ctx.config.enable_performance_logs:
        perf_log.setLevel(logging.INFO)  # shown even when the server's own log is quieter


def uninstall(ctx: Any) -> None:
    _store_collector.discard(ctx)


def exposition() -> bytes:
    """The text of ``/metrics``: this process's registry, or every worker's when they share a folder."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(_store_collector)
    return generate_latest(registry)


class RequestMetricsMixin:
    """In both handler bases: counts each request once it is answered, logs its performance."""

    request: Any
    _write_buffer: list[bytes]
    _bytes_flushed = 0

    def flush(self, include_footers: bool = False) -> Any:
        self._bytes_flushed += sum(len(chunk) for chunk in self._write_buffer)
        return super().flush(include_footers)  # type: ignore[misc]

    def on_finish(self) -> None:
        try:
            self._record_request()
        except Exception:
            logging.getLogger("dicomweb_nb.server").exception("cannot record the metrics of a request")
        super().on_finish()  # type: ignore[misc]

    def _record_request(self) -> None:
        from .capabilities import service_of

        if "dicomweb" not in getattr(self, "settings", {}):
            return
        method = self.request.method
        service = service_of(type(self), method, self.request.path)
        status = self.get_status()  # type: ignore[attr-defined]
        elapsed = self.request.request_time()
        length = self._headers.get("Content-Length")  # type: ignore[attr-defined]
        sent = 0 if method == "HEAD" else int(length) if length and length.isdigit() else self._bytes_flushed
        received = getattr(self, "_stow_received", 0) or len(self.request.body or b"")
        REQUESTS.labels(service, method, str(status)).inc()
        DURATION.labels(service).observe(elapsed)
        if received:
            RECEIVED.labels(service).inc(received)
        if sent:
            SENT.labels(service).inc(sent)
        if self.settings["dicomweb"].config.enable_performance_logs:  # type: ignore[attr-defined]
            rate = sent * 8 / elapsed / 1e6 if elapsed > 0 else 0.0
            logger = getattr(self, "log", None) or perf_log
            logger.info("%s: %s %s %d, elapsed: %d us, %d bytes in, %d bytes out, %.2f Mbps",
                        service, method, self.request.path, status, round(elapsed * 1e6), received, sent, rate)


class MetricsMixin(DicomWebMixin):
    """``GET /metrics`` of ``dicomweb-nb serve`` (under Jupyter, Jupyter's own /metrics has them)."""

    async def get(self) -> None:
        text = await self.run_blocking(exposition)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(text)

"""Assembling a DICOMweb server: the shared context, and the standalone tornado application."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from tornado import web

from ..errors import ConfigurationError
from ..store import Store, StoreError
from ..store.blobs import redact_text
from ..store.index import DuplicatePolicy
from ..store.store import location, workspace_store_options
from . import metrics, standalone_handlers
from .base import DicomWebContext
from .config import DicomWeb
from .cpu import CpuPool
from .jobs import JobManager
from .limits import READ_HEADER_BYTES, HeaderLimits
from .remotes import RemoteServers
from .routes import READ_ONLY, build_routes, jobs_routes
from .workers import BalancedHTTPServer
from .workitems import close_relay

log = logging.getLogger("dicomweb_nb.server")


def url_path_join(*pieces: str) -> str:
    """Join URL path pieces with exactly one slash between them (keeps a leading and trailing one)."""
    initial = pieces[0].startswith("/")
    final = pieces[-1].endswith("/")
    stripped = [p.strip("/") for p in pieces]
    result = "/".join(p for p in stripped if p)
    if initial:
        result = "/" + result
    if final and result != "/":
        result += "/"
    return result or "/"


def open_store(config: DicomWeb, store_dir: str | os.PathLike[str] | None) -> Store:
    """The one place a server opens its store: the folder, or the team store of
    ``database_url`` / ``storage_url``. Errors name the store without its credentials."""
    try:
        options = location(config.database_url, config.storage_url)
        if not options and store_dir is not None:
            options = workspace_store_options(store_dir, environment=False)  # the folder names a team store
        duplicates = cast(DuplicatePolicy, config.duplicates)  # one of them: the trait is an Enum of the three
        return Store(store_dir, **options, duplicates=duplicates,
                     pn_case_insensitive=not config.qido_case_sensitive, group=config.store_group or None,
                     pool_size=config.database_pool_size, garbage_grace=config.replaced_blob_grace)
    except (StoreError, ValueError, OSError) as exc:
        raise ConfigurationError(f"cannot open the store: {redact_text(str(exc))}") from None


def make_context(
    config: DicomWeb,
    store_dir: str | os.PathLike[str],
    *,
    base_url: str = "/",
    auth_token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    shared_dir: str | os.PathLike[str] | None = None,
    cpu_processes: int = 0,
    announce_start: bool = True,
) -> DicomWebContext:
    """The state shared by all handlers of one server (store opened and reconciled here).

    ``shared_dir``: the private folder of a server with several worker processes (``serve_run_dir``),
    where what they share outside the store lives (servers added by PUT without ``servers_in_store``).
    ``cpu_processes``: the size of the CPU pool when ``c.DicomWeb.cpu_processes`` is -1 (automatic).
    ``announce_start``: tell the worklist's subscribers that the server started (one worker of several
    does it, so that they hear it once)."""
    store = open_store(config, store_dir)
    executor = ThreadPoolExecutor(max_workers=max(1, config.worker_threads), thread_name_prefix="dicomweb")
    processes = cpu_processes if config.cpu_processes < 0 else config.cpu_processes
    ctx = DicomWebContext(
        config=config,
        store=store,
        executor=executor,
        root_path=url_path_join(base_url, config.root, "/"),
        wado_path=url_path_join(base_url, config.wado_root),
        auth_token=auth_token,
        basic_auth=basic_auth,
        cpu=CpuPool(processes, executor),
    )
    # The proxy's servers: the configured ones, plus those added by PUT, kept in the store's
    # servers.json (the file dw.connect("name") reads) when servers_in_store is on.
    # A team store keeps them in its index instead, shared by every server on it. Without
    # servers_in_store they last until the server stops: in the memory of its one process, or in
    # its private folder, which all its worker processes read and write.
    ctx.servers = RemoteServers(config.servers, store_dir=store.root if config.servers_in_store else None,
                                index=store if config.servers_in_store and not store.is_folder_store else None,
                                default_timeout=config.request_timeout,
                                shared_dir=None if config.servers_in_store else shared_dir)
    ctx.jobs = JobManager(store, workers=config.concurrent_jobs, history=config.jobs_history_size)
    if announce_start and not config.read_only:  # a read-only server writes nothing, not even this notice
        announce_worklist(store)
    metrics.install(ctx)
    return ctx


def announce_worklist(store: Store) -> None:
    """Tell the worklist's subscribers that a server started (PS3.4 CC.2.4.3, SCP Status Change)."""
    try:
        store.worklist.announce_restart()
    except Exception:
        log.exception("cannot record the worklist's restart event")


def stop_jobs(ctx: DicomWebContext) -> None:
    """Cancel the jobs and wait (at most JOBS_STOP_TIMEOUT s) until each has recorded that the
    shutdown interrupted it. Blocks: run it off the event loop."""
    if ctx.jobs is not None:
        ctx.jobs.shutdown(wait=JOBS_STOP_TIMEOUT)


def close_context(ctx: DicomWebContext) -> None:
    """Stop the jobs (``stop_jobs``), then release the remote connections, the worker threads and
    the store."""
    stop_jobs(ctx)
    close_relay(ctx)
    metrics.uninstall(ctx)
    if ctx.servers is not None:
        ctx.servers.close()
    if ctx.cpu is not None:
        ctx.cpu.shutdown()
    ctx.executor.shutdown(wait=False, cancel_futures=True)
    ctx.store.close()


# Seconds a shutdown waits for running jobs to notice their cancellation and record it.
JOBS_STOP_TIMEOUT = 10.0


def make_app(
    store_dir: str | os.PathLike[str],
    config: DicomWeb | None = None,
    *,
    auth_token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    shared_dir: str | os.PathLike[str] | None = None,
    announce_start: bool = True,
    **settings: Any,
) -> web.Application:
    """The standalone DICOMweb application of ``dicomweb-nb serve`` (no Jupyter involved)."""
    config = config or DicomWeb()
    ctx = make_context(config, store_dir, auth_token=auth_token, basic_auth=basic_auth, shared_dir=shared_dir,
                       announce_start=announce_start)
    # Orthanc keeps jobs at its root; scripts written for it look there.
    routes = jobs_routes(standalone_handlers, "/") + build_routes(
        standalone_handlers, ctx.root_path, ctx.wado_path if config.enable_wado else None)
    # Prometheus metrics where Jupyter has its own (there these are added to Jupyter's /metrics).
    routes.insert(0, (r"/metrics", standalone_handlers.MetricsHandler, {"access": READ_ONLY}))
    return web.Application(routes, dicomweb=ctx, **settings)


def make_http_server(app: web.Application, config: DicomWeb) -> BalancedHTTPServer:
    """The HTTP server of ``dicomweb-nb serve``: requests over the header limits are answered 414/431
    (``limits.py``); uploads are streamed, their limit set by the STOW handler (max_upload_size).
    ``listen()`` for one process; ``accept_balanced()`` in a worker process (``workers.py``)."""
    return BalancedHTTPServer(HeaderLimits(app), max_body_size=config.max_upload_size,
                              max_header_size=READ_HEADER_BYTES, idle_connection_timeout=3600)


def serve_run_dir(host: str, port: int) -> Path:
    """The private folder of the ``dicomweb-nb serve`` at ``host:port`` (one server holds an address
    at a time), emptied now: what its worker processes share outside the store. Under
    ``$XDG_RUNTIME_DIR`` when set, else ``{tmp}/dicomweb-nb-{uid}``; owner-only."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"dicomweb-nb-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigurationError(f"{base} is not a folder of this user: remove it, or set $XDG_RUNTIME_DIR")
    os.chmod(base, 0o700)
    folder = base / f"serve-{host.replace('/', '_').replace(':', '_')}-{port}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    return folder

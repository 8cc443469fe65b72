"""The jupyter-server extension: mounts dicomweb_nb's DICOMweb server in a running Jupyter server."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp

from dicomweb_nb.server import jupyter_handlers
from dicomweb_nb.server.app import close_context, make_context, stop_jobs
from dicomweb_nb.server.base import DicomWebContext
from dicomweb_nb.server.config import DicomWeb
from dicomweb_nb.server.cpu import default_cpu_processes
from dicomweb_nb.server.limits import install_on
from dicomweb_nb.server.routes import build_routes
from dicomweb_nb.workspace import DATABASE_ENV, DEFAULT_STORE_DIRNAME, LOCAL_URL_ENV, SERVERS_ENV, STORAGE_ENV, STORE_ENV


def store_dir_for(config: DicomWeb, root_dir: str) -> str:
    """The store folder: ``c.DicomWeb.store_dir`` (relative to the Jupyter root) or ``<root>/.dicomweb``."""
    if config.store_dir:
        path = os.path.expanduser(config.store_dir)
        return path if os.path.isabs(path) else os.path.join(root_dir, path)
    return os.path.join(root_dir, DEFAULT_STORE_DIRNAME)


def _export_to_kernels(serverapp: Any, config: DicomWeb, store_dir: str, root_path: str) -> None:
    """Kernels inherit the server's environment: tell ``dw.connect()`` in notebooks where the
    workspace store is, its served URL, and the configured remote servers (same user, same secrets)."""
    os.environ[STORE_ENV] = store_dir
    # A team store: the kernels open the same index and blobs (same user, same credentials).
    for name, value in ((DATABASE_ENV, config.database_url), (STORAGE_ENV, config.storage_url)):
        if value:
            os.environ[name] = value
    try:
        origin = (
            serverapp.connection_url.split(serverapp.base_url, 1)[0] if serverapp.base_url != "/" else serverapp.connection_url
        )
        os.environ[LOCAL_URL_ENV] = origin.rstrip("/") + root_path.rstrip("/")
    except Exception:  # noqa: BLE001 - the URL only decorates answers; never fail start-up over it
        pass
    if config.servers:
        os.environ[SERVERS_ENV] = json.dumps(dict(config.servers))


class DicomWebExtension(ExtensionApp):
    """DICOMweb at ``<base_url>dicom-web/`` and WADO-URI at ``<base_url>wado``, served from the
    workspace store behind Jupyter's authentication and Authorizer.

    Its options are those of ``dicomweb-nb serve``: ``c.DicomWeb.*`` (``dicomweb_nb.server.config``),
    read from the server's configuration.
    """

    name = "dicomweb_nb"
    description = "DICOMweb (QIDO-RS, WADO-RS, STOW-RS, WADO-URI) and an Orthanc-compatible client proxy"
    load_other_extensions = True
    classes = [*ExtensionApp.classes, DicomWeb]  # noqa: RUF012 - traitlets reads it as the class attribute it overrides

    dicomweb: DicomWeb
    context: DicomWebContext | None = None

    def initialize_settings(self) -> None:
        self.dicomweb = DicomWeb(parent=self)
        if not self.dicomweb.enable:
            self.log.info("dicomweb-nb: DICOMweb disabled by c.DicomWeb.enable")
            return
        assert self.serverapp is not None  # linked before initialize_settings
        store_dir = store_dir_for(self.dicomweb, self.serverapp.root_dir)
        # Jupyter's server is one process: the CPU-heavy work of requests goes to a pool of processes
        # (one per core unless c.DicomWeb.cpu_processes says otherwise), not onto its event loop's interpreter.
        self.context = make_context(self.dicomweb, store_dir, base_url=self.serverapp.base_url,
                                    cpu_processes=default_cpu_processes())
        self.settings["dicomweb"] = self.context
        _export_to_kernels(self.serverapp, self.dicomweb, store_dir, self.context.root_path)
        counts = self.context.store.counts()
        self.log.info("dicomweb-nb: DICOMweb at %s (WADO-URI at %s), store %s with %d studies / %d instances",
                      self.context.root_path, self.context.wado_path if self.dicomweb.enable_wado else "off",
                      store_dir, counts["studies"], counts["instances"])

    def initialize_handlers(self) -> None:
        if self.context is None:
            return
        # Paths under Jupyter's base_url, which jupyter-server puts in front of each.
        wado = self.dicomweb.wado_root if self.dicomweb.enable_wado else None
        self.handlers.extend(build_routes(jupyter_handlers, self.dicomweb.root, wado))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Once the HTTP server exists: answer requests over its header limits with 414/431."""
        if self.context is None:
            return
        try:
            http_server = serverapp.http_server
        except AttributeError:  # embedded without an HTTP server of its own (tests)
            return
        install_on(http_server)

    async def stop_extension(self) -> None:
        """On shutdown: cancel running jobs and wait for them to record it, then close the store."""
        if self.context is None:
            return
        context, self.context = self.context, None
        await asyncio.to_thread(stop_jobs, context)
        close_context(context)

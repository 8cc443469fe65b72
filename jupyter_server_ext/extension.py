"""Mounting the DICOMweb handlers in a running jupyter-server."""

from __future__ import annotations

import json
import os
from typing import Any

from dicomweb_nb.client.config import LOCAL_URL_ENV, SERVERS_ENV, STORE_ENV

from dicomweb_nb.server.app import make_context, routes_for
from dicomweb_nb.server.base import extension_base
from dicomweb_nb.server.config import DicomWeb


def store_dir_for(config: DicomWeb, root_dir: str) -> str:
    """The store folder: ``c.DicomWeb.store_dir`` (relative to the Jupyter root) or ``<root>/.dicomweb``."""
    if config.store_dir:
        path = os.path.expanduser(config.store_dir)
        return path if os.path.isabs(path) else os.path.join(root_dir, path)
    return os.path.join(root_dir, ".dicomweb")


def _export_to_kernels(serverapp: Any, config: DicomWeb, store_dir: str, root_path: str) -> None:
    """Kernels inherit the server's environment: tell ``dw.connect()`` in notebooks where the
    workspace store is, its served URL, and the configured remote servers (same user, same secrets)."""
    os.environ[STORE_ENV] = store_dir
    # A team store: the kernels open the same index and blobs (same user, same credentials).
    for name, value in (("DICOMWEB_NB_DATABASE", config.database_url), ("DICOMWEB_NB_STORAGE", config.storage_url)):
        if value:
            os.environ[name] = value
    try:
        origin = serverapp.connection_url.split(serverapp.base_url, 1)[0] if serverapp.base_url != "/" else serverapp.connection_url
        os.environ[LOCAL_URL_ENV] = origin.rstrip("/") + root_path.rstrip("/")
    except Exception:  # noqa: BLE001 - the URL only decorates answers; never fail start-up over it
        pass
    if config.servers:
        os.environ[SERVERS_ENV] = json.dumps(dict(config.servers))


def load_extension(serverapp: Any) -> None:
    config = DicomWeb(parent=serverapp)
    if not config.enable:
        serverapp.log.info("dicomweb-nb: DICOMweb disabled by c.DicomWeb.enable")
        return
    store_dir = store_dir_for(config, serverapp.root_dir)
    ctx = make_context(config, store_dir, base_url=serverapp.base_url)
    web_app = serverapp.web_app
    web_app.settings["dicomweb"] = ctx
    web_app.add_handlers(".*$", routes_for(ctx, extension_base()))
    _export_to_kernels(serverapp, config, store_dir, ctx.root_path)
    counts = ctx.store.counts()
    serverapp.log.info(
        "dicomweb-nb: DICOMweb at %s (WADO-URI at %s), store %s with %d studies / %d instances",
        ctx.root_path, ctx.wado_path if config.enable_wado else "off", store_dir, counts["studies"], counts["instances"],
    )

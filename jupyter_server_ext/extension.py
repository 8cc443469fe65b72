"""Mounting the DICOMweb handlers in a running jupyter-server."""

from __future__ import annotations

import os
from typing import Any

from dicomweb_nb.server.app import make_context, routes_for
from dicomweb_nb.server.base import extension_base
from dicomweb_nb.server.config import DicomWeb


def store_dir_for(config: DicomWeb, root_dir: str) -> str:
    """The store folder: ``c.DicomWeb.store_dir`` (relative to the Jupyter root) or ``<root>/.dicomweb``."""
    if config.store_dir:
        path = os.path.expanduser(config.store_dir)
        return path if os.path.isabs(path) else os.path.join(root_dir, path)
    return os.path.join(root_dir, ".dicomweb")


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
    counts = ctx.store.counts()
    serverapp.log.info(
        "dicomweb-nb: DICOMweb at %s (WADO-URI at %s), store %s with %d studies / %d instances",
        ctx.root_path, ctx.wado_path if config.enable_wado else "off", store_dir, counts["studies"], counts["instances"],
    )

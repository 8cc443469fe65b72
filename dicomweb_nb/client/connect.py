"""``dw.connect``: a Client for a URL, a configured server name, or this workspace's own store."""

from __future__ import annotations

import os
from collections.abc import Mapping

import requests

from ..errors import ConfigurationError
from .client import Client
from .config import RemoteServer, lookup_server, store_folder
from .http import HttpClient
from .local import local_source
from .qido import DEFAULT_PAGE_SIZE
from .web import WebSource

__all__ = ["connect"]


def connect(
    target: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    jupyter_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    timeout: float | None = None,
    retries: int = 3,
    backoff_factor: float = 0.5,
    verify: bool | str = True,
    max_workers: int = 8,
    page_size: int = DEFAULT_PAGE_SIZE,
    progress: bool = True,
    store: str | os.PathLike[str] | None = None,
) -> Client:
    """A Client for a DICOMweb service.

    ``target`` is a DICOMweb root URL (``"http://localhost:8042/dicom-web"``), the name of a server
    configured in the workspace (``servers.json`` in the store folder, Orthanc ``DicomWeb.Servers``
    format), or nothing for this workspace's own store.

    Authentication: ``username``/``password`` (HTTP basic), ``token`` (OAuth bearer),
    ``jupyter_token`` (a Jupyter server's token), extra ``headers``, or your own ``session``
    (a ``requests.Session`` used as is). Idempotent requests are retried ``retries`` times with
    exponential backoff on 429/502/503/504 and connection failures; ``timeout`` is in seconds.
    ``max_workers`` bounds the concurrent requests of frame, volume and retrieve downloads.
    """
    if target is None:
        return Client(local_source(store_folder(store)), max_workers=max_workers, progress=progress)
    server: RemoteServer | None = None
    if not target.startswith(("http://", "https://")):
        if "://" in target:
            raise ConfigurationError(f"only http:// and https:// DICOMweb URLs are supported, not {target!r}")
        server = lookup_server(target, store)
    url = server.url if server else target
    all_headers = dict(server.http_headers) if server else {}
    all_headers.update(headers or {})
    http = HttpClient(
        url,
        session=session,
        username=username if username is not None else (server.username if server else None),
        password=password if password is not None else (server.password if server else None),
        token=token,
        jupyter_token=jupyter_token,
        headers=all_headers,
        timeout=timeout if timeout is not None else (server.timeout if server and server.timeout else 60.0),
        retries=retries,
        backoff_factor=backoff_factor,
        pool_size=max(max_workers + 2, 10),
        verify=verify,
    )
    return Client(WebSource(http, page_size=page_size), max_workers=max_workers, progress=progress)

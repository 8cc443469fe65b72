"""Where a workspace keeps its store and configuration, and the environment variables that point there.

One home for these names: the store, the server, the jupyter-server extension (which passes the
environment to its kernels), the notebook client and ``dicomweb-nb`` all read them from here.
A leaf module: it imports nothing of the package, so every layer may use it.

A workspace store folder (``.dicomweb/`` by default)::

    index.sqlite       the SQLite index (a folder store)
    files/             the blobs (DICOM files) of a folder store
    tmp/               uploads being received
    store.lock         held shared by each process with the store open
    servers.json       remote DICOMweb servers (Orthanc ``DicomWeb.Servers`` form), mode 0600
    team-store.json    in a folder standing for a team store: where its index and blobs are (no password)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_ENABLED_ENV",
    "CACHE_SIZE_ENV",
    "DATABASE_ENV",
    "DEFAULT_STORE_DIRNAME",
    "FILES_DIRNAME",
    "INDEX_FILENAME",
    "LOCAL_URL_ENV",
    "LOCK_FILENAME",
    "SERVERS_ENV",
    "SERVERS_FILENAME",
    "STORAGE_ENV",
    "STORE_ENV",
    "TEAM_STORE_MARKER",
    "TMP_DIRNAME",
    "TOKEN_ENV",
    "store_folder",
]

# -- the environment ------------------------------------------------------------------------------
STORE_ENV = "DICOMWEB_NB_STORE"  # the workspace store folder (the extension sets it for its kernels)
LOCAL_URL_ENV = "DICOMWEB_NB_URL"  # the served DICOMweb root of the workspace store, for URLs in answers
SERVERS_ENV = "DICOMWEB_NB_SERVERS"  # JSON of configured remote servers (c.DicomWeb.servers, for kernels)
DATABASE_ENV = "DICOMWEB_NB_DATABASE"  # a team store's index URL (c.DicomWeb.database_url, for kernels)
STORAGE_ENV = "DICOMWEB_NB_STORAGE"  # a team store's blob storage (c.DicomWeb.storage_url, for kernels)
TOKEN_ENV = "DICOMWEB_NB_TOKEN"  # the bearer token `dicomweb-nb serve` requires
CACHE_DIR_ENV = "DICOMWEB_NB_CACHE_DIR"  # the client's frame cache folder
CACHE_SIZE_ENV = "DICOMWEB_NB_CACHE_SIZE"  # its size limit ("20 GB")
CACHE_ENABLED_ENV = "DICOMWEB_NB_CACHE"  # "off" turns it off

# -- the store folder -----------------------------------------------------------------------------
DEFAULT_STORE_DIRNAME = ".dicomweb"
INDEX_FILENAME = "index.sqlite"
FILES_DIRNAME = "files"
TMP_DIRNAME = "tmp"
LOCK_FILENAME = "store.lock"
SERVERS_FILENAME = "servers.json"
TEAM_STORE_MARKER = "team-store.json"


def store_folder(folder: str | os.PathLike[str] | None = None) -> Path:
    """The workspace store folder: ``folder``, else ``$DICOMWEB_NB_STORE`` (the Jupyter extension sets
    it for its kernels), else the nearest ``.dicomweb`` holding a store (or naming a team store) in this or a parent folder
    (a notebook in ``notebooks/`` finds the workspace's), else ``./.dicomweb``."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    cwd = Path.cwd()
    for parent in (cwd, *cwd.parents):
        candidate = parent / DEFAULT_STORE_DIRNAME
        if (candidate / INDEX_FILENAME).exists() or (candidate / TEAM_STORE_MARKER).exists():
            return candidate
    return cwd / DEFAULT_STORE_DIRNAME

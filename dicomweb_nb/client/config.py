"""Where the workspace keeps its configuration, and the remote DICOMweb servers it knows.

The servers file mirrors the Orthanc DICOMweb plugin's ``DicomWeb.Servers`` option so its users
can paste their configuration: ``{"name": {"Url": ..., "Username": ..., "Password": ...,
"HttpHeaders": {...}, "Timeout": seconds}}`` or the short form ``{"name": [url, user, password]}``.
The server side (its ``/servers`` proxy) reads the same file through ``load_servers``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigurationError, UnknownServer

__all__ = ["RemoteServer", "store_folder", "servers_file", "load_servers", "parse_servers", "lookup_server",
           "STORE_ENV", "SERVERS_FILENAME"]

STORE_ENV = "DICOMWEB_NB_STORE"
DEFAULT_STORE_DIRNAME = ".dicomweb"
SERVERS_FILENAME = "servers.json"


@dataclass(frozen=True)
class RemoteServer:
    """One configured DICOMweb server."""

    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    http_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float | None = None


def store_folder(folder: str | os.PathLike[str] | None = None) -> Path:
    """The workspace store folder: ``folder``, else ``$DICOMWEB_NB_STORE``, else ``./.dicomweb``."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    return Path.cwd() / DEFAULT_STORE_DIRNAME


def servers_file(folder: str | os.PathLike[str] | None = None) -> Path:
    return store_folder(folder) / SERVERS_FILENAME


def parse_servers(config: Mapping[str, Any], *, source: str = "servers configuration") -> dict[str, RemoteServer]:
    """Validate a ``DicomWeb.Servers``-style mapping; raises ConfigurationError naming the bad entry."""
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"{source}: expected an object mapping server names to their settings")
    servers: dict[str, RemoteServer] = {}
    for name, entry in config.items():
        where = f"{source}: server {name!r}"
        if isinstance(entry, (list, tuple)):
            if not 1 <= len(entry) <= 3 or not all(isinstance(v, str) for v in entry):
                raise ConfigurationError(f"{where}: the short form is [url] or [url, username, password]")
            url, username, password = (list(entry) + [None, None])[:3]
            servers[name] = RemoteServer(name, url, username, password)
            continue
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"{where}: expected an object with at least \"Url\"")
        url = entry.get("Url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{where}: \"Url\" must be an http:// or https:// URL, not {url!r}")
        headers = entry.get("HttpHeaders") or {}
        if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigurationError(f"{where}: \"HttpHeaders\" must map header names to strings")
        timeout = entry.get("Timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigurationError(f"{where}: \"Timeout\" must be a positive number of seconds")
        servers[name] = RemoteServer(name, url, entry.get("Username"), entry.get("Password"), dict(headers),
                                     float(timeout) if timeout is not None else None)
    return servers


def load_servers(folder: str | os.PathLike[str] | None = None) -> dict[str, RemoteServer]:
    """The servers configured for the workspace (empty when there is no servers file)."""
    path = servers_file(folder)
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the servers file {path}: {exc}") from None
    return parse_servers(config, source=str(path))


def lookup_server(name: str, folder: str | os.PathLike[str] | None = None) -> RemoteServer:
    """The configured server called ``name``; UnknownServer lists the names that exist."""
    servers = load_servers(folder)
    if name not in servers:
        known = ", ".join(sorted(servers)) or "none"
        raise UnknownServer(f"no DICOMweb server named {name!r} in {servers_file(folder)} (configured: {known}); "
                            "pass a URL instead, or add the server to that file")
    return servers[name]

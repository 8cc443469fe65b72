"""Where the workspace keeps its configuration, and the remote DICOMweb servers it knows.

The servers file mirrors the Orthanc DICOMweb plugin's ``DicomWeb.Servers`` option so its users
can paste their configuration: ``{"name": {"Url": ..., "Username": ..., "Password": ...,
"HttpHeaders": {...}, "Timeout": seconds}}`` or the short form ``{"name": [url, user, password]}``.
The server side (its ``/servers`` proxy) reads the same file through ``load_servers``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, UnknownServer
from ..fileio import write_atomically
from ..workspace import SERVERS_ENV, SERVERS_FILENAME, store_folder
from .local import workspace_servers

__all__ = ["RemoteServer", "store_folder", "servers_file", "load_servers", "parse_servers", "lookup_server",
           "save_server", "remove_server", "read_servers_file", "write_servers_file"]


@dataclass(frozen=True)
class RemoteServer:
    """One configured DICOMweb server."""

    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    http_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float | None = None


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
    """The servers configured for the workspace: ``$DICOMWEB_NB_SERVERS`` (JSON; the Jupyter extension
    passes ``c.DicomWeb.servers`` to its kernels this way), then those a team store's index holds,
    then the store's servers file (servers added with ``PUT /servers/{name}``), the file winning on
    a name clash."""
    servers: dict[str, RemoteServer] = {}
    env = os.environ.get(SERVERS_ENV)
    if env:
        try:
            servers.update(parse_servers(json.loads(env), source=f"${SERVERS_ENV}"))
        except ValueError as exc:
            raise ConfigurationError(f"${SERVERS_ENV} is not valid JSON: {exc}") from None
    # A team store's servers (in its index), through the in-process source: the client's one way into the store.
    servers.update(parse_servers(workspace_servers(store_folder(folder)), source="the team store's servers"))
    path = servers_file(folder)
    if path.exists():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the servers file {path}: {exc}") from None
        servers.update(parse_servers(config, source=str(path)))
    return servers


def lookup_server(name: str, folder: str | os.PathLike[str] | None = None) -> RemoteServer:
    """The configured server called ``name``; UnknownServer lists the names that exist."""
    servers = load_servers(folder)
    if name not in servers:
        known = ", ".join(sorted(servers)) or "none"
        raise UnknownServer(f"no DICOMweb server named {name!r} in {servers_file(folder)} (configured: {known}); "
                            "pass a URL instead, or add the server to that file")
    return servers[name]


def read_servers_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the servers file {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigurationError(f"{path}: expected an object mapping server names to their settings")
    return config


def write_servers_file(path: Path, config: Mapping[str, Any]) -> None:
    """Replace the servers file atomically (a reader sees the old list or the new one), owner-only:
    it holds passwords."""
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    write_atomically(path, text.encode("utf-8"), mode=0o600)


def save_server(name: str, url: str, *, username: str | None = None, password: str | None = None,
                http_headers: Mapping[str, str] | None = None, timeout: float | None = None,
                folder: str | os.PathLike[str] | None = None) -> RemoteServer:
    """Add (or replace) a server in the workspace's servers file, in the Orthanc ``DicomWeb.Servers`` form.

    The entry is validated as ``load_servers`` will read it (ConfigurationError names what is wrong)
    and the file is written owner-readable only, since it may hold a password.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "/" in name:
        raise ConfigurationError(f"a server name must be non-empty text without surrounding spaces or '/', not {name!r}")
    entry: dict[str, Any] = {"Url": url}
    if username:
        entry["Username"] = username
    if password:
        entry["Password"] = password
    if http_headers:
        entry["HttpHeaders"] = dict(http_headers)
    if timeout is not None:
        entry["Timeout"] = timeout
    path = servers_file(folder)
    server = parse_servers({name: entry}, source=str(path))[name]
    config = read_servers_file(path)
    config[name] = entry
    write_servers_file(path, config)
    return server


def remove_server(name: str, folder: str | os.PathLike[str] | None = None) -> None:
    """Remove a server from the workspace's servers file (UnknownServer when the file has no such name)."""
    path = servers_file(folder)
    config = read_servers_file(path)
    if name not in config:
        raise UnknownServer(f"no DICOMweb server named {name!r} in {path}")
    del config[name]
    write_servers_file(path, config)

"""The remote DICOMweb servers the proxy talks to: one list, shared with the notebook client.

Definitions use the Orthanc DICOMweb plugin's format (``DicomWeb.Servers``), so its users can paste
theirs: ``{"Url": ..., "Username": ..., "Password": ..., "HttpHeaders": {...}, "Timeout": s}`` or the
short form ``[url, username, password]``. As in Orthanc, any other key is a *user property* (string,
Boolean or integer) kept with the server; three of them change what the proxy does:

- ``HasWadoRsUniversalTransferSyntax`` (default true): retrieves ask for ``transfer-syntax=*``;
  false asks for the server's default syntax (for servers that refuse the wildcard).
- ``ChunkedTransfers``: accepted and kept; STOW-RS requests always carry a Content-Length here, so
  servers without chunked uploads work either way.
- ``HasDelete``: ``/servers/{name}/delete`` may delete on that server (``remote_calls.py``); without
  it that route answers 400, as in Orthanc.

Where servers come from:

- ``c.DicomWeb.servers`` (configuration): listed and usable, read-only over REST (PUT or DELETE of
  such a name answers 409): the configuration file stays the one place that defines them.
- ``PUT {root}/servers/{name}``: with ``c.DicomWeb.servers_in_store`` the definition is written to
  ``servers.json`` in the store folder (atomically, mode 0600) - the file ``dw.connect("name")``
  and the widgets read (``client.config.load_servers``), so a notebook sees a server as soon as it
  is added. A team store (PostgreSQL index) keeps them in its index instead, where every server
  and notebook on that store sees them. Without it, added servers last until the server stops
  (Orthanc's ``ServersInDatabase: false``): in the memory of its one process, or, for
  ``dicomweb-nb serve --workers N``, in a ``servers.json`` of the server's private folder that all
  its worker processes read and write.

A name in ``servers.json`` wins over the same name in the configuration, as in ``load_servers``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ..client.config import RemoteServer, parse_servers, read_servers_file, write_servers_file
from ..client.http import HttpClient
from ..client.web import WebSource
from ..errors import ConfigurationError
from ..workspace import SERVERS_FILENAME

try:
    import fcntl
except ImportError:  # Windows: one process per server
    fcntl = None  # type: ignore[assignment]

__all__ = ["RemoteServers", "ServerEntry", "ServerDefinitionError", "ReadOnlyServer", "UnknownRemote",
           "validate_definition", "public_definition", "SERVER_NAME"]

Origin = Literal["configuration", "store", "memory"]

# Names end up in URLs and in dw.connect("name"), which treats "scheme://" as a URL: keep them plain.
SERVER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_RESERVED = {"Url", "Username", "Password", "HttpHeaders", "Timeout", "CertificateFile", "CertificateKeyFile",
             "CertificateKeyPassword", "Pkcs11"}
_BOOLEAN_PROPERTIES = ("HasWadoRsUniversalTransferSyntax", "ChunkedTransfers", "HasDelete")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token
# Headers that belong to the connection, not to the server: the proxy sets them itself.
_FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer",
                      "keep-alive", "proxy-authorization", "proxy-connection"}


class ServerDefinitionError(ValueError):
    """A server definition that cannot be used; ``field`` names the offending key."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


class UnknownRemote(KeyError):
    """No server of that name."""

    def __str__(self) -> str:
        return str(self.args[0])


class ReadOnlyServer(Exception):
    """A server defined in the configuration, which REST calls do not change."""


def _check_headers(headers: Any, field: str) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ServerDefinitionError(field, f'"{field}" must be an object mapping header names to string values')
    out: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not _HEADER_NAME.match(key):
            raise ServerDefinitionError(field, f'"{field}": {key!r} is not a valid HTTP header name')
        if key.lower() in _FORBIDDEN_HEADERS:
            raise ServerDefinitionError(field, f'"{field}": the {key} header is set by the proxy itself')
        if not isinstance(value, str) or any(ch in value for ch in "\r\n\0"):
            raise ServerDefinitionError(field, f'"{field}": the value of {key} must be a one-line string')
        out[key] = value
    return out


def check_header_map(headers: Any, field: str = "HttpHeaders") -> dict[str, str]:
    """Validate extra headers of a proxied call (same rules as a definition's ``HttpHeaders``)."""
    return _check_headers(headers, field)


def _check_boolean(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ServerDefinitionError(
        field, f'"{field}" must be a Boolean (true/false, or "1"/"0" as Orthanc writes it), not {value!r}'
    )


def validate_definition(body: Any) -> dict[str, Any]:
    """A definition checked and normalised to the advanced (object) format.

    Raises ServerDefinitionError naming the field. Accepts Orthanc's short form ``[url, user,
    password]`` and its ``URL`` spelling of ``Url``.
    """
    if isinstance(body, list):
        if not 1 <= len(body) <= 3 or not all(isinstance(v, str) for v in body):
            raise ServerDefinitionError(None, "the short form of a server is [url] or [url, username, password]")
        body = dict(zip(("Url", "Username", "Password"), body))
    if not isinstance(body, Mapping):
        raise ServerDefinitionError(None, 'a server definition is a JSON object such as {"Url": "https://host/dicom-web"}')
    body = dict(body)
    if "Url" not in body and "URL" in body:
        body["Url"] = body.pop("URL")
    for key in list(body):
        if key not in _RESERVED and key.lower() in {r.lower() for r in _RESERVED}:
            proper = next(r for r in _RESERVED if r.lower() == key.lower())
            raise ServerDefinitionError(key, f'unknown field "{key}": did you mean "{proper}"?')
    url = body.get("Url")
    if not isinstance(url, str) or not url:
        raise ServerDefinitionError("Url", '"Url" is required: the DICOMweb root of the server, e.g. "https://pacs.example.org/dicom-web"')
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ServerDefinitionError("Url", f'"Url" must be an http:// or https:// URL, not {url!r}')
    if not parts.hostname:
        raise ServerDefinitionError("Url", f'"Url" has no host name: {url!r}')
    if parts.username or parts.password:
        raise ServerDefinitionError("Url", 'put credentials in "Username" and "Password", not in "Url"')
    if parts.fragment or parts.query:
        raise ServerDefinitionError("Url", f'"Url" is the DICOMweb root, without query or fragment: {url!r}')
    out: dict[str, Any] = {"Url": url}
    for field in ("Username", "Password"):
        value = body.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ServerDefinitionError(field, f'"{field}" must be a string')
        out[field] = value
    if "Password" in out and "Username" not in out:
        raise ServerDefinitionError("Username", 'a "Password" needs a "Username"')
    headers = _check_headers(body.get("HttpHeaders"), "HttpHeaders")
    if headers:
        out["HttpHeaders"] = headers
    timeout = body.get("Timeout")
    if timeout is not None:
        if isinstance(timeout, str):
            try:
                timeout = float(timeout)
            except ValueError:
                raise ServerDefinitionError(
                    "Timeout", f'"Timeout" must be a number of seconds, not {body["Timeout"]!r}'
                ) from None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
            raise ServerDefinitionError("Timeout", '"Timeout" must be a positive number of seconds (at most a day)')
        out["Timeout"] = float(timeout) if not float(timeout).is_integer() else int(timeout)
    for field in ("CertificateFile", "CertificateKeyFile", "CertificateKeyPassword"):
        if body.get(field):
            raise ServerDefinitionError(field, f'"{field}": TLS client certificates are not supported by this proxy')
    if body.get("Pkcs11"):
        raise ServerDefinitionError("Pkcs11", '"Pkcs11": PKCS#11 authentication is not supported by this proxy')
    for key, value in body.items():
        if key in _RESERVED:
            continue
        if not isinstance(key, str) or not key:
            raise ServerDefinitionError(None, "property names must be non-empty strings")
        if key in _BOOLEAN_PROPERTIES:
            out[key] = _check_boolean(value, key)
        elif isinstance(value, (str, bool)) or (isinstance(value, int) and not isinstance(value, bool)):
            out[key] = value
        else:
            raise ServerDefinitionError(key, f'user property "{key}" must be a string, Boolean or integer (as in Orthanc)')
    return out


def public_definition(definition: Mapping[str, Any], origin: Origin | None = None) -> dict[str, Any]:
    """What may be shown of a definition: as Orthanc's ``FormatPublic``, the password is null and
    only the names of the HTTP headers are listed (their values may be secrets)."""
    out: dict[str, Any] = {"Url": definition["Url"]}
    if definition.get("Username"):
        out["Username"] = definition["Username"]
        out["Password"] = None
    out["HttpHeaders"] = sorted(definition.get("HttpHeaders") or {})
    if "Timeout" in definition:
        out["Timeout"] = definition["Timeout"]
    for key, value in definition.items():
        if key not in _RESERVED:
            out[key] = value
    if origin is not None:
        out["Origin"] = origin
    return out


def _read_definition(name: str, entry: Any) -> dict[str, Any]:
    """A stored definition as the proxy uses it (one written by a notebook may be looser)."""
    try:
        return validate_definition(entry)
    except ServerDefinitionError:
        return _definition_from_remote(parse_servers({name: entry})[name])


def _definition_from_remote(server: RemoteServer) -> dict[str, Any]:
    out: dict[str, Any] = {"Url": server.url}
    if server.username:
        out["Username"] = server.username
    if server.password:
        out["Password"] = server.password
    if server.http_headers:
        out["HttpHeaders"] = dict(server.http_headers)
    if server.timeout:
        out["Timeout"] = server.timeout
    return out


@dataclass(frozen=True)
class ServerEntry:
    """One known server: its definition (Orthanc format, secrets included) and where it comes from."""

    name: str
    definition: dict[str, Any]
    origin: Origin

    @property
    def url(self) -> str:
        return self.definition["Url"]

    @property
    def timeout(self) -> float | None:
        value = self.definition.get("Timeout")
        return float(value) if value is not None else None

    @property
    def universal_transfer_syntax(self) -> bool:
        return bool(self.definition.get("HasWadoRsUniversalTransferSyntax", True))

    def public(self) -> dict[str, Any]:
        return public_definition(self.definition, self.origin)


class RemoteServers:
    """The servers known to one DICOMweb server process, and HTTP clients for them.

    ``configured``: ``c.DicomWeb.servers`` (validated here: a bad entry stops start-up with a
    message naming it). ``store_dir``: the store folder whose ``servers.json`` holds servers added
    by PUT, or None to keep them in memory, or in ``shared_dir``'s ``servers.json`` when given (the
    private folder of a server's worker processes: they last until the server stops, like memory).
    """

    def __init__(self, configured: Mapping[str, Any], *, store_dir: str | os.PathLike[str] | None,
                 index: Any = None, default_timeout: float = 60.0, shared_dir: str | os.PathLike[str] | None = None):
        self.default_timeout = default_timeout
        self._configured: dict[str, dict[str, Any]] = {}
        parsed = parse_servers(configured, source="c.DicomWeb.servers")  # the client's reading, so both agree
        for name, server in parsed.items():
            if not SERVER_NAME.match(name):
                raise ConfigurationError(f"c.DicomWeb.servers: {name!r} is not a usable server name "
                                         "(letters, digits, '_', '.', '-'; at most 64 characters)")
            entry = configured[name]
            try:
                self._configured[name] = validate_definition(entry)
            except ServerDefinitionError as exc:
                raise ConfigurationError(f"c.DicomWeb.servers: server {name!r}: {exc}") from None
            assert self._configured[name]["Url"] == server.url
        self.index = index  # a team store: load_servers() / save_server(name, definition)
        self.file: Path | None = None
        self._origin: Origin = "store" if store_dir is not None or index is not None else "memory"
        if index is None and (store_dir is not None or shared_dir is not None):
            self.file = Path(store_dir if store_dir is not None else shared_dir) / SERVERS_FILENAME  # type: ignore[arg-type]
        self._memory: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._file_cache: tuple[tuple[int, int, int], dict[str, dict[str, Any]]] | None = None
        self._clients: dict[tuple[str, str], tuple[dict[str, Any], WebSource]] = {}
        # Blocking remote I/O of the /get pass-through runs here, apart from the store's workers.
        self.io_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dicomweb-proxy")

    # -- reading ----------------------------------------------------------------------------------
    def _stored(self) -> dict[str, dict[str, Any]]:
        """servers.json, re-read when it changes (a notebook or an editor may write it too)."""
        if self.index is not None:
            return {name: _read_definition(name, entry) for name, entry in self.index.load_servers().items()}
        if self.file is None:
            return self._memory
        try:
            st = self.file.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if self._file_cache is not None and self._file_cache[0] == key:
                return self._file_cache[1]
            raw = read_servers_file(self.file)
            parse_servers(raw, source=str(self.file))
            parse_servers(raw, source=str(self.file))
            servers = {name: _read_definition(name, entry) for name, entry in raw.items()}
            self._file_cache = (key, servers)
            return servers

    def entries(self) -> dict[str, ServerEntry]:
        with self._lock:
            out = {name: ServerEntry(name, d, "configuration") for name, d in self._configured.items()}
            for name, definition in self._stored().items():
                out[name] = ServerEntry(name, definition, self._origin)
            return dict(sorted(out.items()))

    def names(self) -> list[str]:
        return list(self.entries())

    def get(self, name: str) -> ServerEntry:
        entries = self.entries()
        if name not in entries:
            known = ", ".join(entries) or "none"
            raise UnknownRemote(f"no remote DICOMweb server named {name!r} (known: {known})")
        return entries[name]

    # -- changing ---------------------------------------------------------------------------------
    def put(self, name: str, body: Any) -> tuple[ServerEntry, bool]:
        """Add or replace a server; returns the entry and whether it is new."""
        if not SERVER_NAME.match(name):
            raise ServerDefinitionError("name", f"{name!r} is not a usable server name (letters, digits, '_', '.', '-'; "
                                                "at most 64 characters, not starting with '.' or '-')")
        definition = validate_definition(body)
        with self._lock, self._file_lock():
            stored = dict(self._stored())
            if name in self._configured and name not in stored:
                raise ReadOnlyServer(f"server {name!r} is defined in the configuration (c.DicomWeb.servers); "
                                     "change it there, or add this one under another name")
            created = name not in stored
            stored[name] = definition
            self._write(stored)
            self._forget_clients(name)
            return self.get(name), created

    def delete(self, name: str) -> None:
        with self._lock, self._file_lock():
            stored = dict(self._stored())
            if name not in stored:
                if name in self._configured:
                    raise ReadOnlyServer(f"server {name!r} is defined in the configuration (c.DicomWeb.servers) "
                                         "and cannot be deleted over REST")
                self.get(name)  # raises UnknownRemote listing the known names
            del stored[name]
            self._write(stored)
            self._forget_clients(name)

    @contextlib.contextmanager
    def _file_lock(self) -> Any:
        """Serialise the read-modify-write of servers.json with other processes writing it (the
        workers of one server, a notebook): an exclusive flock on a lock file beside it."""
        if self.file is None or fcntl is None:
            yield
            return
        fd = os.open(self.file.with_name(self.file.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._file_cache = None  # another process may have written it a moment ago
            yield
        finally:
            os.close(fd)

    def _write(self, servers: dict[str, dict[str, Any]]) -> None:
        if self.index is not None:
            before = self._stored()
            for name in set(before) - set(servers):
                self.index.save_server(name, None)
            for name, definition in servers.items():
                if before.get(name) != definition:
                    self.index.save_server(name, definition)
            return
        if self.file is None:
            self._memory = servers
            return
        write_servers_file(self.file, servers)
        self._file_cache = None

    # -- HTTP clients -----------------------------------------------------------------------------
    def source(self, name: str, *, purpose: Literal["call", "transfer"] = "call",
               extra_headers: Mapping[str, str] | None = None) -> WebSource:
        """A WebSource (the notebook client's) for a server.

        ``call``: no retries, so a pass-through answers at once (the caller may retry);
        ``transfer``: two retries with backoff, for jobs. Cached per server and purpose, except
        with ``extra_headers`` (a fresh client, closed by the caller).
        """
        entry = self.get(name)
        if extra_headers:
            return self._new_source(entry, purpose, extra_headers)
        key = (name, purpose)
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None and cached[0] == entry.definition:
                return cached[1]
            source = self._new_source(entry, purpose, None)
            self._clients[key] = (entry.definition, source)
            return source

    def _new_source(self, entry: ServerEntry, purpose: str, extra_headers: Mapping[str, str] | None) -> WebSource:
        d = entry.definition
        headers = dict(d.get("HttpHeaders") or {})
        headers.update(extra_headers or {})
        timeout = entry.timeout or self.default_timeout
        http = HttpClient(d["Url"], username=d.get("Username"), password=d.get("Password"), headers=headers,
                          timeout=timeout, retries=0 if purpose == "call" else 2, backoff_factor=0.5, pool_size=8)
        return WebSource(http)

    def _forget_clients(self, name: str) -> None:
        # Not closed: a running job may still use it; its connections go with the last reference.
        for key in [k for k in self._clients if k[0] == name]:
            del self._clients[key]

    def close(self) -> None:
        with self._lock:
            for _definition, source in self._clients.values():
                source.close()
            self._clients.clear()
        self.io_pool.shutdown(wait=False, cancel_futures=True)

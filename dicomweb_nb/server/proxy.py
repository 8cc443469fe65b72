"""The DICOMweb client proxy, with the REST API of the Orthanc DICOMweb plugin's client.

==============================================  =====================================================
``GET {root}/servers``                          names of the remote servers; ``?expand``: their public
                                                definitions by name (passwords null, header names only)
``GET {root}/servers/{name}``                   the operations offered: ``["get", "retrieve", "stow", "qido"]``
                                                and ``"delete"`` with ``HasDelete`` (as Orthanc, but for
                                                its ``wado``); ``?expand``: the public definition
``PUT {root}/servers/{name}``                   add or replace a server (see ``remotes.py``)
``DELETE {root}/servers/{name}``                remove one added by PUT
``POST {root}/servers/{name}/get``              ``{"Uri", "Arguments"?, "HttpHeaders"?}``: a GET on the
                                                remote (QIDO-RS, WADO-RS), its answer streamed back
``POST {root}/servers/{name}/qido``, ``/delete``  a QIDO-RS search in Orthanc's simplified form, a DELETE
                                                on the remote (``remote_calls.py``)
``POST {root}/servers/{name}/stow``             ``{"Resources", "HttpHeaders"?, "Synchronous"?, "Priority"?}``:
                                                local instances sent by STOW-RS
``POST {root}/servers/{name}/retrieve``         ``{"Resources", "HttpHeaders"?, "GetArguments"?, ...}``:
                                                WADO-RS download into the store
==============================================  =====================================================

Resources are identified by DICOM UIDs. ``/retrieve`` takes ``{"Study": uid, "Series"?: uid,
"Instance"?: uid}`` objects (a bare string is a study UID). ``/stow`` takes the same objects (any of
the three keys; ``Study`` may be left out) or bare UID strings, looked up as a study, a series, then
an instance UID of the store. Orthanc's own identifiers (SHA-1 hashes) mean nothing here: a string
that is not a DICOM UID gets a 400 saying so.

``Synchronous`` (default true, as Orthanc; ``"Asynchronous": true`` also works) waits for the
transfer; ``false`` answers ``{"ID", "Path"}`` at once and the job runs in the background
(``jobs.py``), ``Priority`` first. A synchronous ``/retrieve`` answers the list of the SOP Instance
UIDs stored (Orthanc answers its own instance IDs); a synchronous ``/stow`` the job's Content.

``"Debug": true`` (Orthanc's option) slows a transfer down by 50 ms per retrieved and 100 ms per
sent instance, so its progress and cancellation can be watched.

A remote that cannot be reached, is too slow, answers an error or sends something that is not
DICOMweb gives 502 (504 for a timeout) with ``RemoteStatus`` / ``RemoteMessage`` when it answered,
and, for transfers, the ``Content`` of what was done before the failure. An unknown server name is
a 404, a bad request body a 400 naming the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from ..client.http import encode_query
from ..errors import ConfigurationError, DicomWebError
from .base import ApiError, DicomWebMixin
from .jobs import FAILURE, Job, JobContext, job_answer
from .remotes import (
    ReadOnlyServer,
    RemoteServers,
    ServerDefinitionError,
    ServerEntry,
    UnknownRemote,
    check_header_map,
)
from .transfers import (
    RETRIEVE_DEBUG_DELAY,
    STOW_DEBUG_DELAY,
    ResourceError,
    iter_available,
    parse_retrieve_resources,
    parse_stow_resources,
    remote_failure,
    resolve_local,
    retrieve_from_remote,
    stow_to_remote,
)

__all__ = ["RemoteServers", "ProxyError", "ServersMixin", "ServerMixin", "ServerGetMixin", "ServerStowMixin",
           "ServerRetrieveMixin", "remote_url"]

log = logging.getLogger("dicomweb_nb.server.proxy")
T = TypeVar("T")

# Remote answers' headers worth passing on (hop-by-hop and encoding headers are the proxy's own).
_FORWARDED_HEADERS = ("Warning", "Content-Location", "ETag", "Last-Modified", "Cache-Control")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class ProxyError(ApiError):
    """An error answer with more JSON fields than the message (the remote's status, what was done)."""

    def __init__(self, status: int, message: str, **fields: Any):
        super().__init__(status, message)
        self.fields = fields


def remote_url(base_url: str, uri: Any, arguments: Any) -> str:
    """The remote URL of a ``/get`` call: ``Uri`` (a path under the server's DICOMweb root, with an
    optional query) and ``Arguments`` (query parameters, encoded as the notebook client does).

    Refuses what would leave the configured server: absolute URLs, ``//host``, dot segments.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ApiError(400, '"Uri" is required: a path under the remote DICOMweb root, such as "/studies"')
    if any(ord(ch) < 32 or ch == "\\" for ch in uri):
        raise ApiError(400, '"Uri" must not contain control characters or backslashes')
    parts = urlsplit(uri)
    if parts.scheme or parts.netloc or uri.startswith("//"):
        raise ApiError(400, f'"Uri" must be a path relative to the server\'s DICOMweb root, not an absolute URL ({uri[:100]!r}): '
                            "this proxy only talks to configured servers")
    if parts.fragment:
        raise ApiError(400, '"Uri" must not have a fragment (#...)')
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        raise ApiError(400, '"Uri" must not contain "." or ".." segments: it stays under the server\'s DICOMweb root')
    query = [parts.query] if parts.query else []
    if arguments is not None:
        if not isinstance(arguments, dict):
            raise ApiError(400, '"Arguments" must be an object mapping query parameters to values')
        pairs = []
        for key, value in arguments.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ApiError(400, f'"Arguments": the value of {key!r} must be a string (or a number)')
            pairs.append((str(key), str(value)))
        if pairs:
            query.append(encode_query(pairs))
    url = base_url.rstrip("/") + quote(path, safe=_PATH_SAFE)
    return url + ("?" + "&".join(query) if query else "")


class _ProxyBase(DicomWebMixin):
    """Shared by the proxy handlers: the registry, the request body, errors with extra fields."""

    @property
    def servers(self) -> RemoteServers:
        servers = self.ctx.servers
        if servers is None:
            raise ApiError(503, "the DICOMweb client proxy is not enabled on this server")
        return servers

    def entry(self, name: str) -> ServerEntry:
        try:
            return self.servers.get(name)
        except UnknownRemote as exc:
            raise ApiError(404, str(exc)) from None
        except ConfigurationError as exc:
            raise ApiError(500, str(exc)) from None

    def json_body(self, *, allow_list: bool = False) -> Any:
        body = self.request.body
        if not body or not body.strip():
            raise ApiError(400, "the request needs a JSON body")
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(value, dict) and not (allow_list and isinstance(value, list)):
            raise ApiError(400, "the request body must be a JSON object")
        return value

    async def in_proxy_pool(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking remote I/O on the proxy's own threads: a slow remote never holds the store's."""
        pool: ThreadPoolExecutor = self.servers.io_pool
        return await IOLoop.current().run_in_executor(pool, partial(fn, *args, **kwargs))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ProxyError):
            self.clear_header("Content-Disposition")
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"status": status_code, "message": exc.message, **exc.fields}))
            return
        super().write_error(status_code, **kwargs)


class ServersMixin(_ProxyBase):
    """``GET {root}/servers``."""

    async def get(self) -> None:
        entries = await self.run_blocking(self._entries)
        if self.get_query_argument("expand", None) is not None:
            self.write_json({name: e.public() for name, e in entries.items()}, 200, "application/json")
        else:
            self.write_json(list(entries), 200, "application/json")

    def _entries(self) -> dict[str, ServerEntry]:
        try:
            return self.servers.entries()
        except ConfigurationError as exc:
            raise ApiError(500, str(exc)) from None


class ServerMixin(_ProxyBase):
    """``GET`` / ``PUT`` / ``DELETE {root}/servers/{name}``."""

    async def get(self, name: str) -> None:
        entry = await self.run_blocking(self.entry, name)
        if self.get_query_argument("expand", None) is not None:
            self.write_json(entry.public(), 200, "application/json")
        else:
            operations = ["get", "retrieve", "stow", "qido"] + (["delete"] if entry.definition.get("HasDelete") else [])
            self.write_json(operations, 200, "application/json")

    async def put(self, name: str) -> None:
        body = self.json_body(allow_list=True)
        try:
            entry, created = await self.run_blocking(self.servers.put, name, body)
        except ServerDefinitionError as exc:
            raise ProxyError(400, f"bad definition of server {name!r}: {exc}", Field=exc.field) from None
        except ReadOnlyServer as exc:
            raise ApiError(409, str(exc)) from None
        log.info("remote DICOMweb server %r %s (%s)", name, "added" if created else "updated", entry.url)
        self.write_json(entry.public(), 200, "application/json")

    async def delete(self, name: str) -> None:
        try:
            await self.run_blocking(self.servers.delete, name)
        except UnknownRemote as exc:
            raise ApiError(404, str(exc)) from None
        except ReadOnlyServer as exc:
            raise ApiError(409, str(exc)) from None
        log.info("remote DICOMweb server %r deleted", name)
        self.write_json({}, 200, "application/json")


class ServerGetMixin(_ProxyBase):
    """``POST {root}/servers/{name}/get``: a GET on the remote, streamed back with its content type."""

    _remote_response: Any = None

    async def post(self, name: str) -> None:
        entry = await self.run_blocking(self.entry, name)  # servers.json may be on a slow (network) disk
        body = self.json_body()
        url = remote_url(entry.url, body.get("Uri"), body.get("Arguments"))
        try:
            headers = check_header_map(body.get("HttpHeaders"))
        except ServerDefinitionError as exc:
            raise ProxyError(400, str(exc), Field="HttpHeaders") from None
        source = await self.run_blocking(self.servers.source, name, purpose="call")
        try:
            response = await self.in_proxy_pool(source.http.request, "GET", url, stream=True, headers=headers)
        except DicomWebError as exc:
            failure = remote_failure(exc, name, action="GET")
            raise ProxyError(failure.http_status, failure.message, **failure.extra) from None
        self._remote_response = response
        try:
            await self._relay(response, name)
        finally:
            response.close()
            self._remote_response = None

    async def _relay(self, response: Any, name: str) -> None:
        self.set_status(response.status_code)
        self.set_header("Content-Type", response.headers.get("Content-Type") or "application/octet-stream")
        for header in _FORWARDED_HEADERS:
            if header in response.headers:
                self.set_header(header, response.headers[header])
        chunks = iter_available(response, 1 << 16)
        end = object()
        started = False
        while True:
            try:
                chunk = await self.in_proxy_pool(next, chunks, end)
            except Exception as exc:  # noqa: BLE001 - the remote broke off mid-answer
                if not started:
                    raise ProxyError(502, f"remote DICOMweb server {name!r} broke off its answer: {exc}",
                                     RemoteServer=name, RemoteStatus=response.status_code) from None
                # The status line is gone: cut the connection so the caller sees a truncated answer,
                # never a complete-looking one.
                log.warning("remote %r broke off a proxied answer after it started: %s", name, exc)
                self.http_connection.stream.close()
                return
            if chunk is end:
                break
            if not chunk:
                continue
            self.write(chunk)
            started = True
            try:
                await self.flush()
            except StreamClosedError:
                return  # our caller went away; the remote response is closed by post()
        self.finish()

    def on_connection_close(self) -> None:
        if self._remote_response is not None:
            self._remote_response.close()
        super().on_connection_close()


class _TransferBase(_ProxyBase):
    """``/stow`` and ``/retrieve``: synchronous call or job."""

    def debug_of(self, body: dict[str, Any]) -> bool:
        """Orthanc's ``"Debug": true``: slow the transfer down (per instance) to watch progress and cancel."""
        debug = body.get("Debug", False)
        if not isinstance(debug, bool):
            raise ProxyError(400, '"Debug" must be true or false', Field="Debug")
        return debug

    def options_of(self, body: dict[str, Any]) -> tuple[bool, int, dict[str, str]]:
        synchronous = body.get("Synchronous")
        if synchronous is None and "Asynchronous" in body:
            asynchronous = body["Asynchronous"]
            if not isinstance(asynchronous, bool):
                raise ProxyError(400, '"Asynchronous" must be true or false', Field="Asynchronous")
            synchronous = not asynchronous
        if synchronous is None:
            synchronous = True
        if not isinstance(synchronous, bool):
            raise ProxyError(400, '"Synchronous" must be true or false', Field="Synchronous")
        priority = body.get("Priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ProxyError(400, '"Priority" must be an integer (higher runs first)', Field="Priority")
        try:
            headers = check_header_map(body.get("HttpHeaders"))
        except ServerDefinitionError as exc:
            raise ProxyError(400, str(exc), Field="HttpHeaders") from None
        return synchronous, priority, headers

    async def run_transfer(self, job_type: str, work: Callable[[JobContext], dict[str, Any]], *, synchronous: bool,
                           priority: int, request: dict[str, Any], answer: Callable[[Job], Any]) -> None:
        jobs = self.ctx.jobs
        if jobs is None:
            raise ApiError(503, "jobs are not available on this server")
        job = await self.run_blocking(jobs.submit, job_type, work, priority=priority, request=request)
        if not synchronous:
            self.write_json(job_answer(job, self.ctx.root_path), 200, "application/json")
            return
        job = await jobs.wait(job)
        if job.state == FAILURE:
            message = job.error_description
            if job.error_details and job.error_details not in message:
                message += f" ({job.error_details})"
            raise ProxyError(job.http_status or 500, message, ErrorCode=job.error_code, JobID=job.id,
                             Content=job.public()["Content"], **job.error_extra)
        self.write_json(answer(job), 200, "application/json")

    def resources_error(self, exc: ResourceError) -> ProxyError:
        return ProxyError(exc.status, str(exc), Field="Resources")


class ServerStowMixin(_TransferBase):
    """``POST {root}/servers/{name}/stow``."""

    async def post(self, name: str) -> None:
        entry = await self.run_blocking(self.entry, name)
        body = self.json_body()
        synchronous, priority, headers = self.options_of(body)
        try:
            resources = parse_stow_resources(body.get("Resources"))
            rows = await self.run_blocking(resolve_local, self.store, resources)
        except ResourceError as exc:
            raise self.resources_error(exc) from None
        servers, debug = self.servers, self.debug_of(body)

        def work(ctx: JobContext) -> dict[str, Any]:
            source = servers.source(name, purpose="transfer", extra_headers=headers or None)
            try:
                return stow_to_remote(ctx, source, rows, server=name, debug_delay=STOW_DEBUG_DELAY if debug else 0.0)
            finally:
                if headers:
                    source.close()

        request = {"RemoteServer": name, "Resources": [r if isinstance(r, str) else r.public() for r in resources]}
        await self.run_transfer("DicomWebStowClient", work, synchronous=synchronous, priority=priority,
                                request=request, answer=lambda job: job.public()["Content"])
        log.debug("STOW-RS of %d instances to %s (%s)", len(rows), name, entry.url)


class ServerRetrieveMixin(_TransferBase):
    """``POST {root}/servers/{name}/retrieve``."""

    async def post(self, name: str) -> None:
        entry = await self.run_blocking(self.entry, name)
        body = self.json_body()
        synchronous, priority, headers = self.options_of(body)
        try:
            resources = parse_retrieve_resources(body.get("Resources"))
        except ResourceError as exc:
            raise self.resources_error(exc) from None
        arguments_field = "GetArguments" if "GetArguments" in body else "Arguments"
        raw_arguments = body.get(arguments_field) or {}
        if not isinstance(raw_arguments, dict) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                          for v in raw_arguments.values()):
            raise ProxyError(400, f'"{arguments_field}" must map query parameters to strings', Field=arguments_field)
        arguments = [(str(k), str(v)) for k, v in raw_arguments.items()]
        servers, store, debug = self.servers, self.store, self.debug_of(body)

        def work(ctx: JobContext) -> dict[str, Any]:
            source = servers.source(name, purpose="transfer")
            return retrieve_from_remote(ctx, source, store, resources, server=name, headers=headers,
                                        arguments=arguments, universal=entry.universal_transfer_syntax,
                                        debug_delay=RETRIEVE_DEBUG_DELAY if debug else 0.0)

        request = {"RemoteServer": name, "Resources": [r.public() for r in resources]}
        await self.run_transfer("DicomWebWadoRetrieveClient", work, synchronous=synchronous, priority=priority,
                                request=request, answer=lambda job: list(job.content.get("Instances", [])))


"""What every DICOMweb handler shares: the context, errors as JSON, content negotiation, public URLs,
CORS, running blocking work off the event loop, and refusing a streamed upload without losing the answer.

Each service is written once as a mixin over ``tornado.web.RequestHandler``; the handler classes
of the two mount points combine these mixins with their base (``standalone_handlers.py``: the
token / basic auth of ``dicomweb-nb serve``; ``jupyter_handlers.py``: Jupyter's authentication and
Authorizer). ``routes.py`` is the one URL table of both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.ioloop import IOLoop

from ..dicom.mediatypes import MediaType, MediaTypeError, NotAcceptable, negotiate, parse_accept
from ..dicom.resources import resource_url
from ..store import InstanceRow, NotFoundError, Store
from ..store.transcode import TranscodeError
from .config import DicomWeb
from .cpu import Refusal

if TYPE_CHECKING:
    from .cpu import CpuPool
    from .jobs import JobManager
    from .proxy import RemoteServers
    from .workitems import EventRelay

if TYPE_CHECKING:
    # The mixins are written against tornado's RequestHandler (each is combined with one in the
    # handler classes); the type checker sees them as RequestHandlers, the runtime as plain mixins,
    # so the method resolution order of the handler classes stays what they list.
    _RequestHandler = web.RequestHandler
else:
    _RequestHandler = object

log = logging.getLogger("dicomweb_nb.server")
T = TypeVar("T")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass
class DicomWebContext:
    """Shared state of one server: configuration, store, worker pool, and mount points."""

    config: DicomWeb
    store: Store
    executor: ThreadPoolExecutor
    root_path: str  # URL path of the DICOMweb root, with base_url, ending in "/"
    wado_path: str
    auth_token: str | None = None  # standalone only
    basic_auth: tuple[str, str] | None = None  # standalone only
    servers: RemoteServers | None = None
    jobs: JobManager | None = None
    cpu: CpuPool | None = None  # CPU-heavy work (parsing uploads, rendering): pool processes or the executor
    worklist_relay: EventRelay | None = None  # the worklist's notification channels (workitems.py)


class ApiError(web.HTTPError):
    """An error answer with a readable message (sent as JSON)."""

    def __init__(self, status: int, message: str, **headers: str):
        super().__init__(status, log_message=message, reason=None)
        self.message = message
        self.headers = headers


class DicomWebMixin(_RequestHandler):
    """Common behaviour of the DICOMweb handlers (mixed into a RequestHandler)."""

    @property
    def ctx(self) -> DicomWebContext:
        return self.settings["dicomweb"]

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def http_connection(self) -> HTTP1Connection:
        """The request's connection: tornado's HTTP server (both mount points) makes HTTP/1.x ones."""
        return cast(HTTP1Connection, self.request.connection)

    async def run_blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run disk, SQLite or codec work on the worker pool; unknown UIDs become 404."""
        try:
            return await IOLoop.current().run_in_executor(self.ctx.executor, partial(fn, *args, **kwargs))
        except NotFoundError as exc:
            raise ApiError(404, str(exc)) from None
        except TranscodeError as exc:
            raise ApiError(406, str(exc)) from None

    async def run_cpu(self, fn: Callable[..., T | Refusal], *args: Any, inline: bool = False, **kwargs: Any) -> T:
        """Run CPU-heavy, picklable work in the CPU pool (``cpu.py``), or here with ``inline`` (work
        known to cost less than handing it over); a ``Refusal`` it returns becomes the request's error answer."""
        assert self.ctx.cpu is not None
        try:
            result = fn(*args, **kwargs) if inline else await asyncio.wrap_future(self.ctx.cpu.submit(fn, *args, **kwargs))
        except NotFoundError as exc:
            raise ApiError(404, str(exc)) from None
        except TranscodeError as exc:
            raise ApiError(406, str(exc)) from None
        if isinstance(result, Refusal):
            raise ApiError(result.status, result.message)
        return result

    async def instance_row(self, study: str | None, series: str | None, instance: str) -> InstanceRow:
        """One stored instance: from the store's row cache on this thread when it is there (a
        worker-thread round trip costs more than the cached lookup), else from the index on a worker."""
        row = self.store.cached_instance(study, series, instance)
        if row is not None:
            return row
        return (await self.run_blocking(self.store.instances, study, series, instance))[0]

    # -- errors -----------------------------------------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
            for name, value in exc.headers.items():
                self.set_header(name.replace("_", "-"), value)
        elif isinstance(exc, web.HTTPError):
            message = (
                exc.log_message % exc.args
                if exc.log_message and exc.args
                else (exc.log_message or HTTPStatus(status_code).phrase)
            )
        elif exc is not None:
            message = f"internal error: {type(exc).__name__}: {exc}"
            log.error("unhandled error on %s %s\n%s", self.request.method, self.request.uri,
                      "".join(traceback.format_exception(*kwargs["exc_info"])))
        else:
            message = HTTPStatus(status_code).phrase
        self.clear_header("Content-Disposition")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def uid(self, value: str, what: str) -> str:
        """A UID from the URL, validated (digits and dots, at most 64 characters): no path tricks."""
        if not value or len(value) > 64 or not _UID.match(value):
            raise ApiError(400, f"{what} {value[:80]!r} is not a valid DICOM UID (digits and dots, at most 64 characters)")
        return value

    # -- content negotiation ------------------------------------------------------------------------
    def accepted(self) -> list[MediaType]:
        try:
            ranges = parse_accept(self.request.headers.get("Accept"))
        except MediaTypeError as exc:
            raise ApiError(400, f"malformed Accept header: {exc}") from None
        # PS3.18 8.3.3.1: the "accept" query parameter takes precedence over the header.
        query_accept = self.get_query_arguments("accept") if hasattr(self, "get_query_arguments") else []
        if query_accept:
            try:
                ranges = parse_accept(",".join(query_accept))
            except MediaTypeError as exc:
                raise ApiError(400, f"malformed accept parameter: {exc}") from None
        return ranges

    def choose(self, offers: list[str]) -> tuple[str, MediaType]:
        try:
            return negotiate(self.accepted(), offers)
        except NotAcceptable as exc:
            raise ApiError(406, str(exc)) from None

    # -- URLs -------------------------------------------------------------------------------------
    def public_root(self) -> str:
        """Absolute URL of the DICOMweb root as the client sees it (reverse proxies included)."""
        if self.ctx.config.public_url:
            return self.ctx.config.public_url.rstrip("/")
        return self.public_origin() + self.forwarded_prefix() + self.ctx.root_path.rstrip("/")

    def public_origin(self) -> str:
        headers = self.request.headers
        proto = host = None
        forwarded = headers.get("Forwarded")
        if forwarded:
            first = forwarded.split(",")[0]
            for pair in first.split(";"):
                if "=" in pair:
                    key, value = pair.split("=", 1)
                    key, value = key.strip().lower(), value.strip().strip('"')
                    if key == "proto":
                        proto = value
                    elif key == "host":
                        host = value
        proto = proto or _first(headers.get("X-Forwarded-Proto")) or self.request.protocol
        host = host or _first(headers.get("X-Forwarded-Host")) or self.request.host
        port = _first(headers.get("X-Forwarded-Port"))
        if port and ":" not in host.rsplit("]", 1)[-1] and (proto, port) not in (("http", "80"), ("https", "443")):
            host = f"{host}:{port}"
        return f"{proto}://{host}"

    def forwarded_prefix(self) -> str:
        prefix = _first(self.request.headers.get("X-Forwarded-Prefix")) or ""
        return "/" + prefix.strip("/") if prefix.strip("/") else ""

    def url_builder(self) -> Callable[[str, str | None, str | None], str]:
        """``url(study, series, instance)``: absolute resource URLs as this client sees the server."""
        return partial(resource_url, self.public_root())

    # -- CORS -------------------------------------------------------------------------------------
    def set_default_headers(self) -> None:
        super().set_default_headers()
        origin = self.request.headers.get("Origin")
        allowed = self.ctx.config.cors_origins if "dicomweb" in self.settings else []
        if origin and allowed and ("*" in allowed or origin in allowed):
            self.set_header("Access-Control-Allow-Origin", origin if "*" not in allowed else "*")
            if "*" not in allowed:
                self.set_header("Vary", "Origin")
                self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Access-Control-Expose-Headers",
                            "Content-Type, Content-Length, Content-Location, Warning, ETag, Last-Modified, Location")

    def write_json(self, obj: Any, status: int = 200, content_type: str = "application/dicom+json") -> None:
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        self.finish(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[0].strip() or None


# A refused upload's body is read and dropped up to this size before the refusal is answered;
# a larger one is answered at once and its connection closed (see StreamedBodyMixin).
DRAIN_LIMIT = 64 << 20


class StreamedBodyMixin(DicomWebMixin):
    """For ``@stream_request_body`` handlers: a refusal decided before or while the body arrives
    (401/403, 405, 413, 415, a malformed part) is answered once the body has been read and dropped.

    Tornado closes a connection whose request body it has not read; the client, still sending
    (``requests`` sends the whole body before it reads an answer), may then see a reset connection
    instead of the answer. So the refusal is kept, the body drained (up to ``DRAIN_LIMIT``), and the
    refusal answered in place of the HTTP method, on a connection that stays usable. A client that
    sent ``Expect: 100-continue`` has sent no body yet: it is answered at once.
    """

    _refusal: web.HTTPError | None = None

    async def prepare(self) -> None:
        try:
            await super().prepare()  # type: ignore[misc]  # authentication and authorization
            await self.prepare_body()
        except web.HTTPError as exc:
            if not self.refuse_after_body(exc):
                raise

    async def prepare_body(self) -> None:
        """Checks of the request's headers before its body arrives (raise ApiError to refuse)."""

    def refuse_after_body(self, refusal: web.HTTPError) -> bool:
        """Keep ``refusal`` for after the body is drained; False when it must be answered now."""
        headers = self.request.headers
        if headers.get("Expect", "").lower() == "100-continue":
            return False
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length", "").strip() or "0"  # no length and not chunked: no body
        if not chunked and not (length.isdigit() and int(length) <= DRAIN_LIMIT):
            return False
        # Even with no body to drain, the answer waits for tornado to have read the (empty) body: a
        # connection answered before that is closed without a "Connection: close", and a kept-alive client's
        # next request on it is reset.
        self.http_connection.set_max_body_size(DRAIN_LIMIT if chunked else int(length))
        self.keep_refusal(refusal)
        return True

    def keep_refusal(self, refusal: web.HTTPError) -> None:
        """From now on the body is dropped (``refusing``), and the refusal is the answer: tornado
        calls the HTTP method once the body is in, and finds this instead."""
        if self._refusal is None:
            self._refusal = refusal
            setattr(self, self.request.method.lower(), self._answer_refusal)

    def refusing(self) -> bool:
        """True once the request is refused: ``data_received`` drops what arrives."""
        return self._refusal is not None

    def _answer_refusal(self, *args: Any, **kwargs: Any) -> None:
        assert self._refusal is not None
        raise self._refusal


class NotFoundMixin(DicomWebMixin):
    """Any other path under the DICOMweb root: a JSON 404 naming the path."""

    def _unknown(self, *args: Any, **kwargs: Any) -> None:
        raise ApiError(404, f"no DICOMweb resource at {self.request.path} (see PS3.18 for the URL forms served here)")

    get = post = put = delete = head = patch = _unknown

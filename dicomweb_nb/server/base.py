"""What every DICOMweb handler shares: the context, errors as JSON, content negotiation, public URLs,
CORS, and running blocking work off the event loop.

Handlers are written once as mixins over ``tornado.web.RequestHandler`` and combined with one of
two bases (``routes.build_routes``): the jupyter-server handler (Jupyter's authentication) or the
standalone one (token / basic auth of ``dicomweb-nb serve``).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from tornado import web
from tornado.ioloop import IOLoop

from ..dicom.mediatypes import MediaType, MediaTypeError, NotAcceptable, negotiate, parse_accept
from ..dicom.resources import resource_url
from ..store import NotFoundError, Store
from ..store.transcode import TranscodeError
from .config import DicomWeb

if TYPE_CHECKING:
    from .proxy import RemoteServers
    from .jobs import JobManager

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
    servers: "RemoteServers | None" = None
    jobs: "JobManager | None" = None
    extras: dict[str, Any] = field(default_factory=dict)


class ApiError(web.HTTPError):
    """An error answer with a readable message (sent as JSON)."""

    def __init__(self, status: int, message: str, **headers: str):
        super().__init__(status, log_message=message, reason=None)
        self.message = message
        self.headers = headers


def _allow_unauthenticated(method: Callable[..., Any]) -> Callable[..., Any]:
    # jupyter_server's marker for handlers that run without a user (CORS preflight here).
    setattr(method, "__allow_unauthenticated", True)
    return method


class DicomWebMixin:
    """Common behaviour of the DICOMweb handlers (mixed into a RequestHandler)."""

    request: Any
    settings: dict[str, Any]

    @property
    def ctx(self) -> DicomWebContext:
        return self.settings["dicomweb"]

    @property
    def store(self) -> Store:
        return self.ctx.store

    async def run_blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run disk, SQLite or codec work on the worker pool; unknown UIDs become 404."""
        try:
            return await IOLoop.current().run_in_executor(self.ctx.executor, partial(fn, *args, **kwargs))
        except NotFoundError as exc:
            raise ApiError(404, str(exc)) from None
        except TranscodeError as exc:
            raise ApiError(406, str(exc)) from None

    # -- errors -----------------------------------------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:  # type: ignore[override]
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
            for name, value in exc.headers.items():
                self.set_header(name.replace("_", "-"), value)
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else (exc.log_message or HTTPStatus(status_code).phrase)
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
        if port and ":" not in host.rsplit("]", 1)[-1] and not (proto, port) in (("http", "80"), ("https", "443")):
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
        super().set_default_headers()  # type: ignore[misc]
        origin = self.request.headers.get("Origin")
        allowed = self.ctx.config.cors_origins if "dicomweb" in self.settings else []
        if origin and allowed and ("*" in allowed or origin in allowed):
            self.set_header("Access-Control-Allow-Origin", origin if "*" not in allowed else "*")
            if "*" not in allowed:
                self.set_header("Vary", "Origin")
                self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Access-Control-Expose-Headers",
                            "Content-Type, Content-Length, Content-Location, Warning, ETag, Last-Modified, Location")

    @_allow_unauthenticated
    def options(self, *args: Any, **kwargs: Any) -> None:
        """CORS preflight."""
        allowed = self.ctx.config.cors_origins
        origin = self.request.headers.get("Origin")
        if origin and allowed and ("*" in allowed or origin in allowed):
            self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
            self.set_header("Access-Control-Allow-Headers",
                            self.request.headers.get("Access-Control-Request-Headers", "Accept, Content-Type, Authorization"))
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def write_json(self, obj: Any, status: int = 200, content_type: str = "application/dicom+json") -> None:
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        self.finish(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[0].strip() or None


class StandaloneBase(web.RequestHandler):
    """Base of the handlers of ``dicomweb-nb serve``: optional token or HTTP basic authentication."""

    def check_xsrf_cookie(self) -> None:
        return  # API server: no cookies are used for authentication, so there is nothing to forge

    async def prepare(self) -> None:
        ctx: DicomWebContext = self.settings["dicomweb"]
        if self.request.method == "OPTIONS":
            return
        if ctx.auth_token is None and ctx.basic_auth is None:
            return
        header = self.request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if ctx.auth_token is not None:
            supplied = credentials.strip() if scheme in ("bearer", "token") else self.get_query_argument("token", "")
            if supplied and hmac.compare_digest(supplied, ctx.auth_token):
                return
        if ctx.basic_auth is not None and scheme == "basic":
            try:
                user, _, password = base64.b64decode(credentials.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                user = password = ""
            if hmac.compare_digest(user, ctx.basic_auth[0]) and hmac.compare_digest(password, ctx.basic_auth[1]):
                return
        challenge = 'Basic realm="dicomweb-nb"' if ctx.basic_auth else 'Bearer realm="dicomweb-nb"'
        raise ApiError(401, "authentication required: send 'Authorization: Bearer <token>' (or basic credentials)",
                       WWW_Authenticate=challenge)


def extension_base() -> type:
    """Base of the handlers mounted in jupyter-server: Jupyter's own authentication."""
    from jupyter_server.base.handlers import JupyterHandler

    class ExtensionBase(JupyterHandler):
        async def prepare(self) -> None:  # type: ignore[override]
            if self.request.method == "OPTIONS":
                return
            # No redirect to the login page: API clients get 403, as jupyter_server's APIHandler does.
            await JupyterHandler.prepare(self, _redirect_to_login=False)
            if self.current_user is None:
                raise ApiError(403, "not authenticated: send the Jupyter token ('Authorization: token <token>')")

        @property
        def content_security_policy(self) -> str:
            return super().content_security_policy

    return ExtensionBase

"""Requests too large to serve get an answer that says so, not a dropped connection.

Tornado closes the connection without a word when a request's headers exceed its
``max_header_size`` (64 KiB by default), and answers a bare "400" when the query string has more
arguments than its parser accepts (1000). A long QIDO-RS query (a 100 kB match value, a list of
thousands of UIDs) then looks like a network failure. So the HTTP server reads up to
``READ_HEADER_BYTES`` of headers, and ``HeaderLimits``, between it and the application, answers
what is over the limits the server always had:

- 414 (URI Too Long) for a request target over ``MAX_HEADER_BYTES`` or with more than
  ``MAX_QUERY_ARGUMENTS`` query arguments,
- 431 (Request Header Fields Too Large) for headers over ``MAX_HEADER_BYTES`` in all,

with a JSON message, as every other error. Beyond ``READ_HEADER_BYTES`` tornado still closes the
connection. ``dicomweb-nb serve`` builds its server this way; the jupyter-server extension installs
the same on Jupyter's HTTP server (``install_on``), so the limits hold for every Jupyter URL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any

from tornado import httputil

log = logging.getLogger("dicomweb_nb.server")

MAX_HEADER_BYTES = 64 * 1024  # tornado's default max_header_size: what both mount points always served
READ_HEADER_BYTES = 1024 * 1024  # what tornado reads before our answer (its search for the end is O(n) per read)
MAX_QUERY_ARGUMENTS = 1000  # tornado's own limit on query arguments (httputil.ParseUrlEncodedConfig)


def refusal(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> tuple[int, str] | None:
    """(status, message) for a request over the limits, else None."""
    target = start_line.path
    if len(target) > MAX_HEADER_BYTES:
        return 414, (f"the request URL is {len(target)} bytes; this server accepts at most {MAX_HEADER_BYTES}. "
                     "Split the query into several requests, or narrow it.")
    query = target.partition("?")[2]
    arguments = query.count("&") + 1 if query else 0
    if arguments > MAX_QUERY_ARGUMENTS:
        return 414, (f"the request URL has {arguments} query arguments; this server accepts at most {MAX_QUERY_ARGUMENTS}. "
                     "Give a list as one comma-separated value, or split the query into several requests.")
    size = len(start_line.method) + len(target) + len(start_line.version) + 4
    size += sum(len(name) + len(value) + 4 for name, value in headers.get_all())
    if size > MAX_HEADER_BYTES:
        return 431, f"the request headers are {size} bytes; this server accepts at most {MAX_HEADER_BYTES}"
    return None


class HeaderLimits(httputil.HTTPServerConnectionDelegate):
    """Wraps the application of an HTTP server: requests over the limits are answered here."""

    def __init__(self, application: httputil.HTTPServerConnectionDelegate):
        self.application = application

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _CheckedRequest(self.application.start_request(server_conn, request_conn), request_conn)

    def on_close(self, server_conn: object) -> None:
        self.application.on_close(server_conn)


class _CheckedRequest(httputil.HTTPMessageDelegate):
    def __init__(self, delegate: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection):
        self.delegate = delegate
        self.connection = connection
        self.refused = False

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        refused = refusal(start_line, headers)
        if refused is None:
            return self.delegate.headers_received(start_line, headers)
        self.refused = True
        status, message = refused
        log.warning("%d %s %s...: %s", status, start_line.method, start_line.path[:100], message)
        body = json.dumps({"status": status, "message": message}).encode("utf-8")
        answer_headers = httputil.HTTPHeaders({"Content-Type": "application/json; charset=UTF-8",
                                               "Content-Length": str(len(body)), "Connection": "close"})
        self.connection.write_headers(httputil.ResponseStartLine("HTTP/1.1", status, HTTPStatus(status).phrase),
                                      answer_headers, body)
        self.connection.finish()
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.delegate.on_connection_close()


def install_on(http_server: Any) -> bool:
    """Put ``HeaderLimits`` in front of a running tornado HTTPServer's application and let it read
    ``READ_HEADER_BYTES`` of headers (jupyter-server makes its HTTPServer itself and offers no
    setting for this). False, with a log line, if this tornado's HTTPServer is not shaped as expected."""
    params = getattr(http_server, "conn_params", None)
    application = getattr(http_server, "request_callback", None)
    if (
        params is None
        or not hasattr(params, "max_header_size")
        or not isinstance(application, httputil.HTTPServerConnectionDelegate)
    ):
        log.warning("cannot answer requests over the header limits with 414/431 on this server: tornado closes "
                    "the connection of a request with more than %d bytes of headers", MAX_HEADER_BYTES)
        return False
    if not isinstance(application, HeaderLimits):
        http_server.request_callback = HeaderLimits(application)
    params.max_header_size = max(params.max_header_size, READ_HEADER_BYTES)
    return True

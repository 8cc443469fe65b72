"""The one route table of both mount points: every route names its access, every method a handler
serves needs an action, both mount points serve the same URLs with the same rule, and the handler
classes are written in their modules (found by reading, not built at run time)."""

from __future__ import annotations

import pytest
import requests
from tornado.web import RequestHandler, _has_stream_request_body

from dicomweb_nb.server import jupyter_handlers, standalone_handlers
from dicomweb_nb.server.access import EXECUTE, READ, WRITE
from dicomweb_nb.server.routes import build_routes, jobs_routes

FAMILIES = {"standalone": standalone_handlers, "jupyter": jupyter_handlers}
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def _routes(module):
    return build_routes(module, "/dicom-web/", "/wado") + jobs_routes(module, "/")


def _served(handler: type) -> list[str]:
    return [m for m in METHODS if getattr(handler, m.lower()) is not RequestHandler._unimplemented_method]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_served_has_its_actions(family):
    for pattern, handler, kwargs in _routes(FAMILIES[family]):
        access = kwargs["access"]
        for method in _served(handler):
            actions = access.actions(method)
            assert actions and set(actions) <= {READ, WRITE, EXECUTE}, (pattern, method)


@pytest.mark.parametrize("family", FAMILIES)
def test_handler_classes_are_written_in_their_module(family):
    module = FAMILIES[family]
    for _pattern, handler, _kwargs in _routes(module):
        assert handler.__module__ == module.__name__
        assert getattr(module, handler.__qualname__) is handler  # defined at module level, under its name


def test_both_mount_points_share_urls_handlers_and_access():
    standalone = [(p, h.__name__, k) for p, h, k in _routes(standalone_handlers)]
    jupyter = [(p, h.__name__, k) for p, h, k in _routes(jupyter_handlers)]
    assert standalone == jupyter
    by_name = {h.__name__: h for _p, h, _k in _routes(jupyter_handlers)}
    for _pattern, handler, _kwargs in _routes(standalone_handlers):
        assert _served(handler) == _served(by_name[handler.__name__])
        assert _has_stream_request_body(handler) == _has_stream_request_body(by_name[handler.__name__])


def test_uploads_are_streamed_and_writes_need_write():
    for pattern, handler, kwargs in _routes(standalone_handlers):
        if pattern.endswith(("studies/?", "studies/([^/]+)/?")) and "series" not in pattern:
            assert _has_stream_request_body(handler), pattern
            assert kwargs["access"].actions("POST") == (WRITE,)
        elif pattern.endswith(("/get/?", "/stow/?", "/retrieve/?")):
            assert EXECUTE in kwargs["access"].actions("POST"), pattern


def test_a_method_a_url_does_not_serve_is_405_naming_the_allowed_ones(server):
    answer = requests.put(f"{server.dicomweb_url}/studies", data=b"{}", headers=server.headers, timeout=10)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, OPTIONS, POST"
    assert "PUT is not supported" in answer.json()["message"]

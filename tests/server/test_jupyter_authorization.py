"""Jupyter's Authorizer decides what a user may do with DICOMweb (resource ``dicomweb``): read (GET,
HEAD, OPTIONS), write (STOW-RS, PUT/DELETE /servers, jobs) and execute (calls to a remote), as
JupyterHub's RBAC and read-only collaborators rely on. The extension runs in process here, through
pytest-jupyter (``jp_serverapp``, ``jp_fetch``), with ``ServerApp.authorizer_class`` set, at its
awkward base_url ``/a%40b/``."""

from __future__ import annotations

import json
import uuid
from typing import ClassVar
from urllib.parse import parse_qsl

import pytest
from jupyter_server.auth import Authorizer

# pytest-jupyter's fixtures (jp_serverapp, jp_fetch, jp_server_config, ...), for this module only:
# as a plugin its autouse fixtures would run around every test of the suite.
from pytest_jupyter.jupyter_server import *  # noqa: F403
from traitlets.config import Config

from dicomweb_nb import samples
from dicomweb_nb.store import Store

from .conftest import DICOM_MULTIPART, multipart_body

DEAD_REMOTE = "http://127.0.0.1:9/dicom-web"  # nothing listens on the discard port
STOW_TYPE = f"{DICOM_MULTIPART}; boundary=dicomweb-nb-test-boundary"


class DenyWrites(Authorizer):
    """A read-only collaborator: may read and run remote calls, never change anything."""

    def is_authorized(self, handler, user, action, resource):
        return not (resource == "dicomweb" and action == "write")


class DenyExecute(Authorizer):
    """May read and change this server, never make it call another."""

    def is_authorized(self, handler, user, action, resource):
        return not (resource == "dicomweb" and action == "execute")


class DenyAll(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        return resource != "dicomweb"


class Recording(Authorizer):
    """Allows everything and remembers what it was asked."""

    asked: ClassVar[list[tuple[str, str, str, str]]] = []

    def is_authorized(self, handler, user, action, resource):
        Recording.asked.append((handler.request.method, handler.request.path.split("/dicom-web/", 1)[-1], action, resource))
        return True


def config(authorizer: type[Authorizer] | None, **dicomweb) -> Config:
    server = {"jpserver_extensions": {"jupyter_server_ext": True}}
    if authorizer is not None:
        server["authorizer_class"] = authorizer
    return Config({"ServerApp": server, "DicomWeb": {"servers": {"dead": {"Url": DEAD_REMOTE}}, **dicomweb}})


@pytest.fixture
def study(jp_root_dir):
    """A study in the workspace store before the server starts (request it before jp_serverapp)."""
    datasets = samples.generate_ct_series(2, rows=8, columns=8, patient_id="AUTHZ")
    store = Store(jp_root_dir / ".dicomweb")
    try:
        paths = []
        for index, ds in enumerate(datasets):
            path = jp_root_dir / f"in{index}.dcm"
            path.write_bytes(samples.dataset_bytes(ds))
            paths.append(path)
        assert all(o.stored for o in store.store_files(paths, move=False))
    finally:
        store.close()
    return datasets[0].StudyInstanceUID


@pytest.fixture
def call(jp_fetch, jp_asyncio_loop):
    """``call(method, "dicom-web/...", body=None)`` -> (status, JSON answer or None)."""

    def fetch(method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
        path, _, query = path.partition("?")
        params = dict(parse_qsl(query))
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        kwargs = {"body": body} if body is not None or method in ("POST", "PUT") else {}
        if method in ("POST", "PUT") and body is None:
            kwargs["body"] = b""
        answer = jp_asyncio_loop.run_until_complete(
            jp_fetch(*path.split("/"), method=method, headers=headers, params=params, raise_error=False, **kwargs))
        try:
            return answer.code, json.loads(answer.body) if answer.body else None
        except ValueError:
            return answer.code, None

    return fetch


def _stow(call, patient: str):
    datasets = samples.generate_ct_series(1, rows=8, columns=8, patient_id=patient)
    return call("POST", "dicom-web/studies", multipart_body([samples.dataset_bytes(datasets[0])]), {"Content-Type": STOW_TYPE})


def _is_denied(answer, action: str) -> bool:
    status, body = answer
    return status == 403 and f"not allowed to {action} 'dicomweb'" in body["message"]


@pytest.mark.parametrize("jp_server_config", [config(DenyWrites)], ids=["deny-writes"])
def test_a_user_who_may_not_write_reads_but_changes_nothing(study, jp_serverapp, call):
    assert call("GET", "dicom-web/studies")[0] == 200
    assert call("GET", f"dicom-web/studies/{study}/metadata")[0] == 200
    assert call("GET", f"dicom-web/studies/{study}", headers={"Accept": "multipart/related; type=application/dicom"})[0] == 200
    assert call("GET", "dicom-web/servers")[0] == 200
    assert call("GET", "dicom-web/jobs")[0] == 200

    assert _is_denied(_stow(call, "AUTHZ-WRITE"), "write")
    assert call("GET", "dicom-web/studies?PatientID=AUTHZ-WRITE")[1] == []
    assert _is_denied(call("PUT", "dicom-web/servers/added", {"Url": "http://127.0.0.1:8042/dicom-web"}), "write")
    assert _is_denied(call("DELETE", "dicom-web/servers/dead"), "write")
    assert _is_denied(call("POST", "dicom-web/servers/dead/retrieve", {"Resources": [study], "Synchronous": False}), "write")
    assert _is_denied(call("POST", "dicom-web/servers/dead/stow", {"Resources": [study], "Synchronous": False}), "write")
    assert _is_denied(call("POST", f"dicom-web/jobs/{uuid.uuid4()}/cancel", {}), "write")
    assert call("GET", "dicom-web/jobs")[1] == []  # no job was created

    # Execute alone is allowed: the call reaches the (dead) remote, which is a 502, not a 403.
    status, body = call("POST", "dicom-web/servers/dead/get", {"Uri": "/studies"})
    assert status == 502, body


@pytest.mark.parametrize("jp_server_config", [config(DenyExecute)], ids=["deny-execute"])
def test_a_user_who_may_not_execute_cannot_make_the_server_call_a_remote(study, jp_serverapp, call):
    assert _is_denied(call("POST", "dicom-web/servers/dead/get", {"Uri": "/studies"}), "execute")
    assert _is_denied(call("POST", "dicom-web/servers/dead/retrieve", {"Resources": [study]}), "execute")
    assert _is_denied(call("POST", "dicom-web/servers/dead/stow", {"Resources": [study]}), "execute")
    # Reading and changing this server are allowed.
    assert call("GET", "dicom-web/servers/dead")[0] == 200
    assert call("PUT", "dicom-web/servers/added", {"Url": "http://127.0.0.1:8042/dicom-web"})[0] == 200
    assert call("DELETE", "dicom-web/servers/added")[0] == 200
    assert _stow(call, "AUTHZ-EXEC")[0] == 200


@pytest.mark.parametrize("jp_server_config", [config(DenyAll)], ids=["deny-all"])
def test_a_user_who_may_not_read_gets_403_but_the_cors_preflight_needs_no_permission(jp_serverapp, call):
    assert _is_denied(call("GET", "dicom-web/studies"), "read")
    assert _is_denied(call("GET", "wado?requestType=WADO&objectUID=1.2.3"), "read")
    assert _is_denied(call("OPTIONS", "dicom-web/studies"), "read")
    preflight = {"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET", "Authorization": ""}
    assert call("OPTIONS", "dicom-web/studies", headers=preflight)[0] == 204


@pytest.mark.parametrize("jp_server_config", [config(Recording)], ids=["recording"])
def test_each_route_asks_the_authorizer_for_its_actions(study, jp_serverapp, call):
    Recording.asked.clear()
    requests_made = [
        ("GET", "dicom-web/studies"), ("GET", f"dicom-web/studies/{study}/series"), ("OPTIONS", "dicom-web/studies"),
        ("POST", "dicom-web/studies"), ("PUT", "dicom-web/servers/x"), ("DELETE", "dicom-web/servers/x"),
        ("POST", "dicom-web/servers/dead/get"), ("POST", "dicom-web/servers/dead/stow"),
        ("POST", "dicom-web/servers/dead/retrieve"), ("POST", f"dicom-web/jobs/{study}/cancel"),
        ("GET", "dicom-web/jobs"), ("GET", "dicom-web/app/client/app.js"),
    ]
    for method, path in requests_made:
        call(method, path, b"{}" if method in ("POST", "PUT") else None)
    asked = [(method, path, action) for method, path, action, resource in Recording.asked if resource == "dicomweb"]
    assert asked == [
        ("GET", "studies", "read"), ("GET", f"studies/{study}/series", "read"), ("OPTIONS", "studies", "read"),
        ("POST", "studies", "write"), ("PUT", "servers/x", "write"), ("DELETE", "servers/x", "write"),
        ("POST", "servers/dead/get", "execute"),
        ("POST", "servers/dead/stow", "execute"), ("POST", "servers/dead/stow", "write"),
        ("POST", "servers/dead/retrieve", "execute"), ("POST", "servers/dead/retrieve", "write"),
        ("POST", f"jobs/{study}/cancel", "write"), ("GET", "jobs", "read"), ("GET", "app/client/app.js", "read"),
    ]


@pytest.mark.parametrize("jp_server_config", [config(None, root="/dw/", enable_wado=False)], ids=["configured"])
def test_the_extension_app_reads_c_dicomweb_and_stops_cleanly(study, jp_serverapp, call, jp_asyncio_loop):
    from jupyter_server_ext.extension import DicomWebExtension

    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_server_ext"]
    assert isinstance(app, DicomWebExtension)
    assert app.dicomweb.root == "/dw/"
    status, found = call("GET", "dw/studies")
    assert status == 200 and [s["0020000D"]["Value"][0] for s in found] == [study]
    assert call("GET", "dicom-web/studies")[0] == 404  # not Jupyter's root: the configured one
    assert call("GET", "wado?requestType=WADO&objectUID=1.2.3")[0] == 404  # enable_wado = False
    context = app.context
    jp_asyncio_loop.run_until_complete(app.stop_extension())
    assert app.context is None
    assert context.store._lock_file.closed  # the store's lock is released for other processes

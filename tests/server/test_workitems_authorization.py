"""Who may use the worklist under Jupyter: reading it (search, retrieve, the notification channel)
needs ``read`` on ``dicomweb``; every change (create, update, claim/complete/cancel, cancellation
requests, subscriptions) needs ``write``. The extension runs in process (pytest-jupyter) with
``ServerApp.authorizer_class`` set; the standalone server's notification channel asks for its token."""

from __future__ import annotations

import json
import os

import pytest
import tornado.httpclient
import websocket

# pytest-jupyter's fixtures, for this module only (see test_jupyter_authorization.py).
from pytest_jupyter.jupyter_server import *  # noqa: F403

from dicomweb_nb.dicom import ups
from tests.fixtures.ourserver import start_standalone

from .test_jupyter_authorization import DenyAll, DenyWrites, Recording, _is_denied, call, config  # noqa: F401

UID = "1.2.826.0.1.3680043.10.54.7.1"
TRANSACTION = "1.2.826.0.1.3680043.10.54.7.2"


def _task() -> dict:
    return ups.new_workitem("Authorized?", start="20240501")


@pytest.fixture
def workitem(jp_root_dir):
    """A SCHEDULED workitem in the workspace store before the server starts."""
    from dicomweb_nb.store import Store

    store = Store(jp_root_dir / ".dicomweb")
    try:
        store.worklist.create(_task(), UID)
    finally:
        store.close()
    return UID


@pytest.mark.parametrize("jp_server_config", [config(DenyWrites)], ids=["deny-writes"])
def test_a_user_who_may_not_write_reads_the_worklist_but_changes_nothing(workitem, jp_serverapp, call, jp_ws_fetch,  # noqa: F811
                                                                        jp_asyncio_loop):
    status, found = call("GET", "dicom-web/workitems")
    assert status == 200 and [w["00080018"]["Value"][0] for w in found] == [UID]
    assert call("GET", f"dicom-web/workitems/{UID}")[0] == 200
    socket = jp_asyncio_loop.run_until_complete(jp_ws_fetch("dicom-web", "subscribers", "READER"))
    socket.close()

    json_type = {"Content-Type": "application/dicom+json"}
    assert _is_denied(call("POST", "dicom-web/workitems", json.dumps(_task()).encode(), json_type), "write")
    assert _is_denied(call("POST", f"dicom-web/workitems/{UID}", {"00741204": {"vr": "LO", "Value": ["x"]}}, json_type), "write")
    assert _is_denied(call("PUT", f"dicom-web/workitems/{UID}/state", ups.state_request("IN PROGRESS", TRANSACTION), json_type),
                      "write")
    assert _is_denied(call("POST", f"dicom-web/workitems/{UID}/cancelrequest", {}, json_type), "write")
    assert _is_denied(call("POST", f"dicom-web/workitems/{UID}/subscribers/READER"), "write")
    assert _is_denied(call("DELETE", f"dicom-web/workitems/{UID}/subscribers/READER"), "write")
    assert _is_denied(call("POST", f"dicom-web/workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/READER/suspend"), "write")
    status, found = call("GET", f"dicom-web/workitems/{UID}")
    assert found[0]["00741000"]["Value"] == ["SCHEDULED"] and found[0]["00741204"]["Value"] == ["Authorized?"]


@pytest.mark.parametrize("jp_server_config", [config(DenyAll)], ids=["deny-all"])
def test_a_user_who_may_not_read_cannot_open_a_notification_channel(jp_serverapp, call, jp_ws_fetch, jp_asyncio_loop):  # noqa: F811
    assert _is_denied(call("GET", "dicom-web/workitems"), "read")
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        jp_asyncio_loop.run_until_complete(jp_ws_fetch("dicom-web", "subscribers", "READER"))
    assert err.value.code == 403


@pytest.mark.parametrize("jp_server_config", [config(None)], ids=["no-authorizer"])
def test_the_channel_needs_jupyters_credentials(jp_serverapp, jp_ws_fetch, jp_asyncio_loop):
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        jp_asyncio_loop.run_until_complete(jp_ws_fetch("dicom-web", "subscribers", "READER",
                                                       headers={"Authorization": ""}))
    assert err.value.code == 403


@pytest.mark.parametrize("jp_server_config", [config(Recording)], ids=["recording"])
def test_each_worklist_route_asks_for_its_action(workitem, jp_serverapp, call):  # noqa: F811
    Recording.asked.clear()
    requests_made = [
        ("GET", "dicom-web/workitems"), ("POST", "dicom-web/workitems"), ("GET", f"dicom-web/workitems/{UID}"),
        ("POST", f"dicom-web/workitems/{UID}"), ("PUT", f"dicom-web/workitems/{UID}/state"),
        ("POST", f"dicom-web/workitems/{UID}/cancelrequest"), ("POST", f"dicom-web/workitems/{UID}/subscribers/AE"),
        ("DELETE", f"dicom-web/workitems/{UID}/subscribers/AE"),
        ("POST", f"dicom-web/workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/AE/suspend"),
    ]
    for method, path in requests_made:
        call(method, path, b"{}" if method in ("POST", "PUT") else None)
    asked = [(method, path, action) for method, path, action, resource in Recording.asked if resource == "dicomweb"]
    expected = [(m, p.split("dicom-web/", 1)[1], "read" if m == "GET" else "write") for m, p in requests_made]
    assert asked == expected


def test_the_standalone_channel_needs_the_servers_token(tmp_path, store_backend):
    server = start_standalone(tmp_path, token="worklist-secret", backend=store_backend)
    try:
        url = f"{server.dicomweb_url}/subscribers/SECURE".replace("http://", "ws://", 1)
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            websocket.create_connection(url, timeout=10)
        assert err.value.status_code == 401
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(url, header=["Authorization: Bearer wrong"], timeout=10)
        websocket.create_connection(url, header=["Authorization: Bearer worklist-secret"], timeout=10).close()
        websocket.create_connection(url + "?token=worklist-secret", timeout=10).close()  # browsers send no headers
    finally:
        server.stop()
    assert os.path.exists(tmp_path / "server.log")

"""The remote servers of the proxy: listing, PUT / DELETE, validation, secrets, persistence, and the
one list shared with ``dw.connect("name")``."""

from __future__ import annotations

import json
import stat

import pytest
import requests

import dicomweb_nb as dw
from dicomweb_nb.client import load_servers

from ..fixtures.consistency import open_for_checking
from ..fixtures.ourserver import start_standalone
from .proxy_helpers import Api

SECRET = "s3cret-pa55word"
HEADER_SECRET = "Bearer header-secret-value"


@pytest.fixture(scope="module")
def local(tmp_path_factory, store_backend):
    """Our server with servers_in_store, and one server defined in its configuration."""
    workdir = tmp_path_factory.mktemp("proxy-servers")
    configured = {"configured": {"Url": "http://127.0.0.1:9/dicom-web", "Username": "admin", "Password": SECRET}}
    server = start_standalone(workdir, None, "-c", "servers_in_store=true", "-c", f"servers={json.dumps(configured)}",
                              backend=store_backend)
    yield server
    server.stop()


@pytest.fixture()
def api(local):
    api = Api(local)
    yield api
    for name in api.get("servers").json():
        if name != "configured":
            api.delete(f"servers/{name}")


def test_servers_are_listed_added_updated_and_deleted(api):
    assert api.get("servers").json() == ["configured"]
    created = api.put("servers/pacs", {"Url": "http://127.0.0.1:8042/dicom-web", "Username": "alice",
                                       "Password": SECRET, "HttpHeaders": {"Authorization": HEADER_SECRET},
                                       "Timeout": 30, "HasDelete": "1", "Site": "north"})
    assert created.status_code == 200, created.text
    assert api.get("servers").json() == ["configured", "pacs"]
    expanded = api.get("servers?expand").json()
    assert expanded["pacs"] == {"Url": "http://127.0.0.1:8042/dicom-web", "Username": "alice", "Password": None,
                                "HttpHeaders": ["Authorization"], "Timeout": 30, "HasDelete": True, "Site": "north",
                                "Origin": "store"}
    assert expanded["configured"]["Origin"] == "configuration"
    # Orthanc's answer: the operations, "delete" among them for a server with HasDelete.
    assert api.get("servers/pacs").json() == ["get", "retrieve", "stow", "qido", "delete"]
    assert api.get("servers/pacs?expand").json()["Url"] == "http://127.0.0.1:8042/dicom-web"

    updated = api.put("servers/pacs", ["http://127.0.0.1:8043/dicom-web", "bob", SECRET])  # Orthanc's short form
    assert updated.status_code == 200
    assert updated.json()["Username"] == "bob" and updated.json()["Url"].endswith(":8043/dicom-web")

    assert api.delete("servers/pacs").status_code == 200
    assert api.get("servers").json() == ["configured"]
    for path in ("servers/pacs", "servers/pacs?expand"):
        missing = api.get(path)
        assert missing.status_code == 404 and "pacs" in missing.json()["message"]
    assert api.delete("servers/pacs").status_code == 404


def test_passwords_and_header_values_are_never_echoed(api):
    answers = [api.put("servers/secretive", {"Url": "https://pacs.example.org/dicom-web", "Username": "u",
                                             "Password": SECRET, "HttpHeaders": {"X-Api-Key": HEADER_SECRET}})]
    answers += [api.get(p) for p in ("servers", "servers?expand", "servers/secretive", "servers/secretive?expand",
                                     "servers/configured?expand")]
    for answer in answers:
        assert answer.status_code == 200
        assert SECRET not in answer.text and HEADER_SECRET not in answer.text


@pytest.mark.parametrize("body, field", [
    ({}, "Url"),
    ({"Url": "ftp://pacs/dicom-web"}, "Url"),
    ({"Url": "http:///dicom-web"}, "Url"),
    ({"Url": "http://user:pw@pacs/dicom-web"}, "Url"),
    ({"url": "http://pacs/dicom-web"}, "url"),
    ({"Url": "http://pacs/dicom-web", "Timeout": -1}, "Timeout"),
    ({"Url": "http://pacs/dicom-web", "Timeout": "soon"}, "Timeout"),
    ({"Url": "http://pacs/dicom-web", "HttpHeaders": ["X-A"]}, "HttpHeaders"),
    ({"Url": "http://pacs/dicom-web", "HttpHeaders": {"Host": "elsewhere"}}, "HttpHeaders"),
    ({"Url": "http://pacs/dicom-web", "HttpHeaders": {"X-A": "one\r\nX-B: two"}}, "HttpHeaders"),
    ({"Url": "http://pacs/dicom-web", "Password": "pw"}, "Username"),
    ({"Url": "http://pacs/dicom-web", "HasWadoRsUniversalTransferSyntax": "maybe"}, "HasWadoRsUniversalTransferSyntax"),
    ({"Url": "http://pacs/dicom-web", "CertificateFile": "/etc/cert.pem"}, "CertificateFile"),
    ({"Url": "http://pacs/dicom-web", "Site": {"nested": 1}}, "Site"),
])
def test_bad_definitions_get_400_naming_the_field(api, body, field):
    answer = api.put("servers/bad", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["Field"] == field
    assert field in answer.json()["message"]
    assert "bad" not in api.get("servers").json()


def test_bad_names_and_bodies(api):
    assert api.put("servers/-dash", {"Url": "http://pacs/dicom-web"}).status_code == 400
    assert api.put("servers/a%20b", {"Url": "http://pacs/dicom-web"}).status_code == 400
    not_json = api.session.put(api.url("servers/x"), data=b"{not json", timeout=30)
    assert not_json.status_code == 400 and "JSON" in not_json.json()["message"]
    assert api.session.put(api.url("servers/x"), data=b"", timeout=30).status_code == 400


def test_configured_servers_are_read_only(api):
    for answer in (api.put("servers/configured", {"Url": "http://127.0.0.1:1/dicom-web"}), api.delete("servers/configured")):
        assert answer.status_code == 409
        assert "configuration" in answer.json()["message"]
    assert api.get("servers?expand").json()["configured"]["Url"] == "http://127.0.0.1:9/dicom-web"


def test_unknown_server_is_404_for_every_call(api):
    for op, body in (("get", {"Uri": "/studies"}), ("stow", {"Resources": ["1.2.3"]}),
                     ("retrieve", {"Resources": [{"Study": "1.2.3"}]})):
        answer = api.post(f"servers/nowhere/{op}", body)
        assert answer.status_code == 404, (op, answer.text)
        assert "nowhere" in answer.json()["message"] and "configured" in answer.json()["message"]


def test_added_servers_persist_for_notebooks_and_restarts(api, local):
    api.add_server("shared", "http://127.0.0.1:8042/dicom-web", Username="carol", Password=SECRET,
                   HttpHeaders={"X-Site": "lab"}, Timeout=12)
    path = local.store_dir / "servers.json"
    if local.store_kwargs:  # a team store: in its index, shared by every server on it; no file
        assert not path.exists()
        store, _ = open_for_checking(local)
        try:
            assert store.load_servers()["shared"]["Password"] == SECRET
        finally:
            store.close()
    else:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not list(local.store_dir.glob(".servers-*"))  # the temporary file of the atomic write is gone
    # What a notebook kernel sees: the same servers, through the client's own reading ...
    server = load_servers(local.store_dir)["shared"]
    assert (server.url, server.username, server.password, dict(server.http_headers), server.timeout) == (
        "http://127.0.0.1:8042/dicom-web", "carol", SECRET, {"X-Site": "lab"}, 12.0)
    # ... and dw.connect("name"), which builds its HTTP client from it.
    with dw.connect("shared", store=local.store_dir, progress=False) as client:
        http = client.source.http
        assert http.base_url == "http://127.0.0.1:8042/dicom-web"
        assert http.session.auth == ("carol", SECRET) and http.session.headers["X-Site"] == "lab"
    local.restart()
    assert "shared" in Api(local).get("servers").json()
    # A server written by someone else (a notebook, an editor; another server on a team store) is picked up too.
    if local.store_kwargs:
        store, _ = open_for_checking(local)
        store.save_server("edited", {"Url": "http://127.0.0.1:8044/dicom-web"})
        store.close()
    else:
        data = json.loads(path.read_text())
        data["edited"] = {"Url": "http://127.0.0.1:8044/dicom-web"}
        path.write_text(json.dumps(data))
    assert "edited" in api.get("servers").json()


def test_without_servers_in_store_added_servers_last_until_restart(tmp_path):
    server = start_standalone(tmp_path)
    try:
        api = Api(server)
        api.add_server("temporary", "http://127.0.0.1:8042/dicom-web", Password=SECRET, Username="u")
        assert api.get("servers").json() == ["temporary"]
        assert not (server.store_dir / "servers.json").exists()
        server.restart()
        assert Api(server).get("servers").json() == []
    finally:
        server.stop()


def test_bad_configured_server_stops_start_up(tmp_path):
    with pytest.raises(RuntimeError, match="c.DicomWeb.servers"):
        start_standalone(tmp_path, None, "-c", 'servers={"broken": {"Url": "gopher://x"}}')


def test_client_page_standalone_with_a_token(tmp_path):
    server = start_standalone(tmp_path, token="page-token")
    try:
        base = f"{server.url}/dicom-web/app/client"
        assert requests.get(f"{base}/", timeout=30).status_code == 401
        page = requests.get(f"{base}/?token=page-token", timeout=30)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert '<script src="app.js">' in page.text  # relative: works under any prefix
        script = requests.get(f"{base}/app.js?token=page-token", timeout=30)
        assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
        moved = requests.get(f"{base}?token=page-token", allow_redirects=False, timeout=30)
        assert moved.status_code == 302 and moved.headers["Location"].endswith("/app/client/?token=page-token")
    finally:
        server.stop()

"""``POST /servers/{name}/get``: QIDO-RS and WADO-RS through the proxy, against a real Orthanc and a
second instance of our server; no open proxy; remote failures as 502 / 504."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from ..fixtures.ourserver import start_standalone
from ..fixtures.peers import free_port
from .proxy_helpers import Api, make_study, send, serve_studies, start_scripted, upload_to_orthanc


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy-get-data")
    return {
        "orthanc": make_study(folder / "o", slices=3, patient="Proxyget^Orthanc"),
        "ours": make_study(folder / "w", slices=4, patient="Proxyget^Ours", series=2),
    }


@pytest.fixture(scope="module")
def remote_ours(tmp_path_factory, studies, store_backend):
    server = serve_studies(tmp_path_factory.mktemp("proxy-get-remote"), studies["ours"], backend=store_backend)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scripted():
    remote, stop = start_scripted()
    yield remote
    stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory, orthanc, remote_ours, studies, scripted, store_backend):
    upload_to_orthanc(orthanc, studies["orthanc"])
    server = start_standalone(tmp_path_factory.mktemp("proxy-get-local"), backend=store_backend)
    api = Api(server)
    api.add_server("orthanc", orthanc.dicomweb_url)
    api.add_server("ours", remote_ours.dicomweb_url)
    api.add_server("scripted", scripted.url, Timeout=1)
    api.add_server("down", f"http://127.0.0.1:{free_port()}/dicom-web", Timeout=5)
    yield api
    server.stop()


def _uids(answer: requests.Response, tag: str = "0020000D") -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item[tag]["Value"][0] for item in answer.json()]


@pytest.mark.orthanc
def test_qido_through_get_against_orthanc_with_wildcards(api, studies):
    # Debian's Orthanc 1.10 does not percent-decode QIDO values: "*" must reach it as "*". ("^" cannot:
    # requests re-quotes it as %5E whatever the caller does, so a component separator in a PN filter
    # fails against that Orthanc, through the proxy as through the notebook client.)
    answer = api.post("servers/orthanc/get", {"Uri": "/studies", "Arguments": {"PatientName": "PROXYGET*"}})
    assert answer.headers["Content-Type"].startswith("application/dicom+json")
    assert _uids(answer) == [studies["orthanc"].uid]
    by_tag = api.post("servers/orthanc/get", {"Uri": "/studies", "Arguments": {"00100020": "Proxyget-Orthanc",
                                                                             "limit": "5"}})
    assert _uids(by_tag) == [studies["orthanc"].uid]
    in_uri = api.post("servers/orthanc/get", {"Uri": f"/studies/{studies['orthanc'].uid}/instances?limit=2"})
    assert len(_uids(in_uri, "00080018")) == 2
    nothing = api.post("servers/orthanc/get", {"Uri": "/studies", "Arguments": {"PatientName": "NOBODY^HERE*"}})
    assert nothing.status_code == 200 and nothing.json() == []


@pytest.mark.orthanc
def test_xml_answer_keeps_the_remote_content_type(api, studies):
    answer = api.post("servers/orthanc/get", {"Uri": "/series", "HttpHeaders": {"Accept": "application/dicom+xml"},
                                              "Arguments": {"StudyInstanceUID": studies["orthanc"].uid}})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("multipart/related")
    assert "application/dicom+xml" in answer.headers["Content-Type"]
    assert b"<NativeDicomModel" in answer.content


def test_wado_retrieve_streams_through_unchanged(api, remote_ours, studies):
    study = studies["ours"]
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    through = api.session.post(api.url("servers/ours/get"), json={"Uri": f"/studies/{study.uid}",
                                                                   "HttpHeaders": {"Accept": accept}}, stream=True,
                               timeout=60)
    assert through.status_code == 200
    assert through.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert "Content-Length" not in through.headers  # relayed chunk by chunk, not buffered
    body = b"".join(through.iter_content(1 << 16))
    for sop, data in study.by_sop().items():
        assert data in body, f"instance {sop} is not in the relayed answer byte for byte"
    metadata = api.post("servers/ours/get", {"Uri": f"/studies/{study.uid}/metadata"})
    assert {m["00080018"]["Value"][0] for m in metadata.json()} == study.sops


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1:1/dicom-web/studies", "//127.0.0.1:1/studies", "/studies/../../admin", "/%2e%2e/secret",
    "https:studies", "/studies#x", "", None, 42,
])
def test_no_open_proxy(api, uri, scripted):
    before = len(scripted.requests)
    answer = api.post("servers/scripted/get", {"Uri": uri})
    assert answer.status_code == 400, answer.text
    assert "Uri" in answer.json()["message"]
    assert len(scripted.requests) == before  # nothing was sent anywhere


def test_bad_get_requests(api):
    assert api.post("servers/ours/get", b"not json").status_code == 400
    assert api.post("servers/ours/get", {"Uri": "/studies", "Arguments": ["a"]}).status_code == 400
    assert api.post("servers/ours/get", {"Uri": "/studies", "Arguments": {"a": {"b": 1}}}).status_code == 400
    headers = api.post("servers/ours/get", {"Uri": "/studies", "HttpHeaders": {"Content-Length": "5"}})
    assert headers.status_code == 400 and headers.json()["Field"] == "HttpHeaders"


def test_remote_error_is_502_with_its_status_and_message(api):
    answer = api.post("servers/ours/get", {"Uri": "/studies/1.2.3.4.5/metadata"})
    assert answer.status_code == 502
    body = answer.json()
    assert body["RemoteStatus"] == 404 and "1.2.3.4.5" in body["RemoteMessage"]
    assert "'ours'" in body["message"] and "404" in body["message"]


def test_remote_down_is_502(api):
    started = time.monotonic()
    answer = api.post("servers/down/get", {"Uri": "/studies"})
    assert answer.status_code == 502
    assert "cannot reach" in answer.json()["message"] and "'down'" in answer.json()["message"]
    assert time.monotonic() - started < 5  # no retry loop in front of the caller


def test_slow_remote_is_504(api, scripted):
    release, answered = threading.Event(), threading.Event()

    def slow(handler):
        release.wait(timeout=120)  # the remote holds its answer until the test has the proxy's
        send(handler, 200, "application/dicom+json", b"[]")
        answered.set()

    scripted.routes["/slow"] = slow
    try:
        answer = api.post("servers/scripted/get", {"Uri": "/slow"})
        # The remote has not answered yet: the 504 is the server's Timeout (1 s), not the remote's pace.
        assert not answered.is_set()
        assert answer.status_code == 504, answer.text
        assert "in time" in answer.json()["message"]
    finally:
        release.set()


def test_remote_error_bodies_are_explained(api, scripted):
    scripted.routes["/broken"] = lambda h: send(h, 500, "application/json",
                                                b'{"Message": "database is on fire", "Details": "disk full"}')
    answer = api.post("servers/scripted/get", {"Uri": "/broken"})
    assert answer.status_code == 502
    assert answer.json()["RemoteStatus"] == 500
    assert "database is on fire" in answer.json()["RemoteMessage"]


def test_answer_broken_off_mid_stream_is_not_passed_as_complete(api, scripted):
    def truncated(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/dicom+json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"[" + b" " * 70000)
        handler.wfile.flush()
        handler.close_connection = True

    scripted.routes["/truncated"] = truncated
    with pytest.raises(requests.exceptions.RequestException):
        answer = api.session.post(api.url("servers/scripted/get"), json={"Uri": "/truncated"}, stream=True, timeout=30)
        b"".join(answer.iter_content(4096))


def test_unreadable_metadata_is_passed_through_as_sent(api, scripted):
    # /get is a pass-through: what the remote says is the caller's to read (here not even JSON).
    scripted.routes["/garbage"] = lambda h: send(h, 200, "text/html", b"<html>login page</html>")
    answer = api.post("servers/scripted/get", {"Uri": "/garbage"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html" and answer.content == b"<html>login page</html>"


def test_get_sends_the_servers_credentials_and_the_callers_headers(api, scripted):
    scripted.routes["/echo"] = lambda h: send(h, 200, "application/dicom+json", b"[]")
    api.add_server("with-auth", scripted.url, Username="u1", Password="p1", HttpHeaders={"X-Site": "a"})
    try:
        answer = api.post("servers/with-auth/get", {"Uri": "/echo", "Arguments": {"PatientID": "A,B", "x": "1 2"},
                                                    "HttpHeaders": {"X-Site": "b", "Accept": "application/json"}})
        assert answer.status_code == 200
        _method, path, headers = scripted.requests[-1]
        assert path == "/dicom-web/echo?PatientID=A,B&x=1%202"
        assert headers["Authorization"] == "Basic dTE6cDE="  # u1:p1
        assert headers["X-Site"] == "b" and headers["Accept"] == "application/json"  # the call's own win
    finally:
        api.delete("servers/with-auth")

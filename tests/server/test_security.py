"""Path tricks in UIDs, binding rules of the standalone server, authentication on both mount points."""

from __future__ import annotations

import base64
import http.client
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from dicomweb_nb import samples
from tests.fixtures.ourserver import BIN, start_jupyter, start_standalone
from tests.fixtures.peers import free_port

from .conftest import multipart_body, small_series, stow


def raw_get(server, path: str, headers=None) -> tuple[int, bytes]:
    """GET a path exactly as written (requests would normalise dot segments)."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path, headers={**server.headers, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("uid_path", [
    "studies/..",
    "studies/../series",
    "studies/%2E%2E/series",
    "studies/1.2%2F..%2F3/series",
    "studies/1.2%2f3",
    "studies/1.2.abc/series",
    "studies/1.2.3/series/..%2F..%2Findex.sqlite/instances",
    "studies/1.2.3/series/4.5/instances/x",
    "studies/1.2.3/series/4.5/instances/%2E%2E",
    "studies/" + "1." * 40 + "1/series",
    "studies/-1/series",
    "studies/1..2/series",
    "studies/.1/series",
])
def test_uids_with_path_tricks_are_400(server, uid_path):
    prefix = urlsplit(server.dicomweb_url).path
    status, body = raw_get(server, f"{prefix}/{uid_path}")
    assert status == 400, (status, body[:300])
    assert b"not a valid DICOM UID" in body


def test_the_index_is_not_reachable_by_any_path(server):
    prefix = urlsplit(server.dicomweb_url).path
    for path in ("/../index.sqlite", "/studies/../../index.sqlite", "/%2E%2E/index.sqlite", "/files/",
                 "/studies/1.2.3/metadata%00", "/studies/1.2.3/bulk/..%2F..%2Findex.sqlite"):
        status, body = raw_get(server, prefix + path)
        assert status in (400, 404), (path, status)
        assert b"SQLite" not in body


def run_serve(tmp_path: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "dicomweb-nb"), "serve", "--store", str(tmp_path / "store"), "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_non_loopback_bind_without_auth_is_refused(tmp_path, host):
    result = run_serve(tmp_path, "--host", host)
    assert result.returncode != 0
    assert "refusing to serve" in result.stderr and "--token" in result.stderr
    assert not (tmp_path / "store").exists()  # refused before touching anything


def test_non_loopback_bind_with_a_token_serves_and_requires_it(tmp_path):
    port = free_port()
    proc = subprocess.Popen([str(BIN / "dicomweb-nb"), "serve", "--store", str(tmp_path / "store"), "--port", str(port),
                             "--host", "0.0.0.0", "--token", "s3cret", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/dicom-web/studies"
        for _ in range(100):
            try:
                answer = requests.get(url, timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read())
                time.sleep(0.1)
        assert answer.status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, store_backend):
    server = start_standalone(tmp_path_factory.mktemp("token"), None, token="t0ken-value", backend=store_backend)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def basic_server(tmp_path_factory, store_backend):
    server = start_standalone(tmp_path_factory.mktemp("basic"), None, "--basic-auth", "ann:pa:ss", backend=store_backend)
    server.headers = {"Authorization": "Basic " + base64.b64encode(b"ann:pa:ss").decode()}
    yield server
    server.stop()


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": "token t0ken-valu"},
    {"Authorization": "Basic " + base64.b64encode(b"x:t0ken-value").decode()},
    {"Authorization": "t0ken-value"},
])
def test_token_required_when_configured(token_server, headers):
    for method, path in (("GET", "/studies"), ("POST", "/studies"), ("GET", "/studies/1.2.3/metadata"), ("GET", "/nowhere")):
        answer = requests.request(method, f"{token_server.dicomweb_url}{path}", headers=headers, data=b"", timeout=10)
        assert answer.status_code == 401, (method, path, answer.status_code)
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="dicomweb-nb"'
        assert "authentication required" in answer.json()["message"]


@pytest.mark.parametrize("auth", ["Bearer t0ken-value", "token t0ken-value", "bearer t0ken-value"])
def test_token_accepted(token_server, auth):
    datasets = small_series(1)
    answer = stow(token_server, multipart_body([samples.dataset_bytes(datasets[0])]), headers={"Authorization": auth})
    assert answer.status_code == 200, answer.text
    found = requests.get(f"{token_server.dicomweb_url}/studies", params={"PatientID": datasets[0].PatientID},
                         headers={"Authorization": auth}, timeout=10)
    assert found.status_code == 200 and len(found.json()) == 1


def test_token_as_query_parameter(token_server):
    assert requests.get(f"{token_server.dicomweb_url}/studies?token=t0ken-value", timeout=10).status_code == 200
    assert requests.get(f"{token_server.dicomweb_url}/studies?token=nope", timeout=10).status_code == 401


PREFLIGHT = {"Origin": "http://viewer.example", "Access-Control-Request-Method": "POST"}


def test_cors_preflight_needs_no_token_but_other_options_do(token_server):
    assert requests.options(f"{token_server.dicomweb_url}/studies", headers=PREFLIGHT, timeout=10).status_code == 204
    # An OPTIONS that is not a preflight reads the API (its capabilities, PS3.18 8.9): it needs the token.
    assert requests.options(f"{token_server.dicomweb_url}/studies", timeout=10).status_code == 401
    answer = requests.options(f"{token_server.dicomweb_url}/studies", headers={"Authorization": "Bearer t0ken-value"}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/vnd.sun.wadl+xml")
    assert answer.headers["Allow"] == "GET, OPTIONS, POST"


def test_basic_auth(basic_server):
    url = f"{basic_server.dicomweb_url}/studies"
    assert requests.get(url, auth=("ann", "pa:ss"), timeout=10).status_code == 200
    refused = requests.get(url, auth=("ann", "wrong"), timeout=10)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Basic realm="dicomweb-nb"'
    assert requests.get(url, headers={"Authorization": "Basic !!!notbase64"}, timeout=10).status_code == 401
    assert requests.get(url, timeout=10).status_code == 401


def test_jupyter_mount_refuses_unauthenticated_requests(jupyter_dicomweb):
    base = jupyter_dicomweb.dicomweb_url
    for method, path in (("GET", "/studies"), ("GET", "/series"), ("POST", "/studies"), ("GET", "/studies/1.2.3/metadata")):
        answer = requests.request(method, f"{base}{path}", data=b"", timeout=10, allow_redirects=False)
        assert answer.status_code == 403, (method, path, answer.status_code)
        # A POST is stopped by Jupyter's XSRF check first, a GET by the missing token.
        assert ("_xsrf" if method == "POST" else "token") in answer.json()["message"]
    wrong = requests.get(f"{base}/studies", headers={"Authorization": "token wrong"}, timeout=10, allow_redirects=False)
    assert wrong.status_code == 403


def test_jupyter_token_post_needs_no_xsrf_cookie(jupyter_dicomweb):
    datasets = small_series(2)
    session = requests.Session()
    answer = session.post(
        f"{jupyter_dicomweb.dicomweb_url}/studies",
        data=multipart_body([samples.dataset_bytes(ds) for ds in datasets]),
        headers={
            **jupyter_dicomweb.headers,
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=dicomweb-nb-test-boundary',
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert "_xsrf" not in session.cookies
    found = requests.get(f"{jupyter_dicomweb.dicomweb_url}/studies?token={jupyter_dicomweb.headers['Authorization'].split()[1]}",
                         params={"PatientID": datasets[0].PatientID}, timeout=10)
    assert found.status_code == 200


def test_unknown_paths_under_the_root_are_json_404(server):
    answer = requests.get(f"{server.dicomweb_url}/nothing/here", headers=server.headers, timeout=10)
    assert answer.status_code == 404
    assert "no DICOMweb resource" in answer.json()["message"]


@pytest.fixture(params=["standalone", "jupyter"])
def server_under_umask_022(request, tmp_path):
    """A fresh server of either mount point started with the usual umask of a shared machine."""
    if request.param == "standalone":
        server = start_standalone(tmp_path, None, "-c", "servers_in_store=true", umask=0o022)
    else:
        server = start_jupyter(tmp_path, "--DicomWeb.servers_in_store=True", umask=0o022)
    yield server
    server.stop()


# What a server's store folder holds on each backend (a team store keeps its index in PostgreSQL,
# its servers in the index, and on S3 its blobs in the bucket).
_STORE_FOLDER_HOLDS = {
    "sqlite-local": ({"index.sqlite", "index.sqlite-wal", "servers.json", "files", "tmp"}, 4),
    "pg-local": ({"team-store.json", "files"}, 4),
    "pg-s3": ({"team-store.json"}, 0),
}


def test_what_the_server_stores_is_owner_only_under_umask_022(server_under_umask_022, our_server, store_backend):
    server = server_under_umask_022
    assert stow(server, multipart_body([samples.dataset_bytes(ds) for ds in small_series(2)])).status_code == 200
    remote = small_series(2)  # on another server, retrieved through the proxy
    assert stow(our_server, multipart_body([samples.dataset_bytes(ds) for ds in remote])).status_code == 200
    put = requests.put(
        f"{server.dicomweb_url}/servers/other", json={"Url": our_server.dicomweb_url}, headers=server.headers, timeout=10
    )
    assert put.status_code == 200, put.text
    retrieved = requests.post(f"{server.dicomweb_url}/servers/other/retrieve", json={"Resources": [remote[0].StudyInstanceUID]},
                              headers=server.headers, timeout=60)
    assert retrieved.status_code == 200, retrieved.text
    store = server.store_dir
    everything = [store, *store.rglob("*")]
    names, instances = _STORE_FOLDER_HOLDS[store_backend.name]
    assert {p.name for p in everything} >= names
    assert sum(p.suffix == ".dcm" for p in everything) == instances
    loose = {str(p.relative_to(store.parent)): oct(stat.S_IMODE(p.stat().st_mode)) for p in everything
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
    assert loose == {}

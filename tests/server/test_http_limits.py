"""Requests the server will not take get an answer: a URL or headers over the limits (414/431 with a
message, not a dropped connection), and an upload refused before its body is read (415, 413,
401/403: answered after the body is drained, on a connection that stays usable), on both mount points."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.fixtures.ourserver import start_jupyter, start_standalone

from .conftest import DICOM_MULTIPART

BIG_BODY = b"\0" * (8 << 20)


def test_a_query_over_the_url_limit_is_414_with_a_message(server):
    answer = requests.get(f"{server.dicomweb_url}/studies", params={"PatientName": "x" * 100_000},
                          headers=server.headers, timeout=30)
    assert answer.status_code == 414
    assert "accepts at most 65536" in answer.json()["message"]


def test_a_query_with_too_many_arguments_is_414_with_a_message(server):
    params = [("includefield", f"0010{i:04X}") for i in range(2000)]
    answer = requests.get(f"{server.dicomweb_url}/studies", params=params, headers=server.headers, timeout=30)
    assert answer.status_code == 414
    assert "2000 query arguments" in answer.json()["message"]


def test_headers_over_the_limit_are_431_with_a_message(server):
    answer = requests.get(f"{server.dicomweb_url}/studies", headers={**server.headers, "X-Padding": "y" * 80_000},
                          timeout=30)
    assert answer.status_code == 431
    assert "headers are" in answer.json()["message"]


def test_requests_under_the_limits_are_served(server):
    uids = ",".join(f"1.2.826.0.1.3680043.10.{i}" for i in range(1500))  # ~45 kB: a long UID list
    answer = requests.get(f"{server.dicomweb_url}/studies", params={"StudyInstanceUID": uids},
                          headers=server.headers, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json() == []


def test_the_limits_answer_for_every_jupyter_url(jupyter_dicomweb):
    """Installed on Jupyter's HTTP server, the limits answer its own APIs too, instead of closing."""
    answer = requests.get(f"{jupyter_dicomweb.url}/api/status", params={"x": "z" * 100_000},
                          headers=jupyter_dicomweb.headers, timeout=30)
    assert answer.status_code == 414
    assert requests.get(f"{jupyter_dicomweb.url}/api/status", headers=jupyter_dicomweb.headers, timeout=30).status_code == 200


# -- refusals before the body is read -------------------------------------------------------------

LIMIT = 1 << 20  # max_upload_size of the servers below, so an 8 MiB upload is refused with 413


@pytest.fixture(scope="module", params=["standalone", "jupyter"])
def limited_server(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"limited-{request.param}")
    if request.param == "standalone":
        server = start_standalone(folder, None, "-c", f"max_upload_size={LIMIT}", token="limits-token")
    else:
        server = start_jupyter(folder, f"--DicomWeb.max_upload_size={LIMIT}")
    server.kind = request.param  # type: ignore[attr-defined]
    yield server
    server.stop()


def _refusals(server) -> dict[str, tuple[dict[str, str], int]]:
    """Name -> (request headers, expected status) of uploads refused from their headers alone."""
    dicom = f"{DICOM_MULTIPART}; boundary=b"
    unauthenticated = 401 if server.kind == "standalone" else 403
    return {
        "text/plain": ({**server.headers, "Content-Type": "text/plain"}, 415),
        "over max_upload_size": ({**server.headers, "Content-Type": dicom}, 413),
        "no credentials": ({"Content-Type": dicom}, unauthenticated),
    }


def _raw_request(sock: socket.socket, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {sock.getpeername()[0]}:{sock.getpeername()[1]}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of an answer"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


@pytest.mark.parametrize("case", ["text/plain", "over max_upload_size", "no credentials"])
def test_a_refused_upload_is_answered_and_the_connection_stays_usable(limited_server, case):
    """The answer comes after the 8 MiB body is read (nothing is left unread when a connection
    closes, which would reset it), and the same connection serves the next request."""
    headers, status = _refusals(limited_server)[case]
    parts = urlsplit(limited_server.dicomweb_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        for _ in range(2):
            _raw_request(sock, "POST", f"{parts.path}/studies", headers, BIG_BODY)
            answer_status, _, body = _read_answer(sock)
            assert answer_status == status, body[:300]
        _raw_request(sock, "GET", f"{parts.path}/studies?limit=1", limited_server.headers)
        assert _read_answer(sock)[0] == 200


@pytest.mark.parametrize("method", ["DELETE", "GET"])
def test_a_refused_request_without_a_body_keeps_its_connection(limited_server, method):
    """``studies/{study}`` takes a streamed body (STOW-RS into a study): a DELETE or GET refused there
    before any body (no credentials) is answered on a connection that stays open, as elsewhere. Tornado
    closes, without saying so, a connection whose answer went out before it had read the (empty) body,
    and a kept-alive client then saw its next request reset."""
    parts = urlsplit(limited_server.dicomweb_url)
    unauthenticated = 401 if limited_server.kind == "standalone" else 403
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        for _ in range(3):
            _raw_request(sock, method, f"{parts.path}/studies/1.2.3", {})
            answer_status, _, body = _read_answer(sock)
            assert answer_status == unauthenticated, body[:300]
        _raw_request(sock, "GET", f"{parts.path}/studies?limit=1", limited_server.headers)
        assert _read_answer(sock)[0] == 200


@pytest.mark.parametrize("case", ["text/plain", "over max_upload_size", "no credentials"])
def test_requests_always_gets_the_refusal_of_a_big_upload(limited_server, case):
    """``requests`` sends the whole body before reading: each of many tries gets the refusal, over one
    kept-alive connection (the server never closes one with unread body bytes)."""
    headers, status = _refusals(limited_server)[case]
    local_ports = set()
    with requests.Session() as session:
        for _ in range(20):
            answer = session.post(f"{limited_server.dicomweb_url}/studies", data=BIG_BODY, headers=headers, timeout=60,
                                  stream=True)
            local_ports.add(answer.raw.connection.sock.getsockname()[1])
            assert answer.status_code == status, answer.text[:300]
            assert answer.json()["message"]
    assert len(local_ports) == 1  # urllib3 opened no new connection: the server kept it


def test_a_client_waiting_for_100_continue_is_answered_at_once(limited_server):
    headers, status = _refusals(limited_server)["text/plain"]
    parts = urlsplit(limited_server.dicomweb_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        lines = [f"POST {parts.path}/studies HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(BIG_BODY)}",
                 "Expect: 100-continue", *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))  # and no body: it waits
        assert _read_answer(sock)[0] == status

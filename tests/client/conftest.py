"""Client test fixtures: a client of the real Orthanc with pydicom's files loaded, and a scripted HTTP server."""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
import requests

import dicomweb_nb as dw
from dicomweb_nb import samples


@dataclass
class LoadedFile:
    path: Path
    ds: pydicom.Dataset

    @property
    def uids(self) -> tuple[str, str, str]:
        return str(self.ds.StudyInstanceUID), str(self.ds.SeriesInstanceUID), str(self.ds.SOPInstanceUID)


@pytest.fixture(scope="session")
def loaded_orthanc(orthanc):
    """The session's Orthanc with pydicom's bundled files stored (through Orthanc's own REST API, so
    the client's reading is tested independently of its STOW); returns the files Orthanc accepted."""
    orthanc.clear()
    accepted: list[LoadedFile] = []
    with requests.Session() as session, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in samples.pydicom_test_files():
            answer = session.post(f"{orthanc.url}/instances", data=path.read_bytes(), timeout=60)
            if answer.status_code == 200:
                accepted.append(LoadedFile(path, pydicom.dcmread(path)))
    assert len(accepted) > 50
    return orthanc, accepted


@pytest.fixture(scope="session")
def image_files(loaded_orthanc) -> list[LoadedFile]:
    """Accepted files with pixel data that pydicom itself can decode (the reference)."""
    out = []
    _, accepted = loaded_orthanc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item in accepted:
            if "PixelData" not in item.ds:
                continue
            try:
                _ = item.ds.pixel_array
            except Exception:  # noqa: BLE001 - pydicom's corpus has deliberately broken files
                continue
            out.append(item)
    return out


@pytest.fixture()
def client(loaded_orthanc):
    orthanc, _ = loaded_orthanc
    with dw.connect(orthanc.dicomweb_url, progress=False) as pacs:
        yield pacs


# -- a scripted HTTP server for auth, retry and error paths ---------------------------------------

@dataclass
class Scripted:
    """Answers requests from a script: a list of (status, headers, body) or "reset" (close the socket)."""

    script: list = field(default_factory=list)
    default: tuple = (200, {"Content-Type": "application/dicom+json"}, b"[]")
    requests: list = field(default_factory=list)  # (method, path, headers dict, body bytes)
    url: str = ""

    def next_answer(self):
        return self.script.pop(0) if self.script else self.default


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    scripted: Scripted

    def log_message(self, *args):  # keep test output clean
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(length) if length else b""
        self.scripted.requests.append((self.command, self.path, dict(self.headers), body))
        answer = self.scripted.next_answer()
        if answer == "reset":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        status, headers, content = answer
        if isinstance(content, (dict, list)):
            content = json.dumps(content).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_DELETE = _serve


@pytest.fixture()
def scripted_server():
    scripted = Scripted()
    handler = type("Handler", (_Handler,), {"scripted": scripted})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scripted.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    yield scripted
    server.shutdown()
    server.server_close()

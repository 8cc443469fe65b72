"""Helpers for the proxy tests: a REST caller for our server, job polling, generated studies, and a
scripted remote server for the failures real servers do not produce on demand (slow, garbage,
an answer broken off half way)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import requests

from dicomweb_nb import samples
from dicomweb_nb.dicom.multipart import MultipartWriter
from dicomweb_nb.store import import_paths
from tests.fixtures.backends import open_store

from ..fixtures.ourserver import ServerProcess


class Api:
    """Calls to one of our servers' DICOMweb root (``/servers``, ``/jobs``, QIDO...)."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.root = server.dicomweb_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(server.headers)

    def url(self, path: str) -> str:
        return f"{self.root}/{path.lstrip('/')}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=60, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.put(self.url(path), data=json.dumps(body), timeout=60, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.session.post(self.url(path), data=data, timeout=120, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url(path), timeout=60)

    def add_server(self, name: str, url: str, **fields: Any) -> dict:
        answer = self.put(f"servers/{name}", {"Url": url, **fields})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def job(self, job_id: str) -> dict:
        answer = self.get(f"jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_job(self, job_id: str, until: Callable[[dict], bool] | None = None, timeout: float = 60) -> dict:
        """Poll a job until ``until(job)`` (default: it finished)."""
        until = until or (lambda j: j["State"] in ("Success", "Failure"))
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")
            time.sleep(0.05)

    def instances_of(self, study: str) -> set[str]:
        answer = self.get(f"studies/{study}/instances")
        if answer.status_code == 404:
            return set()
        assert answer.status_code == 200, answer.text
        return {item["00080018"]["Value"][0] for item in answer.json()}


@dataclass
class Study:
    uid: str
    files: list[Path]

    @property
    def sops(self) -> set[str]:
        return {p.stem for p in self.files}

    def by_sop(self) -> dict[str, bytes]:
        return {p.stem: p.read_bytes() for p in self.files}


def make_study(folder: Path, *, slices: int, size: int = 32, patient: str = "Proxy^Test", series: int = 1) -> Study:
    """A generated CT study (fresh UIDs) written as Part 10 files named by SOP Instance UID."""
    study_uid = pydicom.uid.generate_uid(prefix=samples.UID_ROOT)
    files: list[Path] = []
    for number in range(1, series + 1):
        datasets = samples.generate_ct_series(n_slices=slices, rows=size, columns=size, patient_name=patient,
                                              patient_id=patient.replace("^", "-"), study_uid=study_uid,
                                              series_number=number, series_description=f"series {number}")
        files += samples.write_series(datasets, folder / f"series{number}")
    return Study(study_uid, files)


def import_study(store_dir: Path, study: Study, backend=None) -> None:
    """Put a study straight into a store (before its server starts)."""
    store = open_store(store_dir, backend)
    try:
        report = import_paths(store, study.files, progress=False)
        assert len(report.stored) == len(study.files)
    finally:
        store.close()


def upload_to_orthanc(orthanc: Any, study: Study) -> None:
    """Put a study into Orthanc through its own REST API (independent of our code)."""
    for path in study.files:
        assert requests.post(f"{orthanc.url}/instances", data=path.read_bytes(), timeout=30).status_code == 200


def serve_studies(workdir: Path, *studies: Study, backend=None):
    """``dicomweb-nb serve`` on a store that already holds ``studies`` (a remote for the proxy)."""
    from ..fixtures.ourserver import start_standalone

    for study in studies:
        import_study(workdir / "store", study, backend)
    return start_standalone(workdir, backend=backend)


# -- a scripted remote ----------------------------------------------------------------------------

@dataclass
class ScriptedRemote:
    """An HTTP server whose answers are Python functions of the request path (``routes``: prefix -> fn)."""

    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    url: str = ""
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # of POST requests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    remote: ScriptedRemote

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.remote.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self._route("POST")

    def do_GET(self) -> None:
        self._route("GET")

    def _route(self, method: str) -> None:
        self.remote.requests.append((method, self.path, dict(self.headers)))
        for prefix, answer in self.remote.routes.items():
            if self.path.startswith("/dicom-web" + prefix):
                try:
                    answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
        send(self, 404, "application/json", b'{"Message": "no such thing here"}')


def send(handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def send_instances(handler: BaseHTTPRequestHandler, parts: list[bytes]) -> None:
    """A complete WADO-RS multipart answer."""
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + p for p in parts) + writer.close()
    send(handler, 200, f'multipart/related; type="application/dicom"; boundary={writer.boundary}', body)


def send_parts_then_break(handler: BaseHTTPRequestHandler, parts: list[bytes], *, pause: float = 0.0,
                          announced_extra: int = 10) -> None:
    """A WADO-RS answer that announces more parts than it sends, then closes the connection."""
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + p for p in parts)
    handler.send_response(200)
    handler.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={writer.boundary}')
    handler.send_header("Content-Length", str(len(body) + announced_extra * 1000))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()
    if pause:
        time.sleep(pause)
    handler.close_connection = True


def start_scripted() -> tuple[ScriptedRemote, Callable[[], None]]:
    remote = ScriptedRemote()
    handler = type("Handler", (_Handler,), {"remote": remote})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    remote.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return remote, stop

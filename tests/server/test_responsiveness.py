"""Long requests never hold up short ones: while downloads stall on clients that do not read, and while
proxy transfers slowed by Orthanc's ``"Debug"`` option and jobs run, a search, a job's state and the
list of servers still answer at once, on both mount points."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from dicomweb_nb import samples

from .conftest import multipart_body, small_series, stow, unique_patient
from .proxy_helpers import Api

PROMPT = 10.0  # seconds: a cheap request that waits this long is stuck behind the long ones, not slow
STALLED = 6  # more stalled downloads than the server has worker threads (c.DicomWeb.worker_threads = 4)
INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def big_study(tmp_path_factory):
    """A 30 MB study: far more than the socket buffers of a download hold."""
    patient = unique_patient("STALL")
    datasets = samples.generate_ct_series(60, rows=512, columns=512, patient_id=patient)
    return patient, datasets[0].StudyInstanceUID, [samples.dataset_bytes(ds) for ds in datasets]


def _search(server, **params: str) -> requests.Response:
    return requests.get(f"{server.dicomweb_url}/studies", params=params, headers=server.headers, timeout=PROMPT)


def _stalled_download(server, study: str) -> tuple[socket.socket, int]:
    """A WADO-RS retrieve whose client reads the headers and then nothing: (socket, body length)."""
    parts = urlsplit(server.dicomweb_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    headers = {**server.headers, "Accept": INSTANCE_ACCEPT, "Host": parts.netloc}
    request = f"GET {parts.path}/studies/{study} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall((request + "\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1024)
    status = head.split(b" ", 2)[1]
    assert status == b"200", head[:300]
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return sock, length - len(head.partition(b"\r\n\r\n")[2])


def test_stalled_downloads_do_not_hold_up_other_requests(server, big_study):
    patient, study, files = big_study
    assert stow(server, multipart_body(files)).status_code == 200
    downloads = [_stalled_download(server, study) for _ in range(STALLED)]
    try:
        for _ in range(3):
            answer = _search(server, PatientID=patient)
            assert answer.status_code == 200 and len(answer.json()) == 1
            metadata = requests.get(f"{server.dicomweb_url}/studies/{study}/metadata", headers=server.headers, timeout=PROMPT)
            assert metadata.status_code == 200 and len(metadata.json()) == len(files)
        # A stalled download resumes where it stopped when its client reads again, and ends complete.
        sock, remaining = downloads[0]
        sock.settimeout(60)
        received = 0
        while received < remaining:
            chunk = sock.recv(1 << 20)
            assert chunk, f"the download ended {remaining - received} bytes short"
            received += len(chunk)
        assert received == remaining
    finally:
        for sock, _ in downloads:
            sock.close()


def test_debug_transfers_and_jobs_keep_the_server_responsive(server, slow_remote):
    remote, study = slow_remote
    api = Api(server)
    name = f"responsive-{server.url.rsplit(':', 1)[-1].split('/')[0]}"
    api.add_server(name, remote.dicomweb_url)
    local = small_series(10)
    assert stow(server, multipart_body([samples.dataset_bytes(ds) for ds in local])).status_code == 200
    slow = {"Resources": [{"Study": study.uid}], "Debug": True}
    jobs = [api.post(f"servers/{name}/retrieve", {**slow, "Synchronous": False}).json()["ID"] for _ in range(3)]
    send = {"Resources": [{"Study": local[0].StudyInstanceUID}], "Debug": True, "Synchronous": False}
    jobs.append(api.post(f"servers/{name}/stow", send).json()["ID"])
    synchronous = threading.Thread(target=api.post, args=(f"servers/{name}/retrieve", slow), daemon=True)
    synchronous.start()
    try:
        api.wait_job(jobs[0], until=lambda job: job["State"] == "Running", timeout=60)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert _search(server, limit="1").status_code == 200
            for job_id in jobs:
                assert (
                    requests.get(f"{server.dicomweb_url}/jobs/{job_id}", headers=server.headers, timeout=PROMPT).status_code
                    == 200
                )
            assert requests.get(f"{server.dicomweb_url}/servers", headers=server.headers, timeout=PROMPT).status_code == 200
        assert api.job(jobs[0])["State"] == "Running"  # the transfers were under way the whole time
    finally:
        for job_id in jobs:
            api.post(f"jobs/{job_id}/cancel", {})
        synchronous.join(120)
        api.delete(f"servers/{name}")

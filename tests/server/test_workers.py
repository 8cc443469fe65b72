"""``dicomweb-nb serve --workers N``: N processes on one port and one store behave as one server.

Requests spread over the workers; what one worker changes another sees at once (servers added
with PUT, a job's state and its cancellation, a re-STOW or a delete under another worker's cached
rows, the WADO-URI anonymization key); a worker that dies is replaced; stopping or killing the
server stops every worker. Which worker served a request is read from the server's log, where
each line names its worker.
"""

from __future__ import annotations

import io
import os
import re
import signal
import uuid

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image

from dicomweb_nb import samples
from tests.fixtures.backends import open_store
from tests.fixtures.ourserver import start_standalone
from tests.fixtures.waiting import wait_until

from .conftest import multipart_body, stow, unique_patient
from .proxy_helpers import Api

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SERVING = re.compile(r"worker (\d+) \(pid (\d+)\) is serving")


@pytest.fixture
def workers(tmp_path):
    """``dicomweb-nb serve --workers 2``, logging every request."""
    server = start_standalone(tmp_path, None, "--workers", "2", quiet=False)
    wait_until(lambda: len(serving(server)) == 2, what="both workers serving")
    yield server
    server.stop()


def serving(server) -> dict[int, int]:
    """Worker number -> pid of the workers the log says are serving (the latest start of each)."""
    return {int(m.group(1)): int(m.group(2)) for m in SERVING.finditer(server.log_text())}


def worker_pid(server, session: requests.Session) -> int:
    """The pid of the worker holding ``session``'s connection: a request only it makes, found in the log."""
    probe = f"probe-{uuid.uuid4().hex}"
    answer = session.get(f"{server.dicomweb_url}/studies", params={"PatientID": probe}, headers=server.headers, timeout=30)
    assert answer.status_code == 200

    def logged() -> int | None:
        line = next((line for line in server.log_text().splitlines() if probe in line), None)
        match = re.search(r"\[worker \d+ pid (\d+)\]", line) if line else None
        return int(match.group(1)) if match else None
    return wait_until(logged, what=f"the log line of {probe}")


def sessions_on_two_workers(server) -> tuple[requests.Session, requests.Session]:
    """Two keep-alive sessions held by different workers."""
    first = requests.Session()
    pid = worker_pid(server, first)
    opened = []
    for _ in range(16):  # the least busy worker takes a new connection: the second one, at once
        other = requests.Session()
        opened.append(other)
        if worker_pid(server, other) != pid:
            return first, other
    raise AssertionError("16 connections all went to one worker")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_requests_spread_across_the_worker_processes(workers):
    pids = serving(workers)
    assert len(set(pids.values())) == 2
    sessions = [requests.Session() for _ in range(6)]
    served = [worker_pid(workers, s) for s in sessions]
    assert set(served) == set(pids.values())
    assert workers.process.pid not in served  # the supervisor serves nothing itself


def test_a_job_started_through_one_worker_is_seen_and_cancelled_through_another(workers, slow_remote):
    remote, study = slow_remote
    one, other = sessions_on_two_workers(workers)
    first, second = Api(workers), Api(workers)
    first.session, second.session = one, other
    # A server added by PUT without servers_in_store lasts until the server stops, in every worker.
    first.add_server("slow", remote.dicomweb_url)
    assert "slow" in second.get("servers").json()
    assert second.get("servers/slow?expand").json()["Url"] == remote.dicomweb_url
    job_id = first.post("servers/slow/retrieve", {"Resources": [study.uid], "Synchronous": False, "Debug": True}).json()["ID"]
    second.wait_job(job_id, lambda j: j["State"] == "Running")
    assert job_id in second.get("jobs").json()
    assert second.post(f"jobs/{job_id}/cancel", {}).status_code == 200
    final = first.wait_job(job_id, timeout=60)
    assert final["State"] == "Failure" and final["ErrorCode"] == 37 and final.get("Cancelled") is True
    assert second.job(job_id)["State"] == "Failure"
    # And a DELETE of it through the second worker reaches the first.
    assert second.delete("servers/slow").status_code == 200
    assert "slow" not in first.get("servers").json()


def _instance_bytes(pixel_value: int, ds=None):
    ds = ds or samples.generate_ct_series(1, rows=16, columns=16, patient_id=unique_patient("W"))[0]
    ds.PixelData = np.full((16, 16), pixel_value, dtype=np.uint16).tobytes()
    return ds, samples.dataset_bytes(ds)


def test_a_restow_or_delete_through_one_worker_is_seen_by_the_cached_rows_of_another(workers):
    one, other = sessions_on_two_workers(workers)
    ds, v1 = _instance_bytes(100)
    url = (f"{workers.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    octets = {"Accept": "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"}

    def frame(session) -> np.ndarray:
        answer = session.get(f"{url}/frames/1", headers=octets, timeout=30)
        assert answer.status_code == 200, answer.text
        return np.frombuffer(answer.content, dtype=np.uint16)

    def instance(session) -> pydicom.Dataset:
        answer = session.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return pydicom.dcmread(io.BytesIO(answer.content))

    assert stow(workers, multipart_body([v1])).status_code == 200
    assert (frame(other) == 100).all() and (instance(other).pixel_array == 100).all()  # now in its cache
    _, v2 = _instance_bytes(200, ds)
    with one:
        content_type = 'multipart/related; type="application/dicom"; boundary=dicomweb-nb-test-boundary'
        answer = one.post(f"{workers.dicomweb_url}/studies", data=multipart_body([v2]), timeout=60,
                          headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text
    assert (frame(other) == 200).all() and (instance(other).pixel_array == 200).all()
    rendered = other.get(f"{url}/rendered", headers={"Accept": "image/png"}, timeout=30)
    assert rendered.status_code == 200
    # Deleted by another process on the store (a notebook, another server): gone for the worker too.
    store = open_store(workers.store_dir)
    try:
        assert store.delete(ds.StudyInstanceUID) == 1
    finally:
        store.close()
    assert other.get(f"{url}/frames/1", headers=octets, timeout=30).status_code == 404
    assert other.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30).status_code == 404


def test_rendered_images_a_worker_keeps_follow_a_restow_or_delete_through_another(workers):
    # A worker keeps the images it rendered (and the frames it decoded): what another worker or
    # process stores or deletes since must show in its next answer, never the kept image.
    one, other = sessions_on_two_workers(workers)
    ds, v1 = _instance_bytes(1000)  # HU -24: grey in the stored window (40, 400)
    url = (f"{workers.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")

    def grey(session, query: str = "") -> float:
        answer = session.get(f"{url}/rendered{query}", headers={"Accept": "image/jpeg"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return float(np.asarray(Image.open(io.BytesIO(answer.content))).mean())

    def restow(dataset) -> None:
        with one:
            content_type = 'multipart/related; type="application/dicom"; boundary=dicomweb-nb-test-boundary'
            answer = one.post(f"{workers.dicomweb_url}/studies", data=multipart_body([samples.dataset_bytes(dataset)]),
                              timeout=60, headers={"Content-Type": content_type})
        assert answer.status_code == 200, answer.text

    assert stow(workers, multipart_body([v1])).status_code == 200
    first = grey(other)
    assert grey(other) == first and 60 < first < 120  # the second answer is the kept one
    dragged = grey(other, "?window=-24,400,linear")
    assert abs(dragged - 128) < 2
    # New pixels through the other worker.
    ds.PixelData = np.full((16, 16), 1200, dtype=np.uint16).tobytes()  # HU 176
    restow(ds)
    assert grey(other) > first + 80
    assert abs(grey(other, "?window=-24,400,linear") - 128) > 40
    # Same pixels, another stored window: the image depends on the metadata too.
    ds.WindowCenter, ds.WindowWidth = 176, 400
    restow(ds)
    assert abs(grey(other) - 128) < 2
    # Deleted by another process on the store: the kept images are not served.
    store = open_store(workers.store_dir)
    try:
        assert store.delete(ds.StudyInstanceUID) == 1
    finally:
        store.close()
    assert other.get(f"{url}/rendered", headers={"Accept": "image/jpeg"}, timeout=30).status_code == 404


def test_wado_uri_anonymization_maps_uids_alike_in_every_worker(workers):
    one, other = sessions_on_two_workers(workers)
    datasets = samples.generate_ct_series(2, rows=8, columns=8, patient_id=unique_patient("ANON"))
    assert stow(workers, multipart_body([samples.dataset_bytes(ds) for ds in datasets])).status_code == 200
    anonymized = []
    for session, ds in zip((one, other), datasets):
        answer = session.get(f"{workers.url}/wado", params={
            "requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID, "contentType": "application/dicom", "anonymize": "yes"}, timeout=30)
        assert answer.status_code == 200, answer.text
        anonymized.append(pydicom.dcmread(io.BytesIO(answer.content)))
    # Two objects of one series, fetched through two workers: still one study and one series.
    assert anonymized[0].StudyInstanceUID == anonymized[1].StudyInstanceUID != datasets[0].StudyInstanceUID
    assert anonymized[0].SeriesInstanceUID == anonymized[1].SeriesInstanceUID != datasets[0].SeriesInstanceUID
    assert anonymized[0].SOPInstanceUID != anonymized[1].SOPInstanceUID


def test_a_killed_worker_is_replaced(workers):
    before = serving(workers)
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: serving(workers).get(0) not in (None, before[0]), what="a new worker 0")
    assert f"worker 0 (pid {before[0]}) was killed by signal 9" in workers.log_text()
    after = serving(workers)
    assert after[1] == before[1] and not alive(before[0])
    sessions = [requests.Session() for _ in range(6)]
    assert {worker_pid(workers, s) for s in sessions} == set(after.values())


def test_stopping_the_server_stops_every_worker(workers):
    pids = list(serving(workers).values())
    workers.stop()
    assert workers.process.returncode == 0
    assert not any(alive(pid) for pid in pids)


def test_killing_the_server_kills_its_workers(workers):
    pids = list(serving(workers).values())
    workers.kill()
    wait_until(lambda: not any(alive(pid) for pid in pids), what="the workers gone with their supervisor")
    workers.start()  # the port is free again for a new server on the store
    assert requests.get(f"{workers.dicomweb_url}/studies", timeout=30).status_code == 200


def test_metrics_of_every_worker_are_in_each_workers_answer(workers):
    from prometheus_client.parser import text_string_to_metric_families

    def qido_count(session: requests.Session) -> float:
        answer = session.get(workers.url + "/metrics", headers=workers.headers, timeout=30)
        assert answer.status_code == 200, answer.text
        return sum(sample.value for family in text_string_to_metric_families(answer.text) for sample in family.samples
                   if sample.name == "dicomweb_requests_total"
                   and sample.labels == {"service": "QIDO-RS", "method": "GET", "status": "200"})

    first, other = sessions_on_two_workers(workers)
    before = qido_count(first)
    assert qido_count(other) == before  # the same sum, whichever worker answers
    for session, count in ((first, 3), (other, 2)):
        for _ in range(count):
            answer = session.get(f"{workers.dicomweb_url}/studies", headers=workers.headers, timeout=30)
            assert answer.status_code == 200
    assert qido_count(first) == before + 5
    assert qido_count(other) == before + 5

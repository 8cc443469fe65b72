"""kill -9 of the server during a multi-instance STOW, then restart: each instance is whole or absent."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from dicomweb_nb import samples
from tests.fixtures.backends import staging_files
from tests.fixtures.consistency import check_store_consistent

from .conftest import multipart_body, qido, small_series, value

BOUNDARY = "crash-test-boundary"


def part_bytes(ds) -> bytes:
    return multipart_body([samples.dataset_bytes(ds)], boundary=BOUNDARY)[: -len(f"--{BOUNDARY}--\r\n")]


def slow_body(datasets, *, pause: float, sent: list[int], all_sent: threading.Event):
    """The multipart body part by part, sleeping between parts (a slow client on a slow link)."""
    for i, ds in enumerate(datasets):
        data = part_bytes(ds)
        half = len(data) // 2
        yield data[:half]
        time.sleep(pause)
        yield data[half:]
        sent.append(i)
        time.sleep(pause)
    yield f"--{BOUNDARY}--\r\n".encode()
    all_sent.set()


def post_in_background(server, body) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["response"] = requests.post(
                f"{server.dicomweb_url}/studies", data=body, timeout=60,
                headers={**server.headers, "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
        except requests.RequestException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def check_each_instance_whole_or_absent(server, datasets) -> int:
    """Every instance either answers QIDO, metadata and retrieve with its exact bytes, or is nowhere."""
    visible = 0
    for ds in datasets:
        found = qido(server, "/instances", {"SOPInstanceUID": ds.SOPInstanceUID}).json()
        instance_url = (
            f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )
        if not found:
            assert requests.get(instance_url, headers=server.headers, timeout=30).status_code == 404
            continue
        visible += 1
        assert value(found[0], "00081190") == instance_url
        metadata = requests.get(f"{instance_url}/metadata", headers=server.headers, timeout=30)
        assert metadata.status_code == 200
        assert metadata.json()[0]["00080018"]["Value"] == [ds.SOPInstanceUID]
        retrieved = requests.get(
            instance_url, headers={**server.headers, "Accept": "application/dicom; transfer-syntax=*"}, timeout=30
        )
        assert retrieved.status_code == 200
        assert retrieved.content == samples.dataset_bytes(ds)
    return visible


def test_kill_while_the_body_streams(fresh_server):
    server = fresh_server
    before = small_series(2)
    assert (
        requests.post(
            f"{server.dicomweb_url}/studies",
            data=multipart_body([samples.dataset_bytes(ds) for ds in before], boundary=BOUNDARY),
            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'},
            timeout=30,
        ).status_code
        == 200
    )
    datasets = small_series(6)
    sent: list[int] = []
    all_sent = threading.Event()
    thread, outcome = post_in_background(server, slow_body(datasets, pause=0.1, sent=sent, all_sent=all_sent))
    deadline = time.monotonic() + 30
    while len(sent) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sent) >= 3
    # The parts received so far sit in tmp/ as the server streams them to disk.
    assert staging_files(server.store_dir)
    server.kill()
    thread.join(timeout=30)
    assert not all_sent.is_set() and "error" in outcome
    server.start()
    assert check_each_instance_whole_or_absent(server, datasets) == 0
    assert check_each_instance_whole_or_absent(server, before) == 2
    assert check_store_consistent(server) == {"studies": 1, "series": 1, "instances": 2}


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.07, 0.1, 0.2])
def test_kill_after_the_body_while_storing(fresh_server, delay):
    """The body is complete; the server is parsing and indexing 40 instances when it is killed."""
    server = fresh_server
    datasets = samples.generate_ct_series(40, rows=48, columns=48, patient_id=f"CRASH-{delay}")
    sent: list[int] = []
    all_sent = threading.Event()
    thread, outcome = post_in_background(server, slow_body(datasets, pause=0, sent=sent, all_sent=all_sent))
    assert all_sent.wait(timeout=60)
    time.sleep(delay)
    server.kill()
    thread.join(timeout=30)
    server.start()
    visible = check_each_instance_whole_or_absent(server, datasets)
    # One index transaction: all or nothing, whichever side of the commit the kill fell on.
    assert visible in (0, len(datasets))
    if "response" in outcome:
        assert outcome["response"].status_code == 200 and visible == len(datasets)
    counts = check_store_consistent(server)
    assert counts["instances"] == visible
    [study] = qido(server, "/studies", {"PatientID": f"CRASH-{delay}"}).json() or [None]
    if visible:
        assert study["00201208"]["Value"] == [len(datasets)]

"""Several ``dicomweb-nb serve`` processes on one store (each backend; a team store's point):
what one stores the other finds, the duplicate policy holds across them, and a job of one is
seen and cancelled through the other."""

from __future__ import annotations

import copy
import threading

import pytest
import requests

from dicomweb_nb import samples
from tests.fixtures.consistency import check_store_consistent
from tests.fixtures.ourserver import start_standalone

from .conftest import failed_items, multipart_body, qido, referenced_sops, small_series, stow
from .proxy_helpers import Api, make_study, serve_studies

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def two_servers(tmp_path):
    """Two servers on one store, the second refusing duplicates."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_standalone(tmp_path / "a", tmp_path / "store")
    second = start_standalone(tmp_path / "b", tmp_path / "store", "-c", "duplicates=reject")
    yield first, second
    first.stop()
    second.stop()


def test_what_one_server_stores_the_other_finds(two_servers):
    first, second = two_servers
    datasets = small_series(3)
    assert stow(first, multipart_body([samples.dataset_bytes(ds) for ds in datasets])).status_code == 200
    found = qido(second, "/instances", {"PatientID": datasets[0].PatientID}).json()
    assert sorted(i["00080018"]["Value"][0] for i in found) == sorted(ds.SOPInstanceUID for ds in datasets)
    for ds in datasets:
        url = f"{second.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        retrieved = requests.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
        assert retrieved.content == samples.dataset_bytes(ds)
    assert check_store_consistent(first)["instances"] == 3


def test_concurrent_stow_of_one_instance_to_two_servers(two_servers):
    first, second = two_servers
    original = small_series(1)[0]
    answers: dict[str, object] = {}

    def send(server, name, description):
        ds = copy.deepcopy(original)
        ds.StudyDescription = description
        answers[name] = stow(server, multipart_body([samples.dataset_bytes(ds)] * 3))  # the same instance thrice

    threads = [threading.Thread(target=send, args=(s, n, n)) for s, n in ((first, "first"), (second, "second"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # One instance in the store whoever won; the second server refused what it found already stored.
    found = qido(first, "/instances", {"SOPInstanceUID": original.SOPInstanceUID}).json()
    assert len(found) == 1
    first_answer, second_answer = answers["first"].json(), answers["second"].json()  # type: ignore[attr-defined]
    assert referenced_sops(first_answer) == [original.SOPInstanceUID] * 3  # replace: each part stored
    assert len(referenced_sops(second_answer)) + len(failed_items(second_answer)) == 3
    assert len(referenced_sops(second_answer)) <= 1
    assert check_store_consistent(first) == {"studies": 1, "series": 1, "instances": 1}


def test_a_job_of_one_server_is_seen_and_cancelled_through_the_other(tmp_path):
    big = make_study(tmp_path / "data", slices=40, size=32, patient="Shared^Jobs")
    for name in ("remote", "a", "b"):
        (tmp_path / name).mkdir()
    remote = serve_studies(tmp_path / "remote", big)
    first = start_standalone(tmp_path / "a", tmp_path / "store")
    second = start_standalone(tmp_path / "b", tmp_path / "store")
    try:
        Api(first).add_server("ours", remote.dicomweb_url)
        job_id = Api(first).post("servers/ours/retrieve", {"Resources": [big.uid], "Synchronous": False,
                                                           "Debug": True}).json()["ID"]
        Api(first).wait_job(job_id, lambda j: j["State"] == "Running")
        assert job_id in Api(second).get("jobs").json()
        assert Api(second).job(job_id)["State"] == "Running"
        assert Api(second).post(f"jobs/{job_id}/cancel", {}).status_code == 200
        final = Api(first).wait_job(job_id, timeout=60)  # the owner sees the request at its next save
        assert final["State"] == "Failure" and final["ErrorCode"] == 37 and final.get("Cancelled") is True
        assert Api(second).wait_job(job_id)["State"] == "Failure"
    finally:
        first.stop()
        second.stop()
        remote.stop()

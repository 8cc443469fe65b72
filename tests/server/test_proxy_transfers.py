"""``/servers/{name}/stow`` and ``/retrieve`` with a real Orthanc and a second instance of our server
as the remotes: synchronous calls, jobs to completion and cancellation, priorities, a remote killed
mid-retrieve, our own server restarted under a running job, remote failures."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from tests.fixtures.backends import staging_files
from tests.fixtures.consistency import open_for_checking

from ..fixtures.ourserver import start_standalone
from .proxy_helpers import (
    Api,
    import_study,
    make_study,
    send,
    send_instances,
    send_parts_then_break,
    serve_studies,
    start_scripted,
    upload_to_orthanc,
)

INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy-transfer-data")
    return {
        "to_orthanc": make_study(folder / "a", slices=5, patient="Stow^Orthanc"),
        "from_orthanc": make_study(folder / "b", slices=4, patient="Retrieve^Orthanc", series=2),
        "local_multi": make_study(folder / "c", slices=3, patient="Stow^Forms", series=3),
        # Large enough that, slowed by Debug (50 ms per instance), a retrieve runs for seconds.
        "big": make_study(folder / "d", slices=60, size=64, patient="Big^Remote"),
        "to_ours": make_study(folder / "e", slices=6, patient="Stow^Ours"),
    }


@pytest.fixture(scope="module")
def remote(tmp_path_factory, data, store_backend):
    """The second instance of our server, holding the big study."""
    server = serve_studies(tmp_path_factory.mktemp("proxy-transfer-remote"), data["big"], backend=store_backend)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory, data, orthanc, remote, store_backend):
    upload_to_orthanc(orthanc, data["from_orthanc"])
    server = serve_studies(tmp_path_factory.mktemp("proxy-transfer-local"),
                           *(data[key] for key in ("to_orthanc", "local_multi", "to_ours")), backend=store_backend)
    api = Api(server)
    api.add_server("orthanc", orthanc.dicomweb_url)
    api.add_server("ours", remote.dicomweb_url)
    yield server
    server.stop()


@pytest.fixture()
def api(local):
    return Api(local)


def _orthanc_instances(orthanc, study_uid: str) -> set[str]:
    answer = requests.get(f"{orthanc.dicomweb_url}/studies/{study_uid}/instances", timeout=30)
    if answer.status_code in (204, 404):
        return set()
    assert answer.status_code == 200, answer.text
    return {i["00080018"]["Value"][0] for i in answer.json()}


def _stored_bytes(server, study_uid: str) -> dict[str, bytes]:
    """What our server holds for a study, read back from its store folder."""
    store, _ = open_for_checking(server)
    try:
        return {row.sop_uid: row.blob.read() for row in store.instances(study_uid)}
    finally:
        store.close()


# -- STOW-RS to a remote -------------------------------------------------------------------------

@pytest.mark.orthanc
def test_stow_study_to_orthanc_then_found_there(api, orthanc, data):
    study = data["to_orthanc"]
    assert _orthanc_instances(orthanc, study.uid) == set()
    answer = api.post("servers/orthanc/stow", {"Resources": [{"Study": study.uid}]})
    assert answer.status_code == 200, answer.text
    content = answer.json()
    assert set(content["Instances"]) == study.sops and content["FailedInstances"] == []
    assert content["InstancesCount"] == content["SentInstancesCount"] == len(study.sops)
    assert _orthanc_instances(orthanc, study.uid) == study.sops
    for sop, original in study.by_sop().items():
        orthanc_id = requests.post(f"{orthanc.url}/tools/lookup", data=sop, timeout=30).json()[0]["ID"]
        assert requests.get(f"{orthanc.url}/instances/{orthanc_id}/file", timeout=30).content == original


def test_stow_resource_forms_as_a_job(api, remote, data):
    study = data["local_multi"]
    by_series: dict[str, list[str]] = {}  # files are grouped by series folder
    for path in study.files:
        by_series.setdefault(path.parent.name, []).append(path.stem)
    folders = sorted(by_series)
    local_store, _ = open_for_checking(api.server)
    try:
        rows = local_store.instances(study.uid)
    finally:
        local_store.close()
    series_of = {row.sop_uid: row.series_uid for row in rows}
    first_series = series_of[by_series[folders[0]][0]]
    lone_instance = by_series[folders[1]][0]
    resources = [
        first_series,                                                     # a bare series UID
        {"Study": study.uid, "Series": series_of[lone_instance], "Instance": lone_instance},
        lone_instance,                                                    # a bare instance UID (deduplicated)
    ]
    answer = api.post("servers/ours/stow", {"Resources": resources, "Synchronous": False, "Priority": 3})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["ID"]
    assert answer.json()["Path"] == f"/dicom-web/jobs/{job_id}"
    job = api.wait_job(job_id)
    assert job["State"] == "Success", job
    assert job["Type"] == "DicomWebStowClient" and job["Priority"] == 3 and job["Progress"] == 100
    expected = set(by_series[folders[0]]) | {lone_instance}
    assert set(job["Content"]["Instances"]) == expected and job["Content"]["InstancesCount"] == len(expected)
    assert Api(remote).instances_of(study.uid) == expected  # of three series, only what was asked went


def test_stow_bad_resources(api):
    cases = [
        ({"Resources": ["6ca4c9f3-5e895cb3-4d82c6da-09e060fe-9c59f228"]}, 400, "Orthanc"),  # an Orthanc ID
        ({"Resources": ["1.2.3.999"]}, 404, "neither"),
        ({"Resources": [{"Study": "1.2.3.999"}]}, 404, "not in this store"),
        ({"Resources": [{"Patient": "x"}]}, 400, "unknown field"),
        ({"Resources": []}, 400, "non-empty"),
        ({}, 400, "Resources"),
        ({"Resources": ["1.2.3"], "Synchronous": "no"}, 400, "Synchronous"),
        ({"Resources": ["1.2.3"], "Priority": "high"}, 400, "Priority"),
    ]
    for body, status, text in cases:
        answer = api.post("servers/ours/stow", body)
        assert answer.status_code == status, (body, answer.text)
        assert text in answer.json()["message"], (body, answer.text)


def test_stow_refused_by_the_remote_reports_each_instance(api, data):
    # A remote that refuses: our own server with the duplicate policy "reject", already holding the study.
    workdir = api.server.workdir.parent / "rejecting"
    workdir.mkdir(exist_ok=True)
    import_study(workdir / "store", data["to_ours"])
    rejecting = start_standalone(workdir, None, "-c", "duplicates=reject")
    try:
        api.add_server("rejecting", rejecting.dicomweb_url)
        answer = api.post("servers/rejecting/stow", {"Resources": [data["to_ours"].uid]})
        assert answer.status_code == 502, answer.text
        body = answer.json()
        assert "refused 6 of 6" in body["message"]
        failed = body["Content"]["FailedInstances"]
        assert {f["SOPInstanceUID"] for f in failed} == data["to_ours"].sops
        assert all(f["FailureReason"] == 0x0111 for f in failed)
    finally:
        api.delete("servers/rejecting")
        rejecting.stop()


# -- WADO-RS from a remote -----------------------------------------------------------------------

@pytest.mark.orthanc
def test_retrieve_from_orthanc_is_byte_identical(api, local, data):
    study = data["from_orthanc"]
    assert api.instances_of(study.uid) == set()
    answer = api.post("servers/orthanc/retrieve", {"Resources": [{"Study": study.uid}]})
    assert answer.status_code == 200, answer.text
    assert sorted(answer.json()) == sorted(study.sops)  # SOP Instance UIDs (Orthanc answers its own IDs)
    assert _stored_bytes(local, study.uid) == study.by_sop()
    # And served back by our own WADO-RS as stored.
    one = sorted(study.sops)[0]
    rows = {p.stem: p for p in study.files}
    retrieved = requests.get(f"{local.dicomweb_url}/studies/{study.uid}", headers={"Accept": INSTANCE_ACCEPT}, timeout=30)
    assert rows[one].read_bytes() in retrieved.content


@pytest.mark.orthanc
def test_retrieve_series_and_instance_levels(api, orthanc, data):
    study = data["from_orthanc"]
    meta = requests.get(f"{orthanc.dicomweb_url}/studies/{study.uid}/metadata", timeout=30).json()
    series = sorted({m["0020000E"]["Value"][0] for m in meta})
    one = next(m for m in meta if m["0020000E"]["Value"][0] == series[1])
    sop = one["00080018"]["Value"][0]
    answer = api.post("servers/orthanc/retrieve", {"Resources": [
        {"Study": study.uid, "Series": series[0]},
        {"Study": study.uid, "Series": series[1], "Instance": sop},
    ], "Synchronous": False})
    job = api.wait_job(answer.json()["ID"])
    assert job["State"] == "Success", job
    assert job["Type"] == "DicomWebWadoRetrieveClient"
    in_series0 = {m["00080018"]["Value"][0] for m in meta if m["0020000E"]["Value"][0] == series[0]}
    assert set(job["Content"]["Instances"]) == in_series0 | {sop}
    assert job["Content"]["InstancesCount"] == len(in_series0) + 1
    assert job["Content"]["ReceivedInstancesCount"] == len(in_series0) + 1


def test_retrieve_bad_resources(api):
    for body, text in [
        ({"Resources": [{"Series": "1.2.3"}]}, '"Study" is required'),
        ({"Resources": [{"Study": "1.2.3", "Instance": "1.2.3.4"}]}, '"Series" is required'),
        ({"Resources": [{"Study": "not-a-uid"}]}, "not a DICOM UID"),
        ({"Resources": [{"Study": "1.2.3"}], "GetArguments": {"a": ["x"]}}, "GetArguments"),
    ]:
        answer = api.post("servers/ours/retrieve", body)
        assert answer.status_code == 400, (body, answer.text)
        assert text in answer.json()["message"]


def test_retrieve_of_unknown_study_is_502_with_remote_404(api):
    answer = api.post("servers/ours/retrieve", {"Resources": [{"Study": "1.2.3.4.5.6"}]})
    assert answer.status_code == 502
    body = answer.json()
    assert body["RemoteStatus"] == 404 and body["ErrorCode"] == 17
    assert body["Content"]["Instances"] == []


def test_async_retrieve_runs_to_completion_with_progress(api, data):
    study = data["big"]
    answer = api.post("servers/ours/retrieve", {"Resources": [{"Study": study.uid}], "Synchronous": False, "Debug": True})
    job_id = answer.json()["ID"]
    seen_progress = []
    job = api.wait_job(job_id, lambda j: seen_progress.append(j["Progress"]) or j["State"] in ("Success", "Failure"))
    assert job["State"] == "Success", job
    assert job["Progress"] == 100 and job["ErrorCode"] == 0
    assert any(0 < p < 100 for p in seen_progress)  # progress moved while it ran
    assert seen_progress == sorted(seen_progress)
    assert set(job["Content"]["Instances"]) == study.sops and job["Content"]["InstancesCount"] == len(study.sops)
    assert api.instances_of(study.uid) == study.sops
    listed = api.get("jobs").json()
    assert job_id in listed
    # Where Orthanc scripts look for them too: {server}/jobs/{id}.
    at_root = requests.get(f"{api.server.url}/jobs/{job_id}", timeout=30)
    assert at_root.status_code == 200 and at_root.json()["State"] == "Success"
    assert any(j["ID"] == job_id and j["State"] == "Success" for j in api.get("jobs?expand").json())


def test_cancel_a_running_and_a_pending_job(tmp_path, remote, data):
    server = start_standalone(tmp_path, None, "-c", "concurrent_jobs=1")
    try:
        api = Api(server)
        api.add_server("ours", remote.dicomweb_url)
        body = {"Resources": [{"Study": data["big"].uid}], "Synchronous": False, "Debug": True}
        running = api.post("servers/ours/retrieve", body).json()["ID"]
        pending = api.post("servers/ours/retrieve", body).json()["ID"]
        api.wait_job(running, lambda j: j["State"] == "Running" and j["Content"].get("ReceivedInstancesCount", 0) > 0)
        assert api.job(pending)["State"] == "Pending"
        assert api.post(f"jobs/{pending}/cancel", {}).json() == {}
        cancelled_pending = api.job(pending)
        assert cancelled_pending["State"] == "Failure" and cancelled_pending["ErrorCode"] == 37
        assert cancelled_pending["Cancelled"] is True
        assert api.post(f"jobs/{running}/cancel", {}).status_code == 200
        job = api.wait_job(running, timeout=10)
        assert job["State"] == "Failure" and job["ErrorCode"] == 37 and job["Cancelled"] is True
        received = set(job["Content"]["Instances"])
        assert 0 < len(received) < len(data["big"].sops)
        assert api.instances_of(data["big"].uid) == received  # what was stored is what the job says
        assert api.post(f"jobs/{running}/cancel", {}).status_code == 200  # cancelling a finished job: no-op
        assert api.post("jobs/00000000-0000-0000-0000-000000000000/cancel", {}).status_code == 404
        assert api.get("jobs/not-a-job").status_code == 404
    finally:
        server.stop()


def test_priority_orders_waiting_jobs(tmp_path, remote, data, orthanc):
    server = start_standalone(tmp_path, None, "-c", "concurrent_jobs=1")
    try:
        api = Api(server)
        api.add_server("ours", remote.dicomweb_url)
        blocker = api.post("servers/ours/retrieve", {"Resources": [data["big"].uid], "Synchronous": False,
                                                     "Debug": True}).json()["ID"]
        api.wait_job(blocker, lambda j: j["State"] == "Running")
        one = sorted(data["big"].files)[0].stem
        remote_store, _ = open_for_checking(remote)
        series = remote_store.instances(data["big"].uid, None, one)[0].series_uid
        remote_store.close()
        resource = {"Study": data["big"].uid, "Series": series, "Instance": one}
        low = api.post("servers/ours/retrieve", {"Resources": [resource], "Synchronous": False, "Priority": 1}).json()["ID"]
        high = api.post("servers/ours/retrieve", {"Resources": [resource], "Synchronous": False, "Priority": 9}).json()["ID"]
        api.post(f"jobs/{blocker}/cancel", {})
        low_job, high_job = api.wait_job(low), api.wait_job(high)
        assert low_job["State"] == high_job["State"] == "Success"
        assert high_job["CompletionTime"] < low_job["CompletionTime"]
    finally:
        server.stop()


def test_remote_killed_mid_retrieve_reports_what_was_stored(tmp_path):
    # 26 MB: well beyond what the sockets between the two servers buffer once the remote is gone.
    huge = make_study(tmp_path / "data", slices=200, size=256, patient="Huge^Remote")
    workdir = tmp_path / "victim"
    workdir.mkdir()
    import_study(workdir / "store", huge)
    victim = start_standalone(workdir)
    (tmp_path / "local").mkdir()
    server = start_standalone(tmp_path / "local")
    try:
        api = Api(server)
        api.add_server("victim", victim.dicomweb_url, Timeout=5)
        job_id = api.post("servers/victim/retrieve", {"Resources": [{"Study": huge.uid}], "Synchronous": False,
                                                      "Debug": True}).json()["ID"]
        api.wait_job(job_id, lambda j: j["Content"].get("ReceivedInstancesCount", 0) >= 5)
        victim.kill()
        job = api.wait_job(job_id, timeout=60)
        assert job["State"] == "Failure", job
        assert job["ErrorCode"] == 9  # Orthanc's "Error in the network protocol"
        assert "victim" in job["ErrorDescription"]
        stored = set(job["Content"]["Instances"])
        assert 5 <= len(stored) < len(huge.sops)
        assert api.instances_of(huge.uid) == stored
        assert not [p for p in staging_files(server.store_dir) if p.name.startswith("retrieve-")]  # no half-written part left
    finally:
        server.stop()
        victim.stop()


def test_broken_off_answer_in_a_synchronous_retrieve(api, tmp_path):
    study = make_study(tmp_path, slices=3, patient="Broken^Off")
    scripted, stop = start_scripted()
    try:
        files = sorted(study.files)
        scripted.routes["/studies/"] = lambda h: send_parts_then_break(h, [p.read_bytes() for p in files])
        api.add_server("breaks", scripted.url)
        answer = api.post("servers/breaks/retrieve", {"Resources": [study.uid]})
        assert answer.status_code == 502, answer.text
        body = answer.json()
        assert body["RemoteServer"] == "breaks"
        # Two parts were closed by the next delimiter; the third never was, so it is not stored.
        assert sorted(body["Content"]["Instances"]) == sorted(p.stem for p in files[:2])
        assert api.instances_of(study.uid) >= {p.stem for p in files[:2]}
        assert files[2].stem not in api.instances_of(study.uid)
        # Asked with transfer-syntax=* first (HasWadoRsUniversalTransferSyntax defaults to true).
        assert any("transfer-syntax=*" in r[2].get("Accept", "") for r in scripted.requests)
    finally:
        api.delete("servers/breaks")
        stop()


def test_retrieve_of_garbage_is_502(api):
    scripted, stop = start_scripted()
    try:
        scripted.routes["/studies/"] = lambda h: send(h, 200, "text/html", b"<html>please log in</html>")
        api.add_server("garbage", scripted.url, HasWadoRsUniversalTransferSyntax=False)
        answer = api.post("servers/garbage/retrieve", {"Resources": [{"Study": "1.2.3.4"}]})
        assert answer.status_code == 502
        assert "not DICOMweb" in answer.json()["message"] and "text/html" in answer.json()["message"]
        accepts = [r[2].get("Accept", "") for r in scripted.requests if r[1].startswith("/dicom-web/studies/1.2.3.4")
                   and "?" not in r[1]]
        assert accepts and all("transfer-syntax" not in a for a in accepts)
    finally:
        api.delete("servers/garbage")
        stop()


def test_restart_under_a_running_job_reports_it_failed(tmp_path, remote, data):
    server = start_standalone(tmp_path)
    try:
        api = Api(server)
        api.add_server("ours", remote.dicomweb_url)
        job_id = api.post("servers/ours/retrieve", {"Resources": [data["big"].uid], "Synchronous": False,
                                                    "Debug": True}).json()["ID"]
        api.wait_job(job_id, lambda j: j["State"] == "Running" and j["Content"].get("ReceivedInstancesCount", 0) > 0)
        # Until the job's record in the store holds some progress (saved at most once a second).
        store, _ = open_for_checking(server)
        try:
            deadline = time.monotonic() + 30
            while not store.load_jobs()[job_id].get("content", {}).get("Instances") and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            store.close()
        server.kill()  # kill -9: no chance to record anything
        server.start()
        job = Api(server).job(job_id)
        assert job["State"] == "Failure"
        assert job["ErrorDescription"] == "interrupted by a server restart"
        assert job["Content"]["RemoteServer"] == "ours"
        recorded = set(job["Content"]["Instances"])
        assert recorded and recorded <= api.instances_of(data["big"].uid)  # never claims what is not stored
        assert job_id in Api(server).get("jobs").json()
    finally:
        server.stop()


def test_credentials_headers_and_arguments_reach_the_remote(api, data, tmp_path):
    scripted, stop = start_scripted()
    study = make_study(tmp_path, slices=2, patient="Headers^Check")
    try:
        def stow_answer(handler):
            referenced = [{"00081155": {"vr": "UI", "Value": [sop]}} for sop in sorted(data["to_ours"].sops)]
            send(handler, 200, "application/dicom+json", json.dumps({"00081199": {"vr": "SQ", "Value": referenced}}).encode())

        scripted.routes["/studies/"] = lambda h: send_instances(h, [p.read_bytes() for p in study.files])
        scripted.routes["/studies"] = stow_answer
        api.add_server("checked", scripted.url, Username="proxy-user", Password="proxy-pass",
                       HttpHeaders={"X-Site": "lab-7"})
        sent = api.post("servers/checked/stow", {"Resources": [data["to_ours"].uid], "HttpHeaders": {"X-Trace": "t-1"}})
        assert sent.status_code == 200, sent.text
        got = api.post("servers/checked/retrieve", {"Resources": [study.uid], "GetArguments": {"x-hint": "a*b"},
                                                     "HttpHeaders": {"X-Trace": "t-2"}})
        assert got.status_code == 200, got.text
        assert sorted(got.json()) == sorted(study.sops)
        expected_auth = "Basic " + base64.b64encode(b"proxy-user:proxy-pass").decode()
        posts = [r for r in scripted.requests if r[0] == "POST"]
        gets = [r for r in scripted.requests if r[0] == "GET" and r[1].startswith(f"/dicom-web/studies/{study.uid}")]
        assert posts and gets
        for _method, _path, headers in posts + gets:
            assert headers["Authorization"] == expected_auth and headers["X-Site"] == "lab-7"
        assert posts[0][2]["X-Trace"] == "t-1" and gets[0][2]["X-Trace"] == "t-2"
        assert posts[0][2]["Content-Type"].startswith('multipart/related; type="application/dicom"')
        assert int(posts[0][2]["Content-Length"]) == len(scripted.bodies[0])  # never chunked
        assert all(data["to_ours"].by_sop()[sop] in scripted.bodies[0] for sop in data["to_ours"].sops)
        assert gets[0][1].endswith("?x-hint=a*b")  # encoded as the notebook client does: "*" as is
    finally:
        api.delete("servers/checked")
        stop()


def test_finished_jobs_beyond_the_history_are_forgotten(tmp_path):
    server = start_standalone(tmp_path, None, "-c", "jobs_history_size=2")
    try:
        api = Api(server)
        api.add_server("down", "http://127.0.0.1:9/dicom-web", Timeout=2)
        ids = []
        for _ in range(3):
            answer = api.post("servers/down/retrieve", {"Resources": ["1.2.3"], "Synchronous": False})
            ids.append(answer.json()["ID"])
            assert api.wait_job(ids[-1])["State"] == "Failure"
        assert api.get("jobs").json() == ids[1:]
        assert api.get(f"jobs/{ids[0]}").status_code == 404
        server.restart()
        assert Api(server).get("jobs").json() == ids[1:]  # as kept in the store
    finally:
        server.stop()

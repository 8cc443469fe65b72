"""DELETE of a study, series and instance (both mount points, every store backend): afterwards every
service answers 404 for what went and the rest is unchanged; a delete racing STOW-RS of the same
study, or a retrieve of it, leaves the store consistent and the retrieve whole; the blobs go once
their grace period is over."""

from __future__ import annotations

import io
import threading
import time

import pydicom
import pytest
import requests

from dicomweb_nb import samples
from dicomweb_nb.dicom.multipart import iter_parts
from dicomweb_nb.store.store import DELETED_BLOB_GRACE
from tests.fixtures.consistency import check_store_consistent, open_for_checking

from .conftest import qido, small_series, stow_datasets, unique_patient, value

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def two_series_study(patient: str):
    first = small_series(3, patient_id=patient, series_number=1)
    second = small_series(3, patient_id=patient, series_number=2, study_uid=first[0].StudyInstanceUID)
    return first, second


def get(server, path: str, **headers) -> requests.Response:
    return requests.get(f"{server.dicomweb_url}/{path}", headers={**server.headers, **headers}, timeout=60)


def delete(server, path: str) -> requests.Response:
    return requests.delete(f"{server.dicomweb_url}/{path}", headers=server.headers, timeout=60)


def reads_of(study: str, series: str | None = None, instance: str | None = None) -> dict[str, str]:
    """Every read service's URL for a resource, by name."""
    base = f"studies/{study}" + (f"/series/{series}" if series else "") + (f"/instances/{instance}" if instance else "")
    out = {"retrieve": base, "metadata": f"{base}/metadata", "rendered": f"{base}/rendered",
           "thumbnail": f"{base}/thumbnail", "bulkdata": f"{base}/bulkdata"}
    if instance:
        out.update({"frames": f"{base}/frames/1", "pixel bulk": f"{base}/bulk/7FE00010",
                    "frame rendered": f"{base}/frames/1/rendered"})
    return out


def assert_gone(server, study: str, series: str | None = None, instance: str | None = None) -> None:
    for name, path in reads_of(study, series, instance).items():
        answer = get(server, path, Accept="*/*")
        assert answer.status_code == 404, (name, path, answer.status_code, answer.text[:200])
        assert answer.json()["message"], name
    # Searches scoped to it find nothing (a search without matches is an empty answer, not a 404).
    scoped = [f"/studies/{study}/series", f"/studies/{study}/instances"] if not series else \
        [f"/studies/{study}/series/{series}/instances"] if not instance else []
    for path in scoped:
        answer = qido(server, path)
        assert answer.status_code in (200, 204) and (answer.status_code == 204 or answer.json() == []), (path, answer.text)
    if instance:
        wado = requests.get(server.url + "/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                                           "objectUID": instance}, headers=server.headers, timeout=60)
        assert wado.status_code == 404, wado.text
        assert qido(server, "/instances", {"SOPInstanceUID": instance}).json() == []
    elif series:
        assert qido(server, "/series", {"SeriesInstanceUID": series}).json() == []
    else:
        assert qido(server, "/studies", {"StudyInstanceUID": study}).json() == []


def snapshot(server, study: str) -> dict[str, bytes]:
    """What the read services say of a study that stays, to compare before and after."""
    out = {}
    for name, path in reads_of(study).items():
        answer = get(server, path, Accept="*/*")
        boundary = answer.headers["Content-Type"].partition("boundary=")[2].strip('"').encode()
        out[name] = answer.content.replace(boundary, b"") if boundary else answer.content  # new in every answer
    return out


def test_delete_at_each_level_then_every_service_is_404_for_it_and_the_rest_is_unchanged(server):
    patient = unique_patient("DEL")
    first, second = two_series_study(patient)
    other = small_series(2, patient_id=unique_patient("KEEP"))
    stow_datasets(server, first + second + other)
    study, s1, s2 = (str(x) for x in (first[0].StudyInstanceUID, first[0].SeriesInstanceUID, second[0].SeriesInstanceUID))
    kept_study = str(other[0].StudyInstanceUID)
    kept_before = snapshot(server, kept_study)

    # An instance.
    victim = str(first[0].SOPInstanceUID)
    answer = delete(server, f"studies/{study}/series/{s1}/instances/{victim}")
    assert (answer.status_code, answer.content) == (204, b"")
    assert_gone(server, study, s1, victim)
    [found] = qido(server, "/studies", {"StudyInstanceUID": study}).json()
    assert (value(found, "00201206"), value(found, "00201208")) == (2, 5)
    survivors = [value(m, "00080018") for m in get(server, f"studies/{study}/series/{s1}/metadata").json()]
    assert sorted(survivors) == sorted(str(ds.SOPInstanceUID) for ds in first[1:])
    assert get(server, f"studies/{study}/series/{s1}/instances/{first[1].SOPInstanceUID}/frames/1").status_code == 200
    assert delete(server, f"studies/{study}/series/{s1}/instances/{victim}").status_code == 404

    # A series.
    assert delete(server, f"studies/{study}/series/{s2}").status_code == 204
    assert_gone(server, study, s2)
    assert [value(s, "0020000E") for s in qido(server, f"/studies/{study}/series").json()] == [s1]

    # The study.
    assert delete(server, f"studies/{study}").status_code == 204
    assert_gone(server, study)
    assert qido(server, "/studies", {"PatientID": patient}).json() == []

    # The other study saw nothing of it.
    assert snapshot(server, kept_study) == kept_before
    retrieved = get(server, f"studies/{kept_study}", Accept='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert retrieved.status_code == 200 and retrieved.content.count(b"DICM") == 2

    # The change feed tells it: one delete per instance, in the order they went.
    latest = get(server, "changefeed/latest?includeMetadata=false").json()
    recent = get(server, f"changefeed?offset={latest['Sequence'] - 6}&includeMetadata=false").json()
    assert [(e["Action"], e["SeriesInstanceUid"], e["State"]) for e in recent] == \
        [("delete", s1, "deleted")] + [("delete", s2, "deleted")] * 3 + [("delete", s1, "deleted")] * 2


def test_delete_refusals_say_why(server):
    datasets, elsewhere = small_series(1), small_series(1)
    stow_datasets(server, datasets + elsewhere)
    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    answer = delete(server, "studies/1.2.3.4.5.6.7.8.9.999999")
    assert answer.status_code == 404 and "study 1.2.3.4.5.6.7.8.9.999999 is not in this store" in answer.json()["message"]
    answer = delete(server, f"studies/{study}/series/1.2.3.999")
    assert answer.status_code == 404 and "series 1.2.3.999" in answer.json()["message"]
    answer = delete(server, "studies/not-a-uid")
    assert answer.status_code == 400 and "not a valid DICOM UID" in answer.json()["message"]
    answer = delete(server, "studies")
    assert answer.status_code == 405 and "DELETE is not supported" in answer.json()["message"]
    answer = delete(server, f"studies/{study}/metadata")
    assert answer.status_code == 405
    # Other-study paths never delete what is not under them.
    answer = delete(server, f"studies/{elsewhere[0].StudyInstanceUID}/series/{series}")
    assert answer.status_code == 404 and "belongs to study" in answer.json()["message"]
    assert get(server, f"studies/{study}/metadata").status_code == 200


def test_a_delete_racing_stow_of_the_same_study_leaves_the_store_consistent(fresh_server):
    """One thread stores the instances of a study in batches while another deletes that study again
    and again: every answer is a success or a 404, and afterwards the index, the blobs and the
    counts agree, and QIDO-RS, WADO-RS and the change feed say the same."""
    patient = unique_patient("RACE")
    datasets = small_series(24, patient_id=patient)
    study = str(datasets[0].StudyInstanceUID)
    statuses: list[int] = []
    stop = threading.Event()

    def keep_deleting() -> None:
        while not stop.is_set():
            statuses.append(delete(fresh_server, f"studies/{study}").status_code)
            time.sleep(0.005)

    deleter = threading.Thread(target=keep_deleting)
    deleter.start()
    try:
        for start in range(0, 24, 3):
            stow_datasets(fresh_server, datasets[start:start + 3])
    finally:
        stop.set()
        deleter.join(timeout=60)
    assert statuses and set(statuses) <= {204, 404}
    counts = check_store_consistent(fresh_server)
    found = qido(fresh_server, "/instances", {"PatientID": patient}).json()
    assert len(found) == counts["instances"] <= 24
    if found:
        [row] = qido(fresh_server, "/studies", {"PatientID": patient}).json()
        assert value(row, "00201208") == len(found)
        retrieved = get(fresh_server, f"studies/{study}", Accept='multipart/related; type="application/dicom"')
        assert retrieved.content.count(b"DICM") == len(found)
    feed = get(fresh_server, "changefeed?limit=200&includeMetadata=false").json()
    current = {e["SopInstanceUid"] for e in feed if e["State"] == "current"}
    assert current == {value(i, "00080018") for i in found}
    assert [e["Sequence"] for e in feed] == list(range(1, len(feed) + 1))


def test_a_retrieve_under_way_finishes_whole_when_its_study_is_deleted(fresh_server):
    datasets = samples.generate_ct_series(40, rows=512, columns=512, patient_id=unique_patient("BUSY"))
    stow_datasets(fresh_server, datasets)
    study = str(datasets[0].StudyInstanceUID)
    answer = requests.get(f"{fresh_server.dicomweb_url}/studies/{study}", stream=True, timeout=120,
                          headers={**fresh_server.headers,
                                   "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert answer.status_code == 200
    chunks = answer.iter_content(1 << 16)
    head = next(chunks)  # the answer has begun; most of it is still on the server
    assert delete(fresh_server, f"studies/{study}").status_code == 204
    assert get(fresh_server, f"studies/{study}/metadata").status_code == 404
    boundary = answer.headers["Content-Type"].split("boundary=")[1].strip('"')
    parts = list(iter_parts(iter([head, *chunks]), boundary))
    received = {pydicom.dcmread(io.BytesIO(bytes(content))).SOPInstanceUID for _h, content in parts}
    assert received == {ds.SOPInstanceUID for ds in datasets}


def test_the_deleted_blobs_go_once_their_grace_is_over(fresh_server):
    datasets = small_series(3, patient_id=unique_patient("SWEEP"))
    stow_datasets(fresh_server, datasets)
    store, owned = open_for_checking(fresh_server)
    try:
        keys = [row.blob.key for row in store.instances(str(datasets[0].StudyInstanceUID))]
        assert delete(fresh_server, f"studies/{datasets[0].StudyInstanceUID}").status_code == 204
        assert all(store.blobs.exists(k) for k in keys)  # readable for reads under way ...
        check_store_consistent(store)
        store.sweep(now=time.time() + DELETED_BLOB_GRACE + 1)
        assert not any(store.blobs.exists(k) for k in keys)  # ... then gone
        assert check_store_consistent(store) == {"studies": 0, "series": 0, "instances": 0}
    finally:
        if owned:
            store.close()

"""STOW-RS over real HTTP with hand-built bodies, on both mount points (PS3.18 10.5)."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest
import requests

from dicomweb_nb import samples
from dicomweb_nb.dicom.dicomjson import xml_to_json
from tests.fixtures.backends import staging_files
from tests.fixtures.ourserver import start_standalone
from tests.fixtures.waiting import wait_until

from .conftest import (
    DICOM_MULTIPART,
    failed_items,
    multipart_body,
    qido,
    referenced_sops,
    small_series,
    stow,
    value,
)

FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_DATASET_DOES_NOT_MATCH = 0xA900
FAILURE_STUDY_UID_MISMATCH = 0xC409


def instances_of_patient(server, patient_id: str) -> list[str]:
    answer = qido(server, "/instances", {"PatientID": patient_id})
    assert answer.status_code == 200, answer.text
    return sorted(value(i, "00080018") for i in answer.json())


@pytest.mark.parametrize("boundary, quoted", [
    ("simple-boundary", False),
    ("simple-boundary", True),
    ("'+_-.", False),
    ("'()+_,-./:=? x", True),
    ("==?==", True),
    ("b", False),
])
def test_any_legal_boundary_quoted_or_not(server, boundary, quoted):
    datasets = small_series(2)
    body = multipart_body([samples.dataset_bytes(ds) for ds in datasets], boundary=boundary)
    b = f'"{boundary}"' if quoted else boundary
    answer = stow(server, body, f'multipart/related; type="application/dicom"; boundary={b}')
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/dicom+json")
    assert referenced_sops(answer.json()) == [ds.SOPInstanceUID for ds in datasets]
    assert "00081198" not in answer.json()
    assert instances_of_patient(server, datasets[0].PatientID) == sorted(ds.SOPInstanceUID for ds in datasets)


def test_type_parameter_unquoted_and_parameters_in_any_order(server):
    datasets = small_series(1)
    body = multipart_body([samples.dataset_bytes(datasets[0])], boundary="xyz")
    answer = stow(server, body, "Multipart/Related; boundary=xyz; type=application/dicom")
    assert answer.status_code == 200, answer.text


def test_response_items_and_retrieve_urls(server):
    datasets = small_series(2)
    answer = stow(server, multipart_body([samples.dataset_bytes(ds) for ds in datasets]))
    assert answer.status_code == 200
    body = answer.json()
    study_url = f"{server.dicomweb_url}/studies/{datasets[0].StudyInstanceUID}"
    assert body["00081190"] == {"vr": "UR", "Value": [study_url]}
    for item, ds in zip(body["00081199"]["Value"], datasets):
        assert item["00081150"] == {"vr": "UI", "Value": [ds.SOPClassUID]}
        assert item["00081155"] == {"vr": "UI", "Value": [ds.SOPInstanceUID]}
        url = value(item, "00081190")
        assert url == f"{study_url}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        # Absolute and right: it answers.
        got = requests.get(url, headers={**server.headers, "Accept": f"{DICOM_MULTIPART}; transfer-syntax=*"}, timeout=30)
        assert got.status_code == 200
        assert samples.dataset_bytes(ds) in got.content


def test_mixed_good_and_bad_parts(server):
    good = small_series(3)
    no_uids = copy.deepcopy(good[0])
    no_uids.SOPInstanceUID = "1.2.826.0.1.3680043.10.1082.999"
    del no_uids.StudyInstanceUID
    parts = [
        samples.dataset_bytes(good[0]),
        b"this is not DICOM\r\n" * 20,                          # not DICOM
        samples.dataset_bytes(good[1])[:-100],                  # truncated file
        samples.dataset_bytes(no_uids),                         # missing StudyInstanceUID
        ("text/plain", b"hello"),                               # not application/dicom
        samples.dataset_bytes(good[2]),
    ]
    answer = stow(server, multipart_body(parts))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert referenced_sops(body) == [good[0].SOPInstanceUID, good[2].SOPInstanceUID]
    failed = failed_items(body)
    reasons = sorted(value(f, "00081197") for f in failed)
    assert reasons == sorted([FAILURE_CANNOT_UNDERSTAND, FAILURE_CANNOT_UNDERSTAND, FAILURE_DATASET_DOES_NOT_MATCH,
                              FAILURE_CANNOT_UNDERSTAND])
    for f in failed:
        assert f["00081197"]["vr"] == "US"
        assert set(f) == {"00081150", "00081155", "00081197"}
    warnings = answer.headers.get("Warning", "")
    assert "part 2" in warnings and "part 3" in warnings and "truncated" in warnings and "part 5" in warnings
    assert instances_of_patient(server, good[0].PatientID) == sorted([good[0].SOPInstanceUID, good[2].SOPInstanceUID])


def test_study_uid_not_matching_the_url(server):
    mine = small_series(2)
    other = small_series(1)
    parts = [samples.dataset_bytes(ds) for ds in (mine[0], other[0], mine[1])]
    answer = stow(server, multipart_body(parts), study=mine[0].StudyInstanceUID)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert referenced_sops(body) == [mine[0].SOPInstanceUID, mine[1].SOPInstanceUID]
    [failed] = failed_items(body)
    assert failed["00081155"] == {"vr": "UI", "Value": [other[0].SOPInstanceUID]}
    assert failed["00081150"] == {"vr": "UI", "Value": [other[0].SOPClassUID]}
    assert value(failed, "00081197") == FAILURE_STUDY_UID_MISMATCH
    assert body["00081190"]["Value"] == [f"{server.dicomweb_url}/studies/{mine[0].StudyInstanceUID}"]
    assert instances_of_patient(server, other[0].PatientID) == []


def test_all_parts_bad_is_409(server):
    other = small_series(1)
    answer = stow(server, multipart_body([b"garbage" * 100, samples.dataset_bytes(other[0])]), study="1.2.3.4.5")
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert "00081199" not in body
    assert sorted(value(f, "00081197") for f in failed_items(body)) == sorted(
        [FAILURE_STUDY_UID_MISMATCH, FAILURE_CANNOT_UNDERSTAND]
    )
    assert instances_of_patient(server, other[0].PatientID) == []


def test_storing_again_replaces(server):
    [ds] = small_series(1)
    assert stow(server, multipart_body([samples.dataset_bytes(ds)])).status_code == 200
    changed = copy.deepcopy(ds)
    changed.StudyDescription = "Stored twice"
    assert stow(server, multipart_body([samples.dataset_bytes(changed)])).status_code == 200
    [study] = qido(server, "/studies", {"PatientID": ds.PatientID}).json()
    assert study["00081030"]["Value"] == ["Stored twice"]
    assert study["00201208"]["Value"] == [1]


def test_single_part10_body_as_application_dicom(server):
    [ds] = small_series(1)
    answer = stow(server, samples.dataset_bytes(ds), "application/dicom")
    assert answer.status_code == 200, answer.text
    assert referenced_sops(answer.json()) == [ds.SOPInstanceUID]


def test_xml_response(server):
    datasets = small_series(1)
    body = multipart_body([samples.dataset_bytes(datasets[0]), b"junk" * 10])
    answer = stow(server, body, headers={"Accept": "application/dicom+xml"})
    assert answer.status_code == 202
    assert answer.headers["Content-Type"].startswith("application/dicom+xml")
    root = ET.fromstring(answer.content)
    assert root.tag.endswith("NativeDicomModel")
    parsed = xml_to_json(answer.content)
    assert referenced_sops(parsed) == [datasets[0].SOPInstanceUID]
    assert [value(f, "00081197") for f in failed_items(parsed)] == [FAILURE_CANNOT_UNDERSTAND]
    assert value(parsed["00081199"]["Value"][0], "00081190").startswith(f"{server.dicomweb_url}/studies/")


def test_unacceptable_accept_is_406(server):
    answer = stow(server, multipart_body([samples.dataset_bytes(small_series(1)[0])]), headers={"Accept": "image/png"})
    assert answer.status_code == 406
    assert "application/dicom+json" in answer.json()["message"]


@pytest.mark.parametrize("content_type", [
    "text/plain",
    "multipart/form-data; boundary=x",
    'multipart/related; type="application/dicom+json"; boundary=x',
    'multipart/related; type="application/dicom+xml"; boundary=x',
    'multipart/related; type="image/jpeg"; boundary=x',
    "application/json",
    "",
])
def test_unsupported_content_type_is_415(server, content_type):
    body = multipart_body([samples.dataset_bytes(small_series(1)[0])], boundary="x")
    answer = stow(server, body, content_type or None, headers={} if content_type else {"Content-Type": ""})
    assert answer.status_code == 415, answer.text
    assert answer.json()["status"] == 415
    assert answer.json()["message"]


@pytest.mark.parametrize(
    "content_type, body, message",
    [
        ('multipart/related; type="application/dicom"', b"--x\r\n\r\nabc\r\n--x--", "no boundary"),
        ('multipart/related; type="application/dicom"; boundary=x', b"--x\r\n\r\nabc\r\n--x", "truncated"),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\nContent-Type: application/dicom\r\n\r\nabc",
            "truncated",
        ),
        ('multipart/related; type="application/dicom"; boundary=x', b"--x--\r\n", "no parts"),
        ('multipart/related; type="application/dicom"; boundary=x', b"", "no multipart boundary"),
        ('multipart/related; type="application/dicom"; boundary=x', b"--y\r\n\r\nabc\r\n--y--", "no multipart boundary"),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\nno colon\r\n\r\nabc\r\n--x--",
            "malformed multipart part header",
        ),
        ('multipart/related; type="application/dicom"; boundary="x', b"--x\r\n\r\nabc\r\n--x--", "malformed Content-Type"),
        ('multipart/related; type="application/dicom"; boundary=' + "x" * 201, b"--x\r\n\r\nabc\r\n--x--", "boundary"),
    ],
)
def test_malformed_body_is_400(server, content_type, body, message):
    answer = stow(server, body, content_type)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]


def test_no_leftovers_after_failures(server):
    before = set(staging_files(server.store_dir))
    stow(server, b"--x\r\n\r\nabc", 'multipart/related; type="application/dicom"; boundary=x')
    stow(server, multipart_body([b"junk"]))
    wait_until(lambda: set(staging_files(server.store_dir)) <= before, what="the staging folder holds no leftovers")


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory, store_backend):
    server = start_standalone(tmp_path_factory.mktemp("limit"), None, "-c", "max_upload_size=20000", backend=store_backend)
    yield server
    server.stop()


def test_over_max_upload_size_is_413(small_limit_server):
    datasets = small_series(20)
    body = multipart_body([samples.dataset_bytes(ds) for ds in datasets])
    assert len(body) > 20000
    answer = stow(small_limit_server, body)
    assert answer.status_code == 413
    assert "20000" in answer.json()["message"]

    def chunks():  # no Content-Length: chunked transfer, the limit applies as the body streams
        for start in range(0, len(body), 4096):
            yield body[start:start + 4096]

    answer = stow(small_limit_server, chunks())
    assert answer.status_code == 413
    assert instances_of_patient(small_limit_server, datasets[0].PatientID) == []
    # Under the limit it works, streamed or not.
    small = multipart_body([samples.dataset_bytes(datasets[0])])
    assert stow(small_limit_server, small).status_code == 200
    assert stow(small_limit_server, iter([small[:100], small[100:]])).status_code == 200
    assert not staging_files(small_limit_server.store_dir)


def test_stow_streams_a_body_in_tiny_chunks(server):
    datasets = small_series(3)
    body = multipart_body([samples.dataset_bytes(ds) for ds in datasets], boundary="tiny")
    answer = stow(server, (body[i:i + 7] for i in range(0, len(body), 7)), boundary="tiny")
    assert answer.status_code == 200, answer.text
    assert referenced_sops(answer.json()) == [ds.SOPInstanceUID for ds in datasets]


def test_every_pydicom_file_can_be_stowed(our_server):
    files = samples.pydicom_test_files()
    # Stored under their own UIDs (shared with other tests' view of our_server, but no other test uses them).
    answer = stow(our_server, multipart_body([f.read_bytes() for f in files]))
    assert answer.status_code == 200, answer.text[:2000]
    assert len(referenced_sops(answer.json())) == len(files)

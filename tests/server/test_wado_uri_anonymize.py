"""WADO-URI ``anonymize=yes`` (PS3.18 9.1.2.4): the object de-identified by the Basic Profile, on both mount points."""

from __future__ import annotations

import io

import pydicom
import requests

from dicomweb_nb import samples
from tests.fixtures.deid import check_profile, identified_dataset, leftover_identifiers
from tests.server.conftest import multipart_body, stow, unique_patient


def _wado(server) -> str:
    return server.dicomweb_url.rsplit("/dicom-web", 1)[0] + "/wado"


def _store(server, *datasets) -> None:
    answer = stow(server, multipart_body([samples.dataset_bytes(ds) for ds in datasets]))
    assert answer.status_code == 200, answer.text


def test_anonymize_yes_never_returns_an_identifying_attribute(server):
    original = identified_dataset(patient_id=unique_patient("SECRET"))
    _store(server, original)
    params = {"requestType": "WADO", "studyUID": original.StudyInstanceUID, "seriesUID": original.SeriesInstanceUID,
              "objectUID": original.SOPInstanceUID, "contentType": "application/dicom", "anonymize": "yes"}
    answer = requests.get(_wado(server), params=params, headers=server.headers, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/dicom")
    out = pydicom.dcmread(io.BytesIO(answer.content))
    stored = pydicom.dcmread(io.BytesIO(samples.dataset_bytes(original)))
    assert check_profile(stored, out) == 614
    assert leftover_identifiers(out) == []
    assert out.SOPInstanceUID in answer.headers["Content-Disposition"]
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert (out.pixel_array == stored.pixel_array).all()
    # Asked again, the object keeps its new UIDs (one key per server process).
    again = pydicom.dcmread(io.BytesIO(requests.get(_wado(server), params=params, headers=server.headers, timeout=60).content))
    assert (again.StudyInstanceUID, again.SOPInstanceUID) == (out.StudyInstanceUID, out.SOPInstanceUID)
    # Without anonymize the stored object comes back as it is.
    plain = requests.get(_wado(server), params={k: v for k, v in params.items() if k != "anonymize"},
                         headers=server.headers, timeout=60)
    assert plain.content == samples.dataset_bytes(original)


def test_anonymize_yes_refuses_objects_with_burned_in_annotation(server):
    image = samples.generate_ct_series(1, rows=16, columns=16, patient_id=unique_patient())[0]
    image.BurnedInAnnotation = "YES"
    _store(server, image)
    base = {"requestType": "WADO", "studyUID": image.StudyInstanceUID, "seriesUID": image.SeriesInstanceUID,
            "objectUID": image.SOPInstanceUID, "anonymize": "yes"}
    for content_type in ("application/dicom", "image/png"):
        answer = requests.get(_wado(server), params={**base, "contentType": content_type}, headers=server.headers, timeout=60)
        assert answer.status_code == 409, (content_type, answer.text)
        assert "burned" in answer.json()["message"].lower()


def test_anonymize_yes_on_a_rendering_of_a_clean_image(server):
    image = samples.generate_ct_series(1, rows=16, columns=16, patient_id=unique_patient())[0]
    image.BurnedInAnnotation = "NO"
    _store(server, image)
    answer = requests.get(_wado(server), params={"requestType": "WADO", "studyUID": image.StudyInstanceUID,
                                                 "seriesUID": image.SeriesInstanceUID, "objectUID": image.SOPInstanceUID,
                                                 "contentType": "image/png", "anonymize": "yes"},
                          headers=server.headers, timeout=60)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"

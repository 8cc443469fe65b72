"""Several values in one QIDO-RS parameter, on both mount points (PS3.18 8.3.4.1): never silently nothing.

A comma separates UIDs (the standard's UID list) and, as Orthanc and viewers do, values of
attributes that cannot hold a comma (CS, dates, numbers); a list that cannot be matched is refused
with 400; a comma in text is matched as text, with a Warning header saying so; the optional
emptyvaluematching / multiplevaluematching parameters are accepted and reported as not performed.
"""

from __future__ import annotations

import pytest

from dicomweb_nb import samples

from .conftest import multipart_body, qido, small_series, stow, unique_patient, value


@pytest.fixture
def studies(server):
    patient = unique_patient("LIST")
    ct = small_series(1, patient_id=patient, study_date="20200101", series_number=4)
    mr = small_series(1, patient_id=patient, study_date="20210202", modality="MR", series_number=6)
    us = small_series(1, patient_id=patient, study_date="20220303", modality="US", series_number=8)
    body = multipart_body([samples.dataset_bytes(ds) for ds in ct + mr + us])
    assert stow(server, body).status_code == 200
    return patient, {"CT": ct[0].StudyInstanceUID, "MR": mr[0].StudyInstanceUID, "US": us[0].StudyInstanceUID}


def found(server, path: str, params: dict) -> set[str]:
    answer = qido(server, path, params)
    assert answer.status_code == 200, answer.text
    return {value(obj, "0020000D") for obj in answer.json()} if answer.content.strip() else set()


@pytest.mark.parametrize("params, expected", [
    ({"ModalitiesInStudy": "CT,MR"}, {"CT", "MR"}),
    ({"ModalitiesInStudy": "US\\MR"}, {"US", "MR"}),
    ({"StudyDate": "20200101,20220303"}, {"CT", "US"}),
    ({"SeriesNumber": "4,8"}, {"CT", "US"}),
])
def test_a_comma_list_matches_any_value_where_no_value_can_hold_a_comma(server, studies, params, expected):
    patient, uid = studies
    path = "/series" if "SeriesNumber" in params else "/studies"
    assert found(server, path, {"PatientID": patient, **params}) == {uid[m] for m in expected}


def test_uid_lists(server, studies):
    _, uid = studies
    assert found(server, "/studies", {"StudyInstanceUID": f"{uid['CT']},{uid['US']}"}) == {uid["CT"], uid["US"]}


@pytest.mark.parametrize("params", [{"ModalitiesInStudy": "C*,MR"}, {"StudyDate": "20200101-20201231,20220303"}])
def test_a_list_that_cannot_be_matched_is_refused(server, studies, params):
    answer = qido(server, "/studies", params)
    assert answer.status_code == 400 and "ask once per" in answer.json()["message"]


def test_a_comma_in_text_is_text_and_the_answer_says_so(server, studies):
    patient, _ = studies
    answer = qido(server, "/studies", {"PatientID": f"{patient},OTHER"})
    assert answer.status_code == 200 and (not answer.content.strip() or answer.json() == [])
    assert "8.3.4.1" in answer.headers.get("Warning", "") and answer.headers["Warning"].startswith("299 ")


@pytest.mark.parametrize("name", ["emptyvaluematching", "multiplevaluematching"])
def test_optional_matching_parameters_are_reported_not_performed(server, studies, name):
    patient, uid = studies
    answer = qido(server, "/studies", {"PatientID": patient, name: "true"})
    assert answer.status_code == 200 and {value(o, "0020000D") for o in answer.json()} == set(uid.values())
    assert f"The {name} parameter is not supported" in answer.headers.get("Warning", "")

"""The same search gives the same rows, columns and dtypes from our server over HTTP, a real Orthanc and
the workspace store in-process: lists, empty answers, fuzzy names, case, windows."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import requests

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.client.client import METADATA_COLUMNS
from tests.fixtures.orthanc import OrthancProcess, orthanc_available
from tests.fixtures.ourserver import start_standalone
from tests.fixtures.peers import require_peer

SOURCES = ["ours", "orthanc", "local"]
pytestmark = pytest.mark.orthanc  # the clients fixture starts an Orthanc of its own, for every source


def _series(n, **kwargs):
    return samples.generate_ct_series(n, rows=8, columns=8, **kwargs)


def build_studies() -> dict[str, list]:
    """Five studies: one with CT and MR series, and patient IDs differing only in case."""
    one_ct = _series(2, patient_name="Alpha^One", patient_id="PA", study_date="20200101", series_number=1)
    one_mr = _series(2, patient_name="Alpha^One", patient_id="PA", study_date="20200101", modality="MR",
                     series_number=2, study_uid=one_ct[0].StudyInstanceUID)
    return {
        "one": one_ct + one_mr,
        "two": _series(1, patient_name="Beta^Two", patient_id="PB", study_date="20210202", modality="MR", series_number=3),
        "three": _series(3, patient_name="Gamma^Three", patient_id="PC", study_date="20220303", series_number=5),
        "four": _series(1, patient_name="Delta^Four", patient_id="pa", study_date="20230404", modality="US", series_number=7),
        "five": _series(1, patient_name="Doe, John", patient_id="PE", study_date="20240505", modality="MR", series_number=9),
    }


STUDIES = build_studies()
UID = {name: datasets[0].StudyInstanceUID for name, datasets in STUDIES.items()}
EVERY_DATASET = [ds for datasets in STUDIES.values() for ds in datasets]


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    """A client of each source, each holding exactly the studies above."""
    require_peer(orthanc_available(), "Orthanc with the DICOMweb plugin (Debian orthanc + orthanc-dicomweb)")
    orthanc = OrthancProcess(tmp_path_factory.mktemp("orthanc-same"))
    ours = start_standalone(tmp_path_factory.mktemp("ours-same"))
    made = {
        "ours": dw.connect(ours.dicomweb_url, progress=False),
        "orthanc": dw.connect(orthanc.dicomweb_url, progress=False),
        "local": dw.connect(store=tmp_path_factory.mktemp("local-same") / ".dicomweb", progress=False),
    }
    try:
        for client in made.values():
            assert (client.store(EVERY_DATASET)["status"] == "stored").all()
        yield made
    finally:
        for client in made.values():
            client.close()
        ours.stop()
        orthanc.stop()


@pytest.fixture(params=SOURCES)
def pacs(request, clients):
    return clients[request.param]


def test_why_lists_are_one_request_per_value(clients):
    """What Orthanc 1.10 (DICOMweb 1.7) makes of several values in one request, by attribute kind:
    it splits commas into an any-of list, which finds the right studies for codes, IDs, single dates
    and UIDs, but silently nothing for wildcards, and a wrong answer for a date range in the list;
    a backslash list finds nothing. Only UID lists are standard (PS3.18 8.3.4.1), so the client sends
    those alone as lists."""
    url = clients["orthanc"].url

    def orthanc(query: str) -> set[str]:
        answer = requests.get(f"{url}/studies?{query}", headers={"Accept": "application/dicom+json"}, timeout=30)
        answer.raise_for_status()
        names = {uid: name for name, uid in UID.items()}
        return {names[obj["0020000D"]["Value"][0]] for obj in answer.json()} if answer.content.strip() else set()

    assert orthanc("ModalitiesInStudy=US,CT") == {"one", "three", "four"}
    assert orthanc("PatientID=PA,PB") == {"one", "two", "four"}  # "pa" too: Orthanc ignores case
    assert orthanc(f"StudyInstanceUID={UID['two']},{UID['four']}") == {"two", "four"}
    assert orthanc("PatientName=Alpha*,Beta*") == set()
    assert orthanc("StudyDate=20200101-20200102,20210202") != {"one", "two"}
    assert orthanc("ModalitiesInStudy=US%5CCT") == set()


def studies_of(frame: pd.DataFrame) -> list[str]:
    names = {uid: name for name, uid in UID.items()}
    return [names[uid] for uid in frame.StudyInstanceUID]


# -- lists ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("filters, expected", [
    ({"ModalitiesInStudy": ["CT", "MR"]}, {"one", "two", "three", "five"}),
    ({"ModalitiesInStudy": "US\\MR"}, {"one", "two", "four", "five"}),
    ({"ModalitiesInStudy": "US,CT"}, {"one", "three", "four"}),
    ({"PatientID": ["PA", "PB"]}, {"one", "two"}),
    ({"PatientName": ["Alpha*", "Beta*"]}, {"one", "two"}),
    ({"PatientName": ["alpha^one", "Doe, John"]}, {"one", "five"}),
    ({"StudyDate": ["20200101", (dt.date(2022, 1, 1), dt.date(2022, 12, 31))]}, {"one", "three"}),
    ({"StudyDate": {dt.date(2021, 2, 2), dt.date(2023, 4, 4)}}, {"two", "four"}),
    ({"StudyInstanceUID": [UID["two"], UID["four"], "1.2.3.4"]}, {"two", "four"}),
    ({"StudyInstanceUID": [UID["three"]] + [f"1.2.826.0.1.3680043.10.1082.{n:030d}" for n in range(150)]}, {"three"}),
    ({"ModalitiesInStudy": ["CT", "MR"], "PatientID": ["PA", "PE"]}, {"one", "five"}),
    ({"ModalitiesInStudy": []}, set()),
])
def test_lists_match_any_value_on_every_source(pacs, filters, expected):
    found = pacs.studies(filters)
    assert set(studies_of(found)) == expected
    assert len(found) == len(set(found.StudyInstanceUID))


def test_series_and_instance_lists(pacs):
    series = pacs.series(Modality=["US", "MR"])
    assert sorted(series.SeriesNumber) == [2, 3, 7, 9]
    assert sorted(pacs.series(SeriesNumber=[1, 5]).Modality) == ["CT", "CT"]
    one = STUDIES["one"]
    instances = pacs.instances(one[0].StudyInstanceUID, SeriesInstanceUID=[one[0].SeriesInstanceUID, one[2].SeriesInstanceUID])
    assert sorted(instances.SOPInstanceUID) == sorted(ds.SOPInstanceUID for ds in one)


def test_merged_rows_follow_the_order_of_the_values_and_windows_apply_after_merging(pacs):
    everything = pacs.studies(ModalitiesInStudy=["MR", "CT"])
    names = studies_of(everything)
    assert sorted(names[:3]) == ["five", "one", "two"] and names[3] == "three"  # MR studies first, each once
    assert studies_of(pacs.studies(ModalitiesInStudy=["MR", "CT"], limit=2, offset=2)) == names[2:4]
    assert studies_of(pacs.studies(ModalitiesInStudy=["MR", "CT"], offset=3)) == names[3:]
    assert pacs.studies(ModalitiesInStudy=["MR", "CT"], limit=0).empty


# -- the standard's matching everywhere ------------------------------------------------------------

def test_text_matching_is_case_sensitive_everywhere(pacs):
    # Orthanc compares PatientID ignoring case (it finds "pa" for "PA"); the client keeps to PS3.4.
    assert studies_of(pacs.studies(PatientID="PA")) == ["one"]
    assert studies_of(pacs.studies(PatientID="pa")) == ["four"]
    assert studies_of(pacs.studies(PatientID="PA", limit=1)) == ["one"]


def test_person_names_ignore_case_and_fuzzy_matching_works_everywhere(pacs):
    assert studies_of(pacs.studies(PatientName="alpha*")) == ["one"]
    assert studies_of(pacs.studies(PatientName="Doe, John")) == ["five"]
    # Orthanc ignores fuzzymatching: the client matches fuzzily itself, as our server does.
    assert studies_of(pacs.studies(PatientName="one alp", fuzzy=True)) == ["one"]
    assert studies_of(pacs.studies(PatientName="john", fuzzy=True)) == ["five"]
    assert pacs.studies(PatientName="one alp").empty


def test_windows_are_taken_after_the_standard_matching(pacs):
    # Orthanc also finds "pa" for P*: every window must still be a slice of the standard's answer.
    full = studies_of(pacs.studies(PatientID="P*"))
    assert sorted(full) == ["five", "one", "three", "two"]
    for offset in range(5):
        for limit in (1, 2, 3):
            assert studies_of(pacs.studies(PatientID="P*", limit=limit, offset=offset)) == full[offset:offset + limit]


# -- empty answers ---------------------------------------------------------------------------------

def _pairs(pacs):
    one = STUDIES["one"]
    study, series = one[0].StudyInstanceUID, one[0].SeriesInstanceUID
    return [
        (lambda: pacs.studies(PatientID="PA"), lambda: pacs.studies(PatientName="NOBODY")),
        (lambda: pacs.studies(PatientID="PA", fields=["PatientAge", "StudyDescription"]),
         lambda: pacs.studies(PatientID="NOBODY", fields=["PatientAge", "StudyDescription"])),
        (lambda: pacs.series(study), lambda: pacs.series(study, Modality="XX")),
        (lambda: pacs.series(Modality="MR"), lambda: pacs.series(Modality="XX")),
        (lambda: pacs.instances(study, series), lambda: pacs.instances(study, series, InstanceNumber=999)),
        (lambda: pacs.instances(study), lambda: pacs.instances(study, SOPInstanceUID="1.2.3")),
        (lambda: pacs.instances(PatientID="PB"), lambda: pacs.instances(PatientID="NOBODY")),
    ]


@pytest.mark.parametrize("case", range(7))
def test_an_empty_answer_has_the_columns_and_dtypes_of_a_full_one(pacs, case):
    full_call, empty_call = _pairs(pacs)[case]
    full, empty = full_call(), empty_call()
    assert len(full) and empty.empty
    assert list(empty.columns) == list(full.columns)
    assert empty.dtypes.equals(full.dtypes), (empty.dtypes[empty.dtypes != full.dtypes], full.dtypes[empty.dtypes != full.dtypes])


def test_the_issue_example(pacs):
    nobody = pacs.studies(PatientName="NOBODY")[["PatientName", "StudyDate"]]
    assert nobody.empty and str(nobody.StudyDate.dtype) == "datetime64[us]"


def test_metadata_columns_are_there_with_or_without_rows(pacs):
    one = STUDIES["one"]
    meta = pacs.metadata(one[0].StudyInstanceUID, one[0].SeriesInstanceUID)
    empty = dw.to_dataframe([], columns=METADATA_COLUMNS)
    assert set(empty.columns) <= set(meta.columns)
    assert meta[list(empty.columns)].dtypes.equals(empty.dtypes)


def test_scoped_searches_carry_their_parents_attributes(pacs):
    one = STUDIES["one"]
    series = pacs.series(one[0].StudyInstanceUID)
    assert set(series.PatientID) == {"PA"} and set(series.StudyDate) == {pd.Timestamp("2020-01-01")}
    instances = pacs.instances(one[0].StudyInstanceUID, one[0].SeriesInstanceUID)
    assert set(instances.Modality) == {"CT"} and set(instances.PatientName) == {"Alpha^One"}

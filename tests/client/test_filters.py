"""Search filters as the client sends them: every Python value honoured or refused before any request."""

from __future__ import annotations

import datetime as dt
import warnings
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest

import dicomweb_nb as dw
from dicomweb_nb.client.qido import MAX_QUERIES, UID_LIST_CHARS, build_searches, wire_filters
from dicomweb_nb.dicom.query import parse_match


def queries(**keywords) -> list[list[tuple[str, str]]]:
    return build_searches("study", None, keywords).queries


def sent(scripted_server) -> list[dict[str, str]]:
    """The query parameters of every request the scripted server received."""
    return [dict(parse_qsl(urlsplit(path).query, keep_blank_values=True)) for _, path, _, _ in scripted_server.requests]


# -- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (dt.date(2020, 3, 5), "20200305"),
    (dt.datetime(2020, 3, 5, 10, 15, 30), "20200305"),  # a DA filter takes the day of a datetime
    (pd.Timestamp("2020-03-05 23:59"), "20200305"),
    (np.datetime64("2020-03-05"), "20200305"),
    ((dt.date(2020, 1, 1), None), "20200101-"),
    ((None, "20201231"), "-20201231"),
    ((dt.date(2020, 1, 1), dt.datetime(2020, 12, 31, 12)), "20200101-20201231"),
    ("2020-03-05", "2020-03-05"),
    (None, ""),
])
def test_dates(value, text):
    assert queries(StudyDate=value) == [[("StudyDate", text)]]


def test_times_and_datetimes_keep_their_precision():
    assert queries(StudyTime=dt.time(10, 15)) == [[("StudyTime", "101500")]]
    assert queries(StudyTime=dt.time(10, 15, 30, 250000)) == [[("StudyTime", "101530.250000")]]
    assert queries(StudyTime=dt.datetime(2020, 1, 1, 8, 30)) == [[("StudyTime", "083000")]]
    aware = dt.datetime(2020, 1, 1, 8, 30, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert queries(AcquisitionDateTime=aware) == [[("AcquisitionDateTime", "20200101083000.000005+0100")]]
    # A date for a date-time is that whole day, not its first microsecond.
    [[(_, text)]] = queries(AcquisitionDateTime=dt.date(2020, 1, 1))
    match = parse_match("AcquisitionDateTime", text)
    assert match.matches_value("20200101235959.5") and match.matches_value("20200101") and not match.matches_value("20200102")


def test_numbers():
    assert queries(SeriesNumber=np.int64(7)) == [[("SeriesNumber", "7")]]
    assert queries(SliceThickness=2.5) == [[("SliceThickness", "2.5")]]


@pytest.mark.parametrize("keywords, complaint", [
    ({"ModalitiesInStudy": "ct"}, "did you mean 'CT'"),
    ({"ModalitiesInStudy": ["CT", "mr"]}, "did you mean 'MR'"),
    ({"ModalitiesInStudy": ("CT", "MR")}, "ranges apply to dates and times only"),
    ({"StudyDate": (dt.date(2020, 1, 1), dt.date(2020, 2, 1), dt.date(2020, 3, 1))}, "(low, high) range"),
    ({"StudyDate": dt.time(10)}, "cannot be matched against a time"),
    ({"StudyTime": dt.date(2020, 1, 1)}, "cannot be matched against a date"),
    ({"StudyDate": pd.NaT}, "NaT"),
    ({"SeriesNumber": float("nan")}, "not a finite number"),
    ({"PatientName": True}, "True/False"),
    ({"PatientName": {"Alphabetic": "Doe"}}, "dict"),
    ({"PatientID": [["A", "B"]]}, "a list inside a list"),
    ({"StudyDate": "2020-13-45"}, "StudyDate"),
    ({"Offset": 3}, "offset="),
    ({"NoSuchKeyword": "x"}, "NoSuchKeyword"),
])
def test_values_no_dicom_server_could_read_are_refused_before_any_request(scripted_server, keywords, complaint):
    pacs = dw.connect(scripted_server.url, progress=False)
    with pytest.raises(dw.errors.InvalidFilter, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        pacs.studies(**keywords)
    assert scripted_server.requests == []


def test_tags_in_any_spelling_name_the_same_attribute():
    for key in ("00100010", 0x00100010, "(0010,0010)", "0010,0010", "PatientName"):
        assert build_searches("study", {key: "DOE*"}, {}).queries == [[("PatientName", "DOE*")]]
    with pytest.raises(dw.errors.InvalidFilter, match="given twice"):
        build_searches("study", {0x00100010: "A*"}, {"PatientName": "B*"})
    with pytest.raises(dw.errors.InvalidFilter, match="not a DICOM tag"):
        build_searches("study", {-1: "x"}, {})


# -- several values ---------------------------------------------------------------------------

def test_a_list_of_uids_is_one_request_and_other_lists_one_request_per_value():
    assert queries(StudyInstanceUID=["1.2", "1.3", "1.2"]) == [[("StudyInstanceUID", "1.2,1.3")]]
    assert queries(StudyInstanceUID="1.2\\1.3") == [[("StudyInstanceUID", "1.2,1.3")]]  # Orthanc drops backslashes
    assert queries(ModalitiesInStudy=["CT", "MR"]) == [[("ModalitiesInStudy", "CT")], [("ModalitiesInStudy", "MR")]]
    assert queries(ModalitiesInStudy="CT\\MR") == queries(ModalitiesInStudy="CT,MR") == queries(ModalitiesInStudy=["CT", "MR"])
    assert queries(ModalitiesInStudy={"MR", "CT"}) == queries(ModalitiesInStudy=["CT", "MR"])  # sets in a repeatable order
    assert queries(PatientID=pd.Series(["B", "A"])) == [[("PatientID", "B")], [("PatientID", "A")]]
    assert queries(PatientID="A,B") == [[("PatientID", "A,B")]]  # a comma is text in a LO value
    assert queries(StudyDate=["20200101", (dt.date(2021, 1, 1), None)]) == [[("StudyDate", "20200101")],
                                                                            [("StudyDate", "20210101-")]]
    two_by_two = queries(ModalitiesInStudy=["CT", "MR"], PatientName=["A*", "B*"])
    assert len(two_by_two) == 4 and ("PatientName", "B*") in two_by_two[1]


def test_long_uid_lists_are_split_to_fit_a_url():
    uids = [f"1.2.826.0.1.3680043.10.1082.{n:030d}" for n in range(200)]
    plan = queries(SeriesInstanceUID=uids)
    assert len(plan) > 1 and all(len(q[0][1]) <= UID_LIST_CHARS for q in plan)
    assert [u for q in plan for u in q[0][1].split(",")] == uids


def test_too_many_combinations_are_refused():
    with pytest.raises(dw.errors.InvalidFilter, match="requests"):
        queries(PatientID=[str(n) for n in range(MAX_QUERIES + 1)])


def test_an_empty_list_matches_nothing_without_asking(scripted_server):
    pacs = dw.connect(scripted_server.url, progress=False)
    found = pacs.studies(StudyInstanceUID=[], ModalitiesInStudy="CT")
    assert found.empty and "StudyInstanceUID" in found.columns
    assert pacs.series(Modality=np.array([], dtype=str)).empty
    assert scripted_server.requests == []


def _study(uid: str, modality: str) -> dict:
    return {"0020000D": {"vr": "UI", "Value": [uid]}, "00080061": {"vr": "CS", "Value": [modality]}}


def test_one_request_per_value_merged_in_order_without_duplicates(scripted_server):
    answer = {"Content-Type": "application/dicom+json"}
    scripted_server.script = [(200, answer, [_study("1.1", "MR"), _study("1.2", "MR")]),
                              (200, answer, [_study("1.2", "CT"), _study("1.3", "CT")])]
    pacs = dw.connect(scripted_server.url, progress=False)
    found = pacs.studies(ModalitiesInStudy=["MR", "CT"])
    assert found.StudyInstanceUID.tolist() == ["1.1", "1.2", "1.3"]
    assert [q["ModalitiesInStudy"] for q in sent(scripted_server)] == ["MR", "CT"]


def test_a_window_over_several_requests_asks_each_for_no_more_than_it_needs(scripted_server):
    answer = {"Content-Type": "application/dicom+json"}
    scripted_server.script = [(200, answer, [_study("1.1", "MR"), _study("1.2", "MR")]),
                              (200, answer, [_study("1.2", "CT"), _study("1.3", "CT")])]
    pacs = dw.connect(scripted_server.url, progress=False)
    found = pacs.studies(ModalitiesInStudy=["MR", "CT"], limit=1, offset=1)
    assert found.StudyInstanceUID.tolist() == ["1.2"]
    assert len(scripted_server.requests) == 1 and sent(scripted_server)[0]["limit"] == "2"


# -- what goes on the wire ------------------------------------------------------------------------

def test_fuzzy_names_are_sent_as_a_wildcard_and_matched_here():
    wire = wire_filters([("PatientName", "john doe"), ("PatientID", "X1")], "study", fuzzy=True)
    assert dict(wire.params) == {"PatientName": "*john*", "PatientID": "X1", "fuzzymatching": "true"}
    assert [m.vr for m in wire.supersets] == ["PN"] and wire.fields == ["PatientName"]
    name = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}, "00100020": {"vr": "LO", "Value": ["X1"]}}
    other = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Johnson^Mary"}]}, "00100020": {"vr": "LO", "Value": ["X1"]}}
    checks = wire.supersets + wire.exacts
    assert wire.check(name, checks) and not wire.check(other, checks)


def test_lower_level_attributes_are_sent_as_they_are_and_not_checked():
    # A study's answer shows one series' description, not necessarily the matching one's.
    wire = wire_filters([("SeriesDescription", "A^B"), ("PatientName", "Doe^J")], "study")
    assert dict(wire.params) == {"SeriesDescription": "A^B", "PatientName": "Doe?J"}
    assert [m.tag for m in wire.supersets] == [0x00100010] and wire.exacts == []


def test_server_warnings_become_python_warnings(scripted_server):
    scripted_server.script = [(200, {"Content-Type": "application/dicom+json",
                                     "Warning": '299 srv "The fuzzymatching parameter is not supported."'}, [])]
    pacs = dw.connect(scripted_server.url, progress=False)
    with pytest.warns(dw.errors.DicomWebWarning, match="fuzzymatching parameter is not supported"):
        pacs.studies(PatientName="x")


def test_the_additional_results_warning_asks_for_the_next_page(scripted_server):
    more = '299 srv "The number of results exceeded the maximum supported by the server. Additional results can be requested."'
    answer = {"Content-Type": "application/dicom+json"}
    scripted_server.script = [(200, {**answer, "Warning": more}, [_study("1.1", "CT")]), (200, answer, [_study("1.2", "CT")])]
    pacs = dw.connect(scripted_server.url, page_size=10, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pacs.studies().StudyInstanceUID.tolist() == ["1.1", "1.2"]


@pytest.mark.parametrize("bad", [True, -1, 1.5, "3"])
def test_limit_and_offset_must_be_counts(scripted_server, bad):
    pacs = dw.connect(scripted_server.url, progress=False)
    with pytest.raises(ValueError, match="limit"):
        pacs.studies(limit=bad)
    with pytest.raises(ValueError, match="offset"):
        pacs.studies(offset=bad)
    assert pacs.studies(limit=np.int64(2), offset=np.int32(0)).empty
    assert scripted_server.requests and scripted_server.requests[-1][1].count("limit=2") == 1


@pytest.mark.parametrize("scope", ["", "1.2/../3", 7, "1..2", ".5", "1.2."])
def test_a_scope_that_is_not_a_uid_is_refused(scripted_server, scope):
    pacs = dw.connect(scripted_server.url, progress=False)
    with pytest.raises(ValueError, match="study must be a UID"):
        pacs.series(scope)
    assert scripted_server.requests == []


# -- DataFrames with no rows ---------------------------------------------------------------------

def test_an_empty_answer_has_the_columns_and_dtypes_of_a_full_one(scripted_server):
    full = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}, "00080020": {"vr": "DA", "Value": ["20200101"]},
            "00080061": {"vr": "CS", "Value": ["CT"]}, "00201208": {"vr": "IS", "Value": [3]},
            "0020000D": {"vr": "UI", "Value": ["1.1"]}, "00081030": {"vr": "LO", "Value": ["Head"]}}
    scripted_server.script = [(200, {"Content-Type": "application/dicom+json"}, [full]),
                              (204, {}, b"")]
    pacs = dw.connect(scripted_server.url, progress=False)
    some = pacs.studies(PatientName="Doe^John", fields=["PatientAge"])
    none = pacs.studies(PatientName="NOBODY", fields=["PatientAge"])
    assert none.empty and list(none.columns) == list(some.columns)
    assert none.dtypes.equals(some.dtypes)
    assert none[["PatientName", "StudyDate", "PatientAge"]].empty
    assert str(none.StudyDate.dtype) == "datetime64[us]" and str(none.NumberOfStudyRelatedInstances.dtype) == "Int64"


def test_to_dataframe_columns_for_absent_attributes():
    frame = dw.to_dataframe([], columns=["PatientName", "00080020", 0x00200013, "ImagePositionPatient", "StudyTime"])
    assert list(frame.columns) == ["StudyDate", "StudyTime", "PatientName", "InstanceNumber", "ImagePositionPatient"]
    assert [str(t) for t in frame.dtypes] == ["datetime64[us]", "object", "string", "Int64", "object"]
    row = dw.to_dataframe([{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A"}]}}], columns=["StudyDate"])
    assert pd.isna(row.StudyDate[0]) and row.PatientName[0] == "A"


def test_store_results_have_the_same_dtypes_whatever_was_sent(tmp_path):
    pacs = dw.connect(store=tmp_path / "store", progress=False)
    (tmp_path / "notes.txt").write_text("not DICOM")
    nothing = pacs.store([])
    skipped = pacs.store([tmp_path / "notes.txt"])
    stored = pacs.store([_dataset()])
    assert list(nothing.columns) == list(skipped.columns) == list(stored.columns)
    assert nothing.dtypes.equals(stored.dtypes) and skipped.dtypes.equals(stored.dtypes)
    assert str(stored.batch.dtype) == "Int64" and stored.status.tolist() == ["stored"]


def _dataset():
    from dicomweb_nb import samples

    return samples.generate_ct_series(1, rows=8, columns=8)[0]


# -- other parameters that must not be silently ignored ----------------------------------------------

def test_a_quality_for_a_lossless_image_is_refused(scripted_server):
    pacs = dw.connect(scripted_server.url, progress=False)
    with pytest.raises(ValueError, match="quality applies to lossy images"):
        pacs.rendered("1.2", "1.3", "1.4", quality=80)  # PNG by default: the quality would be ignored
    with pytest.raises(ValueError, match="size"):
        pacs.thumbnail("1.2", size=0)
    assert scripted_server.requests == []


def test_fields_take_tags_too(scripted_server):
    pacs = dw.connect(scripted_server.url, progress=False)
    frame = pacs.studies(fields=[0x00101010, "(0008,1030)"])
    assert {"PatientAge", "StudyDescription"} <= set(frame.columns)
    assert "includefield=PatientAge,StudyDescription" in scripted_server.requests[0][1]


@pytest.mark.parametrize("page_size", [0, -5, True])
def test_a_page_size_that_is_not_a_count_is_refused_at_connect(scripted_server, page_size):
    with pytest.raises(ValueError, match="page_size"):
        dw.connect(scripted_server.url, page_size=page_size)

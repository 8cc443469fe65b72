"""QIDO-RS searches against a real Orthanc, checked against pydicom reading the stored files."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import dicomweb_nb as dw

pytestmark = pytest.mark.orthanc


def _studies_of(files, predicate=lambda ds: True) -> set[str]:
    return {str(f.ds.StudyInstanceUID) for f in files if predicate(f.ds)}


def test_all_studies_match_the_files(client, loaded_orthanc):
    _, files = loaded_orthanc
    df = client.studies()
    assert set(df.StudyInstanceUID) == _studies_of(files)
    assert len(df) == len(set(df.StudyInstanceUID))
    assert pd.api.types.is_string_dtype(df.PatientName.dtype)
    assert df.StudyDate.dtype == np.dtype("datetime64[us]")
    assert str(df.NumberOfStudyRelatedInstances.dtype) == "Int64"
    assert isinstance(df.attrs["dicom_json"][0], dict)


def test_values_equal_pydicom(client, loaded_orthanc):
    _, files = loaded_orthanc
    ct = next(f for f in files if f.path.name == "CT_small.dcm")
    row = client.studies(StudyInstanceUID=str(ct.ds.StudyInstanceUID)).iloc[0]
    assert row.PatientName == str(ct.ds.PatientName)
    assert row.PatientID == ct.ds.PatientID
    assert row.StudyDate == pd.Timestamp(dt.datetime.strptime(ct.ds.StudyDate, "%Y%m%d"))
    assert row.StudyTime == dt.time(int(ct.ds.StudyTime[:2]), int(ct.ds.StudyTime[2:4]), int(ct.ds.StudyTime[4:6]))
    inst = client.instances(str(ct.ds.StudyInstanceUID), str(ct.ds.SeriesInstanceUID),
                            fields=["ImagePositionPatient", "SliceThickness"]).iloc[0]
    assert inst.SOPInstanceUID == ct.ds.SOPInstanceUID
    assert inst.Rows == ct.ds.Rows and inst.Columns == ct.ds.Columns
    assert inst.ImagePositionPatient == [float(v) for v in ct.ds.ImagePositionPatient]
    assert inst.SliceThickness == float(ct.ds.SliceThickness)


def test_wildcard_and_person_name_with_caret(client, loaded_orthanc):
    _, files = loaded_orthanc
    expected = _studies_of(files, lambda ds: str(ds.get("PatientName", "")).lower().startswith("compressedsamples"))
    assert expected
    assert set(client.studies(PatientName="CompressedSamples*").StudyInstanceUID) == expected
    # "^" must be escaped in a URL, and Debian's Orthanc does not decode it: the client still finds the name.
    exact = _studies_of(files, lambda ds: str(ds.get("PatientName", "")) == "CompressedSamples^MR1")
    assert exact and set(client.studies(PatientName="CompressedSamples^MR1").StudyInstanceUID) == exact
    peters = _studies_of(files, lambda ds: str(ds.get("PatientName", "")) == "Doe^Peter")
    assert set(client.studies(PatientName="Doe^Peter").StudyInstanceUID) == peters


def test_date_range_tuple_and_text(client, loaded_orthanc):
    _, files = loaded_orthanc
    expected = _studies_of(files, lambda ds: "20000101" <= str(ds.get("StudyDate", "")) <= "20051231")
    assert set(client.studies(StudyDate="20000101-20051231").StudyInstanceUID) == expected
    assert set(client.studies(StudyDate=(dt.date(2000, 1, 1), dt.date(2005, 12, 31))).StudyInstanceUID) == expected


def test_tag_number_filters_and_uid_lists(client, loaded_orthanc):
    _, files = loaded_orthanc
    uids = sorted(_studies_of(files))[:3]
    by_tag = client.studies({"0020000D": uids})
    assert sorted(by_tag.StudyInstanceUID) == uids


def test_series_and_instances_levels(client, loaded_orthanc):
    _, files = loaded_orthanc
    ybr = next(f for f in files if f.path.name == "examples_ybr_color.dcm")
    study, series, sop = ybr.uids
    s = client.series(study)
    assert series in set(s.SeriesInstanceUID)
    assert s.set_index("SeriesInstanceUID").loc[series, "Modality"] == ybr.ds.Modality
    i = client.instances(study, series)
    assert i.SOPInstanceUID.tolist() == [sop]
    assert i.NumberOfFrames.tolist() == [int(ybr.ds.NumberOfFrames)]
    everywhere = client.instances(SOPInstanceUID=sop)
    assert everywhere.SOPInstanceUID.tolist() == [sop]


def test_limit_offset_and_automatic_paging(loaded_orthanc):
    orthanc, files = loaded_orthanc
    everything = set(_studies_of(files))
    with dw.connect(orthanc.dicomweb_url, page_size=4, progress=False) as small_pages:
        paged = small_pages.studies()
        assert sorted(paged.StudyInstanceUID) == sorted(everything)
        window = small_pages.studies(limit=5, offset=2)
        assert len(window) == 5
        assert set(window.StudyInstanceUID) <= everything
        assert small_pages.studies(limit=0).empty


def test_limit_with_locally_rechecked_filter(client, loaded_orthanc):
    _, files = loaded_orthanc
    peters = _studies_of(files, lambda ds: str(ds.get("PatientName", "")) == "Doe^Peter")
    assert len(peters) >= 2
    first = client.studies(PatientName="Doe^Peter", limit=1)
    rest = client.studies(PatientName="Doe^Peter", offset=1)
    assert len(first) == 1
    assert set(first.StudyInstanceUID) | set(rest.StudyInstanceUID) == peters


def test_fields_and_raw(client, loaded_orthanc):
    _, files = loaded_orthanc
    ct = next(f for f in files if f.path.name == "CT_small.dcm")
    raw = client.studies(StudyInstanceUID=str(ct.ds.StudyInstanceUID), fields="all", raw=True)
    assert isinstance(raw, list) and raw[0]["0020000D"]["Value"] == [str(ct.ds.StudyInstanceUID)]
    df = client.series(str(ct.ds.StudyInstanceUID), fields=["BodyPartExamined"], fuzzy=True)
    assert len(df) == 1

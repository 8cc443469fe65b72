"""to_dataframe: DICOM JSON to typed pandas columns."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from dicomweb_nb import to_dataframe

ROWS = [
    {
        "00080020": {"vr": "DA", "Value": ["20200315"]},
        "00080030": {"vr": "TM", "Value": ["101530.25"]},
        "0008002A": {"vr": "DT", "Value": ["20200315101530.123456+0100"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John", "Ideographic": "ド^ジョン"}]},
        "00200011": {"vr": "IS", "Value": [3]},
        "00180050": {"vr": "DS", "Value": [2.5]},
        "00200032": {"vr": "DS", "Value": [-10, "-20.5", 30.25]},
        "00280010": {"vr": "US", "Value": [512]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}}]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://x/bulk/7fe00010"},
        "00091001": {"vr": "LO", "Value": ["private"]},
    },
    {
        "00080020": {"vr": "DA", "Value": ["16000101"]},
        "00080061": {"vr": "CS", "Value": ["MR"]},
        "00100010": {"vr": "PN"},
        "00200011": {"vr": "IS", "Value": ["12"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.4"]},
        "00180050": {"vr": "DS"},
    },
]


def test_types_per_vr():
    df = to_dataframe(ROWS)
    assert df.StudyDate.dtype == np.dtype("datetime64[us]")
    assert df.StudyDate[0] == pd.Timestamp("2020-03-15")
    assert df.StudyDate[1] == pd.Timestamp("1600-01-01")  # outside pandas' nanosecond range, still a date
    assert df.StudyTime[0] == dt.time(10, 15, 30, 250000)
    assert pd.isna(df.StudyTime[1])
    assert df.AcquisitionDateTime[0] == pd.Timestamp("2020-03-15 10:15:30.123456")
    assert df.PatientName.tolist()[0] == "Doe^John=ド^ジョン"
    assert pd.isna(df.PatientName[1])
    assert pd.api.types.is_string_dtype(df.PatientName.dtype)
    assert str(df.SeriesNumber.dtype) == "Int64" and df.SeriesNumber.tolist() == [3, 12]
    assert df.SliceThickness.dtype == np.float64 and df.SliceThickness[0] == 2.5 and np.isnan(df.SliceThickness[1])
    assert str(df.Rows.dtype) == "Int64"
    assert pd.api.types.is_string_dtype(df.StudyInstanceUID.dtype)
    assert df.StudyInstanceUID.tolist() == ["1.2.3", "1.2.4"]


def test_multi_valued_attributes_are_lists_even_with_one_value():
    df = to_dataframe(ROWS)
    assert df.ModalitiesInStudy.tolist() == [["CT", "SR"], ["MR"]]
    assert df.ImagePositionPatient[0] == [-10.0, -20.5, 30.25]
    assert pd.isna(df.ImagePositionPatient[1])


def test_sequences_bulk_data_and_private_tags():
    df = to_dataframe(ROWS)
    assert df.ReferencedSeriesSequence[0] == [{"0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}}]
    assert df.PixelData[0] == "http://x/bulk/7fe00010"
    assert "00091001" in df.columns and df["00091001"][0] == "private"


def test_raw_json_is_kept_and_shared():
    df = to_dataframe(ROWS)
    assert df.attrs["dicom_json"][1] is ROWS[1]
    subset = df[df.SeriesNumber > 5]
    assert subset.attrs["dicom_json"] is df.attrs["dicom_json"]
    assert copy.deepcopy(df.attrs)["dicom_json"] is df.attrs["dicom_json"]


def test_columns_follow_tag_order_and_single_dataset_works():
    df = to_dataframe(ROWS[0])
    assert len(df) == 1
    assert list(df.columns)[:3] == ["StudyDate", "AcquisitionDateTime", "StudyTime"]


def test_empty_and_bad_input():
    assert to_dataframe([]).empty
    with pytest.raises(TypeError, match="item 0"):
        to_dataframe(["not a dict"])
    with pytest.raises(ValueError, match="NoSuchThing"):
        to_dataframe([{"NoSuchThing": {"vr": "PN"}}])
    with pytest.raises(ValueError, match="00100010"):
        to_dataframe([{"00100010": "Doe^John"}])

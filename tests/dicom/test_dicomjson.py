"""DICOM JSON and XML of every pydicom test file, checked against pydicom itself."""

from __future__ import annotations

import base64
import json
import warnings
import xml.etree.ElementTree as ET

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomweb_nb import samples
from dicomweb_nb.dicom.dicomjson import (
    BULK_PLACEHOLDER,
    absolutize_bulk_uris,
    dataset_to_json,
    dumps,
    first,
    json_to_xml,
    make_element,
    pn_text,
    value_texts,
    values,
    xml_to_json,
)
from tests.fixtures.metadata import (
    bundled_dicom_files,
    metadata_problems,
    pydicom_element_json,
)

FILES = samples.pydicom_test_files()
# pydicom's corpus holds deliberately invalid values; pydicom warns about each one.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ALL_FILES = bundled_dicom_files()


def read(path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def walk(obj, path=""):
    """Every (path, element) of a DICOM JSON object, sequence items included."""
    for key, elem in obj.items():
        yield f"{path}{key}", elem
        if elem.get("vr") == "SQ":
            for i, item in enumerate(elem.get("Value", [])):
                yield from walk(item, f"{path}{key}/{i}/")


def placeholder_uris(obj, path=""):
    """Every bulk data element must name itself by its own path."""
    return [where for where, elem in walk(obj, path)
            if "BulkDataURI" in elem and elem["BulkDataURI"] != f"{BULK_PLACEHOLDER}bulk/{where}"]


def test_the_corpus_is_there():
    assert len(FILES) > 50
    assert len(ALL_FILES) > len(FILES)  # DICOMDIRs and datasets without UIDs as well


@pytest.mark.parametrize("path", ALL_FILES, ids=[p.name for p in ALL_FILES])
def test_json_equals_pydicom_attribute_by_attribute(path):
    ds = read(path)
    ours = dataset_to_json(ds)
    assert metadata_problems(ds, ours) == []
    assert placeholder_uris(ours) == []
    json.loads(dumps(ours))  # serialisable, no NaN


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_pydicom_reads_our_json_back_to_the_same_values(path):
    ds = read(path)
    ours = dataset_to_json(ds)
    # Values pydicom itself cannot encode (badVR.dcm's IS "1A") are kept as text by us, and
    # pydicom cannot read them back either: leave those out.
    invalid = {f"{int(e.tag):08X}" for e in ds if e.VR != "SQ" and e.tag.group != 2 and pydicom_element_json(e) is None}
    readable = {k: v for k, v in ours.items() if k not in invalid}
    back = Dataset.from_json(readable, bulk_data_uri_handler=lambda tag, vr, uri: b"")

    def check(original: Dataset, restored: Dataset, json_obj: dict, where: str = "") -> None:
        for elem in original:
            key = f"{int(elem.tag):08X}"
            if elem.tag.group == 0x0002 or elem.tag.element == 0 or (not where and key in invalid):
                continue
            if "BulkDataURI" in json_obj[key]:
                assert restored[elem.tag].value in (b"", None), where + key
                continue
            got = restored[elem.tag]
            if elem.VR == "SQ":
                assert len(got.value) == len(elem.value), where + key
                for i, (a, b) in enumerate(zip(elem.value, got.value)):
                    check(a, b, json_obj[key]["Value"][i], f"{where}{key}/{i}/")
                continue
            assert got.VR == elem.VR, where + key
            assert got.value == elem.value, f"{where}{key}: {got.value!r} != {elem.value!r}"

    check(ds, back, ours)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_json_form_rules(path):
    ours = dataset_to_json(read(path))
    for where, elem in walk(ours):
        assert set(elem) <= {"vr", "Value", "BulkDataURI", "InlineBinary"}, where
        assert len(elem["vr"]) == 2 and elem["vr"].isupper(), where
        # PS3.18 F.2.5: an empty attribute has no Value at all, never an empty list.
        if "Value" in elem:
            assert elem["Value"], f"{where}: empty Value list"
        if elem["vr"] == "PN":
            for v in elem.get("Value", []):
                assert isinstance(v, dict) and set(v) <= {"Alphabetic", "Ideographic", "Phonetic"}, f"{where}: {v!r}"
        if "InlineBinary" in elem:
            base64.b64decode(elem["InlineBinary"], validate=True)
        assert not where.startswith("0002"), "file meta must not be in DICOM JSON"


def normalise_pn(obj):
    """Trailing empty PN components are insignificant; XML cannot carry them."""
    for _, elem in walk(obj):
        if elem.get("vr") == "PN":
            elem["Value"] = [{k: g.rstrip("^") for k, g in v.items()} for v in elem.get("Value", [])]
    return obj


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_xml_round_trip(path):
    ours = dataset_to_json(read(path))
    xml = json_to_xml(ours)
    root = ET.fromstring(xml)
    assert root.tag == "{http://dicom.nema.org/PS3.19/models/NativeDICOM}NativeDicomModel"
    assert normalise_pn(xml_to_json(xml)) == normalise_pn(json.loads(dumps(ours)))


def test_xml_keeps_carriage_returns_and_markup_characters():
    obj = {"0040A160": {"vr": "UT", "Value": ["a\rb\r\nc & <d> \"e\" 'f'"]}}
    assert xml_to_json(json_to_xml(obj)) == obj


def test_xml_structure_of_each_value_kind():
    obj = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John^^Dr", "Ideographic": "山田^太郎"}]},
        "00280030": {"vr": "DS", "Value": [0.5, 0.25]},
        "00200013": {"vr": "IS", "Value": [3]},
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", "", "AXIAL"]},
        "00081140": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}}, {}]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://x/bulk/7FE00010"},
        "00091010": {"vr": "OB", "InlineBinary": "AAEC"},
        "00081030": {"vr": "LO"},
    }
    xml = json_to_xml(obj)
    root = ET.fromstring(xml)
    ns = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
    attrs = {a.get("tag"): a for a in root.iter(f"{ns}DicomAttribute") if a.get("tag") in obj}
    assert attrs["00100010"].get("keyword") == "PatientName"
    assert "keyword" not in attrs["00091010"].attrib  # private: no keyword
    name = attrs["00100010"].find(f"{ns}PersonName")
    assert name.get("number") == "1"
    assert name.find(f"{ns}Alphabetic/{ns}FamilyName").text == "Doe"
    assert name.find(f"{ns}Alphabetic/{ns}GivenName").text == "John"
    assert name.find(f"{ns}Alphabetic/{ns}NamePrefix").text == "Dr"
    assert [v.text for v in attrs["00280030"].findall(f"{ns}Value")] == ["0.5", "0.25"]
    assert [v.get("number") for v in attrs["00280030"].findall(f"{ns}Value")] == ["1", "2"]
    assert attrs["7FE00010"].find(f"{ns}BulkData").get("uri") == "http://x/bulk/7FE00010"
    assert attrs["00091010"].find(f"{ns}InlineBinary").text == "AAEC"
    assert [i.get("number") for i in attrs["00081140"].findall(f"{ns}Item")] == ["1", "2"]
    assert list(attrs["00081030"]) == []
    assert xml_to_json(xml) == obj


def test_empty_values_omit_value_and_pn_is_an_object():
    assert make_element("LO", None) == {"vr": "LO"}
    assert make_element("LO", []) == {"vr": "LO"}
    assert make_element("LO", ["", None]) == {"vr": "LO"}
    assert make_element("PN", ["Doe^John=山田^太郎"]) == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Doe^John", "Ideographic": "山田^太郎"}],
    }
    assert make_element("PN", ["==やまだ"]) == {"vr": "PN", "Value": [{"Phonetic": "やまだ"}]}
    assert make_element("CS", ["CT", "MR"]) == {"vr": "CS", "Value": ["CT", "MR"]}
    ds = Dataset()
    ds.PatientName = ""
    ds.StudyDescription = None
    ds.ReferencedImageSequence = []
    ds.ReferringPhysicianName = "Doe^Jane"
    assert dataset_to_json(ds) == {
        "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00081030": {"vr": "LO"},
        "00081140": {"vr": "SQ"},
        "00100010": {"vr": "PN"},
    }


def test_pixel_data_is_always_bulk_and_small_binary_inline():
    ds = Dataset()
    ds.PixelData = b"\x00\x01"
    ds.add_new(0x00091010, "OB", b"\x01" * 10)
    ds.add_new(0x00091011, "OB", b"\x01" * 2000)
    seq_item = Dataset()
    seq_item.add_new(0x00091012, "OB", b"\x02" * 2000)
    ds.add_new(0x00091020, "SQ", [Dataset(), seq_item])
    obj = dataset_to_json(ds)
    assert obj["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{BULK_PLACEHOLDER}bulk/7FE00010"}
    assert obj["00091010"] == {"vr": "OB", "InlineBinary": base64.b64encode(b"\x01" * 10).decode()}
    assert obj["00091011"] == {"vr": "OB", "BulkDataURI": f"{BULK_PLACEHOLDER}bulk/00091011"}
    assert obj["00091020"]["Value"][1]["00091012"] == {"vr": "OB", "BulkDataURI": f"{BULK_PLACEHOLDER}bulk/00091020/1/00091012"}
    text = dumps(obj)
    absolute = json.loads(absolutize_bulk_uris(text, "http://h/dicom-web/studies/1/series/2/instances/3"))
    assert absolute["00091020"]["Value"][1]["00091012"]["BulkDataURI"] == \
        "http://h/dicom-web/studies/1/series/2/instances/3/bulk/00091020/1/00091012"
    spaced = json.loads(absolutize_bulk_uris(json.dumps(obj), "http://h/x/"))
    assert spaced["7FE00010"]["BulkDataURI"] == "http://h/x/bulk/7FE00010"


def test_placeholder_text_inside_a_value_is_not_rewritten():
    obj = {"00081030": {"vr": "LO", "Value": [f'"BulkDataURI":"{BULK_PLACEHOLDER}bulk/x"']}}
    assert json.loads(absolutize_bulk_uris(dumps(obj), "http://h")) == obj


def test_nan_values_stay_valid_json():
    ds = Dataset()
    ds.add_new(0x00189089, "FD", [float("nan"), 1.0])  # DiffusionGradientOrientation
    obj = dataset_to_json(ds)
    json.loads(dumps(obj))
    assert obj["00189089"]["Value"][1] == 1.0


def test_value_helpers():
    obj = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B", "Phonetic": "a^b"}]},
           "00200011": {"vr": "IS", "Value": [3.0]}, "00081030": {"vr": "LO"}}
    assert values(obj, "PatientName") == [{"Alphabetic": "A^B", "Phonetic": "a^b"}]
    assert first(obj, "00200011") == 3.0
    assert first(obj, "StudyDescription", "none") == "none"
    assert value_texts(obj["00100010"]) == ["A^B==a^b"]
    assert value_texts(obj["00200011"]) == ["3"]
    assert pn_text({"Alphabetic": "A", "Ideographic": "", "Phonetic": ""}) == "A"
    assert pn_text(None) == ""

"""QIDO-RS over real HTTP (PS3.18 10.6): exact values against pydicom, every matching kind, paging,
media types, errors, and RetrieveURL behind base_url and reverse proxies."""

from __future__ import annotations

import warnings
from collections import defaultdict

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from dicomweb_nb import samples
from dicomweb_nb.dicom.dicomjson import xml_to_json
from dicomweb_nb.dicom.multipart import iter_parts
from dicomweb_nb.dicom.tags import INSTANCE_RETURN_KEYWORDS, SERIES_RETURN_KEYWORDS, STUDY_RETURN_KEYWORDS, parse_tag
from dicomweb_nb.store import import_paths
from tests.fixtures.backends import open_store
from tests.fixtures.ourserver import start_standalone

from .conftest import multipart_body, qido, small_series, stow, value

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'
PYDICOM_FILES = samples.pydicom_test_files()


def tag(keyword: str) -> str:
    return f"{parse_tag(keyword):08X}"


def read(path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


# -- the store every test here searches: pydicom's files plus three generated studies ------------

def _request_attributes(sps_id: str, rp_id: str) -> Dataset:
    item = Dataset()
    item.ScheduledProcedureStepID = sps_id
    item.RequestedProcedureID = rp_id
    return item


def build_studies():
    """Studies with known values; returns {name: [datasets]}."""
    a_ct = samples.generate_ct_series(3, rows=8, columns=8, patient_name="Doe^John", patient_id="QA-1",
                                      study_date="20200115", series_number=1, series_description="A CT")
    a_mr = samples.generate_ct_series(2, rows=8, columns=8, patient_name="Doe^John", patient_id="QA-1",
                                      study_date="20200115", study_uid=a_ct[0].StudyInstanceUID, modality="MR",
                                      series_number=2, series_description="A MR")
    for i, ds in enumerate(a_ct + a_mr):
        ds.PatientComments = "allergic to contrast"
        ds.SliceThickness = ["2.50", "2.5", "3", "1.25", "1.25"][i]
    for ds in a_ct:
        ds.ManufacturerModelName = "ScannerX"
        ds.RequestAttributesSequence = [_request_attributes("SPS-A", "RP-A"), _request_attributes("SPS-A2", "RP-A2")]
    ref = Dataset()
    ref.ReferencedSOPClassUID = a_ct[0].SOPClassUID
    ref.ReferencedSOPInstanceUID = a_ct[0].SOPInstanceUID
    a_ct[1].ReferencedImageSequence = [ref]
    b = samples.generate_ct_series(2, rows=8, columns=8, patient_name="Müller^Jürgen=ミュラー^ユルゲン", patient_id="QA-2",
                                   study_date="20210620", series_description="B CT")
    for ds in b:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyTime = "233000"
        ds.StudyDescription = "Knee [left] 50%"
        ds.AccessionNumber = "ACC-B"
    c = samples.generate_ct_series(1, rows=8, columns=8, patient_name="doe^jane", patient_id="QA-3",
                                   study_date="20191231", modality="OT", series_description="C OT")
    c[0].StudyTime = "080000"
    return {"A_CT": a_ct, "A_MR": a_mr, "B": b, "C": c}


@pytest.fixture(scope="module")
def studies():
    return build_studies()


@pytest.fixture(scope="module")
def qido_store(tmp_path_factory, studies, store_backend):
    root = tmp_path_factory.mktemp("qido")
    written = samples.write_series([ds for group in studies.values() for ds in group], root / "generated")
    store = open_store(root / "store", store_backend)
    report = import_paths(store, [*PYDICOM_FILES, *written], progress=False)
    assert report.skipped == []
    store.close()
    return root


@pytest.fixture(scope="module")
def qs(qido_store, store_backend):
    """Our standalone server on the QIDO store."""
    server = start_standalone(qido_store, qido_store / "store", backend=store_backend)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capped(qido_store, tmp_path_factory, store_backend):
    """A second server on the same store: case-sensitive PN, at most 5 results without a limit."""
    server = start_standalone(tmp_path_factory.mktemp("capped"), qido_store / "store",
                              "-c", "qido_max_results=5", "-c", "qido_case_sensitive=true", backend=store_backend)
    yield server
    server.stop()


def get(server, path="/studies", params=None, headers=None, status=200):
    answer = qido(server, path, params, headers)
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    return answer


def uids(answer, keyword) -> list[str]:
    return [value(item, tag(keyword)) for item in answer.json()]


def qa(server, path, **params) -> list[dict]:
    """A search restricted to the generated studies."""
    params.setdefault("PatientID", "QA-*")
    return get(server, path, params).json()


def qa_uids(server, path, keyword, **params) -> set[str]:
    return {value(item, tag(keyword)) for item in qa(server, path, **params)}


# -- exact values against pydicom --------------------------------------------------------------------

def pydicom_json(elem):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return elem.to_json_dict(bulk_data_element_handler=lambda e: "BULK", bulk_data_threshold=1024)
        except Exception:  # noqa: BLE001 - invalid values: compared as text below
            return None


def without_bulk(elem: dict) -> dict:
    """A search answer carries no bulk data, not even inside sequences; an empty sequence has no
    Value (PS3.18 F.2.5; pydicom writes an empty list)."""
    if elem.get("vr") == "SQ" and elem.get("Value") == []:
        return {"vr": "SQ"}
    if elem.get("vr") == "SQ" and elem.get("Value"):
        return {**elem, "Value": [{k: without_bulk(v) for k, v in item.items() if "BulkDataURI" not in v}
                                  for item in elem["Value"]]}
    return elem


def test_instance_attributes_equal_pydicom_for_every_file(qs):
    assert len(PYDICOM_FILES) > 50
    for path in PYDICOM_FILES:
        ds = read(path)
        [item] = get(qs, "/instances", {"SOPInstanceUID": ds.SOPInstanceUID, "includefield": "all"}).json()
        for elem in ds:
            key = f"{int(elem.tag):08X}"
            if elem.tag.group == 0x0002 or key == "FFFCFFFC":
                continue
            if elem.tag.element == 0:  # group lengths are left out of DICOM JSON (as Orthanc does)
                assert key not in item, f"{path.name} {key}: group length in a QIDO answer"
                continue
            theirs = pydicom_json(elem)
            if theirs is None or "BulkDataURI" in theirs or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW"):
                assert key not in item or "BulkDataURI" not in item[key], f"{path.name} {key}: bulk data in a QIDO answer"
                continue
            if key in ("00081190",):
                continue
            theirs = without_bulk(theirs)
            assert item.get(key) == theirs, f"{path.name} {key}: {item.get(key)} != pydicom {theirs}"
        for keyword in INSTANCE_RETURN_KEYWORDS:
            assert tag(keyword) in item, f"{path.name}: {keyword} missing"
        assert item[tag("InstanceAvailability")] == {"vr": "CS", "Value": ["ONLINE"]}
        assert value(item, "00081190") == (f"{qs.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/"
                                           f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")


def test_study_and_series_aggregates_equal_what_the_files_say(qs, studies):
    by_study: dict[str, list[Dataset]] = defaultdict(list)
    for path in PYDICOM_FILES:
        ds = read(path)
        by_study[ds.StudyInstanceUID].append(ds)
    for group in studies.values():
        for ds in group:
            by_study[ds.StudyInstanceUID].append(ds)
    answer = get(qs, "/studies", {"includefield": "SOPClassesInStudy"}).json()
    assert sorted(value(s, tag("StudyInstanceUID")) for s in answer) == sorted(by_study)
    for study in answer:
        members = by_study[value(study, tag("StudyInstanceUID"))]
        assert study[tag("NumberOfStudyRelatedInstances")] == {"vr": "IS", "Value": [len(members)]}
        assert study[tag("NumberOfStudyRelatedSeries")] == {"vr": "IS", "Value": [len({m.SeriesInstanceUID for m in members})]}
        modalities = sorted({m.Modality for m in members if m.get("Modality")})
        assert study[tag("ModalitiesInStudy")] == ({"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"})
        assert study[tag("SOPClassesInStudy")] == {"vr": "UI", "Value": sorted({m.SOPClassUID for m in members})}
        for keyword in STUDY_RETURN_KEYWORDS:
            assert tag(keyword) in study, keyword
        # Study-level values are those of one of its instances, exactly.
        for keyword in ("PatientID", "StudyDate", "AccessionNumber", "StudyDescription"):
            candidates = [pydicom_json(m[keyword]) if keyword in m else {"vr": study[tag(keyword)]["vr"]} for m in members]
            assert study[tag(keyword)] in candidates, (keyword, study[tag(keyword)], candidates)
    series_answer = get(qs, "/series").json()
    by_series = defaultdict(list)
    for members in by_study.values():
        for m in members:
            by_series[m.SeriesInstanceUID].append(m)
    assert sorted(value(s, tag("SeriesInstanceUID")) for s in series_answer) == sorted(by_series)
    for series in series_answer:
        members = by_series[value(series, tag("SeriesInstanceUID"))]
        assert series[tag("NumberOfSeriesRelatedInstances")] == {"vr": "IS", "Value": [len(members)]}
        assert value(series, tag("StudyInstanceUID")) == members[0].StudyInstanceUID
        for keyword in SERIES_RETURN_KEYWORDS + STUDY_RETURN_KEYWORDS:  # unscoped: parent level too
            assert tag(keyword) in series, keyword


# -- levels and scoped URLs ----------------------------------------------------------------------------

def test_levels_and_scoped_urls(qs, studies):
    a = studies["A_CT"][0].StudyInstanceUID
    ct = studies["A_CT"][0].SeriesInstanceUID
    a_sops = [ds.SOPInstanceUID for ds in studies["A_CT"] + studies["A_MR"]]
    assert uids(get(qs, f"/studies/{a}/series"), "SeriesInstanceUID") == [ct, studies["A_MR"][0].SeriesInstanceUID]
    assert uids(get(qs, f"/studies/{a}/instances"), "SOPInstanceUID") == a_sops
    assert uids(get(qs, f"/studies/{a}/series/{ct}/instances"), "SOPInstanceUID") == a_sops[:3]
    scoped_series = get(qs, f"/studies/{a}/series").json()[0]
    unscoped_series = get(qs, "/series", {"SeriesInstanceUID": ct}).json()[0]
    # Scoped by the study in the URL: the study's attributes are not repeated (PS3.18 10.6.3.3).
    assert tag("PatientName") not in scoped_series and tag("PatientName") in unscoped_series
    assert scoped_series[tag("StudyInstanceUID")]["Value"] == [a]
    scoped_instance = get(qs, f"/studies/{a}/series/{ct}/instances").json()[0]
    assert tag("Modality") not in scoped_instance and tag("SeriesInstanceUID") in scoped_instance
    unscoped_instance = get(qs, "/instances", {"SOPInstanceUID": a_sops[0]}).json()[0]
    assert unscoped_instance[tag("Modality")] == {"vr": "CS", "Value": ["CT"]}
    assert unscoped_instance[tag("PatientName")] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    # Matching keys still work inside a scope.
    assert uids(get(qs, f"/studies/{a}/instances", {"InstanceNumber": "1"}), "SOPInstanceUID") == [a_sops[0], a_sops[3]]
    assert uids(get(qs, f"/studies/{a}/series", {"Modality": "MR"}), "SeriesInstanceUID") == [
        studies["A_MR"][0].SeriesInstanceUID
    ]


def test_unknown_or_mismatched_parents_match_nothing(qs, studies):
    # The URL scope is a matching key (as in Orthanc and dcm4chee): no such study or series, no matches.
    a = studies["A_CT"][0].StudyInstanceUID
    assert get(qs, "/studies/1.2.3.999/series").json() == []
    assert get(qs, "/studies/1.2.3.999/instances").json() == []
    assert get(qs, f"/studies/{a}/series/1.2.3.998/instances").json() == []
    other_series = studies["B"][0].SeriesInstanceUID
    assert get(qs, f"/studies/{a}/series/{other_series}/instances").json() == []


def test_no_match_is_an_empty_list(qs):
    answer = get(qs, "/studies", {"PatientID": "NOBODY"})
    assert answer.json() == []


# -- matching over HTTP -------------------------------------------------------------------------------

def test_every_matching_kind(qs, studies):
    A, B, C = (studies[k][0].StudyInstanceUID for k in ("A_CT", "B", "C"))
    s = lambda **p: qa_uids(qs, "/studies", "StudyInstanceUID", **p)  # noqa: E731
    # single value, case-insensitive PN, wildcards
    assert s(PatientName="Doe^John") == {A}
    assert s(PatientName="doe^john") == {A}
    assert s(PatientName="DOE*") == {A, C}
    assert s(PatientName="d?e^j*") == {A, C}
    assert s(PatientID="QA-2") == {B}
    assert s(PatientID="QA-?") == {A, B, C}
    # PN component groups and non-ASCII values (sent percent-encoded UTF-8)
    assert s(PatientName="Müller^Jürgen") == {B}
    assert s(PatientName="ミュラー*") == {B}
    assert s(PatientName="müller*") == {B}
    # UID lists, comma and backslash
    assert s(StudyInstanceUID=f"{A},{C}") == {A, C}
    assert s(StudyInstanceUID=f"{B}\\{C}") == {B, C}
    # dates and times, ranges with open ends
    assert s(StudyDate="20200115") == {A}
    assert s(StudyDate="20200101-20201231") == {A}
    assert s(StudyDate="20200101-") == {A, B}
    assert s(StudyDate="-20200101") == {C}
    assert s(StudyDate="2020-01-15") == {A}
    assert s(StudyTime="2300-2359") == {B}
    assert s(StudyTime="-0900") == {C}
    assert s(StudyDate="20191231-20200115", StudyTime="1000-") == {A}
    # literal brackets and percent signs; '?' wildcard on them
    assert s(StudyDescription="Knee [left]*") == {B}
    assert s(StudyDescription="Knee ?left? 50%") == {B}
    assert s(StudyDescription="Knee [l]*") == set()
    # computed attributes
    assert s(ModalitiesInStudy="MR") == {A}
    assert s(ModalitiesInStudy="CT") == {A, B}
    assert s(NumberOfStudyRelatedInstances="5") == {A}
    # lower-level attributes at the study level: some series / instance must match
    assert s(Modality="OT") == {C}
    assert s(SeriesDescription="A M*") == {A}
    assert s(SOPInstanceUID=studies["B"][1].SOPInstanceUID) == {B}
    # fuzzy matching
    assert s(PatientName="john", fuzzymatching="true") == {A}
    assert s(PatientName="john") == set()


def test_matching_on_attributes_that_are_not_indexed(qs, studies):
    A = studies["A_CT"][0].StudyInstanceUID
    ct_series = studies["A_CT"][0].SeriesInstanceUID
    # study level (patient comments), series level (model name), instance level (slice thickness)
    assert qa_uids(qs, "/studies", "StudyInstanceUID", PatientComments="*contrast*") == {A}
    assert qa_uids(qs, "/studies", "StudyInstanceUID", ManufacturerModelName="ScannerX") == {A}
    assert qa_uids(qs, "/series", "SeriesInstanceUID", ManufacturerModelName="Scanner?") == {ct_series}
    sops = [ds.SOPInstanceUID for ds in studies["A_CT"] + studies["A_MR"]]
    # numeric canonical equality: "2.50" and "2.5" are the same DS value
    assert qa_uids(qs, "/instances", "SOPInstanceUID", SliceThickness="2.5", PatientID="QA-1") == {sops[0], sops[1]}
    assert qa_uids(qs, "/instances", "SOPInstanceUID", SliceThickness="1.250") == {sops[3], sops[4]}
    assert qa_uids(qs, "/studies", "StudyInstanceUID", SliceThickness="3.0") == {A}
    assert qa_uids(qs, "/studies", "StudyInstanceUID", SliceThickness="2.5") == {A, studies["B"][0].StudyInstanceUID,
                                                                                 studies["C"][0].StudyInstanceUID}
    # The matched attribute is returned.
    [item] = qa(qs, "/instances", SliceThickness="3", PatientID="QA-1")
    assert item[tag("SliceThickness")] == {"vr": "DS", "Value": [3]}


def test_matching_in_sequences(qs, studies):
    A = studies["A_CT"][0].StudyInstanceUID
    ct_series = studies["A_CT"][0].SeriesInstanceUID
    key = "RequestAttributesSequence.ScheduledProcedureStepID"
    assert qa_uids(qs, "/series", "SeriesInstanceUID", **{key: "SPS-A2"}) == {ct_series}
    assert qa_uids(qs, "/studies", "StudyInstanceUID", **{key: "SPS-A*"}) == {A}
    assert qa_uids(qs, "/series", "SeriesInstanceUID", **{"00400275.00401001": "RP-A"}) == {ct_series}
    assert qa_uids(qs, "/series", "SeriesInstanceUID", **{key: "SPS-B"}) == set()
    referenced = studies["A_CT"][0].SOPInstanceUID
    assert qa_uids(qs, "/instances", "SOPInstanceUID", **{"ReferencedImageSequence.ReferencedSOPInstanceUID": referenced}) == \
        {studies["A_CT"][1].SOPInstanceUID}
    [series] = qa(qs, "/series", **{key: "SPS-A2"})
    # RequestAttributesSequence is a required series return attribute; it comes back whole.
    items = series[tag("RequestAttributesSequence")]["Value"]
    assert [value(i, tag("ScheduledProcedureStepID")) for i in items] == ["SPS-A", "SPS-A2"]


def test_case_sensitive_pn_configuration(capped, studies):
    A = studies["A_CT"][0].StudyInstanceUID
    assert uids(get(capped, "/studies", {"PatientName": "Doe^John"}), "StudyInstanceUID") == [A]
    assert get(capped, "/studies", {"PatientName": "doe^john"}).json() == []
    # fuzzy matching is case-insensitive whatever the configuration
    assert uids(get(capped, "/studies", {"PatientName": "JOHN", "fuzzymatching": "true"}), "StudyInstanceUID") == [A]


# -- includefield ---------------------------------------------------------------------------------------

def test_includefield_keyword_tag_all_and_encoded_lists(qs, studies):
    A = studies["A_CT"][0].StudyInstanceUID
    [plain] = qa(qs, "/studies", PatientID="QA-1")
    assert tag("PatientComments") not in plain and tag("SOPClassesInStudy") not in plain
    [by_keyword] = qa(qs, "/studies", PatientID="QA-1", includefield="PatientComments")
    assert by_keyword[tag("PatientComments")] == {"vr": "LT", "Value": ["allergic to contrast"]}
    [by_tag] = qa(qs, "/studies", PatientID="QA-1", includefield="00104000")
    assert by_tag[tag("PatientComments")] == by_keyword[tag("PatientComments")]
    [everything] = qa(qs, "/studies", PatientID="QA-1", includefield="all")
    assert everything[tag("PatientComments")] == by_keyword[tag("PatientComments")]
    assert everything[tag("PatientBirthDate")] == {"vr": "DA", "Value": ["19700101"]}
    assert tag("Rows") not in everything  # instance attributes are not study attributes
    # A comma list percent-encoded in the URL is split after decoding.
    raw = requests.get(f"{qs.dicomweb_url}/studies?PatientID=QA-1&includefield=00104000%2CSOPClassesInStudy%2c00080005",
                       timeout=30)
    [item] = raw.json()
    assert item[tag("PatientComments")] == by_keyword[tag("PatientComments")]
    assert item[tag("SOPClassesInStudy")] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"]}
    # Instance attributes asked at a higher level come from an instance of it.
    [series] = qa(qs, f"/studies/{A}/series", Modality="CT", includefield="SliceThickness,ImageType")
    assert tag("SliceThickness") in series
    [instance] = qa(qs, "/instances", SOPInstanceUID=studies["A_CT"][0].SOPInstanceUID, includefield="all")
    assert instance[tag("ImagePositionPatient")]["Value"] == [float(v) for v in studies["A_CT"][0].ImagePositionPatient]
    assert tag("PixelData") not in instance


# -- paging, ordering, limits ------------------------------------------------------------------------

WARNING_TEXT = "The number of results exceeded the maximum supported by the server"


def test_limit_offset_and_the_warning_header(qs, studies):
    everything = get(qs, "/instances", {"PatientID": "QA-*"})
    all_sops = uids(everything, "SOPInstanceUID")
    assert len(all_sops) == 8 and "Warning" not in everything.headers
    first = get(qs, "/instances", {"PatientID": "QA-*", "limit": "3"})
    assert uids(first, "SOPInstanceUID") == all_sops[:3]
    assert WARNING_TEXT in first.headers["Warning"] and first.headers["Warning"].startswith("299 ")
    pages = []
    for offset in range(0, 8, 3):
        page = get(qs, "/instances", {"PatientID": "QA-*", "limit": "3", "offset": str(offset)})
        pages += uids(page, "SOPInstanceUID")
        assert ("Warning" in page.headers) == (offset + 3 < 8)
    assert pages == all_sops
    assert get(qs, "/instances", {"PatientID": "QA-*", "offset": "6"}).json() == everything.json()[6:]
    assert get(qs, "/instances", {"PatientID": "QA-*", "offset": "100"}).json() == []
    zero = get(qs, "/instances", {"PatientID": "QA-*", "limit": "0"})
    assert zero.json() == [] and WARNING_TEXT in zero.headers["Warning"]


def test_stable_ordering(qs, studies):
    first = get(qs, "/instances").json()
    again = get(qs, "/instances").json()
    assert first == again
    # Studies in the order they were stored, series by SeriesNumber, instances by InstanceNumber.
    a_sops = [ds.SOPInstanceUID for ds in studies["A_CT"] + studies["A_MR"]]
    order = [value(i, tag("SOPInstanceUID")) for i in first]
    assert [s for s in order if s in a_sops] == a_sops


def test_server_result_cap(capped):
    capped_answer = get(capped, "/instances")
    assert len(capped_answer.json()) == 5
    assert WARNING_TEXT in capped_answer.headers["Warning"]
    assert len(get(capped, "/instances", {"limit": "7"}).json()) == 7  # a client's limit is honoured
    small = get(capped, "/studies", {"PatientID": "QA-1"})
    assert len(small.json()) == 1 and "Warning" not in small.headers


# -- media types ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("accept, content_type", [
    (None, "application/dicom+json"),
    ("application/dicom+json", "application/dicom+json"),
    ("application/json", "application/json"),
    ("*/*", "application/dicom+json"),
    ("application/dicom+json;q=0, */*", "application/json"),
    ("text/html, application/*;q=0.1", "application/dicom+json"),
])
def test_json_media_types(qs, accept, content_type):
    answer = get(qs, "/studies", {"PatientID": "QA-1"}, headers={"Accept": accept} if accept else {})
    assert answer.headers["Content-Type"].split(";")[0] == content_type
    assert len(answer.json()) == 1


@pytest.mark.parametrize("accept", [XML_MULTIPART, "multipart/related; type=application/dicom+xml", "multipart/related"])
def test_multipart_xml_equals_json(qs, accept):
    as_json = get(qs, "/series", {"PatientID": "QA-*"}).json()
    answer = get(qs, "/series", {"PatientID": "QA-*"}, headers={"Accept": accept})
    ctype = answer.headers["Content-Type"]
    assert ctype.startswith(XML_MULTIPART)
    boundary = ctype.split("boundary=")[1].split(";")[0].strip('"')
    parts = list(iter_parts([answer.content], boundary))
    assert [h["content-type"] for h, _ in parts] == ["application/dicom+xml"] * len(as_json)
    assert [xml_to_json(content) for _, content in parts] == as_json


def test_xml_accept_parameter_overrides_the_header(qs):
    answer = get(qs, "/studies", {"PatientID": "QA-1", "accept": XML_MULTIPART}, headers={"Accept": "application/json"})
    assert answer.headers["Content-Type"].startswith(XML_MULTIPART)


@pytest.mark.parametrize(
    "accept",
    ["image/png", "text/html", 'multipart/related; type="application/dicom"', "application/dicom+json;q=0, application/json;q=0"],
)
def test_unsupported_accept_is_406(qs, accept):
    answer = get(qs, "/studies", headers={"Accept": accept}, status=406)
    assert "application/dicom+json" in answer.json()["message"]


def test_malformed_accept_is_400(qs):
    assert "Accept" in get(qs, "/studies", headers={"Accept": "text/html;q=abc"}, status=400).json()["message"]


# -- bad queries: 400 naming what is wrong, never 500 ---------------------------------------------

@pytest.mark.parametrize("query, named", [
    ("NoSuchKeyword=1", "NoSuchKeyword"),
    ("PatientNam=Doe", "PatientNam"),
    ("StudyDate=20200101-20190101", "StudyDate"),
    ("StudyDate=2020-13-45", "StudyDate"),
    ("StudyDate=yesterday", "StudyDate"),
    ("StudyTime=2500", "StudyTime"),
    ("limit=ten", "limit"),
    ("limit=-1", "limit"),
    ("limit=1e3", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
    ("includefield=Bogus", "includefield"),
    ("includefield=00081030%2CBogus", "includefield"),
    ("StudyInstanceUID=1.2.x", "StudyInstanceUID"),
    ("SeriesNumber=two", "SeriesNumber"),
    ("fuzzymatching=perhaps", "fuzzymatching"),
    ("PatientName=A&PatientName=B", "PatientName"),
    ("RequestAttributesSequence=x", "RequestAttributesSequence"),
    ("PatientName.FamilyName=x", "PatientName"),
    ("orderby=PatientName", "orderby"),
    ("PatientName=%FF%FE", "UTF-8"),
])
def test_bad_queries_are_400_naming_the_problem(qs, query, named):
    answer = requests.get(f"{qs.dicomweb_url}/studies?{query}", timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    message = answer.json()["message"]
    assert named in message, message


@pytest.mark.parametrize("level", ["/studies", "/series", "/instances"])
@pytest.mark.parametrize("query", [
    "", "&&&", "=x", "x", "PatientName=", "PatientName=%00", "PatientName=" + "A" * 5000, "StudyDate=",
    "PatientName=%ZZ", "00100010=*", "0010,0010=x", "limit=99999999999999999999", "includefield=", "includefield=,,",
    "Rows=1%5C2", "StudyDate=-", "AcquisitionDateTime=2020-", "PatientName=*%5B*", "StudyDescription=%5B", "SOPInstanceUID=",
    "NumberOfFrames=1.5", "ModalitiesInStudy=CT%5CMR", "PixelData=x", "7FE00010=", "PatientName=**", "PatientName=%2A",
])
def test_odd_queries_never_give_500(qs, level, query):
    answer = requests.get(f"{qs.dicomweb_url}{level}?{query}", timeout=30)
    assert answer.status_code in (200, 400), f"{answer.status_code}: {answer.text[:300]}"
    if answer.status_code == 400:
        assert answer.json()["message"]
    else:
        assert isinstance(answer.json(), list)


# -- RetrieveURL behind base_url and proxies -------------------------------------------------------

def test_retrieve_urls_behind_jupyter_base_url(jupyter_dicomweb):
    datasets = small_series(2)
    assert stow(jupyter_dicomweb, multipart_body([samples.dataset_bytes(ds) for ds in datasets])).status_code == 200
    study_uid = datasets[0].StudyInstanceUID
    assert "/a%40b/dicom-web" in jupyter_dicomweb.dicomweb_url
    [study] = get(jupyter_dicomweb, "/studies", {"PatientID": datasets[0].PatientID}).json()
    assert value(study, "00081190") == f"{jupyter_dicomweb.dicomweb_url}/studies/{study_uid}"
    [series] = get(jupyter_dicomweb, f"/studies/{study_uid}/series").json()
    assert (
        value(series, "00081190") == f"{jupyter_dicomweb.dicomweb_url}/studies/{study_uid}/series/{datasets[0].SeriesInstanceUID}"
    )
    instances = get(jupyter_dicomweb, "/instances", {"PatientID": datasets[0].PatientID}).json()
    for item, ds in zip(instances, datasets):
        url = value(item, "00081190")
        assert url == f"{series['00081190']['Value'][0]}/instances/{ds.SOPInstanceUID}"
        assert (
            requests.get(url, headers={**jupyter_dicomweb.headers, "Accept": "application/dicom"}, timeout=30).status_code == 200
        )


@pytest.mark.parametrize("headers, root", [
    ({"Forwarded": "proto=https;host=pacs.example.org"}, "https://pacs.example.org/dicom-web"),
    ({"Forwarded": 'for=10.0.0.1;proto=https;host="pacs.example.org:8443", for=10.0.0.2;host=inner'},
     "https://pacs.example.org:8443/dicom-web"),
    ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example"}, "https://proxy.example/dicom-web"),
    ({"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "proxy.example:8443, inner:1"},
     "https://proxy.example:8443/dicom-web"),
    ({"X-Forwarded-Host": "proxy.example", "X-Forwarded-Port": "8080"}, "http://proxy.example:8080/dicom-web"),
    ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example", "X-Forwarded-Port": "443"}, "https://proxy.example/dicom-web"),
    ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example", "X-Forwarded-Prefix": "/hub/user/ann/"},
     "https://proxy.example/hub/user/ann/dicom-web"),
])
def test_retrieve_urls_behind_a_reverse_proxy(qs, studies, headers, root):
    A = studies["A_CT"][0].StudyInstanceUID
    [study] = get(qs, "/studies", {"PatientID": "QA-1"}, headers=headers).json()
    assert value(study, "00081190") == f"{root}/studies/{A}"
    [instance] = get(qs, f"/studies/{A}/series/{studies['A_CT'][0].SeriesInstanceUID}/instances",
                     {"InstanceNumber": "1"}, headers=headers).json()
    assert (
        value(instance, "00081190")
        == f"{root}/studies/{A}/series/{studies['A_CT'][0].SeriesInstanceUID}/instances/{studies['A_CT'][0].SOPInstanceUID}"
    )


def test_stow_retrieve_urls_behind_a_reverse_proxy(our_server):
    datasets = small_series(1)
    answer = stow(our_server, multipart_body([samples.dataset_bytes(datasets[0])]),
                  headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example", "X-Forwarded-Prefix": "/p"})
    assert answer.status_code == 200
    item = answer.json()["00081199"]["Value"][0]
    assert value(item, "00081190").startswith(f"https://proxy.example/p/dicom-web/studies/{datasets[0].StudyInstanceUID}/series/")


def test_qido_on_the_jupyter_mount(jupyter_dicomweb):
    datasets = small_series(3, patient_name="Jupyter^Pat")
    assert stow(jupyter_dicomweb, multipart_body([samples.dataset_bytes(ds) for ds in datasets])).status_code == 200
    pid = datasets[0].PatientID
    assert uids(get(jupyter_dicomweb, "/studies", {"PatientName": "jupyter*", "PatientID": pid}), "StudyInstanceUID") == [
        datasets[0].StudyInstanceUID
    ]
    page = get(jupyter_dicomweb, "/instances", {"PatientID": pid, "limit": "2"})
    assert len(page.json()) == 2 and WARNING_TEXT in page.headers["Warning"]
    assert "NoSuchKeyword" in get(jupyter_dicomweb, "/studies", {"NoSuchKeyword": "x"}, status=400).json()["message"]
    get(jupyter_dicomweb, "/studies", headers={"Accept": "image/png"}, status=406)
    raw = requests.get(f"{jupyter_dicomweb.dicomweb_url}/studies?PatientID={pid}&includefield=00081030%2C00100040",
                       headers=jupyter_dicomweb.headers, timeout=30)
    assert raw.status_code == 200 and raw.json()[0][tag("PatientSex")] == {"vr": "CS", "Value": ["O"]}

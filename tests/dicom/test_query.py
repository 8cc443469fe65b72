"""QIDO-RS query semantics: parsing into a typed Query and matching DICOM JSON (PS3.4 C.2.2.2)."""

from __future__ import annotations

import pytest

from dicomweb_nb.dicom.query import (
    MAX_LIMIT,
    QueryError,
    normalize_date,
    normalize_datetime,
    normalize_time,
    parse_attribute_path,
    parse_match,
    parse_query,
)
from dicomweb_nb.dicom.tags import parse_tag

# A DICOM JSON instance as the store keeps it.
INSTANCE = {
    "00080020": {"vr": "DA", "Value": ["20200315"]},
    "00080030": {"vr": "TM", "Value": ["101530.25"]},
    "0008002A": {"vr": "DT", "Value": ["20200315101530.250000+0100"]},
    "00080060": {"vr": "CS", "Value": ["CT"]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]},
    "00081030": {"vr": "LO", "Value": ["Chest [contrast] 50% *draft?"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]},
    "00100020": {"vr": "LO", "Value": ["PID-001"]},
    "00080090": {"vr": "PN"},
    "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
    "00200011": {"vr": "IS", "Value": [7]},
    "00180050": {"vr": "DS", "Value": [2.5]},
    "00280010": {"vr": "US", "Value": [512]},
    "00280030": {"vr": "DS", "Value": [0.5, 0.75]},
    "00400100": {"vr": "SQ", "Value": [
        {"00400009": {"vr": "SH", "Value": ["SPS-1"]}, "00321060": {"vr": "LO", "Value": ["Head"]}},
        {"00400009": {"vr": "SH", "Value": ["SPS-2"]},
         "00400008": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["CODE9"]}}]}},
    ]},
}


def matches(key: str, value: str, obj=INSTANCE, **kwargs) -> bool:
    return parse_match(key, value).matches(obj, **kwargs)


# -- parsing -------------------------------------------------------------------------------------

def test_keyword_and_tag_forms_are_the_same_key():
    by_keyword = parse_match("PatientName", "Doe")
    by_tag = parse_match("00100010", "Doe")
    assert by_keyword.path == by_tag.path == (0x00100010,)
    assert by_keyword.key == by_tag.key == "00100010"
    assert parse_match("00100010", "x").vr == "PN"
    assert parse_match("0010001a", "x").path == (0x0010001A,)


def test_single_value_kind():
    m = parse_match("PatientID", "PID-001")
    assert (m.kind, m.values, m.vr) == ("single", ["PID-001"], "LO")
    assert matches("PatientID", "PID-001")
    assert not matches("PatientID", "PID-00")
    assert not matches("PatientID", "pid-001")  # only PN is case-insensitive


def test_empty_value_is_universal():
    m = parse_match("PatientID", "")
    assert m.kind == "universal"
    assert m.matches({})  # universal matching even when the attribute is absent


@pytest.mark.parametrize("value", ["1.2.3.4,9.9", "9.9\\1.2.3.4", " 9.9 , 1.2.3.4 "])
def test_uid_lists_with_comma_or_backslash(value):
    m = parse_match("StudyInstanceUID", value)
    assert m.kind == "list"
    assert sorted(m.values) == ["1.2.3.4", "9.9"]
    assert m.matches(INSTANCE)
    assert not parse_match("StudyInstanceUID", value.replace("1.2.3.4", "1.2.3.5")).matches(INSTANCE)


def test_single_uid():
    assert parse_match("StudyInstanceUID", "1.2.3.4").kind == "single"
    assert matches("StudyInstanceUID", "1.2.3.4")
    assert not matches("StudyInstanceUID", "1.2.3")


@pytest.mark.parametrize("pattern, expected", [
    ("PID*", True), ("*001", True), ("*", True), ("P?D-0?1", True), ("PID-00?", True),
    ("PID-0??", True), ("P*1", True), ("PID-00??", False), ("pid*", False), ("X*", False), ("?ID", False),
])
def test_wildcards(pattern, expected):
    m = parse_match("PatientID", pattern)
    assert m.kind == "wildcard"
    assert m.matches(INSTANCE) is expected


def test_brackets_and_other_regex_characters_are_literal():
    assert matches("StudyDescription", "Chest [contrast]*")
    assert matches("StudyDescription", "*[contrast] 50% *")
    assert not matches("StudyDescription", "Chest [c]*")  # not a character class
    assert not matches("StudyDescription", "Chest (contrast)*")
    assert matches("StudyDescription", "Chest [contrast] 50% ?draft?")  # '?' matches the literal '*' too


def test_multi_valued_attribute_matches_any_value():
    assert matches("ImageType", "AXIAL")
    assert matches("ImageType", "PRIM*")
    assert not matches("ImageType", "SECONDARY")


@pytest.mark.parametrize("value, expected", [
    ("20200315", True), ("20200314", False),
    ("20200101-20201231", True), ("20200315-20200315", True), ("20200316-20201231", False),
    ("20200315-", True), ("20200316-", False), ("-20200315", True), ("-20200314", False),
    ("2020-03-15", True), ("2020.03.15", True),  # ISO and ACR-NEMA spellings of a single date
    ("20200314\\20200315", True), ("20200314\\20200316", False),
])
def test_date_matching(value, expected):
    assert matches("StudyDate", value) is expected


@pytest.mark.parametrize("value, expected", [
    ("101530.25", True), ("101530.250", True), ("10:15:30.25", True), ("1015", False),
    ("10-11", True), ("1015-1016", True), ("101531-", False), ("1015-", True), ("-1015", True), ("-1014", False),
    ("-101530.25", True), ("-10", True), ("11-", False), ("101530.2-101530.3", True),
])
def test_time_matching(value, expected):
    assert matches("StudyTime", value) is expected


@pytest.mark.parametrize("value, expected", [
    ("20200315101530.25", True),
    ("20200315-20200315", True), ("20200315-", True), ("-20200314", False), ("-2020031510", True),
    ("20200315101531-", False), ("2020-", True), ("-2019", False),
    # A UTC offset on an end of the range (the dash inside it is not the range separator).
    ("20200315000000+0100-20200316000000-0500", True), ("-20200315101530-0500", True),
])
def test_datetime_matching(value, expected):
    assert matches("AcquisitionDateTime", value) is expected


def test_range_kinds_and_normalised_ends():
    m = parse_match("StudyDate", "20200101-")
    assert (m.kind, m.low, m.high) == ("range", "20200101", None)
    m = parse_match("StudyDate", "-202003")
    assert (m.kind, m.low, m.high) == ("range", None, "20200331")
    m = parse_match("StudyTime", "10-11")
    assert (m.low, m.high) == ("100000.000000", "115959.999999")
    m = parse_match("AcquisitionDateTime", "2020-2021")
    assert (m.low, m.high) == ("20200101000000.000000", "20211231235959.999999")


def test_normalisers():
    assert normalize_date("2020") == "20200101"
    assert normalize_date("2020", upper=True) == "20201231"
    assert normalize_date(" 2020-03-05 ") == "20200305"
    assert normalize_time("10") == "100000.000000"
    assert normalize_time("10", upper=True) == "105959.999999"
    assert normalize_time("101530.5") == "101530.500000"
    assert normalize_time("101530.5", upper=True) == "101530.500000"
    assert normalize_datetime("20200315") == "20200315000000.000000"
    assert normalize_datetime("20200315+0100", upper=True) == "20200315235959.999999"


def test_pn_matches_case_insensitively_by_default_and_optionally_not():
    assert matches("PatientName", "yamada^tarou")
    assert matches("PatientName", "YAMADA*")
    assert not matches("PatientName", "yamada^tarou", pn_case_insensitive=False)
    assert matches("PatientName", "Yamada^Tarou", pn_case_insensitive=False)


def test_pn_matches_the_whole_value_or_any_component_group():
    assert matches("PatientName", "Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert matches("PatientName", "山田^太郎")
    assert matches("PatientName", "やまだ^たろう")
    assert matches("PatientName", "山田*")
    assert not matches("PatientName", "山田")
    assert not matches("PatientName", "Tarou^Yamada")


def test_pn_in_json_object_form_and_empty_pn():
    assert not matches("ReferringPhysicianName", "A*")  # present but empty
    assert matches("ReferringPhysicianName", "")  # universal
    assert not matches("ReferringPhysicianName", "*")


def test_fuzzy_matching_matches_name_components_in_any_order():
    assert parse_query([("PatientName", "tarou"), ("fuzzymatching", "true")], "study").match(INSTANCE)
    assert parse_query([("PatientName", "tar yam"), ("fuzzymatching", "true")], "study").match(INSTANCE)
    assert not parse_query([("PatientName", "tarou")], "study").match(INSTANCE)
    assert not parse_query([("PatientName", "jiro"), ("fuzzymatching", "true")], "study").match(INSTANCE)
    # Fuzzy matching implies case-insensitivity even when the server compares PN case-sensitively.
    fuzzy = parse_query([("PatientName", "TAROU"), ("fuzzymatching", "true")], "study")
    assert fuzzy.fuzzy and fuzzy.match(INSTANCE, pn_case_insensitive=False)


def test_sequence_paths_match_in_any_item_at_any_depth():
    assert matches("ScheduledProcedureStepSequence.ScheduledProcedureStepID", "SPS-2")
    assert matches("00400100.00400009", "SPS-1")
    assert matches("ScheduledProcedureStepSequence.ScheduledProcedureStepID", "SPS-*")
    assert not matches("ScheduledProcedureStepSequence.ScheduledProcedureStepID", "SPS-3")
    assert matches("ScheduledProcedureStepSequence.ScheduledProtocolCodeSequence.CodeValue", "CODE9")
    assert not matches("ScheduledProcedureStepSequence.ScheduledProtocolCodeSequence.CodeValue", "CODE8")
    assert not matches("RequestAttributesSequence.ScheduledProcedureStepID", "SPS-1")  # absent sequence
    m = parse_match("ScheduledProcedureStepSequence.ScheduledProcedureStepID", "SPS-2")
    assert m.path == (0x00400100, 0x00400009) and m.key == "00400100.00400009"
    assert str(m) == "ScheduledProcedureStepSequence.ScheduledProcedureStepID=SPS-2"


def test_a_sequence_with_an_empty_value_is_universal():
    assert parse_match("ScheduledProcedureStepSequence", "").kind == "universal"


@pytest.mark.parametrize("key, value, expected", [
    ("SeriesNumber", "7", True), ("SeriesNumber", "7.0", True), ("SeriesNumber", "07", True),
    ("SeriesNumber", "8", False), ("SeriesNumber", "6\\7", True),
    ("SliceThickness", "2.5", True), ("SliceThickness", "2.50", True), ("SliceThickness", "25e-1", True),
    ("SliceThickness", "2.4", False),
    ("Rows", "512", True), ("Rows", "512.0", True), ("Rows", "256", False),
    ("PixelSpacing", "0.75", True), ("PixelSpacing", ".5", True), ("PixelSpacing", "1", False),
])
def test_numeric_values_compare_by_canonical_value(key, value, expected):
    assert matches(key, value) is expected


def test_numbers_stored_as_strings_match_too():
    obj = {"00200011": {"vr": "IS", "Value": [" 7 "]}, "00180050": {"vr": "DS", "Value": ["2.500"]}}
    assert matches("SeriesNumber", "7", obj)
    assert matches("SliceThickness", "2.5", obj)


def test_includefield_keywords_tags_lists_and_all():
    q = parse_query(
        [
            ("includefield", "StudyDescription,00080060"),
            ("includefield", "ScheduledProcedureStepSequence.ScheduledProcedureStepID"),
        ],
        "study",
    )
    assert q.include_paths == [(0x00081030,), (0x00080060,), (0x00400100, 0x00400009)]
    assert not q.include_all
    assert parse_query([("includefield", "all")], "series").include_all
    assert parse_query([("includefield", "ALL,00100010")], "series").include_all
    assert parse_query([("includefield", " , StudyDescription , ")], "study").include_paths == [(0x00081030,)]


def test_returned_tags_are_matching_and_included_ones():
    q = parse_query(
        [
            ("PatientID", "x"),
            ("includefield", "StudyDescription"),
            ("ScheduledProcedureStepSequence.ScheduledProcedureStepID", "S"),
        ],
        "study",
    )
    assert q.returned_tags == [0x00100020, 0x00400100, 0x00081030]


def test_limit_offset_fuzzy():
    q = parse_query([("limit", "10"), ("offset", "20"), ("fuzzymatching", "false")], "instance")
    assert (q.limit, q.offset, q.fuzzy, q.level) == (10, 20, False, "instance")
    assert parse_query([("limit", "0")], "study").limit == 0
    assert parse_query([("limit", str(MAX_LIMIT * 10))], "study").limit == MAX_LIMIT
    assert parse_query([("limit", "500")], "study", max_limit=100).limit == 100
    assert parse_query([("limit", "500")], "study", max_limit=None).limit == 500
    assert parse_query([], "study").limit is None


def test_query_match_needs_every_key():
    q = parse_query([("PatientID", "PID*"), ("StudyDate", "2020-"), ("Modality", "CT")], "series")
    assert q.match(INSTANCE)
    q = parse_query([("PatientID", "PID*"), ("StudyDate", "2021-")], "series")
    assert not q.match(INSTANCE)


# -- bad input: QueryError naming the parameter ---------------------------------------------------

@pytest.mark.parametrize("name, value, named", [
    ("NoSuchKeyword", "x", "NoSuchKeyword"),
    ("0010001", "x", "0010001"),
    ("0010001G", "x", "0010001G"),
    ("includefield", "NoSuchKeyword", "includefield"),
    ("includefield", "StudyDescription,Bogus", "includefield"),
    ("StudyDate", "yesterday", "StudyDate"),
    ("StudyDate", "20201301", "StudyDate"),
    ("StudyDate", "20200230", "StudyDate"),
    ("StudyDate", "2020013", "StudyDate"),
    ("StudyDate", "20200102-20200101", "StudyDate"),
    ("StudyDate", "-", "StudyDate"),
    ("StudyDate", "20200101-20200102-20200103", "StudyDate"),
    ("StudyDate", "2020*", "StudyDate"),
    ("StudyTime", "25", "StudyTime"),
    ("StudyTime", "1060", "StudyTime"),
    ("StudyTime", "12-10", "StudyTime"),
    ("StudyTime", "ab-", "StudyTime"),
    ("AcquisitionDateTime", "2020131", "AcquisitionDateTime"),
    ("AcquisitionDateTime", "20200101-2019", "AcquisitionDateTime"),
    ("StudyInstanceUID", "1.2.abc", "StudyInstanceUID"),
    ("StudyInstanceUID", "1.2/../3", "StudyInstanceUID"),
    ("StudyInstanceUID", "1." * 40, "StudyInstanceUID"),
    ("SeriesNumber", "seven", "SeriesNumber"),
    ("SeriesNumber", "7*", "SeriesNumber"),
    ("Rows", "1\\x", "Rows"),
    ("limit", "ten", "limit"),
    ("limit", "-1", "limit"),
    ("limit", "1.5", "limit"),
    ("offset", "-5", "offset"),
    ("offset", "", "offset"),
    ("fuzzymatching", "maybe", "fuzzymatching"),
    ("orderby", "PatientName", "orderby"),
    ("PatientName.FamilyName", "x", "PatientName.FamilyName"),
    ("PatientName.PatientID", "x", "PatientName"),
    ("ScheduledProcedureStepSequence", "x", "ScheduledProcedureStepSequence"),
    ("ScheduledProcedureStepSequence..CodeValue", "x", "ScheduledProcedureStepSequence..CodeValue"),
])
def test_bad_input_raises_query_error_naming_the_parameter(name, value, named):
    with pytest.raises(QueryError) as info:
        parse_query([(name, value)], "study")
    assert named in str(info.value), str(info.value)


def test_repeated_key_is_an_error():
    with pytest.raises(QueryError, match="PatientName is given twice"):
        parse_query([("PatientName", "A"), ("00100010", "B")], "study")


def test_unknown_level_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown QIDO level"):
        parse_query([], "patient")


def test_parse_attribute_path_accepts_private_tags():
    assert parse_attribute_path("00091001") == (0x00091001,)
    assert parse_attribute_path("SourceImageSequence.ReferencedSOPInstanceUID") == (parse_tag("SourceImageSequence"), 0x00081155)


# -- several values for one attribute (PS3.18 8.3.4.1, PS3.4 C.2.2.2.2) ------------------------------

@pytest.mark.parametrize("key, value", [
    ("Modality", "CT,MR"), ("Modality", "MR,CT"), ("Modality", "MR\\CT"), ("ImageType", "SECONDARY,AXIAL"),
    ("StudyDate", "20190101,20200315"), ("StudyDate", "2019-01-01,2020-03-15"), ("SeriesNumber", "3,7"),
    ("SliceThickness", "1,2.50"), ("StudyTime", "0900,101530.25"),
])
def test_a_comma_separates_values_where_no_value_can_hold_one(key, value):
    m = parse_match(key, value)
    assert m.kind == "list"
    assert m.matches(INSTANCE)
    assert not parse_query([(key, value)], "study").warnings


@pytest.mark.parametrize("key, value", [("Modality", "MR,US"), ("StudyDate", "20190101,20200316"), ("SeriesNumber", "3,8")])
def test_a_comma_list_matches_nothing_when_no_value_matches(key, value):
    assert not matches(key, value)


def test_a_comma_in_text_is_an_ordinary_character_and_the_answer_says_so():
    m = parse_match("PatientID", "PID-001,PID-002")
    assert (m.kind, m.values) == ("single", ["PID-001,PID-002"])
    assert not m.matches(INSTANCE)
    assert matches("PatientID", "PID-001\\PID-002")  # a backslash separates text values
    query = parse_query([("PatientID", "PID-001,PID-002")], "study")
    assert len(query.warnings) == 1 and "8.3.4.1" in query.warnings[0] and "PatientID" in query.warnings[0]
    assert matches("StudyDescription", "Chest [contrast] 50% *draft?")


@pytest.mark.parametrize("key, value", [
    ("StudyDate", "20190101-20191231,20200315"), ("StudyDate", "20200315\\2020-"),
    ("Modality", "C*,MR"), ("PatientID", "PID*\\X"),
])
def test_ranges_and_wildcards_cannot_be_list_items(key, value):
    with pytest.raises(QueryError, match="ask once per"):
        parse_query([(key, value)], "study")


def test_person_name_lists_match_each_pattern():
    assert matches("PatientName", "Doe*\\Yamada*")
    assert not matches("PatientName", "Doe*\\Smith*")


@pytest.mark.parametrize("name", ["emptyvaluematching", "multiplevaluematching"])
def test_optional_matching_parameters_are_accepted_with_a_warning(name):
    query = parse_query([(name, "true"), ("Modality", "CT")], "series")
    assert query.match(INSTANCE) and len(query.warnings) == 1 and name in query.warnings[0]
    assert not parse_query([(name, "false")], "series").warnings
    with pytest.raises(QueryError, match=name):
        parse_query([(name, "perhaps")], "series")

"""QIDO matching in SQL (PostgreSQL) and through the text indexes (both engines) against the
reference: SQLite without its text index, whose matching calls ``dicom.query``'s Match methods on
every row. The same data in each, the same queries, the same answers (in the same order), for
every matching kind at every level."""

from __future__ import annotations

import copy
import itertools

import pytest
from pydicom.dataset import Dataset

from dicomweb_nb import samples
from dicomweb_nb.dicom.query import parse_query
from dicomweb_nb.dicom.tags import level_of, parse_tag
from dicomweb_nb.store import Store, import_paths
from tests.server.test_qido import build_studies

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _tricky_studies() -> list[Dataset]:
    """Values where SQL goes wrong easily: LIKE metacharacters, case and accents, groups, NUL,
    whitespace, numbers and dates spelled several ways, sequences, empty values."""
    out = []
    names = ["O'Brien^Anne", "50%^Percent", "under_score^x", "brack[et]^y", "ÉLODIE^Zoé",
             "élodie^zoé", "Yamada^Tarou=山田^太郎=やまだ^たろう", "  Spaced^Name ", "Smith^John^^Dr", "SMITH^JOHN",
             "=山田^花子", "Nul\x00Name^Z", "underXscore^x", "50 Percent^y", "Straße^Anna", "ΣΊΣΥΦΟΣ^Σ"]
    for i, name in enumerate(names):
        [ds] = samples.generate_ct_series(1, rows=4, columns=4, patient_name=name, patient_id=f"T-{i:02d}",
                                          study_date=["20200101", "20201231", "19991231", "20000229"][i % 4],
                                          series_description=["Head 50%", "head_neck", "HEAD", "a*b?c"][i % 4])
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyTime = ["0800", "120000.5", "235959", "000000.000001"][i % 4]
        ds.SliceThickness = ["1.0", "1", "2.50", "0.5"][i % 4]
        ds.InstitutionName = ["Hôpital Nord", "hopital nord", "St. Mary's", "X_Y%Z"][i % 4]
        ds.OperatorsName = [name, "Tech^One=テク^ワン"]  # a multi-valued PN outside the indexed columns
        ds.AcquisitionDate = ["20200102", "20190101", "", "20201231"][i % 4] or None
        ds.ContentTime = ["101010", "2359", "00", "120000"][i % 4]
        item = Dataset()
        item.ScheduledProcedureStepID = f"SPS-{i % 3}"
        item.RequestedProcedureDescription = ["CT Head", "MR Knee", "ct head"][i % 3]
        nested = Dataset()
        nested.CodeValue = f"C{i % 2}"
        nested.CodeMeaning = ["Head", "Knee"][i % 2]
        item.ScheduledProtocolCodeSequence = [nested]
        ds.RequestAttributesSequence = [item]
        if i % 5 == 0:
            ds.StudyDescription = ""
        out.append(ds)
    return out


QUERIES = [
    ("study", [("PatientName", v)])
    for v in (
        "Doe^John",
        "doe^john",
        "DOE*",
        "*doe*",
        "d?e^j*",
        "Müller*",
        "ミュラー^ユルゲン",
        "*ユルゲン",
        "Yamada^Tarou",
        "山田^太郎",
        "やまだ*",
        "50%*",
        "50*",
        "under_score*",
        "under?score*",
        "brack[et]*",
        "*[*",
        "O'Brien*",
        "élodie*",
        "ÉLODIE^ZOÉ",
        "Smith^John*",
        "SMITH^JOHN",
        "*^Dr",
        "Spaced*",
        "*Name",
        "  Spaced^Name ",
        "Nul*",
        "Nul\x00Name*",
        "山田^花子",
        "*",
        "Doe^John\\doe^jane",
        "Doe*\\SMITH*",
        "x\\y",
        "STRASSE^ANNA",
        "strasse*",
        "straße^anna",
        "σίσυφος*",
        "ΣΊΣΥΦΟΣ^Σ",
        "under_score^x",
        "50%^percent",
    )
] + [
    ("study", [("PatientID", "QA-1")]),
    ("study", [("PatientID", "T-0*")]),
    ("study", [("PatientID", "T-0?")]),
    ("study", [("PatientID", "QA-1\\T-03")]),
    ("study", [("StudyDate", "20200101-20201231")]),
    ("study", [("StudyDate", "-20000229")]),
    ("study", [("StudyDate", "2000-02-29")]),
    ("study", [("StudyDate", "20200101\\19991231")]),
    ("study", [("StudyTime", "0800-1200")]),
    ("study", [("StudyTime", "235959")]),
    ("study", [("StudyTime", "08")]),
    ("study", [("StudyDescription", "Knee [left] 50%")]),
    ("study", [("StudyDescription", "*50%")]),
    ("study", [("StudyDescription", "*[*")]),
    ("study", [("AccessionNumber", "ACC-?")]),
    ("study", [("ModalitiesInStudy", "MR")]),
    ("study", [("ModalitiesInStudy", "CT\\OT")]),
    ("study", [("ModalitiesInStudy", "M*")]),
    ("study", [("NumberOfStudyRelatedInstances", "5")]),
    ("study", [("NumberOfStudyRelatedSeries", "2\\1")]),
    ("study", [("PatientComments", "allergic*")]),
    ("study", [("InstitutionName", "hopital*")]),
    ("study", [("InstitutionName", "X_Y%Z")]),
    ("study", [("InstitutionName", "X?Y?Z")]),
    ("study", [("OperatorsName", "tech^one")]),
    ("study", [("OperatorsName", "テク^ワン")]),
    ("study", [("OperatorsName", "*brien*")]),
    ("study", [("SliceThickness", "2.5")]),
    ("study", [("SliceThickness", "1")]),
    ("study", [("SliceThickness", "1.25\\0.5")]),
    ("study", [("RequestAttributesSequence.ScheduledProcedureStepID", "SPS-A")]),
    ("study", [("RequestAttributesSequence.ScheduledProcedureStepID", "SPS-*")]),
    ("study", [("RequestAttributesSequence.RequestedProcedureDescription", "ct head")]),
    ("study", [("RequestAttributesSequence.ScheduledProtocolCodeSequence.CodeMeaning", "Knee")]),
    ("study", [("RequestAttributesSequence.ScheduledProtocolCodeSequence.CodeValue", "C1\\C9")]),
    ("study", [("ReferencedImageSequence.ReferencedSOPClassUID", "1.2.840.10008.5.1.4.1.1.2")]),
    ("study", [("AcquisitionDate", "2020-")]),
    ("study", [("ContentTime", "1000-1200")]),
    ("study", [("ContentTime", "23")]),
    ("study", [("Modality", "MR"), ("PatientID", "QA-*")]),
    ("study", [("SeriesDescription", "*50%")]),
    ("study", [("SeriesDescription", "a*b?c")]),
    ("study", [("PatientName", "doe*\\*brien*")]),
    ("series", [("Modality", "CT"), ("SeriesNumber", "1")]),
    ("series", [("SeriesDescription", "head*")]),
    ("series", [("SeriesDescription", "?EAD")]),
    ("series", [("NumberOfSeriesRelatedInstances", "3")]),
    ("series", [("PatientName", "*doe*")]),
    ("series", [("StudyDate", "2020-")]),
    ("series", [("BodyPartExamined", "*")]),
    ("instance", [("InstanceNumber", "2")]),
    ("instance", [("SliceThickness", "2.50")]),
    ("instance", [("Rows", "8\\4")]),
    ("instance", [("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")]),
    ("instance", [("ImageType", "ORIGINAL*")]),
    ("instance", [("ManufacturerModelName", "Scanner?")]),
    ("instance", [("PatientName", "doe^jane")]),
    ("instance", [("ContentDate", "-20200101")]),
    ("instance", [("AcquisitionDate", "20200102\\20201231")]),
    ("instance", [("RequestAttributesSequence.ScheduledProcedureStepID", "SPS-A2")]),
    ("instance", [("ReferencedImageSequence.ReferencedSOPInstanceUID", "")]),
    ("instance", [("PatientName", "*"), ("limit", "7"), ("offset", "3")]),
]
FUZZY = ["joh", "doe joh", "JURG", "mull jurg", "tarou", "ユル", "zo", "x", "spaced name", "smith dr"]


def _uids(result) -> list[str]:
    keys = ("0020000D", "0020000E", "00080018")
    return ["/".join(item.get(k, {}).get("Value", [""])[0] for k in keys if k in item) for item in result.items]


@pytest.fixture(scope="module")
def both(tmp_path_factory, backend_services):
    """The same data in the reference (SQLite matching every row in Python), in SQLite through its
    text index, and in PostgreSQL."""
    folder = tmp_path_factory.mktemp("differential")
    datasets = [ds for group in build_studies().values() for ds in group] + _tricky_studies()
    files = samples.write_series(datasets, folder / "src") + samples.pydicom_test_files()
    stores = {}
    for name, kwargs in (("sqlite", {}), ("sqlite-text", {}),
                         ("postgresql", {"database": backend_services.postgres().new_database()})):
        store = Store(folder / name, **kwargs)
        report = import_paths(store, files, progress=False)
        assert report.skipped == []
        stores[name] = store
    stores["sqlite"].index.text_search = False
    assert stores["postgresql"].index.text_search
    yield stores
    for store in stores.values():
        store.close()


@pytest.mark.parametrize("level, params", QUERIES, ids=[f"{lvl}-{'&'.join(f'{k}={v}' for k, v in p)}" for lvl, p in QUERIES])
@pytest.mark.parametrize("case_insensitive", [True, False])
def test_postgresql_matches_as_the_reference(both, level, params, case_insensitive):
    query = parse_query(params, level)
    answers = {}
    for name, store in both.items():
        store.pn_case_insensitive = case_insensitive
        answers[name] = _uids(store.search(query))
    assert answers["postgresql"] == answers["sqlite"]
    assert answers["sqlite-text"] == answers["sqlite"]


@pytest.mark.parametrize("words", FUZZY)
@pytest.mark.parametrize("level, key", [("study", "PatientName"), ("instance", "OperatorsName")])
def test_postgresql_fuzzy_matching_as_the_reference(both, words, level, key):
    query = parse_query([(key, words), ("fuzzymatching", "true")], level)
    answers = {name: _uids(store.search(query)) for name, store in both.items()}
    assert answers["postgresql"] == answers["sqlite"] == answers["sqlite-text"]


def test_the_queries_are_not_vacuous(both):
    """Most queries find something and most leave something out: the comparison has teeth."""
    store = both["sqlite"]
    total = {level: len(store.search(parse_query([], level)).items) for level in ("study", "series", "instance")}
    counts = [len(store.search(parse_query(p, lvl)).items) for lvl, p in QUERIES]
    assert sum(1 for c in counts if c) > 0.75 * len(counts)
    assert sum(1 for (lvl, _), c in zip(QUERIES, counts) if 0 < c < total[lvl]) > 0.6 * len(counts)


def test_every_pair_of_keys_combines_as_the_reference(both):
    """Conditions on several levels in one query (EXISTS over lower levels, joins)."""
    singles = [q for q in QUERIES if len(q[1]) == 1 and q[0] == "study"][::4]
    for (_, a), (_, b) in itertools.islice(itertools.combinations(singles, 2), 60):
        if a[0][0] == b[0][0]:
            continue
        for level in ("study", "series", "instance"):
            query = parse_query(copy.deepcopy(a + b), level)
            reference = _uids(both["sqlite"].search(query))
            assert _uids(both["postgresql"].search(query)) == reference, (level, a, b)
            assert _uids(both["sqlite-text"].search(query)) == reference, (level, a, b)


TEXT_INDEXED = [
    ("study", [("PatientName", "JON*")]), ("study", [("PatientName", "*brien*")]), ("study", [("PatientName", "doe^john")]),
    ("study", [("InstitutionName", "hopital*")]), ("study", [("StudyDescription", "*phantom*")]),
    ("series", [("SeriesDescription", "head*")]), ("study", [("PatientComments", "allergic*")]),
]


@pytest.mark.parametrize("level, params", TEXT_INDEXED, ids=[f"{lvl}-{p[0][0]}={p[0][1]}" for lvl, p in TEXT_INDEXED])
def test_wildcards_and_any_attribute_values_are_index_driven(both, level, params):
    """Issue 12's scale curve: ``PatientName=JON*`` and its kind are answered through the text
    indexes (FTS5 trigram on SQLite, pg_trgm GIN on PostgreSQL), not by matching every row."""
    query = parse_query(params, level)
    table = {"study": "studies_text", "series": "series_text"}[level_of(parse_tag(params[0][0]))]
    sqlite = both["sqlite-text"].index
    sql, values = sqlite.search_statement(query)
    with sqlite._read() as ex:
        plan = " / ".join(str(tuple(r)) for r in ex("EXPLAIN QUERY PLAN " + sql, values))
    assert f"{table} VIRTUAL TABLE INDEX" in plan, plan
    pg = both["postgresql"].index
    sql, values = pg.search_statement(query)
    wildcard = "*" in params[0][1]
    with pg._read() as ex:
        # The test data is small: ask whether the index can be used at all (bitmap scans only).
        ex("SET enable_seqscan = off")
        ex("SET enable_indexscan = off")
        try:
            plan = "\n".join(r[0] for r in ex("EXPLAIN " + sql, values))
        finally:
            ex("RESET enable_seqscan")
            ex("RESET enable_indexscan")
    expected = f"{table}" if wildcard else f"{table.split('_')[0]}_match"  # exact values: the match document's GIN index
    assert f"Index Scan on {expected}" in plan, plan

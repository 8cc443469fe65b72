"""Instance searches answered from the instances' summary (``store.summary``) give the same JSON as
from their full metadata: on pydicom's bundled files and a generated series, on every backend, for
the default attributes, includefield lists, matching keys, paging and the URL's scopes."""

from __future__ import annotations

import json

import pytest

from dicomweb_nb import samples
from dicomweb_nb.dicom.query import parse_query
from dicomweb_nb.dicom.tags import parse_tag, tag_hex
from dicomweb_nb.store import import_paths, schema
from dicomweb_nb.store.index import sql
from dicomweb_nb.store.schema import SCHEMA_VERSION
from dicomweb_nb.store.summary import SUMMARY_KEYWORDS, summary_suffices

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

GEOMETRY = ("SOPClassUID,InstanceNumber,NumberOfFrames,Rows,Columns,SamplesPerPixel,PhotometricInterpretation,"
            "PlanarConfiguration,BitsAllocated,BitsStored,PixelRepresentation,PixelSpacing,ImagePositionPatient,"
            "ImageOrientationPatient,RescaleSlope,RescaleIntercept,ModalityLUTSequence,AvailableTransferSyntaxUID")
# (params, whether the summary answers it when the URL names the series)
QUERIES = [
    ([], True),
    ([("includefield", GEOMETRY)], True),
    ([("includefield", "WindowCenter,WindowWidth,ImageType"), ("includefield", "00280030")], True),
    ([("InstanceNumber", "1")], True),
    ([("Rows", "32")], True),
    ([("ImageType", "ORIGINAL*")], True),
    ([("limit", "3"), ("offset", "2")], True),
    ([("includefield", "PatientName")], False),
    ([("includefield", "all")], False),
    ([("ImageComments", "*")], False),
]


def _stored(make_store, tmp_path):
    store = make_store()
    files = samples.pydicom_test_files() + samples.write_series(
        samples.generate_ct_series(n_slices=6, rows=32, columns=32), tmp_path / "ct")
    report = import_paths(store, files, progress=False)
    assert report.skipped == []
    return store


def _answers(store, params, *, summary: bool, monkeypatch) -> list[list[dict]]:
    """Every instance search of ``params``: unscoped, and scoped to each study and each series."""
    monkeypatch.setattr(sql, "summary_suffices", summary_suffices if summary else (lambda *a, **k: False))
    query = parse_query(params, "instance")
    series = store.search(parse_query([], "series")).items
    out = [store.search(query).items]
    for study_uid in sorted({s["0020000D"]["Value"][0] for s in series}):
        out.append(store.search(query, study_uid=study_uid).items)
    for s in series:
        out.append(store.search(query, study_uid=s["0020000D"]["Value"][0], series_uid=s["0020000E"]["Value"][0]).items)
    return out


@pytest.mark.parametrize("params, summarized", QUERIES, ids=[str(p) for p, _ in QUERIES])
def test_instance_searches_answer_the_same_from_the_summary(make_store, tmp_path, monkeypatch, params, summarized):
    store = _stored(make_store, tmp_path)
    assert summary_suffices(parse_query(params, "instance"), series_scoped=True) is summarized
    full = _answers(store, params, summary=False, monkeypatch=monkeypatch)
    assert sum(len(items) for items in full) > 0
    assert _answers(store, params, summary=True, monkeypatch=monkeypatch) == full


def test_the_summary_is_recorded_and_an_instance_without_one_still_answers(make_store, tmp_path, monkeypatch):
    """Instances stored before the summary column existed have none (NULL): searches read their full
    metadata instead, and answer the same."""
    store = _stored(make_store, tmp_path)
    params = [("includefield", GEOMETRY)]
    full = _answers(store, params, summary=False, monkeypatch=monkeypatch)
    summaries = store.index._transact(lambda ex: ex("SELECT summary, metadata FROM instances").fetchall())
    assert summaries and all(s is not None and len(s) < len(m) for s, m in summaries)
    # Each summary holds only summary attributes, and the whole of them.
    allowed = {tag_hex(parse_tag(keyword)) for keyword in SUMMARY_KEYWORDS}
    for summary, metadata in summaries:
        whole = json.loads(metadata)
        assert json.loads(summary) == {key: value for key, value in whole.items() if key in allowed}
    store.index._transact(lambda ex: ex("UPDATE instances SET summary = NULL WHERE (id / 2) * 2 = id"))
    assert _answers(store, params, summary=True, monkeypatch=monkeypatch) == full



def test_an_index_made_before_the_summary_step_gets_the_summary_column(make_store, tmp_path, monkeypatch):
    """The summary's schema step on an index of the version before it: the column is added, the
    instances stored before have no summary and answer from their metadata, those stored after have one."""
    before = next(version for version, step in schema.STEPS.items() if step is schema._summary_step) - 1
    store = _stored(make_store, tmp_path)
    params = [("includefield", GEOMETRY)]
    full = _answers(store, params, summary=False, monkeypatch=monkeypatch)
    store.index._transact(lambda ex: (ex("ALTER TABLE instances DROP COLUMN summary"),
                                      ex(f"UPDATE meta SET value='{before}' WHERE key='schema'")))
    store.close()
    store = make_store()
    assert store.index._transact(lambda ex: ex("SELECT value FROM meta WHERE key='schema'").fetchone()[0]) == str(SCHEMA_VERSION)
    assert store.index._transact(lambda ex: ex("SELECT COUNT(*) FROM instances WHERE summary IS NOT NULL").fetchone()[0]) == 0
    assert _answers(store, params, summary=True, monkeypatch=monkeypatch) == full
    more = samples.write_series(samples.generate_ct_series(n_slices=2, rows=8, columns=8), tmp_path / "more")
    assert all(o.stored for o in store.store_files(more, move=False))
    assert store.index._transact(lambda ex: ex("SELECT COUNT(*) FROM instances WHERE summary IS NOT NULL").fetchone()[0]) == 2

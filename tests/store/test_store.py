"""The workspace store: duplicates policies, crash recovery at each step of a write, delete, import."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dicomweb_nb import samples
from dicomweb_nb.dicom.query import parse_query
from dicomweb_nb.store import (
    FAILURE_CANNOT_UNDERSTAND,
    FAILURE_DATASET_DOES_NOT_MATCH,
    FAILURE_DUPLICATE,
    FAILURE_STUDY_UID_MISMATCH,
    NotFoundError,
    Store,
    import_paths,
)
from tests.fixtures.consistency import check_store_consistent

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def series(n=3, **kwargs):
    return samples.generate_ct_series(n, rows=8, columns=8, **kwargs)


def write(datasets, folder: Path) -> list[Path]:
    return samples.write_series(datasets, folder)


def study_description(store: Store, sop_uid: str) -> str:
    [row] = [r for r in store.instances(None, None, sop_uid)]
    import json

    return json.loads(row.metadata_text)["00081030"]["Value"][0]


def search(store: Store, level: str, **params):
    return store.search(parse_query(list(params.items()), level)).items


# -- storing ---------------------------------------------------------------------------------------

def test_store_files_indexes_and_moves_uploads(make_store):
    store = make_store()
    datasets = series(3)
    uploads = [store.tmp_dir / f"up{i}.part" for i in range(3)]
    for path, ds in zip(uploads, datasets):
        path.write_bytes(samples.dataset_bytes(ds))
    outcomes = store.store_files(uploads)
    assert [(o.stored, o.replaced, o.failure_reason, o.sop_uid) for o in outcomes] == \
        [(True, False, None, ds.SOPInstanceUID) for ds in datasets]
    assert not any(p.exists() for p in uploads)
    assert store.counts() == {"studies": 1, "series": 1, "instances": 3}
    rows = store.instances(datasets[0].StudyInstanceUID)
    assert [r.sop_uid for r in rows] == [ds.SOPInstanceUID for ds in datasets]  # InstanceNumber order
    for row, ds in zip(rows, datasets):
        assert row.blob.read() == samples.dataset_bytes(ds)
        assert row.blob.key.startswith(f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.")
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 3}


def test_copy_import_leaves_the_sources(tmp_path, make_store):
    store = make_store()
    files = write(series(2), tmp_path / "src")
    outcomes = store.store_files(files, move=False)
    assert all(o.stored for o in outcomes)
    assert all(f.exists() for f in files)
    check_store_consistent(store)


def test_bad_files_fail_alone(tmp_path, make_store):
    store = make_store()
    good = series(2)
    no_uid = copy.deepcopy(good[0])
    no_uid.SOPInstanceUID = "9.9.9"
    del no_uid.SeriesInstanceUID
    paths = [tmp_path / n for n in ("a.dcm", "text.txt", "cut.dcm", "nouid.dcm", "b.dcm")]
    paths[0].write_bytes(samples.dataset_bytes(good[0]))
    paths[1].write_text("not DICOM at all\n" * 10)
    paths[2].write_bytes(samples.dataset_bytes(good[1])[:-40])
    paths[3].write_bytes(samples.dataset_bytes(no_uid))
    paths[4].write_bytes(samples.dataset_bytes(good[1]))
    outcomes = store.store_files(paths, move=False)
    assert [o.stored for o in outcomes] == [True, False, False, False, True]
    assert outcomes[1].failure_reason == FAILURE_CANNOT_UNDERSTAND
    assert outcomes[2].failure_reason == FAILURE_CANNOT_UNDERSTAND and "truncated" in outcomes[2].message
    assert outcomes[3].failure_reason == FAILURE_DATASET_DOES_NOT_MATCH and "SeriesInstanceUID" in outcomes[3].message
    assert [o.source for o in outcomes] == [p.name for p in paths]
    assert check_store_consistent(store)["instances"] == 2


def test_expected_study_mismatch(tmp_path, make_store):
    store = make_store()
    datasets = series(2)
    files = write(datasets, tmp_path / "src")
    outcomes = store.store_files(files, expected_study="1.2.3.4", move=False)
    assert [o.failure_reason for o in outcomes] == [FAILURE_STUDY_UID_MISMATCH] * 2
    assert "does not match the study 1.2.3.4" in outcomes[0].message
    assert store.counts()["instances"] == 0
    outcomes = store.store_files(files, expected_study=datasets[0].StudyInstanceUID, move=False)
    assert all(o.stored for o in outcomes)
    check_store_consistent(store)


# -- duplicates ------------------------------------------------------------------------------------

def _first_and_changed(tmp_path):
    original = series(1)[0]
    changed = copy.deepcopy(original)
    changed.StudyDescription = "Changed description"
    return original, changed, write([original], tmp_path / "v1")[0], write([changed], tmp_path / "v2")[0]


def test_duplicates_replace(tmp_path, make_store):
    original, _changed, v1, v2 = _first_and_changed(tmp_path)
    store = make_store()
    store.store_files([v1], move=False)
    old_blob = store.instances(None, None, original.SOPInstanceUID)[0].blob
    [outcome] = store.store_files([v2], move=False)
    assert (outcome.stored, outcome.replaced, outcome.failure_reason) == (True, True, None)
    assert study_description(store, original.SOPInstanceUID) == "Changed description"
    assert not store.blobs.exists(old_blob.key)
    assert search(store, "study", StudyDescription="Changed*")[0]["00081030"]["Value"] == ["Changed description"]
    assert search(store, "study", StudyDescription="Generated*") == []
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 1}


def test_duplicates_reject(tmp_path, make_store):
    original, _changed, v1, v2 = _first_and_changed(tmp_path)
    store = make_store(duplicates="reject")
    store.store_files([v1], move=False)
    [outcome] = store.store_files([v2], move=False)
    assert (outcome.stored, outcome.failure_reason) == (False, FAILURE_DUPLICATE)
    assert "already stored" in outcome.message
    assert study_description(store, original.SOPInstanceUID) == "Generated phantom study"
    assert check_store_consistent(store)["instances"] == 1


def test_duplicates_keep(tmp_path, make_store):
    original, _changed, v1, v2 = _first_and_changed(tmp_path)
    store = make_store(duplicates="keep")
    store.store_files([v1], move=False)
    upload = store.tmp_dir / "upload.part"
    upload.write_bytes(v2.read_bytes())
    [outcome] = store.store_files([upload])
    assert (outcome.stored, outcome.replaced, outcome.failure_reason) == (True, False, None)
    assert "kept" in outcome.message
    assert not upload.exists()
    assert study_description(store, original.SOPInstanceUID) == "Generated phantom study"
    assert check_store_consistent(store)["instances"] == 1


def test_same_instance_twice_in_one_batch_the_later_wins(tmp_path, make_store):
    original, _changed, v1, v2 = _first_and_changed(tmp_path)
    store = make_store()
    outcomes = store.store_files([v1, v2], move=False)
    assert [o.stored for o in outcomes] == [True, True]
    assert study_description(store, original.SOPInstanceUID) == "Changed description"
    assert check_store_consistent(store)["instances"] == 1


def test_moving_an_instance_to_another_series_updates_both(tmp_path, make_store):
    datasets = series(2)
    store = make_store()
    store.store_files(write(datasets, tmp_path / "a"), move=False)
    moved = copy.deepcopy(datasets[1])
    moved.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1082.77"
    store.store_files(write([moved], tmp_path / "b"), move=False)
    assert check_store_consistent(store) == {"studies": 1, "series": 2, "instances": 2}


def _row_written(store: Store, table: str, key: str, uid: str) -> float:
    with store.index._read() as ex:
        return float(ex(f"SELECT updated FROM {table} WHERE {key}=?", (uid,)).fetchone()[0])


def test_a_study_row_is_rewritten_only_when_its_attributes_change(tmp_path, make_store):
    """Each instance of a study carries the study's attributes; rewriting the study and series rows
    (and their text index entries) for every one of them was most of a one-instance STOW's index work."""
    first, second, third = series(3)
    study, series_uid = first.StudyInstanceUID, first.SeriesInstanceUID
    store = make_store()
    store.store_files(write([first], tmp_path / "a"), move=False)
    written = (_row_written(store, "studies", "study_uid", study), _row_written(store, "series", "series_uid", series_uid))
    store.store_files(write([second], tmp_path / "b"), move=False)
    assert (_row_written(store, "studies", "study_uid", study),
            _row_written(store, "series", "series_uid", series_uid)) == written
    third.StudyDescription = "Described again"
    third.SeriesDescription = "Series described again"
    store.store_files(write([third], tmp_path / "c"), move=False)
    assert _row_written(store, "studies", "study_uid", study) > written[0]
    assert _row_written(store, "series", "series_uid", series_uid) > written[1]
    assert search(store, "study", StudyDescription="Described*")[0]["00201208"]["Value"] == [3]
    assert [s["0008103E"]["Value"] for s in search(store, "series", SeriesDescription="*again")] == [["Series described again"]]
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 3}


def test_a_series_sent_again_under_another_study_moves_there(tmp_path, make_store):
    datasets = series(2)
    store = make_store()
    store.store_files(write(datasets, tmp_path / "a"), move=False)
    moved = copy.deepcopy(datasets)
    for ds in moved:
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1082.78"
    store.store_files(write(moved, tmp_path / "b"), move=False)
    [found] = store.search(parse_query([], "series"), study_uid="1.2.826.0.1.3680043.10.1082.78").items
    assert found["0020000E"]["Value"] == [datasets[0].SeriesInstanceUID]
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 2}


def test_an_upload_is_synced_in_place_before_its_index_row(tmp_path, make_store, monkeypatch):
    """Crash safety: the blob's bytes and its folder entry are durable before the index row refers to
    it. The upload is moved into place first and synced there (with its folder): a journaling
    filesystem then commits the move and the bytes together, where syncing it before the move took
    a second commit, after the first."""
    store = make_store()
    if store.blobs.staging_dir() is None:
        pytest.skip("blobs in object storage: a put is durable when it returns")
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_commit = os.fsync, os.replace, store.index.commit

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("replace", str(dst)))
        return real_replace(src, dst, **kwargs)

    def commit(*args, **kwargs):
        events.append(("commit", ""))
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(store.index, "commit", commit)
    [ds] = series(1)
    upload = store.tmp_dir / "upload.part"
    upload.write_bytes(samples.dataset_bytes(ds))
    [outcome] = store.store_files([upload])
    assert outcome.stored
    blob = str(store.instances(None, None, ds.SOPInstanceUID)[0].blob.local_path)
    moved, commit_at = events.index(("replace", blob)), events.index(("commit", ""))
    assert ("fsync", blob) in events[moved:commit_at], events
    assert ("fsync", str(Path(blob).parent)) in events[moved:commit_at], events
    assert not [e for e in events[:moved] if e[0] == "fsync"], "the upload was synced before its move"


def test_a_stored_row_crosses_to_a_cpu_pool_process(tmp_path, make_store):
    """Rows go to the CPU pool's processes under Jupyter (rendering, transcoding): pickled, with
    their blob storage, they must read the same bytes there."""
    import pickle

    store = make_store()
    ds = samples.generate_ct_series(1, rows=16, columns=16, patient_id="PICKLE-1")[0]
    store.store_files(samples.write_series([ds], tmp_path / "src"), move=False)
    [row] = store.instances(ds.StudyInstanceUID)
    copied = pickle.loads(pickle.dumps(row))
    assert copied.blob.read() == row.blob.read()


def test_bad_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="replace, reject or keep"):
        Store(tmp_path / "s", duplicates="overwrite")


# -- crash recovery ----------------------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from dicomweb_nb.store import store as store_module
    from dicomweb_nb.store import Store
    from dicomweb_nb.store.index.sql import SqlIndex

    root, kwargs, step, *files = sys.argv[1:]
    store = Store(root, **json.loads(kwargs))

    def die(*args, **kwargs):
        os._exit(9)  # like kill -9: no cleanup, no rollback handler, no atexit

    if step == "after_temp_write":
        # The upload reached tmp/ (as STOW writes it) and the process died before storing it.
        for i, f in enumerate(files):
            (store.tmp_dir / f"stow-{i}.part").write_bytes(Path(f).read_bytes())
        die()
    if step == "after_put":
        real_put = store.blobs.put

        def put_then_die(*args, **kwargs):
            real_put(*args, **kwargs)
            die()
        store.blobs.put = put_then_die
    elif step == "in_transaction":
        SqlIndex._refresh_aggregates = die
    elif step == "after_commit":
        store_module.remove_path = die  # the replaced blob and the upload are still there
    uploads = []
    for i, f in enumerate(files):
        upload = store.tmp_dir / f"up-{i}.part"
        upload.write_bytes(Path(f).read_bytes())
        uploads.append(upload)
    store.store_files(uploads)
    sys.exit(0)
''')


def crash(root: Path, kwargs: dict, step: str, files: list[Path]) -> None:
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root), json.dumps(kwargs), step, *map(str, files)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr


@pytest.mark.parametrize("step, visible", [
    ("after_temp_write", False),
    ("after_put", False),
    ("in_transaction", False),
    ("after_commit", True),
])
def test_reconcile_after_a_crash_at_each_step(tmp_path, make_store, step, visible):
    root = tmp_path / "store"
    before = series(2, patient_id="BEFORE-1")
    store = make_store()
    kwargs = {**store.backend_kwargs, "garbage_grace": 0}
    store.store_files(write(before, tmp_path / "before"), move=False)
    store.close()
    new = series(3, patient_id="CRASH-1")
    # A replacement of a stored instance rides along, so "after_commit" leaves an old file behind.
    replacement = copy.deepcopy(before[0])
    replacement.StudyDescription = "Replacement"
    files = write(new, tmp_path / "new") + write([replacement], tmp_path / "repl")
    crash(root, kwargs, step, files)

    store = make_store()  # start-up reconciles (a folder store alone) or sweeps (a team store)
    counts = check_store_consistent(store)
    found = search(store, "instance", PatientID="CRASH-1")
    if visible:
        assert counts == {"studies": 2, "series": 2, "instances": 5}
        assert sorted(i["00080018"]["Value"][0] for i in found) == sorted(ds.SOPInstanceUID for ds in new)
        assert study_description(store, before[0].SOPInstanceUID) == "Replacement"
    else:
        assert counts == {"studies": 1, "series": 1, "instances": 2}
        assert found == []
        assert study_description(store, before[0].SOPInstanceUID) == "Generated phantom study"
    # What survived is whole: every indexed file reads back to the bytes that were stored.
    for ds in before + (new if visible else []):
        [row] = store.instances(None, None, ds.SOPInstanceUID)
        expected = replacement if ds is before[0] and visible else ds
        assert row.blob.read() == samples.dataset_bytes(expected)


def test_reconcile_reports_each_kind_of_leftover(tmp_path, make_store):
    store = make_store()
    datasets = series(3)
    store.store_files(write(datasets, tmp_path / "src"), move=False)
    rows = store.instances(datasets[0].StudyInstanceUID)
    # A blob written but never indexed, and a row whose blob vanished.
    stray = tmp_path / "stray.dcm"
    stray.write_bytes(rows[0].blob.read())
    store.blobs.put(rows[0].blob.key.rsplit("/", 1)[0] + "/1.2.3.stray.dcm", stray, move=True)
    store.blobs.delete(rows[2].blob.key)
    store.close()
    reopened = make_store(reconcile=False)
    # A leftover upload of this process (of every process in a folder store's tmp/).
    (reopened.tmp_dir / "upload.part").write_bytes(b"partial")
    (reopened.tmp_dir / "somedir").mkdir()
    assert reopened.reconcile() == {"tmp": 2, "orphan_files": 1, "missing_files": 1}
    assert check_store_consistent(reopened) == {"studies": 1, "series": 1, "instances": 2}
    [study] = search(reopened, "study")
    assert study["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances follows
    assert reopened.reconcile() == {"tmp": 0, "orphan_files": 0, "missing_files": 0}


def test_reconcile_removes_a_series_whose_files_all_vanished(tmp_path, make_store):
    store = make_store()
    first, second = series(2, patient_id="P-A"), series(1, patient_id="P-B")
    second[0].StudyInstanceUID = first[0].StudyInstanceUID
    store.store_files(write(first + second, tmp_path / "src"), move=False)
    store.blobs.delete(store.instances(None, second[0].SeriesInstanceUID)[0].blob.key)
    store.close()
    store = make_store()
    if not store.is_folder_store:
        store.reconcile()  # a team store is never known to be alone: reconciling is asked for
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 2}
    [study] = search(store, "study")
    assert (study["00201206"]["Value"], study["00201208"]["Value"]) == ([1], [2])


# -- delete ------------------------------------------------------------------------------------------

def test_delete_instance_series_study(tmp_path, make_store):
    store = make_store()
    a = series(3, patient_id="DEL-A")
    b = series(2, patient_id="DEL-B", study_uid=a[0].StudyInstanceUID)
    c = series(1, patient_id="DEL-C")
    store.store_files(write(a + b + c, tmp_path / "src"), move=False)
    assert check_store_consistent(store) == {"studies": 2, "series": 3, "instances": 6}
    key = store.instances(None, None, a[0].SOPInstanceUID)[0].blob.key
    assert store.delete(a[0].StudyInstanceUID, a[0].SeriesInstanceUID, a[0].SOPInstanceUID) == 1
    assert not store.blobs.exists(key)
    assert check_store_consistent(store) == {"studies": 2, "series": 3, "instances": 5}
    assert store.delete(b[0].StudyInstanceUID, b[0].SeriesInstanceUID) == 2
    assert check_store_consistent(store) == {"studies": 2, "series": 2, "instances": 3}
    [study] = search(store, "study", StudyInstanceUID=a[0].StudyInstanceUID)
    assert (study["00201206"]["Value"], study["00201208"]["Value"]) == ([1], [2])
    with pytest.raises(NotFoundError, match=f"belongs to study {c[0].StudyInstanceUID}"):
        store.delete(a[0].StudyInstanceUID, c[0].SeriesInstanceUID)
    assert store.delete(a[0].StudyInstanceUID) == 2
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 1}
    assert not [k for k in store.blobs.keys() if k.startswith(a[0].StudyInstanceUID + "/")]
    folder = store.blobs.local_path(a[0].StudyInstanceUID)
    assert folder is None or not folder.exists()  # the emptied study folder goes too
    with pytest.raises(NotFoundError, match="is not in this store"):
        store.delete(a[0].StudyInstanceUID)


def test_not_found_messages(tmp_path, make_store):
    store = make_store()
    ds = series(1)[0]
    store.store_files(write([ds], tmp_path / "src"), move=False)
    with pytest.raises(NotFoundError, match="study 1.2 is not in this store"):
        store.instances("1.2")
    with pytest.raises(NotFoundError, match="series 1.2 is not in this store"):
        store.instances(ds.StudyInstanceUID, "1.2")
    with pytest.raises(NotFoundError, match="instance 1.2 is not in this store"):
        store.instances(ds.StudyInstanceUID, ds.SeriesInstanceUID, "1.2")


# -- import ------------------------------------------------------------------------------------------

def test_import_folder_skips_and_lists_non_dicom(tmp_path, make_store):
    src = tmp_path / "src"
    datasets = series(3, patient_id="IMP-1")
    write(datasets[:2], src)
    write(datasets[2:], src / "nested" / "deeper")
    (src / "README.txt").write_text("notes\n")
    (src / "nested" / "cut.dcm").write_bytes(samples.dataset_bytes(series(1)[0])[:-100])
    (src / ".hidden.dcm").write_bytes(samples.dataset_bytes(series(1)[0]))  # hidden: not imported
    (src / ".git").mkdir()
    (src / ".git" / "x.dcm").write_bytes(samples.dataset_bytes(series(1)[0]))
    store = make_store()
    report = import_paths(store, [src], progress=False)
    assert sorted(o.sop_uid for o in report.stored) == sorted(ds.SOPInstanceUID for ds in datasets)
    skipped = dict(report.skipped)
    assert set(skipped) == {str(src / "README.txt"), str(src / "nested" / "cut.dcm")}
    assert "not a DICOM file" in skipped[str(src / "README.txt")]
    assert "truncated" in skipped[str(src / "nested" / "cut.dcm")]
    assert repr(report) == "ImportReport(stored=3, skipped=2)"
    assert all(p.exists() for p in src.rglob("*.dcm"))  # import copies
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 3}


def test_import_single_files_and_missing_paths(tmp_path, make_store):
    store = make_store()
    [path] = write(series(1), tmp_path / "src")
    assert len(import_paths(store, [path], progress=False).stored) == 1
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        import_paths(store, [tmp_path / "missing"], progress=False)


def test_import_every_pydicom_file(make_store):
    store = make_store()
    files = samples.pydicom_test_files()
    report = import_paths(store, files, progress=False)
    assert report.skipped == []
    assert len(report.stored) == len(files)
    assert check_store_consistent(store)["instances"] == len(files)


def test_import_files_from_a_notebook(tmp_path, ct_series_files):
    import dicomweb_nb as dw

    folder = tmp_path / "scans"
    folder.mkdir()
    for path in ct_series_files:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not DICOM")
    report = dw.import_files(folder, store=tmp_path / ".dicomweb", progress=False)
    assert len(report.stored) == len(ct_series_files)
    assert [reason for path, reason in report.skipped if path.endswith("notes.txt")]
    found = dw.connect(store=tmp_path / ".dicomweb", progress=False).instances()
    assert len(found) == len(ct_series_files)

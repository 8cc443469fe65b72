"""Stores written before issue 10's metadata fixes keep working: their precomputed metadata (group
lengths kept, trailing padding left out, ambiguous VRs as the dictionary's first) is re-derived from
the blobs when the store opens, once (schema 3: ``instances.metadata_version``)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from pydicom.uid import ImplicitVRLittleEndian

from dicomweb_nb import samples
from dicomweb_nb.dicom.query import parse_query
from dicomweb_nb.store import Store
from dicomweb_nb.store.ingest import read_instance
from dicomweb_nb.store.schema import METADATA_VERSION
from tests.store.test_team_store import _downgrade_to_schema_1

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PATIENT_GROUP_LENGTH, SMALLEST_PIXEL, TRAILING_PADDING = "00100000", "00280106", "FFFCFFFC"


def write_instance(folder):
    """An implicit VR file with a group length, a US-or-SS value that is signed, and trailing padding."""
    [ds] = samples.generate_ct_series(1, rows=8, columns=8, patient_id="OLD-META-1")
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -5
    ds.add_new(0x00100000, "UL", 64)
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 16)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    [path] = samples.write_series([ds], folder)
    return ds, path


def old_way(metadata: dict) -> dict:
    """The same instance's metadata as dicomweb-nb wrote it before issue 10."""
    old = dict(metadata)
    old[PATIENT_GROUP_LENGTH] = {"vr": "UL", "Value": [64]}
    old.pop(TRAILING_PADDING)
    old[SMALLEST_PIXEL] = {"vr": "US", "Value": [65531]}
    return dict(sorted(old.items()))


def make_old(store: Store, sop_uid: str) -> None:
    """Rewrite the instance's rows the old way, as an index of metadata format 1."""
    [row] = store.instances(None, None, sop_uid)
    old = old_way(json.loads(row.metadata_text))
    study = {k: v for k, v in old.items() if k.startswith("0010") or k in ("0020000D", "00080020")}

    def work(ex):
        ex("UPDATE instances SET metadata=?, metadata_version=1 WHERE sop_uid=?", (json.dumps(old), sop_uid))
        ex("UPDATE studies SET study_json=?", (json.dumps(study),))
        ex("UPDATE meta SET value='1' WHERE key='metadata'")
    store.index._transact(work)
    store.forget_cached_rows()  # rewritten behind the store's back, in place


def instance_attributes(store: Store) -> dict:
    [item] = store.search(parse_query([("includefield", "all")], "instance")).items
    return item


def study_json(store: Store) -> dict:
    with store.index._read() as ex:
        return json.loads(ex("SELECT study_json FROM studies").fetchone()[0])


def test_old_metadata_is_rederived_from_the_blob_when_the_store_opens(tmp_path, make_store):
    ds, path = write_instance(tmp_path / "src")
    expected = read_instance(path).metadata
    assert PATIENT_GROUP_LENGTH not in expected and TRAILING_PADDING in expected and expected[SMALLEST_PIXEL]["vr"] == "SS"
    store = make_store()
    store.store_files([path], move=False)
    make_old(store, ds.SOPInstanceUID)
    [row] = store.instances(None, None, ds.SOPInstanceUID)
    assert json.loads(row.metadata_text) == old_way(expected)  # what an old store serves
    assert PATIENT_GROUP_LENGTH in instance_attributes(store) and PATIENT_GROUP_LENGTH in study_json(store)
    stored = row.stored
    store.close()

    store = make_store()  # opening refreshes
    [row] = store.instances(None, None, ds.SOPInstanceUID)
    assert json.loads(row.metadata_text) == expected
    assert row.stored == stored
    assert instance_attributes(store)[SMALLEST_PIXEL] == {"vr": "SS", "Value": [-5]}
    assert PATIENT_GROUP_LENGTH not in instance_attributes(store) and PATIENT_GROUP_LENGTH not in study_json(store)
    assert store.index.metadata_floor() == METADATA_VERSION
    assert store.refresh_metadata() == 0  # once
    with store.index._read() as ex:
        assert ex("SELECT metadata_version FROM instances").fetchall()[0][0] == METADATA_VERSION


def test_a_first_release_store_gets_its_metadata_rederived(tmp_path):
    """A schema-1 index (the only one that can hold metadata of the old format) is migrated, and its
    metadata re-derived, rows and study alike."""
    root = tmp_path / "old"
    ds, path = write_instance(tmp_path / "src")
    expected = read_instance(path).metadata
    store = Store(root)
    store.store_files([path], move=False)
    store.close()
    _downgrade_to_schema_1(root / "index.sqlite")
    conn = sqlite3.connect(root / "index.sqlite")
    old = old_way(expected)
    conn.execute("UPDATE instances SET metadata=?", (json.dumps(old),))
    study = json.loads(conn.execute("SELECT study_json FROM studies").fetchone()[0])
    conn.execute("UPDATE studies SET study_json=?", (json.dumps({**study, PATIENT_GROUP_LENGTH: old[PATIENT_GROUP_LENGTH]}),))
    conn.commit()
    conn.close()

    store = Store(root)
    [row] = store.instances(None, None, ds.SOPInstanceUID)
    assert json.loads(row.metadata_text) == expected
    assert PATIENT_GROUP_LENGTH not in instance_attributes(store) and PATIENT_GROUP_LENGTH not in study_json(store)
    matches = store.search(parse_query([("PatientName", "phantom*")], "study")).items  # text index built for old rows
    assert [m["0020000D"]["Value"][0] for m in matches] == [ds.StudyInstanceUID]
    store.close()

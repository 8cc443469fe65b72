"""The change feed in the store (each backend): a scripted sequence of creates, re-STOWs and deletes
gives Azure's entries and states; windows by time and by sequence; one gapless order with several
writing processes, seen in that order by a reader while they write; a store made before the feed gets an
entry per instance it holds; deleting leaves the blobs as garbage for reads under way."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from pathlib import Path

import pytest

from dicomweb_nb import samples
from dicomweb_nb.store import Store
from dicomweb_nb.store.changefeed import (
    ChangeFeedError,
    FeedRequest,
    feed_entry,
    format_time,
    parse_feed_request,
    parse_time,
    read_feed,
)
from dicomweb_nb.store.index.changes import plan
from dicomweb_nb.store.schema import SCHEMA_VERSION
from tests.fixtures.consistency import check_store_consistent

from .test_team_store import run_together

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def series(n, **kwargs):
    return samples.generate_ct_series(n, rows=8, columns=8, **kwargs)


def feed(store: Store, **kwargs) -> list[tuple[int, str, str, str]]:
    return [(e.sequence, e.action, e.sop_uid, e.state) for e in store.changes(limit=200, **kwargs)]


def test_creates_restows_and_deletes_give_azures_entries_and_states(tmp_path, make_store):
    store = make_store()
    first = series(3, patient_id="FEED-1")
    a, b, c = (str(ds.SOPInstanceUID) for ds in first)
    study, series_uid = str(first[0].StudyInstanceUID), str(first[0].SeriesInstanceUID)
    assert store.latest_change() is None and store.changes() == []

    store.store_files(samples.write_series(first, tmp_path / "1"), move=False)        # 1-3: create a, b, c
    changed = copy.deepcopy(first[0])
    changed.StudyDescription = "corrected"
    store.store_files(samples.write_series([changed], tmp_path / "2"), move=False)    # 4: re-STOW of a
    store.delete(study, series_uid, b)                                                # 5: delete b
    store.store_files(samples.write_series([first[1]], tmp_path / "3"), move=False)   # 6: b again
    store.delete(study, series_uid, c)                                                # 7: delete c

    assert feed(store) == [
        (1, "create", a, "replaced"),   # replaced by the re-STOW
        (2, "create", b, "replaced"),   # deleted, then stored again: every earlier entry is replaced
        (3, "create", c, "deleted"),
        (4, "create", a, "current"),
        (5, "delete", b, "replaced"),
        (6, "create", b, "current"),
        (7, "delete", c, "deleted"),
    ]
    entries = store.changes()
    # Metadata: the instance's current version, for replaced entries too (as Azure); none once deleted.
    assert json.loads(entries[0].metadata_text)["00081030"]["Value"] == ["corrected"]
    assert json.loads(entries[3].metadata_text)["00081030"]["Value"] == ["corrected"]
    assert entries[2].metadata_text is None and entries[6].metadata_text is None
    assert all(e.metadata_text is None for e in store.changes(include_metadata=False))
    # Timestamps never go backwards along the sequence.
    assert [e.timestamp for e in entries] == sorted(e.timestamp for e in entries)
    latest = store.latest_change()
    assert (latest.sequence, latest.action, latest.state) == (7, "delete", "deleted")

    # Azure's JSON, with absolute BulkDataURIs when the instance URL is known.
    entry = feed_entry(entries[3], lambda st, se, i: f"http://x/dicom-web/studies/{st}/series/{se}/instances/{i}")
    assert list(entry) == ["Sequence", "StudyInstanceUid", "SeriesInstanceUid", "SopInstanceUid", "Action", "Timestamp",
                           "State", "Metadata"]
    assert entry["Timestamp"].endswith("Z") and parse_time(entry["Timestamp"]) == entries[3].timestamp
    assert entry["Metadata"]["7FE00010"]["BulkDataURI"].startswith(f"http://x/dicom-web/studies/{study}/series/")
    assert "Metadata" not in feed_entry(entries[3], include_metadata=False)
    assert check_store_consistent(store)["instances"] == 2


def test_windows_by_time_and_by_sequence(tmp_path, make_store):
    store = make_store()
    for batch in range(4):
        store.store_files(samples.write_series(series(3, patient_id=f"WIN-{batch}"), tmp_path / str(batch)), move=False)
        time.sleep(0.02)
    everything = store.changes(limit=200)
    assert [e.sequence for e in everything] == list(range(1, 13))
    # Version 2: startTime inclusive, endTime exclusive, offset counts within the window.
    start, end = everything[3].timestamp, everything[9].timestamp
    window = read_feed(store, parse_feed_request({"startTime": [format_time(start)], "endTime": [format_time(end)]}))
    assert [e.sequence for e in window] == list(range(4, 10))
    page = read_feed(store, parse_feed_request({"startTime": [format_time(start)], "offset": ["2"], "limit": ["3"]}))
    assert [e.sequence for e in page] == [6, 7, 8]
    assert [e.sequence for e in read_feed(store, FeedRequest(offset=10))] == [11, 12]
    # Version 1: offset is the last sequence seen, limit the span of sequences after it.
    version_1 = parse_feed_request({"offset": ["5"], "limit": ["4"]}, version=1)
    assert [e.sequence for e in read_feed(store, version_1)] == [6, 7, 8, 9]
    assert parse_feed_request({}, version=1) == FeedRequest(limit=10, after=0)
    assert parse_feed_request({}) == FeedRequest(limit=100)


@pytest.mark.parametrize("params, version, message", [
    ({"limit": ["0"]}, 2, "limit=0 is out of range: it must be from 1 to 200"),
    ({"limit": ["201"]}, 2, "from 1 to 200"),
    ({"limit": ["101"]}, 1, "from 1 to 100"),
    ({"offset": ["-1"]}, 2, "offset=-1 is out of range"),
    ({"offset": ["x"]}, 2, "offset='x' is not an integer"),
    ({"startTime": ["yesterday"]}, 2, "startTime='yesterday' is not an ISO 8601 date-time"),
    ({"startTime": ["2024-01-02"], "endTime": ["2024-01-01"]}, 2, "endTime (2024-01-01) must be later than startTime"),
    ({"includeMetadata": ["maybe"]}, 2, "includeMetadata='maybe' must be true or false"),
    ({"startTime": ["2024-01-01"]}, 1, "startTime is a parameter of the version 2 change feed"),
])
def test_bad_parameters_say_which_and_why(params, version, message):
    with pytest.raises(ChangeFeedError, match=re.escape(message)):
        parse_feed_request(params, version=version)


def test_parameter_names_in_any_case_and_times_in_any_zone():
    request = parse_feed_request({"STARTTIME": ["2024-05-10T18:00:00+02:00"], "includemetadata": ["False"], "Limit": ["7"]})
    assert request.start == parse_time("2024-05-10T16:00:00Z") == parse_time("2024-05-10T16:00:00")
    assert (request.include_metadata, request.limit) == (False, 7)
    assert format_time(parse_time("2024-05-10T16:00:00.123456Z")) == "2024-05-10T16:00:00.123456Z"


def test_several_processes_write_one_gapless_order_a_reader_follows_as_it_grows(tmp_path, make_store):
    """Four processes store 32 instances at once while this one reads the feed after the last
    sequence it saw: every read continues exactly where the previous one ended (no entry appears
    later below a sequence already seen), and in the end there is one create per instance."""
    store = make_store()
    datasets = series(32, patient_id="ORDER-1")
    files = samples.write_series(datasets, tmp_path / "src")
    seen: list[int] = []
    errors: list[str] = []
    done = threading.Event()

    def follow() -> None:
        while not done.is_set() or len(seen) < 32:
            entries = store.changes(after=seen[-1] if seen else 0, limit=100)
            expected = list(range(len(seen) + 1, len(seen) + 1 + len(entries)))
            if [e.sequence for e in entries] != expected:
                errors.append(f"after {len(seen)} entries read {[e.sequence for e in entries]}")
                return
            seen.extend(e.sequence for e in entries)
            time.sleep(0.001)

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        run_together(store.root, {**store.backend_kwargs, "garbage_grace": 0}, [files[i::4] for i in range(4)], batch=2)
    finally:
        done.set()
        reader.join(timeout=60)
    assert not errors, errors[0]
    entries = store.changes(limit=200)
    assert [e.sequence for e in entries] == list(range(1, 33)) == seen
    assert {e.sop_uid for e in entries} == {str(ds.SOPInstanceUID) for ds in datasets}
    assert {(e.action, e.state) for e in entries} == {("create", "current")}
    assert [e.timestamp for e in entries] == sorted(e.timestamp for e in entries)


def test_a_store_made_before_the_change_feed_gets_an_entry_per_instance_in_the_order_stored(tmp_path, make_store):
    """Schema step 6 on an index of version 5 (the one before it): a 'create' for each instance, in
    the order they were stored; the feed goes on from there."""
    store = make_store()
    for batch in range(2):
        store.store_files(samples.write_series(series(2, patient_id=f"OLD-{batch}"), tmp_path / str(batch)), move=False)
    with store.index._read() as ex:
        order = [row["sop_uid"] for row in ex("SELECT sop_uid FROM instances ORDER BY stored, id")]
    store.index._transact(lambda ex: [ex("DROP TABLE changes"), ex("UPDATE meta SET value='5' WHERE key='schema'")])
    store.close()

    store = make_store()
    with store.index._read() as ex:
        assert ex("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
    assert feed(store) == [(n + 1, "create", sop, "current") for n, sop in enumerate(order)]
    more = series(1, patient_id="OLD-9")
    store.store_files(samples.write_series(more, tmp_path / "more"), move=False)
    assert store.latest_change().sequence == 5
    assert [e.timestamp for e in store.changes()] == sorted(e.timestamp for e in store.changes())


def test_a_deleted_blob_stays_readable_for_its_grace_then_is_swept(tmp_path, make_store):
    store = make_store(garbage_grace=None)  # as a server opens it: deletions keep their blobs a while
    datasets = series(2, patient_id="GRACE-1")
    store.store_files(samples.write_series(datasets, tmp_path / "src"), move=False)
    rows = store.instances(str(datasets[0].StudyInstanceUID))
    assert store.delete(str(datasets[0].StudyInstanceUID)) == 2
    assert store.counts()["instances"] == 0
    # A read that had the rows before the delete still gets the bytes ...
    assert all(row.blob.read()[128:132] == b"DICM" for row in rows)
    check_store_consistent(store)  # the blobs are garbage, not orphans
    store.sweep()
    assert all(store.blobs.exists(row.blob.key) for row in rows)
    # ... until the grace period is over.
    store.sweep(now=time.time() + store.deletion_grace + 1)
    assert not any(store.blobs.exists(row.blob.key) for row in rows)
    assert check_store_consistent(store)["instances"] == 0


def test_rows_whose_blob_vanished_are_recorded_as_deleted(tmp_path):
    store = Store(tmp_path / "s", garbage_grace=0)
    datasets = series(2, patient_id="VANISH-1")
    store.store_files(samples.write_series(datasets, tmp_path / "src"), move=False)
    [row] = store.instances(None, None, str(datasets[1].SOPInstanceUID))
    store.close()
    Path(row.blob.local_path).unlink()
    store = Store(tmp_path / "s", garbage_grace=0)  # alone: reconciled at start-up
    assert feed(store)[-1] == (3, "delete", str(datasets[1].SOPInstanceUID), "deleted")
    store.close()


def test_the_entries_of_one_transaction_take_their_states_from_each_instances_last_event():
    a, b, c = (("1.2.3", "1.2.3.1", f"1.2.3.1.{n}") for n in (1, 2, 3))
    batch = plan((7, 1_000), created=[a, b, a], deleted=[c, b], now=500)  # the clock went back: the feed does not
    assert batch.rows == [
        (8, 1_000, "delete", *c, "deleted"),
        (9, 1_000, "delete", *b, "replaced"),  # b is stored again later in the batch
        (10, 1_000, "create", *a, "replaced"),  # a's second store replaces it
        (11, 1_000, "create", *b, "current"),
        (12, 1_000, "create", *a, "current"),
    ]
    assert (sorted(batch.replaced), batch.deleted) == ([a[2], b[2]], [c[2]])
    first = plan(None, created=[a], now=42)
    assert first.rows == [(1, 42, "create", *a, "current")] and first.replaced == [a[2]] and first.deleted == []

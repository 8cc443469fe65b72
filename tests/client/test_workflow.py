"""``pacs.delete`` and ``pacs.changes`` against our server over HTTP and in-process on the workspace
store (every store backend): the same answers both ways; a whole study needs ``confirm=True``;
deleted instances leave the frame cache; Orthanc, which has no change feed, gives a clear error."""

from __future__ import annotations

import copy

import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.client import cache as frame_cache_module
from tests.fixtures.backends import open_store
from tests.fixtures.ourserver import start_standalone

pytestmark = [pytest.mark.usefixtures("use_store_backend"), pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(params=["http", "in-process"])
def pacs(request, tmp_path, store_backend):
    """A client of a new, empty store: over HTTP from our server, or in-process on the folder."""
    folder = tmp_path / ".dicomweb"
    open_store(folder, store_backend).close()  # a team store leaves its marker for dw.connect()
    if request.param == "in-process":
        with dw.connect(store=folder, progress=False) as client:
            yield client
        return
    server = start_standalone(tmp_path, folder)
    try:
        with dw.connect(server.dicomweb_url, progress=False) as client:
            yield client
    finally:
        server.stop()


def series(n: int, patient: str, **kwargs):
    return samples.generate_ct_series(n, rows=8, columns=8, patient_id=patient, **kwargs)


def test_delete_at_each_level_and_what_the_feed_says(pacs):
    first = series(3, "WF-1")
    other = series(2, "WF-1", study_uid=first[0].StudyInstanceUID, series_number=2)
    assert (pacs.store(first + other).status == "stored").all()
    study, s1, s2 = (str(x) for x in (first[0].StudyInstanceUID, first[0].SeriesInstanceUID, other[0].SeriesInstanceUID))

    pacs.delete(study, s1, str(first[0].SOPInstanceUID))
    assert len(pacs.instances(study, s1)) == 2
    pacs.delete(study, s2)
    assert list(pacs.series(study).SeriesInstanceUID) == [s1]
    with pytest.raises(dw.errors.ConfirmationRequired, match="confirm=True"):
        pacs.delete(study)
    assert len(pacs.instances(study)) == 2  # nothing happened
    pacs.delete(study, confirm=True)
    assert pacs.studies(PatientID="WF-1").empty
    with pytest.raises(dw.errors.NotFound, match="not in this store"):
        pacs.delete(study, confirm=True)
    with pytest.raises(ValueError, match="must be a UID"):
        pacs.delete("../etc", confirm=True)
    with pytest.raises(ValueError, match="series UID along with the instance"):
        pacs.delete(study, instance=str(first[1].SOPInstanceUID))

    feed = pacs.changes()
    assert list(feed.columns) == ["Sequence", "Timestamp", "Action", "State", "StudyInstanceUID", "SeriesInstanceUID",
                                  "SOPInstanceUID"]
    assert list(feed.Sequence) == list(range(1, 11))
    assert list(feed.Action) == ["create"] * 5 + ["delete"] * 5
    assert set(feed.State) == {"deleted"}
    assert str(feed.Timestamp.dtype).startswith("datetime64") and str(feed.Timestamp.dt.tz) == "UTC"
    assert list(feed.SeriesInstanceUID[5:]) == [s1, s2, s2, s1, s1]
    assert pacs.latest_sequence() == 10


def test_changes_since_windows_limits_and_metadata(pacs):
    assert pacs.latest_sequence() == 0
    empty = pacs.changes()
    assert empty.empty and list(empty.columns)[:3] == ["Sequence", "Timestamp", "Action"]
    batches = [series(3, f"WIN-{i}") for i in range(3)]
    for batch in batches:
        pacs.store(batch)
    again = copy.deepcopy(batches[0][0])
    again.StudyDescription = "sent again"
    pacs.store([again])
    everything = pacs.changes()
    assert list(everything.Sequence) == list(range(1, 11))
    assert list(everything.State) == ["replaced"] + ["current"] * 9
    since = pacs.changes(since=6)
    assert list(since.Sequence) == [7, 8, 9, 10]
    assert list(pacs.changes(since=6, limit=2).Sequence) == [7, 8]
    assert pacs.changes(since=10).empty
    # A time window [start, end): datetimes or ISO strings, naive ones in UTC.
    start = everything.Timestamp[3]
    end = everything.Timestamp[9]
    window = pacs.changes(start=start, end=end.isoformat())
    assert set(window.Sequence) == set(everything.Sequence[(everything.Timestamp >= start) & (everything.Timestamp < end)])
    assert list(pacs.changes(start=start.tz_localize(None).to_pydatetime(), since=8).Sequence) == [9, 10]
    # Metadata: the current DICOM JSON of what exists.
    with_metadata = pacs.changes(since=9, metadata=True)
    assert with_metadata.Metadata[0]["00081030"]["Value"] == ["sent again"]
    assert pacs.changes(metadata=True).Metadata[0]["00081030"]["Value"] == ["sent again"]  # replaced: its replacement's
    # More than one page of the feed (pages of 200).
    many = series(205, "MANY")
    pacs.store(many, batch_size=100)
    assert list(pacs.changes(since=10).Sequence) == list(range(11, 216))
    with pytest.raises(ValueError, match="since must be the Sequence"):
        pacs.changes(since=-1)
    with pytest.raises(ValueError, match="not a date-time"):
        pacs.changes(start="whenever")
    with pytest.raises(TypeError, match="start must be a datetime"):
        pacs.changes(start=12)


def test_a_deleted_instance_leaves_the_frame_cache(tmp_path, our_server, monkeypatch):
    cache = frame_cache_module.FrameCache(tmp_path / "cache", 1 << 30)
    monkeypatch.setattr(frame_cache_module, "frame_cache", lambda config=None: cache)
    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        datasets = series(3, "CACHED-1")
        pacs.store(datasets)
        study, ser = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
        volume = pacs.volume(study, ser, lazy=True)
        volume.array.compute()
        cache.flush()
        assert cache.info()["frames"] == 3
        pacs.delete(study, ser, str(datasets[0].SOPInstanceUID))
        assert cache.info()["frames"] == 2
        pacs.delete(study, confirm=True)
        assert cache.info()["frames"] == 0
    cache.close()


def test_a_read_only_server_refuses_changes_with_its_reason(tmp_path, store_backend):
    """``pacs.delete`` raises Forbidden saying the server is read-only; ``pacs.store`` reports each
    dataset failed with that reason; nothing changed, and reading and the change feed go on."""
    folder = tmp_path / ".dicomweb"
    datasets = series(2, "RO-CLIENT")
    open_store(folder, store_backend).close()  # a team store leaves its marker for dw.connect()
    with dw.connect(store=folder, progress=False) as local:
        assert (local.store(datasets).status == "stored").all()
    server = start_standalone(tmp_path, folder, "-c", "read_only=true")
    try:
        with dw.connect(server.dicomweb_url, progress=False) as pacs:
            study = str(datasets[0].StudyInstanceUID)
            with pytest.raises(dw.errors.Forbidden, match=r"read-only \(c\.DicomWeb\.read_only\)") as caught:
                pacs.delete(study, confirm=True)
            assert caught.value.status == 403 and "would change the stored data" in caught.value.server_message
            with pytest.raises(dw.errors.Forbidden, match="read-only"):
                pacs.delete(study, str(datasets[0].SeriesInstanceUID), str(datasets[0].SOPInstanceUID))
            report = pacs.store(series(1, "RO-CLIENT-NEW"))
            assert list(report.status) == ["failed"] and "read-only" in report.error[0]
            assert len(pacs.instances(study)) == 2
            assert pacs.studies(PatientID="RO-CLIENT-NEW").empty
            assert list(pacs.changes().Action) == ["create", "create"]
    finally:
        server.stop()


@pytest.mark.orthanc
def test_a_server_without_a_change_feed_says_so(orthanc):
    with dw.connect(orthanc.dicomweb_url, progress=False) as pacs:
        with pytest.raises(dw.errors.NotFound, match="has no change feed"):
            pacs.changes()
        with pytest.raises(dw.errors.DicomWebError) as caught:
            pacs.delete("1.2.3.4.5", confirm=True)
        assert caught.value.status in (404, 405)

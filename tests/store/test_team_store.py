"""Several processes on one store (each backend; the point of PostgreSQL + S3): concurrent STOW of
the same and of different instances, QIDO from another process, kill -9 mid-STOW, jobs claimed
once; and what a team store adds: schema versions, object-storage grace, group modes, secrets."""

from __future__ import annotations

import copy
import grp
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dicomweb_nb import samples
from dicomweb_nb.dicom.query import parse_query
from dicomweb_nb.store import FAILURE_DUPLICATE, Store, StoreError
from dicomweb_nb.store.schema import SCHEMA_VERSION
from tests.fixtures.consistency import check_store_consistent

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WORKER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    from dicomweb_nb.store import Store

    root, kwargs, go, batch, *files = sys.argv[1:]
    store = Store(root, **json.loads(kwargs))
    print("ready", flush=True)
    while not os.path.exists(go):  # all workers start storing together
        time.sleep(0.002)
    outcomes = []
    for start in range(0, len(files), int(batch)):
        for o in store.store_files(files[start:start + int(batch)], move=False):
            outcomes.append({"sop": o.sop_uid, "stored": o.stored, "replaced": o.replaced,
                             "failure": o.failure_reason, "message": o.message})
    print(json.dumps(outcomes), flush=True)
    store.close()
''')


def series(n, **kwargs):
    return samples.generate_ct_series(n, rows=8, columns=8, **kwargs)


def start_workers(root: Path, kwargs: dict, groups: list[list[Path]], go: Path, batch: int = 4) -> list[subprocess.Popen]:
    workers = []
    for files in groups:
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(root), json.dumps(kwargs), str(go), str(batch),
                                 *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        workers.append(proc)
    return workers


def run_together(root: Path, kwargs: dict, groups: list[list[Path]], batch: int = 4) -> list[list[dict]]:
    go = root.parent / f"go-{time.monotonic_ns()}"
    workers = start_workers(root, kwargs, groups, go, batch)
    go.touch()
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def versions_of_one_instance(tmp_path: Path, count: int) -> list[Path]:
    """``count`` files of one SOP Instance, each with its own StudyDescription."""
    original = series(1, patient_id="SAME-1")[0]
    files = []
    for i in range(count):
        ds = copy.deepcopy(original)
        ds.StudyDescription = f"version {i}"
        files += samples.write_series([ds], tmp_path / f"v{i}")
    return files


def description(store: Store, sop: str) -> str:
    [row] = store.instances(None, None, sop)
    return json.loads(row.metadata_text)["00081030"]["Value"][0]


@pytest.mark.parametrize("policy", ["replace", "reject", "keep"])
def test_concurrent_stow_of_one_instance_from_several_processes(tmp_path, make_store, policy):
    store = make_store(duplicates=policy)
    files = versions_of_one_instance(tmp_path, 4)
    kwargs = {**store.backend_kwargs, "duplicates": policy, "garbage_grace": 0}
    results = [r[0] for r in run_together(store.root, kwargs, [[f] for f in files])]
    stored = [r for r in results if r["stored"]]
    if policy == "replace":  # everyone stored; the last commit won, the others' versions were replaced
        assert len(stored) == 4 and sum(not r["replaced"] for r in results) == 1
    elif policy == "reject":  # exactly one stored, the others refused as duplicates
        assert len(stored) == 1 and sorted(r["failure"] for r in results if not r["stored"]) == [FAILURE_DUPLICATE] * 3
    else:  # keep: all answered stored, one really written, the others kept it
        assert len(stored) == 4 and sum("kept" in r["message"] for r in results) == 3
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 1}
    assert description(store, results[0]["sop"]).startswith("version ")
    if policy == "reject":
        winner = files[results.index(stored[0])]
        assert description(store, results[0]["sop"]) == f"version {winner.parent.name[1:]}"


def test_concurrent_stow_of_different_instances_into_one_series(tmp_path, make_store):
    store = make_store()
    datasets = series(24, patient_id="MANY-1")
    files = samples.write_series(datasets, tmp_path / "src")
    groups = [files[i::4] for i in range(4)]
    results = run_together(store.root, {**store.backend_kwargs, "garbage_grace": 0}, groups, batch=3)
    assert all(r["stored"] for group in results for r in group)
    # Nothing lost, nothing twice, and the counts every writer updated are right.
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 24}
    [study] = store.search(parse_query([("PatientID", "MANY-1")], "study")).items
    assert study["00201208"]["Value"] == [24] and study["00201206"]["Value"] == [1]


def test_qido_from_another_process_sees_every_committed_instance(tmp_path, make_store):
    reader = make_store()
    files = samples.write_series(series(6, patient_id="SEEN-1"), tmp_path / "src")
    run_together(reader.root, {**reader.backend_kwargs}, [files[:3], files[3:]])
    found = reader.search(parse_query([("PatientID", "SEEN-1")], "instance")).items
    assert len(found) == 6
    assert {row.blob.read() for row in reader.instances(found[0]["0020000D"]["Value"][0])} == {f.read_bytes() for f in files}


KILLED = textwrap.dedent('''
    import itertools, json, os, sys
    from dicomweb_nb.store import Store

    root, kwargs, *files = sys.argv[1:]
    store = Store(root, **json.loads(kwargs))
    real_put = store.blobs.put
    numbers = itertools.count(1)  # puts may run on several threads (object storage)

    def put(*args, **kw):  # the third blob is written, then the process stops dead, mid-batch
        number = next(numbers)
        size = real_put(*args, **kw)
        if number == 3:
            print("dying", flush=True)
            os.kill(os.getpid(), 9)
        return size
    store.blobs.put = put
    store.store_files(files[:2], move=False)  # committed
    store.store_files(files[2:], move=False)  # killed inside
''')


def test_a_process_killed_mid_stow_leaves_the_survivor_a_consistent_store(tmp_path, make_store):
    survivor = make_store(sweep_interval=0)
    before = samples.write_series(series(2, patient_id="SURVIVOR"), tmp_path / "mine")
    survivor.store_files(before, move=False)
    victims = series(5, patient_id="VICTIM")
    victim_files = samples.write_series(victims, tmp_path / "victim")
    result = subprocess.run([sys.executable, "-c", KILLED, str(survivor.root), json.dumps(survivor.backend_kwargs),
                             *map(str, victim_files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9 and "dying" in result.stdout, result.stderr
    # The victim's write intents and blob are left; the survivor (never alone) sweeps them once the
    # victim is seen dead (PostgreSQL drops its session lock when it notices the closed connection).
    assert survivor.index.intent_keys()
    swept, deadline = 0, time.monotonic() + 30
    while survivor.index.intent_keys() and time.monotonic() < deadline:
        swept += survivor.sweep()["intents"]
        time.sleep(0.05)
    assert swept == 3 and not survivor.index.intent_keys()  # the killed batch's blobs, written or not
    assert check_store_consistent(survivor) == {"studies": 2, "series": 2, "instances": 4}
    found = survivor.search(parse_query([("PatientID", "VICTIM")], "instance")).items
    assert len(found) == 2  # the committed batch, whole; the killed one absent
    for ds, path in zip(victims[:2], victim_files[:2]):
        assert survivor.instances(None, None, ds.SOPInstanceUID)[0].blob.read() == path.read_bytes()


CLAIM = textwrap.dedent('''
    import json, os, sys, time
    from dicomweb_nb.store import Store

    root, kwargs, go, job_id = sys.argv[1:]
    store = Store(root, **json.loads(kwargs))
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    print(json.dumps(store.claim_job(job_id, from_states=("Pending",), to_state="Running")), flush=True)
    store.close()
''')


def test_a_job_is_claimed_by_one_process_only(tmp_path, make_store):
    store = make_store()
    for n in range(2):
        job_id = f"job-{n}"
        store.save_job(job_id, {"id": job_id, "state": "Pending", "owner": {"session": store.session}})
        go = tmp_path / f"go-{n}"
        procs = []
        for _ in range(3):
            proc = subprocess.Popen([sys.executable, "-c", CLAIM, str(store.root), json.dumps(store.backend_kwargs),
                                     str(go), job_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            procs.append(proc)
        go.touch()
        claims = [json.loads(p.communicate(timeout=60)[0].strip()) for p in procs]
        assert sorted(claims) == [False, False, True], claims
    assert not store.claim_job("job-0", from_states=("Pending",), to_state="Running")


def test_cancel_asked_through_another_process_reaches_the_owner(make_store):
    store = make_store()
    other = make_store()  # the same store, as a second process would open it
    store.save_job("job-x", {"id": "job-x", "state": "Running", "owner": {"session": store.session}})
    assert not store.job_cancel_requested("job-x")
    assert other.request_job_cancel("job-x")
    assert store.job_cancel_requested("job-x")


# -- schema versions ---------------------------------------------------------------------------------

def _downgrade_to_schema_1(path: Path) -> None:
    """Turn a fresh SQLite index into what the first release wrote (schema 1)."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        DROP TRIGGER studies_text_insert; DROP TRIGGER studies_text_delete; DROP TRIGGER studies_text_update;
        DROP TRIGGER series_text_insert; DROP TRIGGER series_text_delete; DROP TRIGGER series_text_update;
        DROP TABLE studies_text; DROP TABLE series_text;
        ALTER TABLE studies DROP COLUMN match; ALTER TABLE series DROP COLUMN match;
        ALTER TABLE instances DROP COLUMN metadata_version; DELETE FROM meta WHERE key='metadata';
        DROP TABLE intents; DROP TABLE garbage; DROP TABLE servers; DROP TABLE changes;
        CREATE TABLE jobs1 (id TEXT PRIMARY KEY, definition TEXT NOT NULL, updated REAL NOT NULL);
        INSERT INTO jobs1 SELECT id, definition, updated FROM jobs;
        DROP TABLE jobs; ALTER TABLE jobs1 RENAME TO jobs;
        ALTER TABLE instances DROP COLUMN summary;
        UPDATE meta SET value='1' WHERE key='schema';
    """)
    conn.commit()
    conn.close()


def test_a_schema_1_store_opens_and_is_migrated_in_place(tmp_path):
    root = tmp_path / "old"
    store = Store(root)
    files = samples.write_series(series(3, patient_id="OLD-1"), tmp_path / "src")
    store.store_files(files, move=False)
    store.save_job("j1", {"id": "j1", "state": "Success"})
    store.close()
    _downgrade_to_schema_1(root / "index.sqlite")
    assert "intents" not in {r[0] for r in sqlite3.connect(root / "index.sqlite").execute("SELECT name FROM sqlite_master")}

    store = Store(root)
    conn = sqlite3.connect(root / "index.sqlite")
    assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (str(SCHEMA_VERSION),)
    assert conn.execute("SELECT COUNT(*) FROM changes WHERE action='create'").fetchone() == (3,)  # the feed knows them
    assert conn.execute("SELECT state FROM jobs WHERE id='j1'").fetchone() == ("Success",)
    conn.close()
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 3}
    assert store.load_jobs()["j1"]["state"] == "Success"
    found = store.search(parse_query([], "instance")).items  # from the metadata of instances without a summary
    assert sorted(item["00200013"]["Value"][0] for item in found) == [1, 2, 3]
    more = samples.write_series(series(2, patient_id="OLD-1"), tmp_path / "more")
    assert all(o.stored for o in store.store_files(more, move=False))  # intents and garbage work on it
    store.close()


def test_a_store_of_a_newer_version_says_what_to_do(tmp_path, make_store):
    store = make_store()
    store.index._transact(lambda ex: ex("UPDATE meta SET value='99' WHERE key='schema'"))
    store.close()
    with pytest.raises(StoreError, match=r"schema 99, made by a newer dicomweb-nb.*pip install -U dicomweb-nb"):
        make_store()


# -- object storage, modes, secrets ---------------------------------------------------------------------

def test_a_replaced_object_stays_readable_for_its_grace_period(tmp_path, make_store):
    store = make_store(garbage_grace=3600)
    original = series(1, patient_id="GRACE-1")[0]
    changed = copy.deepcopy(original)
    changed.StudyDescription = "second"
    store.store_files(samples.write_series([original], tmp_path / "a"), move=False)
    old = store.instances(None, None, original.SOPInstanceUID)[0].blob
    store.store_files(samples.write_series([changed], tmp_path / "b"), move=False)
    assert old.read() == samples.dataset_bytes(original)  # a reader that started before still gets it whole
    assert store.sweep()["garbage"] == 0
    store.index._transact(lambda ex: ex("UPDATE garbage SET due=0"))
    assert store.sweep()["garbage"] == 1 and not store.blobs.exists(old.key)
    assert check_store_consistent(store)["instances"] == 1


def test_a_sweep_never_removes_the_staging_folder_of_a_store_being_opened(make_store, store_backend):
    """Found by CI: a sweep in one store met another store's staging folder after its mkdir and
    before its lock; the sweep took the free lock and removed the folder the new store then used."""
    if not store_backend.team:
        pytest.skip("a folder store stages in its own tmp/, which no sweep of another process touches")
    sweeper = make_store()
    import threading

    stop = threading.Event()
    sweeps = []

    def sweep_all_the_time():
        while not stop.is_set():
            sweeps.append(sweeper._sweep_staging())

    thread = threading.Thread(target=sweep_all_the_time)
    thread.start()
    try:
        for _ in range(60):
            opened = Store(sweeper.root, **sweeper.backend_kwargs, garbage_grace=0)
            try:
                held = os.fstat(opened._tmp_lock.fileno())
                named = (opened.tmp_dir / ".lock").stat()
                assert (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino), "the staging folder went"
            finally:
                opened.close()
    finally:
        stop.set()
        thread.join()
    assert len(sweeps) > 1
    assert [p.name for p in sweeper.tmp_dir.parent.iterdir()] == [sweeper.tmp_dir.name]  # closed ones removed


def test_a_dead_process_staging_folder_is_swept_and_a_half_made_one_waits(make_store, store_backend):
    if not store_backend.team:
        pytest.skip("team stores only")
    from dicomweb_nb.store.store import STAGING_IN_MAKING, STAGING_MAKING_GRACE

    store = make_store()
    base = store.tmp_dir.parent
    dead = base / "gone-host-1-abc"
    dead.mkdir()
    (dead / ".lock").touch()
    (dead / "upload.part").write_bytes(b"x")
    making = base / f"{STAGING_IN_MAKING}other-2-def"
    making.mkdir()
    assert store._sweep_staging() == 1 and not dead.exists() and making.exists()
    assert store._sweep_staging(now=time.time() + STAGING_MAKING_GRACE + 1) == 1 and not making.exists()
    assert store.tmp_dir.is_dir()  # its own, never


def test_frames_are_read_as_byte_ranges(tmp_path, make_store):
    from dicomweb_nb.store import reader

    store = make_store()
    ds = samples.generate_ct_series(1, rows=64, columns=64, patient_id="RANGE-1")[0]
    store.store_files(samples.write_series([ds], tmp_path / "src"), move=False)
    [row] = store.instances(ds.StudyInstanceUID)
    calls = []
    real = store.blobs.read
    store.blobs.read = lambda key, start, end: calls.append((start, end)) or real(key, start, end)
    assert reader.read_stored_frame(row, 0) == ds.PixelData
    [(start, end)] = calls
    assert end - start == len(ds.PixelData) < row.size


def test_group_modes_for_a_shared_folder(tmp_path):
    group = grp.getgrgid(os.getgid()).gr_name
    store = Store(tmp_path / "shared", group=group)
    store.store_files(samples.write_series(series(1, patient_id="GROUP-1"), tmp_path / "src"), move=False)
    [row] = store.instances(None)
    path = row.blob.local_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o2770
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o2770
    assert path.stat().st_gid == os.getgid()
    with pytest.raises(ValueError, match="does not exist"):
        Store(tmp_path / "other", group="no-such-group-dicomweb")


def test_owner_only_without_a_group(tmp_path):
    store = Store(tmp_path / "private")
    store.store_files(samples.write_series(series(1, patient_id="PRIVATE-1"), tmp_path / "src"), move=False)
    [row] = store.instances(None)
    assert stat.S_IMODE(row.blob.local_path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(row.blob.local_path.parent.stat().st_mode) & 0o077 == 0


def test_database_passwords_never_appear_in_errors(tmp_path):
    with pytest.raises(ValueError) as caught:
        Store(tmp_path / "s", database="postgresql://alice:s3cr3t-pw@127.0.0.1:1/db")
    assert "s3cr3t-pw" not in str(caught.value) and "alice:***@127.0.0.1:1" in str(caught.value)

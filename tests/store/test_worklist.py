"""The store's worklist (store/worklist.py, index/workitems.py) on every backend: workitems in the
index, atomic state changes (of concurrent claimers, in threads and in processes, exactly one wins),
search with the QIDO matching of dicom.query, the subscription state table of PS3.4 Table CC.2.3-2,
event reports in commit order, and the schema step that adds the tables to an existing store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from dicomweb_nb.dicom import ups
from dicomweb_nb.dicom.query import parse_query
from dicomweb_nb.errors import InvalidWorkitem, WorkitemStateError
from dicomweb_nb.store import Store
from dicomweb_nb.store.schema import SCHEMA_VERSION, WORKLIST_VERSION
from dicomweb_nb.store.worklist import WorkitemNotFound

GLOBAL = ups.GLOBAL_SUBSCRIPTION


def task(label="Task", **kwargs) -> dict:
    kwargs.setdefault("start", "20240501090000")
    return ups.new_workitem(label, **kwargs)


def claim(worklist, uid, transaction):
    return worklist.change_state(uid, ups.state_request(ups.IN_PROGRESS, transaction))


def events(worklist, aetitle, after=0):
    return [(e.workitem, e.report["00001002"]["Value"][0], (e.report.get("00741000") or {}).get("Value", [None])[0])
            for e in worklist.events_after(after, [aetitle])]


def test_workitems_are_created_read_and_found(make_store):
    worklist = make_store().worklist
    created = worklist.create(task("Liver", worklist="liver", patient={"PatientName": "Doe^Jane", "PatientID": "P1"},
                                   code=("110001", "DCM", "Image Processing")), "1.2.3.1")
    assert (created.uid, created.warnings, created.state) == ("1.2.3.1", [], ups.SCHEDULED)
    worklist.create(task("Kidney", worklist="kidney", priority="HIGH", patient={"PatientName": "Roe^Rick"}), "1.2.3.2")
    assert worklist.get("1.2.3.1")["00741204"]["Value"] == ["Liver"]
    with pytest.raises(WorkitemStateError) as err:
        worklist.create(task(), "1.2.3.1")
    assert err.value.status == 409
    with pytest.raises(WorkitemNotFound):
        worklist.get("1.2.3.9")

    def found(*pairs, **options):
        query = parse_query(list(pairs), "workitem")
        return [item["00080018"]["Value"][0] for item in worklist.search(query, **options).items]

    assert found() == ["1.2.3.1", "1.2.3.2"]  # in the order they were created
    assert found(("WorklistLabel", "liver")) == ["1.2.3.1"]
    assert found(("PatientName", "doe*")) == ["1.2.3.1"]  # PN: case-insensitive wildcard, as QIDO
    assert found(("ScheduledProcedureStepPriority", "HIGH,MEDIUM")) == ["1.2.3.1", "1.2.3.2"]
    assert found(("ScheduledWorkitemCodeSequence.CodeValue", "110001")) == ["1.2.3.1"]
    assert found(("ScheduledProcedureStepStartDateTime", "20240501-20240502")) == ["1.2.3.1", "1.2.3.2"]
    assert found(("ScheduledProcedureStepStartDateTime", "2025-")) == []
    assert found(("ProcedureStepState", "SCHEDULED"), ("limit", "1"), ("offset", "1")) == ["1.2.3.2"]
    result = worklist.search(parse_query([], "workitem"), max_results=1)
    assert result.truncated and len(result.items) == 1
    with pytest.raises(InvalidWorkitem, match="TransactionUID cannot be a matching key"):
        worklist.search(parse_query([("TransactionUID", "1.2.3")], "workitem"))


def test_the_transaction_uid_is_kept_apart_and_never_returned(make_store):
    worklist = make_store().worklist
    worklist.create(task(), "1.2.4.1")
    claimed = claim(worklist, "1.2.4.1", "1.2.4.99")
    assert claimed.state == ups.IN_PROGRESS
    assert "00081195" not in worklist.get("1.2.4.1")
    assert worklist.index.get_workitem("1.2.4.1").transaction_uid == "1.2.4.99"
    assert worklist.search(parse_query([("ProcedureStepState", "IN PROGRESS")], "workitem")).items[0].get("00081195") is None


def test_of_concurrent_claimers_exactly_one_wins(make_store):
    worklist = make_store().worklist
    worklist.create(task(), "1.2.5.1")
    barrier = threading.Barrier(8)
    outcomes: list = [None] * 8

    def claimer(i):
        barrier.wait()
        try:
            claim(worklist, "1.2.5.1", f"1.2.5.{100 + i}")
            outcomes[i] = "won"
        except WorkitemStateError as exc:
            outcomes[i] = (exc.status, exc.warning)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1
    assert [o for o in outcomes if o != "won"] == [(400, ups.TRANSACTION_INCORRECT)] * 7
    winner = f"1.2.5.{100 + outcomes.index('won')}"
    assert worklist.index.get_workitem("1.2.5.1").transaction_uid == winner


CLAIMER = textwrap.dedent('''
    import json, os, sys, time
    from dicomweb_nb.store import Store
    from dicomweb_nb.dicom import ups
    from dicomweb_nb.errors import WorkitemStateError

    root, kwargs, go, uid, transaction = sys.argv[1:]
    store = Store(root, **json.loads(kwargs), sweep_interval=0)
    store.worklist.last_event_id()
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        store.worklist.change_state(uid, ups.state_request(ups.IN_PROGRESS, transaction))
        print("won", flush=True)
    except WorkitemStateError as exc:
        print(exc.status, flush=True)
    store.close()
''')


def test_of_claimers_in_several_processes_exactly_one_wins(make_store, tmp_path):
    store = make_store()
    for i in range(3):
        store.worklist.create(task(), f"1.2.6.{i}")
    go = tmp_path / "go"
    workers = []
    for p in range(4):
        for i in range(3):
            proc = subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path / "store"), json.dumps(store.backend_kwargs),
                                     str(go), f"1.2.6.{i}", f"1.2.6.{i}.{p}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            workers.append((i, proc))
    go.touch()
    results: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for i, proc in workers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results[i].append(out.strip())
    for i in range(3):
        assert sorted(results[i]) == ["400"] * 3 + ["won"], results[i]
        assert store.worklist.get(f"1.2.6.{i}")["00741000"]["Value"] == [ups.IN_PROGRESS]


def test_the_full_life_of_a_workitem(make_store):
    worklist = make_store().worklist
    worklist.create(task(), "1.2.7.1")
    with pytest.raises(WorkitemStateError) as err:  # not claimed yet
        worklist.change_state("1.2.7.1", ups.state_request(ups.COMPLETED, "1.2.7.9"))
    assert (err.value.status, err.value.dimse_status) == (409, "C310")
    claim(worklist, "1.2.7.1", "1.2.7.9")
    with pytest.raises(WorkitemStateError) as err:  # the final state's requirements are not met yet
        worklist.change_state("1.2.7.1", ups.state_request(ups.COMPLETED, "1.2.7.9"))
    assert err.value.dimse_status == "C304" and "PerformedProcedureStepEndDateTime" not in str(err.value)
    performed = {"00741216": {"vr": "SQ", "Value": [{
        "00404050": {"vr": "DT", "Value": ["20240501100000"]}, "00404051": {"vr": "DT", "Value": ["20240501110000"]},
        "00404028": {"vr": "SQ", "Value": [ups.code_item("WS1", "99X", "Station")]},
        "00404019": {"vr": "SQ", "Value": [ups.code_item("110001", "DCM", "Image Processing")]},
        "00404033": {"vr": "SQ", "Value": []}}]}}
    with pytest.raises(WorkitemStateError):
        worklist.update("1.2.7.1", performed, "1.2.7.8")  # wrong transaction
    assert worklist.update("1.2.7.1", performed, "1.2.7.9").warnings == []
    done = worklist.change_state("1.2.7.1", ups.state_request(ups.COMPLETED, "1.2.7.9"))
    assert done.state == ups.COMPLETED and done.warnings == []
    again = worklist.change_state("1.2.7.1", ups.state_request(ups.COMPLETED, "1.2.7.9"))
    assert again.warnings == [ups.ALREADY_COMPLETED]
    with pytest.raises(WorkitemStateError) as err:
        worklist.update("1.2.7.1", {"00741204": {"vr": "LO", "Value": ["late"]}}, "1.2.7.9")
    assert (err.value.status, err.value.dimse_status) == (400, "C300")


def test_subscription_state_table(make_store):
    """PS3.4 Table CC.2.3-2, row by row."""
    worklist = make_store().worklist
    worklist.create(task(), "1.2.8.1")
    worklist.create(task(), "1.2.8.2")

    def state_of(ae):
        return {s.target: s.deletion_lock for s in worklist.subscriptions(ae)}

    # Subscribes to a specific UPS (with, then without lock): an initial event each time.
    mark = worklist.last_event_id()
    worklist.subscribe("A", "1.2.8.1", deletion_lock=True)
    worklist.subscribe("A", "1.2.8.1", deletion_lock=False)
    assert state_of("A") == {"1.2.8.1": False}
    assert events(worklist, "A", mark) == [("1.2.8.1", 1, ups.SCHEDULED)] * 2
    # Subscribes globally w/o lock: every workitem not subscribed gets subscribed, no initial events.
    mark = worklist.last_event_id()
    worklist.subscribe("B", GLOBAL)
    assert state_of("B") == {GLOBAL: False, "1.2.8.1": False, "1.2.8.2": False}
    assert events(worklist, "B", mark) == []
    # ... with lock: initial events for every workitem it subscribes to (those already subscribed: no change).
    worklist.subscribe("C", "1.2.8.1", deletion_lock=False)
    mark = worklist.last_event_id()
    worklist.subscribe("C", GLOBAL, deletion_lock=True)
    assert state_of("C") == {GLOBAL: True, "1.2.8.1": False, "1.2.8.2": True}
    assert events(worklist, "C", mark) == [("1.2.8.2", 1, ups.SCHEDULED)]
    # A workitem created while an AE is subscribed globally: subscribed, with the global lock, and told.
    mark = worklist.last_event_id()
    worklist.create(task(performers=["Ann"]), "1.2.8.3")
    assert state_of("B")["1.2.8.3"] is False and state_of("C")["1.2.8.3"] is True and "1.2.8.3" not in state_of("A")
    assert events(worklist, "B", mark) == [("1.2.8.3", 1, ups.SCHEDULED), ("1.2.8.3", 5, None)]  # + UPS Assigned
    # Suspend: no new subscriptions, the existing ones stay.
    worklist.suspend("B", GLOBAL)
    worklist.create(task(), "1.2.8.4")
    assert state_of("B") == {"1.2.8.1": False, "1.2.8.2": False, "1.2.8.3": False}
    with pytest.raises(WorkitemNotFound):
        worklist.suspend("B", GLOBAL)
    with pytest.raises(InvalidWorkitem, match="C314"):
        worklist.suspend("B", "1.2.8.1")
    # Unsubscribe from one workitem, then globally: every subscription of the AE goes.
    worklist.unsubscribe("C", "1.2.8.1")
    assert "1.2.8.1" not in state_of("C")
    worklist.unsubscribe("C", GLOBAL)
    assert state_of("C") == {}
    with pytest.raises(WorkitemNotFound):
        worklist.unsubscribe("C", "1.2.8.2")
    with pytest.raises(WorkitemNotFound):
        worklist.subscribe("A", "1.2.8.99")


def test_filtered_subscriptions_match_as_searches_do(make_store):
    worklist = make_store().worklist
    worklist.create(task(worklist="liver"), "1.2.9.1")
    worklist.create(task(worklist="kidney"), "1.2.9.2")
    worklist.subscribe("F", ups.FILTERED_SUBSCRIPTION, deletion_lock=True, filter=[("WorklistLabel", "liv*")])
    worklist.create(task(worklist="liver"), "1.2.9.3")
    worklist.create(task(worklist="kidney"), "1.2.9.4")
    assert {s.target for s in worklist.subscriptions("F")} == {ups.FILTERED_SUBSCRIPTION, "1.2.9.1", "1.2.9.3"}
    with pytest.raises(InvalidWorkitem, match="bad filter"):
        worklist.subscribe("F", ups.FILTERED_SUBSCRIPTION, filter=[("NoSuchKeyword", "x")])
    with pytest.raises(InvalidWorkitem, match="needs a filter"):
        worklist.subscribe("F", ups.FILTERED_SUBSCRIPTION)


def test_changes_report_to_subscribers_in_order(make_store):
    worklist = make_store().worklist
    worklist.create(task(), "1.3.1.1")
    worklist.subscribe("W", "1.3.1.1")
    mark = worklist.last_event_id()
    claim(worklist, "1.3.1.1", "1.3.1.9")
    worklist.update("1.3.1.1", {"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [40]}}]}}, "1.3.1.9")
    worklist.request_cancel("1.3.1.1", {"00741238": {"vr": "LT", "Value": ["no longer needed"]}}, "BOSS")
    reported = worklist.events_after(mark, ["W"])
    assert [e.report["00001002"]["Value"][0] for e in reported] == [1, 3, 2]
    assert [e.id for e in reported] == sorted(e.id for e in reported)
    assert reported[2].report["00741236"]["Value"] == ["BOSS"]  # Requesting AE
    assert reported[2].report["00741238"]["Value"] == ["no longer needed"]
    assert worklist.get("1.3.1.1")["00741000"]["Value"] == [ups.IN_PROGRESS]  # the performer decides
    # Nobody subscribed to an IN PROGRESS workitem: its performer cannot be told.
    worklist.create(task(), "1.3.1.2")
    claim(worklist, "1.3.1.2", "1.3.1.8")
    with pytest.raises(WorkitemStateError) as err:
        worklist.request_cancel("1.3.1.2", {}, "BOSS")
    assert (err.value.status, err.value.warning) == (409, ups.PERFORMER_UNREACHABLE)
    # A SCHEDULED one is canceled at once, through IN PROGRESS, under a transaction nobody holds.
    worklist.create(task(), "1.3.1.3")
    worklist.subscribe("W", "1.3.1.3")
    mark = worklist.last_event_id()
    assert worklist.request_cancel("1.3.1.3", {}, "BOSS").state == ups.CANCELED
    assert events(worklist, "W", mark) == [("1.3.1.3", 1, ups.IN_PROGRESS), ("1.3.1.3", 1, ups.CANCELED)]
    with pytest.raises(WorkitemStateError) as err:
        worklist.change_state("1.3.1.3", ups.state_request(ups.CANCELED, "1.3.1.7"))
    assert err.value.warning == ups.TRANSACTION_INCORRECT
    assert worklist.request_cancel("1.3.1.3", {}, "BOSS").warnings == [ups.ALREADY_CANCELED]


def test_old_event_reports_are_pruned(make_store, monkeypatch):
    from dicomweb_nb.store.index import workitems

    worklist = make_store().worklist
    worklist.create(task(), "1.3.2.1")
    worklist.subscribe("W", "1.3.2.1")
    first = worklist.events_after(0, ["W"])
    assert len(first) == 1
    monkeypatch.setattr(workitems, "EVENT_TTL", -1.0)  # everything recorded before now is old
    worklist.subscribe("W", "1.3.2.1")
    remaining = worklist.events_after(0, ["W"])
    assert len(remaining) == 1 and remaining[0].id > first[0].id


# -- the schema step -------------------------------------------------------------------------------

def test_a_store_from_before_the_worklist_gets_its_tables(make_store, store_backend, tmp_path):
    store = make_store()
    store.worklist.create(task(), "1.3.3.1")
    # What a store of the schema before the worklist's step has: no worklist tables.
    store.index._transact(lambda ex: [ex(f"DROP TABLE {t}") for t in ("workitem_events", "workitem_subscriptions", "workitems")])
    store.index._transact(lambda ex: ex("UPDATE meta SET value=? WHERE key='schema'", (str(WORKLIST_VERSION - 1),)))
    store.close()
    reopened = make_store()
    with reopened.index._read() as ex:
        assert ex("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
    assert reopened.worklist.create(task(), "1.3.3.2").uid == "1.3.3.2"
    assert reopened.worklist.search(parse_query([], "workitem")).items[0]["00080018"]["Value"] == ["1.3.3.2"]


def test_a_folder_store_from_before_the_worklist_is_migrated(tmp_path):
    root = tmp_path / "old"
    Store(root).close()
    conn = sqlite3.connect(root / "index.sqlite")
    conn.executescript("DROP TABLE workitem_events; DROP TABLE workitem_subscriptions; DROP TABLE workitems; "
                       f"UPDATE meta SET value='{WORKLIST_VERSION - 1}' WHERE key='schema';")
    conn.commit()
    conn.close()
    store = Store(root)
    try:
        assert store.worklist.create(task(), "1.3.4.1").uid == "1.3.4.1"
        assert Path(root / "index.sqlite").exists()
    finally:
        store.close()

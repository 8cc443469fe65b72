"""The Worklist Service (UPS-RS, PS3.18 11) over real HTTP, on both mount points and every store
backend: the transactions with their statuses, headers and Warning texts; every illegal state change;
the attribute requirements on create; search; subscriptions with event reports over the WebSocket
notification channel; concurrent claims; and two server processes sharing one store's worklist."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time

import requests
import websocket

from dicomweb_nb.dicom import ups
from tests.fixtures.backends import open_store
from tests.fixtures.ourserver import start_standalone

_counter = itertools.count(1)
XML = 'multipart/related; type="application/dicom+xml"'


def new_uid() -> str:
    return f"1.2.826.0.1.3680043.10.54.{os.getpid()}.{int(time.time())}.{next(_counter)}"


def unique_label(prefix: str = "wl") -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def task(label: str = "Task", **kwargs) -> dict:
    kwargs.setdefault("start", "20240501090000")
    return ups.new_workitem(label, **kwargs)


def call(server, method: str, path: str, body=None, *, headers=None, content_type="application/dicom+json", **kwargs):
    all_headers = {**server.headers, **(headers or {})}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers.setdefault("Content-Type", content_type)
    return requests.request(method, f"{server.dicomweb_url}/{path}", data=data, headers=all_headers, timeout=60, **kwargs)


def create(server, dataset=None, uid=None) -> str:
    uid = uid or new_uid()
    answer = call(server, "POST", f"workitems?{uid}", dataset or task())
    assert answer.status_code == 201, answer.text
    return uid


def change(server, uid, state, transaction):
    return call(server, "PUT", f"workitems/{uid}/state", ups.state_request(state, transaction))


def warning(answer) -> str | None:
    header = answer.headers.get("Warning")
    if not header:
        return None
    assert header.startswith('299 dicomweb-nb "') and header.endswith('"'), header
    return header[len('299 dicomweb-nb "'):-1]


PERFORMED = {"00741216": {"vr": "SQ", "Value": [{
    "00404050": {"vr": "DT", "Value": ["20240501100000"]}, "00404051": {"vr": "DT", "Value": ["20240501110000"]},
    "00404028": {"vr": "SQ", "Value": [ups.code_item("WS1", "99X", "Station")]},
    "00404019": {"vr": "SQ", "Value": [ups.code_item("110001", "DCM", "Image Processing")]},
    "00404033": {"vr": "SQ", "Value": []}}]}}
DISCONTINUED = {"00741002": {"vr": "SQ", "Value": [{
    "0074100E": {"vr": "SQ", "Value": [ups.code_item(*ups.UNSPECIFIED_DISCONTINUATION)]},
    "00741238": {"vr": "LT", "Value": ["not needed"]}}]}}


def test_create_retrieve_update_claim_complete(server):
    label = unique_label()
    uid = new_uid()
    answer = call(server, "POST", f"workitems?{uid}", task("Segment the liver", worklist=label))
    assert answer.status_code == 201 and answer.content == b""
    assert answer.headers["Location"] == answer.headers["Content-Location"] == f"{server.dicomweb_url}/workitems/{uid}"
    assert warning(answer) is None

    got = call(server, "GET", f"workitems/{uid}", headers={"Accept": "application/dicom+json"})
    assert got.status_code == 200 and got.headers["Content-Type"].startswith("application/dicom+json")
    (dataset,) = got.json()
    assert dataset["00080018"]["Value"] == [uid] and dataset["00080016"]["Value"] == [ups.UPS_PUSH_SOP_CLASS]
    assert dataset["00741000"]["Value"] == ["SCHEDULED"] and dataset["00741202"]["Value"] == [label]
    assert "00081195" not in dataset

    updated = call(server, "POST", f"workitems/{uid}", {"00404041": {"vr": "CS", "Value": ["INCOMPLETE"]}})
    assert updated.status_code == 200, updated.text
    transaction = new_uid()
    assert change(server, uid, "IN PROGRESS", transaction).status_code == 200
    assert call(server, "GET", f"workitems/{uid}").json()[0].get("00081195") is None  # PS3.18 11.5.2
    assert call(server, "POST", f"workitems/{uid}?{transaction}", PERFORMED).status_code == 200
    done = change(server, uid, "COMPLETED", transaction)
    assert done.status_code == 200 and warning(done) is None
    again = change(server, uid, "COMPLETED", transaction)
    assert again.status_code == 200 and warning(again) == ups.ALREADY_COMPLETED
    final = call(server, "GET", f"workitems/{uid}").json()[0]
    assert final["00741000"]["Value"] == ["COMPLETED"] and final["00404041"]["Value"] == ["INCOMPLETE"]


def test_every_illegal_state_change_is_its_own_4xx(server):
    held, other = new_uid(), new_uid()

    def workitem_in(state):
        uid = create(server)
        if state != "SCHEDULED":
            assert change(server, uid, "IN PROGRESS", held).status_code == 200
            call(server, "POST", f"workitems/{uid}?{held}", {**PERFORMED, **DISCONTINUED})
        if state in ("COMPLETED", "CANCELED"):
            assert change(server, uid, state, held).status_code == 200
        return uid

    cases = [
        ("SCHEDULED", "COMPLETED", held, 409, ups.STATE_INCONSISTENT),  # C310
        ("SCHEDULED", "CANCELED", held, 409, ups.STATE_INCONSISTENT),  # C310
        ("SCHEDULED", "SCHEDULED", held, 400, ups.STATE_INCONSISTENT),  # C303
        ("SCHEDULED", "IN PROGRESS", None, 400, ups.TRANSACTION_MISSING),
        ("IN PROGRESS", "IN PROGRESS", held, 409, ups.STATE_INCONSISTENT),  # C302
        ("IN PROGRESS", "IN PROGRESS", other, 400, ups.TRANSACTION_INCORRECT),  # C301: a second claimer
        ("IN PROGRESS", "COMPLETED", other, 400, ups.TRANSACTION_INCORRECT),
        ("IN PROGRESS", "CANCELED", None, 400, ups.TRANSACTION_MISSING),
        ("COMPLETED", "IN PROGRESS", held, 409, ups.STATE_INCONSISTENT),  # C300
        ("COMPLETED", "CANCELED", held, 409, ups.STATE_INCONSISTENT),  # C300
        ("CANCELED", "COMPLETED", held, 409, ups.STATE_INCONSISTENT),  # C300
        ("CANCELED", "IN PROGRESS", other, 400, ups.TRANSACTION_INCORRECT),
    ]
    for state, requested, transaction, status, text in cases:
        uid = workitem_in(state)
        body = {"00741000": {"vr": "CS", "Value": [requested]}}
        if transaction:
            body["00081195"] = {"vr": "UI", "Value": [transaction]}
        answer = call(server, "PUT", f"workitems/{uid}/state", body)
        assert (answer.status_code, warning(answer)) == (status, text), (state, requested, answer.text)
        assert answer.json()["message"]
    canceled = workitem_in("CANCELED")
    twice = change(server, canceled, "CANCELED", held)
    assert (twice.status_code, warning(twice)) == (200, ups.ALREADY_CANCELED)
    # Completing a claimed workitem without what COMPLETED requires (C304) names what is missing.
    bare = create(server)
    change(server, bare, "IN PROGRESS", held)
    answer = change(server, bare, "COMPLETED", held)
    assert answer.status_code == 409 and "UnifiedProcedureStepPerformedProcedureSequence" in answer.json()["message"]
    assert change(server, new_uid(), "IN PROGRESS", held).status_code == 404


def test_creation_is_checked_against_table_cc_2_5_3(server):
    incomplete = task()
    for keyword in ("ProcedureStepLabel", "PatientName", "ScheduledProcedureStepStartDateTime"):
        del incomplete[ups._key(keyword)]
    answer = call(server, "POST", "workitems", incomplete)
    assert answer.status_code == 400
    message = answer.json()["message"]
    for keyword in ("ProcedureStepLabel", "PatientName", "ScheduledProcedureStepStartDateTime"):
        assert keyword in message
    claimed = task()
    claimed["00741000"] = {"vr": "CS", "Value": ["IN PROGRESS"]}
    assert "must be SCHEDULED" in call(server, "POST", "workitems", claimed).json()["message"]
    uid = create(server)
    duplicate = call(server, "POST", f"workitems?{uid}", task())
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["message"]
    assert call(server, "POST", "workitems?not-a-uid", task()).status_code == 400
    assert call(server, "POST", f"workitems?{ups.GLOBAL_SUBSCRIPTION}", task()).status_code == 400
    assert call(server, "POST", "workitems", b"{not json").status_code == 400
    assert call(server, "POST", "workitems", [task(), task()]).status_code == 400
    assert call(server, "POST", "workitems", b"").status_code == 400
    wrong_type = call(server, "POST", "workitems", b"x", content_type="text/plain")
    assert wrong_type.status_code == 415
    too_big = call(server, "POST", "workitems", b"[" + b" " * (5 << 20) + b"]")
    assert too_big.status_code == 413
    # ?workitem= names the UID too; without any UID the server makes one and says so.
    named = new_uid()
    assert call(server, "POST", f"workitems?workitem={named}", task()).status_code == 201
    made = call(server, "POST", "workitems", task())
    assert made.status_code == 201 and warning(made) == ups.CREATED_WITH_MODIFICATIONS
    assert call(server, "GET", made.headers["Location"].split("/dicom-web/", 1)[1]).status_code == 200


def test_native_dicom_model_xml_in_and_out(server):
    from dicomweb_nb.dicom.dicomjson import json_to_xml
    from dicomweb_nb.dicom.multipart import encode_multipart

    uid = new_uid()
    body, boundary = encode_multipart([("application/dicom+xml", json_to_xml(task("From XML")))])
    answer = call(server, "POST", f"workitems?{uid}", body, content_type=f"{XML}; boundary={boundary}")
    assert answer.status_code == 201, answer.text
    got = call(server, "GET", f"workitems/{uid}", headers={"Accept": XML})
    assert got.status_code == 200 and got.headers["Content-Type"].startswith(XML)
    assert b"From XML" in got.content and b"<NativeDicomModel" in got.content


def test_updates_follow_the_transaction_rules(server):
    uid = create(server)
    label = {"00741204": {"vr": "LO", "Value": ["Renamed"]}}
    transaction = new_uid()
    scheduled_with_uid = call(server, "POST", f"workitems/{uid}?{transaction}", label)
    assert (scheduled_with_uid.status_code, warning(scheduled_with_uid)) == (409, ups.UPDATE_INCONSISTENT)
    change(server, uid, "IN PROGRESS", transaction)
    for query in ("", f"?{new_uid()}"):
        refused = call(server, "POST", f"workitems/{uid}{query}", label)
        assert (refused.status_code, warning(refused)) == (400, ups.NOT_CLAIMED)
    assert call(server, "POST", f"workitems/{uid}?{transaction}", label).status_code == 200
    other_patient = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "X"}]}}
    not_allowed = call(server, "POST", f"workitems/{uid}?{transaction}", other_patient)
    assert not_allowed.status_code == 400 and "PatientName may not be given in an update" in not_allowed.json()["message"]
    modified = call(server, "POST", f"workitems/{uid}?{transaction}", {"00404010": {"vr": "DT", "Value": ["19990101"]}})
    assert (modified.status_code, warning(modified)) == (200, ups.UPDATED_WITH_MODIFICATIONS)
    call(server, "POST", f"workitems/{uid}?{transaction}", {**PERFORMED})
    change(server, uid, "COMPLETED", transaction)
    late = call(server, "POST", f"workitems/{uid}?{transaction}", label)
    assert (late.status_code, warning(late)) == (400, ups.UPDATE_INCONSISTENT)
    assert call(server, "POST", f"workitems/{new_uid()}", label).status_code == 404


def test_cancellation_requests(server):
    scheduled = create(server)
    answer = call(server, "POST", f"workitems/{scheduled}/cancelrequest", {"00741238": {"vr": "LT", "Value": ["duplicate"]}})
    assert answer.status_code == 202 and warning(answer) is None
    dataset = call(server, "GET", f"workitems/{scheduled}").json()[0]
    assert dataset["00741000"]["Value"] == ["CANCELED"]
    assert dataset["00741002"]["Value"][0]["00741238"]["Value"] == ["duplicate"]
    again = call(server, "POST", f"workitems/{scheduled}/cancelrequest")  # no payload: allowed
    assert (again.status_code, warning(again)) == (202, ups.ALREADY_CANCELED)
    transaction = new_uid()
    claimed = create(server)
    change(server, claimed, "IN PROGRESS", transaction)
    unreachable = call(server, "POST", f"workitems/{claimed}/cancelrequest", {})
    assert (unreachable.status_code, warning(unreachable)) == (409, ups.PERFORMER_UNREACHABLE)
    call(server, "POST", f"workitems/{claimed}?{transaction}", PERFORMED)
    change(server, claimed, "COMPLETED", transaction)
    completed = call(server, "POST", f"workitems/{claimed}/cancelrequest", {})
    assert (completed.status_code, warning(completed)) == (409, ups.CANCEL_COMPLETED)
    bad = call(server, "POST", f"workitems/{create(server)}/cancelrequest", {"00100010": {"vr": "PN"}})
    assert bad.status_code == 400


def test_search_matches_as_qido_does(server):
    label = unique_label()
    first = create(server, task("Liver", worklist=label, priority="HIGH", patient={"PatientName": "Doe^Jane"}))
    second = create(server, task("Kidney", worklist=label, priority="LOW", patient={"PatientName": "Roe^Rick"},
                                 code=("110005", "DCM", "Interpretation")))

    def found(params, **kwargs):
        answer = call(server, "GET", "workitems", params={"WorklistLabel": label, **params}, **kwargs)
        assert answer.status_code in (200, 204), answer.text
        return [] if answer.status_code == 204 else [item["00080018"]["Value"][0] for item in answer.json()]

    assert found({}) == [first, second]
    assert found({"PatientName": "doe*"}) == [first]
    assert found({"ScheduledProcedureStepPriority": "LOW"}) == [second]
    assert found({"ScheduledWorkitemCodeSequence.CodeValue": "110005"}) == [second]
    assert found({"ScheduledProcedureStepStartDateTime": "20240501-"}) == [first, second]
    assert found({"limit": "1", "offset": "1"}) == [second]
    assert found({"ProcedureStepState": "COMPLETED"}) == []
    empty = call(server, "GET", "workitems", params={"WorklistLabel": unique_label()})
    assert empty.status_code == 204 and empty.content == b""  # PS3.18 11.9.3.1
    assert call(server, "GET", "workitems", params={"StudyDate": "2024-13-45"}).status_code == 400
    refused = call(server, "GET", "workitems", params={"TransactionUID": "1.2.3"})
    assert refused.status_code == 400 and "cannot be a matching key" in refused.json()["message"]
    xml = call(server, "GET", "workitems", params={"WorklistLabel": label}, headers={"Accept": XML})
    assert xml.status_code == 200 and xml.content.count(b"<NativeDicomModel") == 2
    assert call(server, "GET", "workitems", headers={"Accept": "image/png"}).status_code == 406


def test_concurrent_claims_over_http_one_wins(server):
    uid = create(server)
    barrier = threading.Barrier(6)
    statuses: list = []

    def claimer():
        barrier.wait()
        answer = change(server, uid, "IN PROGRESS", new_uid())
        statuses.append((answer.status_code, warning(answer)))

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses, key=str) == sorted([(200, None)] + [(400, ups.TRANSACTION_INCORRECT)] * 5, key=str)


# -- subscriptions and the notification channel -------------------------------------------------------

def channel(server, aetitle: str):
    url = f"{server.dicomweb_url}/subscribers/{aetitle}".replace("http://", "ws://", 1)
    socket = websocket.create_connection(url, header=[f"{k}: {v}" for k, v in server.headers.items()], timeout=10)
    return socket


def receive(socket, count: int, timeout: float = 10.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        socket.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            got.append(json.loads(socket.recv()))
        except websocket.WebSocketTimeoutException:
            break
    return got


def kinds(reports: list[dict]) -> list[tuple[str, int, str | None]]:
    return [(r["00001000"]["Value"][0], r["00001002"]["Value"][0], (r.get("00741000") or {}).get("Value", [None])[0])
            for r in reports]


def test_subscriptions_send_event_reports_over_the_websocket(server):
    aetitle = f"W{os.getpid() % 10000}{next(_counter)}"[:16]
    socket = channel(server, aetitle)
    try:
        uid = create(server)
        subscribed = call(server, "POST", f"workitems/{uid}/subscribers/{aetitle}?deletionlock=true")
        assert subscribed.status_code == 201
        assert subscribed.headers["Content-Location"] == f"{server.dicomweb_url}/subscribers/{aetitle}".replace("http", "ws", 1)
        transaction = new_uid()
        change(server, uid, "IN PROGRESS", transaction)
        call(server, "POST", f"workitems/{uid}?{transaction}", {"00741002": {"vr": "SQ", "Value": [
            {"00741004": {"vr": "DS", "Value": [50]}, "00741006": {"vr": "ST", "Value": ["half way"]}}]}})
        call(server, "POST", f"workitems/{uid}/cancelrequest", {"00741238": {"vr": "LT", "Value": ["stop"]}})
        reports = receive(socket, 4)
        assert kinds(reports) == [(uid, 1, "SCHEDULED"), (uid, 1, "IN PROGRESS"), (uid, 3, None), (uid, 2, None)]
        assert all(r["00000002"]["Value"] == [ups.UPS_PUSH_SOP_CLASS] and r["00000110"]["vr"] == "US" for r in reports)
        assert reports[3]["00741238"]["Value"] == ["stop"]
        # A global subscription hears of new workitems; unsubscribing globally ends every subscription.
        assert call(server, "POST", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/{aetitle}").status_code == 201
        later = create(server)
        assert kinds(receive(socket, 1)) == [(later, 1, "SCHEDULED")]
        assert call(server, "POST", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/{aetitle}/suspend").status_code == 200
        create(server)
        assert receive(socket, 1, timeout=1.0) == []  # suspended: not subscribed to new workitems
        assert call(server, "DELETE", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/{aetitle}").status_code == 200
        assert call(server, "DELETE", f"workitems/{uid}/subscribers/{aetitle}").status_code == 404
    finally:
        socket.close()


def test_subscription_requests_are_checked(server):
    uid = create(server)
    assert call(server, "POST", f"workitems/{new_uid()}/subscribers/AE1").status_code == 404
    assert call(server, "POST", f"workitems/{uid}/subscribers/{'A' * 17}").status_code == 400
    assert call(server, "POST", f"workitems/{uid}/subscribers/AE1?deletionlock=maybe").status_code == 400
    assert call(server, "POST", f"workitems/{uid}/subscribers/AE1?colour=red").status_code == 400
    assert call(server, "POST", f"workitems/{uid}/subscribers/AE1/suspend").status_code == 400  # C314
    assert call(server, "POST", f"workitems/{ups.FILTERED_SUBSCRIPTION}/subscribers/AE1").status_code == 400
    filtered = call(server, "POST", f"workitems/{ups.FILTERED_SUBSCRIPTION}/subscribers/AE1?filter=WorklistLabel=liver")
    assert filtered.status_code == 201
    assert call(server, "DELETE", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/AE1").status_code == 200
    assert call(server, "GET", "subscribers/AE1").status_code == 400  # a WebSocket, or nothing


def test_two_server_processes_share_the_worklist_and_its_events(tmp_path, store_backend):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = start_standalone(tmp_path / "a", tmp_path / "shared-store", backend=store_backend)
    second = start_standalone(tmp_path / "b", tmp_path / "shared-store", backend=store_backend)
    try:
        socket = channel(second, "SHARED")
        try:
            assert call(second, "POST", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/SHARED").status_code == 201
            uid = create(first)
            assert call(second, "GET", f"workitems/{uid}").status_code == 200
            outcomes = []
            barrier = threading.Barrier(4)

            def claimer(server):
                barrier.wait()
                outcomes.append(change(server, uid, "IN PROGRESS", new_uid()).status_code)

            threads = [threading.Thread(target=claimer, args=(s,)) for s in (first, second, first, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(outcomes) == [200, 400, 400, 400]
            assert kinds(receive(socket, 2)) == [(uid, 1, "SCHEDULED"), (uid, 1, "IN PROGRESS")]
        finally:
            socket.close()
    finally:
        first.stop()
        second.stop()


def test_a_search_past_the_servers_limit_is_partial_and_the_client_pages_on(tmp_path, store_backend):
    import dicomweb_nb as dw

    server = start_standalone(tmp_path, None, "-c", "qido_max_results=2", backend=store_backend)
    try:
        label = unique_label()
        uids = [create(server, task(worklist=label)) for _ in range(5)]
        first = call(server, "GET", "workitems", params={"WorklistLabel": label})
        assert first.status_code == 206  # PS3.18 11.9.3.1: some results, the rest by paging
        assert len(first.json()) == 2 and "Additional results can be requested" in warning(first)
        pacs = dw.connect(server.dicomweb_url, progress=False)
        assert list(pacs.workitems(WorklistLabel=label)["SOPInstanceUID"]) == uids
        assert list(pacs.workitems(WorklistLabel=label, limit=2, offset=2)["SOPInstanceUID"]) == uids[2:4]
        pacs.close()
    finally:
        server.stop()


def test_a_read_only_server_reads_the_worklist_and_refuses_every_change(tmp_path, store_backend):
    """``c.DicomWeb.read_only``: every worklist change is a 403 saying so, searches, retrievals and
    notification channels go on, and the workitem is as it was."""
    for name in ("writer", "reader"):
        (tmp_path / name).mkdir()
    writer = start_standalone(tmp_path / "writer", tmp_path / "shared-store", backend=store_backend)
    try:
        label = unique_label("ro")
        uid = create(writer, task(worklist=label))
        claimed, transaction = create(writer, task(worklist=label)), new_uid()
        assert change(writer, claimed, "IN PROGRESS", transaction).status_code == 200
        assert call(writer, "POST", f"workitems/{uid}/subscribers/KEPT").status_code == 201
        before = {u: call(writer, "GET", f"workitems/{u}").json() for u in (uid, claimed)}
    finally:
        writer.stop()
    store = open_store(tmp_path / "shared-store", store_backend)
    last_event = store.worklist.last_event_id()
    reader = start_standalone(tmp_path / "reader", tmp_path / "shared-store", "-c", "read_only=true", backend=store_backend)
    try:
        socket = channel(reader, "KEPT")
        try:
            refused = {
                "create": call(reader, "POST", f"workitems?{new_uid()}", task(worklist=label)),
                "update": call(reader, "POST", f"workitems/{claimed}?{transaction}", PERFORMED),
                "claim": change(reader, uid, "IN PROGRESS", new_uid()),
                "complete": change(reader, claimed, "CANCELED", transaction),
                "cancel request": call(reader, "POST", f"workitems/{uid}/cancelrequest", {}),
                "subscribe": call(reader, "POST", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/OTHER"),
                "unsubscribe": call(reader, "DELETE", f"workitems/{uid}/subscribers/KEPT"),
                "suspend": call(reader, "POST", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/KEPT/suspend"),
            }
            for what, answer in refused.items():
                assert answer.status_code == 403, (what, answer.status_code, answer.text)
                assert "read-only (c.DicomWeb.read_only)" in answer.json()["message"], what
            found = call(reader, "GET", "workitems", params={"WorklistLabel": label})
            assert found.status_code == 200 and sorted(item["00080018"]["Value"][0] for item in found.json()) == sorted(before)
            assert {u: call(reader, "GET", f"workitems/{u}").json() for u in before} == before
            assert receive(socket, 1, timeout=1.0) == []
            # A read-only server writes nothing, not even the restart notice a writable one records when it starts.
            assert store.worklist.last_event_id() == last_event
        finally:
            socket.close()
    finally:
        reader.stop()
        store.close()


def test_with_several_workers_a_channel_hears_the_changes_made_through_every_worker(tmp_path, store_backend):
    """``serve --workers 2``: one notice that the server started; each worker delivers the event reports of
    the channels open in it, reading them from the store, where whichever worker made a change recorded them."""
    import re

    from tests.fixtures.waiting import wait_until

    from .test_workers import serving, sessions_on_two_workers, worker_pid

    # A subscriber of the store's worklist from before: it hears once that the server started.
    (tmp_path / "earlier").mkdir()
    earlier = start_standalone(tmp_path / "earlier", tmp_path / "store", backend=store_backend)
    try:
        assert call(earlier, "POST", f"workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/BOOT").status_code == 201
    finally:
        earlier.stop()
    store = open_store(tmp_path / "store", store_backend)
    before_start = store.worklist.last_event_id()
    server = start_standalone(tmp_path, tmp_path / "store", "--workers", "2", quiet=False, backend=store_backend)
    try:
        wait_until(lambda: len(serving(server)) == 2, what="both workers serving")
        notices = store.worklist.events_after(before_start, ["BOOT"])
        assert [(e.workitem, e.report["00001002"]["Value"]) for e in notices] == [(ups.GLOBAL_SUBSCRIPTION, [4])]
        aetitle = f"WK{os.getpid() % 10000}{next(_counter)}"[:16]
        socket = channel(server, aetitle)

        def channel_pid() -> int | None:
            line = next((line for line in server.log_text().splitlines() if f"/subscribers/{aetitle}" in line), None)
            match = re.search(r"\[worker \d+ pid (\d+)\]", line) if line else None
            return int(match.group(1)) if match else None

        try:
            held_by = wait_until(channel_pid, what="the log line of the channel's upgrade")
            first, second = sessions_on_two_workers(server)
            pids = {worker_pid(server, first), worker_pid(server, second)}
            assert held_by in pids and len(pids) == 2  # one session on the channel's worker, one on the other
            subscribed = first.post(f"{server.dicomweb_url}/workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/{aetitle}",
                                    headers=server.headers, timeout=30)
            assert subscribed.status_code == 201, subscribed.text
            uids = []
            for session in (first, second, first, second):
                uid = new_uid()
                answer = session.post(f"{server.dicomweb_url}/workitems?{uid}", data=json.dumps(task()),
                                      headers={**server.headers, "Content-Type": "application/dicom+json"}, timeout=30)
                assert answer.status_code == 201, answer.text
                uids.append(uid)
            claimed = second.put(f"{server.dicomweb_url}/workitems/{uids[0]}/state",
                                 data=json.dumps(ups.state_request("IN PROGRESS", new_uid())),
                                 headers={**server.headers, "Content-Type": "application/dicom+json"}, timeout=30)
            assert claimed.status_code == 200, claimed.text
            expected = [(uid, 1, "SCHEDULED") for uid in uids] + [(uids[0], 1, "IN PROGRESS")]
            assert kinds(receive(socket, len(expected), timeout=20)) == expected
        finally:
            socket.close()
    finally:
        server.stop()
        store.close()

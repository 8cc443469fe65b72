"""The worklist from the notebook client (client/workitems.py), over HTTP against our server and
in-process on the workspace store, on every store backend: a labelling / inference task queue from
creation to completion, claim races between notebooks, cancellation, event reports, and the same
errors and DataFrames from both sources."""

from __future__ import annotations

import itertools
import os
import threading
import warnings

import pandas as pd
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.dicom import ups
from tests.fixtures.backends import open_store
from tests.fixtures.ourserver import JUPYTER_TOKEN, start_standalone

pytestmark = pytest.mark.usefixtures("use_store_backend")
SOURCES = ("http", "local")
_labels = itertools.count(1)


def unique(prefix: str = "queue") -> str:
    return f"{prefix}-{os.getpid()}-{next(_labels)}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, store_backend):
    """A workspace store with two CT series, and ``dicomweb-nb serve`` on it."""
    root = tmp_path_factory.mktemp("worklist")
    open_store(root / ".dicomweb", store_backend).close()
    local = dw.connect(store=root / ".dicomweb", progress=False)
    for patient in ("WORK-1", "WORK-2"):
        local.store(samples.generate_ct_series(3, rows=8, columns=8, patient_id=patient, patient_name=f"{patient}^Pat"))
    local.close()
    workdir = root / "server"
    workdir.mkdir()
    server = start_standalone(workdir, root / ".dicomweb", backend=store_backend)
    yield root, server
    server.stop()


def connect(workspace, source: str) -> dw.Client:
    root, server = workspace
    if source == "http":
        return dw.connect(server.dicomweb_url, progress=False)
    return dw.connect(store=root / ".dicomweb", progress=False)


@pytest.fixture(params=SOURCES)
def pacs(request, workspace):
    client = connect(workspace, request.param)
    yield client
    client.close()


def test_a_labelling_queue_from_creation_to_completion(pacs):
    label = unique()
    series = pacs.series(PatientID="WORK-1")
    uid = pacs.create_workitem(label="Segment the liver", series=series, worklist=label, priority="HIGH",
                               parameters={"model": "unet-v2", "threshold": 0.5}, comments="first pass")
    item = pacs.workitem(uid)
    assert item.ProcedureStepState == "SCHEDULED" and item.WorklistLabel == label
    assert item.PatientName == "WORK-1^Pat" and item.PatientID == "WORK-1"
    inputs = item.InputInformationSequence
    assert [i.SeriesInstanceUID for i in inputs] == list(series["SeriesInstanceUID"])
    assert len(inputs[0].ReferencedSOPSequence) == 3
    assert inputs[0].WADORSRetrievalSequence[0].RetrieveURL.endswith(f"/series/{series['SeriesInstanceUID'][0]}")
    assert item.ScheduledWorkitemCodeSequence[0].CodeValue == "110001"  # DCM Image Processing
    parameters = item.ScheduledProcessingParametersSequence
    assert {p.ConceptNameCodeSequence[0].CodeMeaning for p in parameters} == {"model", "threshold"}

    queue = pacs.workitems(WorklistLabel=label)
    assert list(queue["SOPInstanceUID"]) == [uid]
    assert queue["ScheduledProcedureStepStartDateTime"].dtype.kind == "M"
    assert queue["PatientName"].iloc[0] == "WORK-1^Pat" and queue["ScheduledProcedureStepPriority"].iloc[0] == "HIGH"
    empty = pacs.workitems(WorklistLabel=unique("none"))
    assert len(empty) == 0 and (empty.dtypes[queue.columns.intersection(empty.columns)]
                                == queue.dtypes[queue.columns.intersection(empty.columns)]).all()

    transaction = pacs.claim(uid)
    assert pacs.workitem(uid).ProcedureStepState == "IN PROGRESS"
    pacs.report_progress(uid, transaction, 50, "half of the slices")
    done = pacs.workitem(uid)
    assert float(done.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress) == 50
    study, series_uid = series["StudyInstanceUID"][0], series["SeriesInstanceUID"][0]
    output = pacs.instances(study, series_uid).iloc[0]
    pacs.complete(uid, transaction, outputs=[(study, series_uid, output["SOPInstanceUID"])], description="labelled")
    done = pacs.workitem(uid)
    assert done.ProcedureStepState == "COMPLETED"
    performed = done.UnifiedProcedureStepPerformedProcedureSequence[0]
    assert performed.OutputInformationSequence[0].ReferencedSOPSequence[0].ReferencedSOPClassUID == output["SOPClassUID"]
    assert performed.PerformedProcedureStepDescription == "labelled"
    assert performed.PerformedWorkitemCodeSequence[0].CodeValue == "110001"
    assert "TransactionUID" not in done
    with pytest.raises(dw.errors.WorkitemStateError) as err:
        pacs.claim(uid)
    assert err.value.status == 400 and err.value.warning == ups.TRANSACTION_INCORRECT
    assert list(pacs.workitems(WorklistLabel=label, ProcedureStepState="COMPLETED")["SOPInstanceUID"]) == [uid]


def test_notebooks_sharing_a_queue_claim_each_task_once(workspace):
    label = unique()
    creator = connect(workspace, "local")
    uids = {creator.create_workitem(label=f"Task {i}", worklist=label) for i in range(6)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(source):
        client = connect(workspace, source)
        try:
            while (got := client.claim_next(WorklistLabel=label)) is not None:
                with lock:
                    claimed.append(got[0])
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(source,)) for source in ("http", "local", "http", "local")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(uids)  # every task once, none twice
    assert set(creator.workitems(WorklistLabel=label)["ProcedureStepState"]) == {"IN PROGRESS"}
    creator.close()


def test_claim_next_takes_the_highest_priority_first(pacs):
    label = unique()
    low = pacs.create_workitem(label="later", worklist=label, priority="LOW")
    high = pacs.create_workitem(label="now", worklist=label, priority="HIGH")
    assert pacs.claim_next(WorklistLabel=label)[0] == high
    assert pacs.claim_next(WorklistLabel=label)[0] == low
    assert pacs.claim_next(WorklistLabel=label) is None


def test_cancelling(pacs):
    label = unique()
    mine = pacs.create_workitem(label="give up", worklist=label)
    transaction = pacs.claim(mine)
    pacs.report_progress(mine, transaction, 30, "a third done")
    pacs.cancel(mine, transaction, "the series is unusable")
    item = pacs.workitem(mine)
    assert item.ProcedureStepState == "CANCELED"
    progress = item.ProcedureStepProgressInformationSequence[0]
    assert progress.ReasonForCancellation == "the series is unusable"
    assert progress.ProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue == "110513"
    assert progress.ProcedureStepCancellationDateTime
    assert float(progress.ProcedureStepProgress) == 30 and progress.ProcedureStepProgressDescription == "a third done"
    assert item.UnifiedProcedureStepPerformedProcedureSequence[0].PerformedProcedureStepStartDateTime  # set by claim
    scheduled = pacs.create_workitem(label="not needed", worklist=label)
    pacs.request_cancellation(scheduled, "duplicate task")
    assert pacs.workitem(scheduled).ProcedureStepState == "CANCELED"
    with pytest.warns(dw.errors.DicomWebWarning, match="already in the requested state of CANCELED"):
        pacs.request_cancellation(scheduled)
    claimed = pacs.create_workitem(label="busy", worklist=label)
    pacs.claim(claimed)
    with pytest.raises(dw.errors.WorkitemStateError) as err:  # nobody listens for the performer
        pacs.request_cancellation(claimed)
    assert (err.value.status, err.value.warning) == (409, ups.PERFORMER_UNREACHABLE)


def test_a_performer_listening_hears_a_cancellation_request(workspace):
    label = unique()
    performer = connect(workspace, "http")
    boss = connect(workspace, "local")
    aetitle = f"PERF{os.getpid() % 100000}"
    try:
        uid = boss.create_workitem(label="long job", worklist=label)
        with performer.listen(aetitle) as channel:
            transaction = performer.claim(uid)
            performer.subscribe(aetitle, uid)
            first = channel.get(timeout=10)
            assert (first.kind, first.workitem, first.state) == ("state", uid, "IN PROGRESS")  # the initial report
            boss.request_cancellation(uid, "wrong patient", contact_name="Dr Boss")
            request = channel.get(timeout=10)
            assert (request.kind, request.workitem) == ("cancel requested", uid)
            assert request.report["00741238"]["Value"] == ["wrong patient"]
            performer.cancel(uid, transaction, "asked to")
            final = channel.get(timeout=10)
            assert (final.kind, final.state) == ("state", "CANCELED")
        performer.unsubscribe(aetitle)
    finally:
        performer.close()
        boss.close()


def test_a_global_listener_in_process_hears_changes_made_over_http(workspace):
    label = unique()
    listener = connect(workspace, "local")
    worker = connect(workspace, "http")
    aetitle = f"WATCH{os.getpid() % 100000}"
    try:
        with listener.listen(aetitle) as channel:
            listener.subscribe(aetitle, filters={"WorklistLabel": label})
            uid = worker.create_workitem(label="watched", worklist=label, performers=["Ann Analyst"])
            worker.create_workitem(label="not watched", worklist=unique())
            heard = [channel.get(timeout=10) for _ in range(2)]
            assert [(e.kind, e.workitem) for e in heard] == [("state", uid), ("assigned", uid)]
            assert channel.get(timeout=0.5) is None  # the other queue's workitem is filtered out
        listener.unsubscribe(aetitle)
    finally:
        listener.close()
        worker.close()


@pytest.mark.parametrize("source", SOURCES)
def test_both_sources_refuse_alike(workspace, source):
    pacs = connect(workspace, source)
    try:
        with pytest.raises(dw.errors.InvalidWorkitem) as err:
            pacs.create_workitem(label="wrong state", dataset={"ProcedureStepState": "IN PROGRESS"})
        assert err.value.status == 400 and "must be SCHEDULED" in str(err.value)
        with pytest.raises(dw.errors.InvalidWorkitem) as err:
            pacs.update_workitem(pacs.create_workitem(label="x"), {"PatientName": "Other^Name"})
        assert "PatientName may not be given in an update" in str(err.value)
        with pytest.raises(dw.errors.NotFound):
            pacs.workitem("1.2.3.4.5.6.7.8.9")
        uid = pacs.create_workitem(label="y")
        with pytest.raises(dw.errors.WorkitemStateError) as err:
            pacs.complete(uid, "1.2.3.4")
        assert (err.value.status, err.value.warning) == (409, ups.UPDATE_INCONSISTENT)  # SCHEDULED: not claimed
        with pytest.raises(ValueError, match="label"):
            pacs.create_workitem()
        with pytest.raises(ValueError, match="priority"):
            pacs.create_workitem(label="z", priority="URGENT")
        with pytest.raises(dw.errors.InvalidFilter):
            pacs.workitems(NoSuchKeyword="x")
    finally:
        pacs.close()


def test_the_jupyter_extensions_worklist(jupyter_dicomweb):
    pacs = dw.connect(jupyter_dicomweb.dicomweb_url, jupyter_token=JUPYTER_TOKEN, progress=False)
    aetitle = f"JUP{os.getpid() % 100000}"
    try:
        with pacs.listen(aetitle) as channel:
            pacs.subscribe(aetitle)
            uid = pacs.create_workitem(label="through Jupyter", worklist=unique())
            assert channel.get(timeout=10).workitem == uid
            transaction = pacs.claim(uid)
            pacs.complete(uid, transaction)
            states = [e.state for e in iter(lambda: channel.get(timeout=2), None)]
            assert states[0] == "IN PROGRESS" and states[-1] == "COMPLETED"
        pacs.unsubscribe(aetitle)
        assert pacs.workitem(uid).ProcedureStepState == "COMPLETED"
    finally:
        pacs.close()


def test_dataset_forms_for_create_workitem(pacs):
    from pydicom.dataset import Dataset

    extra = Dataset()
    extra.ExpectedCompletionDateTime = "20300101120000"
    uid = pacs.create_workitem(label="from a Dataset", dataset=extra, start=pd.Timestamp("2024-05-01 10:00"),
                               code="DCM:110005:Interpretation", performers=["Ann"])
    item = pacs.workitem(uid)
    assert item.ExpectedCompletionDateTime == "20300101120000"
    assert item.ScheduledProcedureStepStartDateTime.startswith("20240501100000")
    assert item.ScheduledWorkitemCodeSequence[0].CodeMeaning == "Interpretation"
    assert item.ScheduledHumanPerformersSequence[0].HumanPerformerName == "Ann"
    raw = pacs.workitem(uid, raw=True)
    assert raw["00080018"]["Value"] == [uid]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete dataset draws no "created with modifications" warning
        pacs.create_workitem(label="quiet", worklist="named")

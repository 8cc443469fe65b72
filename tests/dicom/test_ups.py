"""The UPS rules of PS3.4 Annex CC (dicom/ups.py): the state transition table CC.1.1-2 cell by cell,
the attribute requirements of Table CC.2.5-3 on creating and updating, the Final State requirements,
cancellation requests and the event reports an update causes."""

from __future__ import annotations

import copy

import pytest

from dicomweb_nb.dicom import ups
from dicomweb_nb.dicom.ups_attributes import _element
from dicomweb_nb.errors import InvalidWorkitem, WorkitemStateError

NOW = "20240501120000.000000+0000"
HELD = "1.2.3.100"
OTHER = "1.2.3.200"


def workitem(**extra) -> dict:
    """A workitem as ``prepare_create`` stores it."""
    ds = ups.new_workitem("Label the liver", start="20240501090000", worklist="liver", code=("110001", "DCM", "Image Processing"),
                          patient={"PatientName": "Doe^Jane", "PatientID": "P1"}, extra=extra)
    return ups.prepare_create(ds, "1.2.3.4", now=NOW, default_label="default", new_uid=lambda: "9.9").dataset


def in_state(state: str) -> dict:
    ds = workitem()
    ds["00741000"] = {"vr": "CS", "Value": [state]}
    return ds


def completable(ds: dict) -> dict:
    """``ds`` with what COMPLETED and CANCELED require (PS3.4 CC.2.5.1.1)."""
    ds = copy.deepcopy(ds)
    performed = dict((_element("PerformedProcedureStepStartDateTime", ["20240501100000"]),
                      _element("PerformedProcedureStepEndDateTime", ["20240501110000"]),
                      _element("PerformedStationNameCodeSequence", [ups.code_item("WS1", "99X", "Station 1")]),
                      _element("PerformedWorkitemCodeSequence", [ups.code_item("110001", "DCM", "Image Processing")]),
                      _element("OutputInformationSequence", [])))
    ds[ups._key("UnifiedProcedureStepPerformedProcedureSequence")] = {"vr": "SQ", "Value": [performed]}
    progress = dict((_element("ProcedureStepDiscontinuationReasonCodeSequence",
                                  [ups.code_item(*ups.UNSPECIFIED_DISCONTINUATION)]),))
    ds[ups._key("ProcedureStepProgressInformationSequence")] = {"vr": "SQ", "Value": [progress]}
    return ds


def request(state: str, transaction: str | None = HELD) -> dict:
    out = {"00741000": {"vr": "CS", "Value": [state]}}
    if transaction is not None:
        out["00081195"] = {"vr": "UI", "Value": [transaction]}
    return out


# -- Table CC.1.1-2, every cell ---------------------------------------------------------------------
# (current state, requested state, transaction given) -> new state and warning, or (status, DIMSE code, warning)
_HELD_BY_STATE = {ups.SCHEDULED: None, ups.IN_PROGRESS: HELD, ups.COMPLETED: HELD, ups.CANCELED: HELD}
TABLE = [
    # N-ACTION to IN PROGRESS with the correct transaction UID
    (ups.SCHEDULED, ups.IN_PROGRESS, HELD, ("ok", ups.IN_PROGRESS, None)),
    (ups.IN_PROGRESS, ups.IN_PROGRESS, HELD, (409, "C302", ups.STATE_INCONSISTENT)),
    (ups.COMPLETED, ups.IN_PROGRESS, HELD, (409, "C300", ups.STATE_INCONSISTENT)),
    (ups.CANCELED, ups.IN_PROGRESS, HELD, (409, "C300", ups.STATE_INCONSISTENT)),
    # ... without it (a second claimer)
    (ups.IN_PROGRESS, ups.IN_PROGRESS, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    (ups.COMPLETED, ups.IN_PROGRESS, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    (ups.CANCELED, ups.IN_PROGRESS, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    # N-ACTION to SCHEDULED: never (C303)
    (ups.SCHEDULED, ups.SCHEDULED, HELD, (400, "C303", ups.STATE_INCONSISTENT)),
    (ups.IN_PROGRESS, ups.SCHEDULED, HELD, (400, "C303", ups.STATE_INCONSISTENT)),
    (ups.COMPLETED, ups.SCHEDULED, HELD, (400, "C303", ups.STATE_INCONSISTENT)),
    # N-ACTION to COMPLETED with the correct transaction UID
    (ups.SCHEDULED, ups.COMPLETED, HELD, (409, "C310", ups.STATE_INCONSISTENT)),
    (ups.IN_PROGRESS, ups.COMPLETED, HELD, ("ok", ups.COMPLETED, None)),
    (ups.COMPLETED, ups.COMPLETED, HELD, ("ok", ups.COMPLETED, ups.ALREADY_COMPLETED)),
    (ups.CANCELED, ups.COMPLETED, HELD, (409, "C300", ups.STATE_INCONSISTENT)),
    # ... without it
    (ups.IN_PROGRESS, ups.COMPLETED, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    (ups.COMPLETED, ups.COMPLETED, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    (ups.CANCELED, ups.COMPLETED, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    # N-ACTION to CANCELED with the correct transaction UID
    (ups.SCHEDULED, ups.CANCELED, HELD, (409, "C310", ups.STATE_INCONSISTENT)),
    (ups.IN_PROGRESS, ups.CANCELED, HELD, ("ok", ups.CANCELED, None)),
    (ups.COMPLETED, ups.CANCELED, HELD, (409, "C300", ups.STATE_INCONSISTENT)),
    (ups.CANCELED, ups.CANCELED, HELD, ("ok", ups.CANCELED, ups.ALREADY_CANCELED)),
    # ... without it
    (ups.IN_PROGRESS, ups.CANCELED, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    (ups.COMPLETED, ups.CANCELED, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    (ups.CANCELED, ups.CANCELED, OTHER, (400, "C301", ups.TRANSACTION_INCORRECT)),
    # no transaction UID at all
    (ups.SCHEDULED, ups.IN_PROGRESS, None, (400, "C301", ups.TRANSACTION_MISSING)),
    (ups.IN_PROGRESS, ups.COMPLETED, None, (400, "C301", ups.TRANSACTION_MISSING)),
]


@pytest.mark.parametrize("state, requested, given, outcome", TABLE,
                         ids=[f"{s}->{r}-{'held' if g == HELD else 'other' if g else 'none'}" for s, r, g, _ in TABLE])
def test_state_transition_table(state, requested, given, outcome):
    current = completable(in_state(state))
    held = _HELD_BY_STATE[state]
    if outcome[0] == "ok":
        _, new_state, warning = outcome
        transition = ups.change_state(current, held, request(requested, given), now=NOW)
        assert transition.state == new_state
        assert transition.warning == warning
        assert transition.changed == (warning is None)
        assert ups.state_of(transition.dataset) == new_state
        if requested == ups.IN_PROGRESS:
            assert transition.transaction == given  # CC.2.1.3: the claimer's UID is recorded
        assert "00081195" not in transition.dataset  # never part of the dataset
        return
    status, code, warning = outcome
    with pytest.raises((WorkitemStateError, InvalidWorkitem)) as err:
        ups.change_state(current, held, request(requested, given), now=NOW)
    assert (err.value.status, err.value.dimse_status, err.value.warning) == (status, code, warning)


def test_a_final_state_needs_its_final_state_requirements():
    claimed = in_state(ups.IN_PROGRESS)  # created empty: no performed procedure, no progress
    with pytest.raises(WorkitemStateError) as err:
        ups.change_state(claimed, HELD, request(ups.COMPLETED), now=NOW)
    assert (err.value.status, err.value.dimse_status) == (409, "C304")
    assert "UnifiedProcedureStepPerformedProcedureSequence" in str(err.value)
    with pytest.raises(WorkitemStateError) as err:
        ups.change_state(claimed, HELD, request(ups.CANCELED), now=NOW)
    assert "ProcedureStepProgressInformationSequence" in str(err.value)
    half = completable(claimed)
    half[ups._key("UnifiedProcedureStepPerformedProcedureSequence")]["Value"][0].pop(ups._key("PerformedProcedureStepEndDateTime"))
    problems = ups.final_state_problems(half, ups.COMPLETED)
    assert problems == ["UnifiedProcedureStepPerformedProcedureSequence[1].PerformedProcedureStepEndDateTime"]
    # P attributes bind COMPLETED only; the cancellation time is the origin server's to fill when it cancels
    assert ups.final_state_problems(half, ups.CANCELED) == [
        "ProcedureStepProgressInformationSequence[1].ProcedureStepCancellationDateTime"]
    assert ups.change_state(half, HELD, request(ups.CANCELED), now=NOW).state == ups.CANCELED


def test_canceling_fills_the_cancellation_time():
    transition = ups.change_state(completable(in_state(ups.IN_PROGRESS)), HELD, request(ups.CANCELED), now=NOW)
    progress = transition.dataset[ups._key("ProcedureStepProgressInformationSequence")]["Value"][0]
    assert progress[ups._key("ProcedureStepCancellationDateTime")]["Value"] == [NOW]


def test_bad_state_values_are_400():
    for value in ("DONE", "", "in progress!"):
        with pytest.raises(InvalidWorkitem) as err:
            ups.change_state(in_state(ups.SCHEDULED), None, request(value), now=NOW)
        assert err.value.status == 400
    # PS3.18 11.7.1.4 spells it CANCELLED: taken as CANCELED
    assert ups.change_state(completable(in_state(ups.IN_PROGRESS)), HELD, request("CANCELLED"), now=NOW).state == ups.CANCELED


# -- creating (Table CC.2.5-3, N-CREATE) ------------------------------------------------------------

def test_a_built_workitem_meets_every_creation_requirement():
    ds = ups.new_workitem("Task", start="20240501", performers=["Ann"], parameters={"model": "unet", "threshold": 0.5},
                          inputs=[ups.input_item("1.2", "1.2.3", [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")], "http://x/y")])
    assert ups.required_problems(ds) == []
    created = ups.prepare_create(ds, "1.2.3.9", now=NOW, default_label="default", new_uid=lambda: "0")
    assert created.uid == "1.2.3.9"
    assert created.dataset["00080018"]["Value"] == ["1.2.3.9"]
    assert created.dataset["00080016"]["Value"] == [ups.UPS_PUSH_SOP_CLASS]
    assert created.dataset["00404010"]["Value"] == [NOW]  # set by the origin server
    assert created.modifications == ["WorklistLabel set to 'default'"]  # 2/1: the SCP names a worklist
    assert created.warning == ups.CREATED_WITH_MODIFICATIONS


@pytest.mark.parametrize("remove, named", [
    ("ProcedureStepLabel", "ProcedureStepLabel is required and must have a value"),
    ("ScheduledProcedureStepPriority", "ScheduledProcedureStepPriority is required"),
    ("ScheduledProcedureStepStartDateTime", "ScheduledProcedureStepStartDateTime is required"),
    ("InputReadinessState", "InputReadinessState is required"),
    ("ProcedureStepState", "ProcedureStepState is required"),
    ("PatientName", "PatientName is required (Type 2"),
    ("ScheduledWorkitemCodeSequence", "ScheduledWorkitemCodeSequence is required (Type 2"),
    ("ReferencedRequestSequence", "ReferencedRequestSequence is required (Type 2"),
    ("InputInformationSequence", "InputInformationSequence is required (Type 2"),
])
def test_creation_names_each_missing_attribute(remove, named):
    ds = ups.new_workitem("Task", start="20240501")
    del ds[ups._key(remove)]
    with pytest.raises(InvalidWorkitem) as err:
        ups.prepare_create(ds, "1.2.3", now=NOW, default_label="d", new_uid=lambda: "0")
    assert err.value.status == 400 and named in str(err.value)


@pytest.mark.parametrize("change, named", [
    ({"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}}, "ProcedureStepState must be SCHEDULED"),
    ({"00081195": {"vr": "UI", "Value": ["1.2.3"]}}, "TransactionUID must be empty"),
    ({"00741200": {"vr": "CS", "Value": ["URGENT"]}}, "ScheduledProcedureStepPriority must be one of HIGH, MEDIUM, LOW"),
    ({"00404041": {"vr": "CS", "Value": ["DONE"]}}, "InputReadinessState must be one of READY"),
    ({"00741204": {"vr": "LO", "Value": ["x" * 70]}}, "ProcedureStepLabel: The value length (70) exceeds"),
    ({"00404005": {"vr": "DT", "Value": ["20241345"]}}, "ScheduledProcedureStepStartDateTime"),
    ({"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [10]}}]}},
     "ProcedureStepProgressInformationSequence must be empty"),
    ({"00404018": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["1"]}}]}},
     "ScheduledWorkitemCodeSequence[1].CodeMeaning is required"),
    ({"00404021": {"vr": "SQ", "Value": [{"0040E020": {"vr": "CS", "Value": ["DICOM"]}}]}},
     "InputInformationSequence[1].ReferencedSOPSequence is required"),
    ({"00404034": {"vr": "SQ", "Value": [{"00404037": {"vr": "PN", "Value": [{"Alphabetic": "Ann"}]}}]}},
     "ScheduledHumanPerformersSequence[1].HumanPerformerCodeSequence is required"),
    ({"00100010": {"vr": "LO", "Value": ["Doe"]}}, "PatientName has VR LO, not PN"),
    ({"7FE00010": {"vr": "OB", "BulkDataURI": "http://x"}}, "a workitem holds no bulk data"),
])
def test_creation_refuses_what_table_cc_2_5_3_forbids(change, named):
    ds = ups.new_workitem("Task", start="20240501")
    ds.update(change)
    with pytest.raises(InvalidWorkitem) as err:
        ups.prepare_create(ds, "1.2.3", now=NOW, default_label="d", new_uid=lambda: "0")
    assert named in str(err.value)


@pytest.mark.parametrize("bad", [
    [], "text", {"PatientName": "Doe"}, {"00100010": "Doe"}, {"00100010": {"Value": ["Doe"]}},
    {"00100010": {"vr": "PN", "Value": "Doe"}}, {"00404021": {"vr": "SQ", "Value": ["item"]}},
    {"00741204": {"vr": "LO", "Value": [{"a": 1}]}}, {"00741204": {"vr": "LO", "Value": [True]}},
])
def test_what_is_not_dicom_json_is_a_400(bad):
    with pytest.raises(InvalidWorkitem) as err:
        ups.prepare_create(bad, None, now=NOW, default_label="d", new_uid=lambda: "0")
    assert err.value.status == 400


def test_the_uid_of_the_url_and_of_the_dataset_must_agree():
    ds = ups.new_workitem("Task", start="20240501")
    ds["00080018"] = {"vr": "UI", "Value": ["1.2.3"]}
    assert ups.prepare_create(ds, None, now=NOW, default_label="d", new_uid=lambda: "0").uid == "1.2.3"
    with pytest.raises(InvalidWorkitem, match="differs from the workitem UID"):
        ups.prepare_create(ds, "1.2.4", now=NOW, default_label="d", new_uid=lambda: "0")
    del ds["00080018"]
    created = ups.prepare_create(ds, None, now=NOW, default_label="d", new_uid=lambda: "7.7")
    assert created.uid == "7.7" and any("assigned" in m for m in created.modifications)


# -- updating (N-SET) -------------------------------------------------------------------------------

def test_update_rules():
    scheduled = workitem()
    label = {"00741204": {"vr": "LO", "Value": ["Renamed"]}}
    assert ups.prepare_update(scheduled, None, label, None, now=NOW).dataset["00741204"]["Value"] == ["Renamed"]
    with pytest.raises(WorkitemStateError) as err:  # a SCHEDULED workitem is updated without a transaction UID
        ups.prepare_update(scheduled, None, label, HELD, now=NOW)
    assert err.value.status == 409
    claimed = in_state(ups.IN_PROGRESS)
    for given, status in ((None, 400), (OTHER, 400)):
        with pytest.raises(WorkitemStateError) as err:
            ups.prepare_update(claimed, HELD, label, given, now=NOW)
        assert (err.value.status, err.value.warning, err.value.dimse_status) == (status, ups.NOT_CLAIMED, "C301")
    assert ups.prepare_update(claimed, HELD, label, HELD, now=NOW).warning is None
    # the Transaction UID may also come in the dataset (as N-SET carries it)
    assert ups.prepare_update(claimed, HELD, {**label, "00081195": {"vr": "UI", "Value": [HELD]}}, None, now=NOW)
    for final in (ups.COMPLETED, ups.CANCELED):
        with pytest.raises(WorkitemStateError) as err:
            ups.prepare_update(in_state(final), HELD, label, HELD, now=NOW)
        assert (err.value.status, err.value.dimse_status) == (400, "C300")  # PS3.18 11.6.2


@pytest.mark.parametrize("change, named", [
    ({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Other"}]}}, "PatientName may not be given in an update"),
    ({"00741000": {"vr": "CS", "Value": ["COMPLETED"]}}, "change the state with PUT"),
    ({"0040A370": {"vr": "SQ", "Value": []}}, "ReferencedRequestSequence may not be given"),
    ({"00741204": {"vr": "LO"}}, "ProcedureStepLabel must have a value"),
    ({"00080018": {"vr": "UI", "Value": ["5.5.5"]}}, "SOPInstanceUID may not be changed"),
    ({"00741002": {"vr": "SQ", "Value": [{"00741008": {"vr": "SQ", "Value": [{}]}}]}},
     "ProcedureStepCommunicationsURISequence[1].ContactURI is required"),
])
def test_update_refuses_what_n_set_forbids(change, named):
    with pytest.raises(InvalidWorkitem) as err:
        ups.prepare_update(workitem(), None, change, None, now=NOW)
    assert err.value.status == 400 and named in str(err.value)


def test_the_modification_time_is_the_servers():
    updated = ups.prepare_update(workitem(), None, {"00404010": {"vr": "DT", "Value": ["19990101"]}}, None, now="20250101")
    assert updated.dataset["00404010"]["Value"] == ["20250101"]
    assert updated.warning == ups.UPDATED_WITH_MODIFICATIONS


# -- requesting cancellation (CC.2.2.3) --------------------------------------------------------------

def test_cancellation_requests():
    info = {"00741238": {"vr": "LT", "Value": ["wrong series"]}}
    decision = ups.request_cancel(workitem(), info, now=NOW, performer_reachable=False)
    assert decision.action == "cancel" and ups.state_of(decision.dataset) == ups.CANCELED
    assert ups.final_state_problems(decision.dataset, ups.CANCELED) == []  # the SCP met them
    progress = decision.dataset["00741002"]["Value"][0]
    assert progress["00741238"]["Value"] == ["wrong series"]
    assert progress["0074100E"]["Value"][0]["00080100"]["Value"] == ["110513"]
    claimed = in_state(ups.IN_PROGRESS)
    assert ups.request_cancel(claimed, info, now=NOW, performer_reachable=True).action == "notify"
    with pytest.raises(WorkitemStateError) as err:
        ups.request_cancel(claimed, info, now=NOW, performer_reachable=False)
    assert (err.value.status, err.value.dimse_status, err.value.warning) == (409, "C312", ups.PERFORMER_UNREACHABLE)
    with pytest.raises(WorkitemStateError) as err:
        ups.request_cancel(in_state(ups.COMPLETED), info, now=NOW, performer_reachable=True)
    assert (err.value.status, err.value.dimse_status, err.value.warning) == (409, "C311", ups.CANCEL_COMPLETED)
    already = ups.request_cancel(in_state(ups.CANCELED), info, now=NOW, performer_reachable=True)
    assert (already.action, already.warning) == ("already", ups.ALREADY_CANCELED)
    with pytest.raises(InvalidWorkitem, match="not PatientName"):
        ups.request_cancel(workitem(), {"00100010": {"vr": "PN"}}, now=NOW, performer_reachable=True)


# -- event reports ----------------------------------------------------------------------------------

def test_update_events():
    before = workitem()
    after = copy.deepcopy(before)
    assert ups.update_events("1.2", before, after) == []
    after["00404041"] = {"vr": "CS", "Value": ["INCOMPLETE"]}
    after["00741002"] = {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [50]}}]}
    after["00404034"] = ups.new_workitem("x", start="2024", performers=["Bob"])["00404034"]
    kinds = [e["00001002"]["Value"][0] for e in ups.update_events("1.2", before, after)]
    assert kinds == [ups.STATE_REPORT, ups.ASSIGNED, ups.PROGRESS_REPORT]
    report = ups.state_report("1.2", after)
    assert report["00000002"]["Value"] == [ups.UPS_PUSH_SOP_CLASS] and report["00001000"]["Value"] == ["1.2"]
    assert report["00404041"]["Value"] == ["INCOMPLETE"] and report["00741000"]["Value"] == [ups.SCHEDULED]


def test_ae_titles():
    assert ups.valid_ae_title(" WATCHER ") == "WATCHER"
    for bad in ("", "   ", "A" * 17, "A\\B", "A\nB"):
        assert ups.valid_ae_title(bad) is None

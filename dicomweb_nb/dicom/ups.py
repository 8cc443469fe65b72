"""The Unified Procedure Step rules (PS3.4 Annex CC) behind the Worklist Service (UPS-RS, PS3.18 11).

Pure functions over DICOM JSON, shared by the server, the store and the notebook client:

* the state machine of Table CC.1.1-2 (``change_state``, ``request_cancel``), with the HTTP status and
  ``Warning`` text PS3.18 11.6-11.8 give each outcome;
* the attribute requirements of Table CC.2.5-3 for creating (N-CREATE) and updating (N-SET) a workitem,
  and its Final State requirements (``prepare_create``, ``prepare_update``, ``final_state_problems``;
  the table itself, and building a workitem a user agent sends, are ``ups_attributes.py``'s);
* the event reports of Table CC.2.4-1 (``state_report``, ``cancel_requested``, ...), and which ones an
  update causes (``update_events``).

Where PS3.18 leaves the status of a refusal open, this module decides once:

* 400 (Bad Request): the request itself is wrong whatever the workitem's state: a required attribute
  missing, an attribute that may not be set, a missing or wrong Transaction UID (PS3.18 11.7.3.1 names
  both), a state other than IN PROGRESS, COMPLETED or CANCELED, an update of a COMPLETED or CANCELED
  workitem (PS3.18 11.6.2 says 400 there).
* 409 (Conflict): a request that would be right in another state: claiming a workitem that is not
  SCHEDULED with its own Transaction UID (C302), completing or canceling one that is not IN PROGRESS
  (C310, C300), a final state whose requirements are not met (C304), a cancellation request for a
  COMPLETED workitem (C311) or an IN PROGRESS one whose performer cannot be told (C312).

A second claimer of the same SCHEDULED workitem therefore gets 400 "The Transaction UID is incorrect",
as Table CC.1.1-2 and the note of CC.2.1.2 have it: the first claimer's UID is the correct one.
The Transaction UID is never part of the stored dataset (PS3.18 11.5.2: it is the owner's lock).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidWorkitem, WorkitemStateError
from .dicomjson import DicomJson, make_element
from .query import Query
from .tags import keyword_of, tag_hex
from .uids import UID_RULE, is_valid_uid
from .ups_attributes import (
    CANCELED,
    CODE,
    COMPLETED,
    IN_PROGRESS,
    PRIORITIES,
    READINESS,
    SCHEDULED,
    WORKITEM,
    Attr,
    ItemRules,
    _items,
    _key,
    _problems,
    _refuse,
    _text,
    _values,
    add_missing_type2,
    attributes,
    check_json,
    code_item,
    content_item,
    input_item,
    new_workitem,
    state_request,
)

__all__ = [
    "UPS_PUSH_SOP_CLASS", "GLOBAL_SUBSCRIPTION", "FILTERED_SUBSCRIPTION", "SCHEDULED", "IN_PROGRESS", "COMPLETED",
    "CANCELED", "STATES", "PRIORITIES", "READINESS", "Created", "Updated", "Transition", "CancelRequest",
    "prepare_create", "prepare_update", "change_state", "request_cancel", "final_state_problems", "check_search",
    "stored_dataset", "state_of", "add_missing_type2", "state_report", "cancel_requested", "progress_report",
    "assigned", "scp_status", "update_events", "valid_ae_title", "dicom_datetime",
    # built in ups_attributes.py, used through this module
    "code_item", "attributes", "input_item", "content_item", "new_workitem", "state_request",
]

UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"  # every workitem is an instance of it (PS3.4 CC.3.1)
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"  # the worklist, as a subscription target
FILTERED_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"  # the worklist through a filter

STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
FINAL_STATES = (COMPLETED, CANCELED)
DEFAULT_WORKLIST = "default"  # the Worklist Label of a workitem whose creator names no worklist
# The default discontinuation reason of a cancellation that gave none (CID 9300): DCM 110513.
UNSPECIFIED_DISCONTINUATION = ("110513", "DCM", "Discontinued for unspecified reason")

# The Warning texts of PS3.18 11.4.3.2, 11.6.3.2, 11.7.3.2 and 11.8.3.2.
CREATED_WITH_MODIFICATIONS = "The Workitem was created with modifications."
UPDATED_WITH_MODIFICATIONS = "The Workitem was updated with modifications."
NOT_CLAIMED = "The target URI did not reference a claimed Workitem."
UPDATE_INCONSISTENT = "The submitted request is inconsistent with the current state of the Workitem."
ALREADY_CANCELED = "The UPS is already in the requested state of CANCELED."
ALREADY_COMPLETED = "The UPS is already in the requested state of COMPLETED."
TRANSACTION_MISSING = "The Transaction UID is missing."
TRANSACTION_INCORRECT = "The Transaction UID is incorrect."
STATE_INCONSISTENT = "The submitted request is inconsistent with the state of the UPS Instance."
CANCEL_COMPLETED = "The UPS is already COMPLETED."
PERFORMER_UNREACHABLE = "The performer cannot be contacted."

_TRANSACTION_UID = "00081195"
_SOP_CLASS_UID = "00080016"
_SOP_INSTANCE_UID = "00080018"
_STATE = "00741000"
_READINESS = "00404041"
_LABEL = "00741202"
_MODIFIED = "00404010"
_PROGRESS = "00741002"
_PERFORMED = "00741216"




def state_of(dataset: Mapping[str, Any]) -> str | None:
    """The Procedure Step State of a workitem dataset."""
    return _text(dataset, _STATE)


def dicom_datetime(moment: Any) -> str:
    """A ``datetime`` as a DICOM DT value (to the microsecond, with its UTC offset when it has one)."""
    text = moment.strftime("%Y%m%d%H%M%S") + f".{moment.microsecond:06d}"
    return text + (moment.strftime("%z") if moment.utcoffset() is not None else "")


def valid_ae_title(text: str) -> str | None:
    """An AE title (PS3.5 AE: at most 16 characters, no backslash nor control characters; leading and
    trailing spaces are not significant) in its canonical form, or None when it is not one."""
    stripped = text.strip(" ")
    if not stripped or len(stripped) > 16 or "\\" in stripped or any(ord(c) < 32 or ord(c) > 126 for c in stripped):
        return None
    return stripped



@dataclass
class Created:
    """A workitem as it is stored, with what the origin server changed in it (each is a reason for
    the "created with modifications" warning)."""

    uid: str
    dataset: DicomJson
    modifications: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        return CREATED_WITH_MODIFICATIONS if self.modifications else None


def prepare_create(dataset: Mapping[str, Any], uid: str | None, *, now: str, default_label: str,
                   new_uid: Callable[[], str]) -> Created:
    """Check a Create Workitem request (PS3.18 11.4, PS3.4 CC.2.5) and make the dataset to store.

    ``uid`` is the Workitem UID of the request URL (None when it names none: the dataset's SOP Instance
    UID, else ``new_uid()``); ``now`` the DT of the request (Scheduled Procedure Step Modification
    DateTime); ``default_label`` the Worklist Label given when the request has none. Raises
    InvalidWorkitem (400) naming every attribute that breaks Table CC.2.5-3.
    """
    check_json(dataset, "the workitem")
    obj = copy.deepcopy(dict(dataset))
    created = Created("", obj)
    problems: list[str] = []
    if _values(obj.get(_TRANSACTION_UID)):
        problems.append("TransactionUID must be empty at creation (the performer sets it by claiming the workitem)")
    obj.pop(_TRANSACTION_UID, None)
    given = _text(obj, _SOP_INSTANCE_UID)
    if uid is not None and given is not None and given != uid:
        problems.append(f"SOPInstanceUID {given} differs from the workitem UID {uid} of the request URL")
    chosen = uid or given
    if chosen is not None and not is_valid_uid(chosen):
        problems.append(f"the workitem UID {chosen!r} is not a UID ({UID_RULE})")
    state = _text(obj, _STATE)
    if state is not None and state != SCHEDULED:
        # C309: "The provided value of UPS State was not SCHEDULED".
        problems.append(f"ProcedureStepState must be SCHEDULED when the workitem is created, not {state!r}")
    _problems(obj, WORKITEM, "create", "", problems, whole=True)
    _refuse(problems, "the workitem")
    if chosen is None:
        chosen = new_uid()
        created.modifications.append(f"SOPInstanceUID {chosen} assigned (the request named no workitem UID)")
    created.uid = chosen
    obj[_SOP_INSTANCE_UID] = make_element("UI", [chosen])
    if _text(obj, _SOP_CLASS_UID) not in (None, UPS_PUSH_SOP_CLASS):
        created.modifications.append(f"SOPClassUID set to {UPS_PUSH_SOP_CLASS} (UPS Push, PS3.4 CC.3.1)")
    obj[_SOP_CLASS_UID] = make_element("UI", [UPS_PUSH_SOP_CLASS])
    if not _text(obj, _LABEL):
        created.modifications.append(f"WorklistLabel set to {default_label!r}")
        obj[_LABEL] = make_element("LO", [default_label])
    if _text(obj, _MODIFIED) not in (None, now):
        created.modifications.append("ScheduledProcedureStepModificationDateTime set to the time of creation")
    obj[_MODIFIED] = make_element("DT", [now])
    for key in (_PROGRESS, _PERFORMED):
        obj[key] = {"vr": "SQ", "Value": []}  # Type 2, created empty
    created.dataset = stored_dataset(obj)
    return created


def stored_dataset(obj: Mapping[str, Any]) -> DicomJson:
    """A workitem dataset in tag order, without its Transaction UID (which is never returned)."""
    return {key: obj[key] for key in sorted(obj) if key != _TRANSACTION_UID}


# -- updating (N-SET) ------------------------------------------------------------------------------

@dataclass
class Updated:
    dataset: DicomJson
    modifications: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        return UPDATED_WITH_MODIFICATIONS if self.modifications else None


def prepare_update(current: Mapping[str, Any], held_transaction: str | None, changes: Mapping[str, Any],
                   transaction: str | None, *, now: str) -> Updated:
    """Check an Update Workitem request (PS3.18 11.6, PS3.4 CC.2.6) against the stored workitem and
    return the updated dataset. ``transaction`` is the Transaction UID of the request (its query
    parameter, or the dataset's own Transaction UID attribute)."""
    check_json(changes, "the update")
    state = state_of(current)
    in_dataset = _text(changes, _TRANSACTION_UID)
    if in_dataset and transaction and in_dataset != transaction:
        raise InvalidWorkitem("the TransactionUID of the dataset differs from the transaction UID of the request URL",
                              status=400)
    transaction = transaction or in_dataset
    if state in FINAL_STATES:
        raise WorkitemStateError(f"the workitem is {state}: it may no longer be updated", status=400,
                                 warning=UPDATE_INCONSISTENT, dimse_status="C300")
    if state == IN_PROGRESS and transaction != held_transaction:
        if not transaction:
            raise WorkitemStateError("the workitem is IN PROGRESS: an update needs its transaction UID "
                                     "(POST .../workitems/{uid}?{transaction UID})", status=400,
                                     warning=NOT_CLAIMED, dimse_status="C301")
        raise WorkitemStateError("the transaction UID does not match the one of the claim on this workitem",
                                 status=400, warning=NOT_CLAIMED, dimse_status="C301")
    if state == SCHEDULED and transaction:
        # CC.2.6.2: a SCHEDULED workitem is updated without a Transaction UID; one was given, so the
        # request was meant for a claimed workitem.
        raise WorkitemStateError("the workitem is SCHEDULED (nobody has claimed it): update it without a transaction UID",
                                 status=409, warning=UPDATE_INCONSISTENT, dimse_status="C310")
    obj = {k: v for k, v in changes.items() if k != _TRANSACTION_UID}
    problems: list[str] = []
    for key in (_SOP_INSTANCE_UID,):
        if key in obj:
            if _text(obj, key) == _text(current, key):
                obj.pop(key)  # the same value again changes nothing
            else:
                problems.append(f"{keyword_of(key)} may not be changed")
    _problems(obj, WORKITEM, "update", "", problems, whole=False)
    _refuse(problems, "the update")
    updated = Updated({})
    merged = dict(copy.deepcopy(dict(current)))
    for key, elem in obj.items():
        if key == _MODIFIED:
            updated.modifications.append("ScheduledProcedureStepModificationDateTime set to the time of the update")
            continue
        merged[key] = copy.deepcopy(elem)
    merged[_MODIFIED] = make_element("DT", [now])
    updated.dataset = stored_dataset(merged)
    return updated


# -- the state machine (Table CC.1.1-2) --------------------------------------------------------------

@dataclass
class Transition:
    """The outcome of a Change Workitem State request that is not refused."""

    state: str  # the state after the request
    dataset: DicomJson  # the workitem after the request
    transaction: str | None  # the Transaction UID recorded after it
    changed: bool  # False: the workitem already was in the requested state (a warning)
    warning: str | None = None


_REQUESTABLE = (IN_PROGRESS, COMPLETED, CANCELED)


def _requested_state(requested: Any) -> str:
    text = str(requested or "").strip().upper()
    if text == "CANCELLED":  # PS3.18 11.7.1.4 spells it so; the defined term is CANCELED
        text = CANCELED
    if text == SCHEDULED:
        raise WorkitemStateError("a workitem becomes SCHEDULED only when it is created (C303); request IN PROGRESS, "
                                 "COMPLETED or CANCELED", status=400, warning=STATE_INCONSISTENT, dimse_status="C303")
    if text not in _REQUESTABLE:
        raise InvalidWorkitem(f"ProcedureStepState must be IN PROGRESS, COMPLETED or CANCELED, not {requested!r}", status=400)
    return text


def change_state(current: Mapping[str, Any], held_transaction: str | None, request: Mapping[str, Any], *,
                 now: str) -> Transition:
    """Decide a Change Workitem State request (PS3.18 11.7; PS3.4 CC.2.1 and Table CC.1.1-2).

    ``request`` is the request's dataset (Procedure Step State and Transaction UID). Raises
    WorkitemStateError or InvalidWorkitem with the status and Warning PS3.18 gives the refusal.
    """
    check_json(request, "the state change request")
    requested = _requested_state(_text(request, _STATE))
    given = _text(request, _TRANSACTION_UID)
    if not given:
        raise WorkitemStateError("the request has no TransactionUID (the claimer makes one when claiming, and "
                                 "gives it again to complete or cancel)", status=400, warning=TRANSACTION_MISSING,
                                 dimse_status="C301")
    if not is_valid_uid(given):
        raise InvalidWorkitem(f"TransactionUID {given!r} is not a UID ({UID_RULE})", status=400)
    state = state_of(current) or SCHEDULED
    if held_transaction is not None and given != held_transaction:
        who = "someone else claimed it" if state == IN_PROGRESS else f"it is {state}"
        raise WorkitemStateError(f"the transaction UID is not the one of this workitem ({who})", status=400,
                                 warning=TRANSACTION_INCORRECT, dimse_status="C301")
    obj = copy.deepcopy(dict(current))
    if requested == IN_PROGRESS:
        if state == SCHEDULED:
            obj[_STATE] = make_element("CS", [IN_PROGRESS])
            return Transition(IN_PROGRESS, stored_dataset(obj), given, True)
        code, why = ("C302", "it is already IN PROGRESS") if state == IN_PROGRESS else ("C300", f"it is {state}")
        raise WorkitemStateError(f"the workitem cannot be claimed: {why}", status=409, warning=STATE_INCONSISTENT,
                                 dimse_status=code)
    if state == SCHEDULED:
        raise WorkitemStateError(f"the workitem cannot become {requested}: it is SCHEDULED, not yet IN PROGRESS (claim "
                                 "it first)", status=409, warning=STATE_INCONSISTENT, dimse_status="C310")
    if state == requested:
        warning = ALREADY_COMPLETED if state == COMPLETED else ALREADY_CANCELED
        return Transition(state, stored_dataset(obj), held_transaction, False, warning)
    if state in FINAL_STATES:
        raise WorkitemStateError(f"the workitem is {state}: it may no longer change", status=409,
                                 warning=STATE_INCONSISTENT, dimse_status="C300")
    if requested == CANCELED:
        _fill_cancellation_time(obj, now)
    problems = final_state_problems(obj, requested)
    if problems:
        raise WorkitemStateError(f"the workitem does not meet the requirements of the {requested} state (PS3.4 "
                                 f"CC.2.5.1.1): {'; '.join(problems)}. Set them with an update first", status=409,
                                 warning=STATE_INCONSISTENT, dimse_status="C304")
    obj[_STATE] = make_element("CS", [requested])
    return Transition(requested, stored_dataset(obj), held_transaction, True)


def _fill_cancellation_time(obj: DicomJson, now: str) -> None:
    """CC.2.5-3: "If changing the UPS State to CANCELED and this Attribute has no value, the SCP shall
    fill it with the current date time"."""
    key = _key("ProcedureStepCancellationDateTime")
    for item in _items(obj.get(_PROGRESS)):
        if not _values(item.get(key)):
            item[key] = make_element("DT", [now])


def final_state_problems(dataset: Mapping[str, Any], state: str) -> list[str]:
    """What keeps a workitem from the final ``state`` (COMPLETED or CANCELED): the attributes whose
    Final State code (R, P for COMPLETED, X for CANCELED) requires a value it does not have."""
    wanted = {"R", "P"} if state == COMPLETED else {"R", "X"}
    missing: list[str] = []

    def walk(obj: Mapping[str, Any], rules: ItemRules, where: str) -> None:
        for attr in rules.attrs:
            elem = obj.get(attr.key)
            name = f"{where}{attr.keyword}"
            if attr.final in wanted:
                if attr.keyword == "OutputInformationSequence":
                    if elem is None:
                        missing.append(f"{name} (empty when the work made nothing)")
                    continue
                if not _values(elem):
                    missing.append(name)
                    continue
            if attr.items is not None and attr.final in wanted:
                for item in _items(elem)[:1]:
                    walk(item, attr.items, f"{name}[1].")

    walk(dataset, WORKITEM, "")
    return missing


# -- requesting cancellation (PS3.4 CC.2.2) ----------------------------------------------------------

@dataclass
class CancelRequest:
    """The outcome of a Request Cancellation: ``cancel`` (a SCHEDULED workitem the origin server cancels
    itself, through IN PROGRESS, with ``dataset`` meeting the CANCELED requirements), ``notify`` (an IN
    PROGRESS workitem: its subscribers are told, the performer decides) or ``already`` (CANCELED)."""

    action: str
    dataset: DicomJson | None = None
    warning: str | None = None


_CANCEL_INFO = ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence", "ContactURI",
                "ContactDisplayName")


def request_cancel(current: Mapping[str, Any], info: Mapping[str, Any], *, now: str, performer_reachable: bool) -> CancelRequest:
    """Decide a Request Cancellation (PS3.18 11.8, PS3.4 CC.2.2.3) of a workitem by someone who does not
    own it. ``info`` holds what the request may carry (Reason For Cancellation, a Procedure Step
    Discontinuation Reason Code Sequence, Contact URI and Display Name); ``performer_reachable``: some
    subscriber of the workitem will be told (without one, an IN PROGRESS workitem's performer cannot be)."""
    check_json(info, "the cancellation request")
    problems: list[str] = []
    unknown = [keyword_of(k) for k in info if k not in {_key(n) for n in _CANCEL_INFO}]
    if unknown:
        problems.append(f"a cancellation request holds {', '.join(_CANCEL_INFO)} only, not {', '.join(unknown)}")
    _problems(info, ItemRules((Attr("ProcedureStepDiscontinuationReasonCodeSequence", items=CODE),)), "update", "",
              problems, whole=False)
    _refuse(problems, "the cancellation request")
    state = state_of(current)
    if state == CANCELED:
        return CancelRequest("already", warning=ALREADY_CANCELED)
    if state == COMPLETED:
        raise WorkitemStateError("the workitem is already COMPLETED (C311)", status=409, warning=CANCEL_COMPLETED,
                                 dimse_status="C311")
    if state == IN_PROGRESS:
        if not performer_reachable:
            raise WorkitemStateError("the workitem is IN PROGRESS and nobody is subscribed to it, so its performer "
                                     "cannot be told (C312); its performer can cancel it", status=409,
                                     warning=PERFORMER_UNREACHABLE, dimse_status="C312")
        return CancelRequest("notify")
    obj = copy.deepcopy(dict(current))
    progress: DicomJson = {}
    if _values(info.get(_key("ReasonForCancellation"))):
        progress[_key("ReasonForCancellation")] = copy.deepcopy(info[_key("ReasonForCancellation")])
    reason_codes = _items(info.get(_key("ProcedureStepDiscontinuationReasonCodeSequence")))
    if not reason_codes:
        value, scheme, meaning = UNSPECIFIED_DISCONTINUATION
        reason_codes = [code_item(value, scheme, meaning)]
    progress[_key("ProcedureStepDiscontinuationReasonCodeSequence")] = {"vr": "SQ", "Value": copy.deepcopy(reason_codes)}
    contact = _text(info, _key("ContactURI"))
    if contact:
        link: DicomJson = {_key("ContactURI"): make_element("UR", [contact])}
        name = _text(info, _key("ContactDisplayName"))
        if name:
            link[_key("ContactDisplayName")] = make_element("LO", [name])
        progress[_key("ProcedureStepCommunicationsURISequence")] = {"vr": "SQ", "Value": [link]}
    progress[_key("ProcedureStepCancellationDateTime")] = make_element("DT", [now])
    obj[_PROGRESS] = {"vr": "SQ", "Value": [{k: progress[k] for k in sorted(progress)}]}
    obj[_STATE] = make_element("CS", [CANCELED])
    return CancelRequest("cancel", stored_dataset(obj))


# -- searching (PS3.18 11.9) -----------------------------------------------------------------------

def check_search(query: Query) -> None:
    """Refuse matching keys a worklist search may not have: the Transaction UID "cannot be queried"
    (Table CC.2.5-3), a lock its owner alone knows."""
    for match in query.matches:
        if _TRANSACTION_UID in (tag_hex(t) for t in match.path):
            raise InvalidWorkitem("TransactionUID cannot be a matching key (PS3.4 Table CC.2.5-3)", status=400)


# -- event reports (PS3.4 CC.2.4, PS3.18 11.13) ----------------------------------------------------

STATE_REPORT, CANCEL_REQUESTED, PROGRESS_REPORT, SCP_STATUS_CHANGE, ASSIGNED = 1, 2, 3, 4, 5


def _report(uid: str, event_type: int, attributes: DicomJson) -> DicomJson:
    """An Event Report as PS3.18 8.10.5 sends it: the N-EVENT-REPORT's command attributes (the Message ID
    is added when it is sent) and its event attributes."""
    report = {"00000002": make_element("UI", [UPS_PUSH_SOP_CLASS]), "00001000": make_element("UI", [uid]),
              "00001002": make_element("US", [event_type])}
    report.update(attributes)
    return {k: report[k] for k in sorted(report)}


def _copy(dataset: Mapping[str, Any], *keywords: str) -> DicomJson:
    return {_key(k): copy.deepcopy(dataset[_key(k)]) for k in keywords if _key(k) in dataset}


def state_report(uid: str, dataset: Mapping[str, Any]) -> DicomJson:
    """UPS State Report (event 1): the Procedure Step State and Input Readiness State, with the
    reason of a cancellation when the workitem is CANCELED."""
    attributes = _copy(dataset, "ProcedureStepState", "InputReadinessState")
    if state_of(dataset) == CANCELED:
        for item in _items(dataset.get(_PROGRESS))[:1]:
            attributes.update(_copy(item, "ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence"))
    return _report(uid, STATE_REPORT, attributes)


def cancel_requested(uid: str, requesting_ae: str, info: Mapping[str, Any]) -> DicomJson:
    """UPS Cancel Requested (event 2): who asked, and what the request said."""
    attributes = {_key("RequestingAE"): make_element("AE", [requesting_ae])}
    attributes.update(_copy(info, *_CANCEL_INFO))
    return _report(uid, CANCEL_REQUESTED, attributes)


def progress_report(uid: str, dataset: Mapping[str, Any]) -> DicomJson:
    """UPS Progress Report (event 3): the Procedure Step Progress Information Sequence."""
    return _report(uid, PROGRESS_REPORT, {_PROGRESS: copy.deepcopy(dataset.get(_PROGRESS) or {"vr": "SQ", "Value": []})})


def assigned(uid: str, dataset: Mapping[str, Any]) -> DicomJson:
    """UPS Assigned (event 5): the scheduled station and human performers."""
    attributes = _copy(dataset, "ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence",
                       "HumanPerformerCodeSequence", "HumanPerformerOrganization")
    return _report(uid, ASSIGNED, attributes)


def scp_status(status: str, *, subscriptions: str = "WARM START", worklist: str = "WARM START") -> DicomJson:
    """SCP Status Change (event 4), about the worklist itself (its well-known UID)."""
    return _report(GLOBAL_SUBSCRIPTION, SCP_STATUS_CHANGE, {
        _key("SCPStatus"): make_element("CS", [status]), _key("SubscriptionListStatus"): make_element("CS", [subscriptions]),
        _key("UnifiedProcedureStepListStatus"): make_element("CS", [worklist])})


def is_assigned(dataset: Mapping[str, Any]) -> bool:
    """Whether a station or a human performer is scheduled (a UPS Assigned event is due at creation)."""
    return bool(_values(dataset.get(_key("ScheduledStationNameCodeSequence")))
                or _values(dataset.get(_key("ScheduledHumanPerformersSequence"))))


_PROGRESS_FIELDS = ("ProcedureStepProgress", "ProcedureStepProgressDescription", "ProcedureStepCommunicationsURISequence")


def update_events(uid: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[DicomJson]:
    """The event reports an update causes (CC.2.4.3): a State Report when the Input Readiness State
    changed, UPS Assigned when the scheduled station or performers changed, a Progress Report when the
    progress, its description or the communication URIs changed."""
    events = []
    if _text(before, _READINESS) != _text(after, _READINESS):
        events.append(state_report(uid, after))
    if any(before.get(_key(k)) != after.get(_key(k)) for k in ("ScheduledStationNameCodeSequence",
                                                                 "ScheduledHumanPerformersSequence")):
        events.append(assigned(uid, after))

    def progress(obj: Mapping[str, Any]) -> list[Any]:
        items = _items(obj.get(_PROGRESS))
        return [items[0].get(_key(k)) if items else None for k in _PROGRESS_FIELDS]

    if progress(before) != progress(after):
        events.append(progress_report(uid, after))
    return events


def required_problems(dataset: Mapping[str, Any]) -> list[str]:
    """What a dataset lacks to be created as a workitem (the user agent's own check before sending)."""
    problems: list[str] = []
    _problems(dataset, WORKITEM, "create", "", problems, whole=True)
    return problems


def keywords_of(attrs: Iterable[Attr]) -> list[str]:
    return [a.keyword for a in attrs]

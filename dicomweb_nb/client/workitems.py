"""The worklist from a notebook (UPS-RS, PS3.18 11): a task queue a team runs from its notebooks.

One person creates a workitem per series to label (or to run a model on); whoever is free claims one
(``pacs.claim``: SCHEDULED -> IN PROGRESS; of two claimers exactly one wins, the other gets
``dw.errors.WorkitemStateError``), works, and completes it naming what it produced (``pacs.complete``)
or gives it up (``pacs.cancel``). ``pacs.workitems(...)`` lists them as a DataFrame.

Two sources offer the worklist transactions: ``WebWorklist`` over HTTP (any UPS-RS origin server) and the
workspace store's own in-process one (``client/local.py``'s ``StoreWorklist``); both raise the same errors:
``dw.errors.InvalidWorkitem`` (400, an attribute missing or not allowed), ``dw.errors.WorkitemStateError``
(the state or the transaction UID refuses the change), ``dw.errors.NotFound``. Event reports of
subscriptions arrive on a notification channel (``pacs.listen(aetitle)``), a WebSocket over HTTP.
"""

from __future__ import annotations

import datetime as _dt
import socket
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..dicom import ups
from ..dicom.dicomjson import DicomJson, dataset_to_json
from ..dicom.resources import resource_url
from ..dicom.uids import UID_RULE, is_valid_uid
from ..errors import DicomWebError, DicomWebWarning, NotFound, WorkitemStateError
from .dataframes import to_dataframe
from .qido import build_searches, result_key, validate_fields
from .workitems_web import EventChannel, EventReceiver, WebWorklist, WorkitemEvent

if TYPE_CHECKING:
    from ..protocol import DicomWebSource

__all__ = ["WorklistSource", "WebWorklist", "WorklistMethods", "WorkitemEvent", "EventChannel", "WORKITEM_COLUMNS"]

# Columns of pacs.workitems(), typed the same whether or not anything matched.
WORKITEM_COLUMNS = ("SOPInstanceUID", "ProcedureStepState", "ProcedureStepLabel", "WorklistLabel",
                    "ScheduledProcedureStepPriority", "ScheduledProcedureStepStartDateTime", "InputReadinessState",
                    "ScheduledWorkitemCodeSequence", "PatientName", "PatientID", "StudyInstanceUID",
                    "ScheduledProcedureStepModificationDateTime")


class WorklistSource(Protocol):
    """The worklist transactions of PS3.18 11, over DICOM JSON. Each change returns the ``Warning`` texts
    of its answer; refusals raise ``errors.WorkitemError`` (or ``NotFound``)."""

    def create(self, dataset: DicomJson, uid: str | None = None) -> tuple[str, list[str]]: ...

    def retrieve(self, uid: str) -> DicomJson: ...

    def update(self, uid: str, changes: DicomJson, transaction: str | None = None) -> list[str]: ...

    def change_state(self, uid: str, state: str, transaction: str) -> list[str]: ...

    def request_cancellation(self, uid: str, info: DicomJson) -> list[str]: ...

    def search(self, filters: Sequence[tuple[str, str]], *, fields: Sequence[str] = (), fuzzy: bool = False,
               limit: int | None = None, offset: int = 0) -> list[DicomJson]: ...

    def subscribe(self, aetitle: str, target: str, *, deletion_lock: bool = False,
                  filters: Sequence[tuple[str, str]] | None = None) -> str | None: ...

    def unsubscribe(self, aetitle: str, target: str) -> None: ...

    def suspend(self, aetitle: str, target: str) -> None: ...

    def channel(self, aetitle: str) -> EventReceiver: ...


# -- the notebook API (methods of Client) ----------------------------------------------------------

def _source_url(source: Any) -> str:
    """The DICOMweb root a source answers for (both sources have one: the protocol leaves it out)."""
    return str(source.url)


def _worklist_of(source: Any) -> WorklistSource:
    worklist: WorklistSource | None = getattr(source, "worklist", None)
    if worklist is None:
        raise DicomWebError(f"{getattr(source, 'url', source)} offers no worklist (UPS-RS) transactions")
    return worklist


def _uid(value: Any, what: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not is_valid_uid(text):
        raise ValueError(f"{what} must be a UID ({UID_RULE}), not {value!r}")
    return text


def _datetime_text(value: Any) -> str:
    """A DT value from a datetime, a pandas Timestamp, a date or DT text."""
    if isinstance(value, str):
        return value
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, _dt.datetime):
        return ups.dicom_datetime(value if value.tzinfo else value.astimezone())
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    raise ValueError(f"{value!r} is not a date and time")


def _now() -> str:
    return ups.dicom_datetime(_dt.datetime.now().astimezone())


def _code(value: Any, what: str) -> tuple[str, str, str]:
    """(value, scheme, meaning) from a pydicom Code, a tuple, ``"SCHEME:VALUE:Meaning"`` or a DICOM name
    pydicom knows (``"Image Processing"``: DCM 110001), as segmentations take their codes."""
    from ..errors import SegmentationError
    from .segmentation import _as_code

    try:
        code = _as_code(value, what)
    except SegmentationError as exc:
        raise ValueError(str(exc)) from None
    return str(code.value), str(code.scheme_designator), str(code.meaning)


def _to_json(data: Any, what: str) -> DicomJson:
    """DICOM JSON from a pydicom Dataset, DICOM JSON (tag keys) or keyword -> value pairs."""
    if data is None:
        return {}
    if isinstance(data, Dataset):
        return dataset_to_json(data)
    if not isinstance(data, Mapping):
        raise TypeError(f"{what} must be a pydicom Dataset or a dict, not {type(data).__name__}")
    if all(isinstance(k, str) and len(k) == 8 and all(c in "0123456789ABCDEFabcdef" for c in k) for k in data):
        return {k.upper(): v for k, v in data.items()}
    ds = Dataset()
    for keyword, value in data.items():
        try:
            setattr(ds, keyword, _dataset_value(value))
        except (AttributeError, ValueError, TypeError) as exc:
            raise ValueError(f"{what}: {keyword}={value!r}: {exc}") from None
        if keyword not in ds:
            raise ValueError(f"{what}: {keyword!r} is not a DICOM keyword")
    return dataset_to_json(ds)


def _dataset_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        item = Dataset()
        for k, v in value.items():
            setattr(item, k, _dataset_value(v))
        return [item]
    if isinstance(value, list) and value and all(isinstance(v, (Mapping, Dataset)) for v in value):
        return [v if isinstance(v, Dataset) else _dataset_value(v)[0] for v in value]
    return value


def _pairs(series: Any) -> list[tuple[str, str]]:
    """(study, series) UID pairs: one pair, or what ``Client.volumes`` takes (a series DataFrame, pairs)."""
    from .client import _series_pairs

    if isinstance(series, tuple) and len(series) == 2 and all(isinstance(v, str) for v in series):
        return [(series[0], series[1])]
    return _series_pairs(series)


def _instances(outputs: Any) -> list[dict[str, str]]:
    """Instances named by dicts (what store_segmentation returns), (study, series, sop) tuples or a DataFrame."""
    if outputs is None:
        return []
    if isinstance(outputs, pd.DataFrame):
        outputs = outputs.to_dict("records")
    elif isinstance(outputs, Mapping) or (isinstance(outputs, tuple) and len(outputs) in (3, 4)
                                          and all(isinstance(v, str) for v in outputs)):
        outputs = [outputs]
    found = []
    for item in outputs:
        if isinstance(item, Mapping):
            entry = {k: str(item[k]) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
                     if k in item and item[k] is not None and not (isinstance(item[k], float) and pd.isna(item[k]))}
        else:
            values = [str(v) for v in item]
            entry = dict(zip(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"), values))
        missing = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"} - set(entry)
        if missing:
            raise ValueError(f"an output must name its StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID "
                             f"(missing {', '.join(sorted(missing))}): {item!r}")
        found.append(entry)
    return found


def _station() -> tuple[str, str, str]:
    """The Performed Station Name code of this machine: its host name, in this package's local coding scheme."""
    host = socket.gethostname() or "notebook"
    return host[:16], "99DICOMWEBNB", host


def _first_item(dataset: DicomJson, keyword: str) -> DicomJson:
    from ..dicom.tags import parse_tag, tag_hex

    values = (dataset.get(tag_hex(parse_tag(keyword))) or {}).get("Value") or []
    return dict(values[0]) if values and isinstance(values[0], dict) else {}


class WorklistMethods:
    """The worklist methods of ``Client`` (a base of it): see the module documentation."""

    source: DicomWebSource

    @property
    def _worklist(self) -> WorklistSource:
        return _worklist_of(self.source)

    # -- reading --------------------------------------------------------------------------------------
    def workitems(self, filters: Mapping[str, Any] | None = None, *, fields: str | Iterable[str] | None = None,
                  limit: int | None = None, offset: int = 0, fuzzy: bool = False, raw: bool = False,
                  **keywords: Any) -> pd.DataFrame:
        """Search the worklist (UPS-RS Search, PS3.18 11.9): one row per workitem, typed as other searches.

        Filters as for ``studies``: ``pacs.workitems(ProcedureStepState="SCHEDULED", WorklistLabel="liver")``;
        sequence attributes by dotted paths (``{"ScheduledWorkitemCodeSequence.CodeValue": "110001"}``);
        lists for any of several values. ``raw=True`` returns the DICOM JSON list.
        """
        plan = build_searches("workitem", filters, keywords)
        includes = validate_fields(fields)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer, not {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, not {offset!r}")
        worklist = self._worklist
        if len(plan.queries) == 1:
            found = worklist.search(plan.queries[0], fields=includes, fuzzy=fuzzy, limit=limit, offset=offset)
        else:
            wanted = None if limit is None else offset + limit
            merged: dict[Any, DicomJson] = {}
            for pairs in plan.queries:
                for obj in worklist.search(pairs, fields=includes, fuzzy=fuzzy, limit=wanted):
                    merged.setdefault(result_key(obj, "workitem"), obj)
            found = list(merged.values())[offset:None if wanted is None else wanted]
        if raw:
            return found
        return to_dataframe(found, columns=[*WORKITEM_COLUMNS, *plan.names, *[f for f in includes if f != "all"]])

    def workitem(self, uid: str, *, raw: bool = False) -> Dataset:
        """One workitem (UPS-RS Retrieve) as a pydicom Dataset (``raw=True``: its DICOM JSON)."""
        found = self._worklist.retrieve(_uid(uid, "the workitem UID"))
        return found if raw else Dataset.from_json(found)  # type: ignore[return-value]

    # -- creating ------------------------------------------------------------------------------------
    def create_workitem(self, dataset: Dataset | Mapping[str, Any] | None = None, *, label: str | None = None,
                        series: Any = None, worklist: str = ups.DEFAULT_WORKLIST, priority: str = "MEDIUM",
                        code: Any = "Image Processing", start: Any = None, performers: Iterable[str] = (),
                        organization: str = "unspecified", parameters: Mapping[str, Any] | None = None,
                        comments: str | None = None, uid: str | None = None) -> str:
        """Create a workitem (UPS-RS Create): a task on the worklist, SCHEDULED; returns its UID.

        For a labelling or inference task, name it (``label``) and give the ``series`` it works on (a
        DataFrame from ``pacs.series(...)``, a ``(study, series)`` pair or a list of them): the workitem
        lists their instances as its input, with where to retrieve them, and the patient's name, ID,
        birth date and sex. ``worklist`` names the queue (its Worklist Label; ``"default"`` when not given, as our
        server names it), ``priority`` is HIGH, MEDIUM or
        LOW, ``code`` what kind of work (DCM 110001 "Image Processing" by default; a pydicom Code,
        ``"SCHEME:VALUE:Meaning"`` or a DICOM name such as ``"Interpretation"``), ``start`` when (now by
        default), ``performers`` who is to do it (names), ``parameters`` processing parameters (model name,
        threshold...) and ``comments`` free text. ``dataset`` (a pydicom Dataset, DICOM JSON or keyword -> value
        pairs) adds or overrides attributes. Every attribute PS3.4 requires is sent; what is not known is sent
        empty, as the standard asks. A dataset the server refuses raises ``dw.errors.InvalidWorkitem``.
        """
        if priority not in ups.PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(ups.PRIORITIES)}, not {priority!r}")
        extra = _to_json(dataset, "dataset")
        if label is None and "00741204" not in extra:
            raise ValueError("give the workitem a label (label='Segment the liver'): PS3.4 requires a Procedure Step Label")
        inputs, studies, patient = self._inputs(_pairs(series)) if series is not None else ([], [], {})
        made = ups.new_workitem(
            label or "", start=_datetime_text(start) if start is not None else _now(), worklist=worklist, priority=priority,
            code=_code(code, "workitem code") if code is not None else None, inputs=inputs,
            study=studies[0] if len(studies) == 1 else None, patient=patient, comments=comments,
            performers=list(performers), organization=organization, parameters=parameters, extra=extra)
        if label is None:
            made.pop("00741204", None)
            made["00741204"] = extra["00741204"]
        # PS3.18 11.4.1.1: the request names the workitem's UID (the origin server would otherwise make one).
        uid = _uid(uid, "uid") if uid is not None else str(generate_uid())
        made_uid, texts = self._worklist.create(made, uid)
        _warn(texts)
        return made_uid

    def _inputs(self, pairs: list[tuple[str, str]]) -> tuple[list[DicomJson], list[str], dict[str, Any]]:
        items, studies = [], []
        patient: dict[str, Any] = {}
        for study, series in pairs:
            study, series = _uid(study, "a study UID"), _uid(series, "a series UID")
            found = self.source.search("instance", [], study=study, series=series,
                                       fields=["SOPClassUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex"])
            if not found:
                raise NotFound(f"series {series} of study {study} has no instances here", status=404)
            refs = [(_json_first(obj, "00080016"), _json_first(obj, "00080018")) for obj in found]
            items.append(ups.input_item(study, series, refs, resource_url(_source_url(self.source), study, series)))
            if study not in studies:
                studies.append(study)
            if not patient:
                first = found[0]
                patient = {k: _json_first(first, tag) for k, tag in (
                    ("PatientName", "00100010"), ("PatientID", "00100020"), ("PatientBirthDate", "00100030"),
                    ("PatientSex", "00100040"))}
                patient = {k: v for k, v in patient.items() if v}
        return items, studies, patient

    # -- performing ----------------------------------------------------------------------------------
    def claim(self, uid: str, *, transaction_uid: str | None = None) -> str:
        """Claim a SCHEDULED workitem for yourself (SCHEDULED -> IN PROGRESS); returns the transaction UID
        that proves the claim: keep it, ``complete``, ``cancel``, ``report_progress`` and updates need it.

        Of several claimers of one workitem exactly one succeeds; the others get
        ``dw.errors.WorkitemStateError``. The workitem's Performed Procedure Step Start DateTime and this
        machine as its station are recorded.
        """
        uid = _uid(uid, "the workitem UID")
        transaction = _uid(transaction_uid, "transaction_uid") if transaction_uid else str(generate_uid())
        _warn(self._worklist.change_state(uid, ups.IN_PROGRESS, transaction))
        self._set_item(uid, transaction, "UnifiedProcedureStepPerformedProcedureSequence", ups.attributes(
            PerformedProcedureStepStartDateTime=_now(), PerformedStationNameCodeSequence=[ups.code_item(*_station())],
            OutputInformationSequence=[]), current={})
        return transaction

    def _set_item(self, uid: str, transaction: str | None, sequence: str, changes: DicomJson,
                  current: DicomJson | None = None) -> None:
        """Update the one item of a workitem's ``sequence`` with ``changes``, keeping its other attributes
        (an update gives a sequence whole, PS3.4 CC.2.6.2); ``current`` is the workitem (read when None)."""
        item = _first_item(current if current is not None else self._worklist.retrieve(uid), sequence)
        item.update(changes)
        _warn(self._worklist.update(uid, ups.attributes(**{sequence: [_sorted(item)]}), transaction))

    def claim_next(self, filters: Mapping[str, Any] | None = None, **keywords: Any) -> tuple[str, str] | None:
        """Claim the first SCHEDULED workitem matching the filters (as for ``workitems``), by priority then
        start time; returns ``(workitem UID, transaction UID)``, or None when none is left. A workitem
        someone else claims first is skipped, so several notebooks can share one queue."""
        keywords = {**keywords, "ProcedureStepState": ups.SCHEDULED}
        candidates = self.workitems(filters, **keywords, raw=True)
        rank = {p: i for i, p in enumerate(ups.PRIORITIES)}

        def order(obj: DicomJson) -> tuple[int, str]:
            return (rank.get(str(_json_first(obj, "00741200")), len(rank)), str(_json_first(obj, "00404005") or ""))

        for obj in sorted(candidates, key=order):
            uid = str(_json_first(obj, "00080018"))
            try:
                return uid, self.claim(uid)
            except WorkitemStateError:
                continue  # claimed by someone else meanwhile
        return None

    def report_progress(self, uid: str, transaction_uid: str, progress: float | None = None,
                        description: str | None = None) -> None:
        """Record how far the work is (``progress`` in percent, a ``description``); subscribers get a UPS
        Progress event."""
        if progress is not None and not 0 <= float(progress) <= 100:
            raise ValueError(f"progress is a percentage (0 to 100), not {progress!r}")
        changes = ups.attributes(ProcedureStepProgress=float(progress) if progress is not None else None,
                                 ProcedureStepProgressDescription=description)
        self._set_item(_uid(uid, "the workitem UID"), transaction_uid, "ProcedureStepProgressInformationSequence", changes)

    def update_workitem(self, uid: str, changes: Dataset | Mapping[str, Any], transaction_uid: str | None = None) -> None:
        """Change attributes of a workitem (UPS-RS Update): a SCHEDULED one without a transaction UID, an IN
        PROGRESS one with its claim's. ``changes``: a pydicom Dataset, DICOM JSON or keyword -> value pairs."""
        _warn(self._worklist.update(_uid(uid, "the workitem UID"), _to_json(changes, "changes"), transaction_uid))

    def complete(self, uid: str, transaction_uid: str, *, outputs: Any = None, description: str | None = None,
                 code: Any = None) -> None:
        """Complete a workitem you claimed (IN PROGRESS -> COMPLETED).

        ``outputs`` names what the work produced: what ``store_segmentation`` / ``store_measurements``
        return, ``(study, series, sop)`` tuples or a DataFrame of instances (they are listed in the
        workitem's Output Information Sequence; their SOP classes are looked up). The performed procedure's
        end time, the work done (``code``; the scheduled one by default) and ``description`` are recorded
        first, as PS3.4 asks of a COMPLETED workitem.
        """
        uid = _uid(uid, "the workitem UID")
        current = self._worklist.retrieve(uid)
        performed = _first_item(current, "UnifiedProcedureStepPerformedProcedureSequence")
        if code is not None:
            done = [ups.code_item(*_code(code, "workitem code"))]
        else:
            done = (current.get("00404018") or {}).get("Value") or []
            if not done:
                raise ValueError("the workitem schedules no workitem code: say what was done with complete(..., code=...)")
        changes = ups.attributes(PerformedWorkitemCodeSequence=done, PerformedProcedureStepEndDateTime=_now(),
                                 OutputInformationSequence=self._outputs(_instances(outputs)),
                                 PerformedProcedureStepDescription=description)
        if not (performed.get(ups._key("PerformedProcedureStepStartDateTime")) or {}).get("Value"):
            changes.update(ups.attributes(PerformedProcedureStepStartDateTime=_now()))
        if not (performed.get(ups._key("PerformedStationNameCodeSequence")) or {}).get("Value"):
            changes.update(ups.attributes(PerformedStationNameCodeSequence=[ups.code_item(*_station())]))
        self._set_item(uid, transaction_uid, "UnifiedProcedureStepPerformedProcedureSequence", changes, current)
        _warn(self._worklist.change_state(uid, ups.COMPLETED, transaction_uid))

    def _outputs(self, instances: list[dict[str, str]]) -> list[DicomJson]:
        by_series: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for entry in instances:
            study, series, sop = entry["StudyInstanceUID"], entry["SeriesInstanceUID"], entry["SOPInstanceUID"]
            sop_class = entry.get("SOPClassUID")
            if not sop_class:
                found = self.source.search("instance", [("SOPInstanceUID", sop)], study=study, series=series,
                                           fields=["SOPClassUID"])
                if not found:
                    raise NotFound(f"output instance {sop} is not in series {series} of study {study} here", status=404)
                sop_class = str(_json_first(found[0], "00080016"))
            by_series.setdefault((study, series), []).append((sop_class, sop))
        return [ups.input_item(study, series, refs, resource_url(_source_url(self.source), study, series))
                for (study, series), refs in by_series.items()]

    def cancel(self, uid: str, transaction_uid: str, reason: str | None = None, *, code: Any = None) -> None:
        """Give up a workitem you claimed (IN PROGRESS -> CANCELED), saying why: ``reason`` (text) and a
        discontinuation ``code`` (DCM 110513 "Discontinued for unspecified reason" by default)."""
        uid = _uid(uid, "the workitem UID")
        discontinuation = _code(code, "discontinuation code") if code is not None else ups.UNSPECIFIED_DISCONTINUATION
        changes = ups.attributes(ProcedureStepDiscontinuationReasonCodeSequence=[ups.code_item(*discontinuation)],
                                 ReasonForCancellation=reason)
        self._set_item(uid, transaction_uid, "ProcedureStepProgressInformationSequence", changes)
        _warn(self._worklist.change_state(uid, ups.CANCELED, transaction_uid))

    def request_cancellation(self, uid: str, reason: str | None = None, *, contact_uri: str | None = None,
                             contact_name: str | None = None) -> None:
        """Ask for a workitem someone else owns to be canceled (UPS-RS Request Cancellation). A SCHEDULED
        workitem is canceled at once; for an IN PROGRESS one its subscribers (its performer, when it
        listens) are told and the performer decides; a COMPLETED one raises ``WorkitemStateError``."""
        info = ups.attributes(ReasonForCancellation=reason, ContactURI=contact_uri, ContactDisplayName=contact_name)
        _warn(self._worklist.request_cancellation(_uid(uid, "the workitem UID"), info))

    # -- subscriptions --------------------------------------------------------------------------------
    def subscribe(self, aetitle: str, workitem: str | None = None, *, deletion_lock: bool = False,
                  filters: Mapping[str, Any] | None = None) -> None:
        """Subscribe ``aetitle`` to a workitem's event reports, to the whole worklist (no ``workitem``), or
        to the workitems ``filters`` match. Open ``pacs.listen(aetitle)`` first to hear them."""
        target, pairs = _subscription_target(workitem, filters)
        self._worklist.subscribe(_ae(aetitle), target, deletion_lock=deletion_lock, filters=pairs)

    def unsubscribe(self, aetitle: str, workitem: str | None = None) -> None:
        """Remove a subscription; without ``workitem`` every subscription of ``aetitle``."""
        target, _ = _subscription_target(workitem, None)
        self._worklist.unsubscribe(_ae(aetitle), target)

    def suspend_subscription(self, aetitle: str) -> None:
        """Stop subscribing ``aetitle`` to new workitems; its existing subscriptions stay."""
        self._worklist.suspend(_ae(aetitle), ups.GLOBAL_SUBSCRIPTION)

    def listen(self, aetitle: str) -> EventChannel:
        """Open the notification channel of ``aetitle``: an ``EventChannel`` of ``WorkitemEvent``s (use it in
        a ``with`` block; ``channel.get(timeout)`` waits for the next)."""
        title = _ae(aetitle)
        return EventChannel(title, self._worklist.channel(title))


def _sorted(obj: DicomJson) -> DicomJson:
    return {k: obj[k] for k in sorted(obj)}


def _json_first(obj: DicomJson, tag: str) -> Any:
    values = (obj.get(tag) or {}).get("Value") or [None]
    value = values[0]
    if isinstance(value, dict) and "Alphabetic" in value:
        return value.get("Alphabetic")
    return value


def _ae(aetitle: str) -> str:
    title = ups.valid_ae_title(str(aetitle))
    if title is None:
        raise ValueError(f"{aetitle!r} is not an AE title (1 to 16 characters, no backslash nor control characters)")
    return title


def _subscription_target(workitem: str | None, filters: Mapping[str, Any] | None) -> tuple[str, list[tuple[str, str]] | None]:
    if workitem is not None:
        if filters:
            raise ValueError("give a workitem or filters, not both")
        return _uid(workitem, "workitem"), None
    if not filters:
        return ups.GLOBAL_SUBSCRIPTION, None
    plan = build_searches("workitem", filters, {})
    if len(plan.queries) != 1:
        raise ValueError("a filtered subscription takes one value per attribute (a UID list is fine)")
    return ups.FILTERED_SUBSCRIPTION, plan.queries[0]


def _warn(texts: Iterable[str]) -> None:
    for text in texts:
        warnings.warn(text, DicomWebWarning, stacklevel=3)

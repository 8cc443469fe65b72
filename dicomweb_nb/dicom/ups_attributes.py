"""The attribute rules of a workitem (PS3.4 Table CC.2.5-3), for ``ups.py``: which attributes creating
(N-CREATE) and updating (N-SET) a workitem require, allow or forbid, with their enumerated values,
sequence items and value forms; what DICOM JSON a workitem may hold at all (``check_json``); and
building the datasets a user agent sends (``new_workitem``, ``input_item``, ``code_item``, ``state_request``).
Pure functions over DICOM JSON; refusals are ``errors.InvalidWorkitem`` (400) naming every problem."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidWorkitem
from .dicomjson import DicomJson, make_element
from .query import normalize_date, normalize_datetime, normalize_time
from .tags import keyword_of, parse_tag, tag_hex
from .uids import UID_RULE, is_valid_uid

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"  # ProcedureStepState
PRIORITIES = ("HIGH", "MEDIUM", "LOW")
READINESS = ("READY", "UNAVAILABLE", "INCOMPLETE")

# -- reading DICOM JSON -------------------------------------------------------------------------------

def _key(keyword: str) -> str:
    return tag_hex(parse_tag(keyword))


def _values(elem: Mapping[str, Any] | None) -> list[Any]:
    if not elem:
        return []
    return [v for v in elem.get("Value") or [] if v is not None and v != ""]


def _items(elem: Mapping[str, Any] | None) -> list[DicomJson]:
    return [item for item in _values(elem) if isinstance(item, dict)]


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    vals = _values(obj.get(key))
    return str(vals[0]).strip() if vals and not isinstance(vals[0], dict) else None

# -- the attribute requirements (PS3.4 Table CC.2.5-3) ------------------------------------------------

@dataclass(frozen=True)
class Attr:
    """One row of Table CC.2.5-3.

    ``create`` and ``update`` are the SCU's requirement types of N-CREATE and N-SET: ``1`` present with a
    value, ``2`` present (may be empty), ``3`` optional, ``-`` not allowed, ``E`` present or not but empty
    (N-CREATE "shall be empty"), ``S`` set by the origin server (what the request says is replaced).
    In the items of a sequence that is set, the update types apply as the create types do: the item is
    given whole. ``final`` is the Final State code (R, P, X or O), ``values`` enumerated values.
    """

    keyword: str
    create: str = "3"
    update: str = "3"
    final: str = "O"
    items: ItemRules | None = None
    values: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return _key(self.keyword)


@dataclass(frozen=True)
class ItemRules:
    """The requirements on each item of a sequence: its attributes, and a check of conditions the types
    cannot say (which of several attributes is required). ``check(item)`` returns the problems."""

    attrs: tuple[Attr, ...]
    check: Callable[[DicomJson], list[str]] | None = None


def _one_of(*keywords: str, when: Callable[[DicomJson], bool] | None = None) -> Callable[[DicomJson], list[str]]:
    def check(item: DicomJson) -> list[str]:
        if when is not None and not when(item):
            return []
        if any(_values(item.get(_key(k))) for k in keywords):
            return []
        return [f"one of {', '.join(keywords)} is required"]
    return check


def _all(*checks: Callable[[DicomJson], list[str]]) -> Callable[[DicomJson], list[str]]:
    return lambda item: [problem for check in checks for problem in check(item)]


def _requires(keyword: str, when: Callable[[DicomJson], bool], why: str) -> Callable[[DicomJson], list[str]]:
    return lambda item: [f"{keyword} is required {why}"] if when(item) and not _values(item.get(_key(keyword))) else []


def _has(keyword: str) -> Callable[[DicomJson], bool]:
    return lambda item: bool(_values(item.get(_key(keyword))))


def _equals(keyword: str, *accepted: str) -> Callable[[DicomJson], bool]:
    return lambda item: (_text(item, _key(keyword)) or "") in accepted


# Table CC.2.5-2a, UPS Code Sequence Macro.
CODE = ItemRules((
    Attr("CodeValue", "3", "3"), Attr("CodingSchemeDesignator", "3", "3"), Attr("CodingSchemeVersion"),
    Attr("CodeMeaning", "1", "1"), Attr("LongCodeValue", "3", "3"), Attr("URNCodeValue", "3", "3"),
), _all(_one_of("CodeValue", "LongCodeValue", "URNCodeValue"),
        _requires("CodingSchemeDesignator", lambda i: _has("CodeValue")(i) or _has("LongCodeValue")(i),
                  "with a CodeValue or LongCodeValue")))

# Table CC.2.5-2b, UPS Content Item Macro.
_CONTENT_VALUES = {"DATETIME": "DateTime", "DATE": "Date", "TIME": "Time", "PNAME": "PersonName", "UIDREF": "UID",
                   "TEXT": "TextValue", "CODE": "ConceptCodeSequence", "NUMERIC": "NumericValue", "NUM": "NumericValue"}
def _content_value(item: DicomJson) -> list[str]:
    """Table CC.2.5-2b's conditions: the value attribute of the item's Value Type, and the units of a number."""
    kind = _text(item, _key("ValueType")) or ""
    problems = []
    if kind in _CONTENT_VALUES and not _values(item.get(_key(_CONTENT_VALUES[kind]))):
        problems.append(f"{_CONTENT_VALUES[kind]} is required with ValueType {kind}")
    if kind in ("NUMERIC", "NUM") and not _values(item.get(_key("MeasurementUnitsCodeSequence"))):
        problems.append("MeasurementUnitsCodeSequence is required with a NUMERIC value")
    return problems


CONTENT_ITEM = ItemRules((
    Attr("ValueType", "1", "1", values=tuple(_CONTENT_VALUES)), Attr("ConceptNameCodeSequence", "1", "1", items=CODE),
    Attr("ConceptCodeSequence", items=CODE), Attr("MeasurementUnitsCodeSequence", items=CODE),
), _content_value)

# Table CC.2.5-2c, Referenced Instances and Access Macro.
_RETRIEVALS = ("DICOMRetrievalSequence", "DICOMMediaRetrievalSequence", "WADORetrievalSequence",
               "XDSRetrievalSequence", "WADORSRetrievalSequence")
REFERENCED_INSTANCES = ItemRules((
    Attr("TypeOfInstances", "1", "1"), Attr("StudyInstanceUID"), Attr("SeriesInstanceUID"),
    Attr("ReferencedSOPSequence", "1", "1", items=ItemRules((
        Attr("ReferencedSOPClassUID", "1", "1"), Attr("ReferencedSOPInstanceUID", "1", "1")))),
    Attr("DICOMRetrievalSequence", items=ItemRules((Attr("RetrieveAETitle", "1", "1"),))),
    Attr("DICOMMediaRetrievalSequence", items=ItemRules((Attr("StorageMediaFileSetID", "2", "2"),
                                                         Attr("StorageMediaFileSetUID", "1", "1")))),
    Attr("WADORetrievalSequence", items=ItemRules((Attr("RetrieveURI", "1", "1"),))),
    Attr("XDSRetrievalSequence", items=ItemRules((Attr("RepositoryUniqueID", "1", "1"),))),
    Attr("WADORSRetrievalSequence", items=ItemRules((Attr("RetrieveURL", "1", "1"),))),
), _all(_one_of(*_RETRIEVALS),
        _requires("StudyInstanceUID", _equals("TypeOfInstances", "DICOM"), "for DICOM instances"),
        _requires("SeriesInstanceUID", _equals("TypeOfInstances", "DICOM"), "for DICOM instances"),
        _requires("HL7InstanceIdentifier", _equals("TypeOfInstances", "CDA"), "for CDA instances")))

# Table CC.2.5-2d, HL7v2 Hierarchic Designator Macro.
HIERARCHIC_DESIGNATOR = ItemRules((
    Attr("LocalNamespaceEntityID"), Attr("UniversalEntityID"), Attr("UniversalEntityIDType"),
), _all(_one_of("LocalNamespaceEntityID", "UniversalEntityID"),
        _requires("UniversalEntityIDType", _has("UniversalEntityID"), "with a UniversalEntityID")))

# Table CC.2.5-2e, Issuer of Patient ID Macro (its top-level form: not changeable by N-SET).
_ISSUER_OF_PATIENT_ID = (
    Attr("IssuerOfPatientID", "2", "-"),
    Attr("IssuerOfPatientIDQualifiersSequence", "2", "-", items=ItemRules((
        Attr("UniversalEntityID", "2", "2"), Attr("UniversalEntityIDType"), Attr("IdentifierTypeCode", "2", "2"),
        Attr("AssigningFacilitySequence", "2", "2", items=HIERARCHIC_DESIGNATOR),
        Attr("AssigningJurisdictionCodeSequence", "2", "2", items=CODE),
        Attr("AssigningAgencyOrDepartmentCodeSequence", "2", "2", items=CODE),
    ), _requires("UniversalEntityIDType", _has("UniversalEntityID"), "with a UniversalEntityID"))),
)

_HUMAN_PERFORMER = ItemRules((
    Attr("HumanPerformerCodeSequence", "1", "1", items=CODE), Attr("HumanPerformerName", "1", "1"),
    Attr("HumanPerformerOrganization", "1", "1"),
))

_PROGRESS_ITEM = ItemRules((
    Attr("ProcedureStepProgress", "-"), Attr("ProcedureStepProgressDescription", "-"),
    Attr("ProcedureStepProgressParametersSequence", "-", items=CONTENT_ITEM),
    Attr("ProcedureStepCommunicationsURISequence", "-", items=ItemRules((
        Attr("ContactURI", "1", "1"), Attr("ContactDisplayName")))),
    Attr("ProcedureStepCancellationDateTime", "-", final="X"), Attr("ReasonForCancellation", "-"),
    Attr("ProcedureStepDiscontinuationReasonCodeSequence", "-", final="X", items=CODE),
))

_PERFORMED_ITEM = ItemRules((
    Attr("ActualHumanPerformersSequence", "-", items=ItemRules((
        Attr("HumanPerformerCodeSequence", items=CODE), Attr("HumanPerformerName"),
        Attr("HumanPerformerOrganization")))),
    Attr("PerformedStationNameCodeSequence", "-", final="P", items=CODE),
    Attr("PerformedStationClassCodeSequence", "-", items=CODE),
    Attr("PerformedStationGeographicLocationCodeSequence", "-", items=CODE),
    Attr("PerformedProcedureStepStartDateTime", "-", final="P"), Attr("PerformedProcedureStepDescription", "-"),
    Attr("CommentsOnThePerformedProcedureStep", "-"),
    Attr("PerformedWorkitemCodeSequence", "-", final="P", items=CODE),
    Attr("PerformedProcessingParametersSequence", "-", items=CONTENT_ITEM),
    Attr("PerformedProcedureStepEndDateTime", "-", final="P"),
    # P, but "if there are no relevant output objects, this sequence may have no items".
    Attr("OutputInformationSequence", "-", "2", items=REFERENCED_INSTANCES),
))

# The attributes of Table CC.2.5-3 with requirements (every other attribute of the UPS IOD is 3/3).
WORKITEM = ItemRules((
    Attr("SOPClassUID", "S", "-", "R"),
    Attr("ScheduledProcedureStepPriority", "1", "1", "R", values=PRIORITIES),
    Attr("ScheduledProcedureStepModificationDateTime", "S", "S", "R"),
    Attr("ProcedureStepLabel", "1", "1"),
    Attr("WorklistLabel", "S", "1"),  # 2/1: the origin server names a worklist when the request does not
    Attr("ScheduledProcessingParametersSequence", "2", items=CONTENT_ITEM),
    Attr("ScheduledStationNameCodeSequence", "2", items=CODE),
    Attr("ScheduledStationClassCodeSequence", "2", items=CODE),
    Attr("ScheduledStationGeographicLocationCodeSequence", "2", items=CODE),
    Attr("ScheduledHumanPerformersSequence", items=_HUMAN_PERFORMER),  # 2C: when a human performer is known
    Attr("ScheduledProcedureStepStartDateTime", "1", "1", "R"),
    Attr("ExpectedCompletionDateTime"), Attr("ScheduledProcedureStepExpirationDateTime"),
    Attr("ScheduledWorkitemCodeSequence", "2", items=CODE),
    Attr("CommentsOnTheScheduledProcedureStep", "2"),
    Attr("InputReadinessState", "1", "1", "R", values=READINESS),
    Attr("InputInformationSequence", "2", items=REFERENCED_INSTANCES),
    Attr("StudyInstanceUID"),  # 1C: when the work creates instances of a study
    Attr("OutputDestinationSequence", items=ItemRules((
        Attr("DICOMStorageSequence", items=ItemRules((Attr("DestinationAE", "1", "1"),))),
        Attr("STOWRSStorageSequence", items=ItemRules((Attr("StorageURL", "1", "1"),))),
        Attr("XDSStorageSequence", items=ItemRules((Attr("RepositoryUniqueID", "1", "1"),))),
    ), _one_of("DICOMStorageSequence", "STOWRSStorageSequence", "XDSStorageSequence"))),
    Attr("PatientName", "2", "-"),
    Attr("PatientID", "3", "-"),  # 1C: when the subject needs identifying
    *_ISSUER_OF_PATIENT_ID,
    Attr("OtherPatientIDsSequence", "2", items=ItemRules((
        Attr("PatientID", "1", "1"), Attr("IssuerOfPatientID", "2", "2"),
        Attr("IssuerOfPatientIDQualifiersSequence", "2", "2"), Attr("TypeOfPatientID")))),
    Attr("PatientBirthDate", "2", "-"),
    Attr("PatientSex", "2", "-"),
    Attr("AdmissionID", "2", "-"),
    Attr("IssuerOfAdmissionIDSequence", "2", "-", items=HIERARCHIC_DESIGNATOR),
    Attr("AdmittingDiagnosesDescription", "2", "-"),
    Attr("AdmittingDiagnosesCodeSequence", "2", "-", items=CODE),
    Attr("ReferencedRequestSequence", "2", "-", items=ItemRules((
        Attr("StudyInstanceUID", "1", "1"), Attr("AccessionNumber", "2", "2"),
        Attr("IssuerOfAccessionNumberSequence", "2", "2", items=HIERARCHIC_DESIGNATOR),
        Attr("OrderPlacerIdentifierSequence", "2", "2", items=HIERARCHIC_DESIGNATOR),
        Attr("OrderFillerIdentifierSequence", "2", "2", items=HIERARCHIC_DESIGNATOR),
        Attr("RequestedProcedureID", "2", "2"), Attr("RequestedProcedureDescription", "2", "2"),
        Attr("RequestedProcedureCodeSequence", "2", "2", items=CODE)))),
    Attr("ReplacedProcedureStepSequence", "3", "-", items=ItemRules((
        Attr("ReferencedSOPClassUID", "1", "1"), Attr("ReferencedSOPInstanceUID", "1", "1")))),
    Attr("ProcedureStepState", "1", "-", "R"),  # SCHEDULED: checked by prepare_create
    Attr("ProcedureStepProgressInformationSequence", "E", "3", "X", items=_PROGRESS_ITEM),
    Attr("UnifiedProcedureStepPerformedProcedureSequence", "E", "3", "P", items=_PERFORMED_ITEM),
))
_TYPE2_AT_CREATE = tuple(a for a in WORKITEM.attrs if a.create in ("2", "E"))


def _problems(obj: Mapping[str, Any], rules: ItemRules, mode: str, where: str, out: list[str], *, whole: bool) -> None:
    """Append to ``out`` each way ``obj`` breaks ``rules``. ``mode`` is ``create`` or ``update``;
    ``whole``: the object is given entirely (every required attribute must be there), else only the
    attributes it holds are checked (an N-SET's top level)."""
    for attr in rules.attrs:
        kind = attr.create if mode == "create" else attr.update
        elem = obj.get(attr.key)
        name = f"{where}{attr.keyword}"
        present = elem is not None
        valued = bool(_values(elem))
        if kind == "-" and present:
            out.append(f"{name} may not be given {'at creation' if mode == 'create' else 'in an update'}"
                       + (" (change the state with PUT .../state)" if attr.keyword == "ProcedureStepState" else ""))
            continue
        if kind == "1" and (whole or present) and not valued:
            out.append(f"{name} is required and must have a value" if not present
                       else f"{name} must have a value (it is a Type 1 attribute)")
        elif kind == "2" and whole and not present:
            out.append(f"{name} is required (Type 2: give it empty when unknown)")
        elif kind == "E" and valued:
            out.append(f"{name} must be empty when the workitem is created")
        if elem is None or kind == "S":
            continue
        if attr.values and valued:
            bad = [v for v in _values(elem) if str(v).strip() not in attr.values]
            if bad:
                out.append(f"{name} must be one of {', '.join(attr.values)}, not {bad[0]!r}")
        _check_value_form(attr.keyword, elem, name, out)
        if attr.items is not None and valued:
            for index, item in enumerate(_values(elem), start=1):
                if not isinstance(item, dict):
                    out.append(f"{name} item {index} is not a dataset")
                    continue
                here = f"{name}[{index}]."
                _problems(item, attr.items, mode, here, out, whole=True)
                if attr.items.check is not None:
                    out.extend(f"{here}{problem}" for problem in attr.items.check(item))


_TEMPORAL = {"DA": normalize_date, "TM": normalize_time, "DT": normalize_datetime}


def _check_value_form(keyword: str, elem: Mapping[str, Any], name: str, out: list[str]) -> None:
    from .tags import vr_of

    vr = elem.get("vr") or vr_of(keyword)
    for value in _values(elem):
        if vr in _TEMPORAL:
            try:
                _TEMPORAL[vr](str(value))
            except ValueError as exc:
                out.append(f"{name}: {exc}")
                return
        elif vr == "UI" and not is_valid_uid(str(value)):
            out.append(f"{name}: {value!r} is not a UID ({UID_RULE})")
            return


# The VRs whose values are strings in DICOM JSON (IS and DS may be numbers too), which pydicom validates.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})


def _invalid(vr: str, value: Any) -> str | None:
    """What is wrong with one value for its VR (length, characters, form), as pydicom judges it."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, TypeError) as exc:
        return str(exc).split(" Please see", 1)[0]
    return None


_AMBIGUOUS_VRS = {"US or SS": ("US", "SS"), "OB or OW": ("OB", "OW"), "US or OW": ("US", "OW"),
                  "US or SS or OW": ("US", "SS", "OW")}


def check_json(obj: Any, what: str = "the dataset") -> None:
    """Refuse (InvalidWorkitem, 400) what is not DICOM JSON as PS3.18 F.2 defines it, or what a workitem
    may not hold: keys of eight hex digits, each an object with the attribute's VR (the dictionary's,
    for known attributes) and an optional ``Value`` list, sequence items objects alike. Bulk data is
    refused: the Worklist Service has none (PS3.18 11.1.3)."""
    from .tags import dictionary_vr

    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, Mapping):
            problems.append(f"{where or 'the dataset'} is not an object keyed by tags")
            return
        for key, elem in node.items():
            if not (isinstance(key, str) and len(key) == 8 and all(c in "0123456789ABCDEFabcdef" for c in key)):
                problems.append(f"{where}{key!r} is not a tag (eight hex digits)")
                continue
            name = f"{where}{keyword_of(int(key, 16))}"
            if not isinstance(elem, Mapping) or not isinstance(elem.get("vr"), str):
                problems.append(f"{name} is not a DICOM JSON element (an object with a \"vr\")")
                continue
            vr = elem["vr"]
            known = dictionary_vr(int(key, 16))
            if known not in ("UN", vr) and vr not in _AMBIGUOUS_VRS.get(known, ()) and vr != "UN":
                problems.append(f"{name} has VR {vr}, not {known}")
            if "BulkDataURI" in elem or "InlineBinary" in elem:
                problems.append(f"{name}: a workitem holds no bulk data")
            if "Value" not in elem:
                continue
            vals = elem["Value"]
            if not isinstance(vals, list):
                problems.append(f"{name}: Value must be a list")
                continue
            for index, item in enumerate(vals, start=1):
                if vr == "SQ":
                    if isinstance(item, Mapping):
                        walk(item, f"{name}[{index}].")
                    else:
                        problems.append(f"{name} item {index} is not a dataset")
                elif vr == "PN":
                    if not (item is None or isinstance(item, str) or (isinstance(item, Mapping) and all(
                            isinstance(v, str) for v in item.values()))):
                        problems.append(f"{name} value {index} is not a person name")
                    else:
                        groups = item.values() if isinstance(item, Mapping) else [item or ""]
                        problems.extend(f"{name}: {m}" for m in filter(None, (_invalid("PN", g) for g in groups)))
                elif not (item is None or (isinstance(item, (str, int, float)) and not isinstance(item, bool))):
                    problems.append(f"{name} value {index} is not a string or a number")
                elif item is not None and vr in _TEXT_VRS:
                    problem = _invalid(vr, str(item) if vr in ("IS", "DS") else item)
                    if problem:
                        problems.append(f"{name}: {problem}")

    walk(obj, "")
    _refuse(problems, what, table=False)


def _refuse(problems: list[str], what: str, *, table: bool = True) -> None:
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        rule = "does not meet PS3.4 Table CC.2.5-3" if table else "is not valid DICOM JSON"
        raise InvalidWorkitem(f"{what} {rule}: {shown}", status=400)


def add_missing_type2(dataset: DicomJson) -> DicomJson:
    """The dataset with every attribute Table CC.2.5-3 requires at creation but allows empty (Type 2)
    added empty where missing: what a user agent sends for what it does not know."""
    from .tags import vr_of

    for attr in _TYPE2_AT_CREATE:
        if attr.key not in dataset:
            vr = vr_of(attr.keyword)
            dataset[attr.key] = {"vr": vr, "Value": []} if vr == "SQ" else {"vr": vr}
    return dataset


def code_item(value: str, scheme: str, meaning: str) -> DicomJson:
    """A code sequence item (Table CC.2.5-2a): a short Code Value, else a Long (or URN) Code Value."""
    if value.startswith(("urn:", "http://", "https://")):
        item = {_key("URNCodeValue"): make_element("UR", [value])}
    elif len(value) > 16:
        item = {_key("LongCodeValue"): make_element("UC", [value]), _key("CodingSchemeDesignator"): make_element("SH", [scheme])}
    else:
        item = {_key("CodeValue"): make_element("SH", [value]), _key("CodingSchemeDesignator"): make_element("SH", [scheme])}
    item[_key("CodeMeaning")] = make_element("LO", [meaning])
    return {k: item[k] for k in sorted(item)}


# -- building workitems (what a user agent sends) ------------------------------------------------

def _element(keyword: str, values: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    from .tags import vr_of

    vr = vr_of(keyword)
    vals = list(values)
    if vr == "SQ":
        return _key(keyword), {"vr": "SQ", "Value": vals}
    return _key(keyword), make_element(vr, vals)


def attributes(**values: Any) -> DicomJson:
    """DICOM JSON of ``Keyword=value`` pairs (a list for several values; items of a sequence as DICOM JSON),
    leaving out those given as None or ``""``."""
    out = dict(_element(k, v if isinstance(v, list) else [v]) for k, v in values.items() if v is not None and v != "")
    return {k: out[k] for k in sorted(out)}


def input_item(study: str, series: str, instances: Iterable[tuple[str, str]], retrieve_url: str) -> DicomJson:
    """An Input (or Output) Information Sequence item for instances of one series (Table CC.2.5-2c):
    ``instances`` are (SOP Class UID, SOP Instance UID) pairs, ``retrieve_url`` where WADO-RS serves them."""
    refs = [dict((_element("ReferencedSOPClassUID", [c]), _element("ReferencedSOPInstanceUID", [i]))) for c, i in instances]
    item = dict((
        _element("TypeOfInstances", ["DICOM"]), _element("StudyInstanceUID", [study]),
        _element("SeriesInstanceUID", [series]), _element("ReferencedSOPSequence", refs),
        _element("WADORSRetrievalSequence", [dict((_element("RetrieveURL", [retrieve_url]),))]),
    ))
    return {k: item[k] for k in sorted(item)}


def content_item(name: str, value: Any) -> DicomJson:
    """A processing parameter (Table CC.2.5-2b) named by a local code: TEXT for text, NUMERIC for numbers
    (unit: "no units", UCUM 1)."""
    concept = code_item(name, "99DICOMWEBNB", name)
    item = dict((_element("ConceptNameCodeSequence", [concept]),))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        item.update((_element("ValueType", ["TEXT"]), _element("TextValue", [str(value)])))
    else:
        item.update((_element("ValueType", ["NUMERIC"]), _element("NumericValue", [value]),
                     _element("MeasurementUnitsCodeSequence", [code_item("1", "UCUM", "no units")])))
    return {k: item[k] for k in sorted(item)}


def new_workitem(label: str, *, start: str, worklist: str | None = None, priority: str = "MEDIUM",
                 code: tuple[str, str, str] | None = None, inputs: Iterable[DicomJson] = (), study: str | None = None,
                 patient: Mapping[str, Any] | None = None, comments: str | None = None,
                 performers: Iterable[str] = (), organization: str = "unspecified",
                 parameters: Mapping[str, Any] | None = None,
                 expected_completion: str | None = None, extra: Mapping[str, Any] | None = None) -> DicomJson:
    """A workitem dataset meeting the N-CREATE requirements of Table CC.2.5-3, every Type 2 attribute not
    given present and empty: a task named ``label``, to start at ``start`` (DT), with its ``inputs``
    (``input_item``), the ``patient``'s attributes (PatientName, PatientID, ...), a workitem ``code``
    (value, scheme, meaning), human ``performers`` by name (of ``organization``: Type 1, so never empty),
    processing ``parameters``. ``extra`` is DICOM
    JSON added last (it wins)."""
    obj: DicomJson = dict((
        _element("ProcedureStepLabel", [label]), _element("ScheduledProcedureStepPriority", [priority]),
        _element("ScheduledProcedureStepStartDateTime", [start]), _element("InputReadinessState", ["READY"]),
        _element("ProcedureStepState", [SCHEDULED]), _element("InputInformationSequence", list(inputs)),
    ))
    obj.update(attributes(WorklistLabel=worklist, StudyInstanceUID=study, CommentsOnTheScheduledProcedureStep=comments,
                          ExpectedCompletionDateTime=expected_completion, **(patient or {})))
    if code is not None:
        obj.update(attributes(ScheduledWorkitemCodeSequence=[code_item(*code)]))
    names = list(performers)
    if names:
        obj.update((_element("ScheduledHumanPerformersSequence", [dict((
            _element("HumanPerformerCodeSequence", [code_item(name[:16], "99DICOMWEBNB", name)]),
            _element("HumanPerformerName", [name]), _element("HumanPerformerOrganization", [organization])))
            for name in names]),))
    if parameters:
        obj.update((_element("ScheduledProcessingParametersSequence",
                             [content_item(str(k), v) for k, v in parameters.items()]),))
    obj.update(extra or {})
    add_missing_type2(obj)
    return {k: obj[k] for k in sorted(obj)}


def state_request(state: str, transaction: str) -> DicomJson:
    """The payload of a Change Workitem State request (PS3.18 11.7.1.4)."""
    return dict((_element("ProcedureStepState", [state]), _element("TransactionUID", [transaction])))

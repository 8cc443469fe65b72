"""The STOW-RS response (PS3.18 10.5.3): the dataset that reports what became of each instance offered.

Shared by the two places that answer a STOW-RS request: the server (which adds the HTTP status and
``Warning`` headers, ``server/stow.py``) and the client's in-process source (``client/local.py``).
The failure and warning reasons are the DICOM status codes of PS3.4 Annex B / PS3.7 C, which the
store sets on its outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .dicomjson import DicomJson
from .resources import UrlBuilder

__all__ = [
    "FAILURE_CANNOT_UNDERSTAND",
    "FAILURE_DATASET_DOES_NOT_MATCH",
    "FAILURE_DUPLICATE",
    "FAILURE_OUT_OF_RESOURCES",
    "FAILURE_PROCESSING",
    "FAILURE_STUDY_UID_MISMATCH",
    "StowOutcome",
    "describe_failure",
    "is_referenced",
    "response_dataset",
]

# Failure / warning reasons of PS3.18 10.5.3 (values from PS3.4 Annex B / PS3.7 C).
FAILURE_PROCESSING = 0x0110
FAILURE_DUPLICATE = 0x0111
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DATASET_DOES_NOT_MATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_STUDY_UID_MISMATCH = 0xC409  # as dcm4chee reports "Study Instance UID mismatch"


class StowOutcome(Protocol):
    """What the response needs to know of one instance offered (the store's ``StoreOutcome``)."""

    sop_uid: str | None
    sop_class_uid: str | None
    study_uid: str | None
    series_uid: str | None
    stored: bool
    failure_reason: int | None
    warning_reason: int | None


def describe_failure(reason: int) -> str:
    """A failure reason code in words."""
    return {
        FAILURE_PROCESSING: "processing failure",
        FAILURE_DUPLICATE: "duplicate SOP instance",
        FAILURE_OUT_OF_RESOURCES: "out of resources",
        FAILURE_DATASET_DOES_NOT_MATCH: "data set does not match SOP class (missing attributes)",
        FAILURE_CANNOT_UNDERSTAND: "cannot understand (not DICOM)",
        FAILURE_STUDY_UID_MISMATCH: "Study Instance UID mismatch",
    }.get(reason, f"failure {reason:#06x}")


def is_referenced(outcome: StowOutcome) -> bool:
    """Whether the response lists the instance as stored (Referenced SOP Sequence), else as failed."""
    return outcome.stored and bool(outcome.sop_uid)


def response_dataset(outcomes: Sequence[StowOutcome], url: UrlBuilder, study: str | None) -> DicomJson:
    """The STOW-RS response dataset: the Retrieve URL of the study, the Referenced SOP Sequence of the
    instances stored (with a Warning Reason where one applies) and the Failed SOP Sequence."""
    referenced, failed = [], []
    for outcome in outcomes:
        if is_referenced(outcome):
            item: dict[str, Any] = {
                "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]},
                "00081155": {"vr": "UI", "Value": [outcome.sop_uid]},
                "00081190": {"vr": "UR", "Value": [url(outcome.study_uid or "", outcome.series_uid, outcome.sop_uid)]},
            }
            if outcome.warning_reason is not None:
                item["00081196"] = {"vr": "US", "Value": [outcome.warning_reason]}
            referenced.append(item)
        else:
            failed.append({
                "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]} if outcome.sop_class_uid else {"vr": "UI"},
                "00081155": {"vr": "UI", "Value": [outcome.sop_uid]} if outcome.sop_uid else {"vr": "UI"},
                "00081197": {"vr": "US", "Value": [outcome.failure_reason or FAILURE_PROCESSING]},
            })
    body: DicomJson = {}
    studies = {o.study_uid for o in outcomes if o.stored and o.study_uid}
    if study or len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [url(study or next(iter(studies)), None, None)]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    return body

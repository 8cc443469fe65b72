"""What happened to each instance offered to the store, and the STOW-RS response built from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..dicom.dicomjson import DicomJson

UrlBuilder = Callable[[str, "str | None", "str | None"], str]

# Failure / warning reasons of PS3.18 10.5.3 (values from PS3.4 Annex B / PS3.7 C).
FAILURE_PROCESSING = 0x0110
FAILURE_DUPLICATE = 0x0111
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DATASET_DOES_NOT_MATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_STUDY_UID_MISMATCH = 0xC409  # as dcm4chee reports "Study Instance UID mismatch"
WARNING_COERCION = 0xB000


@dataclass
class StoreOutcome:
    """What happened to one instance offered to the store."""

    sop_uid: str | None
    sop_class_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    stored: bool = False
    replaced: bool = False
    failure_reason: int | None = None
    warning_reason: int | None = None
    message: str = ""
    source: str | None = None  # file name or part number, for reports


def describe_failure(reason: int) -> str:
    return {
        FAILURE_PROCESSING: "processing failure",
        FAILURE_DUPLICATE: "duplicate SOP instance",
        FAILURE_OUT_OF_RESOURCES: "out of resources",
        FAILURE_DATASET_DOES_NOT_MATCH: "data set does not match SOP class (missing attributes)",
        FAILURE_CANNOT_UNDERSTAND: "cannot understand (not DICOM)",
        FAILURE_STUDY_UID_MISMATCH: "Study Instance UID mismatch",
    }.get(reason, f"failure {reason:#06x}")


def stow_response(outcomes: list[StoreOutcome], url: UrlBuilder, study: str | None) -> tuple[DicomJson, int, list[str]]:
    """The STOW-RS response dataset (PS3.18 10.5.3), its HTTP status, and readable failure lines.

    200: all stored; 202: some failed or carry warnings; 409: none stored.
    """
    referenced, failed, messages = [], [], []
    for outcome in outcomes:
        if outcome.stored and outcome.sop_uid:
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
            reason = outcome.message or describe_failure(outcome.failure_reason or FAILURE_PROCESSING)
            messages.append(f"{outcome.source}: {reason}")
    body: DicomJson = {}
    studies = {o.study_uid for o in outcomes if o.stored and o.study_uid}
    if study or len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [url(study or next(iter(studies)), None, None)]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    warnings = any(o.warning_reason is not None for o in outcomes)
    status = 200 if not failed and not warnings else (202 if referenced else 409)
    return body, status, messages

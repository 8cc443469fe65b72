"""What happened to each instance offered to the store (its STOW-RS response is ``dicom.stow``'s)."""

from __future__ import annotations

from dataclasses import dataclass

from ..dicom.resources import UrlBuilder

__all__ = ["StoreOutcome", "UrlBuilder"]


@dataclass
class StoreOutcome:
    """What happened to one instance offered to the store; reasons are ``dicom.stow``'s codes."""

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

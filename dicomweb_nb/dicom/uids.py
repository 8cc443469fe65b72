"""DICOM UIDs: the one check of their form, for every place a UID comes from outside.

PS3.5 9.1: a UID is at most 64 characters of dot-separated components, each made of digits, and a
component has no leading zero (a lone ``0`` is a component). The leading-zero rule binds whoever
*creates* a UID; UIDs that break it are found in real archives (and in this project's own test data),
the store accepts them at ingest, and Orthanc serves them. So a UID that identifies existing data (a
URL segment, a query value, a resource to retrieve) is checked for its form alone, and ``strict``
adds the leading-zero rule where a value must be a standard UID (a transfer syntax, a UID we make).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["UID_MAX_LENGTH", "UID_RULE", "is_valid_uid"]

UID_MAX_LENGTH = 64
UID_RULE = "digits and dots, at most 64 characters"
_FORM = re.compile(r"[0-9]+(\.[0-9]+)*")
# pydicom's UID.is_valid rule, as a full match: its pattern ends in "$", which admits a final newline.
_STRICT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: Any, *, strict: bool = False) -> bool:
    """Whether ``value`` is a string of the form of a DICOM UID: dot-separated components of ASCII
    digits, none empty, at most 64 characters. ``strict`` also refuses components with a leading
    zero (PS3.5 9.1)."""
    if not isinstance(value, str) or not 0 < len(value) <= UID_MAX_LENGTH:
        return False
    return (_STRICT if strict else _FORM).fullmatch(value) is not None

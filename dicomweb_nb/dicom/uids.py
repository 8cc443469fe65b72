"""DICOM UIDs: the one check of their form (PS3.5 9.1), for every place a UID comes from outside.

A UID is at most 64 characters of dot-separated components, each made of digits without a leading
zero (a lone ``0`` is a component). This is pydicom's ``UID.is_valid`` rule, written as a full match:
pydicom's pattern ends in ``$``, which also admits a trailing newline.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["UID_MAX_LENGTH", "UID_RULE", "is_valid_uid"]

UID_MAX_LENGTH = 64
UID_RULE = "digits and dots, no leading zeros, at most 64 characters"
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: Any) -> bool:
    """Whether ``value`` is a string that is a valid DICOM UID (PS3.5 9.1)."""
    return isinstance(value, str) and 0 < len(value) <= UID_MAX_LENGTH and _UID.fullmatch(value) is not None

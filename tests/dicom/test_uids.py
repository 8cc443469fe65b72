"""The one UID check: the form of PS3.5 9.1 everywhere, its leading-zero rule where asked for."""

from __future__ import annotations

import pytest

from dicomweb_nb.dicom.query import QueryError, parse_query
from dicomweb_nb.dicom.uids import is_valid_uid


@pytest.mark.parametrize("value", ["0", "1.2.840.10008.1.2.1", "2.25." + "9" * 59, "1.0.3"])
def test_valid_uids(value):
    assert is_valid_uid(value) and is_valid_uid(value, strict=True)


@pytest.mark.parametrize("value", [
    "", ".", "1.", ".1", "1..2", "1.2.x", "1.2/3", " 1.2", "1.2\n", "1.2 ", "1.\u0662",  # Arabic-Indic digit two
    "2.25." + "9" * 60, None, 12, b"1.2",
])
def test_not_uids(value):
    assert not is_valid_uid(value) and not is_valid_uid(value, strict=True)


@pytest.mark.parametrize("value", ["1.02", "01.2", "1.2.00"])
def test_leading_zeros_are_refused_only_when_strict(value):
    """Found in real archives (the store keeps them), refused where a standard UID is required."""
    assert is_valid_uid(value) and not is_valid_uid(value, strict=True)


@pytest.mark.parametrize("value", ["1..2", ".5", "1.2.", "1.2,,3."])
def test_qido_refuses_what_is_no_uid_form(value):
    """The query rule was looser (digits and dots in any order): such values could never match."""
    with pytest.raises(QueryError, match="is not a UID"):
        parse_query([("SOPInstanceUID", value)], "instance")


def test_qido_uid_lists_and_leading_zeros_still_match():
    query = parse_query([("SOPInstanceUID", "1.2.3,1.02.3\\4.5")], "instance")
    assert query.matches[0].values == ["1.2.3", "1.02.3", "4.5"]

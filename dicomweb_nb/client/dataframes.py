"""DICOM JSON to pandas: one row per dataset, one typed column per attribute.

Typing follows each attribute's VR, decided per column (never per cell) so a column has one
meaning whatever the rows hold:

* PN: the name as text (``Alphabetic``, with ``=Ideographic=Phonetic`` groups when present).
* DA, DT: ``datetime64``; DT time-zone suffixes are dropped (wall-clock time, as stored).
* TM: ``datetime.time`` objects (pandas has no time-of-day dtype).
* IS and the integer binary VRs: nullable ``Int64``; DS, FL, FD: ``float64``.
* Other text VRs (UI, CS, LO, ...): strings.
* Attributes whose dictionary value multiplicity allows several values (``ImagePositionPatient``,
  ``ModalitiesInStudy``, ``ImageType``): a list per cell, of the typed values, even when a row
  holds one value. Private/unknown attributes become lists when any row has several values.
* SQ: a list of DICOM JSON items; bulk data: the BulkDataURI text, inline binary as bytes.

Columns are named by keyword (hex tag for private ones), ordered by tag. ``columns=`` names
attributes that get a column even when no row has them (typed by the data dictionary's VR), so an
empty answer has the columns and dtypes of a full one. The source objects stay reachable as
``df.attrs["dicom_json"]``, aligned with the rows (``df.attrs["dicom_json"][i]`` is row ``i`` of
the unfiltered frame).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydicom.datadict import dictionary_VM

from ..dicom.dicomjson import pn_text
from ..dicom.tags import keyword_of, parse_tag, vr_of

__all__ = ["to_dataframe", "DicomJsonList"]

_INT_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_TM = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(?:\.(\d{1,6}))?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


class DicomJsonList(list[Mapping[str, Any]]):
    """The raw DICOM JSON of a DataFrame's rows.

    pandas deep-copies ``attrs`` on many operations; this list is shared instead (it is the
    server's answer, not meant to be edited), so big metadata does not slow every operation down.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> DicomJsonList:
        return self


def _multi_valued(tag: int) -> bool | None:
    try:
        vm = dictionary_VM(tag)
    except KeyError:
        return None
    return vm.strip() != "1"


def _parse_date(text: str) -> dt.datetime | None:
    t = text.strip().replace(".", "").replace("-", "")
    if len(t) != 8 or not t.isdigit():
        return None
    try:
        return dt.datetime(int(t[:4]), int(t[4:6]), int(t[6:8]))
    except ValueError:
        return None


def _parse_time(text: str) -> dt.time | None:
    m = _TM.match(text.strip())
    if not m:
        return None
    hh, mm, ss, frac = m.groups()
    try:
        return dt.time(int(hh), int(mm or 0), min(int(ss or 0), 59), int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None


def _parse_datetime(text: str) -> dt.datetime | None:
    m = _DT.match(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, _tz = m.groups()
    try:
        return dt.datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), min(int(s or 0), 59),
                           int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None


def _number(value: Any, integer: bool) -> Any:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if integer:
        return int(number) if number.is_integer() else None
    return number


def _typed(vr: str, value: Any) -> Any:
    """One DICOM JSON value as the Python value of its column."""
    if value is None:
        return None
    if vr == "PN":
        return pn_text(value) or None
    if vr == "DA":
        return _parse_date(str(value))
    if vr == "DT":
        return _parse_datetime(str(value))
    if vr == "TM":
        return _parse_time(str(value))
    if vr in _INT_VRS:
        return _number(value, True)
    if vr in _FLOAT_VRS:
        return _number(value, False)
    if vr == "SQ":
        return value
    return value if isinstance(value, str) else str(value)


def _element_values(elem: Mapping[str, Any]) -> list[Any] | Any:
    vr = elem.get("vr", "UN")
    if "BulkDataURI" in elem:
        return [elem["BulkDataURI"]]
    if "InlineBinary" in elem:
        try:
            return [base64.b64decode(elem["InlineBinary"])]
        except (ValueError, TypeError):
            return [elem["InlineBinary"]]
    return [_typed(vr, v) for v in elem.get("Value", [])]


def _column(tag: int, vr: str, cells: list[list[Any] | None], multi: bool) -> pd.Series:
    if vr == "SQ":
        return pd.Series([c if c else None for c in cells], dtype=object)
    if multi:
        return pd.Series([c if c else None for c in cells], dtype=object)
    values = [c[0] if c else None for c in cells]
    if vr in ("DA", "DT"):
        # Microsecond resolution: DT carries microseconds, and DICOM dates before 1677 exist.
        stamps = [np.datetime64("NaT", "us") if v is None else np.datetime64(v, "us") for v in values]
        return pd.Series(np.array(stamps, dtype="datetime64[us]"))
    if vr in _INT_VRS:
        return pd.Series(values, dtype="Int64")
    if vr in _FLOAT_VRS:
        return pd.Series([np.nan if v is None else v for v in values], dtype="float64")
    if vr == "TM" or any(isinstance(v, (bytes, bytearray)) for v in values):
        return pd.Series(values, dtype=object)
    return pd.Series(values, dtype="string")


def to_dataframe(datasets: Iterable[Mapping[str, Any]] | Mapping[str, Any], *,
                 columns: Iterable[str | int] = ()) -> pd.DataFrame:
    """A DataFrame of DICOM JSON datasets (a QIDO-RS answer, WADO-RS metadata, one dataset).

    One row per dataset, one typed column per attribute named by keyword; see the module
    documentation for the typing rules. ``columns`` (keywords or tags) get a column even when no
    dataset has them, so ``to_dataframe([], columns=["PatientName"])["PatientName"]`` works.
    ``df.attrs["dicom_json"]`` keeps the source objects.
    """
    if isinstance(datasets, Mapping):
        datasets = [datasets]
    rows = list(datasets)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"to_dataframe expects DICOM JSON objects (dicts keyed by tag); item {i} is {type(row).__name__}")
    by_tag: list[dict[int, Mapping[str, Any]]] = []
    vrs: dict[int, str] = {}
    for row in rows:
        parsed: dict[int, Mapping[str, Any]] = {}
        for key, elem in row.items():
            try:
                tag = parse_tag(key)
            except ValueError:
                raise ValueError(f"{key!r} is not a DICOM JSON tag key (8 hex digits)") from None
            if not isinstance(elem, Mapping):
                raise ValueError(f"attribute {key} is not a DICOM JSON element object: {elem!r}")
            parsed[tag] = elem
            if tag not in vrs or (vrs[tag] == "UN" and elem.get("vr")):
                vrs[tag] = str(elem.get("vr", "UN"))
        by_tag.append(parsed)
    for wanted in columns:
        tag = parse_tag(wanted)
        vrs.setdefault(tag, vr_of(tag))
    series: dict[str, pd.Series] = {}
    for tag in sorted(vrs):
        vr = vrs[tag]
        cells: list[list[Any] | None] = []
        for parsed in by_tag:
            elem = parsed.get(tag)
            cells.append(_element_values(elem) if elem is not None else None)
        multi = _multi_valued(tag)
        if multi is None:
            multi = any(c is not None and len(c) > 1 for c in cells)
        series[keyword_of(tag)] = _column(tag, vr, cells, bool(multi) and vr != "SQ")
    frame = pd.DataFrame(series, index=pd.RangeIndex(len(rows)))
    frame.attrs["dicom_json"] = DicomJsonList(rows)
    return frame

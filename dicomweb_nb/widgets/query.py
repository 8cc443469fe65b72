"""The study search form: patient, dates, modality, accession number, description.

``QueryForm.filters()`` turns the fields into QIDO-RS filters and checks them with the client's own
validation (``client.qido.build_searches``), so a bad value is reported in words before anything is
sent, exactly as ``Client.studies`` would reject it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..client.qido import build_searches
from ..errors import InvalidFilter
from ._tasks import StatusBar

__all__ = ["QueryForm", "MODALITIES"]

MODALITIES = ("", "CT", "MR", "US", "CR", "DX", "MG", "PT", "NM", "XA", "RF", "OT", "SC", "SR", "SEG", "RTSTRUCT")
# Names a user types, with the attribute each fills, for ``QueryForm.set``.
_FIELDS = {"PatientName": "patient_name", "PatientID": "patient_id", "ModalitiesInStudy": "modality",
           "AccessionNumber": "accession", "StudyDescription": "description"}


# (label, maximum length, pattern) of each text field, from the VRs of PS3.5 6.2: a value the
# server would have to reject (or silently never match) is refused here, in words.
_LIMITS = {"PatientName": ("patient name", 64 * 3 + 2, None), "PatientID": ("patient ID", 64, None),
           "AccessionNumber": ("accession number", 16, None), "StudyDescription": ("description", 64, None),
           "ModalitiesInStudy": ("modality", 16, re.compile(r"^[A-Z0-9_ *?]*$"))}


def _as_date(value: Any, what: str) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip().replace("-", "")
        try:
            return dt.datetime.strptime(text, "%Y%m%d").date()
        except ValueError:
            raise InvalidFilter(f"{what} {value!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from None
    raise InvalidFilter(f"{what} must be a date, not {type(value).__name__}")


class QueryForm(widgets.VBox):
    """Search fields and a Search button; ``on_search(callback)`` is called with the validated filters."""

    def __init__(self, *, limit: int = 5000, status: StatusBar | None = None):
        self.status = status
        text = {"layout": widgets.Layout(width="250px"), "style": {"description_width": "90px"}}
        self.patient_name = widgets.Text(description="Patient", placeholder="name, e.g. DOE* or *smith*", **text)
        self.patient_id = widgets.Text(description="Patient ID", placeholder="e.g. 12345*", **text)
        self.accession = widgets.Text(description="Accession", placeholder="accession number", **text)
        self.description = widgets.Text(description="Description", placeholder="study description, e.g. *chest*",
                                        **text)
        self.modality = widgets.Combobox(description="Modality", options=list(MODALITIES[1:]),
                                         placeholder="CT, MR...", ensure_option=False, **text)
        self.date_from = widgets.DatePicker(description="From", layout=widgets.Layout(width="250px"),
                                            style={"description_width": "90px"})
        self.date_to = widgets.DatePicker(description="To", layout=widgets.Layout(width="250px"),
                                          style={"description_width": "90px"})
        self.limit = widgets.BoundedIntText(value=limit, min=1, max=1_000_000, description="At most",
                                            layout=widgets.Layout(width="180px"), style={"description_width": "60px"})
        self.search_button = widgets.Button(description="Search", icon="search", button_style="primary",
                                            tooltip="search the server for studies (QIDO-RS)")
        self.clear_button = widgets.Button(description="Clear", tooltip="empty every field")
        for name in ("patient_name", "patient_id", "accession", "description", "modality"):
            widget = getattr(self, name)
            widget.add_class(f"dwnb-q-{name.replace('_', '-')}")
            widget.continuous_update = False
        self.search_button.add_class("dwnb-search")
        self.date_from.add_class("dwnb-q-date-from")
        self.date_to.add_class("dwnb-q-date-to")
        self._callbacks: list[Callable[[dict[str, Any], int], None]] = []
        self.search_button.on_click(lambda _b: self._click_search())
        self.clear_button.on_click(lambda _b: self.clear())
        super().__init__([
            widgets.HBox([self.patient_name, self.patient_id, self.accession]),
            widgets.HBox([self.description, self.modality, self.limit]),
            widgets.HBox([self.date_from, self.date_to, self.search_button, self.clear_button]),
        ])
        self.add_class("dwnb-query")

    def on_search(self, callback: Callable[[dict[str, Any], int], None]) -> None:
        """``callback(filters, limit)`` runs when Search is pressed with valid fields."""
        self._callbacks.append(callback)

    def set(self, **filters: Any) -> None:
        """Fill the form: ``PatientName=``, ``PatientID=``, ``ModalitiesInStudy=`` (or ``Modality=``),
        ``AccessionNumber=``, ``StudyDescription=``, ``StudyDate=(from, to)`` or ``"YYYYMMDD-YYYYMMDD"``."""
        for key, value in filters.items():
            if key == "Modality":
                key = "ModalitiesInStudy"
            if key == "StudyDate":
                low, high = self._date_range(value)
                self.date_from.value, self.date_to.value = low, high
            elif key in _FIELDS:
                getattr(self, _FIELDS[key]).value = "" if value is None else str(value)
            else:
                known = ", ".join([*_FIELDS, "StudyDate"])
                raise InvalidFilter(f"the search form has no field {key!r}; it has {known}")

    @staticmethod
    def _date_range(value: Any) -> tuple[dt.date | None, dt.date | None]:
        if value is None or value == "":
            return None, None
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise InvalidFilter("StudyDate as a range is (from, to)")
            return _as_date(value[0], "StudyDate from"), _as_date(value[1], "StudyDate to")
        text = str(value)
        if "-" in text and len(text.replace("-", "")) != 8:
            low, _, high = text.partition("-")
            return _as_date(low, "StudyDate from"), _as_date(high, "StudyDate to")
        day = _as_date(text, "StudyDate")
        return day, day

    def clear(self) -> None:
        for widget in (self.patient_name, self.patient_id, self.accession, self.description, self.modality):
            widget.value = ""
        self.date_from.value = None
        self.date_to.value = None

    def filters(self) -> dict[str, Any]:
        """The QIDO-RS filters the fields ask for; InvalidFilter in words when a field is wrong."""
        filters: dict[str, Any] = {}
        for keyword, attribute in _FIELDS.items():
            value = getattr(self, attribute).value.strip()
            if not value:
                continue
            if keyword == "ModalitiesInStudy":
                value = value.upper()
            label, longest, pattern = _LIMITS[keyword]
            if len(value) > longest:
                raise InvalidFilter(f"the {label} is too long: {len(value)} characters, DICOM allows {longest}")
            if pattern is not None and not pattern.match(value):
                raise InvalidFilter(f"{value!r} is not a {label} code: use capital letters, digits and _ "
                                    "(CT, MR, US...)")
            if "\\" in value:
                raise InvalidFilter(f"the {label} contains a backslash, which DICOM reads as a list of values")
            filters[keyword] = value
        low, high = self.date_from.value, self.date_to.value
        if low and high and low > high:
            raise InvalidFilter(f"the study date range is reversed: from {low:%Y-%m-%d} is after to {high:%Y-%m-%d}")
        if low or high:
            filters["StudyDate"] = f"{low:%Y%m%d}-{high:%Y%m%d}" if low and high else (
                f"{low:%Y%m%d}-" if low else f"-{high:%Y%m%d}")
        build_searches("study", None, filters)  # raises InvalidFilter naming the bad field
        return filters

    def _click_search(self) -> None:
        try:
            self.submit()
        except Exception as exc:
            if self.status is None:
                raise
            self.status.error(exc)

    def submit(self) -> None:
        """Validate and run the search callbacks (InvalidFilter propagates to the caller's status bar)."""
        filters = self.filters()
        limit = int(self.limit.value)
        for callback in self._callbacks:
            callback(filters, limit)

"""The study table (paging, sorting, selection, a fixed number of widgets) and the query form's filters."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from dicomweb_nb import errors
from dicomweb_nb.errors import InvalidFilter
from dicomweb_nb.widgets._tasks import StatusBar, describe_error
from dicomweb_nb.widgets.query import QueryForm
from dicomweb_nb.widgets.table import Column, DataTable, format_value


def frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "UID": [f"1.2.{i}" for i in range(n)],
        "Name": [f"Name^{(i * 7919) % n:05d}" for i in range(n)],
        "Count": [float(x) if x % 10 else np.nan for x in rng.integers(0, 1000, n)],
        "Modalities": [["CT", "SR"] if i % 3 == 0 else ["MR"] for i in range(n)],
        "Date": pd.to_datetime(["2020-01-01"] * n) + pd.to_timedelta(rng.integers(0, 1000, n), unit="D"),
    })


COLUMNS = [Column("Name", "Name", 12), Column("Count", "Count", 6), Column("Modalities", "Mod", 8),
           Column("Date", "Date", 10)]


def test_ten_thousand_rows_keep_one_page_of_widgets():
    table = DataTable(COLUMNS, key="UID", page_size=20)
    table.set_data(frame(10_000))
    assert table.page_count == 500
    assert len(table._grid.children) == (2 + len(COLUMNS)) * 21
    table.go_to(499)
    assert list(table.page_rows["UID"]) == [f"1.2.{i}" for i in range(9980, 10_000)]
    table.go_to(10_000)  # clipped
    assert table.page == 499 and table._next.disabled and not table._previous.disabled
    table.go_to(-3)
    assert table.page == 0 and table._first.disabled


def test_sorting_numbers_text_lists_and_dates():
    table = DataTable(COLUMNS, key="UID", page_size=50)
    data = frame(200)
    table.set_data(data)
    table.sort("Count")
    counts = table.view["Count"]
    assert counts.dropna().is_monotonic_increasing and counts.iloc[-1:].isna().all()  # missing values last
    table.sort("Count")
    assert table.view["Count"].dropna().is_monotonic_decreasing and not table.ascending
    table.sort("Modalities", ascending=True)
    assert list(table.view["Modalities"].map(tuple).unique()) == [("CT", "SR"), ("MR",)]
    table.sort("Date", ascending=False)
    assert table.view["Date"].is_monotonic_decreasing
    assert table.page_rows.iloc[0]["UID"] == data.sort_values("Date", ascending=False, kind="stable").iloc[0]["UID"]
    with pytest.raises(ValueError, match="no column 'Nope'"):
        table.sort("Nope")


def test_cells_show_formatted_values_escaped():
    table = DataTable(COLUMNS, key="UID", page_size=5)
    table.set_data(pd.DataFrame({"UID": ["1"], "Name": ["<b>Doe</b>^J"], "Count": [3.0], "Modalities": [["CT", "PT"]],
                                 "Date": [pd.Timestamp("2024-03-15")]}))
    cells = [cell.value for cell in table._rows[0][2]]
    assert "&lt;b&gt;Doe&lt;/b&gt;^J" in cells[0] and "<b>" not in cells[0]
    assert ">3<" in cells[1] and "CT\\PT" in cells[2] and "2024-03-15" in cells[3]
    assert [w.layout.display for w in (table._rows[1][0], table._rows[1][1])] == ["none", "none"]
    assert format_value(None) == "" and format_value(float("nan")) == "" and format_value(pd.NaT) == ""
    assert format_value(pd.Timestamp("2024-03-15 10:15:00")) == "2024-03-15 10:15:00"
    assert format_value({"Alphabetic": "Doe^J"}) == "Doe^J"


def test_selection_activation_and_callbacks():
    table = DataTable(COLUMNS, key="UID", page_size=10)
    table.set_data(frame(35))
    opened, selections = [], []
    table.on_activate(lambda row: opened.append(row["UID"]))
    table.on_selection(lambda selected: selections.append(list(selected["UID"])))
    table._rows[2][1].click()  # the third row's Open button
    assert opened == ["1.2.2"] and table.active_key == "1.2.2" and table._rows[2][1].button_style == "info"
    table._rows[0][0].value = True
    table._rows[3][0].value = True
    assert selections[-1] == ["1.2.0", "1.2.3"]
    table.go_to(3)
    table._page_checkbox.value = True  # the last page: five rows
    assert len(table.selected) == 7
    table.go_to(0)
    assert table._rows[0][0].value and not table._rows[1][0].value and not table._page_checkbox.value
    table.select(["1.2.9"], add=True)
    assert len(table.selected) == 8
    with pytest.raises(KeyError, match="1.2.999"):
        table.select(["1.2.999"])
    with pytest.raises(KeyError):
        table.activate("nope")
    table.set_data(frame(3))  # a new result clears the selection
    assert table.selected.empty and selections[-1] == [] and table.active is None
    with pytest.raises(ValueError, match="'UID' column"):
        table.set_data(pd.DataFrame({"Name": ["x"]}))


def test_page_size_dropdown():
    table = DataTable(COLUMNS, key="UID", page_size=10)
    table.set_data(frame(95))
    table.go_to(5)  # rows 50..59
    table._page_size.value = 50
    assert table.page_size == 50 and table.page == 1 and len(table.page_rows) == 45
    assert len(table._grid.children) == (2 + len(COLUMNS)) * 51
    with pytest.raises(ValueError):
        DataTable(COLUMNS, key="UID", page_size=0)


def test_query_form_builds_qido_filters():
    form = QueryForm()
    submitted = []
    form.on_search(lambda filters, limit: submitted.append((filters, limit)))
    form.set(PatientName="DOE*", PatientID="123", Modality="mr", AccessionNumber="A1", StudyDescription="*head*",
             StudyDate="20240101-20240131")
    assert form.filters() == {"PatientName": "DOE*", "PatientID": "123", "ModalitiesInStudy": "MR",
                              "AccessionNumber": "A1", "StudyDescription": "*head*", "StudyDate": "20240101-20240131"}
    form.set(StudyDate=(None, dt.date(2020, 5, 1)))
    assert form.filters()["StudyDate"] == "-20200501"
    form.set(StudyDate="2021-02-03")
    assert form.filters()["StudyDate"] == "20210203-20210203"
    form.limit.value = 7
    form.submit()
    assert submitted[-1][1] == 7
    form.clear()
    assert form.filters() == {}
    with pytest.raises(InvalidFilter, match="no field 'Sex'"):
        form.set(Sex="F")
    with pytest.raises(InvalidFilter, match="not a date"):
        form.set(StudyDate="2021-02-30")


def test_query_form_errors_show_in_the_status_line():
    status = StatusBar()
    form = QueryForm(status=status)
    form.description.value = "x" * 65
    form.search_button.click()
    assert status.kind == "error" and "too long" in status.text and "65 characters" in status.text
    assert "&#9888;" in status.value  # shown with a warning sign, escaped text
    with pytest.raises(ValueError, match="kind"):
        status.show("x", "loud")


def test_error_descriptions_are_sentences():
    assert "401 Unauthorized" in describe_error(errors.Unauthorized("GET x answered 401", status=401))
    assert describe_error(errors.ConnectionFailed("boom", url="http://h/dicom-web")).startswith(
        "Cannot reach http://h/dicom-web")
    assert "403" in describe_error(errors.Forbidden("no", status=403))
    assert describe_error(errors.InvalidFilter("bad filter X")).startswith("Bad search:")
    assert "unavailable" in describe_error(errors.ServiceUnavailable("down", status=503))
    assert describe_error(RuntimeError("odd")) == "Unexpected RuntimeError: odd"

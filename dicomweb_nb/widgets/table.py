"""A sortable, paged table of DataFrame rows with checkboxes and an "open" button per row.

Only the current page is shown, in a fixed pool of row widgets that are refilled when the page,
the sort or the data changes: a search answering thousands of studies costs one pandas sort and
a page of trait updates, never thousands of widgets. ipywidgets has no table widget whose cells
call back into Python, hence this grid of small widgets.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from ._tasks import UI_LOCK

__all__ = ["Column", "DataTable", "format_value", "TABLE_CSS"]

TABLE_CSS = """<style>
.dwnb-cell { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 12px; line-height: 24px; }
.dwnb-cell .widget-html-content { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.dwnb-table-grid { grid-gap: 0px 6px; align-items: center; }
.dwnb-row-active .widget-html-content { font-weight: bold; }
.dwnb-sort button, button.dwnb-sort { font-weight: bold; text-align: left; padding: 0 2px; }
</style>"""


@dataclass(frozen=True)
class Column:
    """One column: the DataFrame column ``key``, its heading and its width in characters."""

    key: str
    title: str
    width: int = 12
    format: Callable[[Any], str] | None = None


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def format_value(value: Any) -> str:
    """Text for a DataFrame cell: dates as YYYY-MM-DD, lists joined with backslashes as DICOM does."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "\\".join(format_value(v) for v in value)
    if _is_missing(value):
        return ""
    if isinstance(value, pd.Timestamp):
        if value.hour == value.minute == value.second == 0 and value.microsecond == 0:
            return value.strftime("%Y-%m-%d")
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, dict) and "Alphabetic" in value:  # a PN left as DICOM JSON
        return str(value["Alphabetic"])
    return str(value)


def _sort_key(series: pd.Series) -> pd.Series:
    if series.dtype == object or str(series.dtype).startswith(("string", "str")):
        return series.map(lambda v: format_value(v).lower())
    return series


class DataTable(widgets.VBox):
    """A page of rows from a DataFrame, sortable by clicking a heading.

    ``key`` names the column that identifies a row (a UID). Checked rows form ``selected``; the
    "open" button of a row makes it ``active`` and calls the ``on_activate`` callbacks with the
    row (a Series). The whole result stays in ``data``; ``page_rows`` is what is shown.
    """

    def __init__(self, columns: Sequence[Column], *, key: str, page_size: int = 20, noun: str = "row",
                 plural: str | None = None, open_label: str = "Open"):
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.columns = list(columns)
        self.key = key
        self.noun = noun
        self.plural = plural or noun + "s"
        self.open_label = open_label
        self.data = pd.DataFrame(columns=[c.key for c in self.columns] + [key])
        self.view = self.data
        self.sort_by: str | None = None
        self.ascending = True
        self.page = 0
        self.page_size = page_size
        self.selected_keys: list[Hashable] = []
        self.active_key: Hashable | None = None
        self._activate_callbacks: list[Callable[[pd.Series], None]] = []
        self._selection_callbacks: list[Callable[[pd.DataFrame], None]] = []
        self._filling = False

        self._page_checkbox = widgets.Checkbox(value=False, indent=False, layout=widgets.Layout(width="22px"),
                                               tooltip="select every row of this page")
        self._page_checkbox.add_class("dwnb-page-check")
        self._page_checkbox.observe(self._on_page_checkbox, "value")
        self._sort_buttons = []
        for column in self.columns:
            button = widgets.Button(description=column.title, tooltip=f"sort by {column.title}",
                                    layout=widgets.Layout(width="auto", height="24px"))
            button.add_class("dwnb-sort")
            button.on_click(lambda _b, key=column.key: self.sort(key))
            self._sort_buttons.append(button)
        self._grid = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="22px 56px " + " ".join(f"{c.width}ch" for c in self.columns), width="100%",
            overflow_x="auto"))
        self._grid.add_class("dwnb-table-grid")
        self._rows: list[tuple[widgets.Checkbox, widgets.Button, list[widgets.HTML]]] = []

        self._first = widgets.Button(icon="angle-double-left", tooltip="first page", layout=widgets.Layout(width="36px"))
        self._previous = widgets.Button(icon="angle-left", tooltip="previous page", layout=widgets.Layout(width="36px"))
        self._next = widgets.Button(icon="angle-right", tooltip="next page", layout=widgets.Layout(width="36px"))
        self._last = widgets.Button(icon="angle-double-right", tooltip="last page", layout=widgets.Layout(width="36px"))
        for button, cls in ((self._first, "first"), (self._previous, "previous"), (self._next, "next"), (self._last, "last")):
            button.add_class(f"dwnb-page-{cls}")
        self._first.on_click(lambda _b: self.go_to(0))
        self._previous.on_click(lambda _b: self.go_to(self.page - 1))
        self._next.on_click(lambda _b: self.go_to(self.page + 1))
        self._last.on_click(lambda _b: self.go_to(self.page_count - 1))
        self._page_label = widgets.HTML()
        self._page_label.add_class("dwnb-page-label")
        self._page_size = widgets.Dropdown(options=sorted({10, 20, 50, 100, page_size}), value=page_size,
                                           description="per page", layout=widgets.Layout(width="160px"))
        self._page_size.observe(lambda change: self.set_page_size(change["new"]), "value")
        pager = widgets.HBox([self._first, self._previous, self._page_label, self._next, self._last, self._page_size],
                             layout=widgets.Layout(align_items="center"))
        super().__init__([widgets.HTML(TABLE_CSS), self._grid, pager])
        self.add_class("dwnb-table")
        self._build_rows()
        self._fill()

    # -- callbacks ----------------------------------------------------------------------------------
    def on_activate(self, callback: Callable[[pd.Series], None]) -> None:
        """Call ``callback(row)`` when a row is opened."""
        self._activate_callbacks.append(callback)

    def on_selection(self, callback: Callable[[pd.DataFrame], None]) -> None:
        """Call ``callback(selected)`` when the checked rows change."""
        self._selection_callbacks.append(callback)

    # -- data ---------------------------------------------------------------------------------------
    def set_data(self, data: pd.DataFrame) -> None:
        """Show a new result: first page, selection cleared, the current sort kept."""
        if self.key not in data.columns:
            raise ValueError(f"the table needs a {self.key!r} column to identify rows")
        with UI_LOCK:
            self.data = data.reset_index(drop=True)
            self.selected_keys = []
            self.active_key = None
            self.page = 0
            self._apply_sort()
            self._fill()
        self._notify_selection()

    def _apply_sort(self) -> None:
        if self.sort_by is None or self.sort_by not in self.data.columns or self.data.empty:
            self.view = self.data
            return
        self.view = self.data.sort_values(self.sort_by, ascending=self.ascending, key=_sort_key, kind="stable",
                                          na_position="last").reset_index(drop=True)

    def sort(self, column: str, ascending: bool | None = None) -> None:
        """Sort by ``column``; clicking the same heading again (``ascending=None``) reverses the order."""
        if column not in [c.key for c in self.columns]:
            raise ValueError(f"no column {column!r}; columns: {', '.join(c.key for c in self.columns)}")
        with UI_LOCK:
            if ascending is None:
                ascending = not self.ascending if self.sort_by == column else True
            self.sort_by, self.ascending = column, ascending
            self.page = 0
            self._apply_sort()
            self._fill()

    @property
    def page_count(self) -> int:
        return max(1, math.ceil(len(self.view) / self.page_size))

    def go_to(self, page: int) -> None:
        """Show page ``page`` (0-based, clipped to the pages there are)."""
        with UI_LOCK:
            self.page = min(max(0, int(page)), self.page_count - 1)
            self._fill()

    def set_page_size(self, size: int) -> None:
        if size < 1:
            raise ValueError("page size must be at least 1")
        with UI_LOCK:
            first_row = self.page * self.page_size
            self.page_size = int(size)
            if self._page_size.value != size:
                if size not in self._page_size.options:
                    self._page_size.options = sorted(set(self._page_size.options) | {size})
                self._page_size.value = size
            self.page = first_row // self.page_size
            self._build_rows()
            self._fill()

    @property
    def page_rows(self) -> pd.DataFrame:
        """The rows on the current page, in display order."""
        start = self.page * self.page_size
        return self.view.iloc[start:start + self.page_size]

    @property
    def selected(self) -> pd.DataFrame:
        """The checked rows (in the order of the data)."""
        if not self.selected_keys:
            return self.data.iloc[0:0]
        return self.data[self.data[self.key].isin(self.selected_keys)]

    @property
    def active(self) -> pd.Series | None:
        """The opened row, if any."""
        if self.active_key is None:
            return None
        found = self.data[self.data[self.key] == self.active_key]
        return None if found.empty else found.iloc[0]

    def select(self, keys: Iterable[Hashable], *, add: bool = False) -> None:
        """Check the rows with these keys (replacing the selection unless ``add``)."""
        keys = list(keys)
        known = set(self.data[self.key])
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise KeyError(f"no row with {self.key} {unknown[0]!r}")
        with UI_LOCK:
            chosen = list(self.selected_keys) if add else []
            chosen += [k for k in keys if k not in chosen]
            self.selected_keys = chosen
            self._fill()
        self._notify_selection()

    def activate(self, key: Hashable) -> pd.Series:
        """Open the row with this key (as its "open" button does) and return it."""
        found = self.data[self.data[self.key] == key]
        if found.empty:
            raise KeyError(f"no row with {self.key} {key!r}")
        with UI_LOCK:
            self.active_key = key
            self._fill()
        row = found.iloc[0]
        for callback in self._activate_callbacks:
            callback(row)
        return row

    # -- widgets ------------------------------------------------------------------------------------
    def _build_rows(self) -> None:
        while len(self._rows) < self.page_size:
            index = len(self._rows)
            checkbox = widgets.Checkbox(value=False, indent=False, layout=widgets.Layout(width="22px"))
            checkbox.add_class("dwnb-row-check")
            checkbox.observe(lambda change, i=index: self._on_row_checkbox(i, change["new"]), "value")
            button = widgets.Button(description=self.open_label, tooltip=f"open this {self.noun}",
                                    layout=widgets.Layout(width="56px", height="24px"))
            button.add_class("dwnb-row-open")
            button.on_click(lambda _b, i=index: self._on_row_open(i))
            cells = []
            for _ in self.columns:
                cell = widgets.HTML(layout=widgets.Layout(width="100%"))
                cell.add_class("dwnb-cell")
                cells.append(cell)
            self._rows.append((checkbox, button, cells))
        header = [self._page_checkbox, widgets.HTML("")] + self._sort_buttons
        children: list[widgets.Widget] = list(header)
        for checkbox, button, cells in self._rows[: self.page_size]:
            children += [checkbox, button, *cells]
        self._grid.children = children

    def _fill(self) -> None:
        self._filling = True
        try:
            rows = self.page_rows
            records = rows.to_dict("records")
            for index, (checkbox, button, cells) in enumerate(self._rows[: self.page_size]):
                visible = index < len(records)
                display = None if visible else "none"
                for w in (checkbox, button, *cells):
                    if w.layout.display != display:
                        w.layout.display = display
                if not visible:
                    continue
                record = records[index]
                key = record[self.key]
                checkbox.value = key in self.selected_keys
                active = key == self.active_key
                button.button_style = "info" if active else ""
                for column, cell in zip(self.columns, cells):
                    text = (column.format or format_value)(record.get(column.key))
                    escaped = html.escape(text)
                    cell.value = f'<span title="{escaped}">{escaped}</span>'
                    if active:
                        cell.add_class("dwnb-row-active")
                    else:
                        cell.remove_class("dwnb-row-active")
            for button, column in zip(self._sort_buttons, self.columns):
                arrow = (" \u25b2" if self.ascending else " \u25bc") if column.key == self.sort_by else ""
                button.description = column.title + arrow
            total = len(self.view)
            if total:
                start = self.page * self.page_size
                self._page_label.value = (f"&nbsp;{start + 1}&ndash;{start + len(records)} of {total} "
                                          f"{self.plural if total != 1 else self.noun} &middot; page {self.page + 1} of "
                                          f"{self.page_count}&nbsp;")
            else:
                self._page_label.value = f"&nbsp;no {self.plural}&nbsp;"
            self._first.disabled = self._previous.disabled = self.page == 0
            self._next.disabled = self._last.disabled = self.page >= self.page_count - 1
            self._page_checkbox.value = bool(records) and all(r[self.key] in self.selected_keys for r in records)
        finally:
            self._filling = False

    def _on_row_checkbox(self, index: int, value: bool) -> None:
        if self._filling:
            return
        rows = self.page_rows
        if index >= len(rows):
            return
        key = rows.iloc[index][self.key]
        with UI_LOCK:
            if value and key not in self.selected_keys:
                self.selected_keys = [*self.selected_keys, key]
            elif not value and key in self.selected_keys:
                self.selected_keys = [k for k in self.selected_keys if k != key]
            self._filling = True
            try:
                self._page_checkbox.value = bool(len(rows)) and all(k in self.selected_keys for k in rows[self.key])
            finally:
                self._filling = False
        self._notify_selection()

    def _on_page_checkbox(self, change: dict) -> None:
        if self._filling:
            return
        page_keys = list(self.page_rows[self.key])
        with UI_LOCK:
            if change["new"]:
                self.selected_keys = [*self.selected_keys, *(k for k in page_keys if k not in self.selected_keys)]
            else:
                self.selected_keys = [k for k in self.selected_keys if k not in page_keys]
            self._fill()
        self._notify_selection()

    def _on_row_open(self, index: int) -> None:
        rows = self.page_rows
        if index < len(rows):
            self.activate(rows.iloc[index][self.key])

    def _notify_selection(self) -> None:
        selected = self.selected
        for callback in self._selection_callbacks:
            callback(selected)

"""``dw.Browser``: search a DICOMweb server, look at its images, copy and upload studies, from a notebook.

Built only on the notebook client, so it works with any DICOMweb server (Orthanc, dcm4chee, cloud
services, this workspace's store). Everything slow runs in the background; every failure is a
sentence in the status line, never a traceback in the cell. What is chosen flows back into the
notebook: ``browser.selected_studies``, ``browser.selected_series``, ``browser.volume()``.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from ..pixels.volume import Volume
from ._tasks import UI_LOCK, StatusBar, TaskRunner, describe_error, guarded
from .actions import RetrievePanel, UploadPanel
from .delete import DeletePanel
from .query import QueryForm
from .series import SeriesList
from .servers import ServerPicker
from .table import Column, DataTable, format_value
from .viewer import Viewer

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..client.client import Client

__all__ = ["Browser", "STUDY_COLUMNS", "STUDY_FIELDS"]

STUDY_COLUMNS = [
    Column("PatientName", "Patient", 22),
    Column("PatientID", "Patient ID", 14),
    Column("StudyDate", "Date", 10),
    Column("ModalitiesInStudy", "Modalities", 9),
    Column("AccessionNumber", "Accession", 12),
    Column("StudyDescription", "Description", 26),
    Column("NumberOfStudyRelatedSeries", "Series", 6),
    Column("NumberOfStudyRelatedInstances", "Instances", 10),
]
STUDY_FIELDS = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                "NumberOfStudyRelatedInstances", "AccessionNumber", "PatientBirthDate", "PatientSex"]


def _status(self: Any) -> StatusBar:
    return self.status


class Browser(widgets.VBox):
    """Browse a DICOMweb server in a notebook.

    ``dw.Browser()`` opens the workspace store; ``dw.Browser("pacs")`` a configured server;
    ``dw.Browser("http://host/dicom-web")`` a URL; ``dw.Browser(client)`` a ``dw.connect(...)``
    client. Everything the buttons do is also a method: ``search(PatientName="DOE*")``,
    ``open_study(uid)``, ``view_series(uid)``, ``retrieve(to=...)``, ``upload(paths)``. These return
    at once (the work runs in the background); ``wait()`` blocks until it is done.
    """

    def __init__(self, client_or_server_name: Client | str | None = None, *, store: str | os.PathLike[str] | None = None,
                 page_size: int = 20, image_size: int = 512, search_limit: int = 5000, auto_search: bool = True):
        self.status = StatusBar(layout=widgets.Layout(min_height="24px"))
        self.runner = TaskRunner(self.status, max_workers=4, name="dicomweb-nb-browser")
        self.auto_search = auto_search
        self.servers = ServerPicker(self.status, initial=client_or_server_name, store=store)
        self.query = QueryForm(limit=search_limit, status=self.status)
        self.studies = DataTable(STUDY_COLUMNS, key="StudyInstanceUID", page_size=page_size, noun="study",
                                 plural="studies")
        self.series_list = SeriesList(self.runner, self.status)
        self.viewer = Viewer(size=image_size, runner=self.runner, status=self.status)
        self.retrieve_panel = RetrievePanel(self.status, self.runner)
        self.upload_panel = UploadPanel(self.status, self.runner)
        self.delete_panel = DeletePanel(self.status, self.runner)
        self.results = pd.DataFrame()
        self._search_token = 0

        self.query.on_search(self._on_search)
        self.studies.on_activate(self._on_study_opened)
        self.series_list.on_view(self._on_series_view)
        self.servers.on_change(self._on_server_changed)
        self.retrieve_panel.button.on_click(lambda _b: self._click_retrieve())
        self.upload_panel.button.on_click(lambda _b: self._click_upload())
        self.delete_panel.button.on_click(lambda _b: self._click_delete())

        actions = widgets.Tab([self.retrieve_panel, self.upload_panel, self.delete_panel])
        actions.titles = ("Retrieve", "Upload", "Delete")
        actions.add_class("dwnb-actions")
        self.header = widgets.HTML()
        super().__init__([
            self.servers, self.query, self.status, self.studies,
            widgets.HBox([self.series_list, self.viewer], layout=widgets.Layout(align_items="flex-start")),
            actions,
        ])
        self.add_class("dwnb-browser")
        # A server name or servers file that is wrong stays on screen instead of being replaced by a search.
        if auto_search and not self.servers.missing and self.servers.config_error is None:
            self._connect_and_search()

    # -- server ------------------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The client of the server chosen in the picker."""
        return self.servers.client

    def connect(self, name_or_url: str | None) -> None:
        """Switch to a configured server name, a URL, or (None) the workspace store."""
        self.servers.choose(name_or_url)

    def add_server(self, name: str, url: str, *, username: str | None = None, password: str | None = None,
                   token: str | None = None) -> None:
        """Save a server in the workspace's servers.json and switch to it."""
        self.servers.add_server(name, url, username=username, password=password, token=token)

    def _on_server_changed(self, client: Client, label: str) -> None:
        self._clear_results()
        self.status.show(f"connected to {label}", "info")
        if self.auto_search:
            self._start_search(client, {}, int(self.query.limit.value))

    def _connect_and_search(self) -> None:
        try:
            client = self.client
        except Exception as exc:  # noqa: BLE001 - a bad server name or configuration is shown, not raised
            self.status.error(exc)
            return
        self._start_search(client, {}, int(self.query.limit.value))

    def _clear_results(self) -> None:
        self._search_token += 1
        self.results = pd.DataFrame()
        self.studies.set_data(pd.DataFrame(columns=[c.key for c in STUDY_COLUMNS] + ["StudyInstanceUID"]))
        self.series_list.clear()

    # -- search ------------------------------------------------------------------------------------
    def search(self, limit: int | None = None, **filters: Any) -> Future:
        """Fill the form with ``filters`` (``PatientName=``, ``PatientID=``, ``StudyDate=(from, to)``,
        ``ModalitiesInStudy=``, ``AccessionNumber=``, ``StudyDescription=``) and search."""
        self.query.clear()
        self.query.set(**filters)
        if limit is not None:
            self.query.limit.value = limit
        return self._start_search(self.client, self.query.filters(), int(self.query.limit.value))

    def _on_search(self, filters: dict[str, Any], limit: int) -> None:
        self._start_search(self.client, filters, limit)

    def _start_search(self, client: Client, filters: dict[str, Any], limit: int) -> Future:
        self._search_token += 1
        token = self._search_token
        label = self.servers.label
        self.status.show(f"searching {label}…", "busy")
        self.query.search_button.disabled = True

        def on_error(exc: BaseException) -> None:
            self.query.search_button.disabled = False
            if token == self._search_token:
                self.status.show(describe_error(exc, server=label), "error")

        return self.runner.submit(self._search, token, client, filters, limit, label, on_error=on_error)

    def _search(self, token: int, client: Client, filters: dict[str, Any], limit: int, label: str) -> None:
        found = client.studies(filters, fields=STUDY_FIELDS, limit=limit)
        self.query.search_button.disabled = False
        if token != self._search_token:
            return
        if "StudyInstanceUID" not in found.columns:
            found["StudyInstanceUID"] = pd.Series(dtype=object)
        with UI_LOCK:
            self.results = found
            self.studies.set_data(found)
            self.series_list.clear()
        if found.empty:
            what = ", ".join(f"{k}={v}" for k, v in filters.items()) or "any study"
            self.status.show(f"no studies on {label} match {what}", "info")
        else:
            capped = " (the limit: raise 'At most' for more)" if len(found) >= limit else ""
            noun = "study" if len(found) == 1 else "studies"
            self.status.show(f"{len(found)} {noun} on {label}{capped}", "ok")

    # -- studies and series --------------------------------------------------------------------------
    def open_study(self, study: str) -> None:
        """Show the series of a study (as its Open button does)."""
        self.studies.activate(study)

    @guarded(_status)
    def _on_study_opened(self, row: pd.Series) -> None:
        label = " ".join(filter(None, [format_value(row.get("PatientName")), format_value(row.get("StudyDate")),
                                       format_value(row.get("StudyDescription"))]))
        self.series_list.show_study(self.client, str(row["StudyInstanceUID"]), label)

    def view_series(self, series: str) -> None:
        """Show a series of the opened study in the viewer (as its View button does)."""
        self.series_list.view(series)

    @guarded(_status)
    def _on_series_view(self, study: str, series: str) -> None:
        self.viewer.show_series(self.client, study, series)

    def select_studies(self, studies: Sequence[str]) -> None:
        """Check these studies in the table."""
        self.studies.select(list(studies))

    def select_series(self, series: Sequence[str]) -> None:
        """Check these series of the opened study."""
        self.series_list.select(list(series))

    @property
    def selected_studies(self) -> pd.DataFrame:
        """The checked studies (or the opened one when none is checked), as the search returned them."""
        checked = self.studies.selected
        if len(checked) or self.studies.active is None:
            return checked
        return self.studies.data[self.studies.data["StudyInstanceUID"] == self.studies.active_key]

    @property
    def selected_series(self) -> pd.DataFrame:
        """The checked series of the opened study (or the one in the viewer when none is checked)."""
        checked = self.series_list.selected
        if len(checked) or self.series_list.active_key is None:
            return checked
        data = self.series_list.data
        return data[data["SeriesInstanceUID"] == self.series_list.active_key]

    def volume(self, **kwargs: Any) -> Volume:
        """The series in the viewer as a ``Volume`` (``array``, ``spacing``, ``origin``, ``direction``)."""
        return self.viewer.volume(**kwargs)

    def frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Frames of the series in the viewer as stored values, ``(n, rows, columns[, 3])``."""
        return self.viewer.frames(indices)

    def metadata(self) -> pd.DataFrame:
        """All attributes of the series in the viewer, one row per instance."""
        if self.viewer.client is None or not self.viewer.study or not self.viewer.series:
            raise ValueError("no series is in the viewer")
        return self.viewer.client.metadata(self.viewer.study, self.viewer.series)

    # -- actions ------------------------------------------------------------------------------------
    def _retrieve_targets(self) -> list[tuple[str, str | None]]:
        series = self.series_list.selected
        if len(series) and self.series_list.study:
            return [(self.series_list.study, str(uid)) for uid in series["SeriesInstanceUID"]]
        return [(str(uid), None) for uid in self.selected_studies["StudyInstanceUID"]]

    def retrieve(self, to: str | Path | Client | None = None) -> Future:
        """Copy the checked series (else the checked or opened studies) into ``to`` (a folder or a Client),
        by default where the Retrieve panel says (the workspace store unless a folder is chosen)."""
        return self.retrieve_panel.run(self.client, self._retrieve_targets(), to=to,
                                       workspace=self.servers.workspace_client)

    @guarded(_status)
    def _click_retrieve(self) -> None:
        self.retrieve()

    def cancel(self) -> None:
        """Cancel the running retrieve and upload."""
        self.retrieve_panel.cancel()
        self.upload_panel.cancel()

    def upload(self, paths: Sequence[str | Path | bytes] | str | Path | None = None) -> Future:
        """STOW-RS of files or folders (default: the Upload panel's path and picked files) to the chosen server."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        return self.upload_panel.run(self.client, paths, where=self.servers.label)

    @guarded(_status)
    def _click_upload(self) -> None:
        self.upload()

    def delete(self, confirm: bool = False) -> Future | None:
        """Delete the checked series (else the checked or opened studies) from the chosen server.

        Without ``confirm`` this only asks, in the Delete panel (as its Delete… button does); answer
        there, or call ``delete(confirm=True)`` to delete at once. The deleted studies leave the
        table, and the series list of the opened study is read again."""
        targets = self._retrieve_targets()
        if confirm:
            return self.delete_panel.run(self.client, targets, where=self.servers.label, on_done=self._after_delete)
        self.delete_panel.ask(self.client, targets, where=self.servers.label, on_done=self._after_delete)
        return None

    @guarded(_status)
    def _click_delete(self) -> None:
        self.delete()

    def _after_delete(self, deleted: list[tuple[str, str | None]]) -> None:
        gone = {study for study, series in deleted if series is None}
        with UI_LOCK:
            if gone and len(self.results):
                self.results = self.results[~self.results["StudyInstanceUID"].astype(str).isin(gone)].reset_index(drop=True)
                self.studies.set_data(self.results)
            opened = self.series_list.study
            if opened in gone:
                self.series_list.clear()
        if opened is not None and opened not in gone and any(study == opened for study, _series in deleted):
            self.series_list.show_study(self.client, opened)

    # -- for scripts and tests ------------------------------------------------------------------------
    @property
    def message(self) -> str:
        """The text of the status line."""
        return self.status.text

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the background work (searches, thumbnails, frames, transfers) is done."""
        return self.runner.wait(timeout)

    def close(self) -> None:
        self.runner.shutdown()
        self.servers.close_clients()
        super().close()

    def __repr__(self) -> str:
        return f"<dicomweb_nb.Browser {html.unescape(self.servers.label)!r}: {len(self.results)} studies>"

"""dw.Browser against our server over HTTP: search, table, series thumbnails, viewer, retrieve, upload."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.errors import InvalidFilter
from dicomweb_nb.pixels.voi import Window
from dicomweb_nb.widgets import actions

from .helpers import png_pixels, windowed


@pytest.fixture
def browser(widget_server, widget_workspace):
    b = dw.Browser(widget_server.url, image_size=None)
    assert b.wait(60)
    yield b
    b.close()


def test_opens_with_every_study_listed(browser, widget_server):
    assert browser.status.kind == "ok", browser.message
    assert browser.message.startswith("3 studies on ")
    assert len(browser.studies.data) == 3 and len(browser.studies.page_rows) == 3
    assert set(browser.studies.data["PatientID"]) >= {"WIDGET-CT", "WIDGET-MF"}
    # Sorting by a heading, then the same heading again reverses.
    browser.studies.sort("PatientID")
    ids = list(browser.studies.page_rows["PatientID"])
    assert ids == sorted(ids, key=str.lower)
    browser.studies.sort("PatientID")
    assert list(browser.studies.page_rows["PatientID"]) == ids[::-1]
    assert "\u25bc" in browser.studies._sort_buttons[1].description
    assert "WIDGET-CT" in browser.studies._rows[ids[::-1].index("WIDGET-CT")][2][1].value


def test_search_open_study_thumbnails_and_viewer(browser, widget_server):
    ct = widget_server.ct
    browser.search(PatientName="Widget^C*", StudyDate=("2024-03-01", "2024-03-31"), ModalitiesInStudy="ct")
    browser.wait(60)
    assert list(browser.studies.data["PatientID"]) == ["WIDGET-CT"]
    assert browser.message.startswith("1 study on ")
    browser.open_study(str(ct[0].StudyInstanceUID))
    browser.wait(60)
    series = browser.series_list.data
    assert list(series["SeriesInstanceUID"]) == [str(ct[0].SeriesInstanceUID)]
    thumbnail = png_pixels(browser.series_list.thumbnails[str(ct[0].SeriesInstanceUID)])
    assert max(thumbnail.shape[:2]) <= 96 and thumbnail.std() > 10  # a picture, not a blank square
    image_widget = browser.series_list._rows[str(ct[0].SeriesInstanceUID)][0]
    assert image_widget.format == "png" and bytes(image_widget.value) == browser.series_list.thumbnails[
        str(ct[0].SeriesInstanceUID)]

    browser.view_series(str(ct[0].SeriesInstanceUID))
    browser.wait(60)
    np.testing.assert_array_equal(png_pixels(browser.viewer.image.value),
                                  windowed(ct[5].pixel_array.astype(float) - 1024, Window(40, 400)))

    # The selection flows back into the notebook.
    assert list(browser.selected_studies["StudyInstanceUID"]) == [str(ct[0].StudyInstanceUID)]
    assert list(browser.selected_series["SeriesInstanceUID"]) == [str(ct[0].SeriesInstanceUID)]
    volume = browser.volume()
    assert volume.shape == (12, 32, 32) and volume.spacing[0] == pytest.approx(2.5)
    assert browser.frames([0, 1]).shape == (2, 32, 32)
    assert len(browser.metadata()) == 12


def test_empty_result_is_a_message(browser):
    browser.search(PatientName="NOBODY*")
    browser.wait(30)
    assert browser.status.kind == "info"
    assert "no studies" in browser.message and "PatientName=NOBODY*" in browser.message
    assert len(browser.studies.page_rows) == 0
    assert "no studies" in browser.studies._page_label.value


@pytest.mark.parametrize(("field", "value", "words"), [
    ("modality", "C-T", "not a modality code"),
    ("accession", "A" * 17, "too long"),
    ("patient_id", "A\\B", "backslash"),
])
def test_bad_form_input_is_shown_in_words(browser, field, value, words):
    getattr(browser.query, field).value = value
    browser.query.search_button.click()  # as a user does: nothing may raise into the cell
    browser.wait(30)
    assert browser.status.kind == "error"
    assert words in browser.message


def test_reversed_dates_are_refused_before_searching(browser):
    browser.query.date_from.value = dt.date(2024, 5, 1)
    browser.query.date_to.value = dt.date(2024, 4, 1)
    browser.query.search_button.click()
    assert browser.status.kind == "error" and "reversed" in browser.message
    with pytest.raises(InvalidFilter, match="not a date"):
        browser.search(StudyDate="2024-13-45")


def test_retrieve_to_a_folder_and_to_the_workspace_store(browser, widget_server, widget_workspace, tmp_path):
    ct = widget_server.ct
    study, series = str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID)
    browser.select_studies([study])
    assert list(browser.selected_studies["StudyInstanceUID"]) == [study]
    browser.retrieve(to=tmp_path / "downloads")
    browser.wait(60)
    panel = browser.retrieve_panel
    assert panel.progress.value == panel.progress.max == 12
    assert panel.progress.bar_style == "success"
    assert browser.status.kind == "ok" and "12 retrieved" in browser.message
    assert len(list((tmp_path / "downloads" / study / series).glob("*.dcm"))) == 12

    # The panel's default destination: the workspace store.
    browser.retrieve_panel.button.click()
    browser.wait(60)
    assert panel.progress.value == panel.progress.max == 12
    local = dw.connect(progress=False)
    found = local.studies(StudyInstanceUID=study)
    assert int(found["NumberOfStudyRelatedInstances"][0]) == 12
    # Again: everything is present, nothing to copy, the bar still ends full.
    browser.retrieve()
    browser.wait(60)
    assert panel.progress.value == panel.progress.max and set(panel.last_result["status"]) == {"present"}

    # Series checked in the series list are retrieved instead of whole studies.
    browser.open_study(study)
    browser.wait(60)
    browser.select_series([series])
    browser.retrieve_panel.destination.value = "Folder"
    browser.retrieve_panel.folder.value = str(tmp_path / "by-series")
    browser.retrieve_panel.button.click()
    browser.wait(60)
    assert len(list((tmp_path / "by-series" / study / series).glob("*.dcm"))) == 12


def test_retrieving_the_workspace_into_itself_is_refused(widget_workspace, ct_series):
    local = dw.connect(progress=False)
    local.store(ct_series[:2])
    browser = dw.Browser()
    browser.wait(30)
    browser.select_studies([str(ct_series[0].StudyInstanceUID)])
    browser.retrieve_panel.button.click()
    assert browser.status.kind == "error" and "already in the workspace store" in browser.message
    browser.close()


def test_retrieve_cancel_stops_and_rerun_resumes(browser, widget_server, tmp_path, monkeypatch):
    original_update = actions.WidgetProgressBar.update

    def update_then_cancel(self, n=1):
        original_update(self, n)
        self.panel.cancel()  # as if Cancel were pressed after the first instance arrived

    monkeypatch.setattr(actions.WidgetProgressBar, "update", update_then_cancel)
    studies = list(browser.studies.data["StudyInstanceUID"])
    browser.select_studies(studies)
    browser.studies.sort("PatientID")  # sorting keeps the checked rows
    assert len(browser.selected_studies) == 3
    folder = tmp_path / "partial"
    browser.retrieve(to=folder)
    browser.wait(60)
    panel = browser.retrieve_panel
    total = 12 + 1 + (1 if widget_server.colour_path else 0)
    copied = len(list(folder.rglob("*.dcm")))
    assert 1 <= copied < total
    assert panel.progress.bar_style == "warning"
    assert set(panel.last_result["status"]) <= {"retrieved", "cancelled"}

    monkeypatch.setattr(actions.WidgetProgressBar, "update", original_update)
    browser.retrieve(to=folder)
    browser.wait(60)
    assert len(list(folder.rglob("*.dcm"))) == total
    assert panel.progress.value == panel.progress.max and panel.progress.bar_style == "success"
    assert set(panel.last_result["status"]) == {"present", "retrieved"}


def test_upload_a_folder_with_progress(fresh_server, widget_workspace, tmp_path):
    series = samples.generate_ct_series(n_slices=6, rows=16, columns=16, patient_id="UPLOAD-1")
    folder = tmp_path / "to-upload"
    samples.write_series(series, folder / "ct")
    (folder / "notes.txt").write_text("not DICOM")
    browser = dw.Browser(fresh_server.dicomweb_url)
    browser.wait(30)
    assert "no studies" in browser.message
    browser.upload_panel.path.value = str(folder)
    browser.upload_panel.button.click()
    browser.wait(60)
    panel = browser.upload_panel
    assert panel.progress.value == panel.progress.max == 6
    counts = panel.last_result["status"].value_counts().to_dict()
    assert counts == {"stored": 6, "skipped": 1}
    assert "6 stored" in browser.message and "1 skipped" in browser.message
    browser.search(PatientID="UPLOAD-1")
    browser.wait(30)
    assert list(browser.studies.data["StudyInstanceUID"]) == [str(series[0].StudyInstanceUID)]
    browser.close()


def test_upload_cancel_stops_before_the_next_batch(fresh_server, widget_workspace, tmp_path, monkeypatch):
    series = samples.generate_ct_series(n_slices=8, rows=8, columns=8, patient_id="UPLOAD-2")
    paths = samples.write_series(series, tmp_path / "ct")
    original_update = actions.WidgetProgressBar.update

    def update_then_cancel(self, n=1):
        original_update(self, n)
        self.panel.cancel()

    monkeypatch.setattr(actions.WidgetProgressBar, "update", update_then_cancel)
    browser = dw.Browser(fresh_server.dicomweb_url)
    browser.wait(30)
    browser.upload_panel.run(browser.client, paths, batch_size=2)
    browser.wait(60)
    counts = browser.upload_panel.last_result["status"].value_counts().to_dict()
    assert counts == {"stored": 2, "cancelled": 6}  # the first batch was on the wire; the rest never left
    assert browser.upload_panel.progress.bar_style == "warning"
    assert len(dw.connect(fresh_server.dicomweb_url, progress=False).instances()) == 2
    browser.close()


def test_upload_without_anything_to_upload_says_so(browser):
    browser.upload_panel.button.click()
    assert browser.status.kind == "error" and "nothing to upload" in browser.message
    browser.upload_panel.path.value = "/no/such/folder"
    browser.upload_panel.button.click()
    assert "no such file or folder" in browser.message


def test_thousand_studies_render_only_one_page(widget_workspace):
    datasets = []
    for i in range(1000):
        datasets += samples.generate_ct_series(n_slices=1, rows=4, columns=4, patient_name=f"Many^P{i:04d}",
                                               patient_id=f"MANY{i:04d}", study_date=f"2023{1 + i % 12:02d}{1 + i % 28:02d}")
    local = dw.connect(progress=False)
    assert set(local.store(datasets, batch_size=250)["status"]) == {"stored"}
    browser = dw.Browser(page_size=25)
    browser.wait(60)
    table = browser.studies
    assert len(table.data) == 1000 and table.page_count == 40
    cells_per_row = 2 + len(table.columns)
    assert len(table._grid.children) == cells_per_row * 26  # heading + 25 rows, whatever the result size
    table.go_to(39)
    assert len(table.page_rows) == 25
    assert "976&ndash;1000 of 1000 studies &middot; page 40 of 40" in table._page_label.value
    table.sort("PatientName", ascending=False)
    assert table.page == 0 and table.page_rows.iloc[0]["PatientName"] == "Many^P0999"
    table.sort("StudyDate")
    dates = list(table.view["StudyDate"])
    assert dates == sorted(dates)
    # Checked rows survive paging; the page checkbox checks the whole page.
    table._page_checkbox.value = True
    table.go_to(1)
    table._rows[0][0].value = True
    assert len(browser.selected_studies) == 26
    table.set_page_size(100)
    assert table.page_count == 10 and len(table._grid.children) == cells_per_row * 101
    browser.close()


class NoRenderingSource:
    """A real server's source that answers 406 to /rendered and /thumbnail, as servers without rendering do."""

    def __init__(self, source):
        self._source = source

    def __getattr__(self, name):
        return getattr(self._source, name)

    def retrieve_rendered(self, *args, **kwargs):
        raise dw.errors.NotAcceptable("GET .../rendered answered 406", status=406)

    retrieve_thumbnail = retrieve_rendered


def test_thumbnail_rendered_in_the_kernel_when_the_server_cannot_render(widget_server, widget_workspace):
    from dicomweb_nb.client import Client
    from dicomweb_nb.pixels.voi import Window

    web = dw.connect(widget_server.url, progress=False)
    client = Client(NoRenderingSource(web.source), progress=False)
    ct = widget_server.ct
    browser = dw.Browser(client)
    browser.wait(60)
    browser.open_study(str(ct[0].StudyInstanceUID))
    browser.wait(60)
    series = str(ct[0].SeriesInstanceUID)
    assert browser.series_list.thumbnail_errors == {}
    thumbnail = png_pixels(browser.series_list.thumbnails[series])
    # The middle instance (the 7th of 12 by InstanceNumber), its own 40/400 window, scaled from 32 to 96 pixels.
    assert thumbnail.shape == (96, 96)
    small = thumbnail[1::3, 1::3].astype(int)
    expected = windowed(ct[6].pixel_array.astype(float) - 1024, Window(40, 400)).astype(int)
    assert np.abs(small - expected).mean() < 12
    browser.close()

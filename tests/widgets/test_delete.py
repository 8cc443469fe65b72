"""The browser's Delete panel against our server: it asks first, "No" deletes nothing, "Yes" deletes the
checked studies (or the checked series of the opened study) from the server and from the table."""

from __future__ import annotations

import pytest
import requests

import dicomweb_nb as dw
from dicomweb_nb import samples
from tests.fixtures.ourserver import start_standalone

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def loaded(tmp_path, widget_workspace):
    """Our server (a store of its own) with two studies, the first of two series."""
    server = start_standalone(tmp_path)
    first = samples.generate_ct_series(3, rows=16, columns=16, patient_id="DEL-A", patient_name="Delete^A")
    second_series = samples.generate_ct_series(2, rows=16, columns=16, patient_id="DEL-A", patient_name="Delete^A",
                                               study_uid=first[0].StudyInstanceUID, series_number=2)
    other = samples.generate_ct_series(2, rows=16, columns=16, patient_id="DEL-B", patient_name="Delete^B")
    with dw.connect(server.dicomweb_url, progress=False) as client:
        assert (client.store(first + second_series + other).status == "stored").all()
    yield server, first, second_series, other
    server.stop()


@pytest.fixture
def browser(loaded):
    server = loaded[0]
    b = dw.Browser(server.dicomweb_url, image_size=None)
    assert b.wait(60)
    yield b
    b.close()


def on_server(server, path: str) -> int:
    return requests.get(f"{server.dicomweb_url}/{path}", timeout=30).status_code


def test_delete_asks_first_and_no_deletes_nothing(browser, loaded):
    server, first, _second, _other = loaded
    browser.select_studies([str(first[0].StudyInstanceUID)])
    browser.delete_panel.button.click()
    assert browser.delete_panel.asking
    assert browser.delete_panel.confirmation.layout.display == "flex"
    question = browser.delete_panel.question.value
    assert "Delete 1 study from" in question and "cannot be undone" in question
    assert "confirm the deletion" in browser.message
    browser.delete_panel.keep_button.click()
    assert not browser.delete_panel.asking and browser.delete_panel.confirmation.layout.display == "none"
    assert browser.message == "nothing was deleted"
    assert on_server(server, f"studies/{first[0].StudyInstanceUID}/metadata") == 200
    with pytest.raises(RuntimeError, match="no deletion to confirm"):
        browser.delete_panel.confirm()


def test_yes_deletes_the_checked_studies_from_the_server_and_the_table(browser, loaded):
    server, first, _second, other = loaded
    assert len(browser.studies.data) == 2
    browser.select_studies([str(first[0].StudyInstanceUID)])
    browser.delete()
    browser.delete_panel.confirm_button.click()
    assert browser.wait(60)
    assert browser.status.kind == "ok" and browser.message.startswith("deleted 1 study from "), browser.message
    assert on_server(server, f"studies/{first[0].StudyInstanceUID}/metadata") == 404
    assert on_server(server, f"studies/{other[0].StudyInstanceUID}/metadata") == 200
    assert list(browser.studies.data["StudyInstanceUID"]) == [str(other[0].StudyInstanceUID)]
    assert browser.delete_panel.last_result == [(str(first[0].StudyInstanceUID), None, None)]


def test_checked_series_of_the_opened_study_go_and_its_series_list_is_read_again(browser, loaded):
    server, first, second, _other = loaded
    study = str(first[0].StudyInstanceUID)
    browser.open_study(study)
    assert browser.wait(60)
    browser.select_series([str(second[0].SeriesInstanceUID)])
    future = browser.delete(confirm=True)  # from the notebook: no question
    assert future is not None and browser.wait(60)
    assert browser.message.startswith("deleted 1 series from "), browser.message
    assert on_server(server, f"studies/{study}/series/{second[0].SeriesInstanceUID}/metadata") == 404
    assert on_server(server, f"studies/{study}/series/{first[0].SeriesInstanceUID}/metadata") == 200
    assert list(browser.series_list.data["SeriesInstanceUID"]) == [str(first[0].SeriesInstanceUID)]


def test_a_failed_delete_is_a_message(browser, loaded, tmp_path):
    server, first, _second, _other = loaded
    browser.select_studies([str(first[0].StudyInstanceUID)])
    requests.delete(f"{server.dicomweb_url}/studies/{first[0].StudyInstanceUID}", timeout=30)  # someone else was quicker
    browser.delete(confirm=True)
    assert browser.wait(60)
    assert browser.status.kind == "error" and "deleted nothing" in browser.message and "1 failed" in browser.message
    assert "not in this store" in browser.message
    browser.select_studies([])
    browser.studies.active_key = None
    browser.delete_panel.button.click()  # nothing checked, nothing open
    assert browser.status.kind == "error" and "nothing to delete" in browser.message


def test_a_read_only_server_refusal_is_told_with_its_reason(tmp_path, widget_workspace):
    """The server's own reason reaches the status line (not a guess about credentials)."""
    folder = tmp_path / "store"
    study = samples.generate_ct_series(2, rows=16, columns=16, patient_id="DEL-RO")
    with dw.connect(store=folder, progress=False) as local:
        assert (local.store(study).status == "stored").all()
    server = start_standalone(tmp_path, folder, "-c", "read_only=true")
    browser = dw.Browser(server.dicomweb_url, image_size=None)
    try:
        assert browser.wait(60)
        browser.select_studies([str(study[0].StudyInstanceUID)])
        browser.delete(confirm=True)
        assert browser.wait(60)
        assert browser.status.kind == "error" and "deleted nothing" in browser.message
        assert "403 Forbidden): this server is read-only (c.DicomWeb.read_only)" in browser.message
        assert "credentials" not in browser.message
        assert on_server(server, f"studies/{study[0].StudyInstanceUID}/metadata") == 200
    finally:
        browser.close()
        server.stop()

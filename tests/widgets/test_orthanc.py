"""dw.Browser against a real Orthanc (Debian's Orthanc 1.10 + DICOMweb plugin 1.7): the widgets only use
the client, so they must work there as with our server - including Orthanc's lack of /thumbnail, its
literal QIDO values, and its HTTP authentication."""

from __future__ import annotations

import numpy as np
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.pixels.voi import CT_WINDOW_PRESETS, Window

from .helpers import png_pixels, widget_state_text, windowed

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def orthanc_ct(orthanc):
    """A CT series of our own in the session's Orthanc (other tests' data stays as it is)."""
    series = samples.generate_ct_series(n_slices=10, rows=32, columns=32, patient_name="Orthanc^Widget",
                                        patient_id="ORTHANC-WIDGET-1", study_date="20210607")
    with dw.connect(orthanc.dicomweb_url, progress=False) as client:
        assert set(client.store(series)["status"]) == {"stored"}
    return series


def test_search_thumbnails_viewer_and_retrieve_on_orthanc(orthanc, orthanc_ct, widget_workspace, tmp_path):
    browser = dw.Browser(orthanc.dicomweb_url, image_size=None)
    browser.wait(60)
    assert browser.status.kind in ("ok", "info"), browser.message
    browser.search(PatientName="Orthanc^Wid*", StudyDate=("20210601", "20210630"))
    browser.wait(60)
    assert list(browser.studies.data["PatientID"]) == ["ORTHANC-WIDGET-1"]
    study, series = str(orthanc_ct[0].StudyInstanceUID), str(orthanc_ct[0].SeriesInstanceUID)
    browser.open_study(study)
    browser.wait(60)
    assert list(browser.series_list.data["SeriesInstanceUID"]) == [series]
    thumbnail = png_pixels(browser.series_list.thumbnails[series])
    assert thumbnail.std() > 10 and max(thumbnail.shape[:2]) <= 128
    assert browser.series_list.thumbnail_errors == {}

    browser.view_series(series)
    browser.wait(60)
    viewer = browser.viewer
    assert viewer.frame_count == 10
    k = viewer.frame_index
    hu = orthanc_ct[k].pixel_array.astype(float) - 1024
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(hu, Window(40, 400)))
    viewer.set_preset("Lung")
    viewer.wait(30)
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(hu, CT_WINDOW_PRESETS["lung"]))

    browser.retrieve(to=tmp_path / "from-orthanc")
    browser.wait(60)
    panel = browser.retrieve_panel
    assert panel.progress.value == panel.progress.max == 10 and panel.progress.bar_style == "success"
    assert len(list((tmp_path / "from-orthanc").rglob("*.dcm"))) == 10
    browser.retrieve()  # into the workspace store
    browser.wait(60)
    assert len(dw.connect(progress=False).instances(study)) == 10
    browser.close()


def test_orthanc_with_authentication(authenticated_orthanc, tmp_path, widget_workspace, ct_series):
    server = authenticated_orthanc
    username, password = server.auth
    browser = dw.Browser(server.dicomweb_url)
    browser.wait(60)
    assert browser.status.kind == "error" and "401" in browser.message

    browser.add_server("orthanc-auth", server.dicomweb_url, username=username, password=password)
    browser.wait(60)
    assert browser.status.kind == "info" and "no studies" in browser.message
    browser.upload(samples.write_series(ct_series, tmp_path / "upload"))
    browser.wait(60)
    panel = browser.upload_panel
    assert panel.progress.value == panel.progress.max == len(ct_series)
    assert set(panel.last_result["status"]) == {"stored"}
    browser.search()
    browser.wait(60)
    assert len(browser.studies.data) == 1
    assert password not in widget_state_text(browser)
    browser.close()

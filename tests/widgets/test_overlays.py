"""Segmentation overlays in the Viewer (colour from the SEG, toggles, opacity) and SEG/SR series listed
next to their images in the Browser, with pixels checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.pixels.voi import DisplayError, Window
from tests.fixtures.ourserver import start_standalone

from .helpers import png_pixels, walk, windowed

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(scope="module")
def overlay_server(tmp_path_factory):
    """A server holding a CT series, a two-segment SEG of it (overlapping segments) and a measurement report."""
    server = start_standalone(tmp_path_factory.mktemp("overlays"))
    ct = samples.generate_ct_series(n_slices=6, rows=32, columns=32, patient_id="OVERLAY-1")
    with dw.connect(server.dicomweb_url, progress=False) as pacs:
        assert (pacs.store(ct).status == "stored").all()
        study, series = str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID)
        masks = np.zeros((2, 6, 32, 32), bool)
        masks[0, 3, 4:12, 4:12] = True
        masks[1, 3, 8:20, 8:20] = True  # overlaps the first on 8..11 x 8..11
        server.seg = pacs.store_segmentation(masks, (study, series), ["red", "blue"], colours=["#ff0000", "#0000ff"])
        server.report = pacs.store_measurements(pd.DataFrame({"name": ["Volume"], "value": [1.0], "unit": ["mm3"],
                                                               "segment": [1]}), (study, series), segmentation=server.seg)
    server.ct, server.masks, server.study, server.series = ct, masks, study, series
    yield server
    server.stop()


def _mix(base, colour, alpha: float) -> np.ndarray:
    return np.asarray(base, np.float32) * (1 - alpha) + np.asarray(colour, np.float32) * alpha


def _blend(grey, colour, alpha: float, *more) -> np.ndarray:
    """Display values of layers blended in order, rounded once at the end."""
    out = _mix(grey, colour, alpha)
    for other in more:
        out = _mix(out, other, alpha)
    return np.clip(np.rint(out), 0, 255)


def test_viewer_overlays_the_segmentations_of_the_shown_series(overlay_server):
    with dw.connect(overlay_server.dicomweb_url, progress=False) as pacs:
        viewer = dw.Viewer(pacs, overlay_server.study, overlay_server.series, size=None)
        assert viewer.wait(60)
        for _ in range(50):  # the SEG is found and read after the series
            if viewer.segmentations:
                break
            viewer.wait(5)
        assert len(viewer.segmentations) == 1 and viewer.overlay_panel.layout.display == "flex"
        labels = [row.children[1].description for row in viewer.segment_toggles.children]
        assert labels == ["red", "blue"]
        viewer.show_frame(3)  # InstanceNumber order = slice order for the generated series
        viewer.wait(30)
        shown = png_pixels(viewer.image.value).astype(np.float32)
        grey = windowed(overlay_server.ct[3].pixel_array.astype(np.float64) - 1024, Window(40, 400))
        assert shown.shape == (32, 32, 3)
        only_red, both, only_blue, none = (5, 5), (9, 9), (15, 15), (25, 25)
        np.testing.assert_array_equal(shown[only_red], _blend(grey[only_red], RED, 0.5))
        np.testing.assert_array_equal(shown[only_blue], _blend(grey[only_blue], BLUE, 0.5))
        np.testing.assert_array_equal(shown[both], _blend(grey[both], RED, 0.5, BLUE))
        assert (shown[none] == grey[none]).all()
        # Hiding a segment and changing the opacity change exactly those pixels.
        viewer.set_segment_visible("blue", False)
        viewer.overlay_opacity.value = 0.25
        viewer.wait(30)
        shown = png_pixels(viewer.image.value).astype(np.float32)
        np.testing.assert_array_equal(shown[both], _blend(grey[both], RED, 0.25))
        assert (shown[only_blue] == grey[only_blue]).all()
        # Other slices carry no segment: the plain image.
        viewer.show_frame(0)
        viewer.wait(30)
        assert png_pixels(viewer.image.value).ndim == 2
        viewer.close()


def test_overlay_on_a_volume_and_grid_checks(overlay_server):
    with dw.connect(overlay_server.dicomweb_url, progress=False) as pacs:
        seg = pacs.segmentation(**{"study": overlay_server.seg["StudyInstanceUID"],
                                   "series": overlay_server.seg["SeriesInstanceUID"],
                                   "instance": overlay_server.seg["SOPInstanceUID"]})
        volume = pacs.volume(overlay_server.study, overlay_server.series)
    viewer = dw.Viewer(volume, size=None)
    viewer.add_segmentation(seg)
    viewer.show_frame(3)
    viewer.wait(30)
    assert viewer.displayed.shape == (32, 32, 3) and tuple(viewer.displayed[5, 5]) != tuple(viewer.displayed[25, 25])
    with pytest.raises(DisplayError, match="grid"):
        dw.Viewer(np.zeros((2, 8, 8)), size=None).add_segmentation(seg)
    viewer.close()


def test_browser_lists_seg_and_sr_series_next_to_their_images(overlay_server):
    with dw.connect(overlay_server.dicomweb_url, progress=False) as pacs:
        browser = dw.Browser(pacs)
        assert browser.wait(60)
        browser.open_study(overlay_server.study)
        assert browser.wait(60)
        order = browser.series_list.data["SeriesInstanceUID"].tolist()
        assert order == [overlay_server.series, overlay_server.seg["SeriesInstanceUID"],
                         overlay_server.report["SeriesInstanceUID"]]
        assert browser.series_list.derived_of == {overlay_server.seg["SeriesInstanceUID"]: overlay_server.series,
                                                  overlay_server.report["SeriesInstanceUID"]: overlay_server.series}
        texts = [w.value for w in walk(browser.series_list) if "dwnb-series-text" in getattr(w, "_dom_classes", ())]
        assert any("SEG" in t and "of #1" in t for t in texts)
        browser.close()

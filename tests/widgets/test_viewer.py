"""The Viewer alone: frames of a series from our server, windowing checked pixel by pixel, multi-frame,
colour, volumes and arrays."""

from __future__ import annotations

import numpy as np
import pytest

import dicomweb_nb as dw
from dicomweb_nb.pixels.voi import CT_WINDOW_PRESETS, DisplayError, Window

from .helpers import png_pixels, windowed


@pytest.fixture
def client(widget_server):
    with dw.connect(widget_server.url, progress=False) as client:
        yield client


def ct_uids(widget_server) -> tuple[str, str]:
    first = widget_server.ct[0]
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID)


def hu(ds) -> np.ndarray:
    """Modality values (HU) of a generated CT slice."""
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_series_opens_on_the_middle_frame_with_the_image_window(widget_server, client):
    study, series = ct_uids(widget_server)
    viewer = dw.Viewer(client, study, series, size=None)
    assert viewer.wait(60)
    assert viewer.frame_count == 12
    assert viewer.frame_slider.max == 12
    assert viewer.frame_slider.value == 6  # the middle of the stack
    shown = png_pixels(viewer.image.value)
    assert shown.shape == (32, 32)
    # Instances are ordered by InstanceNumber: frame 6 is the sixth generated slice, with its own 40/400 window.
    expected = windowed(hu(widget_server.ct[5]), Window(40, 400))
    np.testing.assert_array_equal(shown, expected)
    assert viewer.preset_buttons.value == "Image"
    assert (viewer.center_slider.value, viewer.width_slider.value) == (40, 400)
    assert "Widget^CT" in viewer.tags.value and "WIDGET-CT" in viewer.tags.value
    assert "frame 6 of 12" in viewer.caption.value
    assert viewer.status.kind != "error", viewer.status.text


def test_window_presets_and_free_window_change_the_pixels_as_the_formulas_say(widget_server, client):
    study, series = ct_uids(widget_server)
    viewer = dw.Viewer(client, study, series, size=None)
    viewer.wait(60)
    values = hu(widget_server.ct[5])
    air = values < -500  # the phantom: water sphere (about 0 HU) in air (about -1000 HU)

    viewer.set_preset("Lung")
    viewer.wait(30)
    lung = png_pixels(viewer.image.value)
    np.testing.assert_array_equal(lung, windowed(values, CT_WINDOW_PRESETS["lung"]))
    assert (viewer.center_slider.value, viewer.width_slider.value) == (-600, 1500)

    viewer.set_preset("soft tissue")
    viewer.wait(30)
    soft = png_pixels(viewer.image.value)
    np.testing.assert_array_equal(soft, windowed(values, CT_WINDOW_PRESETS["soft_tissue"]))
    # Air is black in a soft-tissue window but grey in a lung window; water the other way round.
    assert soft[air].max() == 0 and lung[air].mean() > 40
    assert soft[~air].mean() > 80 and lung[~air].mean() > soft[~air].mean()

    viewer.set_preset("Bone")
    viewer.wait(30)
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(values, CT_WINDOW_PRESETS["bone"]))

    viewer.set_window(-20, 60)
    viewer.wait(30)
    assert viewer.preset_buttons.value == "Custom"
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(values, Window(-20, 60)))

    # Moving a slider is a free window too.
    viewer.width_slider.value = 30
    viewer.wait(30)
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(values, Window(-20, 30)))

    viewer.set_preset("Auto")  # the frame's full range, lowest value black, highest white
    viewer.wait(30)
    auto = png_pixels(viewer.image.value)
    assert auto.min() == 0 and auto.max() == 255
    assert auto[values == values.min()].max() == 0 and auto[values == values.max()].min() == 255


def test_frame_slider_moves_through_the_series(widget_server, client):
    study, series = ct_uids(widget_server)
    viewer = dw.Viewer(client, study, series, size=None)
    viewer.wait(60)
    for index in (0, 11, 3):
        viewer.show_frame(index)
        viewer.wait(30)
        assert viewer.frame_slider.value == index + 1
        np.testing.assert_array_equal(png_pixels(viewer.image.value),
                                      windowed(hu(widget_server.ct[index]), Window(40, 400)))
        assert f">{index + 1}</td>" in viewer.tags.value  # InstanceNumber beside the image
    # Quick slider moves: only the last one needs to be shown.
    for value in range(1, 13):
        viewer.frame_slider.value = value
    viewer.wait(30)
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(hu(widget_server.ct[11]), Window(40, 400)))
    frames = viewer.frames()
    assert frames.shape == (12, 32, 32)
    np.testing.assert_array_equal(frames[4], widget_server.ct[4].pixel_array)
    volume = viewer.volume()
    assert volume.shape == (12, 32, 32)
    np.testing.assert_allclose(volume.array[0], hu(widget_server.ct[0]))


def test_multiframe_instance_has_one_slider_step_per_frame(widget_server, client):
    ds = widget_server.multiframe
    viewer = dw.Viewer(client, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), size=None)
    viewer.wait(60)
    assert viewer.frame_count == 5
    stored = ds.pixel_array  # (5, 16, 20): frame k is 100 (k + 1) + column ramp
    for index in range(5):
        viewer.show_frame(index)
        viewer.wait(30)
        shown = png_pixels(viewer.image.value)
        assert shown.shape == (16, 20)
        # No window in the file: the frame's full range, so each row runs from black to white.
        assert (shown[:, 0] == 0).all() and (shown[:, -1] == 255).all()
        assert (np.diff(shown.astype(int), axis=1) >= 0).all()
        assert "<td>" + str(index + 1) + "</td>" in viewer.tags.value  # the frame number row
    viewer.set_window(300, 200)
    viewer.wait(30)
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(stored[4], Window(300, 200)))
    viewer.show_frame(0)
    viewer.wait(30)
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(stored[0], Window(300, 200)))
    np.testing.assert_array_equal(viewer.frames(), stored)


def test_colour_multiframe_jpeg(widget_server, client):
    if widget_server.colour_path is None:
        pytest.skip("pydicom's examples_ybr_color.dcm is not bundled")
    import pydicom

    ds = pydicom.dcmread(widget_server.colour_path)
    viewer = dw.Viewer(client, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), size=None)
    viewer.wait(60)
    assert viewer.frame_count == int(ds.NumberOfFrames)
    shown = png_pixels(viewer.image.value)
    assert shown.shape == (ds.Rows, ds.Columns, 3)
    reference = ds.pixel_array[viewer.frame_index]  # pydicom decodes JPEG YBR to RGB
    assert np.abs(shown.astype(int) - reference.astype(int)).mean() < 2
    assert viewer.center_slider.disabled and viewer.width_slider.disabled  # no window for colour


def test_viewer_of_a_volume_and_of_an_array(widget_server, client):
    study, series = ct_uids(widget_server)
    volume = client.volume(study, series, progress=False)
    viewer = dw.Viewer(volume, size=None)
    viewer.wait(30)
    assert viewer.frame_count == 12 and viewer.preset_buttons.value == "Auto"
    viewer.set_preset("Bone")
    viewer.wait(30)
    k = viewer.frame_index
    np.testing.assert_array_equal(png_pixels(viewer.image.value), windowed(volume.array[k], CT_WINDOW_PRESETS["bone"]))
    assert viewer.volume() is volume
    assert "Spacing" in viewer.tags.value

    array = np.linspace(0, 1, 3 * 8 * 10, dtype=np.float32).reshape(3, 8, 10)
    plain = dw.Viewer(array, size=64)
    plain.wait(30)
    shown = png_pixels(plain.image.value)
    assert max(shown.shape) == 64  # scaled to the requested size, aspect ratio kept
    assert shown.shape == (51, 64)
    np.testing.assert_array_equal(plain.frames([2]), array[[2]])
    with pytest.raises(DisplayError):
        plain.volume()


def test_bad_arguments_are_clear_errors(widget_server, client):
    study, series = ct_uids(widget_server)
    with pytest.raises(ValueError, match="study and series"):
        dw.Viewer(client, study)
    viewer = dw.Viewer(client, study, series, size=None)
    viewer.wait(60)
    with pytest.raises(ValueError, match="no window preset 'nope'"):
        viewer.set_preset("nope")
    with pytest.raises(DisplayError, match="at least 1"):
        viewer.set_window(0, 0)
    with pytest.raises(IndexError, match="outside"):
        viewer.show_frame(12)
    with pytest.raises(DisplayError, match="volume is"):
        dw.Viewer(np.zeros((2, 3, 4, 5)))


def test_missing_series_is_a_message_not_a_traceback(widget_server, client):
    study, _ = ct_uids(widget_server)
    viewer = dw.Viewer(client, study, "1.2.3.4.5.6.7.8.9")
    viewer.wait(30)
    assert viewer.status.kind == "error"
    assert "Not found" in viewer.status.text or "404" in viewer.status.text


def test_switching_series_quickly_shows_only_the_last_one(widget_server, client):
    ct_study, ct_series = ct_uids(widget_server)
    mf = widget_server.multiframe
    viewer = dw.Viewer(size=None)
    for _ in range(3):
        viewer.show_series(client, ct_study, ct_series)
        viewer.show_frame(0) if viewer.frame_count else None
        viewer.show_series(client, str(mf.StudyInstanceUID), str(mf.SeriesInstanceUID))
    viewer.wait(60)
    assert viewer.status.kind != "error", viewer.status.text
    assert viewer.frame_count == 5 and viewer.series == str(mf.SeriesInstanceUID)
    assert png_pixels(viewer.image.value).shape == (16, 20)
    np.testing.assert_array_equal(viewer.frame_array, mf.pixel_array[viewer.frame_index])
    assert {token for token, _ in viewer._cache} == {viewer._source_token}

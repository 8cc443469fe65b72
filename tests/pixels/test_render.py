"""Rendered images decode with Pillow at the right size and with the right pixels; parameters are validated."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dicomweb_nb.dicom.mediatypes import NotAcceptable
from dicomweb_nb.pixels.render import (
    RenderParameterError,
    Viewport,
    render,
    render_frames,
    render_image,
    thumbnail,
)
from dicomweb_nb.pixels.renderparams import parse_rendered_params
from dicomweb_nb.pixels.voi import ImageAttributes, Window, to_display
from dicomweb_nb.server.renderparams import parse_wado_uri_params
from tests.fixtures.data import read_dicom as read


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def ct():
    ds = read("CT_small.dcm")
    return ds.pixel_array, ImageAttributes.from_dataset(ds)


@pytest.fixture(scope="module")
def palette():
    ds = read("examples_palette.dcm")  # 800 x 350
    return ds.pixel_array, ImageAttributes.from_dataset(ds)


RAMP = np.arange(4096, dtype=np.uint16).reshape(64, 64)
RAMP_ATTRS = ImageAttributes(64, 64, bits_stored=12, rescale_intercept=-1024.0)


@pytest.mark.parametrize("media_type, fmt", [("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/gif", "GIF")])
def test_each_media_type_decodes_at_full_size(ct, palette, media_type, fmt):
    for frame, attrs in (ct, palette):
        image = decode(render(frame, attrs, media_type=media_type))
        assert image.format == fmt
        assert image.size == (attrs.columns, attrs.rows)
    assert decode(render(*ct, media_type="image/png")).mode == "L"
    assert decode(render(*palette, media_type="image/png")).mode == "RGB"


def test_png_pixels_are_the_windowed_values():
    window = Window(1000, 200, "LINEAR_EXACT")
    image = np.asarray(decode(render(RAMP, RAMP_ATTRS, media_type="image/png", window=window)))
    np.testing.assert_array_equal(image, to_display(RAMP, RAMP_ATTRS, window=window))
    flat = image.reshape(-1)
    assert (flat[900 + 1024], flat[950 + 1024], flat[1000 + 1024], flat[1100 + 1024]) == (0, 64, 128, 255)
    # the same through a parsed query, function name in any case
    options = parse_rendered_params({"window": ["1000,200,Linear-Exact"]})
    np.testing.assert_array_equal(
        np.asarray(decode(render(RAMP, RAMP_ATTRS, media_type="image/png", options=options))), image)


def test_jpeg_pixels_are_close_to_the_windowed_values(ct):
    frame, attrs = ct
    expected = to_display(frame, attrs, window=Window(40, 400)).astype(int)
    got = np.asarray(decode(render(frame, attrs, window=(40, 400, "linear"), quality=100))).astype(int)
    assert np.abs(got - expected).mean() < 1.0


@pytest.mark.parametrize(
    "viewport, size",
    [((64, 64), (64, 64)), ((64, 32), (32, 32)), ((300, 100), (100, 100)), ((512, 1024), (512, 512)),
     ((None, 50), (50, 50))],
)
def test_viewport_fits_a_square_image_keeping_its_aspect(ct, viewport, size):
    assert decode(render(*ct, media_type="image/png", viewport=viewport)).size == size


def test_viewport_fits_a_wide_image(palette):
    frame, attrs = palette  # 800 x 350
    assert decode(render(frame, attrs, viewport=(200, 200))).size == (200, 88)
    assert decode(render(frame, attrs, viewport=(400, 100))).size == (229, 100)
    padded = decode(render(frame, attrs, media_type="image/png", viewport=(200, 200), fill_viewport=True))
    assert padded.size == (200, 200)
    pixels = np.asarray(padded)
    assert pixels[:50].max() == 0 and pixels[-50:].max() == 0  # black bands above and below
    assert pixels[100].max() > 0


def test_viewport_source_region_and_flips_are_exact_in_png():
    full = to_display(RAMP, RAMP_ATTRS)
    cases = {
        (20, 10, 5, 7, 20, 10): full[7:17, 5:25],
        (20, 10, 5, 7, -20, 10): full[7:17, 5:25][:, ::-1],
        (20, 10, 5, 7, 20, -10): full[7:17, 5:25][::-1, :],
        (20, 10, 5, 7, -20, -10): full[7:17, 5:25][::-1, ::-1],
        (64, 64, 0, 0, -64, -64): full[::-1, ::-1],
        (4, 64, 60, 0, 100, 100): full[:, 60:],  # spans past the edge are clipped
    }
    for viewport, expected in cases.items():
        got = np.asarray(decode(render(RAMP, RAMP_ATTRS, media_type="image/png", viewport=viewport)))
        np.testing.assert_array_equal(got, expected, err_msg=str(viewport))


def test_viewport_parameter_from_the_query_with_defaults():
    options = parse_rendered_params({"viewport": ["32,32,,,-64,"]})
    assert options.viewport == Viewport(32, 32, 0, 0, -64, None)
    full = to_display(RAMP, RAMP_ATTRS)
    got = np.asarray(decode(render(RAMP, RAMP_ATTRS, media_type="image/png", options=options)))
    assert got.shape == (32, 32)
    big = np.asarray(decode(render(RAMP, RAMP_ATTRS, media_type="image/png", viewport=(64, 64, 0, 0, -64, 64))))
    np.testing.assert_array_equal(big, full[:, ::-1])


def test_source_region_outside_the_image_is_refused():
    with pytest.raises(RenderParameterError, match="viewport: source region origin") as info:
        render(RAMP, RAMP_ATTRS, viewport=(10, 10, 64, 0, 5, 5))
    assert info.value.parameter == "viewport"


def test_wado_uri_region_then_rows_and_columns():
    request = parse_wado_uri_params({
        "requestType": "WADO", "studyUID": "1.2.3", "seriesUID": "1.2.3.4", "objectUID": "1.2.3.4.5",
        "contentType": "image/png", "region": "0,0.5,1,0.75", "rows": "8",
        "windowCenter": "1000", "windowWidth": "201",
    })
    got = decode(render(RAMP, RAMP_ATTRS, media_type=request.content_types[0], options=request.render))
    assert got.size == (32, 8)  # the 64x16 region scaled to 8 rows
    exact = np.asarray(decode(render(RAMP, RAMP_ATTRS, media_type="image/png", region=(0.25, 0.5, 0.75, 1.0),
                                     window=Window(1000, 201))))
    np.testing.assert_array_equal(exact, to_display(RAMP, RAMP_ATTRS, window=Window(1000, 201))[32:64, 16:48])
    both = decode(render(RAMP, RAMP_ATTRS, media_type="image/png", rows=10, columns=40))
    assert both.size == (10, 10)


def test_quality_changes_jpeg_size_only(ct):
    frame, attrs = ct
    low, high = render(frame, attrs, quality=5), render(frame, attrs, quality=95)
    assert len(low) < len(high)
    assert render(frame, attrs, media_type="image/png", quality=5) == render(frame, attrs, media_type="image/png")


def test_thumbnail_fits_in_the_size(ct, palette):
    for frame, attrs in (ct, palette):
        image = decode(thumbnail(frame, attrs))
        assert image.format == "JPEG" and max(image.size) == 128
    assert decode(thumbnail(*palette, size=64, media_type="image/png")).size == (64, 28)
    viewport = parse_rendered_params({"viewport": "40,40"})
    assert decode(thumbnail(*ct, options=viewport)).size == (40, 40)


def test_colour_images_render_in_colour():
    for name in ("examples_rgb_color.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_ybr_color.dcm"):
        ds = read(name)
        attrs = ImageAttributes.from_dataset(ds)
        frame = ds.pixel_array[0] if attrs.number_of_frames > 1 else ds.pixel_array
        image = decode(render(frame, attrs, media_type="image/png"))
        assert image.mode == "RGB" and image.size == (ds.Columns, ds.Rows)
        np.testing.assert_array_equal(np.asarray(image), frame)


def test_multi_frame_animation():
    ds = read("examples_ybr_color.dcm")
    attrs = ImageAttributes.from_dataset(ds)
    frames = ds.pixel_array[:5]
    gif = decode(render_frames(frames, attrs, media_type="image/gif", viewport=(160, 160), frame_time_ms=40))
    assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (160, 120)
    assert gif.info["duration"] == 40
    apng = decode(render_frames(frames, attrs, media_type="image/png"))
    assert apng.n_frames == 5 and apng.size == (320, 240)
    with pytest.raises(NotAcceptable, match="image/gif or image/png"):
        render_frames(frames, attrs, media_type="image/jpeg")


def test_animation_of_grayscale_frames_shares_one_window():
    frames = [RAMP[:32].copy(), RAMP[32:].copy()]  # two halves of the ramp
    attrs = ImageAttributes(32, 64, bits_stored=12)
    data = render_frames(frames, attrs, media_type="image/png")
    image = decode(data)
    first = np.asarray(image.convert("L"))
    image.seek(1)
    second = np.asarray(image.convert("L"))
    assert first.max() < 140 and second.min() > 120  # one window over both: no per-frame stretch


def test_unsupported_media_type_is_not_acceptable(ct):
    with pytest.raises(NotAcceptable, match="image/webp"):
        render(*ct, media_type="image/webp")


def test_render_keywords_are_validated(ct):
    with pytest.raises(RenderParameterError, match="quality"):
        render(*ct, quality=0)
    with pytest.raises(RenderParameterError, match="viewport: cannot be combined"):
        render(*ct, viewport=(10, 10), region=(0, 0, 1, 1))
    with pytest.raises(RenderParameterError, match="window"):
        render(*ct, window=(40, 0, "linear"))
    with pytest.raises(RenderParameterError, match="size"):
        thumbnail(*ct, size=0)


def test_render_image_returns_a_pillow_image_for_widgets(ct):
    image = render_image(*ct, window=Window(40, 400), viewport=(64, 64))
    assert isinstance(image, Image.Image) and image.mode == "L" and image.size == (64, 64)


def test_annotation_lines_come_from_the_instance():
    from dicomweb_nb.dicom.dicomjson import dataset_to_json
    from dicomweb_nb.pixels.render import annotation_lines

    meta = dataset_to_json(read("CT_small.dcm"))
    patient = annotation_lines(meta, ["patient"])
    assert patient[:2] == ["CompressedSamples CT1", "ID 1CT1"]
    technique = annotation_lines(meta, ["technique"])
    assert technique[0] == "CT" and "kVp 120" in technique[1] and "Thk 5 mm" in technique
    assert annotation_lines(meta, ["patient", "technique"]) == patient + technique
    assert annotation_lines({}, ["patient", "technique"]) == []  # nothing known, nothing written


def test_annotation_is_drawn_in_the_top_left_corner_only():
    from dicomweb_nb.pixels.render import annotate

    black = Image.new("L", (200, 200))
    written = np.asarray(annotate(black.copy(), ["DOE JOHN", "ID 42"]))
    assert written[:40, :100].max() > 200 and written[60:, :].max() == 0 and written[:, 120:].max() == 0
    assert annotate(black, []) is black
    rgb = np.asarray(annotate(Image.new("RGB", (200, 200)), ["CT"]))
    assert rgb[:20, :40].max() > 200


def test_annotation_parameter_on_rendered_requests():
    assert parse_rendered_params({"annotation": "technique,patient"}).annotation == ("technique", "patient")
    with pytest.raises(RenderParameterError, match="patient and/or technique"):
        parse_rendered_params({"annotation": "everything"})

"""The display pipeline: windows checked against PS3.3 C.11.2.1.2 by hand, LUTs, photometric handling."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.pixels.processing import apply_color_lut, convert_color_space
from pydicom.sequence import Sequence

from dicomweb_nb.dicom.dicomjson import dataset_to_json
from dicomweb_nb.pixels.voi import (
    CT_WINDOW_PRESETS,
    DisplayError,
    ImageAttributes,
    Window,
    apply_window,
    default_window,
    modality_values,
    to_display,
    window_preset,
)
from tests.fixtures.data import read_dicom as read

# A 64x64 ramp of every 12-bit stored value; with intercept -1024 the modality value is stored - 1024.
RAMP = np.arange(4096, dtype=np.uint16).reshape(64, 64)
RAMP_ATTRS = ImageAttributes(64, 64, bits_stored=12, rescale_intercept=-1024.0)


def at_modality(image: np.ndarray, value: int) -> int:
    """The display value of the ramp pixel whose modality value is ``value``."""
    return int(image.reshape(-1)[value + 1024])


def reference(x: float, c: float, w: float, function: str) -> int:
    """PS3.3 C.11.2.1.2.1 / C.11.2.1.3 written out literally, rounded half up."""
    ymin, ymax = 0.0, 255.0
    if function == "LINEAR":
        if x <= c - 0.5 - (w - 1) / 2:
            y = ymin
        elif x > c - 0.5 + (w - 1) / 2:
            y = ymax
        else:
            y = ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin
    elif function == "LINEAR_EXACT":
        if x <= c - w / 2:
            y = ymin
        elif x > c + w / 2:
            y = ymax
        else:
            y = ((x - c) / w + 0.5) * (ymax - ymin) + ymin
    else:
        exponent = -4 * (x - c) / w
        y = ymin if exponent > 700 else (ymax - ymin) / (1 + math.exp(exponent)) + ymin
    return math.floor(y + 0.5)


# Values worked by hand from the formulas (center 1000, width 201 / 200).
@pytest.mark.parametrize(
    "window, expected",
    [
        (Window(1000, 201, "LINEAR"), {899: 0, 900: 1, 1000: 128, 1099: 254, 1100: 255, -1024: 0, 3071: 255}),
        (Window(1000, 200, "LINEAR_EXACT"), {900: 0, 950: 64, 1000: 128, 1050: 191, 1100: 255, 1101: 255}),
        (Window(1000, 200, "SIGMOID"), {900: 30, 1000: 128, 1100: 225}),  # 255/(1+e^2), 255/(1+e^-2)
    ],
    ids=["linear", "linear-exact", "sigmoid"],
)
def test_window_functions_give_the_standard_values_at_known_pixels(window, expected):
    image = to_display(RAMP, RAMP_ATTRS, window=window)
    assert image.dtype == np.uint8 and image.shape == (64, 64)
    assert {x: at_modality(image, x) for x in expected} == expected


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("center, width", [(40, 400), (-600, 1500), (0.5, 1), (2047.5, 4096), (12.25, 3.5)])
def test_window_matches_the_literal_formula_on_every_value(function, center, width):
    if function != "LINEAR" and width == 1:
        width = 0.75
    window = Window(center, width, function)
    image = to_display(RAMP, RAMP_ATTRS, window=window)
    expected = np.array([reference(v - 1024.0, center, width, function) for v in range(4096)], dtype=np.uint8)
    np.testing.assert_array_equal(image.reshape(-1), expected)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_frames_with_the_same_transforms_each_get_every_value_mapped(dtype):
    # The pipeline keeps one table per transform, over the values frames held so far: a frame with
    # values outside them (higher, lower, negative) must still get each mapped by the formula.
    window = Window(100.5, 300.25, "LINEAR")
    attrs = ImageAttributes(64, 64, bits_stored=16, pixel_representation=int(dtype == np.int16),
                            rescale_intercept=-7.0)
    low = np.int64(-2000) if dtype == np.int16 else np.int64(0)
    frames = [np.full((64, 64), 150, dtype=dtype), (RAMP // 8).astype(dtype),
              (np.arange(4096).reshape(64, 64) * 3 + low).astype(dtype), np.full((64, 64), 150, dtype=dtype)]
    for frame in frames:
        expected = np.array([reference(float(v) - 7.0, window.center, window.width, "LINEAR") for v in frame.reshape(-1)],
                            dtype=np.uint8)
        np.testing.assert_array_equal(to_display(frame, attrs, window=window).reshape(-1), expected)


def test_rescale_slope_and_intercept_are_applied_before_the_window():
    attrs = ImageAttributes(64, 64, rescale_slope=2.0, rescale_intercept=-100.0)
    values = modality_values(RAMP, attrs)
    assert values[0, 0] == -100.0 and values[0, 1] == -98.0
    image = to_display(RAMP, attrs, window=Window(0, 200, "LINEAR_EXACT"))
    # stored 50 -> modality 0 -> centre of the window
    assert image.reshape(-1)[50] == 128
    assert image.reshape(-1)[25] == 64  # modality -50 is a quarter up the window
    assert image.reshape(-1)[0] == 0  # modality -100 is its lower edge


def test_apply_window_vectorised_equals_the_reference_on_floats():
    x = np.linspace(-2000, 2000, 1001)
    for function in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        window = Window(37.5, 333, function)
        got = np.floor(apply_window(x, window) + 0.5).astype(int)
        assert list(got) == [reference(v, 37.5, 333, function) for v in x]


def test_default_window_spans_the_frame_range():
    frame = (RAMP[10:20] + 100).astype(np.uint16)  # stored 740..1379
    attrs = RAMP_ATTRS
    window = default_window(frame, attrs)
    assert window.function == "LINEAR_EXACT"
    assert window.center - window.width / 2 == pytest.approx(740 - 1024)
    assert window.center + window.width / 2 == pytest.approx(1379 - 1024)
    image = to_display(frame, replace(attrs, rows=10))
    assert image.min() == 0 and image.max() == 255
    assert image[0, 0] == 0 and image[-1, -1] == 255


def test_stored_window_is_the_default_and_the_first_of_several_is_used():
    ds = read("CT_small.dcm")
    ds.WindowCenter = [40, 300]
    ds.WindowWidth = [400, 1500]
    ds.WindowCenterWidthExplanation = ["SOFT", "BONE"]
    attrs = ImageAttributes.from_dataset(ds)
    assert [w.explanation for w in attrs.windows] == ["SOFT", "BONE"]
    frame = ds.pixel_array
    np.testing.assert_array_equal(to_display(frame, attrs), to_display(frame, attrs, window=Window(40, 400)))
    # an explicit window overrides the stored one
    bone = to_display(frame, attrs, window=Window(300, 1500))
    assert not np.array_equal(bone, to_display(frame, attrs))


def test_ct_small_windowed_in_hounsfield_units():
    ds = read("CT_small.dcm")
    attrs = ImageAttributes.from_dataset(ds)
    frame = ds.pixel_array
    image = to_display(frame, attrs, window=window_preset("soft tissue"))
    hu = frame.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    for (r, c) in [(0, 0), (64, 64), (30, 90), (100, 20)]:
        assert image[r, c] == reference(hu[r, c], 40, 400, "LINEAR")


def test_monochrome1_is_inverted():
    mono1 = replace(RAMP_ATTRS, photometric_interpretation="MONOCHROME1")
    window = Window(1000, 200, "LINEAR_EXACT")
    np.testing.assert_array_equal(
        to_display(RAMP, mono1, window=window), 255 - to_display(RAMP, RAMP_ATTRS, window=window)
    )


def test_monochrome1_file_from_pydicom(pydicom_image_files):
    path = next(p for p in pydicom_image_files if pydicom.dcmread(p, stop_before_pixels=True).get(
        "PhotometricInterpretation") == "MONOCHROME1")
    ds = pydicom.dcmread(path)
    attrs = ImageAttributes.from_dataset(ds)
    assert attrs.photometric_interpretation == "MONOCHROME1" and attrs.windows
    frame = ds.pixel_array
    inverted = to_display(frame, attrs)
    as_mono2 = to_display(frame, replace(attrs, photometric_interpretation="MONOCHROME2"))
    np.testing.assert_array_equal(inverted, 255 - as_mono2)
    # the lowest stored value is the brightest pixel
    assert inverted[np.unravel_index(frame.argmin(), frame.shape)] == inverted.max()


def _lut_item(descriptor, data, vr="US") -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new(0x00283006, vr, data)
    return item


def test_voi_lut_sequence_is_used_without_a_window():
    ds = Dataset()
    ds.Rows, ds.Columns, ds.PhotometricInterpretation = 64, 64, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
    lut = [(i * i) // 4096 for i in range(4096)]  # a gamma-like curve, 12-bit output
    ds.VOILUTSequence = Sequence([_lut_item([4096, 0, 12], lut)])
    attrs = ImageAttributes.from_dataset(ds)
    image = to_display(RAMP, attrs)
    expected = np.floor(np.array(lut) * 255 / 4095 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(image.reshape(-1), expected)
    # a window, when present, is preferred over the LUT
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    assert not np.array_equal(to_display(RAMP, ImageAttributes.from_dataset(ds)).reshape(-1), expected)
    assert np.array_equal(to_display(RAMP, ImageAttributes.from_dataset(ds), voi_lut_index=0).reshape(-1), expected)


def test_modality_lut_sequence_with_signed_first_value_and_ow_data():
    ds = Dataset()
    ds.Rows, ds.Columns, ds.PhotometricInterpretation = 1, 8, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 16, 1
    data = np.array([0, 10, 20, 30, 40], dtype="<u2")
    # first mapped value -2 written as US (65534), the LUT Data as OW bytes
    ds.ModalityLUTSequence = Sequence([_lut_item([5, 65534, 16], data.tobytes(), vr="OW")])
    ds.set_original_encoding(False, True)
    attrs = ImageAttributes.from_dataset(ds)
    assert attrs.modality_lut is not None and attrs.modality_lut.first_mapped == -2
    frame = np.array([[-5, -2, -1, 0, 1, 2, 3, 100]], dtype=np.int16)
    np.testing.assert_array_equal(modality_values(frame, attrs), [[0, 0, 10, 20, 30, 40, 40, 40]])
    image = to_display(frame, attrs, window=Window(20, 40, "LINEAR_EXACT"))
    assert list(image[0]) == [0, 0, 64, 128, 191, 255, 255, 255]


def test_enhanced_functional_groups_per_frame_values():
    ds = Dataset()
    ds.Rows, ds.Columns, ds.PhotometricInterpretation = 64, 64, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation, ds.NumberOfFrames = 16, 12, 0, 2
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -1024, "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for center, width in [(40, 400), (-600, 1500)]:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        item = Dataset()
        item.FrameVOILUTSequence = Sequence([voi])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    second = ImageAttributes.from_dataset(ds, frame_index=1)
    assert second.rescale_intercept == -1024 and second.rescale_type == "HU"
    assert second.windows == (Window(-600, 1500),)
    assert ImageAttributes.from_dataset(ds, frame_index=0).windows == (Window(40, 400),)
    as_json = ds.to_json_dict()
    assert ImageAttributes.from_json(as_json, frame_index=1) == second
    with pytest.raises(DisplayError, match="frame index 2"):
        ImageAttributes.from_dataset(ds, frame_index=2)
    with pytest.raises(DisplayError, match="frame index 5"):
        ImageAttributes.from_json(as_json, frame_index=5)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "examples_palette.dcm", "examples_ybr_color.dcm",
                                  "examples_rgb_color.dcm"])
def test_attributes_from_dicom_json_equal_those_from_the_dataset(name):
    ds = read(name)
    from_ds = ImageAttributes.from_dataset(ds)
    from_json = ImageAttributes.from_json(ds.to_json_dict(bulk_data_threshold=10**9))
    assert from_json == from_ds
    frame = ds.pixel_array[0] if from_ds.number_of_frames > 1 else ds.pixel_array
    np.testing.assert_array_equal(to_display(frame, from_json), to_display(frame, from_ds))


def test_json_with_bulk_data_uris_needs_a_handler():
    ds = read("examples_palette.dcm")
    obj = dataset_to_json(ds, bulk_threshold=64)  # the palette data (512 bytes each) become BulkDataURIs
    assert "BulkDataURI" in obj["00281201"]
    with pytest.raises(DisplayError, match="00281201.*bulk_data_handler"):
        ImageAttributes.from_json(obj)
    fetched = []

    def handler(tag: str, vr: str, uri: str) -> bytes:
        fetched.append(tag)
        return ds[int(tag, 16)].value

    attrs = ImageAttributes.from_json(obj, bulk_data_handler=handler)
    assert set(fetched) == {"00281201", "00281202", "00281203"}
    np.testing.assert_array_equal(to_display(ds.pixel_array, attrs),
                                  to_display(ds.pixel_array, ImageAttributes.from_dataset(ds)))


def test_json_values_given_as_strings_are_read():
    obj = {
        "00280010": {"vr": "US", "Value": [64]}, "00280011": {"vr": "US", "Value": [64]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "00281050": {"vr": "DS", "Value": ["40", 300]}, "00281051": {"vr": "DS", "Value": ["400", "1500"]},
        "00281052": {"vr": "DS", "Value": ["-1024"]}, "00281053": {"vr": "DS", "Value": [1]},
    }
    attrs = ImageAttributes.from_json(obj)
    assert attrs.windows == (Window(40, 400), Window(300, 1500))
    assert attrs.rescale_intercept == -1024.0


def test_palette_color_uses_the_palette():
    ds = read("examples_palette.dcm")
    attrs = ImageAttributes.from_dataset(ds)
    image = to_display(ds.pixel_array, attrs)
    assert image.shape == (ds.Rows, ds.Columns, 3) and image.dtype == np.uint8
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)  # 16-bit palette entries
    np.testing.assert_array_equal(image, expected)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_rgb_passes_through_and_16_bit_rgb_is_scaled():
    ds = read("examples_rgb_color.dcm")
    np.testing.assert_array_equal(to_display(ds.pixel_array, ImageAttributes.from_dataset(ds)), ds.pixel_array)
    ds16 = read("SC_rgb_rle_16bit.dcm")
    image = to_display(ds16.pixel_array, ImageAttributes.from_dataset(ds16))
    np.testing.assert_array_equal(image, (ds16.pixel_array >> 8).astype(np.uint8))


def test_ybr_frames_are_converted_to_rgb():
    ds = read("SC_ybr_full_422_uncompressed.dcm")
    raw = pixel_array(ds, as_rgb=False)  # YCbCr, expanded to full resolution by pydicom
    raw_attrs = ImageAttributes.from_dataset(ds, as_rgb=False)
    assert raw_attrs.photometric_interpretation == "YBR_FULL_422"
    converted = to_display(raw, raw_attrs)
    np.testing.assert_array_equal(converted, convert_color_space(raw, "YBR_FULL", "RGB"))
    # pydicom's default decode is already RGB, and the default attributes say so
    rgb_attrs = ImageAttributes.from_dataset(ds)
    assert rgb_attrs.photometric_interpretation == "RGB"
    assert rgb_attrs.stored_photometric_interpretation == "YBR_FULL_422"
    np.testing.assert_array_equal(to_display(ds.pixel_array, rgb_attrs), converted)


def test_region_crops_and_flips_but_keeps_the_whole_frame_window():
    image = to_display(RAMP, RAMP_ATTRS)
    part = to_display(RAMP, RAMP_ATTRS, region=(slice(10, 20), slice(30, 5, -1)))
    np.testing.assert_array_equal(part, image[10:20, 30:5:-1])


def test_bad_frames_and_windows_are_refused():
    with pytest.raises(DisplayError, match="does not match Rows x Columns"):
        to_display(RAMP[:10], RAMP_ATTRS)
    with pytest.raises(DisplayError, match="must be 2-D"):
        to_display(np.zeros((64, 64, 3), np.uint8), RAMP_ATTRS)
    with pytest.raises(DisplayError, match=r"must be \(rows, columns, 3\)"):
        to_display(np.zeros((4, 4), np.uint8), ImageAttributes(4, 4, "RGB", samples_per_pixel=3))
    with pytest.raises(DisplayError, match="at least 1 for the LINEAR"):
        Window(40, 0.5)
    with pytest.raises(DisplayError, match="greater than 0"):
        Window(40, 0, "SIGMOID")
    with pytest.raises(DisplayError, match="not one of linear"):
        Window(40, 400, "cubic")
    assert Window(40, 400, "linear-exact").function == "LINEAR_EXACT"


def test_unusable_stored_windows_are_skipped():
    ds = read("CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = [40, 50], [0, 350]  # the first pair is invalid (width 0)
    assert ImageAttributes.from_dataset(ds).windows == (Window(50, 350),)


def test_window_presets():
    assert window_preset("Soft tissue") == CT_WINDOW_PRESETS["soft_tissue"] == Window(40, 400)
    assert window_preset("LUNG") == Window(-600, 1500)
    assert {"lung", "bone", "soft_tissue", "abdomen", "brain"} <= set(CT_WINDOW_PRESETS)
    with pytest.raises(KeyError, match="known: brain"):
        window_preset("kidney")


def test_float_and_32_bit_frames_are_displayed_directly():
    ds = read("rtdose.dcm")
    attrs = ImageAttributes.from_dataset(ds)
    frame = ds.pixel_array[0]
    assert frame.dtype == np.uint32
    image = to_display(frame, attrs)
    assert image[np.unravel_index(frame.argmin(), frame.shape)] == 0
    assert image[np.unravel_index(frame.argmax(), frame.shape)] == 255
    floats = RAMP.astype(np.float32) - 1024
    np.testing.assert_array_equal(
        to_display(floats, ImageAttributes(64, 64), window=Window(1000, 200, "LINEAR_EXACT")),
        to_display(RAMP, RAMP_ATTRS, window=Window(1000, 200, "LINEAR_EXACT")),
    )

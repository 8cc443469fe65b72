"""The display pipeline against pydicom applied directly: every bundled grayscale image, as stored and
with a Modality LUT Sequence, a VOI LUT Sequence (8- and 16-bit entries) and windows of each VOI LUT
Function added, read from the Dataset and from its DICOM JSON.

Each is displayed from its integer frame (one table of every stored value) and as float32 (pixel by
pixel). The reference applies pydicom's ``apply_modality_lut`` to the whole frame, then ``apply_voi`` or
``apply_windowing`` (``apply_voi_lut`` with the window preferred, as the pipeline prefers it), and
brings the result to 0..255 the way the pipeline documents: a window onto 0..255, a VOI LUT scaled
from its nominal range, rounded half up, MONOCHROME1 inverted. pydicom's bundled files carry no LUT
Sequences of their own, so the tables are generated here (nonlinear, narrower than the stored range so
both ends clip, with a negative first mapped value on signed images).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi, apply_voi_lut
from pydicom.sequence import Sequence

from dicomweb_nb import samples
from dicomweb_nb.pixels.voi import ImageAttributes, to_display


def _grayscale_images() -> list[tuple[str, Dataset, np.ndarray]]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in samples.pydicom_test_files(with_pixels=True):
            ds = pydicom.dcmread(path)
            grayscale = ds.get("PhotometricInterpretation") in ("MONOCHROME1", "MONOCHROME2")
            if not grayscale or ds.get("SamplesPerPixel", 1) != 1:
                continue
            try:
                array = ds.pixel_array
            except Exception:  # noqa: BLE001 - deliberately broken files in pydicom's corpus
                continue
            frame = array[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array
            if frame.dtype.kind not in "ui" or frame.size == 0:
                continue
            for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
                if keyword in ds:  # per-frame transforms are the pipeline's own reading; compared elsewhere
                    del ds[keyword]
            out.append((path.name, ds, frame))
    return out


IMAGES = _grayscale_images()


def _lut_item(first: int, data: np.ndarray, bits: int) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "SS" if first < 0 else "US", [len(data) % 65536, first, bits])
    item.add_new(0x00283006, "US", [int(v) for v in data])
    return item


def _sqrt_table(low: float, high: float, bits: int) -> tuple[int, np.ndarray]:
    """A nonlinear table over the middle half of ``low..high``: values beyond it clip at both ends.

    8-bit tables have at most 256 entries: pydicom's ``apply_voi`` holds the offsets into a table in
    the table's own dtype, so its lookup in a longer 8-bit table wraps (the pipeline's does not:
    ``test_an_8_bit_voi_lut_of_more_than_256_entries``)."""
    first = int(np.floor(low + (high - low) / 4))
    entries = int(min(max(2, (high - low) / 2), 4096 if bits > 8 else 256))
    return first, np.round(np.sqrt(np.linspace(0.0, 1.0, entries)) * ((1 << bits) - 1)).astype(np.int64)


def _without(ds: Dataset, *keywords: str) -> Dataset:
    out = copy.deepcopy(ds)
    for keyword in keywords:
        if keyword in out:
            del out[keyword]
    return out


def _with_window(ds: Dataset, values: np.ndarray, function: str) -> Dataset:
    """``ds`` with a window of ``function`` over the middle third of ``values`` (modality values)."""
    out = _without(ds, "VOILUTSequence")
    low, high = float(np.min(values)), float(np.max(values))
    out.WindowCenter = round(float(np.median(values)), 3)
    out.WindowWidth = round(max((high - low) / 3, 1.0), 3)
    out.VOILUTFunction = function
    return out


def _variants(ds: Dataset, frame: np.ndarray):
    """(name, dataset) of the image as stored and with each transform added."""
    yield "as stored", ds
    modality = apply_modality_lut(frame, ds)
    for function in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        yield f"window {function}", _with_window(ds, modality, function)
    if frame.dtype.itemsize > 2:
        return  # tables over a 32-bit range would not be tables
    plain = _without(ds, "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
                     "VOILUTFunction", "VOILUTSequence")
    first, table = _sqrt_table(float(frame.min()), float(frame.max()), 16)
    plain.ModalityLUTSequence = Sequence([_lut_item(first, table, 16)])  # first < 0 on most signed images
    through_lut = apply_modality_lut(frame, plain)
    for function in ("LINEAR", "SIGMOID"):
        yield f"modality LUT, window {function}", _with_window(plain, through_lut, function)
    for bits in (8, 16):
        for name, base, values in (("", ds, modality), ("modality LUT, ", plain, through_lut)):
            with_voi = _without(base, "WindowCenter", "WindowWidth", "VOILUTFunction")
            vfirst, vtable = _sqrt_table(float(np.min(values)), float(np.max(values)), bits)
            with_voi.VOILUTSequence = Sequence([_lut_item(vfirst, vtable, bits)])
            yield f"{name}VOI LUT {bits}-bit", with_voi


def _reference(ds: Dataset, frame: np.ndarray) -> np.ndarray | None:
    """pydicom's pipeline on the whole frame, or None when the image has no VOI of its own."""
    modality = apply_modality_lut(frame, ds)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        # The window onto 0..255: the range pydicom gives an unsigned 8-bit image without rescale.
        voi = Dataset()
        voi.PhotometricInterpretation, voi.BitsStored, voi.PixelRepresentation = "MONOCHROME2", 8, 0
        voi.WindowCenter, voi.WindowWidth = ds.WindowCenter, ds.WindowWidth
        if "VOILUTFunction" in ds:
            voi.VOILUTFunction = ds.VOILUTFunction
        with np.errstate(over="ignore"):
            y = apply_voi_lut(modality, voi, prefer_lut=False)
    elif ds.get("VOILUTSequence"):
        # The pipeline rounds fractional modality values to the table's input (pydicom would truncate),
        # and values past either end of the table take its end entry (PS3.3 C.11.2.1.1): clipped here
        # first, since pydicom's apply_voi holds the offsets in the table's dtype, where those of an
        # 8-bit table wrap at 256.
        values = np.rint(modality) if modality.dtype.kind == "f" else modality
        entries, first, bits = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
        values = np.clip(values, first, first + (entries or 65536) - 1).astype(np.int64)
        y = apply_voi(values, ds).astype(np.float64) * (255.0 / ((1 << bits) - 1))
    else:
        return None
    out = np.clip(np.nan_to_num(np.floor(y + 0.5)), 0, 255).astype(np.uint8)
    return 255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


CASES = [(name, variant, ds, frame) for name, ds, frame in IMAGES for variant, ds in _variants(ds, frame)]


def test_the_corpus_has_images_of_each_kind():
    dtypes = {frame.dtype.str[1:] for _, _, frame in IMAGES}
    assert {"u2", "i2", "u1"} <= dtypes  # table path for unsigned, signed and 8-bit frames
    assert any(ds.PhotometricInterpretation == "MONOCHROME1" for _, ds, _ in IMAGES)
    assert len(CASES) >= 9 * 40


@pytest.mark.parametrize("name, variant, ds, frame", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_display_equals_pydicom(name, variant, ds, frame):
    expected = _reference(ds, frame)
    if expected is None:
        pytest.skip("no window or VOI LUT of its own: the pipeline's default window has no pydicom counterpart")
    attrs = ImageAttributes.from_dataset(ds)
    np.testing.assert_array_equal(to_display(frame, attrs), expected)
    # The same values as float32 take the direct path (no table), as float and 32-bit frames do.
    np.testing.assert_array_equal(to_display(frame.astype(np.float32), attrs), expected)
    as_json = ds.to_json_dict(bulk_data_threshold=10**9, bulk_data_element_handler=lambda element: "unused")
    np.testing.assert_array_equal(to_display(frame, ImageAttributes.from_json(as_json)), expected)


def test_an_8_bit_voi_lut_of_more_than_256_entries():
    """Common (a 12-bit input range onto 8 bits); pydicom's apply_voi would wrap the offsets at 256."""
    ds = Dataset()
    ds.Rows, ds.Columns, ds.PhotometricInterpretation = 1, 6, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
    table = np.arange(1000) * 255 // 999
    ds.VOILUTSequence = Sequence([_lut_item(100, table, 8)])
    frame = np.array([[0, 100, 356, 600, 1099, 4000]], dtype=np.uint16)
    expected = [table[0], table[0], table[256], table[500], table[999], table[999]]
    assert to_display(frame, ImageAttributes.from_dataset(ds)).tolist() == [expected]

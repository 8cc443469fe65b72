"""decode_frame on the frame bytes of pydicom's bundled files: the same numbers as pydicom's pixel_array."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicomweb_nb import samples
from dicomweb_nb.pixels.decode import (
    PixelAttributes,
    PixelDecodeError,
    apply_rescale,
    decode_frame,
    decode_frame_into,
    decode_frames,
    has_rescale,
)


def _decodable_files():
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in samples.pydicom_test_files(with_pixels=True):
            ds = pydicom.dcmread(path)
            try:
                _ = ds.pixel_array
            except Exception:  # noqa: BLE001 - deliberately broken files in pydicom's corpus
                continue
            out.append(ds)
    return out


DATASETS = _decodable_files()


def frame_bytes(ds) -> list[bytes]:
    attrs = PixelAttributes.from_dataset(ds)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=attrs.number_of_frames))
    length = attrs.native_frame_length
    return [ds.PixelData[i * length:(i + 1) * length] for i in range(attrs.number_of_frames)]


@pytest.mark.parametrize("ds", DATASETS, ids=lambda ds: f"{ds.filename.rsplit('/', 1)[-1]}")
def test_every_bundled_file_decodes_like_pydicom(ds):
    attrs = PixelAttributes.from_dataset(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ds.pixel_array
        decoded = decode_frames(frame_bytes(ds), attrs, str(ds.file_meta.TransferSyntaxUID))
    assert decoded.dtype == reference.dtype
    assert np.array_equal(decoded.reshape(reference.shape), reference)


def test_the_corpus_covers_the_compressed_syntaxes():
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for ds in DATASETS}
    assert {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"} <= syntaxes


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda uid: uid.name)
@pytest.mark.parametrize("source", ["CT_small.dcm", "examples_rgb_color.dcm", "MR_small.dcm"])
def test_syntaxes_encoded_here(syntax, source):
    """RLE, JPEG-LS and JPEG 2000 lossless frames made by pydicom's encoders decode to the original pixels."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(source))
    original = ds.pixel_array.copy()
    ds.compress(syntax)
    attrs = PixelAttributes.from_dataset(ds)
    decoded = decode_frame(frame_bytes(ds)[0], attrs, syntax)
    assert np.array_equal(decoded, original)


def test_attributes_from_json_equal_from_dataset():
    for ds in DATASETS:
        from_ds = PixelAttributes.from_dataset(ds)
        as_json = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda elem: "bulk")
        assert PixelAttributes.from_json(as_json) == from_ds, ds.filename


def test_json_numbers_as_strings_are_read():
    attrs = PixelAttributes.from_json({
        "00280010": {"vr": "US", "Value": [4]}, "00280011": {"vr": "US", "Value": [2]},
        "00281052": {"vr": "DS", "Value": ["-1024"]}, "00281053": {"vr": "DS", "Value": ["1.5"]},
        "00280008": {"vr": "IS", "Value": ["3"]},
    })
    assert (attrs.rescale_intercept, attrs.rescale_slope, attrs.number_of_frames) == (-1024.0, 1.5, 3)


def test_decode_frame_into_equals_decode_frame():
    ct = samples.generate_ct_series(n_slices=1, rows=12, columns=10)[0]
    ct.PixelData = (np.frombuffer(ct.PixelData, np.uint16) | 0xF000).astype(np.uint16).tobytes()  # garbage high bits
    attrs = PixelAttributes.from_dataset(ct)
    syntax = str(ct.file_meta.TransferSyntaxUID)
    reference = decode_frame(ct.PixelData, attrs, syntax)
    assert reference.max() < 4096  # pydicom ignores the unused bits
    out = np.empty((12, 10), np.uint16)
    decode_frame_into(out, ct.PixelData, attrs, syntax)
    assert np.array_equal(out, reference)
    hu = np.empty((12, 10), np.float32)
    decode_frame_into(hu, ct.PixelData, attrs, syntax, rescale=True)
    assert np.array_equal(hu, apply_rescale(reference, attrs))
    signed = PixelAttributes(rows=1, columns=2, bits_allocated=16, bits_stored=12, pixel_representation=1)
    raw = np.array([0x0FFF, 0x07FF], dtype="<u2").tobytes()  # -1 and 2047 in 12-bit two's complement
    out = np.empty((1, 2), np.int16)
    decode_frame_into(out, raw, signed, syntax)
    assert out.tolist() == [[-1, 2047]] == decode_frame(raw, signed, syntax).tolist()
    with pytest.raises(PixelDecodeError, match="int16"):
        decode_frame_into(np.empty((1, 2), np.uint8), raw, signed, syntax)


def test_rescale_matches_pydicom_modality_lut():
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    attrs = PixelAttributes.from_dataset(ds)
    assert has_rescale(attrs)
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert np.array_equal(apply_rescale(ds.pixel_array, attrs, dtype=np.float64), expected)
    assert np.allclose(apply_rescale(ds.pixel_array, attrs), expected)
    rgb = PixelAttributes(rows=2, columns=2, samples_per_pixel=3, bits_allocated=8, bits_stored=8,
                          photometric_interpretation="RGB", rescale_slope=2.0)
    pixels = np.zeros((2, 2, 3), np.uint8)
    assert apply_rescale(pixels, rgb) is pixels


def test_modality_lut_sequence_goes_through_pydicom():
    lut = {"00283002": {"vr": "US", "Value": [4, 0, 16]}, "00283006": {"vr": "US", "Value": [100, 200, 300, 400]}}
    attrs = PixelAttributes(rows=1, columns=4, bits_allocated=16, bits_stored=16, modality_lut=lut)
    out = apply_rescale(np.array([[0, 1, 2, 9]], np.uint16), attrs)
    assert out.tolist() == [[100, 200, 300, 400]]


def test_errors_name_the_problem():
    attrs = PixelAttributes(rows=4, columns=4)
    with pytest.raises(PixelDecodeError, match="needs 32 bytes, got 3"):
        decode_frame(b"abc", attrs, "1.2.840.10008.1.2.1")
    with pytest.raises(PixelDecodeError, match="not a transfer syntax"):
        decode_frame(b"\0" * 32, attrs, "jpeg")
    with pytest.raises(PixelDecodeError, match="no pixel data decoder"):
        decode_frame(b"\0" * 32, attrs, "1.2.840.10008.1.2.4.100")  # MPEG-2 video
    with pytest.raises(PixelDecodeError, match="JPEG Baseline"):
        decode_frame(b"\xff\xd8 not really a jpeg", attrs, "1.2.840.10008.1.2.4.50")
    with pytest.raises(PixelDecodeError, match="Rows and Columns"):
        PixelAttributes(rows=0, columns=4)
    with pytest.raises(PixelDecodeError, match="no Rows"):
        PixelAttributes.from_json({"00080018": {"vr": "UI", "Value": ["1.2"]}})


def _only_frame(name: str) -> tuple[pydicom.Dataset, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    return ds, next(generate_frames(ds.PixelData, number_of_frames=1))


def test_a_jpeg_scan_header_with_wrong_fixed_fields_is_repaired():
    """pydicom's JPEG-lossy.dcm (12-bit JPEG Extended) has Se = 0 in its scan header; T.81 fixes it at 63
    for sequential DCT, pylibjpeg-libjpeg refuses it as written. Decoded, it is pydicom's fixed copy."""
    from dicomweb_nb.pixels.decode import repair_jpeg_scan_headers

    ds, frame = _only_frame("JPEG-lossy.dcm")
    fixed, _ = _only_frame("JPGExtended.dcm")
    repaired = repair_jpeg_scan_headers(frame)
    assert repaired is not None and len(repaired) == len(frame)
    assert [i for i, (a, b) in enumerate(zip(frame, repaired)) if a != b] == [frame.index(b"\xff\xda") + 8]
    array = decode_frame(frame, PixelAttributes.from_dataset(ds), ds.file_meta.TransferSyntaxUID)
    assert np.array_equal(array, fixed.pixel_array)
    assert (array[420, 140], array[230, 120]) == (244, 95)  # pydicom's reference values for this image
    # Well-formed codestreams, and the lossless process (where Ss is the predictor), are left alone.
    assert repair_jpeg_scan_headers(_only_frame("SC_rgb_jpeg_dcmtk.dcm")[1]) is None
    assert repair_jpeg_scan_headers(repaired) is None
    assert repair_jpeg_scan_headers(_only_frame("SC_rgb_jpeg_gdcm.dcm")[1]) is None  # JPEG Lossless, SV1
    assert repair_jpeg_scan_headers(b"not a jpeg") is None

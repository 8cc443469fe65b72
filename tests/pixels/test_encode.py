"""Transcoding: lossless targets round-trip exactly, lossy ones within tolerance, impossible ones refuse."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomweb_nb import samples
from dicomweb_nb.pixels.encode import (
    TranscodeError,
    can_encode,
    dataset_to_bytes,
    encodable_transfer_syntaxes,
    encode_frames,
    encoded_photometric_interpretation,
    transcode_dataset,
)
from dicomweb_nb.pixels.voi import ImageAttributes

LOSSLESS = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless,
            JPEGLSLossless, JPEG2000Lossless]


def read(path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(path) if isinstance(path, str) else path)


def round_trip(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Write as a Part 10 file and read it back, as a client would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(dataset_to_bytes(ds)))


# Every source transfer syntax among the bundled files, grayscale 8/16-bit signed and unsigned, RGB,
# YBR (JPEG), palette, multi-frame.
ROUND_TRIP_FILES = [
    "CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm",
    "693_J2KI.dcm", "SC_rgb_jpeg_gdcm.dcm", "ExplVR_BigEnd.dcm", "image_dfl.dcm", "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle_16bit.dcm", "examples_overlay.dcm",
    "SC_ybr_full_422_uncompressed.dcm", "MR_small_bigendian.dcm",
]


@pytest.mark.parametrize("target", LOSSLESS, ids=lambda uid: uid.name)
@pytest.mark.parametrize("name", ROUND_TRIP_FILES)
def test_lossless_targets_round_trip_exactly(name, target):
    ds = read(name)
    source = ds.pixel_array
    new = transcode_dataset(ds, target)
    back = round_trip(new)
    assert back.file_meta.TransferSyntaxUID == target
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert "LossyImageCompression" not in back or back.LossyImageCompression == ds.get("LossyImageCompression")
    np.testing.assert_array_equal(back.pixel_array, source)
    assert back.PatientName == ds.PatientName and back.Rows == ds.Rows


def test_every_bundled_image_either_round_trips_or_is_refused(pydicom_image_files):
    """No other exception, and never silently different pixels, across pydicom's whole corpus."""
    checked = 0
    for path in pydicom_image_files:
        ds = read(path)
        try:
            source = ds.pixel_array
        except Exception:  # noqa: BLE001 - some bundled files are deliberately undecodable
            continue
        for target in LOSSLESS:
            try:
                new = transcode_dataset(ds, target)
            except TranscodeError:
                assert target not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian), path.name
                continue
            np.testing.assert_array_equal(round_trip(new).pixel_array, source, err_msg=f"{path.name} {target}")
            checked += 1
    assert checked > 150


def test_transcoding_leaves_the_source_alone():
    ds = read("CT_small.dcm")
    before = (ds.file_meta.TransferSyntaxUID, ds.PixelData, ds.SOPInstanceUID, ds.PhotometricInterpretation)
    new = transcode_dataset(ds, JPEG2000Lossless)
    assert new.file_meta.TransferSyntaxUID == JPEG2000Lossless and new.PixelData != before[1]
    assert (ds.file_meta.TransferSyntaxUID, ds.PixelData, ds.SOPInstanceUID, ds.PhotometricInterpretation) == before
    ybr = read("examples_ybr_color.dcm")
    jpeg_bytes = ybr.PixelData
    rle = transcode_dataset(ybr, RLELossless)
    assert rle.PhotometricInterpretation == "RGB" and ybr.PhotometricInterpretation == "YBR_FULL_422"
    assert ybr.PixelData == jpeg_bytes


def test_same_syntax_keeps_the_bitstream():
    ds = read("SC_rgb_jpeg_gdcm.dcm")
    new = transcode_dataset(ds, ds.file_meta.TransferSyntaxUID)
    assert new.PixelData == ds.PixelData


def test_uncompressed_to_uncompressed_only_changes_the_encoding():
    ds = read("MR_small.dcm")
    implicit = transcode_dataset(ds, ImplicitVRLittleEndian)
    assert implicit.PixelData is ds.PixelData  # no decode, no copy
    back = round_trip(implicit)
    assert back.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert back.original_encoding[0] is True  # implicit VR on the wire
    assert back == ds  # every element equal


@pytest.mark.parametrize("name", ["examples_rgb_color.dcm", "image_dfl.dcm", "ExplVR_BigEnd.dcm",
                                  "SC_rgb_jpeg_gdcm.dcm", "GDCMJ2K_TextGBR.dcm"])
def test_jpeg_baseline_is_close_and_marked_lossy(name):
    ds = read(name)
    source = ds.pixel_array.astype(int)
    new = transcode_dataset(ds, JPEGBaseline8Bit, quality=95)
    back = round_trip(new)
    assert back.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    if ds.SamplesPerPixel == 3:
        assert back.PhotometricInterpretation == "YBR_FULL_422"
    assert back.LossyImageCompression == "01"
    assert "ISO_10918_1" in back.LossyImageCompressionMethod
    error = np.abs(back.pixel_array.astype(int) - source)
    assert error.mean() < 2.5 and np.percentile(error, 99) < 30


def test_jpeg_ls_near_lossless_stays_within_its_error():
    for name in ("CT_small.dcm", "examples_rgb_color.dcm"):
        ds = read(name)
        for error in (1, 3):
            back = round_trip(transcode_dataset(ds, JPEGLSNearLossless, jls_error=error))
            diff = np.abs(back.pixel_array.astype(int) - ds.pixel_array.astype(int))
            assert 0 < diff.max() <= error
            assert back.LossyImageCompressionMethod == "ISO_14495_1"


def test_jpeg_2000_lossy_by_ratio_and_by_psnr():
    ds = read("CT_small.dcm")
    source = ds.pixel_array.astype(float)
    peak = float(source.max() - source.min())
    by_ratio = round_trip(transcode_dataset(ds, JPEG2000, j2k_cr=[5]))
    # OpenJPEG measures PSNR against the full 16-bit range, so 90 dB here is ~60 dB of this image's range
    by_psnr = round_trip(transcode_dataset(ds, JPEG2000, j2k_psnr=[90]))
    for back in (by_ratio, by_psnr):
        mse = np.mean((back.pixel_array.astype(float) - source) ** 2)
        assert 10 * np.log10(peak**2 / mse) > 50
        assert back.LossyImageCompression == "01"
    assert float(by_ratio.LossyImageCompressionRatio) == pytest.approx(5, rel=0.3)


IMPOSSIBLE = [
    ("CT_small.dcm", JPEGLosslessSV1, "no encoder"),
    ("CT_small.dcm", JPEGExtended12Bit, "no encoder"),
    ("CT_small.dcm", HTJ2KLossless, "no encoder"),
    ("CT_small.dcm", JPEGBaseline8Bit, "8-bit unsigned"),
    ("CT_small.dcm", ExplicitVRBigEndian, "retired"),
    ("CT_small.dcm", "1.2.3.4", "not a transfer syntax"),
    ("CT_small.dcm", CTImageStorage, "not a transfer syntax"),
    ("CT_small.dcm", "JPEG", "not a UID"),
    ("liver_1frame.dcm", RLELossless, r"cannot hold MONOCHROME2, 1 sample\(s\), 1 of 1 bits"),
    ("rtdose.dcm", JPEG2000Lossless, "at most 24 bits"),
    ("examples_palette.dcm", JPEG2000, "cannot hold PALETTE COLOR"),
    ("SC_rgb_small_odd.dcm", JPEG2000Lossless, "at least 32x32"),
]


@pytest.mark.parametrize("name, target, message", IMPOSSIBLE)
def test_impossible_targets_raise_transcode_error(name, target, message):
    ds = read(name)
    with pytest.raises(TranscodeError, match=message):
        transcode_dataset(ds, target)
    assert not can_encode(target, ds)
    assert isinstance(TranscodeError(""), ValueError)


def test_instances_without_pixel_data():
    path = samples.pydicom_test_files(with_pixels=False)[0]
    ds = read(path)
    back = round_trip(transcode_dataset(ds, ImplicitVRLittleEndian))
    assert back.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian and back.SOPInstanceUID == ds.SOPInstanceUID
    # A compressed syntax encodes only Pixel Data (PS3.5 A.4): without it, only the label changes.
    relabelled = round_trip(transcode_dataset(ds, RLELossless))
    assert relabelled.file_meta.TransferSyntaxUID == RLELossless
    assert [e.tag for e in relabelled] == [e.tag for e in ds] and relabelled == ds
    floats = read(path)
    floats.add_new(0x7FE00008, "OF", np.zeros(4, np.float32).tobytes())
    with pytest.raises(TranscodeError, match="float pixel data"):
        transcode_dataset(floats, RLELossless)


def test_encode_frames_from_arrays():
    ds = read("CT_small.dcm")
    attrs = ImageAttributes.from_dataset(ds)
    frame = ds.pixel_array
    assert encode_frames([frame], attrs, ExplicitVRLittleEndian) == [ds.PixelData]
    assert encode_frames(frame, ds, ExplicitVRLittleEndian) == [ds.PixelData]  # a Dataset as attrs
    for target in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        (bitstream,) = encode_frames(frame, attrs, target)
        assert len(bitstream) < len(ds.PixelData)
        carrier = read("CT_small.dcm")
        carrier.file_meta.TransferSyntaxUID = target
        carrier.PixelData = encapsulate([bitstream])
        carrier["PixelData"].VR, carrier["PixelData"].is_undefined_length = "OB", True
        np.testing.assert_array_equal(carrier.pixel_array, frame)


def test_encode_frames_of_a_multi_frame_dataset():
    ds = read("examples_ybr_color.dcm")  # 30 JPEG frames, YBR_FULL_422
    frames = encode_frames(ds, None, RLELossless)
    assert len(frames) == ds.NumberOfFrames == 30
    stack = np.stack([f for f in ds.pixel_array[:3]])
    again = encode_frames(stack, ImageAttributes.from_dataset(ds), RLELossless)
    assert again == frames[:3]
    assert encoded_photometric_interpretation(RLELossless, ds) == "RGB"
    assert encoded_photometric_interpretation(JPEGBaseline8Bit, ds) == "YBR_FULL_422"


def test_encode_frames_rejects_bad_frames():
    attrs = ImageAttributes(4, 4, bits_allocated=8, bits_stored=8)
    with pytest.raises(TranscodeError, match="attributes say 4x4"):
        encode_frames([np.zeros((5, 4), np.uint8)], attrs, RLELossless)
    with pytest.raises(TranscodeError, match="only integer pixel data"):
        encode_frames([np.zeros((4, 4), np.float32)], attrs, RLELossless)
    with pytest.raises(TranscodeError, match="do not fit 8-bit unsigned"):
        encode_frames([np.full((4, 4), 300, np.int32)], attrs, ExplicitVRLittleEndian)
    with pytest.raises(TranscodeError, match="cannot be encoded"):  # values beyond Bits Stored
        encode_frames([np.full((16, 16), 200, np.uint8)], ImageAttributes(16, 16, bits_allocated=8, bits_stored=6),
                      JPEGLSLossless)
    with pytest.raises(TranscodeError, match="attrs are required"):
        encode_frames([np.zeros((4, 4), np.uint8)], None, RLELossless)


def test_encodable_transfer_syntaxes():
    ct = encodable_transfer_syntaxes(read("CT_small.dcm"))
    assert ct[:3] == [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
    assert {RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000} <= set(ct)
    assert JPEGBaseline8Bit not in ct
    rgb = encodable_transfer_syntaxes(ImageAttributes(64, 64, "RGB", samples_per_pixel=3, bits_allocated=8,
                                                      bits_stored=8))
    assert JPEGBaseline8Bit in rgb


def test_encode_problem_names_the_reason():
    from dicomweb_nb.pixels.encode import encode_problem

    ct = read("CT_small.dcm")
    assert encode_problem(JPEG2000Lossless, ct) is None
    assert "8-bit unsigned" in encode_problem(JPEGBaseline8Bit, ct)
    assert "is not a UID" in encode_problem("jpeg", ct)
    tiny = ImageAttributes(3, 3, samples_per_pixel=3, photometric_interpretation="RGB", bits_allocated=8, bits_stored=8)
    assert "too small" not in (encode_problem(RLELossless, tiny) or "")
    assert "this small" in encode_problem(JPEGLSLossless, tiny)
    assert "32x32" in encode_problem(JPEG2000Lossless, tiny)


def test_a_12_bit_lossy_jpeg_with_a_bad_scan_header_transcodes():
    """pydicom cannot decode JPEG-lossy.dcm as a whole; frame by frame, with its scan header repaired, it can."""
    lossy = read("JPEG-lossy.dcm")
    out = round_trip(transcode_dataset(lossy, ExplicitVRLittleEndian))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(out.pixel_array, read("JPGExtended.dcm").pixel_array)


@pytest.mark.parametrize("target", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda uid: uid.name)
def test_compressed_colour_is_written_pixel_interleaved(target):
    """PS3.5 8.2: these syntaxes take Planar Configuration 0; pydicom's Dataset.compress keeps a 1."""
    ds = read("ExplVR_BigEnd.dcm")
    assert ds.PlanarConfiguration == 1
    back = round_trip(transcode_dataset(ds, target))
    assert back.PlanarConfiguration == 0
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)


def test_a_big_endian_colour_source_compresses_to_its_own_pixels():
    """pydicom's Dataset.compress encodes big-endian pixel bytes as if they were little endian."""
    ds = read("SC_rgb_small_odd_big_endian.dcm")
    np.testing.assert_array_equal(round_trip(transcode_dataset(ds, RLELossless)).pixel_array, ds.pixel_array)

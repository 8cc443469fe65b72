"""Ingest reads each file once: its metadata and frame byte ranges must equal what pydicom reads."""

from __future__ import annotations

import copy
import struct
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import DeflatedExplicitVRLittleEndian as DEFLATED

from dicomweb_nb import samples
from dicomweb_nb.dicom.dicomjson import BULK_PLACEHOLDER, dumps
from dicomweb_nb.store.ingest import (
    FrameLayout,
    MissingAttributeError,
    NotDicomError,
    ensure_part10,
    read_instance,
)
from tests.fixtures.metadata import metadata_problems

FILES = samples.pydicom_test_files()


def _readable(paths: list[Path]) -> list[Path]:
    out = []
    for path in paths:
        try:
            read_instance(path)
        except NotDicomError:
            assert "truncated" in path.name, path  # the corpus's truncated files, refused (tested below)
            continue
        out.append(path)
    return out


# Every bundled file a store can hold, several of them the same instance in other transfer syntaxes.
ALL_INSTANCES = _readable(samples.pydicom_test_files(distinct_sops=False))
# pydicom_test_files() keeps one file per SOP Instance UID; these share theirs with another file
# but are the corpus's multi-frame native, big-endian and RLE cases.
EXTRA_FRAME_FILES = [Path(pydicom.data.get_testdata_file(name)) for name in
                     ("rtdose.dcm", "rtdose_expb.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_rle_32bit_2frame.dcm")]
IMAGE_FILES = samples.pydicom_test_files(with_pixels=True) + EXTRA_FRAME_FILES
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def full_read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def frames_of(path, layout: FrameLayout) -> list[bytes]:
    data = path.read_bytes()
    return [b"".join(data[offset:offset + length] for offset, length in frame) for frame in layout.frames]


@pytest.mark.parametrize("path", ALL_INSTANCES, ids=[p.name for p in ALL_INSTANCES])
def test_metadata_equals_pydicom_reading(path):
    """Every attribute pydicom reads (Data Set Trailing Padding after the pixel data included) with its
    VR and value; file meta and group lengths left out; the VR of the pixel data as the file has it."""
    record = read_instance(path)
    assert record.metadata_text == dumps(record.metadata)
    ds = full_read(path)
    assert metadata_problems(ds, record.metadata) == []
    assert record.study_uid == ds.StudyInstanceUID
    assert record.series_uid == ds.SeriesInstanceUID
    assert record.sop_uid == ds.SOPInstanceUID
    assert record.sop_class_uid == ds.SOPClassUID
    meta_ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    if meta_ts:
        assert record.transfer_syntax == meta_ts


def test_the_metadata_cases_are_covered():
    # Guard: the comparison above must meet trailing padding, implicit-VR signed images, big endian.
    records = {p.name: read_instance(p) for p in ALL_INSTANCES}
    assert "FFFCFFFC" in records["CT_small.dcm"].metadata
    assert records["MR_small_implicit.dcm"].metadata["00280106"]["vr"] == "SS"
    assert any(r.transfer_syntax == "1.2.840.10008.1.2.2" and "00620002" in r.metadata for r in records.values())


@pytest.mark.parametrize("path", IMAGE_FILES, ids=[p.name for p in IMAGE_FILES])
def test_frame_byte_ranges_equal_pydicom_frames(path):
    record = read_instance(path)
    ds = full_read(path)
    layout = record.layout
    assert layout.pixel_tag == 0x7FE00010
    assert record.metadata["7FE00010"]["BulkDataURI"] == f"{BULK_PLACEHOLDER}bulk/7FE00010"
    ts = ds.file_meta.TransferSyntaxUID
    frames = frames_of(path, layout)
    try:
        declared = int(ds.get("NumberOfFrames", 1) or 1)
    except ValueError:  # badVR.dcm: NumberOfFrames "1A"
        declared = 1
    assert record.number_of_frames == declared
    if ts.is_encapsulated:
        assert layout.encapsulated
        expected = list(generate_frames(ds.PixelData, number_of_frames=declared))
        assert frames == expected
        return
    assert not layout.encapsulated
    if ts == DEFLATED or ds.BitsAllocated == 1:
        # Frames cannot be cut out of deflated or bit-packed data: served by decoding instead.
        assert frames == []
        return
    assert layout.value_length == len(ds.PixelData)
    assert path.read_bytes()[layout.value_offset:layout.value_offset + layout.value_length] == ds.PixelData
    if str(declared) == str(ds.get("NumberOfFrames", 1)):
        frame_length = get_expected_length(ds, "bytes") // declared
    else:  # an unreadable NumberOfFrames means one frame
        frame_length = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    expected = [ds.PixelData[i * frame_length:(i + 1) * frame_length] for i in range(declared)]
    assert frames == expected


def test_the_frame_cases_are_covered():
    # Guard: the comparison above must cover multi-frame encapsulated and native data, big endian.
    records = [read_instance(p) for p in IMAGE_FILES]
    assert any(r.number_of_frames > 1 and r.layout.encapsulated for r in records)
    assert any(r.number_of_frames > 1 and not r.layout.encapsulated and r.layout.frames for r in records)
    assert any(r.transfer_syntax == "1.2.840.10008.1.2.2" and r.layout.frames for r in records)


def test_generated_series_frames(ct_series_files, ct_series):
    for path, ds in zip(ct_series_files, ct_series):
        record = read_instance(path)
        assert frames_of(path, record.layout) == [ds.PixelData]
        assert record.number_of_frames == 1
        assert record.level_json("study")["00100020"] == {"vr": "LO", "Value": [ds.PatientID]}
        assert "00080060" in record.level_json("series") and "00080060" not in record.level_json("study")


def test_encapsulated_multiframe_without_offset_table(tmp_path):
    """Three JPEG frames in five fragments and no Basic Offset Table: frames found by their SOI marker."""
    from pydicom.encaps import encapsulate

    source = full_read(pydicom.data.get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    one = next(generate_frames(source.PixelData, number_of_frames=1))
    frames = [one, one[:-2] + b"\x00\xff\xd9", one]
    ds = copy.deepcopy(source)
    ds.NumberOfFrames = 3
    ds.PixelData = encapsulate(frames, fragments_per_frame=1, has_bot=False)
    # Split each frame's single fragment in two to exercise grouping.
    pieces = []
    for f in frames:
        half = len(f) // 2
        half += half % 2
        pieces += [f[:half], f[half:]]
    items = b"".join(struct.pack("<HHL", 0xFFFE, 0xE000, len(p)) + p for p in [b""] + pieces)
    ds.PixelData = items + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    path = tmp_path / "multi.dcm"
    ds.save_as(path, enforce_file_format=True)
    record = read_instance(path)
    assert frames_of(path, record.layout) == frames


def read_bytes_as_instance(tmp_path, content: bytes, name: str = "x.dcm"):
    path = tmp_path / name
    path.write_bytes(content)
    return read_instance(ensure_part10(path, tmp_path))


@pytest.mark.parametrize("content", [b"", b"hello, not DICOM\n" * 20, b"\x00" * 100, b"%PDF-1.4\n" + bytes(range(256)) * 8])
def test_non_dicom_content_is_not_dicom(tmp_path, content):
    with pytest.raises(NotDicomError):
        read_bytes_as_instance(tmp_path, content)


def test_truncated_files_are_not_dicom(tmp_path, ct_series):
    data = samples.dataset_bytes(ct_series[0])
    for cut in (len(data) - 1, len(data) - 300, 1000):
        with pytest.raises(NotDicomError, match="truncated"):
            read_bytes_as_instance(tmp_path, data[:cut], f"cut{cut}.dcm")
    jpeg = pydicom.data.get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    with pytest.raises(NotDicomError, match="truncated|past the end"):
        read_bytes_as_instance(tmp_path, Path(jpeg).read_bytes()[:-20], "jpeg.dcm")


def test_missing_uids(tmp_path, ct_series):
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        ds = copy.deepcopy(ct_series[0])
        delattr(ds, keyword)
        with pytest.raises(MissingAttributeError, match=keyword):
            read_bytes_as_instance(tmp_path, samples.dataset_bytes(ds) if keyword != "SOPClassUID" else _without_class(ds))
    ds = copy.deepcopy(ct_series[0])
    ds.StudyInstanceUID = "1.2.abc"
    with pytest.raises(MissingAttributeError, match="not a valid UID"):
        read_bytes_as_instance(tmp_path, samples.dataset_bytes(ds))


def _without_class(ds) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


@pytest.mark.parametrize("with_meta", [True, False], ids=["meta-no-preamble", "bare-dataset"])
def test_dataset_without_preamble_is_rewritten_as_part10(tmp_path, ct_series, with_meta):
    from io import BytesIO

    ds = copy.deepcopy(ct_series[0])
    if not with_meta:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False, implicit_vr=not with_meta, little_endian=True)
    data = buf.getvalue()
    assert data[128:132] != b"DICM" and (data[:2] == b"\x02\x00") == with_meta
    raw = tmp_path / "raw.dcm"
    raw.write_bytes(data)
    part10 = ensure_part10(raw, tmp_path)
    assert part10 != raw
    assert part10.read_bytes()[128:132] == b"DICM"
    record = read_instance(part10)
    assert record.sop_uid == ds.SOPInstanceUID
    assert frames_of(part10, record.layout) == [ds.PixelData]
    assert record.transfer_syntax == ("1.2.840.10008.1.2.1" if with_meta else "1.2.840.10008.1.2")

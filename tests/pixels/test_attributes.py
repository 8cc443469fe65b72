"""One ImageAttributes for decoding and display: the same reading from a Dataset and from DICOM JSON,
and metadata whose LUT or palette data is a BulkDataURI still decodes."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb_nb.dicom.dicomjson import dataset_to_json
from dicomweb_nb.errors import DisplayError
from dicomweb_nb.pixels.attributes import DEFER_BULK_DATA, ImageAttributes, PixelAttributes
from dicomweb_nb.pixels.decode import apply_rescale, decode_frame
from dicomweb_nb.pixels.voi import to_display
from tests.fixtures.data import read_dicom as read


def _with_luts() -> Dataset:
    """A 16-bit image with a 4096-entry Modality LUT and VOI LUT: 8 KiB each, bulk data in metadata."""
    ds = Dataset()
    ds.Rows, ds.Columns, ds.PhotometricInterpretation, ds.SamplesPerPixel = 4, 4, "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
    for keyword, bits in (("ModalityLUTSequence", 16), ("VOILUTSequence", 12)):
        item = Dataset()
        item.LUTDescriptor = [4096, 0, bits]
        item.add_new(0x00283006, "OW", (np.arange(4096, dtype="<u2") // 2).tobytes())
        setattr(ds, keyword, Sequence([item]))
    ds.PixelData = np.arange(16, dtype="<u2").tobytes()
    ds.set_original_encoding(False, True)
    return ds


def test_lut_data_by_bulk_data_uri_decodes_and_names_itself_when_used():
    ds = _with_luts()
    obj = dataset_to_json(ds)
    assert "BulkDataURI" in obj["00283000"]["Value"][0]["00283006"]
    with pytest.raises(DisplayError, match="00283006.*bulk_data_handler"):
        ImageAttributes.from_json(obj)  # for display: the tables are needed now
    attrs = PixelAttributes.from_json(obj)  # for decoding: they are not
    frame = decode_frame(ds.PixelData, attrs, "1.2.840.10008.1.2.1")
    np.testing.assert_array_equal(frame, np.arange(16).reshape(4, 4))
    with pytest.raises(DisplayError, match="00283006.*bulk_data_handler"):
        apply_rescale(frame, attrs)
    fetched = ImageAttributes.from_json(obj, bulk_data_handler=lambda tag, vr, uri: ds.ModalityLUTSequence[0].LUTData)
    np.testing.assert_array_equal(apply_rescale(frame, fetched), frame // 2)
    deferred = ImageAttributes.from_json(obj, bulk_data_handler=DEFER_BULK_DATA)  # the same, asked for
    with pytest.raises(DisplayError, match="00283006"):
        to_display(frame, deferred)


def test_palette_by_bulk_data_uri_decodes_and_names_itself_when_displayed():
    ds = read("examples_palette.dcm")
    obj = dataset_to_json(ds, bulk_threshold=64)
    attrs = PixelAttributes.from_json(obj)
    assert attrs.stored_photometric_interpretation == "PALETTE COLOR" and attrs.frame_shape == (ds.Rows, ds.Columns)
    with pytest.raises(DisplayError, match="00281201.*bulk_data_handler"):
        to_display(ds.pixel_array, attrs)


def test_enhanced_rescale_is_read_from_the_functional_groups_for_decoding_too():
    """PixelAttributes read only the top-level rescale before: an enhanced CT's frames stayed unrescaled."""
    ds = Dataset()
    ds.Rows, ds.Columns, ds.PhotometricInterpretation, ds.NumberOfFrames = 2, 2, "MONOCHROME2", 2
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    for attrs in (PixelAttributes.from_dataset(ds), PixelAttributes.from_json(ds.to_json_dict())):
        assert apply_rescale(np.full((2, 2), 1024, np.uint16), attrs).tolist() == [[0, 0], [0, 0]]


def _series_json() -> list[dict]:
    """A generated CT series' DICOM JSON, each instance with its own UIDs, position and Pixel Data URI."""
    from dicomweb_nb import samples

    objs = []
    for ds in samples.generate_ct_series(n_slices=6, rows=8, columns=8, seed=4):
        obj = dataset_to_json(ds)
        obj["7FE00010"] = {"vr": "OW", "BulkDataURI": f"http://pacs/instances/{ds.SOPInstanceUID}/bulk/7FE00010"}
        objs.append(obj)
    return objs


def test_attributes_of_many_instances_equal_each_ones_and_are_read_once_per_distinct_set(monkeypatch):
    """``AttributesMemo.from_json`` (a series' planning) reads the attributes once for instances that differ only in
    what the reader does not look at (UIDs, positions, the Pixel Data URI), and anew where a value it reads
    differs: a rescale, a window, Bits Stored, which pixel data element is there (a lower-case key)."""
    from dicomweb_nb.pixels import attributes

    objs = _series_json()
    objs[2]["00281052"] = {"vr": "DS", "Value": [-1000]}  # another intercept
    objs[3]["00281050"] = {"vr": "DS", "Value": [40, 400]}  # other windows
    objs[3]["00281051"] = {"vr": "DS", "Value": [350, 2000]}
    objs[4]["00280004"] = objs[4].pop("00280004")  # the same value, another dict order: shared
    objs[5]["00280101"] = objs[5].pop("00280101")
    objs[5]["00280101"] = {"vr": "US", "Value": [11]}  # Bits Stored
    slope = dict(objs[0])
    slope["00281053"] = {"vr": "DS", "Value": [2]}
    floats = dict(objs[0])
    floats["7fe00008"] = floats.pop("7FE00010")  # Float Pixel Data instead, by a lower-case key
    again = dict(objs[1])  # the first set of values again, after others
    objs += [slope, floats, again]
    reads = []
    original = attributes._read
    monkeypatch.setattr(attributes, "_read", lambda *args, **kw: reads.append(1) or original(*args, **kw))
    memo = attributes.AttributesMemo()
    many = [memo.from_json(obj) for obj in objs]
    assert len(reads) == 6  # objs[0] (shared by 1 and 4), 2, 3, 5, slope, floats; `again` shares objs[0]'s
    monkeypatch.setattr(attributes, "_read", original)
    each = [PixelAttributes.from_json(obj) for obj in objs]
    assert many == each
    assert [a.modality_lut for a in many] == [a.modality_lut for a in each]
    assert many[2].rescale_intercept == -1000 and many[3].windows != many[0].windows
    assert many[5].bits_stored == 11 and many[6].rescale_slope == 2 and many[7].pixel_keyword == "FloatPixelData"
    assert many[1] is many[0] and many[4] is many[0] and many[8] is many[0]

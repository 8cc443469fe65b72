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

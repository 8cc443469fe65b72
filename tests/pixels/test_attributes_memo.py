"""``AttributesMemo``: a series' pixel attributes read once and reused for instances storing the same
values, and never reused where anything the reader looks at differs."""

from __future__ import annotations

import dataclasses
import io
import warnings

import pydicom
import pytest

from dicomweb_nb import samples
from dicomweb_nb.pixels.attributes import AttributesMemo, PixelAttributes


def every_field(attrs: PixelAttributes) -> tuple:
    """All fields, those left out of equality (tables, palette) by what they hold."""
    return tuple(repr(getattr(attrs, f.name)) if not f.compare else getattr(attrs, f.name) for f in dataclasses.fields(attrs))


def image_datasets() -> list[pydicom.Dataset]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in samples.pydicom_test_files():
            try:
                ds = pydicom.dcmread(path)
                if "PixelData" in ds and "Rows" in ds:
                    PixelAttributes.from_dataset(ds)
                    out.append(path)
            except Exception:  # noqa: BLE001 - pydicom's corpus has deliberately broken files
                continue
    return out


def test_one_memo_over_every_image_file_gives_what_each_file_gives_alone():
    """pydicom's files: palettes, LUTs, enhanced objects, every photometric interpretation, in one memo
    (twice over, so that each can come from the memo), each freshly read as a volume reads them."""
    paths = image_datasets()
    assert len(paths) > 40
    memo = AttributesMemo()
    for path in paths + paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = PixelAttributes.from_dataset(pydicom.dcmread(path))
            got = memo.from_dataset(pydicom.dcmread(path))
            assert every_field(got) == every_field(expected), path
            as_json = pydicom.dcmread(path).to_json_dict(bulk_data_threshold=1 << 30, suppress_invalid_tags=True)
            assert every_field(memo.from_json(as_json)) == every_field(PixelAttributes.from_json(as_json)), path


@pytest.mark.parametrize("keyword, value", [("RescaleSlope", "2"), ("RescaleIntercept", "-1000"), ("BitsStored", 16),
                                            ("PixelRepresentation", 1), ("WindowCenter", "-600"), ("Rows", 20)])
def test_an_instance_storing_another_value_is_read_again(keyword, value):
    first, second = samples.generate_ct_series(2, rows=24, columns=24)
    setattr(second, keyword, value)
    if keyword == "Rows":
        second.PixelData = second.PixelData[:20 * 24 * 2]
    memo = AttributesMemo()
    reread = [pydicom.dcmread(io.BytesIO(samples.dataset_bytes(ds)), stop_before_pixels=True) for ds in (first, second, first)]
    got = [memo.from_dataset(ds) for ds in reread]
    assert [every_field(a) for a in got] == [every_field(PixelAttributes.from_dataset(ds)) for ds in (first, second, first)]
    assert got[0] != got[1] and got[2] is got[0]
    as_json = [ds.to_json_dict() for ds in (first, second, first)]
    memo = AttributesMemo()
    got = [memo.from_json(obj) for obj in as_json]
    assert got[0] != got[1] and got[2] is got[0]
    assert [every_field(a) for a in got] == [every_field(PixelAttributes.from_json(obj)) for obj in as_json]

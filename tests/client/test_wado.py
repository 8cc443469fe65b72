"""WADO-RS against a real Orthanc: metadata, datasets, frames of every syntax, rendered images."""

from __future__ import annotations

import warnings
from io import BytesIO

import numpy as np
import pydicom
import pytest
import requests
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicomweb_nb import errors, samples

pytestmark = pytest.mark.orthanc


def test_metadata_one_row_per_instance_with_pydicom_values(client, loaded_orthanc):
    _, files = loaded_orthanc
    ct = next(f for f in files if f.path.name == "CT_small.dcm")
    meta = client.metadata(*ct.uids)
    assert len(meta) == 1
    row = meta.iloc[0]
    assert row.SOPInstanceUID == ct.ds.SOPInstanceUID
    assert row.Rows == ct.ds.Rows and row.BitsStored == ct.ds.BitsStored
    assert row.RescaleIntercept == float(ct.ds.RescaleIntercept)
    assert row.PixelSpacing == [float(v) for v in ct.ds.PixelSpacing]
    assert row.ImageType == list(ct.ds.ImageType)
    study_meta = client.metadata(ct.uids[0])
    assert ct.uids[2] in set(study_meta.SOPInstanceUID)


def test_instance_is_the_stored_file(client, loaded_orthanc):
    _, files = loaded_orthanc
    for name in ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_gdcm.dcm", "693_J2KI.dcm"):
        match = [f for f in files if f.path.name == name]
        if not match:
            continue
        item = match[0]
        ds = client.instance(*item.uids)
        assert ds.SOPInstanceUID == item.ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == item.ds.file_meta.TransferSyntaxUID
        assert ds.PixelData == item.ds.PixelData


def test_series_datasets_streamed(client, orthanc, ct_series):
    with requests.Session() as session:
        for ds in ct_series:
            session.post(f"{orthanc.url}/instances", data=samples.dataset_bytes(ds), timeout=30).raise_for_status()
    study, series = str(ct_series[0].StudyInstanceUID), str(ct_series[0].SeriesInstanceUID)
    got = {str(ds.SOPInstanceUID): ds for ds in client.series_datasets(study, series)}
    assert set(got) == {str(ds.SOPInstanceUID) for ds in ct_series}
    for ds in ct_series:
        assert np.array_equal(got[str(ds.SOPInstanceUID)].pixel_array, ds.pixel_array)
    iterator = client.iter_series_datasets(study, series)
    assert next(iterator).StudyInstanceUID == study
    iterator.close()


def test_frames_of_every_stored_file_equal_pydicom(client, image_files):
    """Each bundled pydicom image, whatever its syntax, decodes to pydicom's own pixel_array."""
    syntaxes = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item in image_files:
            frames = client.frames(*item.uids)
            reference = item.ds.pixel_array
            n = int(item.ds.get("NumberOfFrames", 1) or 1)
            frame_shape = reference.shape[1:] if n > 1 else reference.shape
            assert frames.shape == (n, *frame_shape), item.path.name
            assert frames.dtype == reference.dtype, item.path.name
            assert np.array_equal(frames.reshape(reference.shape), reference), item.path.name
            syntaxes.add(str(item.ds.file_meta.TransferSyntaxUID))
    # JPEG baseline and lossless, JPEG 2000 (both), explicit little and big endian, deflated
    assert {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"} <= syntaxes


def test_frame_selection_and_bad_numbers(client, image_files):
    ybr = next(f for f in image_files if f.path.name == "examples_ybr_color.dcm")
    reference = ybr.ds.pixel_array
    picked = client.frames(*ybr.uids, frames=[3, 1, 30])
    assert np.array_equal(picked, reference[[2, 0, 29]])
    assert np.array_equal(client.frames(*ybr.uids, frames=2)[0], reference[1])
    with pytest.raises(ValueError, match="outside 1..30"):
        client.frames(*ybr.uids, frames=[0])


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda uid: uid.name)
def test_frames_of_compressed_uploads(client, orthanc, syntax):
    """Syntaxes pydicom's corpus lacks here, made with pydicom's encoders, stored, and read back as frames."""
    series = samples.generate_ct_series(n_slices=2, rows=48, columns=40, seed=3)
    for ds in series:
        ds.compress(syntax)
    with requests.Session() as session:
        for ds in series:
            session.post(f"{orthanc.url}/instances", data=samples.dataset_bytes(ds), timeout=30).raise_for_status()
    for ds in series:
        uids = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        frames = client.frames(*uids)
        assert np.array_equal(frames[0], ds.pixel_array)
        hu = client.frames(*uids, rescale=True)
        assert hu.dtype == np.float32
        assert np.allclose(hu[0], apply_modality_lut(ds.pixel_array, ds))


def test_rescale_matches_pydicom(client, image_files):
    ct = next(f for f in image_files if f.path.name == "CT_small.dcm")
    hu = client.frames(*ct.uids, rescale=True)
    assert np.allclose(hu[0], apply_modality_lut(ct.ds.pixel_array, ct.ds))


def test_missing_instance_is_not_found(client, image_files):
    study, series, _ = image_files[0].uids
    with pytest.raises(errors.NotFound) as caught:
        client.frames(study, series, "1.2.3.4.5.6.7")
    assert caught.value.status == 404


def test_rendered_and_thumbnail_are_pil_images(client, image_files):
    ct = next(f for f in image_files if f.path.name == "CT_small.dcm")
    image = client.rendered(*ct.uids)
    assert image.size == (ct.ds.Columns, ct.ds.Rows)
    windowed = client.rendered(*ct.uids, window=(40, 400), media_type="image/jpeg")
    assert windowed.format == "JPEG"
    small = client.rendered(*ct.uids, frame=1, viewport=(32, 32))
    assert max(small.size) <= 32
    thumb = client.thumbnail(ct.uids[0], ct.uids[1], size=64)
    assert max(thumb.size) <= 64
    assert np.asarray(thumb).size > 0


def test_instance_bytes_parse_with_pydicom(client, image_files):
    ct = next(f for f in image_files if f.path.name == "CT_small.dcm")
    parts = list(client.source.iter_instances(*ct.uids))
    assert len(parts) == 1
    assert pydicom.dcmread(BytesIO(parts[0])).SOPInstanceUID == ct.ds.SOPInstanceUID

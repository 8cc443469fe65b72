"""The third-party dicomweb-client library retrieves everything from our server (issue 3)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from dicomweb_nb import samples
from tests.fixtures.ourserver import start_standalone


@pytest.fixture(scope="module")
def stored(tmp_path_factory, store_backend):
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so URLs in answers are pinned.
    server = start_standalone(tmp_path_factory.mktemp("dwc"), pin_public_url=True, backend=store_backend)
    series = samples.generate_ct_series(4, rows=32, columns=32, patient_id="DWC-RETRIEVE")
    client = DICOMwebClient(server.dicomweb_url)
    client.store_instances(series)
    yield client, series
    server.stop()


def test_retrieve_study_series_instance(stored):
    client, series = stored
    ds = series[0]
    study = client.retrieve_study(ds.StudyInstanceUID)
    assert sorted(i.SOPInstanceUID for i in study) == sorted(d.SOPInstanceUID for d in series)
    in_series = client.retrieve_series(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert len(in_series) == len(series)
    instance = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert np.array_equal(instance.pixel_array, ds.pixel_array)
    assert instance.PatientName == ds.PatientName


def test_retrieve_metadata_frames_rendered_bulkdata(stored):
    client, series = stored
    ds = series[1]
    metadata = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert len(metadata) == len(series)
    study_metadata = client.retrieve_study_metadata(ds.StudyInstanceUID)
    assert len(study_metadata) == len(series)
    one = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert one["00080018"]["Value"] == [ds.SOPInstanceUID]
    frames = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1])
    assert bytes(frames[0]) == ds.PixelData
    rendered = client.retrieve_instance_rendered(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                                 media_types=("image/png",))
    assert Image.open(io.BytesIO(rendered)).size == (32, 32)
    rendered_frame = client.retrieve_instance_frames_rendered(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1],
                                                              media_types=("image/jpeg",))
    assert Image.open(io.BytesIO(rendered_frame)).format == "JPEG"
    bulk = client.retrieve_bulkdata(one["7FE00010"]["BulkDataURI"])
    assert bytes(bulk[0]) == ds.PixelData

"""``dw.connect()`` without a URL: the workspace store in-process, answering as our server does over HTTP."""

from __future__ import annotations

import numpy as np
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.client.local import StoreSource
from tests.fixtures.backends import open_store
from tests.fixtures.ourserver import start_standalone

pytestmark = pytest.mark.usefixtures("use_store_backend")  # every store backend, the notebook's side included


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, store_backend):
    root = tmp_path_factory.mktemp("workspace")
    series = samples.generate_ct_series(8, rows=24, columns=24, patient_id="LOCAL-1", slice_spacing=3.0)
    open_store(root / ".dicomweb", store_backend).close()  # a team store leaves its marker for dw.connect()
    local = dw.connect(store=root / ".dicomweb", progress=False)
    results = local.store(series)
    assert (results["status"] == "stored").all()
    return root, series


def test_connect_without_target_finds_the_workspace_store(workspace, monkeypatch):
    root, series = workspace
    monkeypatch.delenv("DICOMWEB_NB_STORE", raising=False)
    (root / "notebooks").mkdir(exist_ok=True)
    monkeypatch.chdir(root / "notebooks")  # the store is found in a parent folder, as from notebooks/
    client = dw.connect(progress=False)
    assert isinstance(client.source, StoreSource)
    found = client.studies(PatientID="LOCAL-1")
    assert list(found["StudyInstanceUID"]) == [series[0].StudyInstanceUID]


def test_local_answers_equal_http_answers(workspace, tmp_path):
    root, series = workspace
    local = dw.connect(store=root / ".dicomweb", progress=False)
    server = start_standalone(tmp_path, root / ".dicomweb")
    try:
        remote = dw.connect(server.dicomweb_url, progress=False)
        ds = series[0]
        for call in (lambda c: c.studies(PatientID="LOCAL-1"), lambda c: c.series(ds.StudyInstanceUID),
                     lambda c: c.instances(ds.StudyInstanceUID, ds.SeriesInstanceUID)):
            a, b = call(local), call(remote)
            assert list(a.columns) == list(b.columns)
            assert a.drop(columns=[c for c in a.columns if c == "RetrieveURL"]).equals(
                b.drop(columns=[c for c in b.columns if c == "RetrieveURL"]))
        assert np.array_equal(local.frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID),
                              remote.frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
        vol_a = local.volume(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        vol_b = remote.volume(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert np.array_equal(vol_a.array, vol_b.array) and np.allclose(vol_a.spacing, vol_b.spacing)
        assert np.allclose(vol_a.spacing[0], 3.0)
        assert local.rendered(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID).size == (24, 24)
        meta = local.metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert len(meta) == len(series)
    finally:
        server.stop()


def test_local_errors_are_the_clients(workspace):
    root, _series = workspace
    local = dw.connect(store=root / ".dicomweb", progress=False)
    assert local.series("1.2.3.4").empty  # an unknown study matches nothing, as over HTTP
    with pytest.raises(dw.errors.NotFound, match="not in this store"):
        local.metadata("1.2.3.4")
    with pytest.raises(dw.errors.InvalidFilter):
        local.studies(NoSuchKeyword="x")


@pytest.mark.parametrize("method", ["bulkdata", "series", "frames"])
def test_every_volume_method_gives_the_same_volume_from_our_server(workspace, tmp_path, method):
    root, series = workspace
    server = start_standalone(tmp_path, root / ".dicomweb")
    try:
        remote = dw.connect(server.dicomweb_url, progress=False)
        ds = series[0]
        vol = remote.volume(ds.StudyInstanceUID, ds.SeriesInstanceUID, method=method)
        reference = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                              for d in sorted(series, key=lambda d: float(d.ImagePositionPatient[2]))])
        assert np.array_equal(vol.array, reference)
        assert vol.rescaled
    finally:
        server.stop()


def test_bulkdata_volume_of_compressed_series(tmp_path):
    from pydicom.uid import RLELossless

    series = samples.generate_ct_series(5, rows=32, columns=32, patient_id="RLE-VOL")
    for ds in series:
        ds.compress(RLELossless, generate_instance_uid=False)
    server = start_standalone(tmp_path)
    try:
        client = dw.connect(server.dicomweb_url, progress=False)
        client.store(series)
        ds = series[0]
        vol = client.volume(ds.StudyInstanceUID, ds.SeriesInstanceUID, method="bulkdata", rescale=False)
        assert np.array_equal(vol.array, np.stack([d.pixel_array for d in series]))
    finally:
        server.stop()


def test_auto_volume_falls_back_where_bulkdata_is_missing(orthanc, tmp_path):
    orthanc.clear()
    series = samples.generate_ct_series(4, rows=16, columns=16, patient_id="AUTO-VOL")
    client = dw.connect(orthanc.dicomweb_url, progress=False)
    client.store(series)
    vol = client.volume(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)  # Orthanc 1.10: no /bulkdata
    assert vol.shape == (4, 16, 16)
    with pytest.raises(dw.errors.DicomWebError):
        client.volume(series[0].StudyInstanceUID, series[0].SeriesInstanceUID, method="bulkdata")

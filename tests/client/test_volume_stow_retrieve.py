"""Volumes, STOW-RS and retrieve against real Orthancs, with generated series of known geometry."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import requests
from pydicom.uid import RLELossless

import dicomweb_nb as dw
from dicomweb_nb import errors, samples
from tests.fixtures.orthanc import OrthancProcess

pytestmark = pytest.mark.orthanc


def _shuffled(datasets, seed=5):
    out = list(datasets)
    random.Random(seed).shuffle(out)
    return out


@pytest.fixture(scope="module")
def oblique_series(orthanc):
    """A series with known, non-axial geometry, stored through the client in shuffled order."""
    series = samples.generate_ct_series(n_slices=9, rows=24, columns=20, pixel_spacing=(0.7, 0.9), slice_spacing=3.0,
                                        orientation=(1, 0, 0, 0, 0, -1), origin=(-10.0, 5.0, 40.0), seed=11)
    with dw.connect(orthanc.dicomweb_url, progress=False) as pacs:
        result = pacs.store(_shuffled(series), batch_size=4)
    assert result.status.tolist() == ["stored"] * len(series)
    return series


@pytest.mark.parametrize("method", ["series", "frames"])
def test_volume_geometry_and_values(client, oblique_series, method):
    study, series_uid = str(oblique_series[0].StudyInstanceUID), str(oblique_series[0].SeriesInstanceUID)
    vol = client.volume(study, series_uid, method=method)
    assert vol.shape == (9, 24, 20)
    assert vol.array.dtype == np.float32 and vol.rescaled
    assert vol.spacing == pytest.approx((3.0, 0.7, 0.9))
    assert vol.origin == pytest.approx((-10.0, 5.0, 40.0))
    # rows of direction: slice normal (row x column cosines), column cosines, row cosines
    assert np.allclose(vol.direction, [[0, 1, 0], [0, 0, -1], [1, 0, 0]])
    expected = np.stack([ds.pixel_array.astype(np.float32) - 1024 for ds in oblique_series])  # generation order
    assert np.array_equal(vol.array, expected)
    assert [key[0] for key in vol.keys] == [str(ds.SOPInstanceUID) for ds in oblique_series]
    for k in (0, 4, 8):
        assert np.allclose(vol.position_of(k, 0, 0), oblique_series[k].ImagePositionPatient)
    assert np.allclose(
        vol.position_of(2, 3, 5),
        np.asarray(oblique_series[2].ImagePositionPatient) + 3 * 0.7 * np.array([0, 0, -1]) + 5 * 0.9 * np.array([1, 0, 0]),
    )
    stored = client.volume(study, series_uid, rescale=False, method=method)
    assert stored.array.dtype == np.uint16 and not stored.rescaled
    assert np.array_equal(stored.array, np.stack([ds.pixel_array for ds in oblique_series]))


def test_volume_to_xarray_in_millimetres(client, oblique_series):
    vol = client.volume(str(oblique_series[0].StudyInstanceUID), str(oblique_series[0].SeriesInstanceUID))
    xa = vol.to_xarray()
    assert xa.dims == ("slice", "row", "column")
    assert np.allclose(np.diff(xa.coords["slice"]), 3.0)
    assert np.allclose(np.diff(xa.coords["column"]), 0.9)
    assert xa.coords["slice"][0] == pytest.approx(5.0)  # origin projected on the normal (0, 1, 0)
    assert xa.coords["row"][0] == pytest.approx(-40.0)  # ... on the column direction (0, 0, -1)


def test_volume_of_compressed_series(client, orthanc):
    series = samples.generate_ct_series(n_slices=5, rows=16, columns=16, seed=2)
    for ds in series:
        ds.compress(RLELossless)
    client.store(_shuffled(series))
    vol = client.volume(str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID), rescale=False)
    assert np.array_equal(vol.array, np.stack([ds.pixel_array for ds in series]))


def test_volume_refuses_mixed_orientations(client):
    axial = samples.generate_ct_series(n_slices=3, rows=8, columns=8)
    scout = samples.generate_ct_series(n_slices=1, rows=8, columns=8, orientation=(1, 0, 0, 0, 0, -1),
                                       study_uid=str(axial[0].StudyInstanceUID), series_uid=str(axial[0].SeriesInstanceUID))
    client.store(axial + scout)
    for method in ("series", "frames"):
        with pytest.raises(errors.VolumeError, match="mixed orientations"):
            client.volume(str(axial[0].StudyInstanceUID), str(axial[0].SeriesInstanceUID), method=method)


def test_volume_refuses_mixed_sizes(client):
    base = samples.generate_ct_series(n_slices=3, rows=8, columns=8)
    other = samples.generate_ct_series(n_slices=1, rows=10, columns=8, origin=(-25.6, -25.6, 100.0),
                                       study_uid=str(base[0].StudyInstanceUID), series_uid=str(base[0].SeriesInstanceUID))
    client.store(base + other)
    with pytest.raises(errors.VolumeError, match="sizes|shape"):
        client.volume(str(base[0].StudyInstanceUID), str(base[0].SeriesInstanceUID))


def test_store_paths_folders_bytes_and_garbage(client, tmp_path):
    series = samples.generate_ct_series(n_slices=4, rows=8, columns=8)
    folder = tmp_path / "scans"
    paths = samples.write_series(series[:3], folder / "nested")
    (folder / "notes.txt").write_text("not DICOM")
    result = client.store([folder, samples.dataset_bytes(series[3])], batch_size=2)
    by_label = result.set_index("label")
    assert by_label.loc[str(paths[0]), "status"] == "stored"
    assert by_label.loc[str(folder / "notes.txt"), "status"] == "skipped"
    assert "not a readable DICOM file" in by_label.loc[str(folder / "notes.txt"), "error"]
    assert by_label.loc["bytes[1]", "status"] == "stored"
    assert sorted(result.dropna(subset=["SOPInstanceUID"]).SOPInstanceUID) == sorted(str(d.SOPInstanceUID) for d in series)
    assert set(result.batch.dropna()) == {0, 1}
    found = client.instances(str(series[0].StudyInstanceUID))
    assert set(found.SOPInstanceUID) == {str(d.SOPInstanceUID) for d in series}


def test_store_reports_refused_instances(client):
    ds = samples.generate_ct_series(n_slices=1, rows=8, columns=8)[0]
    ds.StudyInstanceUID = "1.2.3.999"  # does not belong to the study named in the URL
    result = client.store([ds], study="1.2.3.888")
    assert result.status.tolist() == ["failed"]
    assert result.SOPInstanceUID.tolist() == [str(ds.SOPInstanceUID)]


def test_retrieve_to_folder_is_resumable(client, oblique_series, tmp_path):
    study, series_uid = str(oblique_series[0].StudyInstanceUID), str(oblique_series[0].SeriesInstanceUID)
    first = client.retrieve(study, series_uid, to=tmp_path)
    assert first.status.tolist() == ["retrieved"] * 9
    files = sorted(Path(p) for p in first.path)
    assert all(p.exists() and p.parent == tmp_path / study / series_uid for p in files)
    files[0].unlink()
    again = client.retrieve(study, to=tmp_path)
    assert sorted(again.status.tolist()) == ["present"] * 8 + ["retrieved"]
    import pydicom

    back = pydicom.dcmread(files[0])
    original = next(ds for ds in oblique_series if str(ds.SOPInstanceUID) == str(back.SOPInstanceUID))
    assert np.array_equal(back.pixel_array, original.pixel_array)
    assert not list(tmp_path.rglob(".partial-*"))
    one = client.retrieve(study, series_uid, str(oblique_series[0].SOPInstanceUID), to=tmp_path / "one")
    assert one.status.tolist() == ["retrieved"]


def test_retrieve_into_another_server(client, oblique_series, tmp_path_factory):
    other = OrthancProcess(tmp_path_factory.mktemp("orthanc-target"))
    try:
        study = str(oblique_series[0].StudyInstanceUID)
        with dw.connect(other.dicomweb_url, progress=False) as target:
            first = client.retrieve(study, to=target, batch_size=4)
            assert first.status.tolist() == ["retrieved"] * 9
            assert set(target.instances(study).SOPInstanceUID) == {str(d.SOPInstanceUID) for d in oblique_series}
            again = client.retrieve(study, to=target)
            assert again.status.tolist() == ["present"] * 9
            vol = target.volume(study, str(oblique_series[0].SeriesInstanceUID))
            assert vol.spacing == pytest.approx((3.0, 0.7, 0.9))
    finally:
        other.stop()


def test_bad_retrieve_destination(client, oblique_series):
    with pytest.raises(TypeError, match="folder path or a Client"):
        client.retrieve(str(oblique_series[0].StudyInstanceUID), to=42)


def test_orthanc_answers_bulk_uncompressed(orthanc, oblique_series):
    """Why the client asks for identity encoding: Orthanc gzips frames otherwise (see web.py)."""
    ds = oblique_series[0]
    url = (f"{orthanc.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/1")
    accept = 'multipart/related; type="application/octet-stream"'
    gzip = requests.get(url, headers={"Accept": accept}, stream=True, timeout=10)
    plain = requests.get(url, headers={"Accept": accept, "Accept-Encoding": "identity"}, stream=True, timeout=10)
    assert gzip.headers.get("Content-Encoding") == "gzip"
    assert "Content-Encoding" not in plain.headers

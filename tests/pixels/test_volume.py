"""Volume assembly: sorting along the normal, geometry, and clear refusals."""

from __future__ import annotations

import random

import numpy as np
import pytest

from dicomweb_nb import samples
from dicomweb_nb.pixels.volume import SliceGeometry, VolumeError, assemble_volume, plan_volume


def _geometries(datasets):
    return [SliceGeometry.from_dataset(ds) for ds in datasets]


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1),
                                         (0.8660254, 0.5, 0, -0.5, 0.8660254, 0)])
def test_shuffled_slices_sorted_along_the_normal(orientation):
    series = samples.generate_ct_series(n_slices=7, rows=6, columns=5, slice_spacing=1.25, pixel_spacing=(0.5, 0.6),
                                        orientation=orientation, origin=(3.0, -4.0, 5.0))
    shuffled = list(series)
    random.Random(3).shuffle(shuffled)
    vol = assemble_volume(_geometries(shuffled), [ds.pixel_array for ds in shuffled])
    assert np.array_equal(vol.array, np.stack([ds.pixel_array for ds in series]))
    assert vol.spacing == pytest.approx((1.25, 0.5, 0.6))
    assert vol.origin == pytest.approx(series[0].ImagePositionPatient)
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    assert np.allclose(vol.direction, [np.cross(row, col), col, row], atol=1e-6)
    assert [k[0] for k in vol.keys] == [str(ds.SOPInstanceUID) for ds in series]
    # the affine takes voxel indices to each slice's Image Position (Patient)
    for k, ds in enumerate(series):
        assert np.allclose(vol.position_of(k, 0, 0), ds.ImagePositionPatient, atol=1e-3)
    assert np.allclose(vol.position_of(0, 2, 3), np.asarray(series[0].ImagePositionPatient) + 2 * 0.5 * col + 3 * 0.6 * row,
                       atol=1e-3)


def test_geometry_from_json_equals_from_dataset():
    ds = samples.generate_ct_series(n_slices=1, rows=4, columns=4)[0]
    as_json = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda elem: "bulk")
    assert SliceGeometry.from_json(as_json) == SliceGeometry.from_dataset(ds)


def test_enhanced_multiframe_geometry_from_functional_groups():
    def item(**elements):
        return {tag: {"vr": vr, "Value": values} for tag, (vr, values) in elements.items()}

    obj = {
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        "00280010": {"vr": "US", "Value": [4]}, "00280011": {"vr": "US", "Value": [4]},
        "52009229": {"vr": "SQ", "Value": [{
            "00209116": {"vr": "SQ", "Value": [item(**{"00200037": ("DS", [1, 0, 0, 0, 1, 0])})]},
            "00289110": {"vr": "SQ", "Value": [item(**{"00280030": ("DS", [0.5, 0.5])})]},
        }]},
        "52009230": {"vr": "SQ", "Value": [
            {"00209113": {"vr": "SQ", "Value": [item(**{"00200032": ("DS", [0, 0, z])})]}} for z in (10.0, 12.0, 11.0)
        ]},
    }
    slices = [SliceGeometry.from_json(obj, frame=f) for f in (1, 2, 3)]
    assert [s.position[2] for s in slices] == [10.0, 12.0, 11.0]
    plan = plan_volume(slices)
    assert plan.order == [0, 2, 1] and plan.spacing == pytest.approx((1.0, 0.5, 0.5))


def _plan(series):
    return plan_volume(_geometries(series))


def test_refuses_mixed_orientations():
    a = samples.generate_ct_series(n_slices=2, rows=4, columns=4)
    b = samples.generate_ct_series(n_slices=1, rows=4, columns=4, orientation=(1, 0, 0, 0, 0, -1))
    with pytest.raises(VolumeError, match="mixed orientations"):
        _plan(a + b)


def test_refuses_mixed_sizes_and_spacings():
    a = samples.generate_ct_series(n_slices=2, rows=4, columns=4)
    with pytest.raises(VolumeError, match="mixed image sizes: 4x4"):
        _plan(a + samples.generate_ct_series(n_slices=1, rows=5, columns=4, origin=(0, 0, 50)))
    with pytest.raises(VolumeError, match="mixed pixel spacings"):
        _plan(a + samples.generate_ct_series(n_slices=1, rows=4, columns=4, pixel_spacing=(1, 1), origin=(0, 0, 50)))


def test_refuses_duplicates_and_gaps():
    series = samples.generate_ct_series(n_slices=5, rows=4, columns=4)
    with pytest.raises(VolumeError, match="same position"):
        _plan(series + [series[2]])
    with pytest.raises(VolumeError, match="irregular slice spacing"):
        _plan(series[:2] + series[3:])


def test_refuses_missing_geometry():
    ds = samples.generate_ct_series(n_slices=1, rows=4, columns=4)[0]
    del ds.ImagePositionPatient
    with pytest.raises(VolumeError, match="Image Position"):
        SliceGeometry.from_dataset(ds)
    with pytest.raises(VolumeError, match="no slices"):
        plan_volume([])


def test_single_slice_and_mismatched_arrays():
    ds = samples.generate_ct_series(n_slices=1, rows=4, columns=4)[0]
    vol = assemble_volume(_geometries([ds]), [ds.pixel_array])
    assert vol.shape == (1, 4, 4)
    with pytest.raises(VolumeError, match="1 slice geometries but 2 arrays"):
        assemble_volume(_geometries([ds]), [ds.pixel_array, ds.pixel_array])
    with pytest.raises(VolumeError, match="geometry says 4x4"):
        assemble_volume(_geometries([ds]), [np.zeros((3, 4))])


def test_to_xarray_coordinates():
    pytest.importorskip("xarray")
    series = samples.generate_ct_series(n_slices=3, rows=4, columns=5, slice_spacing=2.0, pixel_spacing=(0.5, 0.25),
                                        origin=(10.0, 20.0, 30.0))
    xa = assemble_volume(_geometries(series), [ds.pixel_array for ds in series]).to_xarray()
    assert xa.coords["slice"].values.tolist() == [30.0, 32.0, 34.0]
    assert xa.coords["row"].values.tolist() == [20.0, 20.5, 21.0, 21.5]
    assert xa.coords["column"].values.tolist() == [10.0, 10.25, 10.5, 10.75, 11.0]
    assert xa.attrs["units"] == "mm"

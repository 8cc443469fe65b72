"""Whole-slide images as lazy pyramids (``pacs.slide``), generated TILED_FULL (tiles in highdicom's order),
against our server over HTTP, the in-process store and Orthanc."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import dicomweb_nb as dw
from dicomweb_nb import errors

from .lazy_helpers import counting, tiled_slide

pytestmark = [pytest.mark.orthanc, pytest.mark.usefixtures("private_frame_cache")]
TILE = (64, 64)


@pytest.fixture(scope="module")
def slides():
    native, levels = tiled_slide(tile=TILE)
    compressed, _ = tiled_slide(tile=TILE, compress="1.2.840.10008.1.2.5")  # RLE: lossless, decoded here
    sparse, _ = tiled_slide(sizes=((100, 100),), tile=TILE, organization="TILED_SPARSE")
    return {"native": native, "rle": compressed, "sparse": sparse}, levels


@pytest.fixture(scope="module")
def slide_sources(slides, our_server, orthanc):
    datasets, _ = slides
    for url in (our_server.dicomweb_url, orthanc.dicomweb_url):
        with dw.connect(url, progress=False) as pacs:
            for series in datasets.values():
                assert set(pacs.store(series).status) == {"stored"}
    return {"ours": our_server.dicomweb_url, "orthanc": orthanc.dicomweb_url, "local": our_server.store_dir}


@pytest.fixture(params=["ours", "local", "orthanc"])
def slide_client(request, slide_sources):
    target = slide_sources[request.param]
    pacs = dw.connect(store=target, progress=False) if request.param == "local" else dw.connect(target, progress=False)
    with pacs:
        yield pacs


def _uids(datasets):
    return str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)


@pytest.mark.parametrize("flavor", ["native", "rle"])
def test_pyramid_levels_equal_the_slide_bit_for_bit(slide_client, slides, flavor):
    datasets, levels = slides
    slide = slide_client.slide(*_uids(datasets[flavor]))
    assert len(slide) == 3  # the label image is not a level
    assert slide.shapes == [level.shape for level in levels]
    assert [info.tile for info in slide.level_info] == [TILE] * 3
    assert slide.downsamples == pytest.approx([1.0, 2.0, 470 / 118])
    assert slide.level_info[0].pixel_spacing == pytest.approx((25.0e-4, 25.0e-4))
    for array, expected in zip(slide.levels, levels):
        assert isinstance(array, da.Array) and array.dtype == np.uint8
        assert np.array_equal(array.compute(), expected)
    level0 = slide.levels[0]
    assert np.array_equal(level0[100:230, 50:400].compute(), levels[0][100:230, 50:400])
    assert np.array_equal(level0[::7, 3::11, 1].compute(), levels[0][::7, 3::11, 1])
    assert np.array_equal(level0[299, 469].compute(), levels[0][299, 469])  # the last pixel, in a padded edge tile


def test_a_region_fetches_only_its_tiles_in_one_request(slide_client, slides):
    datasets, levels = slides
    slide = slide_client.slide(*_uids(datasets["native"]), cache=False)
    instance = slide.level_info[0].instance
    with counting(slide_client) as log:
        region = slide.levels[0][70:140, 120:200].compute()  # tile rows 1-2, tile columns 1-3
    assert np.array_equal(region, levels[0][70:140, 120:200])
    tiles_across = slide.level_info[0].tiles[1]
    expected = sorted(1 + ty * tiles_across + tx for ty in (1, 2) for tx in (1, 2, 3))
    assert [(uid, sorted(numbers)) for uid, numbers in log.frames] == [(instance, expected)]


def test_slide_tiles_are_cached(slides, slide_sources):
    datasets, _levels = slides
    with dw.connect(slide_sources["ours"], progress=False) as pacs:
        slide = pacs.slide(*_uids(datasets["rle"]))
        first = slide.levels[1][:64, :64].compute()
        with counting(pacs) as log:
            again = pacs.slide(*_uids(datasets["rle"])).levels[1][10:60, 5:50].compute()
        assert log.frames == [] and np.array_equal(again, first[10:60, 5:50])
    assert dw.cache.info()["frames"] == 1


def test_tiled_sparse_is_refused_clearly(slide_client, slides):
    datasets, _ = slides
    with pytest.raises(errors.DicomWebError, match="TILED_SPARSE, not TILED_FULL"):
        slide_client.slide(*_uids(datasets["sparse"]))


def test_a_series_without_tiles_is_not_a_slide(slide_client, slides):
    datasets, _ = slides
    study, _ = _uids(datasets["native"])
    with pytest.raises(errors.NotFound):
        slide_client.slide(study, "1.2.3.4.5.6")

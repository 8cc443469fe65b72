"""Fixtures of the lazy pixel tests: one client per source (our server over HTTP, the in-process store,
Orthanc), each holding the same generated series, and a private frame cache per test.

A plugin of the whole suite (tests/conftest.py); the lazy tests use ``private_frame_cache``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples

from .lazy_helpers import enhanced_ct, oblique_series, shuffled

SOURCES = ["ours", "local", "orthanc"]


@dataclass
class LazyData:
    """The generated series stored in every source: name -> (study, series, datasets)."""

    series: dict = field(default_factory=dict)
    enhanced_volume: object = None

    def uids(self, name: str) -> tuple[str, str]:
        study, series, _ = self.series[name]
        return study, series


@pytest.fixture(scope="session")
def lazy_data() -> LazyData:
    data = LazyData()
    ct = samples.generate_ct_series(n_slices=14, rows=32, columns=28, seed=21)
    data.series["ct"] = (str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID), shuffled(ct))
    oblique = oblique_series()
    data.series["oblique"] = (str(oblique[0].StudyInstanceUID), str(oblique[0].SeriesInstanceUID), shuffled(oblique, 9))
    enhanced, volume = enhanced_ct(n_frames=10)
    data.series["enhanced"] = (str(enhanced[0].StudyInstanceUID), str(enhanced[0].SeriesInstanceUID), enhanced)
    data.enhanced_volume = volume
    rle = samples.generate_ct_series(n_slices=6, rows=16, columns=16, seed=2)
    for ds in rle:
        ds.compress("1.2.840.10008.1.2.5")
    data.series["rle"] = (str(rle[0].StudyInstanceUID), str(rle[0].SeriesInstanceUID), shuffled(rle, 3))
    return data


def _load(pacs, data: LazyData) -> None:
    for _study, _series, datasets in data.series.values():
        result = pacs.store(datasets, batch_size=20)
        assert set(result.status) == {"stored"}, result


@pytest.fixture(scope="session")
def lazy_ours(our_server, lazy_data):
    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        _load(pacs, lazy_data)
    return our_server


@pytest.fixture(scope="session")
def lazy_orthanc(orthanc, lazy_data):
    with dw.connect(orthanc.dicomweb_url, progress=False) as pacs:
        _load(pacs, lazy_data)
    return orthanc


@pytest.fixture(params=SOURCES)
def lazy_client(request, lazy_data, store_backend):
    """A Client of each source holding ``lazy_data``."""
    if request.param == "ours":
        server = request.getfixturevalue("lazy_ours")
        pacs = dw.connect(server.dicomweb_url, progress=False)
    elif request.param == "local":
        server = request.getfixturevalue("lazy_ours")
        pacs = dw.connect(store=server.store_dir, progress=False)
    else:
        server = request.getfixturevalue("lazy_orthanc")
        pacs = dw.connect(server.dicomweb_url, progress=False)
    pacs.kind = request.param
    with pacs:
        yield pacs


@pytest.fixture()
def private_frame_cache(tmp_path, monkeypatch):
    """Each test its own frame cache folder (also for the processes it starts)."""
    folder = tmp_path / "frame-cache"
    monkeypatch.setenv("DICOMWEB_NB_CACHE_DIR", str(folder))
    previous = dw.cache.settings()
    dw.cache.configure(directory=folder, enabled=True)
    yield folder
    dw.cache.configure(directory=previous.directory, size_limit=previous.size_limit, enabled=previous.enabled)

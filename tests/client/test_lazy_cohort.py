"""Cohorts on a dask.distributed LocalCluster (2 worker processes): lazy volumes computed on the
workers, and a dask bag of per-series results, against our server and the in-process store."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("private_frame_cache")


@pytest.fixture(scope="module")
def cohort_server(tmp_path_factory):
    from tests.fixtures.ourserver import start_standalone

    server = start_standalone(tmp_path_factory.mktemp("cohort"))
    study = samples.generate_ct_series(n_slices=1, rows=8, columns=8)[0].StudyInstanceUID
    with dw.connect(server.dicomweb_url, progress=False) as pacs:
        for number in range(5):
            series = samples.generate_ct_series(n_slices=6 + number, rows=24, columns=16, seed=number,
                                                study_uid=str(study), series_number=number + 1,
                                                patient_id=f"COHORT-{number}")
            assert set(pacs.store(series).status) == {"stored"}
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster:
        yield cluster


def _sources_revived() -> int:
    from dicomweb_nb.client import lazy

    return len(lazy._live_sources)


@pytest.mark.parametrize("where", ["http", "local"])
def test_lazy_cohort_on_a_local_cluster(cohort_server, cluster, where):
    url = cohort_server.dicomweb_url
    with dw.connect(url, progress=False) as pacs:
        series = pacs.series(Modality="CT", PatientID="COHORT-*")
        assert len(series) == 5
        eager = {uid: pacs.volume(study, uid) for study, uid in zip(series.StudyInstanceUID, series.SeriesInstanceUID)}
    pacs = dw.connect(url, progress=False) if where == "http" else dw.connect(store=cohort_server.store_dir, progress=False)
    with pacs, distributed.Client(cluster) as client:
        volumes = pacs.volumes(series)
        assert [v.shape[0] for v in volumes] == [eager[uid].shape[0] for uid in series.SeriesInstanceUID]
        means = dask.compute(*[v.array.mean(axis=(1, 2)) for v in volumes])  # runs on the workers
        for uid, got in zip(series.SeriesInstanceUID, means):
            assert np.array_equal(got, eager[uid].array.mean(axis=(1, 2)))
        # The workers did the reading: the source was revived in the worker processes.
        revived = client.run(_sources_revived)
        assert len(revived) == 2 and sum(revived.values()) >= 1
        middle = volumes[2].array[volumes[2].shape[0] // 2].compute()
        assert np.array_equal(middle, eager[series.SeriesInstanceUID[2]].array[volumes[2].shape[0] // 2])


def test_cohort_bag_runs_the_function_on_the_workers(cohort_server, cluster):
    with dw.connect(cohort_server.dicomweb_url, progress=False) as pacs, distributed.Client(cluster):
        series = pacs.series(PatientID="COHORT-*")
        bag = pacs.cohort(series, lambda volume: (volume.shape, float(volume.array.max()), __import__("os").getpid()))
        results = bag.compute()
        assert len({pid for _, _, pid in results}) == 2  # both workers loaded series
        for (shape, top, _), study, uid in zip(results, series.StudyInstanceUID, series.SeriesInstanceUID):
            eager = pacs.volume(study, uid)
            assert shape == eager.shape and top == float(eager.array.max())
        volumes = pacs.cohort([(series.StudyInstanceUID[0], series.SeriesInstanceUID[0])]).compute()
        assert isinstance(volumes[0], dw.Volume) and isinstance(volumes[0].array, np.ndarray)


def test_cohort_arguments_are_checked(cohort_server):
    with dw.connect(cohort_server.dicomweb_url, progress=False) as pacs:
        with pytest.raises(ValueError, match="SeriesInstanceUID"):
            pacs.volumes(pd.DataFrame({"StudyInstanceUID": ["1.2"]}))
        with pytest.raises(ValueError, match="pairs"):
            pacs.volumes([("1.2", "1.2.3", "extra")])

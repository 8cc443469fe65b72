"""Lazy volumes (``pacs.volume(..., lazy=True)``) against our server over HTTP, the in-process store and
Orthanc: the eager volume's geometry and pixels bit for bit, only the needed frames requested, the
frame cache, errors naming the frame, and other schedulers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

import dicomweb_nb as dw
from dicomweb_nb import errors
from dicomweb_nb.client.lazy import FrameReader

from .lazy_helpers import counting

pytestmark = [pytest.mark.orthanc, pytest.mark.usefixtures("private_frame_cache")]
ROOT = Path(__file__).resolve().parents[2]


def _same_volume(lazy, eager) -> None:
    assert lazy.shape == eager.shape
    assert lazy.spacing == eager.spacing and lazy.origin == eager.origin
    assert np.array_equal(lazy.direction, eager.direction)
    assert lazy.keys == eager.keys and lazy.rescaled == eager.rescaled
    assert np.array_equal(lazy.affine, eager.affine)


@pytest.mark.parametrize("name", ["ct", "oblique", "enhanced", "rle"])
def test_lazy_volume_equals_eager_bit_for_bit(lazy_client, lazy_data, name):
    study, series = lazy_data.uids(name)
    for rescale in (True, False):
        eager = lazy_client.volume(study, series, rescale=rescale, method="frames")
        lazy = lazy_client.volume(study, series, rescale=rescale, lazy=True)
        assert isinstance(lazy.array, da.Array)
        _same_volume(lazy, eager)
        assert lazy.array.dtype == eager.array.dtype
        middle = lazy.shape[0] // 2
        assert np.array_equal(lazy.array[middle].compute(), eager.array[middle])
        assert np.array_equal(lazy.array[:, 5, :].compute(), eager.array[:, 5, :])
        assert np.array_equal(lazy.array[1::3, 2:9, -4:].compute(), eager.array[1::3, 2:9, -4:])
        assert np.array_equal(lazy.array.compute(), eager.array)
        assert float(lazy.array.mean().compute()) == pytest.approx(float(eager.array.mean()), rel=1e-6)
    if name == "enhanced":  # frames stored out of order in two instances, sorted along the normal
        assert np.array_equal(lazy.array.compute(), lazy_data.enhanced_volume)


def test_lazy_volume_to_xarray_has_millimetre_coordinates(lazy_client, lazy_data):
    study, series = lazy_data.uids("oblique")
    lazy = lazy_client.volume(study, series, lazy=True).to_xarray()
    eager = lazy_client.volume(study, series).to_xarray()
    assert isinstance(lazy.data, da.Array)
    for name in ("slice", "row", "column"):
        assert np.array_equal(lazy.coords[name], eager.coords[name])
    assert lazy.attrs == eager.attrs
    picked = lazy.sel(slice=eager.coords["slice"][4]).compute()
    assert np.array_equal(picked.values, eager.values[4])


def test_geometry_from_qido_equals_geometry_from_metadata(lazy_client, lazy_data):
    for name in ("ct", "oblique", "enhanced"):
        study, series = lazy_data.uids(name)
        by_qido = lazy_client.volume(study, series, lazy=True, geometry="qido")
        by_metadata = lazy_client.volume(study, series, lazy=True, geometry="metadata")
        _same_volume(by_qido, by_metadata)
        assert np.array_equal(by_qido.array.compute(), by_metadata.array.compute())


def test_only_the_needed_frames_are_requested(lazy_client, lazy_data):
    study, series = lazy_data.uids("ct")
    lazy = lazy_client.volume(study, series, lazy=True, cache=False)
    uid_of = [key[0] for key in lazy.keys]
    with counting(lazy_client) as log:
        lazy.array[7].compute()
        assert log.frames == [(uid_of[7], [1])]
        log.clear()
        (lazy.array[2:5, 10:20] * 2).sum().compute()
        assert sorted(log.frames) == sorted((uid_of[k], [1]) for k in (2, 3, 4))
        log.clear()
        lazy.array[::5].max().compute()
        assert sorted(log.frames) == sorted((uid_of[k], [1]) for k in (0, 5, 10))


def test_multiframe_frames_are_batched_per_instance(lazy_client, lazy_data):
    study, series = lazy_data.uids("enhanced")
    lazy = lazy_client.volume(study, series, lazy=True, cache=False)
    with counting(lazy_client) as log:
        lazy.array[2:8].compute()
    wanted = sorted(lazy.keys[2:8])
    per_instance = {}
    for uid, frame in wanted:
        per_instance.setdefault(uid, []).append(frame)
    # One request per instance, carrying all its wanted frame numbers, and nothing else.
    assert len(log.frames) == len(per_instance)
    assert {uid: sorted(numbers) for uid, numbers in log.frames} == per_instance


def test_whole_volume_is_one_request(lazy_client, lazy_data):
    study, series = lazy_data.uids("ct")
    lazy = lazy_client.volume(study, series, lazy=True, cache=False)
    with counting(lazy_client) as log:
        full = lazy.array.compute()
    assert log.frames == []  # no request per frame or instance
    if lazy_client.kind == "orthanc":  # no Retrieve Bulkdata in Orthanc 1.10: the series retrieve instead
        assert [u for u in log.urls if not u.endswith("/bulkdata")] == [f"{lazy_client.url}/studies/{study}/series/{series}"]
    else:
        assert log.urls == [u for u in log.urls if u.endswith("/bulkdata")] and len(log.urls) == 1
    assert np.array_equal(full, lazy_client.volume(study, series).array)


@pytest.fixture()
def filled(monkeypatch) -> list[np.ndarray]:
    """Every array the lazy readers return, in order."""
    arrays: list[np.ndarray] = []
    read = FrameReader.__getitem__

    def recording(self, index):
        arrays.append(read(self, index))
        return arrays[-1]

    monkeypatch.setattr(FrameReader, "__getitem__", recording)
    return arrays


def test_whole_volume_is_handed_over_as_read_not_copied_once_more(lazy_client, lazy_data, filled):
    """dask copies an array's single computed chunk in case something else holds it; the buffer a reader has
    just filled for this computation is held by nothing else, so ``.compute()`` hands it over as read (for a
    300 x 512 x 512 CT, 300 MB less to copy). What may be shared is still copied: a persisted chunk, and a
    part of a read (a slice is not a view keeping the whole read alive)."""
    study, series = lazy_data.uids("ct")
    lazy = lazy_client.volume(study, series, lazy=True, cache=False)
    eager = lazy_client.volume(study, series).array
    full = lazy.array.compute()
    assert full is filled[-1] and np.array_equal(full, eager) and full.flags.writeable
    (again,) = dask.compute(lazy.array)
    assert again is filled[-1] and not np.shares_memory(full, again)
    full[:] = 0  # the caller's own array
    assert np.array_equal(np.asarray(lazy.array), eager)

    persisted = lazy.array.persist()
    kept = filled[-1]
    one, two = persisted.compute(), persisted.compute()
    assert not np.shares_memory(one, kept) and not np.shares_memory(one, two)
    one[:] = 0
    assert np.array_equal(persisted.compute(), eager)

    column = lazy.array[:, 5, :].compute()
    assert not np.shares_memory(column, filled[-1]) and np.array_equal(column, eager[:, 5, :])
    assert column.base is None or column.base.nbytes == column.nbytes
    assert np.array_equal(lazy.array[::-1].compute(), eager[::-1])  # a reordering of a whole read is no hand-over


def test_garbage_collector_is_paused_while_the_geometry_is_read_and_resumed_after(lazy_ours, lazy_data, monkeypatch):
    """The series' JSON is read and dropped with the cyclic collector paused (no full collection of the
    notebook's heap for a first slice); it runs again afterwards, also after an error, and stays off where the
    caller had turned it off."""
    import gc

    study, series = lazy_data.uids("ct")
    with dw.connect(lazy_ours.dicomweb_url, progress=False) as pacs:
        during = []
        read = pacs.source.retrieve_metadata

        def reading(*args, **kwargs):
            during.append(gc.isenabled())
            return read(*args, **kwargs)

        monkeypatch.setattr(pacs.source, "retrieve_metadata", reading)
        assert gc.isenabled()
        lazy = pacs.volume(study, series, lazy=True)
        assert during == [False] and gc.isenabled()
        assert np.array_equal(lazy.array.compute(), pacs.volume(study, series).array)
        with pytest.raises(errors.NotFound):
            pacs.volume(study, "1.2.3.404", lazy=True)
        assert during[-1] is False and gc.isenabled()
        gc.disable()
        try:
            pacs.volume(study, series, lazy=True)
            assert not gc.isenabled()
        finally:
            gc.enable()


def test_on_a_distributed_cluster_the_whole_volume_is_copied_as_dask_does(lazy_ours, lazy_data, filled):
    """An in-process dask.distributed cluster keeps what its workers computed in this very process: there
    the result is dask's own copy, never the buffer a worker holds."""
    from distributed import Client, LocalCluster

    study, series = lazy_data.uids("ct")
    with dw.connect(lazy_ours.dicomweb_url, progress=False) as pacs, \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster):
        lazy = pacs.volume(study, series, lazy=True, cache=False)
        full = lazy.array.compute()
        assert filled and not any(np.shares_memory(full, f) for f in filled)
        assert np.array_equal(full, pacs.volume(study, series).array)
    filled.clear()
    assert lazy.array.compute() is filled[-1]  # the cluster gone, the threaded scheduler's result is handed over


@pytest.mark.parametrize("slices, expected", [(300, 300), (600, 600), (1000, 1000), (1100, 550), (2999, 1000), (3073, 769)])
def test_a_ct_of_up_to_a_thousand_slices_is_one_chunk_and_bigger_ones_even_chunks(slices, expected):
    """A whole volume in one chunk is one Retrieve Bulkdata read straight into the result; in several, each
    chunk asks its frames instance by instance and dask copies them together (3.5x slower measured). So
    chunks go up to 1 GiB (a 600-slice 512 x 512 float32 CT was two before), and are of even sizes."""
    from dicomweb_nb.client.lazy import slices_per_chunk

    frame = 512 * 512 * 4
    assert slices_per_chunk(slices, frame) == expected
    assert slices_per_chunk(5, 3 << 30) == 1  # a frame bigger than a chunk: one slice each
    assert slices_per_chunk(10, frame, chunk_bytes=3 * frame) == 3  # 3 + 3 + 3 + 1: no fewer chunks are possible


def test_cache_serves_repeats(lazy_client, lazy_data, private_frame_cache):
    study, series = lazy_data.uids("oblique")
    lazy = lazy_client.volume(study, series, lazy=True)
    dw.cache.clear()
    with counting(lazy_client) as log:
        first = lazy.array[4].compute()
        again = lazy_client.volume(study, series, lazy=True).array[4].compute()
        frames = log.frame_counts()
    assert np.array_equal(first, again)
    if lazy_client.kind == "local":  # the workspace's own store is on this disk already: nothing cached
        assert sum(frames.values()) == 2 and dw.cache.info()["frames"] == 0
        return
    assert frames == {(lazy.keys[4][0], 1): 1}
    info = dw.cache.info()
    assert info["frames"] == 1 and info["hits"] >= 1 and info["directory"] == str(private_frame_cache)
    assert info["size"] > 0 and info["enabled"]
    assert (private_frame_cache.stat().st_mode & 0o077) == 0  # patient data: the owner's only
    assert dw.cache.clear() == 1
    with counting(lazy_client) as log:
        lazy.array[4].compute()
    assert len(log.frames) == 1


def test_cache_can_be_bypassed_or_turned_off(lazy_client, lazy_data):
    if lazy_client.kind == "local":
        pytest.skip("the in-process store is never cached")
    study, series = lazy_data.uids("ct")
    lazy_client.volume(study, series, lazy=True, cache=False).array[3].compute()
    assert dw.cache.info()["frames"] == 0
    dw.cache.configure(enabled=False)
    lazy_client.volume(study, series, lazy=True).array[3].compute()
    assert dw.cache.info() == {**dw.cache.info(), "enabled": False}
    dw.cache.configure(enabled=True)
    assert dw.cache.info()["frames"] == 0


def test_cache_survives_two_kernels_writing_at_once(lazy_ours, lazy_data, private_frame_cache, tmp_path):
    study, series = lazy_data.uids("ct")
    script = textwrap.dedent(f"""
        import sys, numpy as np, dicomweb_nb as dw
        pacs = dw.connect({lazy_ours.dicomweb_url!r}, progress=False)
        vol = pacs.volume({study!r}, {series!r}, lazy=True)
        total = 0.0
        for k in range(vol.shape[0]):  # frame by frame: many small writes, interleaved with the other kernel's
            total += float(vol.array[k].compute().sum())
        np.save(sys.argv[1], vol.array.compute())
    """)
    (tmp_path / "kernel.py").write_text(script)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "DICOMWEB_NB_CACHE_DIR": str(private_frame_cache)}
    kernels = [subprocess.Popen([sys.executable, str(tmp_path / "kernel.py"), str(tmp_path / f"out{i}.npy")], env=env,
                                stderr=subprocess.PIPE) for i in range(2)]
    for kernel in kernels:
        _, stderr = kernel.communicate(timeout=240)
        assert kernel.returncode == 0, stderr.decode()[-3000:]
    with dw.connect(lazy_ours.dicomweb_url, progress=False) as pacs:
        eager = pacs.volume(study, series)
        for i in range(2):
            assert np.array_equal(np.load(tmp_path / f"out{i}.npy"), eager.array)
        info = dw.cache.info()
        assert info["frames"] == eager.shape[0]  # each frame once, whoever wrote it
        lazy = pacs.volume(study, series, lazy=True)
        with counting(pacs) as log:
            assert np.array_equal(lazy.array.compute(), eager.array)
        assert log.frames == [] and not [u for u in log.urls if u.endswith("/bulkdata")]


def test_cache_is_bounded_least_recently_used_first(tmp_path):
    from dicomweb_nb.client.cache import FrameCache
    from dicomweb_nb.protocol import EncodedFrame

    cache = FrameCache(tmp_path / "small", size_limit=512 << 10)
    frame = EncodedFrame(bytes(16 << 10), "1.2.840.10008.1.2.1")
    keys = [FrameCache.key("http://pacs/dicom-web", "1.2", "1.2.3", "1.2.3.4", n, "*") for n in range(1, 81)]
    for n, key in enumerate(keys):
        cache.put(key, frame, wait=True)
        if n >= 1:
            assert cache.get(keys[0]) is not None  # used again and again: never the one evicted
    info = cache.info()
    assert info["size"] <= 512 << 10 and 10 < info["frames"] < 32
    assert cache.get(keys[1]) is None and cache.get(keys[-1]) == frame


def test_cache_writes_behind_and_serves_what_it_has_not_written_yet(tmp_path):
    from dicomweb_nb.client.cache import FrameCache
    from dicomweb_nb.protocol import EncodedFrame

    cache = FrameCache(tmp_path / "behind")
    frames = {FrameCache.key("http://pacs", "1", "2", "3", n, "*"): EncodedFrame(bytes([n]) * 4096, "1.2.840.10008.1.2.1")
              for n in range(1, 40)}
    for key, frame in frames.items():
        cache.put(key, frame)
        assert cache.get(key) == frame  # at once, written or not
    assert cache.flush(timeout=30)
    assert cache.info()["frames"] == len(frames)
    reopened = FrameCache(tmp_path / "behind")
    assert all(reopened.get(key) == frame for key, frame in frames.items())


def test_cache_keys_keep_servers_and_syntaxes_apart():
    from dicomweb_nb.client.cache import FrameCache, parse_size

    a = FrameCache.key("http://a/dicom-web/", "1", "2", "3", 4, "*")
    assert a == FrameCache.key("http://a/dicom-web", "1", "2", "3", 4, "*")
    assert a != FrameCache.key("http://b/dicom-web", "1", "2", "3", 4, "*")
    assert a != FrameCache.key("http://a/dicom-web", "1", "2", "3", 4, "1.2.840.10008.1.2.4.201")
    assert parse_size("2 GB") == 2 << 30 and parse_size("500MiB") == 500 << 20 and parse_size(1024) == 1024
    with pytest.raises(ValueError, match="cache size"):
        parse_size("lots")


def test_failed_frame_raises_a_frame_error_naming_it(fresh_server, lazy_data):
    study, series = lazy_data.uids("ct")
    _, _, datasets = lazy_data.series["ct"]
    with dw.connect(fresh_server.dicomweb_url, progress=False) as pacs:
        pacs.store(datasets)
        lazy = pacs.volume(study, series, lazy=True, cache=False)
        fresh_server.stop()  # the server goes down
        with pytest.raises(errors.FrameError) as caught:
            lazy.array[3].compute()
    error = caught.value
    assert isinstance(error, dw.DicomWebError)
    assert error.frames == [1] and error.instance == lazy.keys[3][0] and error.series == series
    assert f"frame 1 of instance {lazy.keys[3][0]}" in str(error)
    assert isinstance(error.cause, errors.ConnectionFailed)
    assert error.__cause__ is None  # no chained traceback wall under it


def test_frame_that_vanished_is_a_404_frame_error(lazy_client, lazy_data):
    study, series = lazy_data.uids("ct")
    lazy = lazy_client.volume(study, series, lazy=True, cache=False)
    reader = next(v for v in lazy.array.dask.values() if isinstance(v, FrameReader))
    reader.frames[0] = (reader.frames[0][0], 2)  # a frame number the instance does not have
    with pytest.raises(errors.FrameError) as caught:
        lazy.array[0].compute()
    assert caught.value.status in (400, 404) and caught.value.frames == [2]
    assert np.isfinite(lazy.array[1].compute()).all()  # the other chunks' frames are unaffected


@pytest.mark.parametrize("scheduler", ["threads", "processes", "sync"])
def test_lazy_volume_computes_on_any_local_scheduler(lazy_client, lazy_data, scheduler):
    study, series = lazy_data.uids("enhanced")
    lazy = lazy_client.volume(study, series, lazy=True, cache=False)
    eager = lazy_client.volume(study, series)
    with dask.config.set(scheduler=scheduler):
        means, = dask.compute([lazy.array[k].mean() for k in range(lazy.shape[0])])
        assert np.array_equal(lazy.array[1:4].compute(), eager.array[1:4])
    assert means == [pytest.approx(float(eager.array[k].mean())) for k in range(eager.shape[0])]


def test_progress_bar_for_lazy_computations(lazy_client, lazy_data):
    study, series = lazy_data.uids("ct")
    lazy = lazy_client.volume(study, series, lazy=True)
    with dw.progress(disable=False) as bar:
        total = lazy.array.sum().compute()
    assert bar.pbar.n == bar.pbar.total > 0  # every task reported done
    assert total == pytest.approx(float(lazy_client.volume(study, series).array.sum()), rel=1e-6)


def test_not_a_volume_raises_before_any_pixel_is_fetched(lazy_ours, lazy_data):
    study, _ = lazy_data.uids("ct")
    with dw.connect(lazy_ours.dicomweb_url, progress=False) as pacs:
        with pytest.raises(errors.NotFound):
            pacs.volume(study, "1.2.3.4.5.6.7.8.9", lazy=True)
        with pytest.raises(ValueError, match="geometry must be"):
            pacs.volume(*lazy_data.uids("ct"), lazy=True, geometry="guess")


def test_a_server_without_bulkdata_keeps_no_computed_array_alive(lazy_orthanc):
    """Orthanc 1.10 has no Retrieve Bulkdata; the client remembers that, and once re-raised the one stored
    error, whose growing traceback held every computed array (22 GB after a benchmark's runs)."""
    import gc
    import tracemalloc

    from dicomweb_nb import samples

    series = samples.generate_ct_series(n_slices=20, rows=256, columns=256, seed=31)
    study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    with dw.connect(lazy_orthanc.dicomweb_url, progress=False) as pacs:
        pacs.store(series)
        lazy = pacs.volume(study, series_uid, lazy=True, cache=False)
        lazy.array.compute()  # the first: finds out there is no bulk data
        tracemalloc.start()
        for _ in range(5):
            lazy.array.compute()
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        raised = []
        for _ in range(2):
            with pytest.raises(errors.DicomWebError) as caught:
                list(pacs.source.iter_bulkdata(study, series_uid))
            raised.append(caught.value)
    assert retained < lazy.array.nbytes  # 5 MB each: five of them before the fix
    assert raised[0] is not raised[1] and raised[0].status == raised[1].status


def test_lazy_volume_through_the_jupyter_extension(jupyter_dicomweb, lazy_data):
    """The extension's mount point (awkward base_url, Jupyter token): the token travels with the chunks,
    to other processes too."""
    from tests.fixtures.ourserver import JUPYTER_TOKEN

    study, series = lazy_data.uids("enhanced")
    with dw.connect(jupyter_dicomweb.dicomweb_url, jupyter_token=JUPYTER_TOKEN, progress=False) as pacs:
        assert set(pacs.store(lazy_data.series["enhanced"][2]).status) == {"stored"}
        lazy = pacs.volume(study, series, lazy=True)
        eager = pacs.volume(study, series)
        _same_volume(lazy, eager)
        assert np.array_equal(lazy.array[3].compute(scheduler="processes"), eager.array[3])
        assert np.array_equal(lazy.array.compute(), eager.array)
    with dw.connect(jupyter_dicomweb.dicomweb_url, progress=False) as anonymous, \
            pytest.raises((errors.Unauthorized, errors.Forbidden)):
        anonymous.volume(study, series, lazy=True)

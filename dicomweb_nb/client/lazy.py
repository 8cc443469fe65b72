"""Out-of-core pixels: volumes whose frames are fetched when a dask computation needs them.

``Client.volume(study, series, lazy=True)`` returns at once a ``Volume`` (the same geometry rule as
the eager one: ``wado.plan_from_metadata``) whose ``.array`` is a dask array. Its chunks are
stacks of slices, and reading one goes through ``FrameReader``: dask fuses ``vol.array[120]`` or
``vol.array[10:20, 256]`` into one call of its ``__getitem__`` with that index, so only the frames
the index touches are fetched, whatever the chunk size. Frames come from the frame cache
(``client.cache``) when they are there, else in WADO-RS frames requests that each carry several
frame numbers of one instance, instances in parallel on a thread pool bounded per host, and are
decoded with the eager path's rule (``pixels.decode.decode_frame_into``), so lazy and eager
volumes are equal bit for bit.

Everything a chunk needs travels with it (the source, pickled as its settings; the cache settings),
so the arrays compute on any dask scheduler: threads, processes, or a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

from ..errors import DicomWebError, FrameError
from ..pixels.decode import (
    NATIVE_FRAME_SYNTAXES,
    PixelAttributes,
    PixelDecodeError,
    decode_frame_into,
)
from ..pixels.volume import Volume, VolumeError
from ..protocol import DicomJson, DicomWebSource, EncodedFrame
from . import cache as frame_cache
from .wado import NO_BULKDATA_STATUSES, encoded_frames, parse_instance, plan_from_metadata, volume_rescaling

__all__ = ["FrameFetcher", "FrameReader", "lazy_volume", "series_metadata_for_geometry", "expected_dtype", "progress",
           "SourceHandle", "GEOMETRY_FIELDS"]

# How many frame numbers one WADO-RS frames request carries (a URL of 64 five-digit numbers stays short).
MAX_FRAMES_PER_REQUEST = 64
# Slices per chunk aim at most at this many bytes (dask's advice: 100 MB to 1 GB). A chunk is the unit of
# computation, not of fetching (slices of it fetch only their frames); but a whole volume in one chunk is read
# in one Retrieve Bulkdata answer straight into the result, where each of several chunks asks its frames
# instance by instance and dask then copies them into the result: measured on a 300 x 512 x 512 series, 4.6 s
# in two chunks against 1.3 s in one (loaded machine). At 1 GiB a CT of up to 1,000 such slices is one chunk.
CHUNK_BYTES = 1 << 30

# What the geometry and the decoding of an instance need, asked of QIDO-RS at instance level.
GEOMETRY_FIELDS = (
    "SOPClassUID", "InstanceNumber", "NumberOfFrames", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
    "PlanarConfiguration", "BitsAllocated", "BitsStored", "PixelRepresentation", "PixelSpacing", "ImagePositionPatient",
    "ImageOrientationPatient", "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "AvailableTransferSyntaxUID",
)
_REQUIRED_TAGS = ("00280010", "00280011", "00280100", "00280103", "00280004", "00280002")
_GEOMETRY_TAGS = ("00200032", "00200037", "00280030")
# Image storage classes whose Image Pixel module is not PixelData or whose geometry lives in
# functional groups: their full instance metadata is read.
_FLOAT_PIXEL_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.30"})  # Parametric Map
_PIXEL_PART = re.compile(r"/instances/([^/]+)/(?:frames/(\d+)|bulk/(?:7FE00010|7FE00008|7FE00009))/?$", re.IGNORECASE)
_CT_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"})


def require_dask() -> None:
    """Lazy arrays need dask (and the frame cache diskcache): say how to get them."""
    try:
        import dask.array  # noqa: F401
        import diskcache  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"lazy volumes and slides need dask and diskcache ({exc}): "
                          "pip install 'dicomweb-nb[dask]'") from None


# -- the source, carried to other processes ---------------------------------------------------------

_live_sources: dict[str, DicomWebSource] = {}
_tokens: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_live_lock = threading.Lock()


class SourceHandle:
    """A DicomWebSource that can travel to dask workers: pickled as the source's own pickle (its
    settings, not its connection pool), revived once per process and then shared by every chunk."""

    def __init__(self, source: DicomWebSource, token: str | None = None):
        self.source = source
        with _live_lock:
            if token is None:  # one token per source object, however many arrays it backs
                try:
                    token = _tokens.get(source)
                except TypeError:  # not weakly referenceable
                    token = None
                if token is None:
                    token = uuid.uuid4().hex
                    try:
                        _tokens[source] = token
                    except TypeError:
                        pass
            self.token = token
            _live_sources.setdefault(token, source)

    @property
    def url(self) -> str:
        return str(getattr(self.source, "url", "") or "")

    def __reduce__(self) -> tuple[Any, ...]:
        try:
            recipe = pickle.dumps(self.source)
        except Exception as exc:  # noqa: BLE001 - TypeError, AttributeError, PicklingError...: all mean it cannot go
            raise TypeError(f"this lazy array's source ({self.source!r}) cannot be sent to other processes: {exc}. "
                            "Compute it with the threaded scheduler, or connect with settings that pickle "
                            "(no custom requests session or auth object)") from None
        return (_revive_source, (self.token, recipe))


def _revive_source(token: str, recipe: bytes) -> SourceHandle:
    with _live_lock:
        live = _live_sources.get(token)
    if live is None:
        live = pickle.loads(recipe)
    return SourceHandle(live, token)


_host_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_host_lock = threading.Lock()


def host_pool(url: str, size: int) -> ThreadPoolExecutor:
    """The thread pool through which every frame request to one host goes: bounded concurrency per host,
    shared by all the lazy arrays (and dask worker threads) of this process."""
    parts = urlsplit(url)
    host = f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
    with _host_lock:
        pool = _host_pools.get((host, size))
        if pool is None:
            pool = _host_pools[(host, size)] = ThreadPoolExecutor(max_workers=size,
                                                                  thread_name_prefix=f"dicomweb-frames-{parts.netloc}")
        return pool


# -- geometry ----------------------------------------------------------------------------------------

def json_values(obj: DicomJson, tag: str) -> list[Any]:
    """The values of an attribute of a DICOM JSON object (empty when absent)."""
    return list((obj.get(tag) or {}).get("Value") or [])


def json_first(obj: DicomJson, tag: str, default: Any = None) -> Any:
    """The first value of an attribute of a DICOM JSON object, or ``default``."""
    values = json_values(obj, tag)
    return values[0] if values else default


def series_metadata_for_geometry(source: DicomWebSource, study: str, series: str, *, method: str = "auto") -> list[DicomJson]:
    """Per-instance DICOM JSON holding what a volume's geometry and decoding need.

    ``method="qido"`` asks QIDO-RS at instance level for ``GEOMETRY_FIELDS`` only (and reads the
    full metadata of the instances whose answer lacks something: enhanced multi-frame instances keep
    their geometry in functional groups); ``"metadata"`` reads the series metadata (every attribute
    of every instance); ``"auto"`` is ``"metadata"``: measured on our server and on Orthanc 1.10 it
    is the cheaper of the two for a 300-instance CT (see benchmarks/lazy_volume.py).
    """
    if method not in ("auto", "qido", "metadata"):
        raise ValueError(f"geometry must be 'auto', 'qido' or 'metadata', not {method!r}")
    if method in ("auto", "metadata"):
        return source.retrieve_metadata(study, series)
    found = source.search("instance", [], study=study, series=series, fields=list(GEOMETRY_FIELDS))
    if not found:
        return source.retrieve_metadata(study, series)
    incomplete = [i for i, obj in enumerate(found) if not _complete_for_geometry(obj)]
    if len(incomplete) > max(4, len(found) // 8):
        return source.retrieve_metadata(study, series)  # a server that ignores includefield: one request
    for i in incomplete:
        uid = json_first(found[i], "00080018")
        if uid:
            found[i] = (source.retrieve_metadata(study, series, uid) or [found[i]])[0]
    return found


def _complete_for_geometry(obj: DicomJson) -> bool:
    if not obj.get("00280010"):
        return True  # not an image: left out of the volume either way
    if any(not obj.get(tag) for tag in _REQUIRED_TAGS + _GEOMETRY_TAGS):
        return False
    sop_class = str(json_first(obj, "00080016") or "")
    if sop_class in _FLOAT_PIXEL_CLASSES or int(json_first(obj, "00280008") or 1) > 1:
        return False  # float pixel data, or per-frame geometry: the full metadata says
    # A CT always has a rescale: its absence means the server left it out.
    return not (sop_class in _CT_CLASSES and not obj.get("00281052"))


def expected_dtype(attrs: PixelAttributes, rescaling: bool) -> np.dtype:
    """The dtype ``decode_frame`` gives a frame with these attributes (float32 once rescaled)."""
    if rescaling:
        return np.dtype(np.float32)
    if attrs.pixel_keyword == "FloatPixelData":
        return np.dtype(np.float32)
    if attrs.pixel_keyword == "DoubleFloatPixelData":
        return np.dtype(np.float64)
    bits = attrs.bits_allocated
    if bits == 1:
        return np.dtype(np.uint8)
    signed = attrs.pixel_representation == 1 and attrs.samples_per_pixel == 1
    return np.dtype(f"{'i' if signed else 'u'}{max(1, bits // 8)}")


# -- fetching frames ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InstanceFrames:
    """What fetching and decoding one instance's frames needs."""

    uid: str
    attrs: PixelAttributes


_work: ThreadPoolExecutor | None = None


class _Background:
    """Work handed to this process's decode pool while an answer streams in, at most two jobs per core in
    flight (each holds a frame's bytes); ``wait`` re-raises the first failure."""

    def __init__(self) -> None:
        global _work
        workers = max(2, os.cpu_count() or 2)
        with _host_lock:
            if _work is None:
                _work = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dicomweb-decode")
        self.pool = _work
        self.slots = threading.BoundedSemaphore(2 * workers)
        self.futures: list[Future[Any]] = []

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        self.slots.acquire()
        future = self.pool.submit(function, *args)
        future.add_done_callback(lambda _: self.slots.release())
        self.futures.append(future)

    def wait(self, raising: bool = True) -> None:
        errors = [f.exception() for f in self.futures]
        self.futures = []
        first = next((e for e in errors if e is not None), None)
        if first is not None and raising:
            raise first


class FrameFetcher:
    """Fetches frames of the instances of one series and decodes them into place.

    Cache first; then one WADO-RS frames request per instance (several frame numbers in each, at
    most ``MAX_FRAMES_PER_REQUEST``), run on the host's bounded pool. A frame that cannot be had
    raises ``FrameError`` naming it.
    """

    def __init__(self, handle: SourceHandle, study: str, series: str, instances: Sequence[InstanceFrames], *,
                 rescaling: bool, max_per_host: int = 8, cache: frame_cache.CacheSettings | None = None):
        self.handle = handle
        self.study = study
        self.series = series
        self.instances = list(instances)
        self.rescaling = rescaling
        self.max_per_host = max(1, int(max_per_host))
        self.cache_settings = cache
        self.requests = 0  # WADO-RS frames requests this fetcher sent (in this process)
        self._count_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_count_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._count_lock = threading.Lock()

    def _cache(self) -> frame_cache.FrameCache | None:
        if self.cache_settings is None or not self.handle.url.startswith(("http://", "https://")):
            return None
        return frame_cache.frame_cache(self.cache_settings)

    def _key(self, instance: InstanceFrames, frame: int) -> str:
        syntax = getattr(self.handle.source, "frames_transfer_syntax", "*")
        return frame_cache.FrameCache.key(self.handle.url, self.study, self.series, instance.uid, frame, syntax)

    def fill(self, out: np.ndarray, wanted: Sequence[tuple[int, int]]) -> None:
        """Decode frame ``wanted[j] = (instance index, frame number)`` into ``out[j]`` for every j."""
        cache = self._cache()
        by_instance: dict[int, list[tuple[int, int]]] = {}
        missing_count = 0
        work = _Background()
        for j, (index, frame) in enumerate(wanted):
            cached = cache.get(self._key(self.instances[index], frame)) if cache is not None else None
            if cached is None:
                by_instance.setdefault(index, []).append((frame, j))
                missing_count += 1
            elif cached.transfer_syntax_uid in NATIVE_FRAME_SYNTAXES:
                self._decode(out, j, index, frame, cached)
            else:  # compressed: decoded on the pool, in parallel
                work.submit(self._decode, out, j, index, frame, cached)
        work.wait()
        if not missing_count:
            return
        if missing_count == self.total_frames and (self._fill_from_bulkdata(out, by_instance, cache)
                                                   or self._fill_from_instances(out, by_instance, cache)):
            return
        jobs: list[tuple[int, list[tuple[int, int]]]] = []
        for index, pairs in by_instance.items():
            for start in range(0, len(pairs), MAX_FRAMES_PER_REQUEST):
                jobs.append((index, pairs[start:start + MAX_FRAMES_PER_REQUEST]))
        if len(jobs) == 1:
            self._fetch(out, *jobs[0], cache)
            return
        pool = host_pool(self.handle.url, self.max_per_host)
        futures: list[Future[None]] = [pool.submit(self._fetch, out, index, pairs, cache) for index, pairs in jobs]
        first_error: BaseException | None = None
        for future in futures:  # wait for all: none may write into ``out`` after this returns
            error = future.exception()
            if error is not None and first_error is None:
                first_error = error
        if first_error is not None:
            raise first_error

    @property
    def total_frames(self) -> int:
        return sum(i.attrs.number_of_frames for i in self.instances)

    def _fill_from_bulkdata(self, out: np.ndarray, by_instance: dict[int, list[tuple[int, int]]],
                            cache: frame_cache.FrameCache | None) -> bool:
        """Every frame is wanted: one Retrieve Bulkdata of the series (or of the one instance) brings them all,
        as the eager volume does, instead of a request per instance. False where the server has none."""
        source = self.handle.source
        if not hasattr(source, "iter_bulkdata"):
            return False
        index_of = {instance.uid: index for index, instance in enumerate(self.instances)}
        slots = {index: dict(pairs) for index, pairs in by_instance.items()}  # frame number -> j
        filled = 0
        work = _Background()
        try:
            # One instance (a slide level): its own bulk data, not the whole series'.
            scope = (self.instances[0].uid,) if len(self.instances) == 1 else ()
            for part in source.iter_bulkdata(self.study, self.series, *scope):
                match = _PIXEL_PART.search(part.location)
                index = index_of.get(match.group(1)) if match else None
                if match is None or index is None:
                    continue  # other bulk data (overlays, icons), or an instance that is not in the volume
                instance = self.instances[index]
                syntax = part.transfer_syntax_uid or ExplicitVRLittleEndian
                if match.group(2):  # one frame's bitstream
                    pieces = [(int(match.group(2)), part.data)]
                else:  # all the instance's frames, native
                    length = instance.attrs.native_frame_length
                    view = memoryview(part.data)
                    pieces = [(n, view[(n - 1) * length:n * length]) for n in range(1, instance.attrs.number_of_frames + 1)]
                for frame, data in pieces:
                    j = slots[index].get(frame)
                    if j is None:
                        continue
                    encoded = EncodedFrame(data, syntax)
                    if syntax in NATIVE_FRAME_SYNTAXES:  # a copy into place: cheaper here than a thread hop
                        self._decode(out, j, index, frame, encoded)
                        if cache is not None:
                            self._put(cache, instance, frame, encoded)
                    else:  # codecs release the GIL: decode while the answer streams in
                        work.submit(self._decode_and_put, out, j, index, frame, encoded, cache)
                    filled += 1
            work.wait()
        except FrameError:
            raise  # a frame that does not decode: already named
        except DicomWebError as exc:
            work.wait(raising=False)
            if exc.status in NO_BULKDATA_STATUSES and filled == 0:
                note = getattr(source, "note_bulkdata_missing", None)
                if note is not None:
                    note(exc)
                return False
            raise FrameError(f"the pixel data of series {self.series} could not be fetched: {exc}", series=self.series,
                             study=self.study, cause=exc, status=exc.status, url=exc.url) from None
        with self._count_lock:
            self.requests += 1
        if filled != self.total_frames:
            raise FrameError(f"the bulk data answer of series {self.series} held {filled} of its {self.total_frames} "
                             "frames", series=self.series, study=self.study)
        return True

    def _fill_from_instances(self, out: np.ndarray, by_instance: dict[int, list[tuple[int, int]]],
                             cache: frame_cache.FrameCache | None) -> bool:
        """Every frame is wanted from a server without Retrieve Bulkdata (Orthanc 1.10): the instances in
        one WADO-RS retrieve, as the eager volume reads them, parsed on the pool as they arrive (measured
        against Orthanc: 5x faster than a frames request per instance). False where that is refused."""
        source = self.handle.source
        if not hasattr(source, "iter_instances"):
            return False
        index_of = {instance.uid: index for index, instance in enumerate(self.instances)}
        slots = {index: dict(pairs) for index, pairs in by_instance.items()}  # frame number -> j
        filled: list[int] = []
        work = _Background()

        def place(content: bytes) -> None:
            ds = parse_instance(content)
            index = index_of.get(str(ds.get("SOPInstanceUID", "")))
            if index is None or "PixelData" not in ds:
                return  # not an instance of the volume
            instance = self.instances[index]
            syntax = str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
            for frame, data in enumerate(encoded_frames(ds, instance.attrs, syntax), start=1):
                j = slots[index].get(frame)
                if j is not None:
                    self._decode_and_put(out, j, index, frame, EncodedFrame(data, syntax), cache)
                    filled.append(j)

        received = 0
        try:
            scope = (self.instances[0].uid,) if len(self.instances) == 1 else ()
            for content in source.iter_instances(self.study, self.series, *scope):
                received += 1
                work.submit(place, content)
            work.wait()
        except FrameError:
            raise
        except DicomWebError as exc:
            work.wait(raising=False)
            if received == 0 and exc.status is not None:
                return False  # refused: a frames request per instance then
            raise FrameError(f"the instances of series {self.series} could not be fetched: {exc}", series=self.series,
                             study=self.study, cause=exc, status=exc.status, url=exc.url) from None
        with self._count_lock:
            self.requests += 1
        if len(filled) != self.total_frames:
            raise FrameError(f"the series retrieve of {self.series} held {len(filled)} of its {self.total_frames} "
                             "frames", series=self.series, study=self.study)
        return True

    def _decode_and_put(self, out: np.ndarray, j: int, index: int, frame: int, data: EncodedFrame,
                        cache: frame_cache.FrameCache | None) -> None:
        self._decode(out, j, index, frame, data)
        if cache is not None:
            self._put(cache, self.instances[index], frame, data)

    def _put(self, cache: frame_cache.FrameCache, instance: InstanceFrames, frame: int, data: EncodedFrame) -> None:
        cache.put(self._key(instance, frame), data)  # written behind; a failed write only warns

    def _fetch(self, out: np.ndarray, index: int, pairs: list[tuple[int, int]], cache: frame_cache.FrameCache | None) -> None:
        instance = self.instances[index]
        numbers = [frame for frame, _ in pairs]
        try:
            encoded = self.handle.source.retrieve_frames(self.study, self.series, instance.uid, numbers)
        except DicomWebError as exc:
            raise FrameError.of(exc, self.study, self.series, instance.uid, numbers) from None
        with self._count_lock:
            self.requests += 1
        for (frame, j), data in zip(pairs, encoded):
            self._decode(out, j, index, frame, data)
            if cache is not None:
                self._put(cache, instance, frame, data)

    def _decode(self, out: np.ndarray, j: int, index: int, frame: int, data: EncodedFrame) -> None:
        instance = self.instances[index]
        try:
            decode_frame_into(out[j], data.data, instance.attrs, data.transfer_syntax_uid or ExplicitVRLittleEndian,
                              rescale=self.rescaling)
        except PixelDecodeError as exc:
            raise FrameError(f"frame {frame} of instance {instance.uid} (series {self.series}) cannot be decoded: {exc}",
                             frames=[frame], instance=instance.uid, series=self.series, study=self.study) from None


def full_index(index: Any, ndim: int) -> tuple[Any, ...]:
    """An index as dask hands it to a reader, as one entry per dimension (Ellipsis and missing ones filled)."""
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis for i in index):
        at = next(n for n, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1:]
    full: tuple[Any, ...] = index + (slice(None),) * (ndim - len(index))
    return full


class FrameReader:
    """The array-like behind a lazy volume's dask array: ``reader[index]`` fetches the frames ``index`` touches.

    ``frames[k]`` is the ``(instance index, frame number)`` of slice ``k`` in volume order.
    """

    def __init__(self, fetcher: FrameFetcher, frames: Sequence[tuple[int, int]], frame_shape: tuple[int, ...],
                 dtype: np.dtype):
        self.fetcher = fetcher
        self.frames = list(frames)
        self.shape = (len(self.frames), *frame_shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __dask_tokenize__(self) -> Any:
        f = self.fetcher
        return ("dicomweb-nb-frames", f.handle.url, f.study, f.series, f.rescaling, self.shape, str(self.dtype),
                tuple(self.frames), tuple(i.uid for i in f.instances))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        index = full_index(index, self.ndim)
        picked = np.arange(self.shape[0])[index[0]]
        scalar = np.ndim(picked) == 0
        ks = np.atleast_1d(picked)
        out = np.empty((len(ks), *self.shape[1:]), dtype=self.dtype)
        if len(ks):
            self.fetcher.fill(out, [self.frames[int(k)] for k in ks])
        result = out[(0 if scalar else slice(None),) + tuple(index[1:])]
        if _same_memory(result, out):
            _fresh_buffers.add(out)  # all of it, filled for this computation alone: see VolumeArray
            return out
        return result


def _same_memory(view: np.ndarray, array: np.ndarray) -> bool:
    """Whether ``view`` is ``array`` itself (same start, shape and strides), not a part or a reordering of it."""
    return (view.shape == array.shape and view.strides == array.strides
            and view.__array_interface__["data"][0] == array.__array_interface__["data"][0])


class _FreshBuffers:
    """The arrays a reader filled for one computation and that nobody has been handed yet, by identity
    (weakly held: one that is dropped unclaimed, say kept by ``persist``, is forgotten when freed)."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[np.ndarray]] = {}
        self._lock = threading.Lock()

    def add(self, array: np.ndarray) -> None:
        key = id(array)

        def forget(ref: weakref.ref[np.ndarray]) -> None:
            with self._lock:
                if self._refs.get(key) is ref:
                    del self._refs[key]

        with self._lock:
            self._refs[key] = weakref.ref(array, forget)

    def claim(self, array: Any) -> bool:
        """True once for an array ``add`` was given: the caller may hand it out without a copy."""
        with self._lock:
            ref = self._refs.get(id(array))
            if ref is None or ref() is not array:
                return False
            del self._refs[id(array)]
            return True


_fresh_buffers = _FreshBuffers()


def _finalize_volume(results: Any) -> Any:
    """dask's ``finalize`` of an array's computed chunks, without its copy of a single chunk when that chunk
    is an array a reader has just filled for this computation (``_fresh_buffers``): the copy is there in case
    the chunk is also held elsewhere (a persisted graph, a worker's memory), which a fresh one is not, and it
    cost a 300 x 512 x 512 float32 series' ``.compute()`` 150-450 ms on top of a 300-500 ms read."""
    from dask.array.core import finalize

    single = results
    while isinstance(single, (list, tuple)) and len(single) == 1:
        single = single[0]
    if isinstance(single, np.ndarray) and not _distributed_client() and _fresh_buffers.claim(single):
        return single
    return finalize(results)


def _distributed_client() -> bool:
    """Whether a ``dask.distributed`` client is this process's scheduler: its workers keep what they computed
    (in this process too, for an in-process cluster), so a result is copied there as dask does."""
    if "distributed" not in sys.modules:
        return False
    try:
        from distributed import default_client

        default_client()
    except (ImportError, ValueError):  # ValueError: no client
        return False
    return True


def volume_array(array: Any) -> Any:
    """``array`` (a dask array over a reader) as a ``VolumeArray``: computed whole, its single chunk is
    handed over as read, not copied once more."""
    import dask.array as da

    global _VolumeArray
    if _VolumeArray is None:
        class VolumeArray(da.Array):
            """A dask array whose computed single chunk is not copied when a reader has just filled it
            (dask copies it in case it is shared: see ``_finalize_volume``). Everything derived from it
            (slices, reductions, a persisted copy, a pickled one) is a plain ``dask.array.Array``."""

            __slots__ = ()

            def __dask_postcompute__(self) -> tuple[Callable[..., Any], tuple[()]]:
                return _finalize_volume, ()

        _VolumeArray = VolumeArray
    return _VolumeArray(array.dask, array.name, array.chunks, meta=array._meta)


_VolumeArray: Any = None


def lazy_volume(source: DicomWebSource, study: str, series: str, *, rescale: bool = True, max_per_host: int = 8,
                chunk_bytes: int = CHUNK_BYTES, cache: bool | frame_cache.CacheSettings | None = True,
                geometry: str = "auto", handle: SourceHandle | None = None) -> Volume:
    """A series as a Volume whose ``.array`` is a dask array; see ``Client.volume(lazy=True)``."""
    require_dask()
    import dask.array as da

    with _collector_paused():  # the series' JSON is made, read and dropped in one go
        metadata = series_metadata_for_geometry(source, study, series, method=geometry)
        metas, slices, owners, attrs_of, plan = plan_from_metadata(metadata, series)
        uids = [str(json_first(m, "00080018") or "") for m in metas]
        keys = [slices[i].key for i in plan.order]
        del metadata, metas, slices
    attrs0 = attrs_of[0]
    if any(a.frame_shape != attrs0.frame_shape for a in attrs_of):
        raise VolumeError("the series' images do not all have the same size")
    rescaling = volume_rescaling(attrs_of, rescale)
    dtypes = {expected_dtype(a, rescaling) for a in attrs_of}
    if len(dtypes) > 1:
        raise VolumeError(f"the series' frames decode to different types ({', '.join(sorted(map(str, dtypes)))}); "
                          "rescale=True gives one float type")
    instances = [InstanceFrames(uid, a) for uid, a in zip(uids, attrs_of)]
    settings = frame_cache.settings() if cache is True else (cache or None)
    if isinstance(settings, frame_cache.CacheSettings) and not settings.enabled:
        settings = None
    fetcher = FrameFetcher(handle or SourceHandle(source), study, series, instances, rescaling=rescaling,
                           max_per_host=max_per_host, cache=settings)
    reader = FrameReader(fetcher, [owners[i] for i in plan.order], attrs0.frame_shape, dtypes.pop())
    frame_bytes = int(np.prod(attrs0.frame_shape)) * reader.dtype.itemsize
    chunks = (slices_per_chunk(reader.shape[0], frame_bytes, chunk_bytes), *attrs0.frame_shape)
    # fancy=True: dask then fuses a slice of the array into the reader's own index (only the frames
    # it touches are fetched); with fancy=False it reads whole chunks and slices them afterwards.
    array = volume_array(da.from_array(reader, chunks=chunks, asarray=False, fancy=True, lock=False,
                                       meta=np.empty((0,) * reader.ndim, dtype=reader.dtype),
                                       name=f"dicom-volume-{_short_token(reader)}"))
    return Volume(array, plan.spacing, plan.origin, plan.direction, keys, rescaled=rescaling)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a series' metadata is read and planned: its 30,000 or so
    containers (a 300-instance CT) would otherwise outlive a few collections and be moved to the oldest
    generation, and every fourth first slice then waited for a full collection of the notebook's whole heap
    (60-80 ms measured with dask, pandas and xarray loaded; the first slice takes 50-100 ms). Dropped before the
    collector resumes, they are freed by reference counting and never scanned. Left alone where it was off."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def slices_per_chunk(slices: int, frame_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Slices per chunk of a volume: chunks of at most ``chunk_bytes`` (one slice at least), as few as that
    allows and of even sizes (1.1 GiB is two chunks of 0.55, not 1 and 0.1)."""
    most = max(1, chunk_bytes // max(1, frame_bytes))
    count = -(-max(1, slices) // most)  # chunks needed
    return -(-max(1, slices) // count)


def _short_token(reader: FrameReader) -> str:
    from dask.base import tokenize

    return tokenize(reader)[:16]


# -- progress ----------------------------------------------------------------------------------------

@contextmanager
def progress(desc: str = "frames", **tqdm_options: Any) -> Iterator[Any]:
    """Show a progress bar (tqdm, notebook-aware) for the dask computations run inside the block::

        with dw.progress():
            volume.array.mean().compute()

    For the local schedulers (threads, processes); on a ``dask.distributed`` cluster use
    ``distributed.progress`` on persisted collections (or the dashboard).
    """
    from tqdm.auto import tqdm
    from tqdm.dask import TqdmCallback

    with TqdmCallback(desc=desc, tqdm_class=tqdm, leave=False, **tqdm_options) as callback:
        yield callback


def load_volume(pair: tuple[str, str], *, handle: SourceHandle, rescale: bool, max_workers: int,
                function: Callable[[Volume], Any] | None = None) -> Any:
    """Load one series of a cohort eagerly where this runs (a dask worker), then apply ``function``."""
    from .wado import fetch_volume

    study, series = pair
    volume = fetch_volume(handle.source, study, series, rescale=rescale, max_workers=max_workers, progress=False)
    return function(volume) if function is not None else volume

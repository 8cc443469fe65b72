"""``Client``: DICOMweb for notebooks - searches as DataFrames, pixels as numpy, uploads with a progress bar."""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset

from ..dicom.uids import UID_RULE, is_valid_uid
from ..errors import DicomWebError
from ..pixels.volume import Volume
from ..protocol import DicomJson, DicomWebSource, StowItem
from . import retrieve as _retrieve
from . import wado
from .dataframes import to_dataframe
from .qido import answer_columns, build_searches, result_key, scope_fields, validate_fields
from .stow import batches, collect_items, response_outcomes
from .workitems import WorklistMethods

if TYPE_CHECKING:
    from ..dicom.deidentify import Deidentifier
    from .segmentation import Segmentation

__all__ = ["Client"]

_LOSSY_MEDIA_TYPES = frozenset({"image/jpeg", "image/jp2", "image/jls", "image/jxl"})
# Attributes every instance's metadata has (Type 1 or 2 in the Patient, General Study, General
# Series and SOP Common modules): columns even of an empty metadata answer.
METADATA_COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality",
                    "SeriesNumber", "InstanceNumber", "PatientName", "PatientID", "StudyDate")
# Columns of store() results, typed the same whether or not anything was sent.
_RESULT_DTYPES = {"label": object, "SOPInstanceUID": object, "StudyInstanceUID": object, "status": object,
                  "failure_reason": "Int64", "warning_reason": "Int64", "retrieve_url": object, "error": object,
                  "batch": "Int64"}


def _result_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(_RESULT_DTYPES)).astype(_RESULT_DTYPES)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def _series_pairs(series: Any) -> list[tuple[str, str]]:
    """(study, series) UID pairs from a series DataFrame or an iterable of pairs."""
    if isinstance(series, pd.DataFrame):
        missing = {"StudyInstanceUID", "SeriesInstanceUID"} - set(series.columns)
        if missing:
            raise ValueError(f"the series DataFrame has no {', '.join(sorted(missing))} column")
        return [(str(a), str(b)) for a, b in zip(series["StudyInstanceUID"], series["SeriesInstanceUID"])]
    pairs = [tuple(pair) for pair in series]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("give a DataFrame from pacs.series(...) or (study UID, series UID) pairs")
    return [(str(a), str(b)) for a, b in pairs]


class Client(WorklistMethods):
    """A DICOMweb service seen from a notebook.

    Make one with ``dw.connect(url)``. Every method names the PS3.18 transaction it uses; UIDs are
    strings. Searches return DataFrames (see ``dw.to_dataframe``), pixels numpy arrays. The worklist
    (UPS-RS task queue: ``workitems``, ``create_workitem``, ``claim``, ``complete``...) is ``WorklistMethods``'.
    """

    def __init__(self, source: DicomWebSource, *, max_workers: int = 8, progress: bool = True):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.source = source
        self.max_workers = max_workers
        self.progress = progress

    def __repr__(self) -> str:
        return f"<dicomweb_nb.Client {getattr(self.source, 'url', self.source)!r}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self.source.close()

    @property
    def url(self) -> str | None:
        """The DICOMweb root, for a web server."""
        return getattr(self.source, "url", None)

    # -- QIDO-RS ------------------------------------------------------------------------------
    def _search(self, level: str, filters: Mapping[Any, Any] | None, keywords: Mapping[str, Any], *, study: str | None,
                series: str | None, fields: str | Iterable[str] | None, limit: int | None, offset: int, fuzzy: bool,
                raw: bool) -> pd.DataFrame | list[DicomJson]:
        plan = build_searches(level, filters, keywords)
        includes = validate_fields(fields)
        for what, uid in (("study", study), ("series", series)):
            if uid is not None and not is_valid_uid(uid):
                raise ValueError(f"{what} must be a UID ({UID_RULE}), not {uid!r}")
        limit = _count("limit", limit) if limit is not None else None
        offset = _count("offset", offset)
        scoped = (level == "series" and study is not None) or (level == "instance" and series is not None)
        if "all" not in includes:
            includes += [name for name in scope_fields(level, scoped) if name not in includes]
        source = self.source

        def ask(pairs: list[tuple[str, str]], window: int | None, skip: int) -> list[DicomJson]:
            return source.search(level, pairs, study=study, series=series, fields=includes,  # type: ignore[arg-type]
                                 fuzzy=bool(fuzzy), limit=window, offset=skip)

        if len(plan.queries) == 1:
            found = ask(plan.queries[0], limit, offset)
        else:
            # One request per value (see client.qido): merged in the order of the values, each result once.
            wanted = None if limit is None else offset + limit
            merged: dict[Any, DicomJson] = {}
            for pairs in plan.queries:
                if wanted is not None and len(merged) >= wanted:
                    break
                for obj in ask(pairs, wanted, 0):
                    merged.setdefault(result_key(obj, level), obj)
            found = list(merged.values())[offset:None if wanted is None else wanted]
        if raw:
            return found
        return to_dataframe(found, columns=answer_columns(level, plan.names, includes))

    def studies(self, filters: Mapping[str, Any] | None = None, *, fields: str | Iterable[str] | None = None,
                limit: int | None = None, offset: int = 0, fuzzy: bool = False, raw: bool = False,
                **keywords: Any) -> pd.DataFrame:
        """Search for studies (QIDO-RS): ``pacs.studies(PatientName="DOE*", StudyDate="20200101-")``.

        Filters are keyword arguments, or a ``filters`` dict for tags (``{"00100010": "DOE*"}``,
        ``{0x00100010: ...}``) and sequence paths. Values: text with ``*``/``?`` wildcards; dates,
        times and datetimes; ranges as ``"low-high"`` or a ``(low, high)`` tuple (``None`` for an open
        end); lists (or sets, arrays, Series) for any of several values, e.g.
        ``ModalitiesInStudy=["CT", "MR"]``. A list of UIDs goes in one request; other lists in one
        request per value, merged without duplicates in the order of the values (PS3.18 defines
        lists for UIDs only, and servers differ on others). An empty list matches nothing.
        ``fields`` adds attributes to the answer (``"all"`` for all); ``limit``/``offset`` window the
        matches (pages past server limits are fetched automatically); ``fuzzy=True`` matches person
        names fuzzily (each word starts a name component, any case, any order), on every server.
        A bad filter raises ``dw.errors.InvalidFilter`` before anything is sent. The DataFrame has
        the same columns and dtypes whether or not anything matched. ``raw=True`` returns the
        DICOM JSON list.
        """
        return self._search("study", filters, keywords, study=None, series=None, fields=fields, limit=limit,
                            offset=offset, fuzzy=fuzzy, raw=raw)

    def series(self, study: str | None = None, filters: Mapping[str, Any] | None = None, *,
               fields: str | Iterable[str] | None = None, limit: int | None = None, offset: int = 0, fuzzy: bool = False,
               raw: bool = False, **keywords: Any) -> pd.DataFrame:
        """Search for series, in one study or everywhere; arguments as for ``studies``."""
        return self._search("series", filters, keywords, study=study, series=None, fields=fields, limit=limit,
                            offset=offset, fuzzy=fuzzy, raw=raw)

    def instances(self, study: str | None = None, series: str | None = None, filters: Mapping[str, Any] | None = None, *,
                  fields: str | Iterable[str] | None = None, limit: int | None = None, offset: int = 0,
                  fuzzy: bool = False, raw: bool = False, **keywords: Any) -> pd.DataFrame:
        """Search for instances, in one series, one study or everywhere; arguments as for ``studies``."""
        if series and not study:
            raise ValueError("give the study UID along with the series UID")
        return self._search("instance", filters, keywords, study=study, series=series, fields=fields, limit=limit,
                            offset=offset, fuzzy=fuzzy, raw=raw)

    # -- WADO-RS metadata and datasets -----------------------------------------------------------
    def metadata(self, study: str, series: str | None = None, instance: str | None = None, *,
                 raw: bool = False) -> pd.DataFrame:
        """All attributes of every instance of a study, series or one instance: one row per instance."""
        found = self.source.retrieve_metadata(study, series, instance)
        return found if raw else to_dataframe(found, columns=METADATA_COLUMNS)

    def instance(self, study: str, series: str, instance: str) -> Dataset:
        """One instance as a pydicom Dataset, in the transfer syntax the server stores it in."""
        datasets = list(wado.iter_datasets(self.source, study, series, instance))
        if len(datasets) != 1:
            raise DicomWebError(f"asked for instance {instance}, the server sent {len(datasets)}")
        return datasets[0]

    def iter_series_datasets(self, study: str, series: str) -> Iterator[Dataset]:
        """The instances of a series as pydicom Datasets, each parsed as soon as it has arrived."""
        return wado.iter_datasets(self.source, study, series)

    def series_datasets(self, study: str, series: str) -> list[Dataset]:
        """The instances of a series as pydicom Datasets (streamed; each file's bytes are dropped once parsed)."""
        return list(self.iter_series_datasets(study, series))

    def study_datasets(self, study: str) -> list[Dataset]:
        """The instances of a study as pydicom Datasets."""
        return list(wado.iter_datasets(self.source, study))

    # -- pixels -------------------------------------------------------------------------------
    def frames(self, study: str, series: str, instance: str, frames: int | Iterable[int] | None = None, *,
               rescale: bool = False) -> np.ndarray:
        """Frames of an instance as ``(n, rows, columns[, samples])``; ``frames`` are 1-based numbers (all by default).

        Frames come in whatever transfer syntax the server stores (JPEG, JPEG-LS, JPEG 2000, RLE...) and
        are decoded here, with the same results as pydicom's ``pixel_array``. ``rescale=True`` turns
        stored values into modality values (Rescale Slope/Intercept or Modality LUT; float32).
        """
        return wado.fetch_frames(self.source, study, series, instance, frames, rescale=rescale,
                                 max_workers=self.max_workers)

    def volume(self, study: str, series: str, *, rescale: bool = True, progress: bool | None = None,
               method: str = "auto", lazy: bool = False, cache: bool = True, geometry: str = "auto") -> Volume:
        """A series as one 3-D ``Volume``: ``.array[k, row, column]`` sorted along the slice normal.

        ``.spacing``, ``.origin``, ``.direction`` and ``.affine`` give its geometry in patient
        coordinates (mm); ``.to_xarray()`` a labelled array. Values are modality values (HU for CT)
        unless ``rescale=False``. Raises ``dw.errors.VolumeError`` for series that are not one
        regular stack (mixed orientations or sizes, duplicated or missing slices).
        ``method="auto"`` (default) uses the server's Retrieve Bulkdata (metadata, then every frame's
        pixels in one answer, decoded straight into place) where it exists, else ``"series"``: the
        series in one retrieve, instances parsed as they arrive; ``"frames"`` fetches each
        instance's frames concurrently.

        ``lazy=True`` returns at once, after one metadata request: ``.array`` is then a dask array
        whose frames are fetched when a computation needs them (``vol.array[120].compute()`` fetches
        one frame), several frame numbers per request, at most ``max_workers`` requests at a time per
        host, kept in the local frame cache (``dw.cache``; ``cache=False`` bypasses it). It computes
        on any dask scheduler; a frame that cannot be fetched raises ``dw.errors.FrameError`` naming it.
        ``geometry="qido"`` reads the geometry from a QIDO-RS instance search instead of the series
        metadata (smaller answers where instances carry many attributes). ``method`` and ``progress``
        are the eager load's; a lazy computation shows progress inside ``with dw.progress():``.
        """
        if lazy:
            from .lazy import lazy_volume

            return lazy_volume(self.source, study, series, rescale=rescale, max_per_host=self.max_workers,
                               cache=cache, geometry=geometry)
        return wado.fetch_volume(self.source, study, series, rescale=rescale, max_workers=self.max_workers,
                                 progress=self.progress if progress is None else progress, method=method)

    def volumes(self, series: pd.DataFrame | Iterable[tuple[str, str]], *, rescale: bool = True, cache: bool = True,
                geometry: str = "auto") -> list[Volume]:
        """One lazy ``Volume`` per series of a cohort: a DataFrame from ``pacs.series(...)`` (its
        ``StudyInstanceUID`` and ``SeriesInstanceUID`` columns) or ``(study, series)`` pairs.

        The geometries are read concurrently here; the pixels are read where the arrays are computed,
        on whatever dask scheduler is active (threads, processes, a ``dask.distributed`` cluster)::

            vols = pacs.volumes(pacs.series(Modality="CT"))
            means = dask.compute(*[v.array.mean() for v in vols])

        A series that is not one regular volume raises its ``VolumeError`` (filter the DataFrame first).
        See ``cohort`` for a computation that runs entirely on the workers.
        """
        from concurrent.futures import ThreadPoolExecutor

        from .lazy import SourceHandle, lazy_volume

        pairs = _series_pairs(series)
        handle = SourceHandle(self.source)
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(pairs) or 1))) as pool:
            return list(pool.map(lambda pair: lazy_volume(self.source, pair[0], pair[1], rescale=rescale,
                                                          max_per_host=self.max_workers, cache=cache,
                                                          geometry=geometry, handle=handle), pairs))

    def cohort(self, series: pd.DataFrame | Iterable[tuple[str, str]], function: Callable[[Volume], Any] | None = None,
               *, rescale: bool = True, partitions: int | None = None) -> Any:
        """A dask bag with ``function(volume)`` for each series, each volume loaded (eagerly, the fastest
        way) on the worker that runs it: nothing but the results comes back to this kernel::

            bag = pacs.cohort(pacs.series(Modality="CT"), lambda v: float(v.array.mean()))
            results = bag.compute()          # on the active scheduler, e.g. a distributed Client

        Without ``function`` the bag holds the Volumes themselves.
        """
        from .lazy import SourceHandle, load_volume, require_dask

        require_dask()
        import dask.bag as db

        pairs = _series_pairs(series)
        handle = SourceHandle(self.source)
        bag = db.from_sequence(pairs, npartitions=partitions or max(1, len(pairs)))
        return bag.map(load_volume, handle=handle, rescale=rescale, max_workers=self.max_workers, function=function)

    def slide(self, study: str, series: str, *, cache: bool = True) -> Any:
        """A tiled whole-slide image (``DimensionOrganizationType`` TILED_FULL) as a lazy pyramid.

        ``slide.levels[i]`` is a dask array ``(rows, columns[, samples])`` of pyramid level ``i``
        (0 the largest), chunked along its tiles: ``slide.levels[0][5000:6000, 8000:9000].compute()``
        fetches only the tiles it touches, in one frames request. See ``dicomweb_nb.client.slide.Slide``.
        """
        from .slide import lazy_slide

        return lazy_slide(self.source, study, series, max_per_host=self.max_workers, cache=cache)

    def rendered(self, study: str, series: str | None = None, instance: str | None = None, frame: int | None = None, *,
                 window: tuple[float, float] | None = None, viewport: tuple[int, int] | None = None,
                 quality: int | None = None, media_type: str = "image/png") -> Any:
        """The server's rendering (WADO-RS ``/rendered``) of a study, series, instance or frame as a PIL image.

        ``window=(center, width)`` sets the VOI window, ``viewport=(width, height)`` the size,
        ``quality`` (1-100) the JPEG quality (lossy media types only: ``media_type="image/jpeg"``).
        """
        if quality is not None and media_type.lower() not in _LOSSY_MEDIA_TYPES:
            # PS3.18 8.3.5.1.3: quality is for lossy compression; a PNG or GIF would silently ignore it.
            raise ValueError(f"quality applies to lossy images ({', '.join(sorted(_LOSSY_MEDIA_TYPES))}), "
                             f"not {media_type}: ask media_type='image/jpeg'")
        params: dict[str, str] = {}
        if window is not None:
            center, width = window
            params["window"] = f"{center:g},{width:g},linear"
        if viewport is not None:
            params["viewport"] = f"{int(viewport[0])},{int(viewport[1])}"
        if quality is not None:
            params["quality"] = str(int(quality))
        image = self.source.retrieve_rendered(study, series, instance, frame, media_type=media_type, params=params)
        return wado.image_from_bytes(image.data)

    def thumbnail(self, study: str, series: str | None = None, instance: str | None = None, frame: int | None = None, *,
                  size: int | None = 128, media_type: str = "image/png") -> Any:
        """A small PIL image of a study, series, instance or frame (WADO-RS ``/thumbnail``, or a small rendering).

        ``size`` bounds its width and height in pixels; ``None`` leaves the size to the server.
        """
        if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
            raise ValueError(f"size must be a positive number of pixels or None, not {size!r}")
        image = self.source.retrieve_thumbnail(study, series, instance, frame, media_type=media_type, size=size)
        return wado.image_from_bytes(image.data)

    # -- segmentations and measurements ----------------------------------------------------------
    def segmentation(self, study: str, series: str, instance: str, *,
                     source: tuple[str, str] | None = None) -> Segmentation:
        """A DICOM SEG or RTSTRUCT instance as masks on the grid of the series it was drawn on.

        ``seg.masks[s, k, r, c]`` lines up with ``pacs.volume(*seg.source).array[k, r, c]`` (overlapping
        segments stay separate); ``seg.segments`` describes each segment (``SegmentNumber``,
        ``SegmentLabel``, category, type, algorithm, ``colour``). Binary masks are boolean, fractional
        ones float32 in [0, 1]; slices the SEG does not cover are empty. An RTSTRUCT gives one mask per
        ROI, its contours filled on the referenced series' grid. ``source=(study, series)`` names the
        source series when the instance does not.
        """
        from .segmentation import read_segmentation

        return read_segmentation(self.source, study, series, instance, source_series=source)

    def store_segmentation(self, masks: Any, source: tuple[str, str], names: Sequence[str] | str, *,
                           categories: Sequence[Any] | None = None, types: Sequence[Any] | None = None,
                           colours: Sequence[Any] | None = None, algorithm: str | None = None,
                           description: str | None = None, series_number: int | None = None,
                           transfer_syntax: str | None = None) -> dict[str, str]:
        """Store masks as a DICOM SEG of a source series (STOW-RS); returns its Study/Series/SOP Instance UIDs.

        ``masks`` is ``(segments, slices, rows, columns)`` like ``seg.masks`` (a 3-D mask is one segment)
        on the grid of ``pacs.volume(*source)``: boolean (or 0/1) for a binary SEG, floats in [0, 1] for a
        fractional one (stored in 1/255 steps). ``names`` label the segments; ``types``/``categories`` are
        codes (``"SCT:10200004:Liver"``, a pydicom ``Code``, or a name pydicom knows such as ``"Liver"``,
        which is also tried for each name); ``colours`` are ``#rrggbb`` or RGB tuples; ``algorithm`` names
        the program that made them (else the segments are MANUAL). Compressed (JPEG 2000 / JPEG-LS
        lossless) unless the server refuses it, then uncompressed; empty frames are left out.
        """
        from .segmentation import store_segmentation

        return store_segmentation(self, masks, source, names, categories=categories, types=types, colours=colours,
                                  algorithm=algorithm, description=description, series_number=series_number,
                                  transfer_syntax=transfer_syntax)

    def measurements(self, study: str, series: str, instance: str) -> pd.DataFrame:
        """The measurements of a TID 1500 Measurement Report (structured report): one row per measurement.

        Columns: ``name`` and ``code`` of the quantity, ``value``, ``unit``, the measurement group's
        ``tracking_id``/``tracking_uid``/``finding``/``finding_site``, and for measurements of a segment
        its ``segment`` number and the ``segmentation`` SOP Instance UID.
        """
        from .measurements import read_measurements

        return read_measurements(self.source, study, series, instance)

    def store_measurements(self, measurements: pd.DataFrame, source: tuple[str, str], *,
                           segmentation: str | Mapping[str, str] | None = None, title: str | None = None,
                           description: str | None = None, series_number: int | None = None) -> dict[str, str]:
        """Store a DataFrame of measurements as a TID 1500 Measurement Report (STOW-RS); returns its UIDs.

        Columns as ``measurements`` returns: ``name`` (or ``code``, ``"SCHEME:VALUE:Meaning"``), ``value``,
        ``unit`` (UCUM, e.g. ``"mm3"``), and optionally ``segment`` (a segment number of ``segmentation``:
        the SOP Instance UID or the dict ``store_segmentation`` returned), ``tracking_id`` and ``finding``.
        Rows with the same segment and tracking id form one measurement group.
        """
        from .measurements import store_measurements

        return store_measurements(self, measurements, source, segmentation=segmentation, title=title,
                                  description=description, series_number=series_number)

    # -- de-identification ------------------------------------------------------------------------
    def deidentify(self, study: str | Iterable[str], series: str | None = None, *,
                   to: str | os.PathLike[str] | Client, profile: Deidentifier | None = None,
                   burned_in: str = "skip", progress: bool | None = None, **options: Any) -> pd.DataFrame:
        """Copy a study (or a series, or several studies) de-identified into a folder or another server.

        Applies the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile with the
        options given as keywords (see ``dicomweb_nb.dicom.deidentify.Deidentifier``): ``dates="remove"``
        (default), ``"shift"`` (Retain Longitudinal Temporal Information with Modified Dates) or
        ``"keep"``; ``retain_patient_characteristics``, ``retain_device_identity``,
        ``retain_institution_identity``, ``retain_uids``; ``secret`` to remap UIDs and dates the same way
        in later runs. Pass one ``profile=Deidentifier(...)`` to several calls to keep a study set consistent.

        Returns the mapping of original to new identifiers, one row per instance (keep it safe: it is
        never written into the export). Instances that may carry burned-in annotation (Burned In
        Annotation YES, or a modality or SOP class known for it) are flagged in ``burned_in_annotation``
        with a warning; ``burned_in="skip"`` (default) leaves them out, ``"include"`` exports them.
        """
        from .deidentify import deidentify

        return deidentify(self, study, series, to=to, profile=profile, burned_in=burned_in,
                          progress=self.progress if progress is None else progress, **options)

    # -- STOW-RS ------------------------------------------------------------------------------
    def store(self, data: str | os.PathLike[str] | Dataset | bytes | Iterable[Any], *, study: str | None = None,
              batch_size: int = 50, max_batch_bytes: int = 256 << 20, progress: bool | None = None,
              progress_bar: Callable[..., Any] | None = None, cancel: threading.Event | None = None) -> pd.DataFrame:
        """Upload DICOM (STOW-RS): file paths, folders (recursively), pydicom Datasets or Part 10 bytes.

        Sent in batches of ``batch_size`` instances (at most ``max_batch_bytes`` each), streamed from
        disk. Returns one row per input: ``status`` is ``stored``, ``warning`` (stored, with a
        ``warning_reason``), ``failed`` (``failure_reason`` code or ``error`` text) or ``skipped``
        (not a DICOM instance). Failures are listed, never dropped; nothing is raised for them.

        ``progress_bar`` replaces the tqdm bar: a callable taking tqdm's ``total=, desc=, unit=``
        keywords and returning an object with ``update(n)`` and ``close()`` (the widgets pass one).
        Setting the ``cancel`` event stops before the next batch; the unsent instances are ``cancelled``.
        """
        items, skipped = collect_items(data)
        rows = self._store_rows(items, study=study, batch_size=batch_size, max_batch_bytes=max_batch_bytes,
                                progress=progress, progress_bar=progress_bar, cancel=cancel)
        rows += [{"label": label, "status": "skipped", "error": reason} for label, reason in skipped]
        return _result_frame(rows)

    def store_items(self, items: Sequence[StowItem], *, study: str | None = None, batch_size: int = 50,
                    max_batch_bytes: int = 256 << 20, progress: bool | None = None,
                    progress_bar: Callable[..., Any] | None = None, cancel: threading.Event | None = None) -> pd.DataFrame:
        """``store`` for prepared StowItems (used by ``retrieve`` into another server)."""
        return _result_frame(self._store_rows(items, study=study, batch_size=batch_size, max_batch_bytes=max_batch_bytes,
                                              progress=progress, progress_bar=progress_bar, cancel=cancel))

    def _store_rows(self, items: Sequence[StowItem], *, study: str | None, batch_size: int, max_batch_bytes: int,
                    progress: bool | None, progress_bar: Callable[..., Any] | None,
                    cancel: threading.Event | None) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        show = self.progress if progress is None else progress
        rows: list[dict[str, Any]] = []
        if progress_bar is None:
            bar = tqdm(total=len(items), desc="store", unit="instance", disable=not show, leave=False)
        else:
            bar = progress_bar(total=len(items), desc="store", unit="instance")
        sent: set[int] = set()

        def on_sent(item: StowItem) -> None:
            if id(item) not in sent:  # a retried batch sends its items again
                sent.add(id(item))
                bar.update(1)

        try:
            for number, batch in enumerate(batches(items, max_count=batch_size, max_bytes=max_batch_bytes)):
                if cancel is not None and cancel.is_set():
                    rows.extend({"label": item.label, "SOPInstanceUID": item.sop_instance_uid,
                                 "StudyInstanceUID": item.study_instance_uid, "status": "cancelled", "batch": number}
                                for item in batch)
                    continue
                try:
                    response = self.source.store_instances(batch, study=study, on_sent=on_sent)
                    outcomes = response_outcomes(response)
                    batch_error = None
                except DicomWebError as exc:
                    outcomes, batch_error = {}, str(exc)
                for item in batch:
                    outcome = outcomes.get(item.sop_instance_uid or "")
                    row = {"label": item.label, "SOPInstanceUID": item.sop_instance_uid,
                           "StudyInstanceUID": item.study_instance_uid, "batch": number, "error": batch_error,
                           "failure_reason": None, "warning_reason": None, "retrieve_url": None}
                    if outcome is not None:
                        row.update(outcome)
                    else:
                        row["status"] = "failed"
                        row["error"] = batch_error or "the server's STOW-RS answer does not mention this instance"
                    rows.append(row)
        finally:
            bar.close()
        return rows

    # -- delete and the change feed (client.workflow) ------------------------------------------------
    def delete(self, study: str, series: str | None = None, instance: str | None = None, *, confirm: bool = False) -> None:
        """Delete a study, a series or an instance from the server (``DELETE`` of its URL; in-process
        for this workspace's store). It cannot be undone: deleting a whole study needs
        ``confirm=True`` (``dw.errors.ConfirmationRequired`` otherwise). An unknown UID raises
        ``dw.errors.NotFound``; a server that does not allow it, its error (403, 405...).
        Frames of what was deleted leave the local frame cache.
        """
        from .workflow import delete_resource

        delete_resource(self.source, study, series, instance, confirm=confirm)

    def changes(self, since: int | None = None, *, start: Any = None, end: Any = None, limit: int | None = None,
                metadata: bool = False) -> pd.DataFrame:
        """The server's change feed (Azure's DICOM change feed; ours has it): one row per instance
        created or deleted, oldest first, columns ``Sequence``, ``Timestamp`` (UTC), ``Action``
        (``create`` | ``delete``), ``State`` (``current`` | ``replaced`` | ``deleted``: what became of
        it since), ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID``.

        ``since``: only entries after that ``Sequence`` (keep the last one you processed and pass it
        next time: an incremental pipeline). ``start``/``end``: a time window ``[start, end)``
        (datetimes, naive ones in UTC, or ISO 8601 strings). ``limit``: at most that many.
        ``metadata=True`` adds ``Metadata``, the instance's current DICOM JSON (None once deleted).
        """
        from .workflow import changes_frame, read_changes

        return changes_frame(read_changes(self.source, since=since, start=start, end=end, limit=limit, metadata=metadata),
                             metadata=metadata)

    def latest_sequence(self) -> int:
        """The ``Sequence`` of the newest change-feed entry (0 when nothing was ever stored): where
        ``changes(since=...)`` starts to follow only what happens from now on."""
        latest = getattr(self.source, "latest_change", None)
        if latest is None:
            raise DicomWebError(f"{type(self.source).__name__} has no change feed")
        entry = latest()
        return int(entry["Sequence"]) if entry else 0

    # -- copying elsewhere ------------------------------------------------------------------------
    def retrieve(self, study: str, series: str | None = None, instance: str | None = None, *,
                 to: str | os.PathLike[str] | Client, batch_size: int = 50, progress: bool | None = None,
                 progress_bar: Callable[..., Any] | None = None, cancel: threading.Event | None = None) -> pd.DataFrame:
        """Copy a study, series or instance into a folder (``to="downloads/"``) or another server (``to=dw.connect()``).

        Instances the destination already has are skipped, so re-running resumes an interrupted copy.
        Folders get ``<study>/<series>/<sop>.dcm``. Returns one row per instance with its ``status``
        (``retrieved``, ``present``, ``failed`` with ``error``, or ``cancelled``).

        ``progress_bar`` and ``cancel`` work as for ``store``: a tqdm-like factory, and an event
        that, once set, stops the instances not yet downloaded (re-running resumes).
        """
        from tqdm.auto import tqdm

        show = self.progress if progress is None else progress

        def tqdm_bar(**kwargs: Any) -> Any:
            return tqdm(disable=not show, leave=False, **kwargs)

        bar = progress_bar or tqdm_bar
        if isinstance(to, Client):
            return _retrieve.retrieve_to_client(self.source, study, series, instance, to, max_workers=self.max_workers,
                                                batch_size=batch_size, progress_bar=bar, cancel=cancel)
        if isinstance(to, (str, os.PathLike)):
            return _retrieve.retrieve_to_folder(self.source, study, series, instance, Path(to),
                                                max_workers=self.max_workers, progress_bar=bar, cancel=cancel)
        raise TypeError(f"retrieve(to=...) takes a folder path or a Client, not {type(to).__name__}")

"""Copy a study, series or instance elsewhere: into a folder, or into another DICOMweb server.

Resumable: what the destination already holds is skipped, so an interrupted retrieve simply runs
again. Files are written to a temporary name and renamed, so a half-written file never counts as
present.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import DicomWebError, NotFound
from ..fileio import write_atomically
from ..protocol import DicomJson, DicomWebSource, StowItem

if TYPE_CHECKING:
    from .client import Client

__all__ = ["retrieve_to_folder", "retrieve_to_client", "list_instances", "instance_path"]

_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"


def _uid(obj: DicomJson, tag: str) -> str | None:
    values = (obj.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


def list_instances(source: DicomWebSource, study: str, series: str | None, instance: str | None) -> list[tuple[str, str, str]]:
    """``(study, series, sop)`` of every instance under the given level, via QIDO-RS."""
    filters = [("SOPInstanceUID", instance)] if instance else []
    found = source.search("instance", filters, study=study, series=series, fields=["SeriesInstanceUID"])
    out = []
    for obj in found:
        sop = _uid(obj, _SOP)
        series_uid = _uid(obj, _SERIES) or series
        if sop is None or series_uid is None:
            raise DicomWebError(f"the server's instance list for study {study} lacks SOP or series UIDs")
        out.append((study, series_uid, sop))
    if instance and not out:
        raise DicomWebError(f"instance {instance} not found in study {study}", status=404)
    return out


def instance_path(folder: Path, study: str, series: str, sop: str) -> Path:
    """Where a retrieved instance is kept: ``folder/<study>/<series>/<sop>.dcm``."""
    return folder / study / series / f"{sop}.dcm"


def _download(source: DicomWebSource, study: str, series: str, sop: str) -> bytes:
    parts = list(source.iter_instances(study, series, sop))
    if len(parts) != 1:
        raise DicomWebError(f"asked for instance {sop}, the server sent {len(parts)} parts")
    return parts[0]


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def retrieve_to_folder(source: DicomWebSource, study: str, series: str | None, instance: str | None, folder: Path,
                       *, max_workers: int, progress_bar: Callable[..., Any],
                       cancel: threading.Event | None = None) -> pd.DataFrame:
    todo = list_instances(source, study, series, instance)
    rows: dict[str, dict[str, Any]] = {}
    missing = []
    for st, se, sop in todo:
        path = instance_path(folder, st, se, sop)
        row = {"StudyInstanceUID": st, "SeriesInstanceUID": se, "SOPInstanceUID": sop, "path": str(path),
               "status": "present", "error": None}
        rows[sop] = row
        if not path.exists():
            missing.append((st, se, sop))

    def fetch(item: tuple[str, str, str]) -> tuple[str, str, str | None]:
        st, se, sop = item
        if _cancelled(cancel):  # checked per instance: a cancel stops the downloads not yet begun
            return sop, "cancelled", None
        try:
            write_atomically(instance_path(folder, st, se, sop), _download(source, st, se, sop))
            return sop, "retrieved", None
        except (DicomWebError, OSError) as exc:
            return sop, "failed", str(exc)

    bar = progress_bar(total=len(missing), desc="retrieve", unit="instance")
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            for sop, status, error in pool.map(fetch, missing):
                rows[sop]["status"] = status
                rows[sop]["error"] = error
                if status != "cancelled":
                    bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame(list(rows.values()), columns=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                                      "path", "status", "error"])


def retrieve_to_client(source: DicomWebSource, study: str, series: str | None, instance: str | None, target: Client,
                       *, max_workers: int, batch_size: int, progress_bar: Callable[..., Any],
                       cancel: threading.Event | None = None) -> pd.DataFrame:
    todo = list_instances(source, study, series, instance)
    present: set[str | None] = set()
    if todo:
        try:
            present = {_uid(obj, _SOP) for obj in target.source.search("instance", [], study=study)}
        except NotFound:  # a destination without the study may answer 404 rather than an empty list
            present = set()
    rows: dict[str, dict[str, Any]] = {}
    missing = []
    for st, se, sop in todo:
        rows[sop] = {"StudyInstanceUID": st, "SeriesInstanceUID": se, "SOPInstanceUID": sop,
                     "status": "present" if sop in present else "pending", "error": None}
        if sop not in present:
            missing.append((st, se, sop))

    def fetch(item: tuple[str, str, str]) -> tuple[str, bytes | None, str | None]:
        st, se, sop = item
        try:
            return sop, _download(source, st, se, sop), None
        except DicomWebError as exc:
            return sop, None, str(exc)

    bar = progress_bar(total=len(missing), desc="retrieve", unit="instance")
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            for start in range(0, len(missing), batch_size):
                if _cancelled(cancel):  # checked per batch: what is already stored stays stored
                    for _, _, sop in missing[start:]:
                        rows[sop]["status"] = "cancelled"
                    break
                chunk = missing[start:start + batch_size]
                items = []
                for sop, data, error in pool.map(fetch, chunk):
                    if error is not None or data is None:
                        rows[sop].update(status="failed", error=error)
                        continue
                    items.append(StowItem.from_bytes(sop, data, sop))
                if items:
                    stored = target.store_items(items, progress=False)
                    for _, result in stored.iterrows():
                        sop = result["SOPInstanceUID"]
                        ok = result["status"] in ("stored", "warning")
                        rows[sop].update(status="retrieved" if ok else "failed", error=None if ok else result["error"])
                bar.update(len(chunk))
    finally:
        bar.close()
    return pd.DataFrame(list(rows.values()), columns=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                                      "status", "error"])

"""STOW-RS from the notebook: what to upload, a streamed request body, per-instance results.

The body is a file-like object of known length that reads each file only when the socket wants
its bytes, so an upload of many gigabytes never sits in memory, and servers that refuse chunked
requests (no Content-Length) still accept it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from ..dicom.multipart import MultipartWriter
from ..protocol import DicomJson, StowItem

__all__ = ["StowBody", "collect_items", "SkippedInput", "batches", "response_outcomes", "dataset_part10"]

_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"
_RETRIEVE_URL = "00081190"
_REFERENCED_SOP_SEQUENCE = "00081199"
_FAILED_SOP_SEQUENCE = "00081198"
_OTHER_FAILURES_SEQUENCE = "0008119A"


class StowBody:
    """A multipart/related body over StowItems, read lazily; ``len()`` is its exact size."""

    def __init__(self, items: Sequence[StowItem], boundary: str, *, on_sent: Callable[[StowItem], None] | None = None,
                 chunk_size: int = 1 << 20):
        self._items = list(items)
        self._writer = MultipartWriter(boundary)
        self._on_sent = on_sent
        self._chunk_size = chunk_size
        heads = []
        probe = MultipartWriter(boundary)
        for _ in self._items:
            heads.append(probe.part_head("application/dicom"))
        self._length = sum(len(h) for h in heads) + sum(item.size for item in self._items) + len(probe.close())
        self._pieces = self._generate()
        self._buffer = memoryview(b"")

    def __len__(self) -> int:
        return self._length

    def _generate(self) -> Iterable[bytes]:
        for item in self._items:
            yield self._writer.part_head("application/dicom")
            data = item.read()
            if len(data) != item.size:
                raise OSError(f"{item.label} changed size while being uploaded ({item.size} -> {len(data)} bytes)")
            yield data
            if self._on_sent is not None:
                self._on_sent(item)
        yield self._writer.close()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all remaining when negative), as http.client asks for them."""
        if size is None or size < 0:
            return bytes(self._buffer) + b"".join(self._pieces)
        while not self._buffer:
            piece = next(self._pieces, None)  # type: ignore[call-overload]
            if piece is None:
                return b""
            self._buffer = memoryview(piece)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(out)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.read(self._chunk_size)
            if not chunk:
                return
            yield chunk


class SkippedInput(Exception):
    """An input that is not a DICOM instance (listed in the results, never silently dropped)."""


def dataset_part10(ds: Dataset) -> bytes:
    """Part 10 bytes of a dataset, adding the file meta a STOW-RS part needs when it is missing.

    The caller's dataset is not modified.
    """
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise SkippedInput("the dataset has no SOPInstanceUID / SOPClassUID")
    original_meta = getattr(ds, "file_meta", None)
    meta = FileMetaDataset(original_meta) if original_meta is not None else FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "ImplementationClassUID" not in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out = ds.copy()
    out.file_meta = meta
    buffer = BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _file_item(path: Path) -> StowItem:
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["SOPInstanceUID", "SOPClassUID", "StudyInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SkippedInput(f"not a readable DICOM file: {exc}") from None
    uid = str(header.get("SOPInstanceUID", "") or "")
    if not uid:
        raise SkippedInput("no SOPInstanceUID: not a DICOM instance (a DICOMDIR?)")
    size = path.stat().st_size
    return StowItem(str(path), size, path.read_bytes, uid, str(header.get("SOPClassUID", "") or "") or None,
                    str(header.get("StudyInstanceUID", "") or "") or None)


def _dataset_item(ds: Dataset, label: str) -> StowItem:
    data = dataset_part10(ds)
    return StowItem(label, len(data), lambda: data, str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                    str(ds.get("StudyInstanceUID", "")) or None)


def collect_items(source: Any) -> tuple[list[StowItem], list[tuple[str, str]]]:
    """StowItems for paths, folders (walked recursively), datasets or Part 10 bytes.

    Returns ``(items, skipped)``; ``skipped`` is ``(label, reason)`` for inputs that are not DICOM.
    """
    if isinstance(source, (str, os.PathLike, Dataset, bytes, bytearray)):
        source = [source]
    items: list[StowItem] = []
    skipped: list[tuple[str, str]] = []
    for index, entry in enumerate(source):
        if isinstance(entry, Dataset):
            label = f"dataset[{index}]"
            try:
                items.append(_dataset_item(entry, label))
            except SkippedInput as exc:
                skipped.append((label, str(exc)))
            continue
        if isinstance(entry, (bytes, bytearray)):
            label = f"bytes[{index}]"
            try:
                ds = pydicom.dcmread(BytesIO(entry), stop_before_pixels=True)
                data = bytes(entry)
                items.append(StowItem.from_bytes(label, data, str(ds.SOPInstanceUID),
                                      str(ds.get("SOPClassUID", "")) or None, str(ds.get("StudyInstanceUID", "")) or None))
            except (InvalidDicomError, AttributeError, ValueError, EOFError) as exc:
                skipped.append((label, f"not a DICOM instance: {exc}"))
            continue
        if not isinstance(entry, (str, os.PathLike)):
            raise TypeError(f"store() takes paths, folders, pydicom Datasets or bytes, not {type(entry).__name__}")
        path = Path(entry)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                try:
                    items.append(_file_item(child))
                except SkippedInput as exc:
                    skipped.append((str(child), str(exc)))
        elif path.is_file():
            try:
                items.append(_file_item(path))
            except SkippedInput as exc:
                skipped.append((str(path), str(exc)))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return items, skipped


def batches(items: Sequence[StowItem], *, max_count: int, max_bytes: int) -> list[list[StowItem]]:
    """Consecutive groups of at most ``max_count`` items and ``max_bytes`` bytes (a larger item goes alone)."""
    out: list[list[StowItem]] = []
    current: list[StowItem] = []
    size = 0
    for item in items:
        if current and (len(current) >= max_count or size + item.size > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += item.size
    if current:
        out.append(current)
    return out


def _seq(obj: DicomJson, tag: str) -> list[DicomJson]:
    elem = obj.get(tag) or {}
    return [item or {} for item in elem.get("Value", [])]


def _first(obj: DicomJson, tag: str) -> Any:
    values = (obj.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def response_outcomes(response: DicomJson) -> dict[str, dict[str, Any]]:
    """Per SOP Instance UID: ``status`` (stored / warning / failed), reason codes and RetrieveURL."""
    outcomes: dict[str, dict[str, Any]] = {}
    for item in _seq(response, _REFERENCED_SOP_SEQUENCE):
        uid = _first(item, _SOP_INSTANCE)
        if uid:
            warning = _first(item, _WARNING_REASON)
            outcomes[uid] = {"status": "warning" if warning is not None else "stored", "warning_reason": warning,
                             "failure_reason": None, "retrieve_url": _first(item, _RETRIEVE_URL)}
    for tag in (_FAILED_SOP_SEQUENCE, _OTHER_FAILURES_SEQUENCE):
        for item in _seq(response, tag):
            uid = _first(item, _SOP_INSTANCE)
            if uid:
                outcomes[uid] = {"status": "failed", "failure_reason": _first(item, _FAILURE_REASON),
                                 "warning_reason": None, "retrieve_url": None}
    return outcomes

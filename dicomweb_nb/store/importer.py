"""Import existing files and folders into the store (``dicomweb-nb import``, ``dw.import_files``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..workspace import store_folder
from .store import Store, StoreOutcome, describe_failure, workspace_store_options

BATCH = 64  # instances per index transaction


@dataclass
class ImportReport:
    """What an import did: stored instances, and files skipped with the reason."""

    stored: list[StoreOutcome] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __repr__(self) -> str:
        return f"ImportReport(stored={len(self.stored)}, skipped={len(self.skipped)})"


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named, and files under folders named (recursively, hidden entries skipped)."""
    for item in paths:
        path = Path(item)
        if path.is_dir():
            for dirpath, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(dirpath) / name
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")


def import_paths(store: Store, paths: Iterable[str | os.PathLike[str]], *, progress: bool = True) -> ImportReport:
    """Copy DICOM files into the store; non-DICOM files are skipped and listed, never fatal."""
    files = list(iter_files(paths))
    report = ImportReport()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="file", desc="import")
    try:
        for start in range(0, len(files), BATCH):
            batch = files[start:start + BATCH]
            outcomes = store.store_files(batch, move=False, sources=[str(p) for p in batch])
            for outcome in outcomes:
                if outcome.stored:
                    report.stored.append(outcome)
                else:
                    reason = outcome.message or describe_failure(outcome.failure_reason or 0)
                    report.skipped.append((outcome.source or "?", reason))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return report


def import_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 store: str | os.PathLike[str] | None = None, progress: bool = True) -> ImportReport:
    """Copy DICOM files and folders of the workspace into its store, with a progress bar.

    ``store`` defaults to the workspace store ``dw.connect()`` uses. Files that are not DICOM are
    skipped and listed in the report (``report.skipped``), never fatal::

        report = dw.import_files("scans/")
        report.skipped
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    folder = store_folder(store)
    target = Store(folder, **workspace_store_options(folder))
    try:
        return import_paths(target, paths, progress=progress)
    finally:
        target.close()

"""``pacs.deidentify``: copy studies de-identified into a folder or another DICOMweb server.

The rules are ``dicom.deidentify`` (PS3.15 Annex E, shared with the server's ``anonymize=yes``);
this module streams the instances in (WADO-RS, one parsed at a time), writes or STOWs the
de-identified copies, and returns the mapping of identifiers - which stays with the caller and is
never written into the export.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..dicom.deidentify import Deidentified, Deidentifier
from ..errors import DicomWebError
from ..fileio import write_atomically
from ..protocol import StowItem
from . import wado

if TYPE_CHECKING:
    from .client import Client

__all__ = ["deidentify", "MAPPING_COLUMNS", "BurnedInAnnotationWarning"]

MAPPING_COLUMNS = [
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "PatientName",
    "new_StudyInstanceUID", "new_SeriesInstanceUID", "new_SOPInstanceUID", "new_PatientID",
    "date_offset_days", "burned_in_annotation", "status", "path", "error",
]
BURNED_IN_CHOICES = ("skip", "include")


class BurnedInAnnotationWarning(UserWarning):
    """Instances whose pixels may show identifying text were met (see the ``burned_in_annotation`` column)."""


def _part10(result: Deidentified) -> bytes:
    buffer = BytesIO()
    result.dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def deidentify(client: Client, study: str | Iterable[str], series: str | None = None, *,
               to: str | os.PathLike[str] | Client, profile: Deidentifier | None = None, burned_in: str = "skip",
               progress: bool = True, batch_size: int = 50, **options: Any) -> pd.DataFrame:
    """See ``Client.deidentify``."""
    from tqdm.auto import tqdm

    from .client import Client

    studies = [study] if isinstance(study, str) else [str(s) for s in study]
    if not studies:
        raise ValueError("no study to de-identify")
    if series is not None and len(studies) != 1:
        raise ValueError("series= needs exactly one study")
    if burned_in not in BURNED_IN_CHOICES:
        raise ValueError(f"burned_in must be one of {', '.join(BURNED_IN_CHOICES)}, not {burned_in!r}")
    if profile is not None and options:
        raise TypeError(f"give the options ({', '.join(options)}) to the Deidentifier passed as profile=, not here")
    if profile is None:
        try:
            profile = Deidentifier(**options)
        except TypeError as exc:
            raise TypeError(f"deidentify: {exc} (options: dates, date_offset, retain_patient_characteristics, "
                            "retain_device_identity, retain_institution_identity, retain_uids, keep, patient_ids, "
                            "secret)") from None
    if isinstance(to, Client):
        folder, target = None, to
    elif isinstance(to, (str, os.PathLike)):
        folder, target = Path(to), None
    else:
        raise TypeError(f"deidentify(to=...) takes a folder path or a Client, not {type(to).__name__}")

    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], bytes]] = []

    def flush() -> None:
        if not pending or target is None:
            return
        items = [StowItem.from_bytes(row["new_SOPInstanceUID"], data, row["new_SOPInstanceUID"])
                 for row, data in pending]
        try:
            stored = target.store_items(items, progress=False)
            outcome = {r["SOPInstanceUID"]: r for _, r in stored.iterrows()}
        except DicomWebError as exc:
            outcome = {}
            for row, _ in pending:
                row.update(status="failed", error=str(exc))
        for row, _ in pending:
            result = outcome.get(row["new_SOPInstanceUID"])
            if result is not None:
                ok = result["status"] in ("stored", "warning")
                row.update(status="exported" if ok else "failed", error=None if ok else (result["error"] or
                           f"failure reason {result['failure_reason']}"))
        pending.clear()

    bar = tqdm(desc="de-identify", unit="instance", disable=not progress, leave=False)
    try:
        for one in studies:
            for ds in wado.iter_datasets(client.source, one, series):
                result = profile.deidentify(ds)
                row = {**result.original, **{f"new_{k}": v for k, v in result.new.items() if k != "PatientName"},
                       "date_offset_days": result.date_offset_days, "burned_in_annotation": result.burned_in_annotation,
                       "status": None, "path": None, "error": None}
                rows.append(row)
                bar.update(1)
                if result.burned_in_annotation and burned_in == "skip":
                    row["status"] = "skipped"
                    continue
                data = _part10(result)
                if folder is not None:
                    path = folder / str(result.new["StudyInstanceUID"]) / str(result.new["SeriesInstanceUID"]) / \
                        f"{result.new['SOPInstanceUID']}.dcm"
                    try:
                        write_atomically(path, data, mode=0o600)
                        row.update(status="exported", path=str(path))
                    except OSError as exc:
                        row.update(status="failed", error=str(exc))
                else:
                    pending.append((row, data))
                    if len(pending) >= batch_size:
                        flush()
        flush()
    finally:
        bar.close()
    flagged = [row for row in rows if row["burned_in_annotation"]]
    if flagged:
        what = "left out" if burned_in == "skip" else "exported as they are"
        warnings.warn(f"{len(flagged)} instance(s) may show identifying text burned into their pixels and were {what} "
                      f"(e.g. {flagged[0]['SOPInstanceUID']}: {flagged[0]['burned_in_annotation']}); see the "
                      "burned_in_annotation column", BurnedInAnnotationWarning, stacklevel=3)
    return pd.DataFrame(rows, columns=MAPPING_COLUMNS)

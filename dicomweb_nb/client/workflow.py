"""What a shared workspace server needs beyond searching and reading: deleting, and following changes.

``Client.delete`` and ``Client.changes`` call these. A source (``WebSource`` for any server,
the in-process source of this workspace's store) offers ``delete_resource`` and ``change_feed``;
a source without them (a server with no change feed, such as Orthanc) gets a clear error.

The change feed is Azure's DICOM change feed (our server has it at ``{root}/changefeed``): one
entry per instance created (a re-STOW is a create, the entries it replaces become ``replaced``)
or deleted (earlier entries of the instance become ``deleted``), numbered by ``Sequence``.
"""

from __future__ import annotations

import numbers
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd

from ..dicom.uids import UID_RULE, is_valid_uid
from ..errors import ConfirmationRequired, DicomWebError

__all__ = ["delete_resource", "read_changes", "changes_frame", "CHANGE_COLUMNS", "PAGE_LIMIT"]

PAGE_LIMIT = 200  # the largest page Azure's version 2 change feed (and ours) gives
CHANGE_COLUMNS = ("Sequence", "Timestamp", "Action", "State", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# Azure's field names -> the DICOM keywords every other DataFrame of the client uses.
_RENAMED = {"StudyInstanceUid": "StudyInstanceUID", "SeriesInstanceUid": "SeriesInstanceUID",
            "SopInstanceUid": "SOPInstanceUID"}


def _check_uid(what: str, uid: str | None) -> None:
    if uid is not None and not is_valid_uid(uid):
        raise ValueError(f"{what} must be a UID ({UID_RULE}), not {uid!r}")


def delete_resource(source: Any, study: str, series: str | None, instance: str | None, *, confirm: bool) -> None:
    """Delete a study (needs ``confirm``), a series or an instance through ``source``."""
    for what, uid in (("study", study), ("series", series), ("instance", instance)):
        _check_uid(what, uid)
    if not study:
        raise ValueError("give the study UID of what to delete")
    if instance is not None and series is None:
        raise ValueError("give the series UID along with the instance UID")
    if series is None and not confirm:
        raise ConfirmationRequired(f"deleting the whole study {study} cannot be undone: call "
                                   f"delete({study!r}, confirm=True) to do it")
    method = getattr(source, "delete_resource", None)
    if method is None:
        raise DicomWebError(f"{type(source).__name__} cannot delete")
    method(study, series, instance)


def _time(value: Any, name: str) -> str | None:
    """An ISO 8601 UTC date-time for the feed's startTime / endTime (naive values are UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = pd.Timestamp(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a date-time") from None
    elif isinstance(value, (datetime, date, pd.Timestamp)):
        moment = pd.Timestamp(value)
    else:
        raise TypeError(f"{name} must be a datetime, a pandas Timestamp or an ISO 8601 string, not {type(value).__name__}")
    moment = moment.tz_localize(timezone.utc) if moment.tzinfo is None else moment.tz_convert(timezone.utc)
    return str(moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def read_changes(source: Any, *, since: int | None = None, start: Any = None, end: Any = None, limit: int | None = None,
                 metadata: bool = False) -> list[dict[str, Any]]:
    """Entries of the change feed, oldest first, in pages: those after Sequence ``since``, and/or
    recorded in ``[start, end)``; at most ``limit`` (all by default)."""
    feed = getattr(source, "change_feed", None)
    if feed is None:
        raise DicomWebError(f"{type(source).__name__} has no change feed")
    if since is not None and (isinstance(since, bool) or not isinstance(since, numbers.Integral) or since < 0):
        raise ValueError(f"since must be the Sequence of an entry (an integer >= 0), not {since!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise ValueError(f"limit must be a positive number of entries, not {limit!r}")
    since = int(since) if since is not None else None
    limit = int(limit) if limit is not None else None
    start_text, end_text = _time(start, "start"), _time(end, "end")
    entries: list[dict[str, Any]] = []
    # Sequences start at 1 with no gaps on our server, so skipping ``since`` entries of the feed
    # from its start is the same as asking for the entries after it; a time window is then applied
    # by the server and ``since`` checked here.
    offset = since if since is not None and start_text is None and end_text is None else 0
    while limit is None or len(entries) < limit:
        wanted = PAGE_LIMIT if limit is None else min(PAGE_LIMIT, limit - len(entries))
        page = feed(offset=offset, limit=wanted, start=start_text, end=end_text, include_metadata=metadata)
        offset += len(page)
        entries += [e for e in page if since is None or int(e.get("Sequence", 0)) > since]
        if len(page) < wanted:
            break
    return entries if limit is None else entries[:limit]


def changes_frame(entries: list[dict[str, Any]], *, metadata: bool = False) -> pd.DataFrame:
    """Change-feed entries as a DataFrame: one row per entry, the columns of ``CHANGE_COLUMNS``
    (``Timestamp`` a UTC datetime, UIDs named by their DICOM keywords), ``Metadata`` (DICOM JSON,
    None when the instance is gone) with ``metadata``."""
    rows = [{_RENAMED.get(k, k): v for k, v in e.items()} for e in entries]
    columns = list(CHANGE_COLUMNS) + (["Metadata"] if metadata else [])
    frame = pd.DataFrame(rows, columns=columns)
    frame["Sequence"] = frame["Sequence"].astype("int64")
    frame["Timestamp"] = pd.to_datetime(frame["Timestamp"], utc=True, format="ISO8601")
    if metadata:
        frame["Metadata"] = frame["Metadata"].astype(object).where(frame["Metadata"].notna(), None)
    return frame

"""The change feed as Azure's DICOM service presents it: its query parameters and its entries.

``GET {root}/changefeed`` (Azure's version 2, the default here) and ``{root}/v2/changefeed``:

=================  ==========================================================================
``startTime``      inclusive start of the time window (ISO 8601; default: the beginning)
``endTime``        exclusive end of the window (default: no end)
``offset``         entries of the window to skip (default 0)
``limit``          entries to return: 1 to 200 (default 100)
``includeMetadata`` the instance's current DICOM JSON in ``Metadata`` (default true)
=================  ==========================================================================

``{root}/v1/changefeed`` is Azure's version 1: ``offset`` is a sequence number and the answer holds
the entries whose ``Sequence`` is in ``(offset, offset + limit]`` (``limit`` 1 to 100, default 10);
no time window. Sequences here start at 1 and have no gaps, so the two agree on a feed read from
its start: version 2's ``?offset=n`` is the entries after sequence ``n`` too.

``{root}/changefeed/latest`` is the newest entry (204 when nothing was ever stored). Parameter
names are matched without regard to case, as Azure's are; other parameters are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..dicom.dicomjson import BULK_PLACEHOLDER, absolutize_bulk_uris, value_texts
from .store import ChangeEntry

__all__ = ["FeedRequest", "ChangeFeedError", "parse_feed_request", "feed_entry", "parse_time", "format_time",
           "DEFAULT_LIMIT", "MAX_LIMIT", "V1_DEFAULT_LIMIT", "V1_MAX_LIMIT", "FEED_PARAMETERS"]

DEFAULT_LIMIT, MAX_LIMIT = 100, 200  # version 2
V1_DEFAULT_LIMIT, V1_MAX_LIMIT = 10, 100
FEED_PARAMETERS = ("startTime", "endTime", "offset", "limit", "includeMetadata")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ChangeFeedError(ValueError):
    """A change-feed parameter that cannot be used (a 400 over HTTP)."""


@dataclass(frozen=True)
class FeedRequest:
    """What to read: a window ``[start, end)`` in microseconds since the epoch (version 2), or the
    sequences after ``after`` (version 1); at most ``limit`` entries."""

    start: int | None = None
    end: int | None = None
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    after: int | None = None
    include_metadata: bool = True


def parse_time(text: str, name: str = "time") -> int:
    """An ISO 8601 date-time as microseconds since the epoch; without a zone it is UTC."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
    except ValueError:
        raise ChangeFeedError(f"{name}={text!r} is not an ISO 8601 date-time (such as 2024-05-10T16:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // _MICROSECOND


_MICROSECOND = datetime.resolution


def format_time(microseconds: int) -> str:
    """``2024-05-10T16:00:00.123456Z``: what ``parse_time`` reads back to the same microsecond."""
    return (_EPOCH + microseconds * _MICROSECOND).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _integer(text: str, name: str, low: int, high: int | None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ChangeFeedError(f"{name}={text!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ChangeFeedError(f"{name}={value} is out of range: it must be {bounds}")
    return value


def _boolean(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ChangeFeedError(f"{name}={text!r} must be true or false")


def parse_feed_request(params: Mapping[str, Sequence[str]], *, version: int = 2) -> FeedRequest:
    """The request of a ``changefeed`` query (names in any case; the last value of each counts)."""
    found: dict[str, str] = {}
    canonical = {name.lower(): name for name in FEED_PARAMETERS}
    for name, values in params.items():
        key = canonical.get(name.lower())
        if key is not None and values:
            found[key] = values[-1]
    include = _boolean(found["includeMetadata"], "includeMetadata") if "includeMetadata" in found else True
    if version == 1:
        for name in ("startTime", "endTime"):
            if name in found:
                raise ChangeFeedError(f"{name} is a parameter of the version 2 change feed ({{root}}/changefeed), "
                                      "not of version 1 ({root}/v1/changefeed)")
        limit = _integer(found["limit"], "limit", 1, V1_MAX_LIMIT) if "limit" in found else V1_DEFAULT_LIMIT
        after = _integer(found["offset"], "offset", 0, None) if "offset" in found else 0
        return FeedRequest(limit=limit, after=after, include_metadata=include)
    start = parse_time(found["startTime"], "startTime") if "startTime" in found else None
    end = parse_time(found["endTime"], "endTime") if "endTime" in found else None
    if start is not None and end is not None and end <= start:
        raise ChangeFeedError(f"endTime ({found['endTime']}) must be later than startTime ({found['startTime']})")
    return FeedRequest(start=start, end=end,
                       offset=_integer(found["offset"], "offset", 0, None) if "offset" in found else 0,
                       limit=_integer(found["limit"], "limit", 1, MAX_LIMIT) if "limit" in found else DEFAULT_LIMIT,
                       include_metadata=include)


def feed_entry(entry: ChangeEntry, instance_url: Callable[[str, str, str], str] | None = None,
               *, include_metadata: bool = True) -> dict[str, Any]:
    """One entry with Azure's field names; ``Metadata`` (with absolute BulkDataURIs when
    ``instance_url`` gives the instance's URL) only when asked for and the instance exists."""
    out: dict[str, Any] = {
        "Sequence": entry.sequence,
        "StudyInstanceUid": entry.study_uid,
        "SeriesInstanceUid": entry.series_uid,
        "SopInstanceUid": entry.sop_uid,
        "Action": entry.action,
        "Timestamp": format_time(entry.timestamp),
        "State": entry.state,
    }
    if include_metadata and entry.metadata_text is not None:
        metadata = json.loads(entry.metadata_text)
        if instance_url is not None and BULK_PLACEHOLDER in entry.metadata_text:
            # The current version's URL: a replaced entry's instance may since have been stored in another study.
            study = (value_texts(metadata.get("0020000D")) or [entry.study_uid])[0]
            series = (value_texts(metadata.get("0020000E")) or [entry.series_uid])[0]
            metadata = json.loads(absolutize_bulk_uris(entry.metadata_text, instance_url(study, series, entry.sop_uid)))
        out["Metadata"] = metadata
    return out


def read_feed(store: Any, request: FeedRequest) -> list[ChangeEntry]:
    """The entries ``request`` asks for, from a Store."""
    return store.changes(start=request.start, end=request.end, offset=request.offset, limit=request.limit,
                         after=request.after, include_metadata=request.include_metadata)

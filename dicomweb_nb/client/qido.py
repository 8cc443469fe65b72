"""QIDO-RS on the client side: filters checked before sending, query text that survives strict and
lax servers alike, and paging past a server's result limit.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from ..dicom.query import Match, QueryError, format_query_value, parse_attribute_path, parse_match, parse_query
from ..dicom.tags import keyword_of
from ..errors import InvalidFilter
from .http import QUERY_SAFE

__all__ = ["build_filters", "validate_fields", "wire_filters", "paged_search", "DEFAULT_PAGE_SIZE"]

DEFAULT_PAGE_SIZE = 1000
_RELAXABLE_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") | frozenset(QUERY_SAFE)


def _canonical_name(key: str) -> str:
    """``PatientName`` for ``00100010``; dotted keyword paths for sequence matching."""
    return ".".join(keyword_of(t) for t in parse_attribute_path(key))


def build_filters(level: str, filters: Mapping[str, Any] | None, keywords: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Validated ``(attribute, query text)`` pairs for a search at ``level``.

    ``filters`` may use tag numbers (``{"00100010": "DOE*"}``) or dotted sequence paths; ``keywords``
    are the keyword arguments (``PatientName="DOE*"``). Values may be text, numbers, dates,
    ``(low, high)`` tuples for ranges and lists for several values. Raises InvalidFilter naming the
    offending filter, before anything is sent.
    """
    merged: list[tuple[str, Any]] = list((filters or {}).items()) + list(keywords.items())
    pairs: list[tuple[str, str]] = []
    for key, value in merged:
        if not isinstance(key, str):
            raise InvalidFilter(f"filter names must be DICOM keywords or 8-digit hex tags, not {key!r}")
        if key.lower() in ("limit", "offset", "includefield", "fuzzymatching"):
            raise InvalidFilter(f"{key!r} is not a filter: use the limit=, offset=, fields= or fuzzy= arguments")
        text = format_query_value(value)
        try:
            name = _canonical_name(key)
            parse_match(name, text)
        except QueryError as exc:
            message = str(exc)
            if key not in message:
                message = f"{key}={text!r}: {message}"
            raise InvalidFilter(f"bad filter {message}") from None
        pairs.append((name, text))
    try:
        parse_query(pairs, level)
    except QueryError as exc:
        raise InvalidFilter(f"bad filter: {exc}") from None
    return pairs


def validate_fields(fields: str | Iterable[str] | None) -> list[str]:
    """``includefield`` values: ``"all"`` or attribute keywords / tags; raises InvalidFilter."""
    if fields is None:
        return []
    items = [fields] if isinstance(fields, str) else list(fields)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidFilter(f"fields must be keywords, tags or 'all', not {item!r}")
        if item.lower() == "all":
            out.append("all")
            continue
        try:
            out.append(_canonical_name(item))
        except QueryError as exc:
            raise InvalidFilter(f"bad field {item!r}: {exc}") from None
    return out


def wire_filters(filters: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[Match]]:
    """The filters as sent, and the ones the answer must be re-checked against locally.

    Some servers (Debian's Orthanc 1.10 + DICOMweb 1.7) compare query values without
    percent-decoding them, so a value holding a character that must be escaped in a URL (``^`` or a
    space in a person name, say) never matches there. In text attributes each such character is
    sent as the single-character wildcard ``?`` instead; that finds a superset everywhere, and the
    exact filter is then applied to the answer here, so every server gives the same result.
    """
    wire: list[tuple[str, str]] = []
    local: list[Match] = []
    for name, value in filters:
        match = parse_match(name, value)
        needs_escape = any(ch not in _UNRESERVED for ch in value)
        if needs_escape and match.vr in _RELAXABLE_VRS and "\\" not in value and len(match.path) == 1:
            relaxed = "".join(ch if ch in _UNRESERVED else "?" for ch in value)
            wire.append((name, relaxed))
            local.append(match)
        else:
            wire.append((name, value))
    return wire, local


def paged_search(
    fetch_page: Callable[[int, int], tuple[list[dict], bool]],
    *,
    limit: int | None,
    offset: int,
    page_size: int = DEFAULT_PAGE_SIZE,
    keep: Callable[[dict], bool] | None = None,
) -> list[dict]:
    """All results of a search, asking ``fetch_page(offset, count)`` page by page.

    ``fetch_page`` returns the page and whether the server said more results exist (the PS3.18
    Warning header). A page shorter than asked ends the search, except that a page of 100 or more
    without that warning is followed by one more request: servers that cap results silently cap at
    such sizes, and one extra request is cheaper than a silently truncated answer.
    With ``keep`` (results re-checked locally) limit and offset are applied here, after filtering.
    """
    if page_size <= 0:
        raise ValueError("page_size must be positive")
    local_window = keep is not None
    server_offset = 0 if local_window else offset
    wanted = None if (limit is None or local_window) else limit
    results: list[dict] = []
    kept = 0
    previous_first: Any = object()
    while True:
        ask = page_size if wanted is None else min(page_size, wanted - len(results))
        if ask <= 0:
            break
        page, more = fetch_page(server_offset, ask)
        if not page:
            break
        first = _identity(page[0])
        if first == previous_first:
            break  # a server ignoring offset would repeat itself forever
        previous_first = first
        results.extend(page)
        server_offset += len(page)
        if len(page) < ask and not more and len(page) < 100:
            break
        if local_window and limit is not None:
            assert keep is not None
            kept += sum(1 for r in page if keep(r))
            if kept >= offset + limit:
                break
    if local_window:
        assert keep is not None
        results = [r for r in results if keep(r)]
        results = results[offset:] if limit is None else results[offset: offset + limit]
    elif limit is not None:
        results = results[:limit]
    return results


def _identity(obj: dict) -> tuple:
    """The UIDs of a result, to notice a page repeating the previous one."""
    return tuple((obj.get(tag) or {}).get("Value", [None])[0] for tag in ("0020000D", "0020000E", "00080018"))

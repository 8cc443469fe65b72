"""QIDO-RS on the client side: filters checked before sending, query text that survives strict and
lax servers alike, and paging past a server's result limit.

What a filter means is decided here and in ``dicom.query`` (shared with our server), never by the
server asked, so a search gives the same rows from our server, Orthanc or the workspace store:

* Several values of a UID (a list, or a ``,``/``\\`` separated string) are sent as one UID list,
  which PS3.18 8.3.4.1 defines (long lists in several requests, within what a URL can carry).
* Several values of any other attribute are not standard in one request (PS3.18 defines lists for
  UIDs only, and servers differ: ours and Orthanc split commas for some VRs, others match the text),
  so each value is asked for on its own and the answers merged: deduplicated, in the order of the
  values, then windowed by ``limit``/``offset``.
* An empty list matches nothing: no request is sent.
* Answers are checked again here against the filters the answer carries (see ``wire_filters``):
  a server that matches more loosely than PS3.4 (Orthanc compares text case-insensitively) or that
  ignores a parameter (Orthanc ignores ``fuzzymatching``) gives the standard's rows all the same.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..dicom.dicomjson import DicomJson
from ..dicom.query import Match, QueryError, parse_attribute_path, parse_match, split_values
from ..dicom.tags import default_return_tags, keyword_of, level_of, tag_hex, vr_of
from ..errors import InvalidFilter
from .http import QUERY_SAFE

__all__ = ["SearchPlan", "build_searches", "validate_fields", "wire_filters", "WireQuery", "paged_search",
           "answer_columns", "scope_fields", "result_key", "DEFAULT_PAGE_SIZE", "MAX_QUERIES"]

DEFAULT_PAGE_SIZE = 1000
# A search whose lists need more requests than this is refused: narrow the lists.
MAX_QUERIES = 1000
# Longest UID list text in one request. URLs longer than 8 kB are refused by common servers and
# proxies (nginx's default header buffer); 2,000 characters is about 30 UIDs and leaves room for the rest.
UID_LIST_CHARS = 2000
_RELAXABLE_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") | frozenset(QUERY_SAFE)
_LEVEL_RANK = {"study": 0, "series": 1, "instance": 2}
_LEVEL_UID = {"study": "0020000D", "series": "0020000E", "instance": "00080018", "workitem": "00080018"}
_CS_VALUE = re.compile(r"[A-Z0-9 _*?]*")
_TAG_PAIR = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?$")
_RESERVED = ("limit", "offset", "includefield", "fuzzymatching")


@dataclass
class SearchPlan:
    """The requests that together answer a search: ``queries`` holds one list of (attribute, text)
    pairs per request (none when a filter is an empty list); ``names`` the attributes filtered on."""

    names: list[str]
    queries: list[list[tuple[str, str]]]


def _canonical_name(key: Any) -> str:
    """``PatientName`` for ``00100010``, ``0x00100010``, ``(0010,0010)``; dotted keyword paths for sequences."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        if not 0 <= int(key) <= 0xFFFFFFFF:
            raise InvalidFilter(f"{key!r} is not a DICOM tag number")
        return keyword_of(tag_hex(int(key)))
    if not isinstance(key, str):
        raise InvalidFilter(f"filter names must be DICOM keywords or tags (00100010, (0010,0010)), not {key!r}")
    pair = _TAG_PAIR.match(key)
    if pair:
        key = pair.group(1) + pair.group(2)
    return ".".join(keyword_of(t) for t in parse_attribute_path(key))


def _is_list(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, tuple, Mapping))


def _format_scalar(name: str, vr: str, value: Any, *, range_end: bool = False) -> str:
    """The DICOM query text of one Python value for an attribute of VR ``vr`` (``range_end``: in a range)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise InvalidFilter(f"{name}={value!r}: True/False is not a DICOM value")
    if _is_datetime64(value) or isinstance(value, _dt.datetime):
        if pd.isna(value):
            raise InvalidFilter(f"{name}: NaT is not a date")
        value = pd.Timestamp(value).to_pydatetime()
    if isinstance(value, _dt.datetime):
        if vr == "DA":
            return value.strftime("%Y%m%d")
        if vr == "TM":
            return _time_text(value.time())
        if vr == "DT":
            text = value.strftime("%Y%m%d%H%M%S") + (f".{value.microsecond:06d}" if value.microsecond else "")
            return text + value.strftime("%z")
    elif isinstance(value, _dt.date):
        if vr == "DA" or (vr == "DT" and range_end):
            return value.strftime("%Y%m%d")
        if vr == "DT":
            day = value.strftime("%Y%m%d")
            return f"{day}-{day}"  # a date for a date-time means the whole day, not its first instant
    elif isinstance(value, _dt.time):
        if vr == "TM":
            return _time_text(value)
    elif isinstance(value, numbers.Integral):
        return str(int(value))
    elif isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise InvalidFilter(f"{name}={value!r}: not a finite number")
        return repr(float(value))
    else:
        raise InvalidFilter(f"{name}: a {type(value).__name__} is not a value a DICOM query can hold")
    raise InvalidFilter(f"{name} ({vr}) cannot be matched against a {type(value).__name__} ({value!r})")


def _is_datetime64(value: Any) -> bool:
    return type(value).__name__ == "datetime64" and type(value).__module__ == "numpy"


def _time_text(value: _dt.time) -> str:
    return value.strftime("%H%M%S") + (f".{value.microsecond:06d}" if value.microsecond else "")


def _item_text(name: str, vr: str, value: Any) -> str:
    """One value of a filter: a scalar, or a ``(low, high)`` range of dates or times."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidFilter(f"{name}: a tuple is a (low, high) range; give a list for several values")
        if vr not in ("DA", "TM", "DT"):
            raise InvalidFilter(f"{name} ({vr}): ranges apply to dates and times only; give a list for several values")
        low, high = (_format_scalar(name, vr, v, range_end=True) for v in value)
        return f"{low}-{high}"
    if _is_list(value):
        raise InvalidFilter(f"{name}: a list inside a list; give one flat list of values")
    return _format_scalar(name, vr, value)


def _check_text(name: str, vr: str, text: str) -> None:
    try:
        parse_match(name, text)
    except QueryError as exc:
        message = str(exc)
        raise InvalidFilter(f"bad filter {message if name in message else f'{name}={text!r}: {message}'}") from None
    if vr == "CS" and not _CS_VALUE.fullmatch(text):
        # CS values are upper case (PS3.5 6.2): ours and the standard match them exactly, Orthanc
        # ignoring case, so a lower-case value would find different studies on different servers.
        hint = f"; did you mean {text.upper()!r}?" if _CS_VALUE.fullmatch(text.upper()) else ""
        raise InvalidFilter(f"bad filter {name}={text!r}: a CS value holds upper-case letters, digits, spaces "
                            f"and underscores only{hint}")


def _alternatives(name: str, vr: str, value: Any) -> list[str]:
    """The query texts of one filter, any of which may match: one per request, UIDs as lists."""
    if _is_list(value):
        items = [_item_text(name, vr, item) for item in value]
        if isinstance(value, (set, frozenset)):
            items.sort()  # a set has no order of its own: make the requests (and rows) repeatable
    else:
        items = [_item_text(name, vr, value)]
    texts: list[str] = []
    for item in items:
        # A text holding several values ("CT\\MR", or "CT,MR" where no value can hold a comma) is a list too.
        texts.extend(split_values(vr, item))
    if vr == "UI":
        texts = [t.strip() for t in texts if t.strip()] or ([""] if items else [])
    unique = list(dict.fromkeys(texts))
    for text in unique:
        _check_text(name, vr, text)
    if vr != "UI" or len(unique) < 2:
        return unique
    chunks: list[str] = []
    for uid in unique:
        if chunks and len(chunks[-1]) + 1 + len(uid) <= UID_LIST_CHARS:
            chunks[-1] += "," + uid
        else:
            chunks.append(uid)
    return chunks


def build_searches(level: str, filters: Mapping[Any, Any] | None, keywords: Mapping[str, Any]) -> SearchPlan:
    """The validated requests of a search at ``level``.

    ``filters`` may use tag numbers (``{"00100010": "DOE*"}``, ``{0x00100010: ...}``) or dotted
    sequence paths; ``keywords`` are the keyword arguments (``PatientName="DOE*"``). Values may be
    text, numbers, dates, ``(low, high)`` tuples for ranges and lists (or sets, arrays, Series) for
    several values. Raises InvalidFilter naming the offending filter, before anything is sent.
    ``level`` ``workitem`` plans a worklist search (PS3.18 11.9), whose filters are the same.
    """
    if level not in _LEVEL_RANK and level != "workitem":
        raise ValueError(f"unknown QIDO level {level!r}")
    if filters is not None and not isinstance(filters, Mapping):
        raise InvalidFilter(f"filters must be a mapping of attribute to value, not {type(filters).__name__}")
    names: list[str] = []
    choices: list[list[str]] = []
    for key, value in list((filters or {}).items()) + list(keywords.items()):
        if isinstance(key, str) and key.lower() in _RESERVED:
            raise InvalidFilter(f"{key!r} is not a filter: use the limit=, offset=, fields= or fuzzy= arguments")
        try:
            name = _canonical_name(key)
        except QueryError as exc:
            raise InvalidFilter(f"bad filter {exc}") from None
        if name in names:
            raise InvalidFilter(f"bad filter: {name} is given twice; give one value or a list")
        vr = vr_of(parse_attribute_path(name)[-1])
        names.append(name)
        choices.append(_alternatives(name, vr, value))
    count = math.prod(len(c) for c in choices)
    if count > MAX_QUERIES:
        raise InvalidFilter(f"these lists need {count} requests (one per combination of values; at most "
                            f"{MAX_QUERIES}): give fewer values, or UIDs, which go {UID_LIST_CHARS} characters a request")
    return SearchPlan(names, [list(zip(names, combo)) for combo in itertools.product(*choices)])


def validate_fields(fields: str | Iterable[str] | None) -> list[str]:
    """``includefield`` values: ``"all"`` or attribute keywords / tags; raises InvalidFilter."""
    if fields is None:
        return []
    items = [fields] if isinstance(fields, str) else list(fields)
    out = []
    for item in items:
        if isinstance(item, str) and item.lower() == "all":
            out.append("all")
            continue
        try:
            out.append(_canonical_name(item))
        except (QueryError, InvalidFilter) as exc:
            raise InvalidFilter(f"bad field {item!r}: {exc}") from None
    return out


def scope_fields(level: str, scoped: bool) -> list[str]:
    """Attributes to ask for by ``includefield`` so a scoped search (``/studies/{uid}/series``) carries
    its parents' attributes too: PS3.18 leaves them out there, Orthanc sends them anyway, and a
    DataFrame should have the same columns whoever answers."""
    if not scoped:
        return []
    own = set(default_return_tags(level, with_parent_levels=False))
    return [keyword_of(t) for t in default_return_tags(level, with_parent_levels=True) if t not in own]


def answer_columns(level: str, names: Iterable[str], fields: Iterable[str]) -> list[int]:
    """The attributes every row of a search answer has a column for, even an empty answer: the level's
    PS3.18 return attributes (with its parents'), the filtered ones and the ``fields`` asked for."""
    tags = default_return_tags(level, with_parent_levels=True)
    for name in [*names, *fields]:
        if name != "all":
            tag = parse_attribute_path(name)[0]
            if tag not in tags:
                tags.append(tag)
    return tags


def result_key(obj: Mapping[str, Any], level: str) -> Any:
    """What identifies a search result at ``level`` (its UID), to merge the answers of several requests."""
    uid = (obj.get(_LEVEL_UID[level]) or {}).get("Value", [None])[0]
    return uid if uid is not None else id(obj)


@dataclass
class WireQuery:
    """A request as sent, and how its answer is checked here.

    ``supersets`` were sent loosened (they find more than asked) and must be checked on every row;
    ``exacts`` were sent as they are and are checked too, for servers that match more loosely.
    """

    params: list[tuple[str, str]]
    fields: list[str] = field(default_factory=list)
    supersets: list[Match] = field(default_factory=list)
    exacts: list[Match] = field(default_factory=list)
    fuzzy: bool = False

    def check(self, obj: dict[str, Any], matches: Sequence[Match]) -> bool:
        # An attribute the server did not return cannot be checked: trust its match then.
        return all(m.matches(obj, fuzzy=self.fuzzy) for m in matches if obj.get(m.key))


def _fuzzy_superset(value: str) -> str | None:
    """A wildcard every name fuzzily matching ``value`` also matches: ``*word*`` for its longest word
    (fuzzy matching asks each word to start a name component, so the name contains it)."""
    words = [w for w in re.split(r"[\s^,=]+", value.replace("*", "")) if w]
    if not words:
        return None
    return "*" + max(words, key=len) + "*"


def wire_filters(filters: Sequence[tuple[str, str]], level: str, *, fuzzy: bool = False) -> WireQuery:
    """The filters of one request as sent over HTTP, and the checks its answer gets here.

    * Some servers (Debian's Orthanc 1.10 + DICOMweb 1.7) compare query values without percent-decoding
      them, so a value holding a character that must be escaped in a URL (``^`` or a space in a
      person name, say) never matches there; others split a text value at its commas. In text
      attributes each such character is sent as the single-character wildcard ``?`` instead.
    * Fuzzy person-name matching (``fuzzymatching``) is optional for a server and Orthanc ignores it:
      a fuzzy name is sent as the ``*word*`` wildcard that finds a superset on every server.

    Both find a superset everywhere, and the exact filter is then applied to the answer here (the
    attribute is asked for by ``includefield``), so every server gives the same result. Filters on
    attributes of a lower level than the search (a series attribute in a study search) are sent as
    they are: the answer's value is one series', not necessarily the matching one's.
    """
    wire = WireQuery([], fuzzy=fuzzy)
    names_people = False
    for name, value in filters:
        match = parse_match(name, value)
        names_people = names_people or match.vr == "PN"
        checkable = (match.kind != "universal" and len(match.path) == 1
                     and _LEVEL_RANK[level_of(match.tag)] <= _LEVEL_RANK[level])
        sent = value
        if checkable and fuzzy and match.vr == "PN":
            sent = _fuzzy_superset(value) or value
        if checkable and match.vr in _RELAXABLE_VRS and "\\" not in sent:
            sent = "".join(ch if ch in _UNRESERVED and (ch != "," or match.vr not in _TEXT_VRS) else "?" for ch in sent)
        wire.params.append((name, sent))
        if not checkable:
            continue
        if sent != value:
            wire.supersets.append(match)
            wire.fields.append(name)
        else:
            wire.exacts.append(match)
    if fuzzy and names_people:
        # Servers that match fuzzily (ours) then also match the wildcard ignoring case.
        wire.params.append(("fuzzymatching", "true"))
    return wire


def paged_search(
    fetch_page: Callable[[int, int], tuple[list[DicomJson], bool]],
    *,
    limit: int | None,
    offset: int,
    page_size: int = DEFAULT_PAGE_SIZE,
    keep: Callable[[DicomJson], bool] | None = None,
) -> list[DicomJson]:
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
    results: list[DicomJson] = []
    kept = 0
    previous_first: Any = object()
    while True:
        ask = page_size if wanted is None else min(page_size, wanted - len(results))
        if ask <= 0 or (local_window and limit == 0):
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


def _identity(obj: DicomJson) -> tuple[Any, ...]:
    """The UIDs of a result, to notice a page repeating the previous one."""
    return tuple((obj.get(tag) or {}).get("Value", [None])[0] for tag in ("0020000D", "0020000E", "00080018"))

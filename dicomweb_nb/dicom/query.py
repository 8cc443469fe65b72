"""QIDO-RS query semantics (PS3.18 8.3.4 and 10.6, PS3.4 C.2.2.2).

``parse_query`` turns already percent-decoded query parameters into a typed ``Query``; each
``Match`` knows how to test a DICOM JSON dataset. The server's store translates the same
``Match`` objects to SQL for indexed attributes, and the notebook client uses ``parse_query`` to
reject a bad filter before sending anything, so there is one definition of what a query means.

Several values for one attribute. PS3.18 8.3.4.1 defines a comma-separated list only for UIDs
(``uid-list-match = attribute "=" 1#value``, UID List Matching of PS3.4 C.2.2.2.2); any other
value is one value (``normal-match``), where a backslash separates values whose meaning PS3.4
C.2.2.2.8 leaves undefined unless Multiple Value Matching is negotiated. This implementation:

* UIDs: ``,`` or ``\\`` separate a list; any UID of the list matches.
* Attributes whose values cannot contain a comma (VRs AS, CS, DA, DS, DT, IS, TM and the binary
  numbers): ``,`` or ``\\`` separate a list of single values, any of which matches. For
  ``ModalitiesInStudy=CT,MR`` this is what Orthanc and dcm4chee do and what viewers send; it is an
  extension PS3.18 8.3 allows an origin server. Ranges and wildcards cannot be list items (the
  request is refused, never matched as text that no value could equal).
* Text attributes (AE, LO, PN, SH, ...), where a comma is an ordinary character: ``\\`` separates
  a list (any matches); a comma is matched literally, as PS3.18 says, and the query carries a
  warning saying so, since other servers split it.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from ..errors import QueryError, UnknownAttributeError
from .dicomjson import DicomJson, pn_text, value_texts
from .tags import keyword_of, parse_tag, tag_hex, vr_of
from .uids import UID_RULE, is_valid_uid

MatchKind = Literal["universal", "single", "list", "wildcard", "range"]

DATE_VRS = frozenset({"DA", "TM", "DT"})
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "SV", "UV"})
# VRs whose values can never hold a comma (PS3.5 6.2): there a comma can only separate values.
COMMA_FREE_VRS = frozenset({"AS", "CS", "UI"}) | DATE_VRS | NUMERIC_VRS
# Optional search parameters of PS3.18 Table 8.3.4-1 this server accepts but does not perform:
# it must then search without them and say so in a Warning header (PS3.18 8.3.4.5, 8.3.4.6).
_UNPERFORMED_PARAMETERS = {
    "emptyvaluematching": "The emptyvaluematching parameter is not supported. Empty Value Matching has not been performed.",
    "multiplevaluematching": ("The multiplevaluematching parameter is not supported. "
                              "Multiple Value Matching has not been performed."),
}
MAX_LIMIT = 100_000


# -- date / time normalisation ------------------------------------------------------------------

_DA = re.compile(r"^(\d{4})(\d{2})?(\d{2})?$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


def normalize_date(text: str, *, upper: bool = False) -> str:
    """``YYYYMMDD``; accepts the ACR-NEMA ``YYYY.MM.DD`` and ISO ``YYYY-MM-DD`` forms too."""
    t = text.strip()
    if len(t) == 10 and t[4] in ".-" and t[7] == t[4]:
        t = t.replace(t[4], "")
    m = _DA.match(t)
    if not m:
        raise ValueError(f"not a DICOM date (YYYYMMDD): {text!r}")
    year, month, day = m.group(1), m.group(2), m.group(3)
    if month and not 1 <= int(month) <= 12:
        raise ValueError(f"not a DICOM date: month {month} in {text!r}")
    if day:
        try:
            _dt.date(int(year), int(month), int(day))
        except ValueError:
            raise ValueError(f"not a DICOM date: there is no day {day} in month {month} of {year} ({text!r})") from None
    month = month or ("12" if upper else "01")
    day = day or ("31" if upper else "01")
    return f"{year}{month}{day}"


def normalize_time(text: str, *, upper: bool = False) -> str:
    """``HHMMSS.ffffff`` (13 characters); missing components filled low, or high for a range's end."""
    t = text.strip().replace(":", "")
    m = _TM.match(t)
    if not m:
        raise ValueError(f"not a DICOM time (HHMMSS.FFFFFF): {text!r}")
    hh, mm, ss, frac = m.groups()
    _check_clock(hh, mm, ss, text)
    filler = "59" if upper else "00"
    mm = mm or filler
    ss = ss or filler
    frac = (frac or "").ljust(6, "9" if upper and not m.group(4) else "0")
    return f"{hh}{mm}{ss}.{frac}"


def normalize_datetime(text: str, *, upper: bool = False) -> str:
    """``YYYYMMDDHHMMSS.ffffff`` (timezone offsets are ignored for matching)."""
    t = text.strip()
    m = _DT.match(t)
    if not m:
        raise ValueError(f"not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX): {text!r}")
    y, mo, d, h, mi, s, frac, _tz = m.groups()
    if mo:
        normalize_date(y + mo + (d or ""))  # validates month and day
    _check_clock(h, mi, s, text)
    hi = upper
    mo = mo or ("12" if hi else "01")
    d = d or ("31" if hi else "01")
    h = h or ("23" if hi else "00")
    mi = mi or ("59" if hi else "00")
    s = s or ("59" if hi else "00")
    frac = (frac or "").ljust(6, "9" if hi and not m.group(7) else "0")
    return f"{y}{mo}{d}{h}{mi}{s}.{frac}"


def _check_clock(hh: str | None, mm: str | None, ss: str | None, text: str) -> None:
    # Seconds may be 60 (leap second, PS3.5 Table 6.2-1).
    for part, top, name in ((hh, 23, "hour"), (mm, 59, "minute"), (ss, 60, "second")):
        if part is not None and int(part) > top:
            raise ValueError(f"{name} {part} out of range in {text!r}")


_NORMALIZERS = {"DA": normalize_date, "TM": normalize_time, "DT": normalize_datetime}


def normalize_temporal(vr: str, text: str, *, upper: bool = False) -> str | None:
    """Normalised form of a stored DA/TM/DT value; None when it cannot be read."""
    try:
        return _NORMALIZERS[vr](text, upper=upper)
    except (ValueError, KeyError):
        return None


# -- the typed query --------------------------------------------------------------------------

@dataclass
class Match:
    """One matching key: ``path`` is the tag path (more than one tag for sequence matching)."""

    path: tuple[int, ...]
    vr: str
    kind: MatchKind
    raw: str
    values: list[str] = field(default_factory=list)  # single: [v]; list: several; wildcard: [pattern]
    low: str | None = None  # range ends, normalised; None means open
    high: str | None = None

    @property
    def tag(self) -> int:
        return self.path[-1]

    @property
    def key(self) -> str:
        return ".".join(tag_hex(t) for t in self.path)

    def __str__(self) -> str:
        return ".".join(keyword_of(t) for t in self.path) + "=" + self.raw

    # Matching against DICOM JSON ------------------------------------------------------------
    def matches(self, obj: DicomJson, *, pn_case_insensitive: bool = True, fuzzy: bool = False) -> bool:
        if self.kind == "universal":
            return True
        return self._matches_path(obj, self.path, pn_case_insensitive, fuzzy)

    def _matches_path(self, obj: DicomJson, path: tuple[int, ...], ci: bool, fuzzy: bool) -> bool:
        elem = obj.get(tag_hex(path[0]))
        if len(path) > 1:
            if not elem or elem.get("vr") != "SQ":
                return False
            return any(self._matches_path(item or {}, path[1:], ci, fuzzy) for item in elem.get("Value", []))
        return any(self.matches_value(v, ci=ci, fuzzy=fuzzy) for v in value_texts(elem))

    def matches_value(self, text: str, *, ci: bool = True, fuzzy: bool = False) -> bool:
        """Whether one stored value (as text) satisfies this key."""
        if self.kind == "universal":
            return True
        if self.kind == "range":
            norm = normalize_temporal(self.vr, text)
            if norm is None:
                return False
            return (self.low is None or norm >= self.low) and (self.high is None or norm <= self.high)
        if self.vr in DATE_VRS:
            norm = normalize_temporal(self.vr, text)
            return norm is not None and norm in self.values
        if self.vr == "PN":
            return _pn_matches(self, text, ci=ci or fuzzy, fuzzy=fuzzy)
        if self.kind == "wildcard":
            return wildcard_matches(self.values[0], text)
        if self.vr in NUMERIC_VRS:
            try:
                return _canonical_number(text) in self.values
            except ValueError:
                return False
        text = text.strip() if self.vr != "UI" else text.rstrip("\x00").strip()
        return text in self.values


@lru_cache(maxsize=1024)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    # DICOM wildcards are only * and ?; brackets and other characters are literal (unlike fnmatch).
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(body, re.DOTALL)


def wildcard_matches(pattern: str, text: str) -> bool:
    """DICOM wildcard matching (PS3.4 C.2.2.2.4): ``*`` any run, ``?`` one character."""
    return _wildcard_regex(pattern).fullmatch(text) is not None


def _pn_matches(match: Match, stored: str, *, ci: bool, fuzzy: bool) -> bool:
    """PN matching: the whole value or any component group (PS3.4 C.2.2.2.1 allows either)."""
    candidates = [stored] + [g for g in stored.split("=") if g]
    patterns = match.values
    if ci:
        candidates = [c.casefold() for c in candidates]
        patterns = [p.casefold() for p in patterns]
    for cand in candidates:
        for pat in patterns:
            if match.kind == "wildcard" or "*" in pat or "?" in pat:
                if wildcard_matches(pat, cand):
                    return True
            elif cand == pat:
                return True
            if fuzzy:
                # Fuzzy: every word of the query starts some component of the name, in any order.
                words = [w for w in re.split(r"[\s^,]+", pat.replace("*", "")) if w]
                comps = [c for c in re.split(r"[\s^]+", cand) if c]
                if words and all(any(c.startswith(w) for c in comps) for w in words):
                    return True
    return False


@dataclass
class Query:
    """A parsed QIDO-RS request."""

    level: str
    matches: list[Match] = field(default_factory=list)
    include_all: bool = False
    include_paths: list[tuple[int, ...]] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    # What the answer should tell the client in Warning headers (PS3.18 8.3.4): a parameter accepted
    # but not performed, or a value read differently from what some servers would read.
    warnings: list[str] = field(default_factory=list)

    def match(self, obj: DicomJson, *, pn_case_insensitive: bool = True) -> bool:
        return all(m.matches(obj, pn_case_insensitive=pn_case_insensitive, fuzzy=self.fuzzy) for m in self.matches)

    @property
    def returned_tags(self) -> list[int]:
        """Top-level tags the answer must carry because of matching keys and includefield."""
        seen: dict[int, None] = {}
        for m in self.matches:
            seen.setdefault(m.path[0], None)
        for p in self.include_paths:
            seen.setdefault(p[0], None)
        return list(seen)


def parse_attribute_path(key: str) -> tuple[int, ...]:
    """``PatientName``, ``00100010`` or ``RequestAttributesSequence.ScheduledProcedureStepID``."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise QueryError(f"malformed attribute path {key!r}")
    try:
        path = tuple(parse_tag(p) for p in parts)
    except UnknownAttributeError as exc:
        raise QueryError(f"{key}: {exc}" if len(parts) > 1 else str(exc)) from None
    for tag in path[:-1]:
        if vr_of(tag) != "SQ":
            raise QueryError(f"{keyword_of(tag)} in {key!r} is not a sequence, so it cannot have nested attributes")
    return path


def parse_match(key: str, value: str) -> Match:
    """Typed matching key for one ``attribute=value`` pair (value already percent-decoded)."""
    path = parse_attribute_path(key)
    vr = vr_of(path[-1])
    if vr == "SQ":
        if value:
            raise QueryError(f"{key} is a sequence: match on one of its attributes ({key}.Attribute=value) instead")
        return Match(path, vr, "universal", value)
    if value == "":
        return Match(path, vr, "universal", value)
    if vr in DATE_VRS:
        return _parse_temporal(path, vr, key, value)
    if vr == "UI":
        uids = [u.strip() for u in split_values(vr, value) if u.strip()]
        for uid in uids:
            if not is_valid_uid(uid):
                raise QueryError(f"{key}={value!r}: {uid!r} is not a UID ({UID_RULE})")
        return Match(path, vr, "list" if len(uids) > 1 else "single", value, uids)
    if vr in NUMERIC_VRS:
        items = [v.strip() for v in split_values(vr, value)]
        for item in items:
            try:
                float(item)
            except ValueError:
                raise QueryError(f"{key}={value!r}: {item!r} is not a number") from None
        # Compare numerically-equal spellings ("1.0" vs "1") as equal by canonicalising.
        return Match(path, vr, "list" if len(items) > 1 else "single", value, [_canonical_number(i) for i in items])
    items = split_values(vr, value)
    if len(items) == 1 and ("*" in value or "?" in value):
        return Match(path, vr, "wildcard", value, [value])
    if len(items) > 1 and vr != "PN" and any("*" in item or "?" in item for item in items):
        # Person names match each pattern of a list; elsewhere a list holds single values only.
        raise QueryError(f"{key}={value!r}: a list of values cannot hold wildcards (* ?): ask once per pattern")
    return Match(path, vr, "list" if len(items) > 1 else "single", value, items)


def split_values(vr: str, value: str) -> list[str]:
    """The values of a query value: ``\\`` separates them, and ``,`` too where a value cannot hold a comma."""
    return re.split(r"[,\\]", value) if vr in COMMA_FREE_VRS else value.split("\\")


def _canonical_number(text: str) -> str:
    f = float(text)
    return str(int(f)) if f.is_integer() else repr(f)


def _parse_temporal(path: tuple[int, ...], vr: str, key: str, value: str) -> Match:
    normalizer = _NORMALIZERS[vr]
    items = split_values(vr, value)
    if len(items) > 1:
        for item in items:
            if _split_range(vr, key, item) is not None:
                raise QueryError(f"{key}={value!r}: a list of values cannot hold a range ({item!r}): ask once per range")
    split = None if len(items) > 1 else _split_range(vr, key, value)
    try:
        if split is None:
            return Match(path, vr, "list" if len(items) > 1 else "single", value, [normalizer(v) for v in items])
        low_text, high_text = split
        if not low_text and not high_text:
            raise QueryError(f"{key}={value!r}: a range needs at least one end")
        low = normalizer(low_text) if low_text else None
        high = normalizer(high_text, upper=True) if high_text else None
    except ValueError as exc:
        raise QueryError(f"{key}={value!r}: {exc}") from None
    if low is not None and high is not None and low > high:
        raise QueryError(f"{key}={value!r}: the range starts after it ends")
    return Match(path, vr, "range", value, low=low, high=high)


def _split_range(vr: str, key: str, value: str) -> tuple[str, str] | None:
    if "-" not in value:
        return None
    if vr != "DT":
        if value.count("-") > 1 and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise QueryError(f"{key}={value!r} is not a valid {vr} range (one '-' between the two ends)")
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return None  # an ISO date, not a range
        low, high = value.split("-", 1)
        return low, high
    # DT values may carry a "-ZZXX" UTC offset; pick the dash whose both sides are valid DT values.
    for i, ch in enumerate(value):
        if ch != "-":
            continue
        low, high = value[:i], value[i + 1:]
        if all(not part or normalize_temporal("DT", part) is not None for part in (low, high)):
            return low, high
    return None


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", ""):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise QueryError(f"{name}={text!r}: expected true or false")


def _parse_count(name: str, text: str, *, minimum: int) -> int:
    try:
        number = int(text.strip())
    except ValueError:
        raise QueryError(f"{name}={text!r} is not an integer") from None
    if number < minimum:
        raise QueryError(f"{name}={number} must be at least {minimum}")
    return number


def search_parameters(filters: Iterable[tuple[str, str]], *, fields: Iterable[str] = (), fuzzy: bool = False,
                      limit: int | None = None, offset: int = 0) -> list[tuple[str, str]]:
    """The query parameters of a search: its matching keys, then ``includefield``, ``fuzzymatching``,
    ``limit`` and ``offset`` where they are given."""
    params = list(filters)
    fields = list(fields)
    if fields:
        params.append(("includefield", ",".join(fields)))
    if fuzzy:
        params.append(("fuzzymatching", "true"))
    if limit is not None:
        params.append(("limit", str(limit)))
    if offset:
        params.append(("offset", str(offset)))
    return params


def parse_query(params: Iterable[tuple[str, str]], level: str, *, max_limit: int | None = MAX_LIMIT) -> Query:
    """Parse decoded ``(name, value)`` pairs of a QIDO-RS request at ``level`` (study, series, instance),
    or of a worklist search (``workitem``: PS3.18 11.9 uses the same query parameters).

    Raises QueryError naming the offending parameter.
    """
    if level not in ("study", "series", "instance", "workitem"):
        raise ValueError(f"unknown QIDO level {level!r}")
    query = Query(level)
    seen_keys: dict[str, Match] = {}
    for name, value in params:
        lname = name.lower()
        if lname == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if not item:
                    continue
                if item.lower() == "all":
                    query.include_all = True
                    continue
                try:
                    query.include_paths.append(parse_attribute_path(item))
                except QueryError as exc:
                    raise QueryError(f"includefield={value!r}: {exc}") from None
        elif lname == "limit":
            query.limit = _parse_count("limit", value, minimum=0)
            if max_limit is not None and query.limit > max_limit:
                query.limit = max_limit
        elif lname == "offset":
            query.offset = _parse_count("offset", value, minimum=0)
        elif lname == "fuzzymatching":
            query.fuzzy = _parse_bool("fuzzymatching", value)
        elif lname in _UNPERFORMED_PARAMETERS:
            if _parse_bool(lname, value):
                query.warnings.append(_UNPERFORMED_PARAMETERS[lname])
        elif lname in ("orderby", "count"):
            raise QueryError(f"the {name!r} parameter is not supported by this server")
        else:
            match = parse_match(name, value)
            if match.key in seen_keys:
                raise QueryError(f"{keyword_of(match.tag)} is given twice; give one value or a list")
            seen_keys[match.key] = match
            query.matches.append(match)
            if "," in value and match.vr not in COMMA_FREE_VRS:
                query.warnings.append(
                    f"the comma in {name}={value!r} was matched as an ordinary character: PS3.18 8.3.4.1 "
                    f"defines comma-separated lists for UIDs only. To match any of several values, separate them "
                    f"with a backslash (%5C) or ask once per value.")
    return query


__all__ = [
    "QueryError", "Match", "Query", "parse_query", "parse_match", "parse_attribute_path", "search_parameters",
    "normalize_date", "normalize_time", "normalize_datetime", "normalize_temporal", "split_values",
    "COMMA_FREE_VRS", "pn_text",
]

"""QIDO matching in SQL for PostgreSQL: a match document per row, and ``Match`` -> SQL.

SQLite calls ``dicom.query``'s ``Match`` methods per row (Python functions registered on the
connection). PostgreSQL does the same matching in SQL, indexed, without duplicating the rules:
at ingest, each row gets a JSONB *match document* holding, for every attribute path, its values
already in the form ``Match.matches_value`` compares (the normalisations come from
``dicom.query`` itself), and a query only compares those values:

- ``{"00100020": ["PAT1"]}`` - dates/times normalised, numbers canonical, UIDs and text stripped;
  sequence attributes under their dotted path (``"00400275.00400009"``), every item's values pooled
  (a match needs one item to match, which pooling preserves).
- text whose raw form differs from the stripped one also under ``"{key}|raw"`` (wildcards
  compare the raw text).
- PN: each value and each non-empty component group (``Match`` accepts either) under ``key``,
  case-folded under ``"{key}|ci"``, and each candidate's name components for fuzzy matching under
  ``"{key}|fz"``.

Single and list values become ``match @> '{"key": ["value"]}'`` (a GIN ``jsonb_path_ops`` index
answers them), wildcards ``LIKE`` over the array's elements, ranges comparisons (bytewise:
``COLLATE "C"``). ``tests/store/test_matching_differential.py`` runs the same queries on both
engines over the same data and requires the same answers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...dicom.dicomjson import DicomJson, value_texts
from ...dicom.query import DATE_VRS, NUMERIC_VRS, Match, _canonical_number, normalize_temporal
from ...dicom.tags import level_of, tag_hex, vr_of
from ..schema import COLUMNS_BY_TAG

_PN_SPLIT = re.compile(r"[\s^]+")
_FUZZY_WORDS = re.compile(r"[\s^,]+")


def normalized(vr: str, text: str) -> str | None:
    """A stored value in the form single/list matching compares (None: it can never match)."""
    if vr in DATE_VRS:
        return normalize_temporal(vr, text)
    if vr in NUMERIC_VRS:
        try:
            return _canonical_number(text)
        except ValueError:
            return None
    if vr == "UI":
        return text.rstrip("\x00").strip()
    return text.strip()


def pn_candidates(text: str) -> list[str]:
    """What a PN pattern may match: the whole value or any component group (as ``_pn_matches``)."""
    return [text] + [g for g in text.split("=") if g]


def build(obj: DicomJson, level: str | None) -> dict[str, list[Any]]:
    """The match document of a DICOM JSON object's attributes of ``level`` (None: every attribute)."""
    doc: dict[str, list[Any]] = {}
    for key, elem in obj.items():
        tag = int(key, 16)
        if level is not None and level_of(tag) != level:
            continue
        _add(doc, (tag,), elem)
    return doc


def _add(doc: dict[str, list[Any]], path: tuple[int, ...], elem: dict[str, Any] | None) -> None:
    if not elem or "BulkDataURI" in elem or "InlineBinary" in elem:
        return
    if elem.get("vr") == "SQ":
        for item in elem.get("Value") or []:
            for sub_key, sub in (item or {}).items():
                _add(doc, path + (int(sub_key, 16),), sub)
        return
    key = ".".join(tag_hex(t) for t in path)
    vr = vr_of(path[-1])
    if vr == "UN":
        vr = elem.get("vr") or "UN"
    texts = value_texts(elem)
    if len(path) == 1 and path[0] in COLUMNS_BY_TAG:
        # Indexed attributes are matched on their column (SQLite too): its first value, stripped.
        texts = [texts[0].strip()] if texts and texts[0] != "" else []
    if vr == "PN":
        for text in texts:
            for cand in pn_candidates(text):
                _append(doc, key, cand)
                folded = cand.casefold()
                _append(doc, key + "|ci", folded)
                comps = [c.replace("\x00", "\ufffd") for c in _PN_SPLIT.split(folded) if c]
                if comps not in doc.setdefault(key + "|fz", []):
                    doc[key + "|fz"].append(comps)
        return
    raw_differs = False
    for text in texts:
        value = normalized(vr, text)
        if value is not None:
            _append(doc, key, value)
        raw_differs = raw_differs or value != text
    if raw_differs and vr not in DATE_VRS and vr not in NUMERIC_VRS and vr != "UI":
        for text in texts:
            _append(doc, key + "|raw", text)


def _append(doc: dict[str, list[Any]], key: str, value: str) -> None:
    value = value.replace("\x00", "\ufffd")  # JSONB has no NUL; query values get the same stand-in
    values = doc.setdefault(key, [])
    if value not in values:
        values.append(value)


# -- Match -> SQL ---------------------------------------------------------------------------------

def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern (``*``, ``?``) as a LIKE pattern, everything else literal."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "\\%_":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def like_literal(text: str) -> str:
    return "".join("\\" + ch if ch in "\\%_" else ch for ch in text)


def _contains(alias_doc: str, key: str, value: Any) -> tuple[str, list[Any]]:
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")  # as stored (JSONB has no NUL)
    return f"{alias_doc} @> ?::jsonb", [json.dumps({key: [value]}, ensure_ascii=False)]


def _any_element_like(alias_doc: str, key: str, pattern: str) -> tuple[str, list[Any]]:
    return (f"EXISTS (SELECT 1 FROM jsonb_array_elements_text({alias_doc} -> ?) AS v(t) WHERE v.t LIKE ?)",
            [key, like_pattern(pattern)])


def document_condition(doc: str, match: Match, *, pn_case_insensitive: bool, fuzzy: bool) -> tuple[str, list[Any]]:
    """SQL (``?`` placeholders) true when the row whose match document is ``doc`` satisfies ``match``."""
    key = match.key
    if match.vr == "PN":
        return _pn_condition(doc, match, ci=pn_case_insensitive or fuzzy, fuzzy=fuzzy)
    if match.kind == "range":
        parts = [f"EXISTS (SELECT 1 FROM jsonb_array_elements_text({doc} -> ?) AS v(t) WHERE TRUE"]
        params: list[Any] = [key]
        if match.low is not None:
            parts.append('v.t COLLATE "C" >= ?')
            params.append(match.low)
        if match.high is not None:
            parts.append('v.t COLLATE "C" <= ?')
            params.append(match.high)
        return " AND ".join(parts) + ")", params
    if match.kind == "wildcard":
        return (f"EXISTS (SELECT 1 FROM jsonb_array_elements_text(COALESCE({doc} -> ?, {doc} -> ?)) AS v(t) "
                f"WHERE v.t LIKE ?)", [key + "|raw", key, like_pattern(match.values[0])])
    return _any_of([_contains(doc, key, v) for v in match.values])


def _any_of(conditions: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    if not conditions:
        return "FALSE", []
    sql = " OR ".join(f"({c})" for c, _ in conditions)
    params = [p for _, ps in conditions for p in ps]
    return (f"({sql})" if len(conditions) > 1 else sql), params


def _pn_condition(doc: str, match: Match, *, ci: bool, fuzzy: bool) -> tuple[str, list[Any]]:
    key = match.key + ("|ci" if ci else "")
    conditions = []
    for pattern in match.values:
        pat = pattern.casefold() if ci else pattern
        if match.kind == "wildcard" or "*" in pat or "?" in pat:
            conditions.append(_any_element_like(doc, key, pat))
        else:
            conditions.append(_contains(doc, key, pat))
        if fuzzy:
            words = [w for w in _FUZZY_WORDS.split(pat.replace("*", "")) if w]
            if words:
                # Some candidate has, for every word, a name component starting with it.
                conditions.append((
                    f"EXISTS (SELECT 1 FROM jsonb_array_elements({doc} -> ?) AS c(comps) WHERE NOT EXISTS ("
                    "SELECT 1 FROM unnest(?::text[]) AS w(prefix) WHERE NOT EXISTS ("
                    "SELECT 1 FROM jsonb_array_elements_text(c.comps) AS x(t) WHERE x.t LIKE w.prefix)))",
                    [match.key + "|fz", [like_literal(w) + "%" for w in words]],
                ))
    return _any_of(conditions)


# -- text prefilters ------------------------------------------------------------------------------
# A study's or series's match document, as JSON text, holds every value a match compares as a JSON
# string: "value". A LIKE pattern over that text can then rule rows out through a trigram index
# (pg_trgm on PostgreSQL, FTS5 on SQLite) before the exact condition runs on what is left: it must
# admit every row the exact condition admits, which holds when each value pattern becomes
# '%"' + pattern + '"%' with both wildcards as '%' (a '?' may stand for a character JSON escapes).

_UNSAFE_IN_TEXT = re.compile(r'["\\%_\x00-\x1f]')


def text_patterns(match: Match, *, ci: bool) -> list[str] | None:
    """LIKE patterns over a match document's JSON text, one of which every row matching ``match``
    satisfies; None when no such pattern has three literal characters in a row (a trigram index
    could not use it) or a value holds a character JSON escapes or LIKE treats specially."""
    if match.kind not in ("single", "list", "wildcard"):
        return None
    out = []
    for value in match.values:
        if match.vr == "PN" and ci:
            value = value.casefold()
        value = value.replace("\x00", "\ufffd")  # as stored
        if _UNSAFE_IN_TEXT.search(value):
            return None
        pattern = '"' + value.replace("*", "%").replace("?", "%") + '"'
        if max(len(run) for run in pattern.split("%")) < 3:
            return None
        out.append("%" + pattern + "%")
    return out or None


def column_condition(column: str, match: Match) -> tuple[str, list[Any]]:
    """SQL for an indexed (non-PN) column, which holds the normalised first value (ranges: ``sql.range_condition``)."""
    if match.kind == "wildcard":
        return f"{column} LIKE ?", [like_pattern(match.values[0])]
    if len(match.values) == 1:
        return f"{column} = ?", list(match.values)
    return f"{column} = ANY(?)", [list(match.values)]


def multi_condition(column: str, match: Match) -> tuple[str, list[Any]]:
    """SQL for ``'\\CT\\MR\\'`` columns (ModalitiesInStudy, SOPClassesInStudy): some value matches."""
    if match.kind == "wildcard":
        return (f"EXISTS (SELECT 1 FROM unnest(string_to_array({column}, ?)) AS v(t) WHERE v.t <> '' AND v.t LIKE ?)",
                ["\\", like_pattern(match.values[0])])
    return f"string_to_array({column}, ?) && ?::text[]", ["\\", list(match.values)]

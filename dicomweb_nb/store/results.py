"""QIDO-RS answers from index rows: the attributes each result carries (PS3.18 10.6.3.3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..dicom.dicomjson import DicomJson, make_element
from ..dicom.query import Query
from ..dicom.tags import default_return_tags, level_tags_all, parse_tag, tag_hex, vr_of
from .index import Row
from .index.sql import COMPUTED_COUNTS, COMPUTED_MULTI, T_INSTANCE, T_SERIES, T_STUDY
from .outcomes import UrlBuilder

# An instance's metadata for attributes of another level than the result's (includefield).
RepresentativeMetadata = Callable[[Row, str], DicomJson]

_RETRIEVE_URL = parse_tag("RetrieveURL")
_INSTANCE_AVAILABILITY = parse_tag("InstanceAvailability")
_STUDY_UID, _SERIES_UID, _SOP_UID = parse_tag("StudyInstanceUID"), parse_tag("SeriesInstanceUID"), parse_tag("SOPInstanceUID")
_COMPUTED_KEYS = frozenset(COMPUTED_MULTI) | frozenset(COMPUTED_COUNTS) | {_RETRIEVE_URL, _INSTANCE_AVAILABILITY}


def result(row: Row, query: Query, study_uid: str | None, series_uid: str | None,
           retrieve_url: UrlBuilder | None, representative: RepresentativeMetadata,
           parents: dict[tuple[str, str], DicomJson] | None = None) -> DicomJson:
    """One search result as DICOM JSON, its attributes in tag order. ``parents``: the study and series
    JSON parsed for earlier results of the same search (the instances of a series share theirs)."""
    level = query.level
    keys = list(row.keys())
    study = _parent(parents, "study", row["study_uid"], row["study_json"])
    out: DicomJson = {}
    scoped = (level == T_SERIES and study_uid is not None) or (level == T_INSTANCE and series_uid is not None)
    wanted = default_return_tags(level, with_parent_levels=not scoped)
    wanted += [t for t in query.returned_tags if t not in wanted]
    sources: list[DicomJson] = []
    if level == T_INSTANCE:
        sources.append(json.loads(row["metadata"]))
    if level in (T_SERIES, T_INSTANCE):
        sources.append(_parent(parents, "series", row["series_uid"], row["series_json"]))
    sources.append(study)
    if query.include_all:
        allowed = level_tags_all(level)
        for src in sources:
            for key, elem in src.items():
                if key not in out and (allowed is None or int(key, 16) in allowed):
                    kept = without_bulk(elem)
                    if kept is not None:
                        out[key] = kept
    fallback: DicomJson | None = None
    for tag in wanted:
        key = tag_hex(tag)
        if key in out:
            continue
        elem = _computed(tag, row, level, keys)
        if elem is None:
            elem = next((src[key] for src in sources if key in src), None)
        if elem is None and tag not in _COMPUTED_KEYS and level != T_INSTANCE:
            if fallback is None:
                fallback = representative(row, level)
            elem = fallback.get(key)
        if elem is None:
            if tag == _RETRIEVE_URL:
                continue
            elem = make_element(vr_of(tag), None)
        elem = without_bulk(elem)
        if elem is None:
            continue
        out[key] = elem
    if retrieve_url is not None:
        if level == T_STUDY:
            url = retrieve_url(row["study_uid"], None, None)
        elif level == T_SERIES:
            url = retrieve_url(row["study_uid"], row["series_uid"], None)
        else:
            url = retrieve_url(row["study_uid"], row["series_uid"], row["sop_uid"])
        out[tag_hex(_RETRIEVE_URL)] = {"vr": "UR", "Value": [url]}
    out[tag_hex(_STUDY_UID)] = {"vr": "UI", "Value": [row["study_uid"]]}
    if level in (T_SERIES, T_INSTANCE):
        out[tag_hex(_SERIES_UID)] = {"vr": "UI", "Value": [row["series_uid"]]}
    if level == T_INSTANCE:
        out[tag_hex(_SOP_UID)] = {"vr": "UI", "Value": [row["sop_uid"]]}
    return dict(sorted(out.items()))


def _parent(parents: dict[tuple[str, str], DicomJson] | None, level: str, uid: str, text: str) -> DicomJson:
    if parents is None:
        return json.loads(text)
    parsed = parents.get((level, uid))
    if parsed is None:
        parsed = parents[(level, uid)] = json.loads(text)
    return parsed


def _computed(tag: int, row: Row, level: str, keys: list[str]) -> dict[str, Any] | None:
    if tag == _INSTANCE_AVAILABILITY:
        return {"vr": "CS", "Value": ["ONLINE"]}
    if tag in COMPUTED_MULTI:
        column = COMPUTED_MULTI[tag]
        vals = [v for v in (row[column] or "").split("\\") if v]
        return make_element("CS" if column == "modalities" else "UI", vals)
    if tag in COMPUTED_COUNTS:
        alias, column = COMPUTED_COUNTS[tag]
        if alias == "s":
            name = column if level == T_STUDY else {"num_series": "num_series", "num_instances": "study_num_instances"}[column]
        else:
            if level == T_STUDY:
                return None
            name = "num_instances" if level == T_SERIES else "series_num_instances"
        return {"vr": "IS", "Value": [int(row[name])]} if name in keys else None
    return None


def without_bulk(elem: dict[str, Any]) -> dict[str, Any] | None:
    """An element as QIDO returns it: no bulk data, at any depth.

    Stored metadata names bulk data by a placeholder resolved per instance by WADO-RS metadata; a
    search answer has no instance URL to resolve it against (study and series results merge
    instances), so such values are left out, nested ones included.
    """
    if "BulkDataURI" in elem:
        return None
    if elem.get("vr") != "SQ" or not elem.get("Value"):
        return elem
    items = []
    changed = False
    for item in elem["Value"]:
        kept_item = {}
        for key, sub in (item or {}).items():
            kept = without_bulk(sub)
            if kept is not None:
                kept_item[key] = kept
            changed = changed or kept is not sub
        items.append(kept_item)
    return {**elem, "Value": items} if changed else elem

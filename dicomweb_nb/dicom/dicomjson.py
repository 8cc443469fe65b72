"""DICOM JSON (PS3.18 Annex F) and the Native DICOM Model XML (PS3.19 A.1), on pydicom.

pydicom's ``to_json_dict`` does the per-value work; this module adds what DICOMweb needs around it:

* Bulk data is referenced by a *relative* URI of the form ``bulk/{tag}[/{item}/{tag}...]`` so
  the answer can be stored once and made absolute per request (behind any base URL or proxy);
  see ``BULK_PLACEHOLDER`` and ``absolutize_bulk_uris``.
* Pixel data is always a BulkDataURI, however small (viewers expect it; pydicom would inline
  values under its threshold).
* One malformed value (a DS that is not a number, say) does not sink the whole dataset: the
  element falls back to its raw text, as Orthanc and dcm4chee do.
"""

from __future__ import annotations

import base64
import json
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from .tags import dictionary_vr, keyword_of, parse_tag, tag_hex

PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
# Data Set Trailing Padding (PS3.10 7.2): meaningless bytes, but an attribute of the instance like any
# other; always bulk data, whatever its length, like pixel data.
TRAILING_PADDING_TAG = 0xFFFCFFFC
ALWAYS_BULK_TAGS = PIXEL_DATA_TAGS | {TRAILING_PADDING_TAG}
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
BULK_THRESHOLD = 1024  # bytes; binary values above this are served as bulk data

# Stored metadata names its bulk data ``"BulkDataURI":"<placeholder>bulk/..."``; a JSON string value
# cannot contain an unescaped quote, so the key-plus-prefix pattern never occurs inside data.
BULK_PLACEHOLDER = "dwnb:"
_BULK_PATTERN = f'"BulkDataURI":"{BULK_PLACEHOLDER}'
_BULK_PATTERN_SPACED = f'"BulkDataURI": "{BULK_PLACEHOLDER}'

DicomJson = dict[str, Any]


def dataset_to_json(ds: Dataset, *, bulk_threshold: int = BULK_THRESHOLD, _path: str = "") -> DicomJson:
    """DICOM JSON of a dataset; binary values over ``bulk_threshold`` as relative BulkDataURI.

    Group 0002 (file meta) is excluded, as PS3.18 F.2 asks, and so are group lengths (gggg,0000):
    retired, describing an encoding the JSON does not have (Orthanc leaves them out too). Values
    pydicom deferred (read with ``defer_size``) are judged by their raw length and never loaded when
    they become bulk data. An ambiguous VR (``US or SS``, ``OB or OW``) is resolved from the instance
    as pydicom resolves it (Pixel Representation, Bits Allocated, implicit or explicit encoding).
    """
    out: DicomJson = {}
    text_encoding = _simple_text_encoding(ds)
    big_endian = ds.original_encoding[1] is False
    for raw in ds.elements():
        tag = int(raw.tag)
        if (tag >> 16) == 0x0002 or not tag & 0xFFFF:
            continue
        key = tag_hex(tag)
        here = f"{_path}{key}"
        vr = raw.VR or dictionary_vr(tag)  # no VR on an element read with implicit VR
        if isinstance(raw, RawDataElement):
            size = raw.length if raw.length != 0xFFFFFFFF else None
        else:
            size = len(raw.value) if isinstance(raw.value, (bytes, bytearray)) else None
        if tag in ALWAYS_BULK_TAGS or (vr in BINARY_VRS and size is not None and size > bulk_threshold):
            out[key] = {"vr": _binary_vr(vr, encapsulated=size is None), "BulkDataURI": f"{BULK_PLACEHOLDER}bulk/{here}"}
            continue
        if isinstance(raw, RawDataElement) and raw.value is not None and raw.is_little_endian and " or " not in vr \
                and not tag & 0x10000:  # private elements: pydicom may know a better VR than the file
            fast = _raw_json(vr, raw.value, text_encoding)
            if fast is not None:
                out[key] = fast
                continue
        try:
            elem = ds[tag]  # pydicom converts the value and resolves an ambiguous VR
        except Exception:  # noqa: BLE001 - an undecodable element is left out rather than failing the dataset
            continue
        if elem.VR == "SQ":
            items = [
                dataset_to_json(item, bulk_threshold=bulk_threshold, _path=f"{here}/{i}/") for i, item in enumerate(elem.value)
            ]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        out[key] = _element_json(elem, bulk_threshold)
        if big_endian and "InlineBinary" in out[key]:
            value = little_endian_value(base64.b64decode(out[key]["InlineBinary"]), elem.VR)
            out[key]["InlineBinary"] = base64.b64encode(value).decode("ascii")
    return out


_WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def big_endian_word_size(vr: str, bits_allocated: int | None = None) -> int:
    """Bytes per word of a binary value stored big endian: what to reverse to make it little endian.

    By the VR (OW 2, OF/OL 4, OD/OV 8, OB none), except for OW pixel data, whose samples are swapped
    whole (32-bit doses are 4-byte words, as pydicom reads them; 8-bit samples pair in 2-byte words).
    """
    if vr == "OW" and bits_allocated in (32, 64):
        return bits_allocated // 8
    return _WORD_SIZES.get(vr, 1)


def little_endian_value(value: bytes, vr: str, bits_allocated: int | None = None) -> bytes:
    """A binary value of a big-endian dataset in little-endian byte order, as DICOMweb sends binary
    values (the retired Explicit VR Big Endian syntax is the only one storing words the other way).
    ``bits_allocated`` is for pixel data (see ``big_endian_word_size``)."""
    size = big_endian_word_size(vr, bits_allocated)
    if size == 1 or len(value) % size:
        return value
    return np.frombuffer(value, dtype=f">u{size}").astype(f"<u{size}").tobytes()


# -- fast path for raw values ---------------------------------------------------------------------
# Converting every element through pydicom's DataElement.to_json_dict costs 19.6 us per element of a
# CT header, against 2.9 us here (6.7x; benchmarks/bench_pure.py dicomjson): at ingest this is most of
# the work after reading the file. Plain text and fixed-size numeric values in little endian with a
# single-byte or UTF-8 character set are decoded here directly, giving exactly what pydicom's
# to_json_dict gives (tests compare the two on every bundled pydicom file); anything else goes
# through pydicom.

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI", "UR", "PN", "IS", "DS", "LT", "ST", "UT"})
_SINGLE_VALUE_VRS = frozenset({"LT", "ST", "UT", "UR"})
_STRUCT = {"US": ("H", 2), "SS": ("h", 2), "UL": ("L", 4), "SL": ("l", 4), "FL": ("f", 4), "FD": ("d", 8)}
_SIMPLE_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def _simple_text_encoding(ds: Dataset) -> str | None:
    """The codec of the dataset's text values when one Python codec decodes them all, else None."""
    raw = ds.get_item(0x00080005) if 0x00080005 in ds else None
    if raw is None:
        return "latin-1"
    value = raw.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str)):
        values = [str(v).strip() for v in value]
    else:
        values = [v.strip() for v in str(value or "").split("\\")]
    if len(values) != 1:
        return None
    return _SIMPLE_CHARSETS.get(values[0])


def _raw_json(vr: str, value: bytes, encoding: str | None) -> dict[str, Any] | None:
    if vr in _STRUCT:
        fmt, width = _STRUCT[vr]
        if len(value) % width:
            return None
        if not value:
            return {"vr": vr}
        numbers = list(struct.unpack(f"<{len(value) // width}{fmt}", value))
        if vr in ("FL", "FD") and any(n != n or n in (float("inf"), float("-inf")) for n in numbers):
            return None
        return {"vr": vr, "Value": numbers}
    if vr not in _TEXT_VRS or encoding is None:
        return None
    try:
        text = value.decode(encoding if vr not in ("UI", "DA", "TM", "DT", "IS", "DS", "CS", "AE", "AS") else "ascii")
    except UnicodeDecodeError:
        return None
    text = text.rstrip("\x00 ")
    if not text.strip(" \\"):
        return (
            {"vr": vr}
            if not text or vr in _SINGLE_VALUE_VRS or (not text.replace("\\", "").strip() and "\\" not in text)
            else None
        )
    items = [text] if vr in _SINGLE_VALUE_VRS else text.split("\\")
    if vr == "PN":
        out = []
        for item in items:
            groups = item.rstrip(" ").split("=")
            comps = {"Alphabetic": groups[0]}
            if len(groups) > 1:
                comps["Ideographic"] = groups[1]
            if len(groups) > 2:
                comps["Phonetic"] = groups[2]
            out.append(comps)
        return {"vr": vr, "Value": out}
    if vr == "IS":
        try:
            return {"vr": vr, "Value": [int(i.strip()) if i.strip() else None for i in items]}
        except ValueError:
            return None
    if vr == "DS":
        try:
            numbers = [float(i.strip()) if i.strip() else None for i in items]
        except ValueError:
            return None
        if any(n is not None and (n != n or n in (float("inf"), float("-inf"))) for n in numbers):
            return None
        return {"vr": vr, "Value": numbers}
    if vr in _SINGLE_VALUE_VRS:
        return {"vr": vr, "Value": [text]}
    # Like pydicom: only the value's trailing padding goes; spaces inside a multi-value stay.
    return {"vr": vr, "Value": items}


def _binary_vr(vr: str, *, encapsulated: bool) -> str:
    """The VR of a bulk value without loading it. Only implicit-VR data leaves it ambiguous here, and
    there PS3.5 A.1 makes every one of these OW (as pydicom resolves them, LUT Data of one entry aside,
    which is never bulk), encapsulated pixel data (PS3.5 A.4) aside: OB."""
    if " or " not in vr:
        return vr
    if encapsulated and "OB" in vr:
        return "OB"
    return "OW" if "OW" in vr else vr.split(" or ")[0]


def _element_json(elem: DataElement, bulk_threshold: int) -> dict[str, Any]:
    try:
        result = elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=bulk_threshold)
        if elem.VR in ("FL", "FD", "DS", "OF", "OD"):
            json.dumps(result, allow_nan=False)  # NaN/inf are not JSON
        return result
    except Exception:  # noqa: BLE001 - any malformed value falls back to its text, never fails ingest
        pass
    value = elem.value
    if value is None or value == "":
        return {"vr": elem.VR}
    if isinstance(value, (bytes, bytearray)):
        return {"vr": elem.VR, "InlineBinary": base64.b64encode(bytes(value)).decode("ascii")}
    values = list(value) if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") else [value]
    return {"vr": elem.VR, "Value": [_text(v) for v in values]}


def _text(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, (int, float)):
        return value
    return str(value)


def absolutize_bulk_uris(text: str, instance_url: str) -> str:
    """Make the stored relative BulkDataURIs of one instance's metadata text absolute."""
    if BULK_PLACEHOLDER not in text:
        return text
    prefix = instance_url.rstrip("/") + "/"
    return text.replace(_BULK_PATTERN, f'"BulkDataURI":"{prefix}').replace(_BULK_PATTERN_SPACED, f'"BulkDataURI": "{prefix}')


def dumps(obj: Any) -> str:
    """Compact JSON as this project writes it everywhere."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# -- reading values ----------------------------------------------------------------------------

def element(obj: DicomJson, key: str | int) -> dict[str, Any] | None:
    return obj.get(tag_hex(parse_tag(key)))


def values(obj: DicomJson, key: str | int) -> list[Any]:
    """The Value list of an attribute (empty when absent or empty)."""
    elem = element(obj, key)
    return list(elem.get("Value", [])) if elem else []


def first(obj: DicomJson, key: str | int, default: Any = None) -> Any:
    vals = values(obj, key)
    return vals[0] if vals else default


def pn_text(value: Any) -> str:
    """A PN value as the DICOM string form ``Alphabetic=Ideographic=Phonetic`` (trailing groups trimmed)."""
    if isinstance(value, dict):
        groups = [value.get("Alphabetic", ""), value.get("Ideographic", ""), value.get("Phonetic", "")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    return "" if value is None else str(value)


def value_texts(elem: dict[str, Any] | None) -> list[str]:
    """Each value of a JSON element as text, the form QIDO matching compares."""
    if not elem:
        return []
    vr = elem.get("vr")
    out = []
    for v in elem.get("Value", []):
        if vr == "PN":
            out.append(pn_text(v))
        elif isinstance(v, float) and v.is_integer() and vr in ("IS",):
            out.append(str(int(v)))
        elif isinstance(v, dict):
            continue  # sequence items are matched structurally, not as text
        else:
            out.append("" if v is None else str(v))
    return out


def make_element(vr: str, vals: Iterable[Any] | None) -> dict[str, Any]:
    """A JSON element; ``Value`` omitted when empty (PS3.18 F.2.5)."""
    vals = [] if vals is None else [v for v in vals]
    if not vals or all(v is None or v == "" for v in vals):
        return {"vr": vr}
    if vr == "PN":
        vals = [v if isinstance(v, dict) else _pn_json(str(v)) for v in vals]
    return {"vr": vr, "Value": vals}


def _pn_json(text: str) -> dict[str, str]:
    groups = text.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: g for name, g in zip(names, groups) if g}


# -- XML: PS3.19 Native DICOM Model -----------------------------------------------------------

_NATIVE_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def json_to_xml(obj: DicomJson) -> bytes:
    """The Native DICOM Model XML of one DICOM JSON object."""
    root = ET.Element("NativeDicomModel", xmlns=_NATIVE_NS)
    _xml_attributes(root, obj)
    # XML parsers turn a literal CR (and CRLF) into LF (XML 1.0 2.11), and ElementTree does not
    # escape it; ElementTree writes no CR of its own, so every CR here is data and becomes &#13;.
    body = ET.tostring(root, encoding="unicode").replace("\r", "&#13;")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def _xml_attributes(parent: ET.Element, obj: DicomJson) -> None:
    for key in sorted(obj):
        elem = obj[key]
        vr = elem.get("vr", "UN")
        attrs = {"tag": key, "vr": vr}
        kw = keyword_of(key)
        if kw != key:
            attrs["keyword"] = kw
        node = ET.SubElement(parent, "DicomAttribute", attrs)
        if "BulkDataURI" in elem:
            ET.SubElement(node, "BulkData", uri=elem["BulkDataURI"])
        elif "InlineBinary" in elem:
            ET.SubElement(node, "InlineBinary").text = elem["InlineBinary"]
        for number, value in enumerate(elem.get("Value", []), start=1):
            if vr == "SQ":
                item = ET.SubElement(node, "Item", number=str(number))
                _xml_attributes(item, value or {})
            elif vr == "PN":
                pn = ET.SubElement(node, "PersonName", number=str(number))
                for group in ("Alphabetic", "Ideographic", "Phonetic"):
                    text = value.get(group) if isinstance(value, dict) else (value if group == "Alphabetic" else None)
                    if not text:
                        continue
                    g = ET.SubElement(pn, group)
                    for name, comp in zip(_PN_COMPONENTS, text.split("^")):
                        if comp:
                            ET.SubElement(g, name).text = comp
            else:
                v = ET.SubElement(node, "Value", number=str(number))
                if value is not None:
                    v.text = str(value)


def xml_to_json(data: bytes | str) -> DicomJson:
    """DICOM JSON of a Native DICOM Model XML document (the inverse of ``json_to_xml``)."""
    root = ET.fromstring(data)
    return _json_from_xml(root)


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _json_from_xml(node: ET.Element) -> DicomJson:
    out: DicomJson = {}
    for attr in node:
        if _strip_ns(attr.tag) != "DicomAttribute":
            continue
        key = attr.get("tag", "").upper()
        vr = attr.get("vr", "UN")
        elem: dict[str, Any] = {"vr": vr}
        vals: list[Any] = []
        for child in attr:
            name = _strip_ns(child.tag)
            if name == "BulkData":
                elem["BulkDataURI"] = child.get("uri") or child.get("uuid", "")
            elif name == "InlineBinary":
                elem["InlineBinary"] = (child.text or "").strip()
            elif name == "Item":
                vals.append(_json_from_xml(child))
            elif name == "PersonName":
                pn: dict[str, str] = {}
                for group in child:
                    comps = {_strip_ns(c.tag): (c.text or "") for c in group}
                    parts = [comps.get(n, "") for n in _PN_COMPONENTS]
                    while parts and not parts[-1]:
                        parts.pop()
                    pn[_strip_ns(group.tag)] = "^".join(parts)
                vals.append(pn)
            elif name == "Value":
                vals.append(_typed(vr, child.text))
        if vals:
            elem["Value"] = vals
        out[key] = elem
    return out


_XML_NUMERIC_VRS = ("IS", "SL", "SS", "UL", "US", "SV", "UV", "DS", "FL", "FD")


def _typed(vr: str, text: str | None) -> Any:
    if text is None:
        # An empty <Value/>: an empty string among string values (as pydicom writes them in
        # JSON), null among numbers.
        return None if vr in _XML_NUMERIC_VRS else ""
    if vr in ("IS", "SL", "SS", "UL", "US", "SV", "UV"):
        try:
            return int(text)
        except ValueError:
            return text
    if vr in ("DS", "FL", "FD"):
        try:
            return float(text)
        except ValueError:
            return text
    return text

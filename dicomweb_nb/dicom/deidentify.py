"""De-identification by the PS3.15 Annex E Basic Application Level Confidentiality Profile.

Pure rules, no I/O: the notebook client (``pacs.deidentify``) and the server (WADO-URI
``anonymize=yes``) both call ``Deidentifier.deidentify(dataset)``.

The action of each attribute comes from Table E.1-1 (``deid_table``, generated from the
standard's table) for the Basic Profile, overridden by the option columns the caller chooses:

* ``dates="remove"`` (the Basic Profile), ``"shift"`` (Retain Longitudinal Temporal Information
  with Modified Dates: every date moved by the same whole number of days per patient, so
  intervals survive; times of day are kept) or ``"keep"`` (... with Full Dates);
* ``retain_patient_characteristics``, ``retain_device_identity``, ``retain_institution_identity``
  and ``retain_uids``: the attributes those columns mark K are kept. Where a column says C
  (clean free text), this module cannot vouch for the text and applies the Basic Profile action.

How the combined actions are resolved, with no per-IOD module tables at hand: the choice that
keeps any IOD conformant - X/Z -> Z, X/D, Z/D and X/Z/D -> D, X/Z/U* -> the sequence kept with its
UIDs remapped. Dummy values (D) carry no information (``ANONYMIZED``, 19000101, 0...); Patient ID and
Patient's Name get one pseudonym per original Patient ID. U remaps UIDs with a keyed hash
(HMAC-SHA256 under the Deidentifier's secret, as ``2.25.<decimal>``), so the same original UID maps
to the same new one in every instance, series and study handled with one secret. The actions
apply at every depth of nested sequences; private attributes, curves and overlays are removed.

Pixel data is not cleaned: ``burned_in_annotation(ds)`` says when an instance may show identifying
text in its pixels (Burned In Annotation YES, or a modality / SOP class known for it), so callers
flag or leave it out instead of passing it silently.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .deid_table import OPTION_COLUMNS, PROFILE_ROWS, REVISION

__all__ = [
    "Deidentifier",
    "Deidentified",
    "burned_in_annotation",
    "profile_action",
    "PROFILE_ROWS",
    "OPTION_CODES",
    "EXTRA_ACTIONS",
    "DATES",
]

DATES = ("remove", "shift", "keep")
# CID 7050 De-identification Method: the code of the profile and of each option (scheme DCM).
OPTION_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}
# Modalities and SOP classes whose pixels often carry identifying text (PS3.15 E.3.1 asks that such
# instances be checked). Burned In Annotation NO, where given, is taken at its word.
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "DOC", "VL", "IVUS"})
BURNED_IN_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit SC",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte SC",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word SC",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color SC",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic",
    "1.2.840.10008.5.1.4.1.1.77.1.1": "VL Endoscopic",
}
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, Any] = {
    "AE": _DUMMY_TEXT, "AS": "000Y", "CS": _DUMMY_TEXT, "DA": "19000101", "DT": "19000101000000", "TM": "000000",
    "DS": "0", "IS": "0", "LO": _DUMMY_TEXT, "LT": _DUMMY_TEXT, "PN": _DUMMY_TEXT, "SH": _DUMMY_TEXT, "ST": _DUMMY_TEXT,
    "UC": _DUMMY_TEXT, "UT": _DUMMY_TEXT, "UR": _DUMMY_TEXT, "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0,
    "SV": 0, "UV": 0, "AT": 0, "OB": b"\0\0", "OD": b"\0" * 8, "OF": b"\0" * 4, "OL": b"\0" * 4, "OV": b"\0" * 8,
    "OW": b"\0\0", "UN": b"\0\0",
}
# Beyond Table E.1-1: the table gives Content Sequence (SR content) the action D, a dummy value; the
# content tree is kept for its codes, numbers and references, but free text in it is not vouched for.
EXTRA_ACTIONS = {0x0040A160: "D"}  # Text Value
_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010


def _parse_key(key: str) -> tuple[int, int] | None:
    """``(value, mask)`` of a table key: ``50xxxxxx`` matches every tag whose masked bits equal the value."""
    if key == "PRIVATE":
        return None
    value = int(key.replace("x", "0"), 16)
    mask = int("".join("0" if ch == "x" else "F" for ch in key), 16)
    return value, mask


def profile_action(row: tuple, *, dates: str = "remove", retain: Iterable[str] = ()) -> str:
    """The action (D, Z, X, K, U, or ``shift``) one table row gives under the chosen options."""
    basic = row[3]
    options = dict(zip(OPTION_COLUMNS, row[4:]))
    chosen = set(retain)
    if dates == "keep":
        chosen.add("retain_full_dates")
    elif dates == "shift":
        chosen.add("retain_modified_dates")
    action = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}.get(basic, basic)
    for column in OPTION_COLUMNS:
        if column in chosen and options.get(column):
            if options[column] == "K":
                action = "K"
            elif column == "retain_modified_dates":
                action = "shift"
            # Other C (clean free text) entries keep the Basic Profile action: no text is vouched for.
    return action


@dataclass
class Deidentified:
    """One de-identified instance and what was done to it."""

    dataset: Dataset
    original: dict[str, str | None]  # StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, PatientID, PatientName
    new: dict[str, str | None]
    burned_in_annotation: str | None  # why the pixels may show identifying text, else None
    date_offset_days: int | None


@dataclass
class Deidentifier:
    """The Basic Application Level Confidentiality Profile with chosen options; see the module docstring.

    ``dates``: ``"remove"``, ``"shift"`` or ``"keep"``; ``date_offset`` fixes the shift in days
    (else each patient gets their own, from the secret, between 1 and 3650 days back).
    ``retain_*``: the standard's Retain options. ``keep``: keywords of further attributes to keep as
    they are (outside the profile; named in De-identification Method). ``patient_ids``: the pseudonym
    for given original Patient IDs (others get ``ANON`` + a keyed hash). ``secret``: the key of the
    UID, pseudonym and date-offset hashes; the same secret gives the same mapping in a later run.
    """

    dates: str = "remove"
    date_offset: int | None = None
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    keep: Iterable[str] = ()
    patient_ids: Mapping[str, str] = field(default_factory=dict)
    secret: bytes | str | None = None
    uid_map: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dates not in DATES:
            raise ValueError(f"dates must be one of {', '.join(DATES)}, not {self.dates!r}")
        if self.date_offset is not None and self.dates != "shift":
            raise ValueError("date_offset applies to dates='shift' only")
        if self.secret is None:
            self.secret = secrets.token_bytes(32)
        self._key = self.secret.encode() if isinstance(self.secret, str) else bytes(self.secret)
        keep = [self.keep] if isinstance(self.keep, str) else list(self.keep)
        self._kept_tags: dict[int, str] = {}
        for keyword in keep:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"keep: {keyword!r} is not a DICOM keyword")
            self._kept_tags[tag] = keyword
        retain = [name for name in ("retain_patient_characteristics", "retain_device_identity",
                                    "retain_institution_identity", "retain_uids") if getattr(self, name)]
        self.options = retain + ({"keep": ["retain_full_dates"], "shift": ["retain_modified_dates"]}.get(self.dates, []))
        self._exact: dict[int, str] = {}
        self._masked: list[tuple[int, int, str]] = []
        self._private_action = "X"
        for row in PROFILE_ROWS:
            action = profile_action(row, dates=self.dates, retain=retain)
            parsed = _parse_key(row[0])
            if parsed is None:
                self._private_action = "X"  # Retain Safe Private is not offered: every private attribute goes
            elif parsed[1] == 0xFFFFFFFF:
                self._exact[parsed[0]] = action
            else:
                self._masked.append((parsed[0], parsed[1], action))
        self._exact.update(EXTRA_ACTIONS)
        for tag in self._kept_tags:
            self._exact[tag] = "K"

    # -- what the profile says ------------------------------------------------------------------------
    def action_for(self, tag: int) -> str | None:
        """The action for an attribute tag, or None when the profile leaves it as it is."""
        if tag in self._exact:
            return self._exact[tag]
        if (tag >> 16) % 2 == 1:
            return self._private_action
        for value, mask, action in self._masked:
            if tag & mask == value:
                return action
        return None

    @property
    def method_codes(self) -> list[tuple[str, str]]:
        """CID 7050 codes (value, meaning) of the profile and the options applied."""
        return [OPTION_CODES["basic"], *(OPTION_CODES[o] for o in self.options)]

    @property
    def method_text(self) -> list[str]:
        """Values of De-identification Method (LO: each at most 64 characters)."""
        values = [f"Basic Application Level Confidentiality Profile ({REVISION})", "dicomweb-nb"]
        values += [OPTION_CODES[o][1] for o in self.options]
        values += [f"kept after review: {keyword}"[:64] for keyword in sorted(self._kept_tags.values())]
        return values

    # -- mappings ---------------------------------------------------------------------------------------
    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def new_uid(self, uid: str) -> str:
        """The replacement of a UID (the same for the same UID under the same secret)."""
        uid = str(uid).strip().rstrip("\0")
        if not uid:
            return uid
        found = self.uid_map.get(uid)
        if found is None:
            found = "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))
            self.uid_map[uid] = found
        return found

    def pseudonym(self, patient_id: str | None) -> str:
        """The Patient ID (and Patient's Name) that replaces a patient's identity."""
        original = str(patient_id or "")
        if original in self.patient_ids:
            return str(self.patient_ids[original])
        return "ANON" + self._digest("patient", original).hex()[:10].upper()

    def offset_days(self, patient_id: str | None) -> int:
        """Days added to every date of a patient under ``dates="shift"`` (negative: into the past)."""
        if self.date_offset is not None:
            return int(self.date_offset)
        return -(1 + int.from_bytes(self._digest("date", str(patient_id or ""))[:4], "big") % 3650)

    # -- applying it -----------------------------------------------------------------------------------
    def deidentify(self, ds: Dataset) -> Deidentified:
        """A de-identified copy of ``ds`` (``ds`` itself is not changed)."""
        patient_id = str(ds.get("PatientID", "") or "")
        original = {"StudyInstanceUID": _text(ds, "StudyInstanceUID"), "SeriesInstanceUID": _text(ds, "SeriesInstanceUID"),
                    "SOPInstanceUID": _text(ds, "SOPInstanceUID"), "PatientID": patient_id or None,
                    "PatientName": _text(ds, "PatientName")}
        context = _Context(self.pseudonym(patient_id), self.offset_days(patient_id) if self.dates == "shift" else None)
        out = self._dataset(ds, context)
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = self.method_text
        codes = []
        for value, meaning in self.method_codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(codes)
        out.LongitudinalTemporalInformationModified = {"remove": "REMOVED", "shift": "MODIFIED", "keep": "UNMODIFIED"}[self.dates]
        new_meta = FileMetaDataset()
        for elem in getattr(ds, "file_meta", None) or []:
            action = self.action_for(elem.tag)
            if action in ("X", "Z", "D") or elem.tag in (0x00020016, 0x00020017, 0x00020018):
                continue  # source / sending / receiving AE titles and anything the profile drops
            new_meta.add(self._element(elem, action, context) if action else _copy(elem))
        if "TransferSyntaxUID" not in new_meta:
            implicit, little = getattr(ds, "original_encoding", (True, True))
            new_meta.TransferSyntaxUID = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
                                          (False, False): ExplicitVRBigEndian}.get((implicit, little), ImplicitVRLittleEndian)
        if "SOPInstanceUID" in out:
            new_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        if "SOPClassUID" in out:
            new_meta.MediaStorageSOPClassUID = out.SOPClassUID
        out.file_meta = new_meta
        new = {"StudyInstanceUID": _text(out, "StudyInstanceUID"), "SeriesInstanceUID": _text(out, "SeriesInstanceUID"),
               "SOPInstanceUID": _text(out, "SOPInstanceUID"), "PatientID": _text(out, "PatientID"),
               "PatientName": _text(out, "PatientName")}
        return Deidentified(out, original, new, burned_in_annotation(ds), context.offset)

    def _dataset(self, ds: Dataset, context: _Context) -> Dataset:
        out = Dataset()
        for elem in ds:
            action = self.action_for(elem.tag)
            if action == "X":
                continue
            if action is None:
                if elem.VR == "SQ":
                    out.add(DataElement(elem.tag, "SQ", Sequence([self._dataset(item, context) for item in elem.value])))
                else:
                    out.add(_copy(elem))
                continue
            out.add(self._element(elem, action, context))
        return out

    def _element(self, elem: DataElement, action: str, context: _Context) -> DataElement:
        vr = elem.VR
        if vr == "SQ":
            if action == "Z":
                return DataElement(elem.tag, "SQ", Sequence())
            # D, K, U: the sequence stays, each item de-identified by the same rules.
            return DataElement(elem.tag, "SQ", Sequence([self._dataset(item, context) for item in elem.value]))
        if action == "K":
            return _copy(elem)
        if action == "U" or (action == "D" and vr == "UI"):
            values = _values(elem)
            mapped = [self.new_uid(v) for v in values] if values else [self.new_uid(f"dummy:{elem.tag:08X}")]
            return DataElement(elem.tag, vr, mapped if len(mapped) > 1 else mapped[0])
        if action == "shift":
            if vr in ("DA", "DT") and context.offset is not None:
                shifted = [_shift(str(v), context.offset, vr) for v in _values(elem)]
                return DataElement(elem.tag, vr, shifted if len(shifted) > 1 else (shifted[0] if shifted else ""))
            return _copy(elem)  # times of day and other values: whole-day shifts leave them as they are
        if elem.tag in (_PATIENT_ID, _PATIENT_NAME):
            return DataElement(elem.tag, vr, context.pseudonym)
        if action == "Z":
            return DataElement(elem.tag, vr, None)
        # D: a dummy value of the element's VR.
        return DataElement(elem.tag, vr, _DUMMY_BY_VR.get(vr, _DUMMY_TEXT))


@dataclass
class _Context:
    pseudonym: str
    offset: int | None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value) if value not in (None, "") else None


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [v for v in value if v not in (None, "")]
    return [value]


def _copy(elem: DataElement) -> DataElement:
    return DataElement(elem.tag, elem.VR, elem.value, is_undefined_length=elem.is_undefined_length)


def _shift(value: str, days: int, vr: str) -> str:
    """A DA or DT value moved by whole days; its precision and any time part are kept."""
    text = value.strip()
    digits = text[:8]
    if len(digits) < 4 or not digits.isdigit():
        return text
    padded = digits + "0101"[len(digits) - 4:] if len(digits) < 8 else digits
    try:
        moved = _dt.datetime.strptime(padded, "%Y%m%d").date() + _dt.timedelta(days=days)
    except ValueError:
        return text
    return moved.strftime("%Y%m%d")[:len(digits)] + (text[8:] if vr == "DT" else "")


def burned_in_annotation(ds: Dataset) -> str | None:
    """Why an instance's pixels may show identifying text, or None when nothing says so."""
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return "Burned In Annotation is YES"
    if str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
        return "Recognizable Visual Features is YES"
    if burned == "NO":
        return None
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in BURNED_IN_SOP_CLASSES:
        return f"{BURNED_IN_SOP_CLASSES[sop_class]} instances often carry burned-in text (no Burned In Annotation NO)"
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in BURNED_IN_MODALITIES:
        return f"modality {modality} often carries burned-in text (no Burned In Annotation NO)"
    return None



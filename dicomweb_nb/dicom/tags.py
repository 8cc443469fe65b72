"""Attribute dictionary helpers: keyword <-> tag, value representations, query levels.

Everything here is derived from pydicom's data dictionary; the only tables written by hand are
the ones PS3.18 defines itself (the attributes a QIDO-RS answer must carry at each level) and the
assignment of attributes to the study and series levels (PS3.3 / PS3.4 C.6.2.1 information
model), which no library publishes in machine-readable form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from ..errors import UnknownAttributeError

_TAG_HEX = re.compile(r"^[0-9A-Fa-f]{8}$")


def parse_tag(key: str | int) -> int:
    """Tag number of a keyword (``PatientName``) or of eight hex digits (``00100010``).

    Private tags given as hex digits are accepted; unknown keywords raise UnknownAttributeError.
    """
    if isinstance(key, int):
        return key
    key = key.strip()
    if _TAG_HEX.match(key):
        return int(key, 16)
    tag = tag_for_keyword(key)
    if tag is None:
        raise UnknownAttributeError(
            f"unknown DICOM attribute {key!r}: not a keyword of the data dictionary nor an 8-digit hex tag"
        )
    return tag


def tag_hex(tag: int) -> str:
    """The DICOM JSON form of a tag: eight upper-case hex digits."""
    return f"{tag:08X}"


def keyword_of(tag: int | str) -> str:
    """Keyword of a tag, or its hex form when the dictionary has none (private tags)."""
    tag = parse_tag(tag)
    return keyword_for_tag(tag) or tag_hex(tag)


@lru_cache(maxsize=4096)
def dictionary_vr(tag: int) -> str:
    """The data dictionary's VR of a tag as written there (``US or SS`` kept); ``UN`` when unknown."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def vr_of(tag: int | str) -> str:
    """Value representation from the dictionary; ``UN`` when unknown (private tags)."""
    tag = parse_tag(tag)
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    # Ambiguous VRs ("US or SS", "OB or OW") only matter for binary encoding, not for matching.
    return vr.split(" or ")[0]


def tags_of(keys: Iterable[str | int]) -> list[int]:
    return [parse_tag(k) for k in keys]


# -- The DICOM information model levels (PS3.4 C.6.2.1, Study Root) -------------------------------

PATIENT_LEVEL_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientComments",
    "PatientSpeciesDescription", "PatientBreedDescription", "ResponsiblePerson", "ResponsibleOrganization",
    "PatientIdentityRemoved", "DeidentificationMethod", "EthnicGroup", "PatientBirthName", "PatientMotherBirthName",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "QualityControlSubject", "StrainDescription",
)

STUDY_LEVEL_KEYWORDS = PATIENT_LEVEL_KEYWORDS + (
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName", "ReferringPhysicianIdentificationSequence", "StudyID", "StudyDescription",
    "ProcedureCodeSequence", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "ReferencedStudySequence",
    "RequestingService", "AdmittingDiagnosesDescription", "PatientAge", "PatientSize", "PatientWeight",
    "Occupation", "AdditionalPatientHistory", "PatientSexNeutered", "MedicalAlerts", "Allergies",
    "PregnancyStatus", "SmokingStatus", "ReasonForPerformedProcedureCodeSequence", "TimezoneOffsetFromUTC",
)

SERIES_LEVEL_KEYWORDS = (
    "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime", "Laterality",
    "PerformingPhysicianName", "ProtocolName", "OperatorsName", "BodyPartExamined", "PatientPosition",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "RequestAttributesSequence", "ReferencedPerformedProcedureStepSequence",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer", "InstitutionName", "InstitutionAddress",
    "StationName", "InstitutionalDepartmentName", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions",
    "SeriesDescriptionCodeSequence", "AnatomicalOrientationType", "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
)

# PS3.18 Table 10.6.3-3: attributes every study match carries.
STUDY_RETURN_KEYWORDS = (
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
    "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)
# PS3.18 Table 10.6.3-4.
SERIES_RETURN_KEYWORDS = (
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence", "StudyInstanceUID",
)
# PS3.18 Table 10.6.3-5.
INSTANCE_RETURN_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    "StudyInstanceUID", "SeriesInstanceUID",
)

_STUDY_TAGS = frozenset(tags_of(STUDY_LEVEL_KEYWORDS))
_SERIES_TAGS = frozenset(tags_of(SERIES_LEVEL_KEYWORDS))


def level_of(tag: int) -> str:
    """The information-model level an attribute lives at: ``study``, ``series`` or ``instance``."""
    if tag in _STUDY_TAGS:
        return "study"
    if tag in _SERIES_TAGS:
        return "series"
    return "instance"


def default_return_tags(level: str, *, with_parent_levels: bool) -> list[int]:
    """Tags a QIDO answer at ``level`` always carries.

    ``with_parent_levels`` is true for searches not scoped by a parent in the URL (``/series`` rather than
    ``/studies/{uid}/series``); PS3.18 10.6.3.3 then asks for the parent levels' attributes as well.
    """
    keywords: list[str] = []
    if level == "study" or with_parent_levels:
        keywords += STUDY_RETURN_KEYWORDS
    if level == "series" or (level == "instance" and with_parent_levels):
        keywords += SERIES_RETURN_KEYWORDS
    if level == "instance":
        keywords += INSTANCE_RETURN_KEYWORDS
    seen: dict[int, None] = {}
    for kw in keywords:
        seen.setdefault(parse_tag(kw), None)
    return list(seen)


def level_tags_all(level: str) -> frozenset[int] | None:
    """Tags ``includefield=all`` brings at a level; None means every attribute of the instance."""
    if level == "study":
        return _STUDY_TAGS
    if level == "series":
        return _STUDY_TAGS | _SERIES_TAGS
    return None

"""An instance's summary: the attributes searches at instance level ask for most, kept apart at ingest.

A QIDO-RS instance search returns, for each instance, a few attributes of the instance's own: the
defaults of PS3.18 10.6.3.3 (SOP Class, Instance Number, Rows, Columns...) plus what ``includefield``
names. Read from the instance's whole DICOM JSON, a 300-instance series costs 300 parses of a few
kilobytes each; a volume's geometry (positions, orientation, spacing, pixel description: what the
notebook client's lazy volumes ask for, ``client.lazy.GEOMETRY_FIELDS``) needs a few hundred bytes of
it. So the index keeps, per instance, the DICOM JSON of ``SUMMARY_KEYWORDS`` alone (the ``summary``
column), and a search whose answer needs nothing else reads that instead (``summary_suffices``):
the same answer, from a tenth of the bytes. Measured (SQLite, 2-core machine under load, median of
40): a 300-instance series of pydicom's CT_small (10.8 KB of metadata each) answers its instance
search in 17 ms instead of 52 ms, with the volume geometry as includefield in 27 ms instead of 66 ms;
with MR_small's 3 KB, 21 ms instead of 29 ms. tests/store/test_summary.py checks the answers are the same.
"""

from __future__ import annotations

from ..dicom.dicomjson import DicomJson, dumps
from ..dicom.query import Query
from ..dicom.tags import default_return_tags, parse_tag, tag_hex

SUMMARY_KEYWORDS = (
    # The default attributes of an instance result (PS3.18 Table 10.6.3-5), UIDs included.
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "TimezoneOffsetFromUTC", "InstanceNumber",
    "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID",
    # The Image Pixel description, the plane geometry and the modality and VOI transforms: enough to
    # place, decode and display a frame without the full metadata.
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "BitsStored", "HighBit",
    "PixelRepresentation", "PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio", "ImagePositionPatient",
    "ImageOrientationPatient", "FrameOfReferenceUID", "SliceThickness", "SliceLocation", "SpacingBetweenSlices",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "ImageType", "AcquisitionNumber", "ContentDate", "ContentTime", "LossyImageCompression",
    "AvailableTransferSyntaxUID",
)
SUMMARY_TAGS = frozenset(parse_tag(k) for k in SUMMARY_KEYWORDS)
_SUMMARY_KEYS = frozenset(tag_hex(t) for t in SUMMARY_TAGS)
# Tags every answer computes itself (not read from the instance's JSON).
_COMPUTED = frozenset(parse_tag(k) for k in ("RetrieveURL", "InstanceAvailability"))


def summary_text(metadata: DicomJson) -> str:
    """The summary of an instance's DICOM JSON, serialized as the metadata is."""
    return dumps({key: value for key, value in metadata.items() if key in _SUMMARY_KEYS})


def summary_suffices(query: Query, *, series_scoped: bool) -> bool:
    """Whether an instance search's answer reads only attributes of the summary (``series_scoped``:
    the URL names the series, so the parent levels' defaults are not asked for)."""
    if query.level != "instance" or query.include_all:
        return False
    wanted = default_return_tags("instance", with_parent_levels=not series_scoped) + query.returned_tags
    return all(tag in SUMMARY_TAGS or tag in _COMPUTED for tag in wanted)


__all__ = ["SUMMARY_KEYWORDS", "SUMMARY_TAGS", "summary_text", "summary_suffices"]

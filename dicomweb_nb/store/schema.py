"""The SQLite index of the workspace store: which attributes are columns, and the tables.

Indexed attributes are the ones QIDO-RS searches most (PS3.18 Table 10.6.1-5 matching keys plus
the usual extras); each column holds the attribute in the form matching compares (dates and
times normalised, PN as ``Alphabetic=Ideographic=Phonetic``, numbers canonical). Everything else
is matched against the stored DICOM JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dicom.tags import parse_tag

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class IndexedColumn:
    keyword: str
    column: str
    level: str  # study, series or instance: the table holding the column

    @property
    def tag(self) -> int:
        return parse_tag(self.keyword)


INDEXED_COLUMNS: tuple[IndexedColumn, ...] = (
    IndexedColumn("StudyInstanceUID", "study_uid", "study"),
    IndexedColumn("PatientName", "patient_name", "study"),
    IndexedColumn("PatientID", "patient_id", "study"),
    IndexedColumn("PatientBirthDate", "patient_birth_date", "study"),
    IndexedColumn("PatientSex", "patient_sex", "study"),
    IndexedColumn("StudyDate", "study_date", "study"),
    IndexedColumn("StudyTime", "study_time", "study"),
    IndexedColumn("AccessionNumber", "accession_number", "study"),
    IndexedColumn("StudyID", "study_id", "study"),
    IndexedColumn("StudyDescription", "study_description", "study"),
    IndexedColumn("ReferringPhysicianName", "referring_physician_name", "study"),
    IndexedColumn("SeriesInstanceUID", "series_uid", "series"),
    IndexedColumn("Modality", "modality", "series"),
    IndexedColumn("SeriesNumber", "series_number", "series"),
    IndexedColumn("SeriesDescription", "series_description", "series"),
    IndexedColumn("SeriesDate", "series_date", "series"),
    IndexedColumn("SeriesTime", "series_time", "series"),
    IndexedColumn("BodyPartExamined", "body_part_examined", "series"),
    IndexedColumn("PerformedProcedureStepStartDate", "pps_start_date", "series"),
    IndexedColumn("PerformedProcedureStepStartTime", "pps_start_time", "series"),
    IndexedColumn("SOPInstanceUID", "sop_uid", "instance"),
    IndexedColumn("SOPClassUID", "sop_class_uid", "instance"),
    IndexedColumn("InstanceNumber", "instance_number", "instance"),
    IndexedColumn("Rows", "rows", "instance"),
    IndexedColumn("Columns", "columns", "instance"),
    IndexedColumn("BitsAllocated", "bits_allocated", "instance"),
    IndexedColumn("NumberOfFrames", "number_of_frames", "instance"),
    IndexedColumn("ContentDate", "content_date", "instance"),
    IndexedColumn("ContentTime", "content_time", "instance"),
)

COLUMNS_BY_TAG = {c.tag: c for c in INDEXED_COLUMNS}
_TABLE = {"study": "studies", "series": "series", "instance": "instances"}


def table_of(level: str) -> str:
    return _TABLE[level]


def _columns(level: str) -> str:
    cols = [c.column for c in INDEXED_COLUMNS if c.level == level and c.column not in ("study_uid", "series_uid", "sop_uid")]
    return "".join(f"    {name} TEXT,\n" for name in cols)


DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE,
{_columns("study")}    modalities TEXT,            -- '\\CT\\MR\\': ModalitiesInStudy, kept by ingest
    sop_classes TEXT,           -- '\\1.2...\\': SOPClassesInStudy
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    study_json TEXT NOT NULL,   -- study- and patient-level attributes of the latest instance
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL UNIQUE,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
{_columns("series")}    num_instances INTEGER NOT NULL DEFAULT 0,
    series_json TEXT NOT NULL,  -- series-level attributes of the latest instance
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL UNIQUE,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
{_columns("instance")}    instance_number_int INTEGER,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,         -- relative to the store's files/ folder
    size INTEGER NOT NULL,
    metadata TEXT NOT NULL,     -- DICOM JSON with relative BulkDataURIs
    frames TEXT,                -- FrameLayout JSON
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient_id ON studies(patient_id);
CREATE INDEX IF NOT EXISTS studies_study_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession_number);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_modality ON series(modality);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid, instance_number_int);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, definition TEXT NOT NULL, updated REAL NOT NULL);
"""

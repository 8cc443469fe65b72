"""The store: an index (SQLite or PostgreSQL) plus blob storage (a folder or object storage),
metadata and frame offsets computed once at ingest. Knows nothing of HTTP."""

from .importer import ImportReport, import_files, import_paths
from .ingest import FrameLayout, InstanceRecord, MissingAttributeError, NotDicomError, read_instance
from .store import (
    FAILURE_CANNOT_UNDERSTAND,
    FAILURE_DATASET_DOES_NOT_MATCH,
    FAILURE_DUPLICATE,
    FAILURE_PROCESSING,
    FAILURE_STUDY_UID_MISMATCH,
    InstanceRow,
    NotFoundError,
    ParsedFile,
    SearchResult,
    Store,
    StoreError,
    StoreOutcome,
    describe_failure,
    parse_file,
    parse_files,
)

__all__ = [
    "Store", "StoreError", "NotFoundError", "StoreOutcome", "InstanceRow", "SearchResult", "FrameLayout",
    "ParsedFile", "parse_file", "parse_files",
    "InstanceRecord", "read_instance", "NotDicomError", "MissingAttributeError", "ImportReport", "import_paths", "import_files",
    "FAILURE_CANNOT_UNDERSTAND", "FAILURE_DATASET_DOES_NOT_MATCH", "FAILURE_DUPLICATE", "FAILURE_PROCESSING",
    "FAILURE_STUDY_UID_MISMATCH", "describe_failure",
]

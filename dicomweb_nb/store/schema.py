"""The store's index: which attributes are columns, and the tables (SQLite and PostgreSQL).

Indexed attributes are the ones QIDO-RS searches most (PS3.18 Table 10.6.1-5 matching keys plus
the usual extras); each column holds the attribute in the form matching compares (dates and
times normalised, PN as ``Alphabetic=Ideographic=Phonetic``, numbers canonical). Everything else
is matched against the stored DICOM JSON (SQLite) or a match document computed from it at ingest
(PostgreSQL, ``match`` JSONB with a GIN index; see ``index.matchdoc``).

One schema for both engines: the same tables and columns, written once here; the two DDLs differ
only in types (``TEXT COLLATE "C"`` so PostgreSQL compares bytes like SQLite, identity columns,
JSONB) and in PostgreSQL's extra columns for matching and ordering.

Schema versions: 1 is the first release's SQLite index; 2 adds write intents, garbage, the
servers table and job claims (``migrate_sqlite`` upgrades a version-1 store in place). ``ddl``
is the schema as of version 2; each later version is a step of ``STEPS`` (its own columns, tables
and indexes), run in order by both engines on a new index and on an older one alike:

- 3: ``instances.metadata_version``, the format of the precomputed metadata (``METADATA_VERSION``);
  the store re-derives older rows from their blobs when it opens (``Store.refresh_metadata``).
- 4: text indexes for wildcard and any-attribute matching at the study and series levels: on
  PostgreSQL, pg_trgm GIN indexes over the match documents; on SQLite, the match documents in a
  column and an FTS5 trigram table over it (``matchdoc.text_patterns``).
- 5: PostgreSQL indexes finding the latest instance of a study or series in one probe.
- 6: the change feed (``changes``: one row per instance created or deleted, in one order; an index
  made before it gets a ``create`` entry per instance it holds, in the order they were stored; see
  ``index.changes``).
- 7: ``instances.summary`` (``store.summary``): the attributes instance searches read most; NULL for
  an instance stored before, which searches then read from its full metadata.
- 8: the worklist (UPS-RS): workitems, their subscriptions and event reports (``worklist_ddl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..dicom.tags import parse_tag

SCHEMA_VERSION = 8
# The format of the precomputed DICOM JSON of an instance: 1 before issue 10's fixes (group lengths
# kept, trailing padding left out, ambiguous VRs taken from the dictionary), 2 since.
METADATA_VERSION = 2
Dialect = Literal["sqlite", "postgresql"]


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


def _types(dialect: Dialect) -> dict[str, str]:
    if dialect == "sqlite":
        return {"text": "TEXT", "id": "INTEGER PRIMARY KEY", "real": "REAL", "int": "INTEGER", "json": "TEXT"}
    return {"text": 'TEXT COLLATE "C"', "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "real": "DOUBLE PRECISION", "int": "BIGINT", "json": "JSONB"}


def _columns(level: str, text: str) -> str:
    cols = [c.column for c in INDEXED_COLUMNS if c.level == level and c.column not in ("study_uid", "series_uid", "sop_uid")]
    return "".join(f"    {name} {text},\n" for name in cols)


def ddl(dialect: Dialect) -> str:
    """Every table and index of the current schema (``IF NOT EXISTS``: safe on an existing index)."""
    t = _types(dialect)
    text, pg = t["text"], dialect == "postgresql"
    # PostgreSQL matches on a JSONB document of normalised values (GIN-indexed) and orders series
    # by a number it cannot CAST leniently the way SQLite does; SQLite matches in Python.
    match = f"    match {t['json']} NOT NULL DEFAULT '{{}}',\n" if pg else ""
    series_int = f"    series_number_int {t['int']},\n" if pg else ""
    statements = f"""
CREATE TABLE IF NOT EXISTS meta (key {text} PRIMARY KEY, value {text});
CREATE TABLE IF NOT EXISTS studies (
    id {t['id']},
    study_uid {text} NOT NULL UNIQUE,
{_columns("study", text)}    modalities {text},
    sop_classes {text},
    num_series {t['int']} NOT NULL DEFAULT 0,
    num_instances {t['int']} NOT NULL DEFAULT 0,
    study_json TEXT NOT NULL,
{match}    updated {t['real']} NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    id {t['id']},
    series_uid {text} NOT NULL UNIQUE,
    study_uid {text} NOT NULL REFERENCES studies(study_uid),
{_columns("series", text)}{series_int}    num_instances {t['int']} NOT NULL DEFAULT 0,
    series_json TEXT NOT NULL,
{match}    updated {t['real']} NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id {t['id']},
    sop_uid {text} NOT NULL UNIQUE,
    series_uid {text} NOT NULL REFERENCES series(series_uid),
    study_uid {text} NOT NULL REFERENCES studies(study_uid),
{_columns("instance", text)}    instance_number_int {t['int']},
    transfer_syntax {text} NOT NULL,
    path {text} NOT NULL,
    size {t['int']} NOT NULL,
    metadata TEXT NOT NULL,
    frames TEXT,
{match}    stored {t['real']} NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient_id ON studies(patient_id);
CREATE INDEX IF NOT EXISTS studies_study_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession_number);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_modality ON series(modality);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid, instance_number_int);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS jobs (id {text} PRIMARY KEY, definition TEXT NOT NULL, updated {t['real']} NOT NULL,
    state {text}, owner {text}, cancel {t['int']} NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS intents (key {text} PRIMARY KEY, session {text} NOT NULL, created {t['real']} NOT NULL);
CREATE INDEX IF NOT EXISTS intents_session ON intents(session);
CREATE TABLE IF NOT EXISTS garbage (key {text} PRIMARY KEY, due {t['real']} NOT NULL);
CREATE TABLE IF NOT EXISTS servers (name {text} PRIMARY KEY, definition TEXT NOT NULL, updated {t['real']} NOT NULL);
"""
    if pg:
        statements += """
CREATE TABLE IF NOT EXISTS sessions (id TEXT COLLATE "C" PRIMARY KEY, lock_key BIGINT NOT NULL, host TEXT, pid INTEGER,
                                     started DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS studies_match ON studies USING gin (match jsonb_path_ops);
CREATE INDEX IF NOT EXISTS series_match ON series USING gin (match jsonb_path_ops);
CREATE INDEX IF NOT EXISTS instances_match ON instances USING gin (match jsonb_path_ops);
CREATE INDEX IF NOT EXISTS studies_patient_name ON studies(patient_name);
CREATE INDEX IF NOT EXISTS series_order ON series(study_uid, series_number_int, id);
"""
    return statements


def worklist_ddl(dialect: Dialect) -> str:
    """The worklist's schema step (``WORKLIST_VERSION``; ``store/index/workitems.py``): each workitem's
    dataset (DICOM JSON, without its Transaction UID, which is a column of its own, never returned) and state; the
    subscriptions of AE titles to a workitem or to the whole worklist (``target`` is then the
    well-known UID of the worklist, or of the filtered worklist with its ``filter``); and the event
    reports due to each subscriber, kept a few minutes for the processes that deliver them."""
    t = _types(dialect)
    text, pg = t["text"], dialect == "postgresql"
    match = f"    match {t['json']} NOT NULL DEFAULT '{{}}',\n" if pg else ""
    # Event ids only grow (pollers deliver "id > last seen"): SQLite must not reuse a pruned row's id.
    event_id = t["id"] if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
    script = f"""
CREATE TABLE IF NOT EXISTS workitems (
    id {t['id']},
    uid {text} NOT NULL UNIQUE,
    state {text} NOT NULL,
    transaction_uid {text},
    dataset TEXT NOT NULL,
{match}    created {t['real']} NOT NULL,
    updated {t['real']} NOT NULL
);
CREATE INDEX IF NOT EXISTS workitems_state ON workitems(state);
CREATE TABLE IF NOT EXISTS workitem_subscriptions (
    aetitle {text} NOT NULL,
    target {text} NOT NULL,
    deletion_lock {t['int']} NOT NULL DEFAULT 0,
    filter TEXT,
    created {t['real']} NOT NULL,
    PRIMARY KEY (aetitle, target)
);
CREATE INDEX IF NOT EXISTS workitem_subscriptions_target ON workitem_subscriptions(target);
CREATE TABLE IF NOT EXISTS workitem_events (
    id {event_id},
    aetitle {text} NOT NULL,
    workitem {text} NOT NULL,
    report TEXT NOT NULL,
    created {t['real']} NOT NULL
);
CREATE INDEX IF NOT EXISTS workitem_events_ae ON workitem_events(aetitle, id);
CREATE INDEX IF NOT EXISTS workitem_events_created ON workitem_events(created);
"""
    if pg:
        script += "CREATE INDEX IF NOT EXISTS workitems_match ON workitems USING gin (match jsonb_path_ops);\n"
    return script


def statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _metadata_version_step(dialect: Dialect, previous: int | None) -> list[str]:
    # Rows of a version-2 index were written after issue 10's metadata fixes (version 2 came after
    # them); a version-1 index may hold either, so its rows are re-derived.
    int_type = _types(dialect)["int"]
    out = [f"ALTER TABLE instances ADD COLUMN metadata_version {int_type} NOT NULL DEFAULT 1"]
    floor = METADATA_VERSION if previous is None else 2 if previous >= 2 else 1
    if floor > 1:
        out.append(f"UPDATE instances SET metadata_version = {floor}")
    out.append(f"INSERT INTO meta(key, value) VALUES ('metadata', '{floor}') "
               "ON CONFLICT(key) DO UPDATE SET value=excluded.value")
    return out


def _text_index_step(dialect: Dialect, previous: int | None) -> list[str]:
    # PostgreSQL: the engine creates pg_trgm and its indexes (which may fail without privileges).
    # SQLite: the engine fills the new columns of existing rows, then makes ``sqlite_text_tables``
    # (an FTS5 'delete' of a row it never indexed would corrupt it).
    return [] if dialect == "postgresql" else [f"ALTER TABLE {table} ADD COLUMN match TEXT" for table in ("studies", "series")]


def sqlite_text_tables() -> list[str]:
    """The FTS5 trigram tables over the ``match`` column of studies and series, kept up to date by
    triggers, built from the rows already there."""
    out = []
    for table in ("studies", "series"):
        out += [
            f"CREATE VIRTUAL TABLE {table}_text USING fts5(match, content='{table}', content_rowid='id', tokenize='trigram')",
            f"CREATE TRIGGER {table}_text_insert AFTER INSERT ON {table} BEGIN "
            f"INSERT INTO {table}_text(rowid, match) VALUES (new.id, new.match); END",
            f"CREATE TRIGGER {table}_text_delete AFTER DELETE ON {table} BEGIN "
            f"INSERT INTO {table}_text({table}_text, rowid, match) VALUES ('delete', old.id, old.match); END",
            f"CREATE TRIGGER {table}_text_update AFTER UPDATE OF match ON {table} BEGIN "
            f"INSERT INTO {table}_text({table}_text, rowid, match) VALUES ('delete', old.id, old.match); "
            f"INSERT INTO {table}_text(rowid, match) VALUES (new.id, new.match); END",
            f"INSERT INTO {table}_text({table}_text) VALUES ('rebuild')",
        ]
    return out


def _latest_instance_step(dialect: Dialect, previous: int | None) -> list[str]:
    # The latest instance of a study or series (its metadata stands for attributes of another
    # level in QIDO answers) in one index probe. SQLite's instances_study and instances_series end
    # in the rowid (the id) already; PostgreSQL's would scan the primary key backwards.
    if dialect == "sqlite":
        return []
    return ["CREATE INDEX IF NOT EXISTS instances_study_latest ON instances(study_uid, id)",
            "CREATE INDEX IF NOT EXISTS instances_series_latest ON instances(series_uid, id)",
            "DROP INDEX IF EXISTS instances_study"]


def _change_feed_step(dialect: Dialect, previous: int | None) -> list[str]:
    # The change feed (index.changes): one row per instance created or deleted, ``seq`` its order,
    # ``recorded`` microseconds since the epoch. An index made before it gets a 'create' entry
    # ('current') per instance it holds, in the order and at the time they were stored, so that
    # reading the feed from its start finds everything the store holds.
    t = _types(dialect)
    text = t["text"]
    out = [f"CREATE TABLE IF NOT EXISTS changes (seq {t['int']} PRIMARY KEY, recorded {t['int']} NOT NULL, "
           f"action {text} NOT NULL, study_uid {text} NOT NULL, series_uid {text} NOT NULL, sop_uid {text} NOT NULL, "
           f"state {text} NOT NULL)",
           "CREATE INDEX IF NOT EXISTS changes_sop ON changes(sop_uid)",
           "CREATE INDEX IF NOT EXISTS changes_recorded ON changes(recorded, seq)"]
    if previous is not None:
        out.append("INSERT INTO changes(seq, recorded, action, study_uid, series_uid, sop_uid, state) "
                   "SELECT ROW_NUMBER() OVER (ORDER BY stored, id), CAST(stored * 1000000 AS BIGINT), 'create', "
                   "study_uid, series_uid, sop_uid, 'current' FROM instances")
    return out


def _summary_step(dialect: Dialect, previous: int | None) -> list[str]:
    # Rows stored before keep NULL: searches read their full metadata instead (store.summary).
    return ["ALTER TABLE instances ADD COLUMN summary TEXT"]


# Each version after 2: the statements that make an index of the previous version into this one,
# given the version the index had when it was opened (None: a new index).
def _worklist_step(dialect: Dialect, previous: int | None) -> list[str]:
    # New tables only: an older index has no workitems to move.
    return statements(worklist_ddl(dialect))


WORKLIST_VERSION = 8  # the schema version whose step adds the worklist
STEPS = {3: _metadata_version_step, 4: _text_index_step, 5: _latest_instance_step, 6: _change_feed_step,
         7: _summary_step, WORKLIST_VERSION: _worklist_step}


def step_statements(dialect: Dialect, version: int, previous: int | None) -> list[str]:
    """SQL of schema step ``version`` for an index that was at ``previous`` (None: new)."""
    return STEPS[version](dialect, previous)


def migrate_sqlite(conn, version: int) -> None:
    """Upgrade a SQLite index of schema ``version`` to the current one, inside the caller's transaction."""
    if version < 2:
        # Version 1 had no intents, garbage or servers tables (created by the DDL) and kept a job's
        # state only inside its JSON record.
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        for name, decl in (("state", "TEXT"), ("owner", "TEXT"), ("cancel", "INTEGER NOT NULL DEFAULT 0")):
            if name not in columns:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
        conn.execute("UPDATE jobs SET state = json_extract(definition, '$.state') WHERE state IS NULL")

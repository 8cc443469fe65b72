"""The workspace store: DICOM files under a folder, indexed in SQLite (WAL).

Layout of a store folder::

    index.sqlite                 the index (studies, series, instances, proxy jobs)
    files/{study}/{series}/{sop}.{token}.dcm   the instances, never modified in place
    tmp/                         uploads being received; emptied at start-up

Writes are atomic: a file is written under tmp/, fsynced, renamed into files/, and only then
indexed in one transaction. A file name carries a random token, so replacing an instance writes a
new file and the index switches to it at commit. At start-up, ``reconcile`` deletes whatever a
crash left behind (files no row points at, rows whose file vanished, tmp/), so every instance is
either fully visible or absent.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

from ..dicom.dicomjson import DicomJson, make_element, value_texts
from ..dicom.query import Match, Query, _canonical_number, normalize_temporal
from ..dicom.tags import (
    default_return_tags,
    keyword_of,
    level_of,
    level_tags_all,
    parse_tag,
    tag_hex,
    vr_of,
)
from ..fileio import create_private_file, make_private, open_private, private_folder, secure_store_folder
from .ingest import FrameLayout, InstanceRecord, MissingAttributeError, NotDicomError, ensure_part10, read_instance
from .schema import COLUMNS_BY_TAG, DDL, INDEXED_COLUMNS, SCHEMA_VERSION

DuplicatePolicy = Literal["replace", "reject", "keep"]

# Failure / warning reasons of PS3.18 10.5.3 (values from PS3.4 Annex B / PS3.7 C).
FAILURE_PROCESSING = 0x0110
FAILURE_DUPLICATE = 0x0111
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DATASET_DOES_NOT_MATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_STUDY_UID_MISMATCH = 0xC409  # as dcm4chee reports "Study Instance UID mismatch"
WARNING_COERCION = 0xB000

_T_STUDY, _T_SERIES, _T_INSTANCE = "study", "series", "instance"
_ALIASES = {_T_STUDY: "s", _T_SERIES: "se", _T_INSTANCE: "i"}
_TABLES = {_T_STUDY: "studies", _T_SERIES: "series", _T_INSTANCE: "instances"}
_UID_COLUMN = {_T_STUDY: "study_uid", _T_SERIES: "series_uid", _T_INSTANCE: "sop_uid"}
_LEVEL_RANK = {_T_STUDY: 0, _T_SERIES: 1, _T_INSTANCE: 2}

_COMPUTED_MULTI = {parse_tag("ModalitiesInStudy"): "modalities", parse_tag("SOPClassesInStudy"): "sop_classes"}
_COMPUTED_COUNTS = {
    parse_tag("NumberOfStudyRelatedSeries"): ("s", "num_series"),
    parse_tag("NumberOfStudyRelatedInstances"): ("s", "num_instances"),
    parse_tag("NumberOfSeriesRelatedInstances"): ("se", "num_instances"),
}
_RETRIEVE_URL = parse_tag("RetrieveURL")
_INSTANCE_AVAILABILITY = parse_tag("InstanceAvailability")
_STUDY_UID, _SERIES_UID, _SOP_UID = parse_tag("StudyInstanceUID"), parse_tag("SeriesInstanceUID"), parse_tag("SOPInstanceUID")


class StoreError(Exception):
    """Base of the store's errors."""


class NotFoundError(StoreError):
    """No study, series or instance with that UID (or not under that parent)."""


@dataclass
class StoreOutcome:
    """What happened to one instance offered to the store."""

    sop_uid: str | None
    sop_class_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    stored: bool = False
    replaced: bool = False
    failure_reason: int | None = None
    warning_reason: int | None = None
    message: str = ""
    source: str | None = None  # file name or part number, for reports


@dataclass
class InstanceRow:
    """Everything the read paths need about one stored instance, without opening its file."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: Path
    size: int
    metadata_text: str
    layout: FrameLayout
    number_of_frames: int
    stored: float


@dataclass
class SearchResult:
    items: list[DicomJson]
    truncated: bool  # more matches exist beyond limit


UrlBuilder = Callable[[str, "str | None", "str | None"], str]


@dataclass
class _Condition:
    sql: str
    params: list[Any] = field(default_factory=list)


class Store:
    """A DICOM store in a folder of the workspace. Thread-safe; one SQLite connection per thread."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        duplicates: DuplicatePolicy = "replace",
        pn_case_insensitive: bool = True,
        reconcile: bool = True,
    ):
        self.root = Path(root).expanduser().resolve()
        self.files_dir = self.root / "files"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "index.sqlite"
        if duplicates not in ("replace", "reject", "keep"):
            raise ValueError(f"duplicates policy must be replace, reject or keep, not {duplicates!r}")
        self.duplicates: DuplicatePolicy = duplicates
        self.pn_case_insensitive = pn_case_insensitive
        # Owner-only, whatever the umask (fileio.py): the folder, its folders, and the index (whose
        # -wal and -shm files SQLite creates with the index's mode).
        secure_store_folder(self.root)
        private_folder(self.files_dir)
        private_folder(self.tmp_dir)
        create_private_file(self.db_path)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        conn = self._conn()
        conn.executescript(DDL)
        with self._transaction() as c:
            row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"store {self.root} has index schema {row[0]}, this version reads {SCHEMA_VERSION}")
        self._hold_store_lock(reconcile)

    def _hold_store_lock(self, reconcile: bool) -> None:
        """Share the store with other processes; clean up after crashes only when alone.

        Every process with the store open holds a shared lock on ``store.lock`` for its lifetime
        (the Jupyter server, a notebook kernel, ``dicomweb-nb import``). Reconciling deletes files
        no index row points at, which in a busy store may be another process's write in progress,
        so it runs only if the lock can be taken exclusively: no one else has the store open.
        """
        self._lock_file = open_private(self.root / "store.lock", "a+b")
        try:
            import fcntl
        except ImportError:  # no flock (Windows): a single user is assumed
            if reconcile:
                self.reconcile()
            return
        alone = False
        if reconcile:
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                alone = False
        if alone:
            self.reconcile()
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_SH)

    # -- connections ----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.row_factory = sqlite3.Row
            state = _ConnState()
            conn.create_function("dw_value", 2, state.match_value, deterministic=True)
            conn.create_function("dw_multi", 2, state.match_multi, deterministic=True)
            conn.create_function("dw_json", 2, state.match_json, deterministic=True)
            self._local.conn = conn
            self._local.state = state
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's index connection and give up the store lock."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if not self._lock_file.closed:
            self._lock_file.close()

    # -- crash recovery ---------------------------------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        """Remove what an interrupted write left: temp files, unindexed files, rows without file."""
        removed = {"tmp": 0, "orphan_files": 0, "missing_files": 0}
        for entry in self.tmp_dir.iterdir():
            _remove(entry)
            removed["tmp"] += 1
        with self._write_lock:
            indexed = {row[0] for row in self._conn().execute("SELECT path FROM instances")}
            for dirpath, _dirs, files in os.walk(self.files_dir):  # store.lock lives beside files/, not in it
                for name in files:
                    rel = os.path.relpath(os.path.join(dirpath, name), self.files_dir)
                    if rel not in indexed:
                        os.unlink(os.path.join(dirpath, name))
                        removed["orphan_files"] += 1
            missing = [p for p in indexed if not (self.files_dir / p).exists()]
            if missing:
                with self._transaction() as conn:
                    affected = set()
                    for rel in missing:
                        row = conn.execute("SELECT study_uid, series_uid FROM instances WHERE path=?", (rel,)).fetchone()
                        conn.execute("DELETE FROM instances WHERE path=?", (rel,))
                        affected.add((row["study_uid"], row["series_uid"]))
                    self._refresh_aggregates(conn, affected)
                removed["missing_files"] = len(missing)
        _remove_empty_dirs(self.files_dir)
        return removed

    # -- writing ----------------------------------------------------------------------------------
    @contextmanager
    def temp_file(self) -> Iterator[tuple[Path, Any]]:
        """A new file under tmp/ to stream an upload into; removed if not stored."""
        path = self.tmp_dir / f"{time.time_ns()}-{secrets.token_hex(6)}.part"
        fp = open_private(path, "wb")
        try:
            yield path, fp
        finally:
            if not fp.closed:
                fp.close()

    def store_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        expected_study: str | None = None,
        move: bool = True,
        sources: Iterable[str] | None = None,
    ) -> list[StoreOutcome]:
        """Store files (temporary uploads when ``move``, else copies of them); one outcome per file.

        Each file is checked on its own: a bad one fails alone. The good ones are indexed in a
        single transaction.
        """
        paths = [Path(p) for p in paths]
        source_names = list(sources) if sources is not None else [p.name for p in paths]
        outcomes: list[StoreOutcome] = []
        accepted: list[tuple[Path, InstanceRecord, StoreOutcome, bool]] = []
        for path, source in zip(paths, source_names):
            try:
                part10 = ensure_part10(path, self.tmp_dir)
                rewritten = part10 != path
                if rewritten and move:
                    _remove(path)
                record = read_instance(part10)
            except NotDicomError as exc:
                outcomes.append(StoreOutcome(None, None, failure_reason=FAILURE_CANNOT_UNDERSTAND, message=str(exc), source=source))
                continue
            except MissingAttributeError as exc:
                if rewritten:
                    _remove(part10)
                outcomes.append(StoreOutcome(None, None, failure_reason=FAILURE_DATASET_DOES_NOT_MATCH, message=str(exc), source=source))
                continue
            outcome = StoreOutcome(record.sop_uid, record.sop_class_uid, record.study_uid, record.series_uid, source=source)
            outcomes.append(outcome)
            if expected_study is not None and record.study_uid != expected_study:
                outcome.failure_reason = FAILURE_STUDY_UID_MISMATCH
                outcome.message = f"StudyInstanceUID {record.study_uid} does not match the study {expected_study} of the request URL"
                if rewritten:
                    _remove(part10)
                continue
            if record.warnings:
                outcome.message = "; ".join(record.warnings)
            accepted.append((part10, record, outcome, move or rewritten))
        if accepted:
            self._index(accepted)
        return outcomes

    def _index(self, accepted: list[tuple[Path, InstanceRecord, StoreOutcome, bool]]) -> None:
        # A SOP Instance UID may occur twice in one batch: the later one wins, like two requests.
        to_delete: list[Path] = []
        placed: list[Path] = []
        touched_dirs: set[Path] = set()
        try:
            with self._transaction() as conn:
                affected: set[tuple[str, str]] = set()
                for path, record, outcome, move in accepted:
                    old = conn.execute("SELECT path, study_uid, series_uid FROM instances WHERE sop_uid=?", (record.sop_uid,)).fetchone()
                    if old is not None and self.duplicates == "reject":
                        outcome.failure_reason = FAILURE_DUPLICATE
                        outcome.message = f"SOP Instance {record.sop_uid} is already stored (duplicate policy: reject)"
                        continue
                    if old is not None and self.duplicates == "keep":
                        outcome.stored = True
                        outcome.message = "already stored; the stored copy was kept (duplicate policy: keep)"
                        continue
                    rel = Path(record.study_uid) / record.series_uid / f"{record.sop_uid}.{secrets.token_hex(4)}.dcm"
                    final = self.files_dir / rel
                    private_folder(final.parent)
                    if move:
                        make_private(path)  # whoever wrote it: stored files are owner-only
                        os.replace(path, final)
                    else:
                        _copy_durably(path, final)
                    placed.append(final)
                    touched_dirs.add(final.parent)
                    size = final.stat().st_size
                    self._upsert(conn, record, rel.as_posix(), size)
                    if old is not None:
                        outcome.replaced = True
                        to_delete.append(self.files_dir / old["path"])
                        affected.add((old["study_uid"], old["series_uid"]))
                    affected.add((record.study_uid, record.series_uid))
                    outcome.stored = True
                for directory in touched_dirs:
                    _fsync_dir(directory)
                self._refresh_aggregates(conn, affected)
        except BaseException:
            for final in placed:  # the index never saw them: take them back out
                _remove(final)
            for _path, _record, outcome, _move in accepted:
                outcome.stored = False
                outcome.replaced = False
            raise
        for old_file in to_delete:
            _remove(old_file)
        for path, _record, _outcome, move in accepted:
            if move:
                _remove(path)  # not placed (duplicate kept or rejected): the temporary copy goes

    def _upsert(self, conn: sqlite3.Connection, record: InstanceRecord, rel: str, size: int) -> None:
        now = time.time()
        meta = record.metadata
        study_cols = _column_values(meta, "study")
        study_json = json.dumps(record.level_json("study"), separators=(",", ":"), ensure_ascii=False)
        _upsert_row(conn, "studies", "study_uid", record.study_uid, {**study_cols, "study_json": study_json, "updated": now})
        series_cols = _column_values(meta, "series")
        series_json = json.dumps(record.level_json("series"), separators=(",", ":"), ensure_ascii=False)
        _upsert_row(conn, "series", "series_uid", record.series_uid,
                    {**series_cols, "study_uid": record.study_uid, "series_json": series_json, "updated": now})
        inst_cols = _column_values(meta, "instance")
        inst_cols.pop("sop_uid", None)
        number = inst_cols.get("instance_number")
        _upsert_row(conn, "instances", "sop_uid", record.sop_uid, {
            **inst_cols,
            "sop_class_uid": record.sop_class_uid,
            "series_uid": record.series_uid,
            "study_uid": record.study_uid,
            "instance_number_int": int(number) if number and number.lstrip("-").isdigit() else None,
            "number_of_frames": str(record.number_of_frames),
            "transfer_syntax": record.transfer_syntax,
            "path": rel,
            "size": size,
            "metadata": record.metadata_text,
            "frames": record.layout.to_json(),
            "stored": now,
        })

    def _refresh_aggregates(self, conn: sqlite3.Connection, affected: set[tuple[str, str]]) -> None:
        for series_uid in {s for _, s in affected}:
            count = conn.execute("SELECT COUNT(*) FROM instances WHERE series_uid=?", (series_uid,)).fetchone()[0]
            if count:
                conn.execute("UPDATE series SET num_instances=? WHERE series_uid=?", (count, series_uid))
            else:
                conn.execute("DELETE FROM series WHERE series_uid=?", (series_uid,))
        for study_uid in {s for s, _ in affected}:
            row = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT series_uid) FROM instances WHERE study_uid=?", (study_uid,)
            ).fetchone()
            if not row[0]:
                conn.execute("DELETE FROM studies WHERE study_uid=?", (study_uid,))
                continue
            modalities = sorted({r[0] for r in conn.execute("SELECT DISTINCT modality FROM series WHERE study_uid=? AND modality IS NOT NULL", (study_uid,))})
            classes = sorted({r[0] for r in conn.execute("SELECT DISTINCT sop_class_uid FROM instances WHERE study_uid=?", (study_uid,))})
            conn.execute(
                "UPDATE studies SET num_instances=?, num_series=?, modalities=?, sop_classes=? WHERE study_uid=?",
                (row[0], row[1], _multi(modalities), _multi(classes), study_uid),
            )

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> int:
        """Delete a study, series or instance; returns the number of instances removed."""
        rows = self.instances(study_uid, series_uid, sop_uid)
        with self._transaction() as conn:
            for row in rows:
                conn.execute("DELETE FROM instances WHERE sop_uid=?", (row.sop_uid,))
            self._refresh_aggregates(conn, {(r.study_uid, r.series_uid) for r in rows})
        for row in rows:
            _remove(row.path)
        _remove_empty_dirs(self.files_dir)
        return len(rows)

    # -- reading ----------------------------------------------------------------------------------
    def instances(self, study_uid: str | None, series_uid: str | None = None, sop_uid: str | None = None) -> list[InstanceRow]:
        """Instances of a study / series / one instance, in series then instance order.

        Raises NotFoundError when nothing matches, naming the level that does not exist.
        """
        where, params = [], []
        if study_uid is not None:
            where.append("i.study_uid=?")
            params.append(study_uid)
        if series_uid is not None:
            where.append("i.series_uid=?")
            params.append(series_uid)
        if sop_uid is not None:
            where.append("i.sop_uid=?")
            params.append(sop_uid)
        sql = (
            "SELECT i.*, se.series_number AS sn FROM instances i JOIN series se ON se.series_uid=i.series_uid"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY i.study_uid, CAST(se.series_number AS INTEGER), se.id, i.instance_number_int, i.id"
        )
        rows = self._conn().execute(sql, params).fetchall()
        if not rows:
            raise NotFoundError(self._not_found_message(study_uid, series_uid, sop_uid))
        return [self._instance_row(r) for r in rows]

    def _instance_row(self, r: sqlite3.Row) -> InstanceRow:
        return InstanceRow(
            study_uid=r["study_uid"], series_uid=r["series_uid"], sop_uid=r["sop_uid"],
            sop_class_uid=r["sop_class_uid"], transfer_syntax=r["transfer_syntax"],
            path=self.files_dir / r["path"], size=r["size"], metadata_text=r["metadata"],
            layout=FrameLayout.from_json(r["frames"]), number_of_frames=int(r["number_of_frames"] or 0),
            stored=r["stored"],
        )

    def _not_found_message(self, study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> str:
        conn = self._conn()
        if study_uid and not conn.execute("SELECT 1 FROM studies WHERE study_uid=?", (study_uid,)).fetchone():
            return f"study {study_uid} is not in this store"
        if series_uid:
            row = conn.execute("SELECT study_uid FROM series WHERE series_uid=?", (series_uid,)).fetchone()
            if row is None:
                return f"series {series_uid} is not in this store"
            if study_uid and row[0] != study_uid:
                return f"series {series_uid} belongs to study {row[0]}, not to study {study_uid}"
        if sop_uid:
            row = conn.execute("SELECT study_uid, series_uid FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
            if row is None:
                return f"instance {sop_uid} is not in this store"
            return f"instance {sop_uid} belongs to study {row[0]} / series {row[1]}, not to the one in the URL"
        return "no matching instances in this store"

    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {
            "studies": conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0],
            "series": conn.execute("SELECT COUNT(*) FROM series").fetchone()[0],
            "instances": conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0],
        }

    def last_modified(self, study_uid: str, series_uid: str | None = None) -> float:
        """When the newest instance of a study or series was stored (for ETag / Last-Modified)."""
        sql = "SELECT MAX(stored), COUNT(*) FROM instances WHERE study_uid=?"
        params: list[Any] = [study_uid]
        if series_uid:
            sql += " AND series_uid=?"
            params.append(series_uid)
        row = self._conn().execute(sql, params).fetchone()
        return float(row[0] or 0.0)

    # -- QIDO-RS ----------------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
        retrieve_url: UrlBuilder | None = None,
        max_results: int | None = None,
    ) -> SearchResult:
        """Run a QIDO-RS query; results are DICOM JSON objects in a stable order.

        ``study_uid`` / ``series_uid`` scope the search as the URL does (``/studies/{uid}/series``).
        ``max_results`` caps answers when the query has no ``limit`` of its own.
        """
        level = query.level
        conn = self._conn()
        state: _ConnState = self._local.state
        state.reset(self.pn_case_insensitive, query.fuzzy)
        conditions: list[_Condition] = []
        if study_uid is not None:
            conditions.append(_Condition("s.study_uid = ?", [study_uid]))
        if series_uid is not None:
            conditions.append(_Condition("se.series_uid = ?", [series_uid]))
        for match in query.matches:
            if match.kind != "universal":
                conditions.append(self._condition(match, level, state))
        if level == _T_STUDY:
            select = "SELECT s.* FROM studies s"
            order = " ORDER BY s.id"
        elif level == _T_SERIES:
            select = ("SELECT se.*, s.study_json, s.modalities, s.sop_classes, s.num_series, s.num_instances AS study_num_instances "
                      "FROM series se JOIN studies s ON s.study_uid = se.study_uid")
            order = " ORDER BY s.id, CAST(se.series_number AS INTEGER), se.id"
        else:
            select = ("SELECT i.sop_uid, i.series_uid, i.study_uid, i.metadata, se.series_json, se.num_instances AS series_num_instances, "
                      "s.study_json, s.modalities, s.sop_classes, s.num_series, s.num_instances AS study_num_instances "
                      "FROM instances i JOIN series se ON se.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid")
            order = " ORDER BY s.id, CAST(se.series_number AS INTEGER), se.id, i.instance_number_int, i.id"
        sql = select
        params: list[Any] = []
        if conditions:
            sql += " WHERE " + " AND ".join(f"({c.sql})" for c in conditions)
            for c in conditions:
                params.extend(c.params)
        sql += order
        limit = query.limit if query.limit is not None else max_results
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit + 1, query.offset]
        elif query.offset:
            sql += " LIMIT -1 OFFSET ?"
            params.append(query.offset)
        rows = conn.execute(sql, params).fetchall()
        truncated = limit is not None and len(rows) > limit
        if truncated:
            rows = rows[:limit]
        return SearchResult([self._result(row, query, study_uid, series_uid, retrieve_url) for row in rows], truncated)

    def _condition(self, match: Match, level: str, state: "_ConnState") -> _Condition:
        tag = match.path[0]
        rank = _LEVEL_RANK[level]
        if len(match.path) == 1 and tag in COLUMNS_BY_TAG:
            col = COLUMNS_BY_TAG[tag]
            expr = _column_condition(f"{{a}}.{col.column}", match, state)
            return _scoped(expr, col.level, rank)
        if len(match.path) == 1 and tag in _COMPUTED_MULTI:
            token = state.add(match)
            return _Condition(f"dw_multi({token}, s.{_COMPUTED_MULTI[tag]})")
        if len(match.path) == 1 and tag in _COMPUTED_COUNTS:
            alias, column = _COMPUTED_COUNTS[tag]
            if alias == "se" and rank < 1:
                return _scoped(_Condition(f"dw_value({state.add(match)}, CAST({{a}}.{column} AS TEXT))"), _T_SERIES, rank)
            return _Condition(f"dw_value({state.add(match)}, CAST({alias}.{column} AS TEXT))")
        attr_level = level_of(tag)
        json_column = {"study": "study_json", "series": "series_json", "instance": "metadata"}[attr_level]
        return _scoped(_Condition(f"dw_json({state.add(match)}, {{a}}.{json_column})"), attr_level, rank)

    def _result(self, row: sqlite3.Row, query: Query, study_uid: str | None, series_uid: str | None,
                retrieve_url: UrlBuilder | None) -> DicomJson:
        level = query.level
        keys = row.keys()
        study = json.loads(row["study_json"])
        out: DicomJson = {}
        scoped = (level == _T_SERIES and study_uid is not None) or (level == _T_INSTANCE and series_uid is not None)
        wanted = default_return_tags(level, with_parent_levels=not scoped)
        wanted += [t for t in query.returned_tags if t not in wanted]
        sources: list[DicomJson] = []
        instance_meta: DicomJson | None = None
        if level == _T_INSTANCE:
            instance_meta = json.loads(row["metadata"])
            sources.append(instance_meta)
        if level in (_T_SERIES, _T_INSTANCE):
            sources.append(json.loads(row["series_json"]))
        sources.append(study)
        if query.include_all:
            allowed = level_tags_all(level)
            for src in sources:
                for key, elem in src.items():
                    if key not in out and (allowed is None or int(key, 16) in allowed):
                        kept = _without_bulk(elem)
                        if kept is not None:
                            out[key] = kept
        fallback: DicomJson | None = None
        for tag in wanted:
            key = tag_hex(tag)
            if key in out:
                continue
            elem = self._computed(tag, row, level, keys)
            if elem is None:
                elem = next((src[key] for src in sources if key in src), None)
            if elem is None and tag not in _COMPUTED_KEYS and level != _T_INSTANCE:
                if fallback is None:
                    fallback = self._representative_metadata(row, level)
                elem = fallback.get(key)
            if elem is None:
                if tag == _RETRIEVE_URL:
                    continue
                elem = make_element(vr_of(tag), None)
            elem = _without_bulk(elem)
            if elem is None:
                continue
            out[key] = elem
        if retrieve_url is not None:
            if level == _T_STUDY:
                url = retrieve_url(row["study_uid"], None, None)
            elif level == _T_SERIES:
                url = retrieve_url(row["study_uid"], row["series_uid"], None)
            else:
                url = retrieve_url(row["study_uid"], row["series_uid"], row["sop_uid"])
            out[tag_hex(_RETRIEVE_URL)] = {"vr": "UR", "Value": [url]}
        out[tag_hex(_STUDY_UID)] = {"vr": "UI", "Value": [row["study_uid"]]}
        if level in (_T_SERIES, _T_INSTANCE):
            out[tag_hex(_SERIES_UID)] = {"vr": "UI", "Value": [row["series_uid"]]}
        if level == _T_INSTANCE:
            out[tag_hex(_SOP_UID)] = {"vr": "UI", "Value": [row["sop_uid"]]}
        return dict(sorted(out.items()))

    def _computed(self, tag: int, row: sqlite3.Row, level: str, keys: list[str]) -> dict[str, Any] | None:
        if tag == _INSTANCE_AVAILABILITY:
            return {"vr": "CS", "Value": ["ONLINE"]}
        if tag in _COMPUTED_MULTI:
            column = _COMPUTED_MULTI[tag]
            vals = [v for v in (row[column] or "").split("\\") if v]
            return make_element("CS" if column == "modalities" else "UI", vals)
        if tag in _COMPUTED_COUNTS:
            alias, column = _COMPUTED_COUNTS[tag]
            if alias == "s":
                name = column if level == _T_STUDY else {"num_series": "num_series", "num_instances": "study_num_instances"}[column]
            else:
                if level == _T_STUDY:
                    return None
                name = "num_instances" if level == _T_SERIES else "series_num_instances"
            return {"vr": "IS", "Value": [int(row[name])]} if name in keys else None
        return None

    def _representative_metadata(self, row: sqlite3.Row, level: str) -> DicomJson:
        """An instance's full metadata, for includefield attributes of another level."""
        if level == _T_STUDY:
            r = self._conn().execute("SELECT metadata FROM instances WHERE study_uid=? ORDER BY id DESC LIMIT 1", (row["study_uid"],)).fetchone()
        else:
            r = self._conn().execute("SELECT metadata FROM instances WHERE series_uid=? ORDER BY id DESC LIMIT 1", (row["series_uid"],)).fetchone()
        return json.loads(r[0]) if r else {}

    # -- jobs of the DICOMweb client proxy (server/jobs.py) ----------------------------------------
    def load_table(self, table: Literal["jobs"]) -> dict[str, dict[str, Any]]:
        """Every saved job record by ID. (Remote servers live in servers.json, not in the index.)"""
        if table != "jobs":
            raise ValueError(f"unknown table {table!r}")
        return {r[0]: json.loads(r[1]) for r in self._conn().execute("SELECT id, definition FROM jobs")}

    def save_row(self, table: Literal["jobs"], key: str, definition: dict[str, Any] | None) -> None:
        """Save a job record (None deletes it)."""
        if table != "jobs":
            raise ValueError(f"unknown table {table!r}")
        with self._transaction() as conn:
            if definition is None:
                conn.execute("DELETE FROM jobs WHERE id=?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO jobs(id, definition, updated) VALUES (?, ?, ?)",
                             (key, json.dumps(definition), time.time()))


_COMPUTED_KEYS = frozenset(_COMPUTED_MULTI) | frozenset(_COMPUTED_COUNTS) | {_RETRIEVE_URL, _INSTANCE_AVAILABILITY}


class _ConnState:
    """Per-connection registry of the Match objects SQL functions refer to by number."""

    def __init__(self) -> None:
        self.matches: list[Match] = []
        self.ci = True
        self.fuzzy = False
        self._json_cache: dict[str, DicomJson] = {}

    def reset(self, ci: bool, fuzzy: bool) -> None:
        self.matches = []
        self.ci = ci
        self.fuzzy = fuzzy
        self._json_cache = {}

    def add(self, match: Match) -> int:
        self.matches.append(match)
        return len(self.matches) - 1

    def match_value(self, token: int, value: str | None) -> bool:
        if value is None:
            return False
        return self.matches[token].matches_value(value, ci=self.ci, fuzzy=self.fuzzy)

    def match_multi(self, token: int, value: str | None) -> bool:
        match = self.matches[token]
        return any(match.matches_value(v, ci=self.ci, fuzzy=self.fuzzy) for v in (value or "").split("\\") if v)

    def match_json(self, token: int, text: str | None) -> bool:
        if not text:
            return False
        obj = self._json_cache.get(text)
        if obj is None:
            obj = json.loads(text)
            if len(self._json_cache) < 4096:
                self._json_cache[text] = obj
        return self.matches[token].matches(obj, pn_case_insensitive=self.ci, fuzzy=self.fuzzy)


def _column_condition(column: str, match: Match, state: _ConnState) -> _Condition:
    """SQL for an indexed column; PN goes through Python so its group/case rules stay in one place."""
    if match.vr == "PN":
        return _Condition(f"dw_value({state.add(match)}, {column})")
    if match.kind == "range":
        parts, params = [f"{column} IS NOT NULL"], []
        if match.low is not None:
            parts.append(f"{column} >= ?")
            params.append(match.low)
        if match.high is not None:
            parts.append(f"{column} <= ?")
            params.append(match.high)
        return _Condition(" AND ".join(parts), params)
    if match.kind == "wildcard":
        return _Condition(f"{column} GLOB ?", [match.values[0].replace("[", "[[]")])
    if len(match.values) == 1:
        return _Condition(f"{column} = ?", list(match.values))
    return _Condition(f"{column} IN ({','.join('?' * len(match.values))})", list(match.values))


def _scoped(cond: _Condition, attr_level: str, query_rank: int) -> _Condition:
    """Place a condition on a table of the query, or in an EXISTS over a lower level."""
    attr_rank = _LEVEL_RANK[attr_level]
    if attr_rank <= query_rank:
        return _Condition(cond.sql.replace("{a}", _ALIASES[attr_level]), cond.params)
    # A lower-level attribute in a higher-level query: some child must match.
    if attr_level == _T_SERIES:
        sub = f"EXISTS (SELECT 1 FROM series se2 WHERE se2.study_uid = s.study_uid AND {cond.sql.replace('{a}', 'se2')})"
    else:
        parent = "i2.study_uid = s.study_uid" if query_rank == 0 else "i2.series_uid = se.series_uid"
        sub = f"EXISTS (SELECT 1 FROM instances i2 WHERE {parent} AND {cond.sql.replace('{a}', 'i2')})"
    return _Condition(sub, cond.params)


def _column_values(meta: DicomJson, level: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for col in INDEXED_COLUMNS:
        if col.level != level or col.column in ("study_uid", "series_uid"):
            continue
        out[col.column] = _matchable(meta.get(tag_hex(col.tag)))
    return out


def _matchable(elem: dict[str, Any] | None) -> str | None:
    """The first value of an element in the form QIDO matching compares."""
    texts = value_texts(elem)
    if not texts or texts[0] == "":
        return None
    vr = elem.get("vr") if elem else None
    text = texts[0]
    if vr in ("DA", "TM", "DT"):
        return normalize_temporal(vr, text) or text
    if vr in ("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD"):
        try:
            return _canonical_number(text)
        except ValueError:
            return text
    return text.strip()


def _without_bulk(elem: dict[str, Any]) -> dict[str, Any] | None:
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
            kept = _without_bulk(sub)
            if kept is not None:
                kept_item[key] = kept
            changed = changed or kept is not sub
        items.append(kept_item)
    return {**elem, "Value": items} if changed else elem


def _multi(values: list[str]) -> str | None:
    return "\\" + "\\".join(values) + "\\" if values else None


def _upsert_row(conn: sqlite3.Connection, table: str, key: str, uid: str, values: dict[str, Any]) -> None:
    columns = list(values)
    assignments = ", ".join(f"{c}=excluded.{c}" for c in columns)
    conn.execute(
        f"INSERT INTO {table} ({key}, {', '.join(columns)}) VALUES (?, {', '.join('?' * len(columns))}) "
        f"ON CONFLICT({key}) DO UPDATE SET {assignments}",
        [uid, *values.values()],
    )


def _copy_durably(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(".copying")
    with open(src, "rb") as fin, open_private(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _remove_empty_dirs(root: Path) -> None:
    # Bottom-up; os.walk lists a folder's subfolders before they are removed, so ask rmdir itself
    # (it refuses a folder that is not empty).
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        if dirpath != str(root) and not files:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def describe_failure(reason: int) -> str:
    return {
        FAILURE_PROCESSING: "processing failure",
        FAILURE_DUPLICATE: "duplicate SOP instance",
        FAILURE_OUT_OF_RESOURCES: "out of resources",
        FAILURE_DATASET_DOES_NOT_MATCH: "data set does not match SOP class (missing attributes)",
        FAILURE_CANNOT_UNDERSTAND: "cannot understand (not DICOM)",
        FAILURE_STUDY_UID_MISMATCH: "Study Instance UID mismatch",
    }.get(reason, f"failure {reason:#06x}")


__all__ = [
    "Store", "StoreError", "NotFoundError", "StoreOutcome", "InstanceRow", "SearchResult",
    "FAILURE_CANNOT_UNDERSTAND", "FAILURE_DATASET_DOES_NOT_MATCH", "FAILURE_STUDY_UID_MISMATCH",
    "FAILURE_DUPLICATE", "FAILURE_PROCESSING", "FAILURE_OUT_OF_RESOURCES", "WARNING_COERCION", "describe_failure",
    "stow_response",
    "keyword_of",
]


def stow_response(outcomes: list[StoreOutcome], url: UrlBuilder, study: str | None) -> tuple[DicomJson, int, list[str]]:
    """The STOW-RS response dataset (PS3.18 10.5.3), its HTTP status, and readable failure lines.

    200: all stored; 202: some failed or carry warnings; 409: none stored.
    """
    referenced, failed, messages = [], [], []
    for outcome in outcomes:
        if outcome.stored and outcome.sop_uid:
            item: dict[str, Any] = {
                "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]},
                "00081155": {"vr": "UI", "Value": [outcome.sop_uid]},
                "00081190": {"vr": "UR", "Value": [url(outcome.study_uid or "", outcome.series_uid, outcome.sop_uid)]},
            }
            if outcome.warning_reason is not None:
                item["00081196"] = {"vr": "US", "Value": [outcome.warning_reason]}
            referenced.append(item)
        else:
            failed.append({
                "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]} if outcome.sop_class_uid else {"vr": "UI"},
                "00081155": {"vr": "UI", "Value": [outcome.sop_uid]} if outcome.sop_uid else {"vr": "UI"},
                "00081197": {"vr": "US", "Value": [outcome.failure_reason or FAILURE_PROCESSING]},
            })
            reason = outcome.message or describe_failure(outcome.failure_reason or FAILURE_PROCESSING)
            messages.append(f"{outcome.source}: {reason}")
    body: DicomJson = {}
    studies = {o.study_uid for o in outcomes if o.stored and o.study_uid}
    if study or len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [url(study or next(iter(studies)), None, None)]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    warnings = any(o.warning_reason is not None for o in outcomes)
    status = 200 if not failed and not warnings else (202 if referenced else 409)
    return body, status, messages

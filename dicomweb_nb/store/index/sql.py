"""What SQLite and PostgreSQL share: the writes, the reads, the QIDO query's shape.

SQL here uses ``?`` placeholders and no literal ``%`` or ``?`` (PostgreSQL's executor swaps
``?`` for ``%s``). Each engine supplies connections and transactions, how a ``Match`` becomes a
condition, and how concurrent writers are ordered (SQLite: one writer at a time; PostgreSQL:
advisory locks on the UIDs a transaction touches).
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...dicom.dicomjson import DicomJson, value_texts
from ...dicom.query import Match, Query, _canonical_number, normalize_temporal
from ...dicom.tags import level_of, parse_tag, tag_hex
from ..ingest import InstanceRecord
from ..schema import COLUMNS_BY_TAG, INDEXED_COLUMNS, METADATA_VERSION, SCHEMA_VERSION, step_statements
from ..summary import summary_suffices
from . import DuplicatePolicy, Entry, Index, Row, changes, matchdoc
from .workitems import SqlWorkitems


class Execute(Protocol):
    """How the shared code talks to a connection: ``ex(sql, params)`` runs one statement and returns
    its cursor; ``ex.many(sql, rows)`` runs one statement for each row of parameters (PostgreSQL:
    pipelined, one round trip for them all)."""

    def __call__(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


IN_CHUNK = 5000  # values of one IN list (SQLite allows 32766 variables in a statement)

T_STUDY, T_SERIES, T_INSTANCE = "study", "series", "instance"
ALIASES = {T_STUDY: "s", T_SERIES: "se", T_INSTANCE: "i"}
LEVEL_RANK = {T_STUDY: 0, T_SERIES: 1, T_INSTANCE: 2}
JSON_COLUMN = {T_STUDY: "study_json", T_SERIES: "series_json", T_INSTANCE: "metadata", "workitem": "dataset"}

COMPUTED_MULTI = {parse_tag("ModalitiesInStudy"): "modalities", parse_tag("SOPClassesInStudy"): "sop_classes"}
COMPUTED_COUNTS = {
    parse_tag("NumberOfStudyRelatedSeries"): ("s", "num_series"),
    parse_tag("NumberOfStudyRelatedInstances"): ("s", "num_instances"),
    parse_tag("NumberOfSeriesRelatedInstances"): ("se", "num_instances"),
}
JOB_ACTIVE = ("Pending", "Running")
# Columns with a B-tree index of their own (schema.ddl) on both engines.
BTREE_COLUMNS = frozenset({"study_uid", "series_uid", "sop_uid", "patient_id", "study_date", "accession_number", "modality"})


@dataclass
class Condition:
    sql: str
    params: list[Any] = field(default_factory=list)


class SqlIndex(SqlWorkitems, Index):
    """The engine-independent part of an SQL index (its worklist part: ``SqlWorkitems``)."""

    nulls_first = ""  # PostgreSQL sorts NULL last unless told; SQLite first
    series_number_order = "CAST(se.series_number AS INTEGER)"

    # -- engine hooks ------------------------------------------------------------------------
    @abstractmethod
    def _read(self) -> AbstractContextManager[Execute]: ...

    @abstractmethod
    def _transact(self, work: Callable[[Execute], Any]) -> Any:
        """Run ``work(ex)`` in one write transaction (retried by engines that can deadlock)."""

    def _lock(self, ex: Execute, names: Iterable[str]) -> None:
        """Order concurrent writers touching the same UIDs (no-op where writers are serial)."""

    def _lock_changes(self, ex: Execute) -> None:
        """Held from appending change-feed entries to the commit, so sequences follow commit order
        (no-op where writers are serial). Taken last in a transaction: no one waits for another lock
        while holding it."""

    def _record_changes(self, ex: Execute, *, created: Sequence[changes.Uids] = (),
                        deleted: Sequence[changes.Uids] = ()) -> None:
        """Append the change-feed entries of this transaction (``changes.plan``) and update the
        states of the earlier entries of their instances."""
        if not created and not deleted:
            return
        self._lock_changes(ex)
        last = ex("SELECT seq, recorded FROM changes ORDER BY seq DESC LIMIT 1").fetchone()
        batch = changes.plan((int(last[0]), int(last[1])) if last is not None else None, created=created, deleted=deleted)
        for state, sops in ((changes.REPLACED, batch.replaced), (changes.DELETED, batch.deleted)):
            if sops:
                self._rows_in(ex, "UPDATE changes SET state=? WHERE {in}", "sop_uid", sops, [state])
        ex.many("INSERT INTO changes(seq, recorded, action, study_uid, series_uid, sop_uid, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
                batch.rows)

    @abstractmethod
    def _match_condition(self, match: Match, column: str | None, attr_level: str, ci: bool, fuzzy: bool) -> Condition:
        """A condition on a column (``{a}.name``) or on the level's JSON, ``{a}`` the table alias."""

    @abstractmethod
    def _multi_condition(self, column: str, match: Match, ci: bool, fuzzy: bool) -> Condition: ...

    @abstractmethod
    def _count_condition(self, column: str, match: Match, ci: bool, fuzzy: bool) -> Condition: ...

    def _extra_columns(self, level: str, record: InstanceRecord, values: dict[str, Any]) -> dict[str, Any]:
        """Columns an engine adds to a row: the match document of study and series rows (schema 4;
        PostgreSQL adds its own)."""
        if level in (T_STUDY, T_SERIES):
            return {"match": self._match_document(matchdoc.build(record.level_json(level), None))}
        return {}

    def _match_document(self, doc: dict[str, Any]) -> Any:
        """A match document as the engine's ``match`` column takes it."""
        return compact_json(doc)

    def _run_steps(self, ex: Execute, previous: int | None) -> None:
        """The schema steps after version ``previous`` (None: a new index), in order."""
        for version in range(3, SCHEMA_VERSION + 1):
            if previous is None or version > previous:
                for sql in step_statements(self.dialect, version, previous):  # type: ignore[arg-type]
                    ex(sql)
                self._after_step(ex, version, previous)

    def _after_step(self, ex: Execute, version: int, previous: int | None) -> None:
        """What an engine does after the statements of a schema step."""

    def _limit(self, limit: int | None, offset: int) -> tuple[str, list[Any]]:
        if limit is not None:
            return " LIMIT ? OFFSET ?", [limit, offset]
        if offset:
            return " LIMIT -1 OFFSET ?", [offset]
        return "", []

    def _in(self, column: str, values: Sequence[Any]) -> Condition:
        """``column`` equal to one of ``values`` (PostgreSQL overrides: one array parameter)."""
        return Condition(f"{column} IN ({', '.join('?' * len(values))})", list(values))

    def _rows_in(self, ex: Execute, sql: str, column: str, values: Iterable[Any], params: Sequence[Any] = ()) -> list[Any]:
        """Rows of ``sql`` whose ``{in}`` is ``column`` among ``values`` (in chunks: one statement each)."""
        values = list(values)
        rows: list[Any] = []
        for start in range(0, len(values), IN_CHUNK):
            cond = self._in(column, values[start:start + IN_CHUNK])
            cursor = ex(sql.replace("{in}", cond.sql), [*params, *cond.params])
            if cursor.description is not None:
                rows += cursor.fetchall()
        return rows

    # -- writing -----------------------------------------------------------------------------
    def add_intents(self, keys: Sequence[str], session: str) -> None:
        now = time.time()
        rows = ", ".join("(?, ?, ?)" for _ in keys)  # one statement: one round trip to a database server
        self._transact(lambda ex: ex(f"INSERT INTO intents(key, session, created) VALUES {rows}",
                                     [v for k in keys for v in (k, session, now)]))

    def drop_intents(self, keys: Sequence[str], session: str) -> list[str]:
        def work(ex: Execute) -> list[str]:
            dropped = {r[0] for r in self._rows_in(
                ex, "DELETE FROM intents WHERE session=? AND {in} RETURNING key", "key", keys, [session])}
            return [k for k in keys if k in dropped]
        return self._transact(work)

    def commit(self, entries: Sequence[Entry], policy: DuplicatePolicy, session: str, grace: float) -> list[str]:
        """One transaction for the batch, its round trips to a database server independent of the
        batch's size: the decisions are taken in Python from two reads (which intents are still
        this session's, which instances exist), then the rows go in with one statement per table
        (``ex.many``) and the study/series aggregates are recomputed set-wise."""
        def work(ex: Execute) -> list[str]:
            now = time.time()
            names = (
                {e.record.sop_uid for e in entries}
                | {e.record.series_uid for e in entries}
                | {e.record.study_uid for e in entries}
            )
            self._lock(ex, names)
            mine = {r[0] for r in self._rows_in(ex, "DELETE FROM intents WHERE session=? AND {in} RETURNING key", "key",
                                                [e.key for e in entries], [session])}
            # Where each instance is stored now, updated as the batch goes (a SOP Instance twice in
            # one batch: the later replaces the earlier, as two batches would).
            current: dict[str, tuple[str, str, str]] = {
                r[0]: (r[1], r[2], r[3]) for r in self._rows_in(
                    ex, "SELECT sop_uid, path, study_uid, series_uid FROM instances WHERE {in}", "sop_uid",
                    sorted({e.record.sop_uid for e in entries}))}
            affected: set[tuple[str, str]] = set()
            garbage: list[tuple[str, float]] = []
            written: dict[str, Entry] = {}  # by SOP Instance UID: first appearance orders, the last entry wins
            created: list[changes.Uids] = []  # change-feed entries, in the batch's order
            for entry in entries:
                record = entry.record
                if entry.key not in mine:
                    entry.decision = "lost"  # a sweep took this process for dead and owns the blob now
                    continue
                old = current.get(record.sop_uid)
                if old is not None and policy in ("reject", "keep"):
                    entry.decision = "duplicate" if policy == "reject" else "kept"
                    garbage.append((entry.key, now))
                    continue
                current[record.sop_uid] = (entry.key, record.study_uid, record.series_uid)
                written[record.sop_uid] = entry
                if old is not None:
                    entry.decision = "replaced"
                    garbage.append((old[0], now + grace))
                    affected.add((old[1], old[2]))
                else:
                    entry.decision = "stored"
                affected.add((record.study_uid, record.series_uid))
                created.append((record.study_uid, record.series_uid, record.sop_uid))
            self._upsert(ex, list(written.values()), now, unchanged=self._level_json_of(ex, written.values()))
            if garbage:
                ex.many("INSERT INTO garbage(key, due) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", garbage)
            self._refresh_aggregates(ex, affected)
            self._record_changes(ex, created=created)
            return [key for key, due in garbage if due <= now]

        try:
            return self._transact(work)
        except BaseException:
            for entry in entries:
                entry.decision = ""
            raise

    def _level_json_of(self, ex: Execute, entries: Iterable[Entry]) -> dict[tuple[str, str], tuple[str, str]]:
        """What is stored of the studies and series of ``entries``, in one query (in the write
        transaction, after its locks): ``(level, uid) -> (JSON, study UID)``."""
        study_uids = sorted({e.record.study_uid for e in entries})
        series_uids = sorted({e.record.series_uid for e in entries})
        if not study_uids or len(study_uids) + len(series_uids) > IN_CHUNK:
            return {}  # a batch this large is rare: its rows are written without the check
        studies, series = self._in("study_uid", study_uids), self._in("series_uid", series_uids)
        rows = ex(f"SELECT 0, study_uid, study_json, study_uid FROM studies WHERE {studies.sql} "
                  f"UNION ALL SELECT 1, series_uid, series_json, study_uid FROM series WHERE {series.sql}",
                  [*studies.params, *series.params])
        return {(T_SERIES if r[0] else T_STUDY, r[1]): (r[2], r[3]) for r in rows.fetchall()}

    def _upsert(self, ex: Execute, entries: Sequence[Entry], now: float, stored: dict[str, float] | None = None,
                unchanged: dict[tuple[str, str], tuple[str, str]] | None = None) -> None:
        """Insert or update the study, series and instance rows of ``entries`` (one statement per
        table; a study or series of several entries takes the values of the last). ``stored``: the
        stored time to keep for some instances (metadata refreshed in place), by SOP Instance UID.
        ``unchanged``: what is stored of the studies and series (``_level_json_of``); a study or series
        row whose attributes (and parent study) are those already stored is left as it is. (Rewriting it costs
        more than the instance's own row: its match document is rebuilt, and its text index entry,
        SQLite's FTS trigram table or PostgreSQL's GIN index, is replaced. Every instance of a
        study used to rewrite the study's row; its ``updated`` time is now when its attributes were
        last written.)"""
        unchanged = unchanged or {}
        last_of_study = {e.record.study_uid: e.record for e in entries}  # in order of first appearance
        last_of_series = {e.record.series_uid: e.record for e in entries}
        studies: dict[str, dict[str, Any]] = {}
        for uid, record in last_of_study.items():
            study_json = compact_json(record.level_json(T_STUDY))
            if unchanged.get((T_STUDY, uid)) == (study_json, uid):
                continue
            study_cols = column_values(record.metadata, T_STUDY)
            studies[uid] = {**study_cols, "study_json": study_json, "updated": now,
                            **self._extra_columns(T_STUDY, record, study_cols)}
        series: dict[str, dict[str, Any]] = {}
        for uid, record in last_of_series.items():
            series_json = compact_json(record.level_json(T_SERIES))
            if unchanged.get((T_SERIES, uid)) == (series_json, record.study_uid):
                continue
            series_cols = column_values(record.metadata, T_SERIES)
            series[uid] = {**series_cols, "study_uid": record.study_uid, "series_json": series_json,
                           "updated": now, **self._extra_columns(T_SERIES, record, series_cols)}
        instances: dict[str, dict[str, Any]] = {}
        for entry in entries:
            record = entry.record
            meta = record.metadata
            inst_cols = column_values(meta, T_INSTANCE)
            inst_cols.pop("sop_uid", None)
            number = inst_cols.get("instance_number")
            instances[record.sop_uid] = {
                **inst_cols,
                "sop_class_uid": record.sop_class_uid,
                "series_uid": record.series_uid,
                "study_uid": record.study_uid,
                "instance_number_int": int(number) if number and number.lstrip("-").isdigit() else None,
                "number_of_frames": str(record.number_of_frames),
                "transfer_syntax": record.transfer_syntax,
                "path": entry.key,
                "size": entry.size,
                "metadata": record.metadata_text,
                "summary": record.summary_text or None,
                "frames": record.layout.to_json(),
                "stored": (stored or {}).get(record.sop_uid, now),
                "metadata_version": METADATA_VERSION,
                **self._extra_columns(T_INSTANCE, record, inst_cols),
            }
        upsert_rows(ex, "studies", "study_uid", studies)
        upsert_rows(ex, "series", "series_uid", series)
        upsert_rows(ex, "instances", "sop_uid", instances)

    def _refresh_aggregates(self, ex: Execute, affected: set[tuple[str, str]]) -> None:
        """Recompute the counts (and ModalitiesInStudy, SOPClassesInStudy) of the studies and series
        in ``affected``; those left without instances go."""
        series_uids = sorted({s for _, s in affected})
        study_uids = sorted({s for s, _ in affected})
        if not series_uids and not study_uids:
            return
        counts = {r[0]: r[1] for r in self._rows_in(
            ex, "SELECT series_uid, COUNT(*) FROM instances WHERE {in} GROUP BY series_uid", "series_uid", series_uids)}
        if counts:
            ex.many("UPDATE series SET num_instances=? WHERE series_uid=?", [(counts[s], s) for s in series_uids if s in counts])
        empty = [s for s in series_uids if s not in counts]
        if empty:
            self._rows_in(ex, "DELETE FROM series WHERE {in}", "series_uid", empty)
        totals = {r[0]: (r[1], r[2]) for r in self._rows_in(
            ex, "SELECT study_uid, COUNT(*), COUNT(DISTINCT series_uid) FROM instances WHERE {in} GROUP BY study_uid",
            "study_uid", study_uids)}
        modalities: dict[str, set[str]] = {s: set() for s in totals}
        for r in self._rows_in(ex, "SELECT DISTINCT study_uid, modality FROM series WHERE modality IS NOT NULL AND {in}",
                               "study_uid", list(totals)):
            modalities[r[0]].add(r[1])
        classes: dict[str, set[str]] = {s: set() for s in totals}
        for r in self._rows_in(ex, "SELECT DISTINCT study_uid, sop_class_uid FROM instances WHERE {in}",
                               "study_uid", list(totals)):
            classes[r[0]].add(r[1])
        if totals:
            ex.many("UPDATE studies SET num_instances=?, num_series=?, modalities=?, sop_classes=? WHERE study_uid=?",
                    [(totals[s][0], totals[s][1], _multi(sorted(modalities[s])), _multi(sorted(classes[s])), s)
                     for s in study_uids if s in totals])
        empty = [s for s in study_uids if s not in totals]
        if empty:
            self._rows_in(ex, "DELETE FROM studies WHERE {in}", "study_uid", empty)

    def delete(self, study_uid: str, series_uid: str | None, sop_uid: str | None, grace: float) -> tuple[int, list[str]]:
        def work(ex: Execute) -> tuple[int, list[str]]:
            now = time.time()
            rows = self._select_instances(ex, study_uid, series_uid, sop_uid)
            self._lock(ex, {r["sop_uid"] for r in rows} | {r["series_uid"] for r in rows} | {study_uid})
            rows = self._select_instances(ex, study_uid, series_uid, sop_uid)  # as of the lock
            self._rows_in(ex, "DELETE FROM instances WHERE {in}", "sop_uid", [r["sop_uid"] for r in rows])
            ex.many("INSERT INTO garbage(key, due) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                    [(r["path"], now + grace) for r in rows])
            self._refresh_aggregates(ex, {(r["study_uid"], r["series_uid"]) for r in rows})
            self._record_changes(ex, deleted=changes.uids_of(rows))
            return len(rows), [r["path"] for r in rows] if grace <= 0 else []
        return self._transact(work)

    # -- copying a store (store.migrate) -------------------------------------------------------------
    def study_sizes(self) -> list[tuple[str, int]]:
        with self._read() as ex:
            return [(r[0], r[1]) for r in ex("SELECT study_uid, num_instances FROM studies ORDER BY id")]

    def export(self, study_uids: Sequence[str]) -> list[Row]:
        sql = ("SELECT i.sop_uid, i.series_uid, i.study_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, "
               "i.metadata, i.frames, i.number_of_frames, i.metadata_version, s.id AS study_row, se.id AS series_row, "
               "i.id AS instance_row FROM instances i JOIN series se ON se.series_uid = i.series_uid "
               "JOIN studies s ON s.study_uid = i.study_uid WHERE {in}")
        with self._read() as ex:
            rows = self._rows_in(ex, sql, "i.study_uid", study_uids)
        return sorted(rows, key=lambda r: (r["study_row"], r["series_row"], r["instance_row"]))

    def sizes(self, sop_uids: Sequence[str]) -> dict[str, int]:
        with self._read() as ex:
            return {r[0]: r[1] for r in self._rows_in(ex, "SELECT sop_uid, size FROM instances WHERE {in}", "sop_uid", sop_uids)}

    # -- metadata written by older versions ----------------------------------------------------------
    def metadata_floor(self) -> int:
        with self._read() as ex:
            row = ex("SELECT value FROM meta WHERE key='metadata'").fetchone()
        return int(row[0]) if row else METADATA_VERSION

    def set_metadata_floor(self, version: int) -> None:
        self._transact(lambda ex: ex("INSERT INTO meta(key, value) VALUES ('metadata', ?) "
                                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(version),)))

    def stale_instances(self, after_id: int, limit: int) -> list[Row]:
        with self._read() as ex:
            return ex("SELECT id, sop_uid, path, size, stored FROM instances WHERE id > ? AND metadata_version < ? "
                      "ORDER BY id LIMIT ?", (after_id, METADATA_VERSION, limit)).fetchall()

    def refresh_metadata(self, entries: Sequence[Entry], stored: dict[str, float]) -> int:
        def work(ex: Execute) -> int:
            self._lock(ex, {e.record.sop_uid for e in entries} | {e.record.series_uid for e in entries}
                       | {e.record.study_uid for e in entries})
            current = {r[0]: r[1] for r in self._rows_in(ex, "SELECT sop_uid, path FROM instances WHERE {in}", "sop_uid",
                                                         [e.record.sop_uid for e in entries])}
            unchanged = [e for e in entries if current.get(e.record.sop_uid) == e.key]  # not replaced meanwhile
            self._upsert(ex, unchanged, time.time(), stored)
            return len(unchanged)
        return self._transact(work) if entries else 0

    @abstractmethod
    def known_sessions(self) -> list[str]:
        """Sessions recorded as started (a killed process's stays until found dead)."""

    def dead_intents(self) -> list[tuple[str, str]]:
        with self._read() as ex:
            rows = [(r[0], r[1]) for r in ex("SELECT key, session FROM intents")]
        for session in self.known_sessions():
            self.session_alive(session)  # forgets the session of a process found dead
        alive: dict[str, bool] = {}
        out = []
        for key, session in rows:
            if session not in alive:
                alive[session] = self.session_alive(session)
            if not alive[session]:
                out.append((key, session))
        return out

    def claim_intent(self, key: str, session: str) -> bool:
        return self._transact(
            lambda ex: ex("DELETE FROM intents WHERE key=? AND session=? RETURNING key", (key, session)).fetchone() is not None
        )

    def due_garbage(self, now: float) -> list[str]:
        with self._read() as ex:
            return [r[0] for r in ex("SELECT key FROM garbage WHERE due <= ? ORDER BY due", (now,))]

    def forget_garbage(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self._transact(lambda ex: self._rows_in(ex, "DELETE FROM garbage WHERE {in}", "key", keys))

    def intent_keys(self) -> set[str]:
        with self._read() as ex:
            return {r[0] for r in ex("SELECT key FROM intents")}

    def indexed_keys(self) -> set[str]:
        with self._read() as ex:
            return {r[0] for r in ex("SELECT path FROM instances")}

    def drop_rows_of_keys(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        if not keys:
            return 0

        def work(ex: Execute) -> int:
            rows = self._rows_in(ex, "DELETE FROM instances WHERE {in} RETURNING study_uid, series_uid, sop_uid", "path", keys)
            self._refresh_aggregates(ex, {(r[0], r[1]) for r in rows})
            self._record_changes(ex, deleted=[(r[0], r[1], r[2]) for r in rows])
            return len(rows)
        return self._transact(work)

    def exists(self, sop_uid: str) -> bool:
        with self._read() as ex:
            return ex("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone() is not None

    # -- reading -----------------------------------------------------------------------------
    def _select_instances(self, ex: Execute, study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> list[Row]:
        where, params = [], []
        for column, value in (("i.study_uid", study_uid), ("i.series_uid", series_uid), ("i.sop_uid", sop_uid)):
            if value is not None:
                where.append(f"{column}=?")
                params.append(value)
        sql = (
            "SELECT i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, i.metadata, "
            "i.frames, i.number_of_frames, i.stored FROM instances i JOIN series se ON se.series_uid=i.series_uid"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY i.study_uid, {self.series_number_order}{self.nulls_first}, se.id,"
              f" i.instance_number_int{self.nulls_first}, i.id"
        )
        return ex(sql, params).fetchall()

    def instances(self, study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> list[Row]:
        with self._read() as ex:
            return self._select_instances(ex, study_uid, series_uid, sop_uid)

    def not_found_message(self, study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> str:
        with self._read() as ex:
            if study_uid and not ex("SELECT 1 FROM studies WHERE study_uid=?", (study_uid,)).fetchone():
                return f"study {study_uid} is not in this store"
            if series_uid:
                row = ex("SELECT study_uid FROM series WHERE series_uid=?", (series_uid,)).fetchone()
                if row is None:
                    return f"series {series_uid} is not in this store"
                if study_uid and row[0] != study_uid:
                    return f"series {series_uid} belongs to study {row[0]}, not to study {study_uid}"
            if sop_uid:
                row = ex("SELECT study_uid, series_uid FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
                if row is None:
                    return f"instance {sop_uid} is not in this store"
                return f"instance {sop_uid} belongs to study {row[0]} / series {row[1]}, not to the one in the URL"
        return "no matching instances in this store"

    def counts(self) -> dict[str, int]:
        with self._read() as ex:
            return {table: ex(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("studies", "series", "instances")}

    def usage(self) -> dict[str, Any]:
        """What the store holds (studies, series, instances, bytes of the instances) and its jobs by state."""
        with self._read() as ex:
            out: dict[str, Any] = {table: ex(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                                   for table in ("studies", "series", "instances")}
            out["bytes"] = int(ex("SELECT COALESCE(SUM(size), 0) FROM instances").fetchone()[0])
            out["jobs"] = {r[0] or "": int(r[1]) for r in ex("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
        return out

    # -- the change feed (index.changes) ----------------------------------------------------------
    def changes(self, *, start: int | None = None, end: int | None = None, offset: int = 0, limit: int = 100,
                after: int | None = None, include_metadata: bool = True) -> list[Row]:
        with self._read() as ex:
            return changes.select(ex, start=start, end=end, offset=offset, limit=limit, after=after,
                                  include_metadata=include_metadata)

    def latest_change(self, *, include_metadata: bool = True) -> Row | None:
        with self._read() as ex:
            return changes.latest(ex, include_metadata=include_metadata)

    def search(self, query: Query, *, study_uid: str | None, series_uid: str | None, limit: int | None,
               pn_case_insensitive: bool) -> tuple[list[Row], bool]:
        sql, params = self.search_statement(query, study_uid=study_uid, series_uid=series_uid, limit=limit,
                                            pn_case_insensitive=pn_case_insensitive)
        with self._read() as ex:
            rows = ex(sql, params).fetchall()
        truncated = limit is not None and len(rows) > limit
        return (rows[:limit] if truncated else rows), truncated

    def search_statement(self, query: Query, *, study_uid: str | None = None, series_uid: str | None = None,
                         limit: int | None = None, pn_case_insensitive: bool = True) -> tuple[str, list[Any]]:
        """The SQL (``?`` placeholders) and parameters of a search, one row more than ``limit``."""
        level = query.level
        conditions: list[Condition] = []
        if study_uid is not None:
            conditions.append(Condition("s.study_uid = ?", [study_uid]))
        if series_uid is not None:
            conditions.append(Condition("se.series_uid = ?", [series_uid]))
        for match in query.matches:
            if match.kind != "universal":
                conditions.append(self._condition(match, level, pn_case_insensitive, query.fuzzy))
        series_order = f"{self.series_number_order}{self.nulls_first}, se.id"
        if level == T_STUDY:
            sql, order = "SELECT s.* FROM studies s", " ORDER BY s.id"
        elif level == T_SERIES:
            sql = ("SELECT se.*, s.study_json, s.modalities, s.sop_classes, s.num_series, s.num_instances AS study_num_instances "
                   "FROM series se JOIN studies s ON s.study_uid = se.study_uid")
            order = f" ORDER BY s.id, {series_order}"
        else:
            # The instance's summary when the answer needs nothing else (store.summary): a tenth of the JSON to parse.
            summarized = summary_suffices(query, series_scoped=series_uid is not None)
            metadata = "COALESCE(i.summary, i.metadata) AS metadata" if summarized else "i.metadata"
            sql = (
                f"SELECT i.sop_uid, i.series_uid, i.study_uid, {metadata}, se.series_json, "
                "se.num_instances AS series_num_instances, "
                "s.study_json, s.modalities, s.sop_classes, s.num_series, s.num_instances AS study_num_instances "
                "FROM instances i JOIN series se ON se.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid"
            )
            order = f" ORDER BY s.id, {series_order}, i.instance_number_int{self.nulls_first}, i.id"
        params: list[Any] = []
        if conditions:
            sql += " WHERE " + " AND ".join(f"({c.sql})" for c in conditions)
            for c in conditions:
                params.extend(c.params)
        sql += order
        tail, tail_params = self._limit(limit + 1 if limit is not None else None, query.offset)
        sql += tail
        params += tail_params
        return sql, params

    def _condition(self, match: Match, level: str, ci: bool, fuzzy: bool) -> Condition:
        tag = match.path[0]
        rank = LEVEL_RANK[level]
        if len(match.path) == 1 and tag in COLUMNS_BY_TAG:
            col = COLUMNS_BY_TAG[tag]
            cond = self._match_condition(match, f"{{a}}.{col.column}", col.level, ci, fuzzy)
            return scoped(self._prefiltered(cond, match, col.level, col.column, ci, fuzzy), col.level, rank)
        if len(match.path) == 1 and tag in COMPUTED_MULTI:
            return self._multi_condition(f"s.{COMPUTED_MULTI[tag]}", match, ci, fuzzy)
        if len(match.path) == 1 and tag in COMPUTED_COUNTS:
            alias, column = COMPUTED_COUNTS[tag]
            if alias == "se" and rank < 1:
                return scoped(self._count_condition(f"{{a}}.{column}", match, ci, fuzzy), T_SERIES, rank)
            return self._count_condition(f"{alias}.{column}", match, ci, fuzzy)
        attr_level = level_of(tag)
        cond = self._match_condition(match, None, attr_level, ci, fuzzy)
        return scoped(self._prefiltered(cond, match, attr_level, None, ci, fuzzy), attr_level, rank)

    def _prefiltered(self, cond: Condition, match: Match, attr_level: str, column: str | None, ci: bool,
                     fuzzy: bool) -> Condition:
        """``cond`` behind the engine's text index condition, where there is one (schema 4)."""
        if attr_level not in (T_STUDY, T_SERIES) or fuzzy:
            return cond
        if column in BTREE_COLUMNS and not (match.kind == "wildcard" and match.values[0][:1] in ("*", "?")):
            return cond  # the column's own index answers values and prefixes
        pre = self._text_condition(match, attr_level, column, ci)
        if pre is None:
            return cond
        return Condition(f"{pre.sql} AND ({cond.sql})", pre.params + cond.params)

    def _text_condition(self, match: Match, attr_level: str, column: str | None, ci: bool) -> Condition | None:
        """A condition through the text index of ``attr_level``'s table (``{a}`` its alias) that
        every row satisfying ``match`` satisfies; None when the engine has none worth using."""
        return None

    def representative_metadata(self, level: str, uids: Sequence[str]) -> dict[str, str]:
        column = "study_uid" if level == T_STUDY else "series_uid"
        with self._read() as ex:
            rows = self._rows_in(ex, f"SELECT {column}, metadata FROM instances WHERE id IN "
                                     f"(SELECT MAX(id) FROM instances WHERE {{in}} GROUP BY {column})", column, uids)
        return {r[0]: r[1] for r in rows}

    # -- jobs and servers --------------------------------------------------------------------
    def load_jobs(self) -> dict[str, dict[str, Any]]:
        with self._read() as ex:
            rows = ex("SELECT id, definition, state, owner FROM jobs").fetchall()
        out = {}
        for row in rows:
            record = json.loads(row[1])
            if row[2] and row[2] != record.get("state") and record.get("state") in JOB_ACTIVE:
                record["state"] = row[2]  # claimed or ended by another process since the record was written
            out[row[0]] = record
        return out

    def save_job(self, job_id: str, record: dict[str, Any] | None) -> None:
        def work(ex: Execute) -> None:
            if record is None:
                ex("DELETE FROM jobs WHERE id=?", (job_id,))
                return
            owner = (record.get("owner") or {}).get("session")
            ex("INSERT INTO jobs(id, definition, updated, state, owner) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT(id) DO UPDATE SET definition=excluded.definition, updated=excluded.updated, "
               "state=excluded.state, owner=excluded.owner",
               (job_id, json.dumps(record), time.time(), record.get("state"), owner))
        self._transact(work)

    def claim_job(self, job_id: str, session: str, *, from_states: Sequence[str], to_state: str,
                  record: dict[str, Any] | None = None) -> bool:
        placeholders = ", ".join("?" for _ in from_states)
        definition, values = ("", []) if record is None else (", definition=?", [json.dumps(record)])
        return self._transact(lambda ex: ex(
            f"UPDATE jobs SET state=?, owner=?, updated=?{definition} WHERE id=? AND state IN ({placeholders}) RETURNING id",
            (to_state, session, time.time(), *values, job_id, *from_states)).fetchone() is not None)

    def request_job_cancel(self, job_id: str) -> bool:
        return self._transact(lambda ex: ex("UPDATE jobs SET cancel=1 WHERE id=? RETURNING id", (job_id,)).fetchone() is not None)

    def job_cancel_requested(self, job_id: str) -> bool:
        with self._read() as ex:
            row = ex("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    def load_servers(self) -> dict[str, dict[str, Any]]:
        with self._read() as ex:
            return {r[0]: json.loads(r[1]) for r in ex("SELECT name, definition FROM servers ORDER BY name")}

    def shared_value(self, key: str, make: Callable[[], str]) -> str:
        def work(ex: Execute) -> str:
            ex("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, make()))
            return ex("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]
        return self._transact(work)

    def save_server(self, name: str, definition: dict[str, Any] | None) -> None:
        def work(ex: Execute) -> None:
            if definition is None:
                ex("DELETE FROM servers WHERE name=?", (name,))
            else:
                ex("INSERT INTO servers(name, definition, updated) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                   "SET definition=excluded.definition, updated=excluded.updated", (name, json.dumps(definition), time.time()))
        self._transact(work)


def range_condition(column: str, match: Match) -> Condition:
    """A date/time range on a column of normalised values (both engines compare them bytewise)."""
    parts, params = [f"{column} IS NOT NULL"], []
    if match.low is not None:
        parts.append(f"{column} >= ?")
        params.append(match.low)
    if match.high is not None:
        parts.append(f"{column} <= ?")
        params.append(match.high)
    return Condition(" AND ".join(parts), params)


def scoped(cond: Condition, attr_level: str, query_rank: int) -> Condition:
    """Place a condition on a table of the query, or in an EXISTS over a lower level."""
    attr_rank = LEVEL_RANK[attr_level]
    if attr_rank <= query_rank:
        return Condition(cond.sql.replace("{a}", ALIASES[attr_level]), cond.params)
    # A lower-level attribute in a higher-level query: some child must match.
    if attr_level == T_SERIES:
        sub = f"EXISTS (SELECT 1 FROM series se2 WHERE se2.study_uid = s.study_uid AND {cond.sql.replace('{a}', 'se2')})"
    else:
        parent = "i2.study_uid = s.study_uid" if query_rank == 0 else "i2.series_uid = se.series_uid"
        sub = f"EXISTS (SELECT 1 FROM instances i2 WHERE {parent} AND {cond.sql.replace('{a}', 'i2')})"
    return Condition(sub, cond.params)


_LEVEL_COLUMNS = {level: [(c.column, tag_hex(c.tag)) for c in INDEXED_COLUMNS
                            if c.level == level and c.column not in ("study_uid", "series_uid")]
                  for level in (T_STUDY, T_SERIES, T_INSTANCE)}


def column_values(meta: DicomJson, level: str) -> dict[str, str | None]:
    return {column: matchable(meta.get(key)) for column, key in _LEVEL_COLUMNS[level]}


def matchable(elem: dict[str, Any] | None) -> str | None:
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


def sqlite_integer(text: str | None) -> int | None:
    """An integer column value as SQLite's ``CAST(text AS INTEGER)`` gives it (leading digits, else 0)."""
    if text is None:
        return None
    digits = ""
    stripped = text.strip()
    for i, ch in enumerate(stripped):
        if ch.isdigit() or (i == 0 and ch in "+-"):
            digits += ch
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0


def _multi(values: list[str]) -> str | None:
    return "\\" + "\\".join(values) + "\\" if values else None


def upsert_rows(ex: Execute, table: str, key: str, rows: dict[str, dict[str, Any]]) -> None:
    """Insert or update rows of ``table`` by their unique ``key`` (every row with the same columns), in
    the order given: one statement, executed for each row."""
    if not rows:
        return
    columns = list(next(iter(rows.values())))
    assignments = ", ".join(f"{c}=excluded.{c}" for c in columns)
    ex.many(f"INSERT INTO {table} ({key}, {', '.join(columns)}) VALUES (?, {', '.join('?' * len(columns))}) "
            f"ON CONFLICT({key}) DO UPDATE SET {assignments}", [[uid, *values.values()] for uid, values in rows.items()])


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

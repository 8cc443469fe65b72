"""The team index: PostgreSQL through psycopg 3 and a connection pool.

Several processes (on several machines) write at once. A write transaction first takes
transaction-level advisory locks on every UID it touches (SOP instance, series, study), in one
sorted order: writers of the same study wait for each other, so the duplicate policy and the
study/series counts stay right under concurrent STOW, while writers of different studies run in
parallel; a rare deadlock (an instance moved between studies) is retried. QIDO matching is SQL
over indexed columns and JSONB match documents (``matchdoc``).

A process is alive while it holds a session-level advisory lock on its own connection: a killed
process's connection closes, its lock goes, and another process may then sweep its write intents.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from ...dicom.query import Match
from ..blobs import redact_text, redact_url
from ..ingest import InstanceRecord
from ..schema import SCHEMA_VERSION, ddl, statements
from . import SchemaTooNew, matchdoc
from .sql import T_INSTANCE, T_SERIES, Condition, Execute, SqlIndex, compact_json, range_condition, sqlite_integer

log = logging.getLogger("dicomweb_nb.store.postgres")

_SCHEMA_LOCK = 0x64776E62  # advisory lock serialising schema creation ("dwnb")
_CHANGES_LOCK = 0x64776366  # advisory lock held from appending change-feed entries to the commit ("dwcf")
_RETRIED = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class _Row(tuple):
    """A result row readable by position and by column name (as sqlite3.Row)."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    names = {c.name: i for i, c in enumerate(cursor.description or [])}

    def make(values: Sequence[Any]) -> _Row:
        row = _Row(values)
        row._names = names
        return row
    return make


def _check_connections(conn: psycopg.Connection, url: str, pool_size: int) -> None:
    """Refuse a pool that can never fit in the server's connections; warn when it may not fit now.

    Each process uses its pool plus one connection holding its session, so N processes on one
    database need N x (pool + 1) of ``max_connections`` (less the superuser's reserve)."""
    row = conn.execute("SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int, "
                       "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')").fetchone()
    assert row is not None
    allowed, reserved, in_use = row
    usable = allowed - reserved
    if pool_size + 1 > usable:
        raise ValueError(f"a pool of {pool_size} connections (plus one for the session) cannot fit in the {usable} connections "
                         f"{url} accepts (max_connections {allowed}): lower the pool size (c.DicomWeb.database_pool_size)")
    free = usable - in_use + 1  # this probe's connection is about to close
    if pool_size + 1 > free:
        log.warning("%s: %d of its %d connections are in use; a pool of %d (plus one for the session) may be refused "
                    "connections: lower c.DicomWeb.database_pool_size or raise max_connections", url, in_use, usable, pool_size)


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class _Executor:
    """``Execute`` on a psycopg connection: ``?`` placeholders, NUL-free text, ``many`` pipelined."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def __call__(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), [_text(p) for p in params])

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cursor:  # executemany sends every row in one pipeline
                cursor.executemany(sql.replace("?", "%s"), [[_text(p) for p in row] for row in rows])


def _executor(conn: psycopg.Connection) -> Execute:
    return _Executor(conn)


def _text(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL: stored values and query values alike carry U+FFFD instead,
    so they still compare as they would with the NUL (DICOM values rarely have one; queries may)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def _configure(conn: psycopg.Connection) -> None:
    conn.row_factory = _row_factory
    # JSONB comes back as its text: rows carry match documents the read paths never look at.
    conn.adapters.register_loader("jsonb", TextLoader)


class PostgresIndex(SqlIndex):
    dialect = "postgresql"
    nulls_first = " NULLS FIRST"
    series_number_order = "se.series_number_int"

    def __init__(self, url: str, *, pool_size: int = 8):
        self.conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.url = redact_url(self.conninfo)
        if pool_size < 1:
            raise ValueError(f"the connection pool of {self.url} needs at least 1 connection, not {pool_size}")
        pool: ConnectionPool | None = None
        try:
            # A wrong address fails now, not after the pool's retries.
            with psycopg.connect(self.conninfo, connect_timeout=15) as probe:
                _check_connections(probe, self.url, pool_size)
            pool = ConnectionPool(self.conninfo, min_size=1, max_size=pool_size, kwargs={"autocommit": True},
                                  configure=_configure, open=False, name="dicomweb-nb")
            pool.open(wait=True, timeout=30)
        except psycopg.Error as exc:
            raise ValueError(f"cannot connect to {self.url}: {redact_text(str(exc))}") from None
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - psycopg_pool.PoolTimeout and its kin: the pool is closed, the error told
            if pool is not None:
                pool.close()
            raise ValueError(f"cannot connect to {self.url}: {redact_text(str(exc)) or type(exc).__name__}") from None
        self.pool = pool
        self._session: str | None = None
        self._session_conn: psycopg.Connection | None = None
        self._session_key = 0
        self._session_lock = threading.Lock()
        self.text_search = False  # trigram indexes present (schema 4 with pg_trgm)
        try:
            self._open_schema()
        except BaseException:
            self.pool.close()
            raise

    def _open_schema(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            ex = _executor(conn)
            ex("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            version = None
            if ex("SELECT to_regclass('meta')").fetchone()[0] is not None:
                row = ex("SELECT value FROM meta WHERE key='schema'").fetchone()
                version = int(row[0]) if row else None
            if version is not None and version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the index {self.url} has schema {version}, made by a newer dicomweb-nb; this version reads "
                    f"schema {SCHEMA_VERSION} and older. Upgrade dicomweb-nb (pip install -U dicomweb-nb) to open it")
            if version != SCHEMA_VERSION:
                if version is None:
                    for statement in statements(ddl("postgresql")):  # version 2, the first PostgreSQL schema
                        conn.execute(statement)
                self._run_steps(ex, version)
                ex("INSERT INTO meta(key, value) VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                   (str(SCHEMA_VERSION),))
            elif ex("SELECT to_regclass('studies_text')").fetchone()[0] is None:
                self._create_text_indexes(ex)  # pg_trgm was missing when the index was made: try again
            self.text_search = ex("SELECT to_regclass('studies_text')").fetchone()[0] is not None

    def _after_step(self, ex: Execute, version: int, previous: int | None) -> None:
        if version == 4:
            self._create_text_indexes(ex)

    def _create_text_indexes(self, ex: Execute) -> None:
        """Trigram indexes over the study and series match documents (schema 4), so that wildcards
        and any-attribute matches are index-driven. pg_trgm ships with PostgreSQL (contrib) and is a
        trusted extension (PostgreSQL 13+): a database owner may create it. Without it, matching
        works as before, scanning; the store tries again each time it opens."""
        try:
            with ex.conn.transaction():  # type: ignore[attr-defined]  # a savepoint: a failure leaves the rest
                ex("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                for table in ("studies", "series"):
                    ex(f"CREATE INDEX IF NOT EXISTS {table}_text ON {table} USING gin ((match::text) gin_trgm_ops)")
        except psycopg.Error as exc:
            log.warning("%s: no trigram indexes (%s): wildcard and any-attribute matching will scan rows. "
                        "Run CREATE EXTENSION pg_trgm as a superuser (Debian: package postgresql-contrib) "
                        "and open the store again", self.url, redact_text(str(exc)).splitlines()[0])

    # -- connections ---------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Execute]:
        with self.pool.connection() as conn:
            yield _executor(conn)

    def _transact(self, work: Callable[[Execute], Any]) -> Any:
        for attempt in range(6):
            try:
                with self.pool.connection() as conn, conn.transaction():
                    return work(_executor(conn))
            except _RETRIED:
                if attempt == 5:
                    raise
                time.sleep(0.02 * (attempt + 1) + secrets.randbelow(20) / 1000)
        raise AssertionError("unreachable")

    def _lock(self, ex: Execute, names: Iterable[str]) -> None:
        keys = sorted({_lock_key(n) for n in names})
        if keys:
            ex("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(?::bigint[]) AS t(k)", (keys,))

    def _lock_changes(self, ex: Execute) -> None:
        ex("SELECT pg_advisory_xact_lock(?)", (_CHANGES_LOCK,))

    def close(self) -> None:
        with self._session_lock:
            if self._session_conn is not None:
                try:
                    self._session_conn.execute("DELETE FROM sessions WHERE id=%s", (self._session,))
                    self._session_conn.close()
                except psycopg.Error:
                    pass
                self._session_conn = None
        self.pool.close()

    # -- sessions ------------------------------------------------------------------------------
    def start_session(self, session: str) -> None:
        self._session = session
        self._session_key = secrets.randbits(63)
        self._connect_session()

    def _connect_session(self) -> None:
        with self._session_lock:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            conn.execute("SELECT pg_advisory_lock(%s)", (self._session_key,))
            conn.execute(
                "INSERT INTO sessions(id, lock_key, host, pid, started) VALUES (%s, %s, %s, %s, %s) ON CONFLICT(id) DO NOTHING",
                (self._session, self._session_key, socket.gethostname(), os.getpid(), time.time()),
            )
            self._session_conn = conn

    def _keep_session(self) -> None:
        """Reconnect the session if its connection broke (a server restart): until then this
        process looks dead to the others, and the intents they sweep fail its writes safely."""
        if self._session is None:
            return
        conn = self._session_conn
        try:
            if conn is not None:
                conn.execute("SELECT 1")
                return
        except psycopg.Error:
            log.warning("the session connection to %s broke; reconnecting", self.url)
            if conn is not None:
                conn.close()
            self._session_conn = None
        try:
            self._connect_session()
        except psycopg.Error as exc:
            log.warning("cannot reconnect the session to %s (%s); trying again at the next sweep",
                        self.url, redact_text(str(exc)).splitlines()[0])

    def session_alive(self, session: str) -> bool:
        if session == self._session:
            return True
        with self.pool.connection() as conn:
            ex = _executor(conn)
            row = ex("SELECT lock_key FROM sessions WHERE id=?", (session,)).fetchone()
            if row is None:
                return False
            if not ex("SELECT pg_try_advisory_lock(?)", (row[0],)).fetchone()[0]:
                return True
            ex("SELECT pg_advisory_unlock(?)", (row[0],))
            ex("DELETE FROM sessions WHERE id=?", (session,))
            return False

    def dead_intents(self) -> list[tuple[str, str]]:
        self._keep_session()  # called by every sweep: the heartbeat of this process's session
        return super().dead_intents()

    def known_sessions(self) -> list[str]:
        with self._read() as ex:
            return [r[0] for r in ex("SELECT id FROM sessions")]

    # -- engine specifics ----------------------------------------------------------------------
    def _limit(self, limit: int | None, offset: int) -> tuple[str, list[Any]]:
        if limit is not None:
            return " LIMIT ? OFFSET ?", [limit, offset]
        return (" OFFSET ?", [offset]) if offset else ("", [])

    def _in(self, column: str, values: Sequence[Any]) -> Condition:
        return Condition(f"{column} = ANY(?)", [list(values)])

    def _extra_columns(self, level: str, record: InstanceRecord, values: dict[str, Any]) -> dict[str, Any]:
        if level == T_SERIES:
            number = sqlite_integer(values.get("series_number"))
            return {**super()._extra_columns(level, record, values), "series_number_int": number}
        if level == T_INSTANCE:
            return {"match": _jsonb(matchdoc.build(record.metadata, T_INSTANCE))}
        return super()._extra_columns(level, record, values)

    def _match_document(self, doc: dict[str, Any]) -> Any:
        return _jsonb(doc)

    def _workitem_document(self, dataset: dict[str, Any]) -> dict[str, Any]:
        return {"match": _jsonb(matchdoc.build(dataset, None))}

    def _match_condition(self, match: Match, column: str | None, attr_level: str, ci: bool, fuzzy: bool) -> Condition:
        if column is not None and match.vr != "PN":
            if match.kind == "range":
                return range_condition(column, match)
            return Condition(*matchdoc.column_condition(column, match))
        return Condition(*matchdoc.document_condition("{a}.match", match, pn_case_insensitive=ci, fuzzy=fuzzy))

    def _text_condition(self, match: Match, attr_level: str, column: str | None, ci: bool) -> Condition | None:
        # Values of other attributes are found through the match document's GIN index already.
        wildcard = any("*" in v or "?" in v for v in match.values)
        if not self.text_search or not (wildcard or (column is not None and match.vr != "PN")):
            return None
        patterns = matchdoc.text_patterns(match, ci=ci)
        if patterns is None:
            return None
        return Condition("(" + " OR ".join("{a}.match::text LIKE ?" for _ in patterns) + ")", patterns)

    def _multi_condition(self, column: str, match: Match, ci: bool, fuzzy: bool) -> Condition:
        return Condition(*matchdoc.multi_condition(column, match))

    def _count_condition(self, column: str, match: Match, ci: bool, fuzzy: bool) -> Condition:
        return Condition(f"CAST({column} AS TEXT) = ANY(?)", [list(match.values)])


def _jsonb(doc: dict[str, Any]) -> Jsonb:
    return Jsonb(doc, dumps=compact_json)

"""The embedded index: one SQLite file (WAL), one connection per thread, one writer at a time.

QIDO matching calls ``dicom.query``'s ``Match`` methods per row through SQL functions, so the
rules have one definition. Processes sharing the file are told apart by sessions: each holds an
exclusive flock(2) on its own file in ``{db}-sessions/`` while it lives, so a lock that can be
taken means its owner is gone (killed or crashed) and its write intents may be swept.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...dicom.dicomjson import DicomJson
from ...dicom.query import Match, Query
from ...fileio import StoreModes
from ..schema import SCHEMA_VERSION, ddl, migrate_sqlite, sqlite_text_tables
from . import Row, SchemaTooNew, matchdoc
from .sql import JSON_COLUMN, T_STUDY, Condition, Execute, SqlIndex, range_condition

try:
    import fcntl
except ImportError:  # Windows: no flock; a single process per store is assumed
    fcntl = None  # type: ignore[assignment]


class SqliteIndex(SqlIndex):
    dialect = "sqlite"

    def __init__(self, path: Path, *, modes: StoreModes | None = None):
        self.path = Path(path).expanduser().resolve()
        self.url = "sqlite:///" + str(self.path)
        self.modes = modes or StoreModes()
        self.modes.make_dir(self.path.parent)
        self.sessions_dir = self.path.parent / (self.path.name + "-sessions")
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._session_file: Any = None
        self._session_path: Path | None = None
        self._connections: list[sqlite3.Connection] = []
        # Wildcard and any-attribute matches at the study and series levels go through the FTS5
        # trigram tables first (false: every row is matched in Python, the reference for tests).
        self.text_search = True
        self._open_schema()

    def _open_schema(self) -> None:
        # Created with the store's mode before SQLite opens it: its -wal and -shm files take the same mode.
        self.modes.create_file(self.path)
        conn = self._conn()
        version = None
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the index {self.path} has schema {version}, made by a newer dicomweb-nb; this version reads "
                f"schema {SCHEMA_VERSION} and older. Upgrade dicomweb-nb (pip install -U dicomweb-nb) to open it")
        if version is None or version < 2:
            conn.executescript(ddl("sqlite"))  # the schema as of version 2; later ones are steps

        def work(ex: Execute) -> None:
            row = ex("SELECT value FROM meta WHERE key='schema'").fetchone()
            previous = int(row[0]) if row else None
            if previous is not None and previous >= SCHEMA_VERSION:
                return
            if previous is not None and previous < 2:
                migrate_sqlite(self._conn(), previous)
            self._run_steps(ex, previous)
            ex("INSERT INTO meta(key, value) VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
               (str(SCHEMA_VERSION),))
        self._transact(work)

    def _after_step(self, ex: Execute, version: int, previous: int | None) -> None:
        if version == 4:
            # The match documents of the rows already there, then the text tables built from them.
            for table, json_column in (("studies", "study_json"), ("series", "series_json")):
                ex.many(f"UPDATE {table} SET match=? WHERE id=?",
                        [(self._match_document(matchdoc.build(json.loads(text), None)), row_id)
                         for row_id, text in ex(f"SELECT id, {json_column} FROM {table}").fetchall()])
            for statement in sqlite_text_tables():
                ex(statement)

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.row_factory = sqlite3.Row
            state = _MatchFunctions()
            conn.create_function("dw_value", 2, state.match_value, deterministic=True)
            conn.create_function("dw_multi", 2, state.match_multi, deterministic=True)
            conn.create_function("dw_json", 2, state.match_json, deterministic=True)
            self._local.conn = conn
            self._local.state = state
            self._connections.append(conn)
        return conn

    @contextmanager
    def _read(self) -> Iterator[Execute]:
        yield _Executor(self._conn())

    def _transact(self, work: Callable[[Execute], Any]) -> Any:
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(_Executor(conn))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def close(self) -> None:
        for conn in self._connections:
            try:
                conn.close()
            except sqlite3.ProgrammingError:
                pass
        self._connections.clear()
        self._local = threading.local()
        if self._session_file is not None:
            self._session_file.close()
            self._session_file = None
            assert self._session_path is not None
            self._session_path.unlink(missing_ok=True)

    # -- sessions ------------------------------------------------------------------------------
    def start_session(self, session: str) -> None:
        self.modes.make_dir(self.sessions_dir)
        path = self._session_path = self.sessions_dir / session
        fd = os.open(path, os.O_RDWR | os.O_CREAT, self.modes.file_mode)
        self._session_file = os.fdopen(fd, "r+b")
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)

    def known_sessions(self) -> list[str]:
        return [p.name for p in self.sessions_dir.iterdir()] if self.sessions_dir.is_dir() else []

    def session_alive(self, session: str) -> bool:
        if self._session_path is not None and self._session_path.name == session:
            return True
        path = self.sessions_dir / session
        if fcntl is None:
            return False
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # releases the lock we may have taken
        try:
            os.unlink(path)  # its owner is gone
        except FileNotFoundError:
            pass
        return False

    # -- QIDO matching (Python functions over the stored values) ------------------------------------
    def _prepare_matching(self, ci: bool, fuzzy: bool) -> None:
        self._conn()
        self._local.state.reset(ci, fuzzy)

    def search(self, query: Query, *, study_uid: str | None, series_uid: str | None, limit: int | None,
               pn_case_insensitive: bool) -> tuple[list[Row], bool]:
        self._prepare_matching(pn_case_insensitive, query.fuzzy)
        return super().search(query, study_uid=study_uid, series_uid=series_uid, limit=limit,
                              pn_case_insensitive=pn_case_insensitive)

    def _match_condition(self, match: Match, column: str | None, attr_level: str, ci: bool, fuzzy: bool) -> Condition:
        state: _MatchFunctions = self._local.state
        if column is None:
            return Condition(f"dw_json({state.add(match)}, {{a}}.{JSON_COLUMN[attr_level]})")
        # PN goes through Python so its group/case rules stay in one place.
        if match.vr == "PN":
            return Condition(f"dw_value({state.add(match)}, {column})")
        if match.kind == "range":
            return range_condition(column, match)
        if match.kind == "wildcard":
            return Condition(f"{column} GLOB ?", [match.values[0].replace("[", "[[]")])
        if len(match.values) == 1:
            return Condition(f"{column} = ?", list(match.values))
        return Condition(f"{column} IN ({','.join('?' * len(match.values))})", list(match.values))

    def _text_condition(self, match: Match, attr_level: str, column: str | None, ci: bool) -> Condition | None:
        if not self.text_search:
            return None
        patterns = matchdoc.text_patterns(match, ci=ci)
        if patterns is None:
            return None
        table = "studies_text" if attr_level == T_STUDY else "series_text"
        rows = " UNION ".join(f"SELECT rowid FROM {table} WHERE match LIKE ?" for _ in patterns)
        return Condition(f"{{a}}.id IN ({rows})", patterns)

    def _multi_condition(self, column: str, match: Match, ci: bool, fuzzy: bool) -> Condition:
        return Condition(f"dw_multi({self._local.state.add(match)}, {column})")

    def _count_condition(self, column: str, match: Match, ci: bool, fuzzy: bool) -> Condition:
        return Condition(f"dw_value({self._local.state.add(match)}, CAST({column} AS TEXT))")


class _Executor:
    """``Execute`` on a SQLite connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __call__(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def many(self, sql: str, rows: Any) -> None:
        self.conn.executemany(sql, rows)


class _MatchFunctions:
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

"""The worklist's tables (UPS-RS), on both engines: workitems, subscriptions, event reports.

Every change of the worklist runs in one write transaction (``worklist_transaction``) that first takes
the worklist's lock (SQLite has one writer anyway; PostgreSQL takes a transaction advisory lock). Worklist
changes are thereby serialized across every process on the store, which gives three guarantees the
service needs:

* of two processes claiming one SCHEDULED workitem, exactly one finds it SCHEDULED;
* a new workitem and a new global subscription never miss each other;
* event report ids are committed in increasing order, so a process delivering them can poll for
  ``id > last delivered`` without skipping one that committed late.

Worklist changes are rare next to STOW (a claim or a completion per task), so one lock costs nothing.
The rules themselves (states, attributes, events) are ``dicom.ups``'s and ``store.worklist``'s; this
module only reads and writes rows. Searches use the engine's QIDO matching (``_match_condition``: Python
``dicom.query`` functions in SQLite, JSONB match documents in PostgreSQL) on the workitem's dataset.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ...dicom.query import Match, Query

if TYPE_CHECKING:
    from .sql import Execute  # sql.py imports this module: the type only

DicomJson = dict[str, Any]
T = TypeVar("T")

WORKLIST_LOCK = "dicomweb-nb:worklist"
EVENT_TTL = 600.0  # seconds an event report stays for the processes that deliver it


@dataclass
class WorkitemRow:
    uid: str
    state: str
    transaction_uid: str | None
    dataset: DicomJson
    created: float
    updated: float


@dataclass(frozen=True)
class Subscription:
    aetitle: str
    target: str  # a workitem UID, or the (filtered) worklist's well-known UID
    deletion_lock: bool
    filter: list[tuple[str, str]] | None = None


@dataclass(frozen=True)
class StoredEvent:
    id: int
    aetitle: str
    workitem: str
    report: DicomJson


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _workitem(row: Any) -> WorkitemRow:
    return WorkitemRow(row["uid"], row["state"], row["transaction_uid"], json.loads(row["dataset"]), row["created"],
                       row["updated"])


def _subscription(row: Any) -> Subscription:
    return Subscription(row["aetitle"], row["target"], bool(row["deletion_lock"]),
                        [tuple(p) for p in json.loads(row["filter"])] if row["filter"] else None)


class WorklistWrites:
    """What one worklist transaction may do: read and write workitems, subscriptions and event reports."""

    def __init__(self, ex: Execute, index: SqlWorkitems):
        self._ex = ex
        self._index = index
        self.now = time.time()
        self._pruned = False

    # -- workitems ----------------------------------------------------------------------------------
    def get(self, uid: str) -> WorkitemRow | None:
        row = self._ex("SELECT uid, state, transaction_uid, dataset, created, updated FROM workitems WHERE uid=?",
                       (uid,)).fetchone()
        return _workitem(row) if row is not None else None

    def insert(self, uid: str, state: str, dataset: DicomJson, transaction_uid: str | None = None) -> bool:
        """Add a workitem; False when one with that UID exists."""
        if self._ex("SELECT 1 FROM workitems WHERE uid=?", (uid,)).fetchone() is not None:
            return False
        columns = {"uid": uid, "state": state, "transaction_uid": transaction_uid, "dataset": _dumps(dataset),
                   "created": self.now, "updated": self.now, **self._index._workitem_document(dataset)}
        self._ex(f"INSERT INTO workitems ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                 list(columns.values()))
        return True

    def update(self, uid: str, state: str, dataset: DicomJson, transaction_uid: str | None) -> None:
        columns = {"state": state, "transaction_uid": transaction_uid, "dataset": _dumps(dataset), "updated": self.now,
                   **self._index._workitem_document(dataset)}
        self._ex(f"UPDATE workitems SET {', '.join(f'{c}=?' for c in columns)} WHERE uid=?", [*columns.values(), uid])

    def uids(self) -> list[str]:
        return [r[0] for r in self._ex("SELECT uid FROM workitems ORDER BY id")]

    def matching(self, query: Query, pn_case_insensitive: bool) -> list[str]:
        """UIDs of the workitems ``query`` matches, as of this transaction."""
        sql, params = self._index._search_sql(query, "w.uid", None, pn_case_insensitive)
        return [r[0] for r in self._ex(sql, params)]

    # -- subscriptions ------------------------------------------------------------------------------
    def subscribers(self, uid: str) -> list[str]:
        """The AE titles subscribed to a workitem."""
        return [r[0] for r in self._ex("SELECT aetitle FROM workitem_subscriptions WHERE target=? ORDER BY aetitle", (uid,))]

    def subscriptions_of(self, targets: Iterable[str]) -> list[Subscription]:
        targets = list(targets)
        rows = self._ex(f"SELECT aetitle, target, deletion_lock, filter FROM workitem_subscriptions WHERE target IN "
                        f"({', '.join('?' * len(targets))}) ORDER BY aetitle", targets)
        return [_subscription(r) for r in rows]

    def subscription(self, aetitle: str, target: str) -> Subscription | None:
        row = self._ex("SELECT aetitle, target, deletion_lock, filter FROM workitem_subscriptions WHERE aetitle=? AND target=?",
                       (aetitle, target)).fetchone()
        return _subscription(row) if row is not None else None

    def subscriptions_by(self, aetitle: str) -> list[Subscription]:
        rows = self._ex("SELECT aetitle, target, deletion_lock, filter FROM workitem_subscriptions WHERE aetitle=? "
                        "ORDER BY target", (aetitle,))
        return [_subscription(r) for r in rows]

    def subscribed_aetitles(self) -> list[str]:
        """Every AE title with some subscription."""
        return [r[0] for r in self._ex("SELECT DISTINCT aetitle FROM workitem_subscriptions ORDER BY aetitle")]

    def subscribe(self, aetitle: str, target: str, deletion_lock: bool, filter: list[tuple[str, str]] | None = None) -> None:
        self._ex("INSERT INTO workitem_subscriptions (aetitle, target, deletion_lock, filter, created) VALUES (?, ?, ?, ?, ?) "
                 "ON CONFLICT(aetitle, target) DO UPDATE SET deletion_lock=excluded.deletion_lock, filter=excluded.filter",
                 (aetitle, target, int(deletion_lock), _dumps(filter) if filter is not None else None, self.now))

    def unsubscribe(self, aetitle: str, target: str | None = None) -> int:
        """Remove one subscription of ``aetitle`` (every one when ``target`` is None); returns how many."""
        if target is None:
            cur = self._ex("DELETE FROM workitem_subscriptions WHERE aetitle=? RETURNING target", (aetitle,))
        else:
            cur = self._ex("DELETE FROM workitem_subscriptions WHERE aetitle=? AND target=? RETURNING target", (aetitle, target))
        return len(cur.fetchall())

    # -- event reports ------------------------------------------------------------------------------
    def emit(self, aetitle: str, uid: str, report: DicomJson) -> None:
        """Record an event report for ``aetitle`` (delivered by the processes that have its channel open)."""
        if not self._pruned:
            self._ex("DELETE FROM workitem_events WHERE created < ?", (self.now - EVENT_TTL,))
            self._pruned = True
        self._ex("INSERT INTO workitem_events (aetitle, workitem, report, created) VALUES (?, ?, ?, ?)",
                 (aetitle, uid, _dumps(report), self.now))


class WorklistIndex(ABC):
    """What the store's worklist needs from an index (a base of ``Index``)."""

    @abstractmethod
    def worklist_transaction(self, work: Callable[[WorklistWrites], T]) -> T:
        """Run ``work`` in one write transaction holding the worklist's lock."""

    @abstractmethod
    def get_workitem(self, uid: str) -> WorkitemRow | None: ...

    @abstractmethod
    def search_workitems(self, query: Query, *, limit: int | None, pn_case_insensitive: bool) -> tuple[list[DicomJson], bool]: ...

    @abstractmethod
    def events_after(self, last_id: int, aetitles: Iterable[str], *, limit: int = 1000) -> list[StoredEvent]: ...

    @abstractmethod
    def last_event_id(self) -> int: ...


class SqlWorkitems(WorklistIndex):
    """The worklist part of an SQL index (a base of ``sql.SqlIndex``)."""

    dialect: str

    @abstractmethod
    def _read(self) -> AbstractContextManager[Execute]: ...

    @abstractmethod
    def _transact(self, work: Callable[[Execute], Any]) -> Any: ...

    @abstractmethod
    def _lock(self, ex: Execute, names: Iterable[str]) -> None: ...

    @abstractmethod
    def _match_condition(self, match: Match, column: str | None, attr_level: str, ci: bool, fuzzy: bool) -> Any: ...

    @abstractmethod
    def _limit(self, limit: int | None, offset: int) -> tuple[str, list[Any]]: ...

    def _prepare_matching(self, ci: bool, fuzzy: bool) -> None:
        """Engine hook: get ready to build the conditions of one query (SQLite numbers its matchers)."""

    def _workitem_document(self, dataset: DicomJson) -> dict[str, Any]:
        """Engine hook: extra columns of a workitem row (PostgreSQL: its JSONB match document)."""
        return {}

    def worklist_transaction(self, work: Callable[[WorklistWrites], T]) -> T:
        """Run ``work`` in one write transaction holding the worklist's lock (see the module docstring)."""
        def run(ex: Execute) -> T:
            self._lock(ex, [WORKLIST_LOCK])
            return work(WorklistWrites(ex, self))
        return self._transact(run)

    def get_workitem(self, uid: str) -> WorkitemRow | None:
        with self._read() as ex:
            row = ex("SELECT uid, state, transaction_uid, dataset, created, updated FROM workitems WHERE uid=?",
                     (uid,)).fetchone()
        return _workitem(row) if row is not None else None

    def _search_sql(self, query: Query, columns: str, limit: int | None, ci: bool) -> tuple[str, list[Any]]:
        self._prepare_matching(ci, query.fuzzy)
        conditions, params = [], []
        for match in query.matches:
            if match.kind == "universal":
                continue
            cond = self._match_condition(match, None, "workitem", ci, query.fuzzy)
            conditions.append(f"({cond.sql.replace('{a}', 'w')})")
            params.extend(cond.params)
        sql = f"SELECT {columns} FROM workitems w"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        tail, tail_params = self._limit(limit, query.offset)
        return sql + " ORDER BY w.id" + tail, params + tail_params

    def search_workitems(self, query: Query, *, limit: int | None, pn_case_insensitive: bool) -> tuple[list[DicomJson], bool]:
        """The datasets of the workitems ``query`` matches, in the order they were created; and whether
        more matched than ``limit``."""
        with self._read() as ex:
            sql, params = self._search_sql(query, "w.dataset", limit + 1 if limit is not None else None, pn_case_insensitive)
            rows = ex(sql, params).fetchall()
        truncated = limit is not None and len(rows) > limit
        return [json.loads(r[0]) for r in (rows[:limit] if truncated else rows)], truncated

    def events_after(self, last_id: int, aetitles: Iterable[str], *, limit: int = 1000) -> list[StoredEvent]:
        """Event reports for ``aetitles`` recorded after event ``last_id``, oldest first."""
        names = sorted(set(aetitles))
        if not names:
            return []
        with self._read() as ex:
            rows = ex(f"SELECT id, aetitle, workitem, report FROM workitem_events WHERE id > ? AND aetitle IN "
                      f"({', '.join('?' * len(names))}) ORDER BY id LIMIT ?", [last_id, *names, limit]).fetchall()
        return [StoredEvent(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def last_event_id(self) -> int:
        with self._read() as ex:
            row = ex("SELECT MAX(id) FROM workitem_events").fetchone()
        return int(row[0] or 0)

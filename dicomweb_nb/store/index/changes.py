"""The change feed in the index: one row per instance created or deleted, in one order.

The semantics are those of Azure's DICOM change feed, so code written for it works here:

- A STOW-RS that stores an instance records a ``create``; storing it again (a re-STOW that replaces
  it) records another ``create``, and every earlier entry of that SOP Instance becomes ``replaced``.
- Deleting an instance records a ``delete``, and every entry of that SOP Instance (the delete
  included) becomes ``deleted``; storing it again later makes them ``replaced``.
- The newest ``create`` of an instance that still exists is ``current``.

Entries are written in the transaction that changes the instance, after the other writes, holding
the engine's change lock (``SqlIndex._lock_changes``: PostgreSQL's advisory lock; SQLite has one
writer at a time) until the commit. So sequence numbers are given out in commit order without gaps
(1, 2, 3, ...: a reader that has seen entry *n* never later finds an *m* < *n* it had not seen), and
timestamps never go backwards along them (each is the later of the clock and the previous one), so
ordering by time or by sequence is the same order in every process on the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Execute = Callable[..., Any]
Uids = tuple[str, str, str]  # study, series, SOP instance

CREATE, DELETE = "create", "delete"
CURRENT, REPLACED, DELETED = "current", "replaced", "deleted"
_COLUMNS = "c.seq, c.recorded, c.action, c.study_uid, c.series_uid, c.sop_uid, c.state"


@dataclass
class Batch:
    """The change-feed writes of one transaction: the entries to append (``rows``, in sequence
    order) and the SOP Instances whose earlier entries become ``replaced`` or ``deleted``."""

    rows: list[tuple[int, int, str, str, str, str, str]] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def plan(last: tuple[int, int] | None, *, created: Sequence[Uids] = (), deleted: Sequence[Uids] = (),
         now: int | None = None) -> Batch:
    """The entries of one transaction after the feed's ``last`` (sequence, timestamp): deletes
    first, then creates (a batch that deletes and stores the same instance does not exist, but the
    order would then be the true one). An instance's last event in the batch decides the state of
    its other entries, earlier ones included: ``deleted`` after a delete, ``replaced`` after a
    create, whose own entry is ``current``."""
    events = [*((uids, DELETE) for uids in deleted), *((uids, CREATE) for uids in created)]
    seq, recorded = last if last is not None else (0, 0)
    moment = max(time.time_ns() // 1000 if now is None else now, recorded)
    final = {uids[2]: (position, action) for position, (uids, action) in enumerate(events)}
    batch = Batch()
    for position, ((study, series, sop), action) in enumerate(events):
        last_position, last_action = final[sop]
        state = DELETED if last_action == DELETE else CURRENT if position == last_position else REPLACED
        batch.rows.append((seq + position + 1, moment, action, study, series, sop, state))
    for sop, (_position, action) in final.items():
        (batch.deleted if action == DELETE else batch.replaced).append(sop)
    return batch


def select(ex: Execute, *, start: int | None, end: int | None, offset: int, limit: int,
           after: int | None, include_metadata: bool) -> list[Any]:
    """Entries in sequence order: those with ``start <= timestamp < end`` (microseconds since the
    epoch, UTC; the column ``recorded``) skipping ``offset`` of them
    (Azure's version 2), or, with ``after``, those whose sequence is in ``(after, after + limit]``
    (version 1). Rows: seq, recorded, action, study_uid, series_uid, sop_uid, state, metadata."""
    where, params = [], []
    if after is not None:
        where.append("c.seq > ? AND c.seq <= ?")
        params += [after, after + limit]
    if start is not None:
        where.append("c.recorded >= ?")
        params.append(start)
    if end is not None:
        where.append("c.recorded < ?")
        params.append(end)
    sql = f"SELECT {_COLUMNS}, {_metadata(include_metadata)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY c.seq LIMIT ? OFFSET ?"
    return ex(sql, [*params, limit, 0 if after is not None else offset]).fetchall()


def latest(ex: Execute, *, include_metadata: bool) -> Any:
    return ex(f"SELECT {_COLUMNS}, {_metadata(include_metadata)} ORDER BY c.seq DESC LIMIT 1").fetchone()


def _metadata(include: bool) -> str:
    """The metadata column and the FROM clause: the instance's current metadata when it exists
    (a ``replaced`` entry shows the version that replaced it, as Azure does)."""
    if not include:
        return "NULL AS metadata FROM changes c"
    return f"i.metadata FROM changes c LEFT JOIN instances i ON i.sop_uid = c.sop_uid AND c.state <> '{DELETED}'"


def uids_of(rows: Iterable[Any]) -> list[Uids]:
    """(study, series, SOP instance) of index rows that have those columns."""
    return [(r["study_uid"], r["series_uid"], r["sop_uid"]) for r in rows]

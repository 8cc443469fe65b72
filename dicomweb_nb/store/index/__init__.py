"""The store's index, behind one interface: SQLite (embedded) or PostgreSQL (a team's server).

The index holds everything the processes sharing a store must agree on: the instances (QIDO
columns, DICOM JSON, frame offsets, blob keys), write intents and garbage (crash safety with
several writers), proxy jobs, servers added over REST, and which processes are alive (sessions).
``open_index`` picks the engine from a URL: ``sqlite:///path/index.sqlite`` or
``postgresql://user@host:5432/db`` (passwords come from ``PGPASSWORD`` / ``~/.pgpass`` or the
URL; they are never printed).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ...dicom.query import Query
from ..blobs import redact_url
from ..ingest import InstanceRecord
from .workitems import WorklistIndex

DuplicatePolicy = Literal["replace", "reject", "keep"]
Row = Mapping[str, Any]


class SchemaTooNew(Exception):
    """The index was made by a newer version (the store turns it into a StoreError)."""


@dataclass
class Entry:
    """One instance to index: its parsed record, and the blob already written for it."""

    record: InstanceRecord
    key: str
    size: int
    # Filled by commit: "stored", "replaced", "duplicate" (reject), "kept", or "lost" (its write
    # intent was swept because this process was taken for dead: the blob may be gone).
    decision: str = ""


class Index(WorklistIndex, ABC):
    """What the store needs from an index engine; one instance per process, thread-safe. The worklist's
    part (UPS-RS workitems) is ``WorklistIndex``, in ``workitems.py``."""

    url: str  # redacted, for messages
    dialect: str

    # -- sessions: which processes are alive ---------------------------------------------------
    @abstractmethod
    def start_session(self, session: str) -> None:
        """Declare this process alive under ``session`` until ``close``."""

    @abstractmethod
    def session_alive(self, session: str) -> bool: ...

    # -- writing ------------------------------------------------------------------------------
    @abstractmethod
    def add_intents(self, keys: Sequence[str], session: str) -> None:
        """Record (and commit) that ``session`` is about to write these blobs."""

    @abstractmethod
    def drop_intents(self, keys: Sequence[str], session: str) -> list[str]:
        """Forget intents (their blobs were removed or never written); returns those that existed."""

    @abstractmethod
    def commit(self, entries: Sequence[Entry], policy: DuplicatePolicy, session: str, grace: float) -> list[str]:
        """Index the entries in one transaction (their intents removed in it); sets each entry's
        decision. Returns the blob keys that became garbage and are due now."""

    @abstractmethod
    def delete(self, study_uid: str, series_uid: str | None, sop_uid: str | None, grace: float) -> tuple[int, list[str]]:
        """Delete instances (all or nothing); returns their number and the garbage keys due now."""

    @abstractmethod
    def dead_intents(self) -> list[tuple[str, str]]:
        """(key, session) of intents whose session is no longer alive."""

    @abstractmethod
    def claim_intent(self, key: str, session: str) -> bool:
        """Remove a dead session's intent; True for the one process that gets to delete its blob."""

    @abstractmethod
    def due_garbage(self, now: float) -> list[str]: ...

    @abstractmethod
    def forget_garbage(self, keys: Iterable[str]) -> None: ...

    @abstractmethod
    def intent_keys(self) -> set[str]: ...

    @abstractmethod
    def indexed_keys(self) -> set[str]: ...

    @abstractmethod
    def drop_rows_of_keys(self, keys: Iterable[str]) -> int:
        """Remove instances whose blob is missing (aggregates follow)."""

    @abstractmethod
    def exists(self, sop_uid: str) -> bool: ...

    # -- copying a store (store.migrate) ---------------------------------------------------------
    @abstractmethod
    def study_sizes(self) -> list[tuple[str, int]]:
        """(StudyInstanceUID, number of instances) of every study, in the order QIDO answers them."""

    @abstractmethod
    def export(self, study_uids: Sequence[str]) -> list[Row]:
        """The instance rows of these studies in QIDO order: UIDs, SOP class, transfer syntax, blob key
        (``path``) and size, metadata, frames, number_of_frames, metadata_version."""

    @abstractmethod
    def sizes(self, sop_uids: Sequence[str]) -> dict[str, int]:
        """The blob size of each of these SOP Instances that is stored."""

    # -- metadata written by older versions (schema.METADATA_VERSION) ---------------------------
    @abstractmethod
    def metadata_floor(self) -> int:
        """The metadata format every instance has at least (below the current one: some need refreshing)."""

    @abstractmethod
    def set_metadata_floor(self, version: int) -> None: ...

    @abstractmethod
    def stale_instances(self, after_id: int, limit: int) -> list[Row]:
        """Instances whose metadata has an older format (id, sop_uid, path, size, stored), by id after ``after_id``."""

    @abstractmethod
    def refresh_metadata(self, entries: Sequence[Entry], stored: dict[str, float]) -> int:
        """Rewrite the rows of instances re-read from their blobs (``entry.key`` their current blob;
        an instance replaced meanwhile is left alone), keeping their stored times; returns how many."""

    # -- reading ------------------------------------------------------------------------------
    @abstractmethod
    def instances(self, study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> list[Row]: ...

    @abstractmethod
    def not_found_message(self, study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> str: ...

    @abstractmethod
    def counts(self) -> dict[str, int]: ...

    @abstractmethod
    def usage(self) -> dict[str, Any]:
        """counts() plus ``bytes`` (of the stored instances) and ``jobs`` (number by state)."""

    # -- the change feed (index.changes) ---------------------------------------------------------
    @abstractmethod
    def changes(self, *, start: int | None = None, end: int | None = None, offset: int = 0, limit: int = 100,
                after: int | None = None, include_metadata: bool = True) -> list[Row]:
        """Change-feed entries in sequence order (see ``changes.select``)."""

    @abstractmethod
    def latest_change(self, *, include_metadata: bool = True) -> Row | None: ...

    @abstractmethod
    def search(self, query: Query, *, study_uid: str | None, series_uid: str | None, limit: int | None,
               pn_case_insensitive: bool) -> tuple[list[Row], bool]: ...

    @abstractmethod
    def representative_metadata(self, level: str, uids: Sequence[str]) -> dict[str, str]:
        """The metadata text of the latest instance of each study (``level`` "study") or series, by UID."""

    # -- jobs and servers ---------------------------------------------------------------------
    @abstractmethod
    def load_jobs(self) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def save_job(self, job_id: str, record: dict[str, Any] | None) -> None: ...

    @abstractmethod
    def claim_job(self, job_id: str, session: str, *, from_states: Sequence[str], to_state: str,
                  record: dict[str, Any] | None = None) -> bool:
        """Atomically move a job from one of ``from_states`` to ``to_state`` owned by ``session``
        (``record``: the job's new record, written with the claim)."""

    @abstractmethod
    def request_job_cancel(self, job_id: str) -> bool: ...

    @abstractmethod
    def job_cancel_requested(self, job_id: str) -> bool: ...

    @abstractmethod
    def load_servers(self) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def save_server(self, name: str, definition: dict[str, Any] | None) -> None: ...

    @abstractmethod
    def shared_value(self, key: str, make: Callable[[], str]) -> str:
        """The value kept under ``key`` (in the index's ``meta`` table), made by ``make`` by whichever
        process asks first; every process sharing the index gets the same."""

    @abstractmethod
    def close(self) -> None: ...


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return "sqlite:///" + str(Path(path).expanduser().resolve())


def open_index(url: str, *, modes: Any = None, pool_size: int = 8) -> Index:
    """An index for ``sqlite:///path`` or ``postgresql://...`` (also ``postgres://``)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from .sqlite import SqliteIndex

        # As SQLAlchemy reads them: sqlite:///relative/index.sqlite, sqlite:////absolute/index.sqlite.
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path.strip("/"):
            raise ValueError(f"database URL {url!r} names no file: use sqlite:////absolute/path/index.sqlite "
                             "or sqlite:///relative/path/index.sqlite")
        return SqliteIndex(Path(path), modes=modes)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        try:
            from .postgres import PostgresIndex
        except ImportError as exc:
            raise ValueError(f"a PostgreSQL index needs psycopg and psycopg_pool ({exc}): "
                             "pip install 'dicomweb-nb[team]'") from None
        return PostgresIndex(url, pool_size=pool_size)
    raise ValueError(f"unsupported database URL {redact_url(url)!r}: use postgresql://user@host/db or sqlite:///path")


__all__ = ["Index", "Entry", "DuplicatePolicy", "open_index", "sqlite_url", "SchemaTooNew", "redact_url"]

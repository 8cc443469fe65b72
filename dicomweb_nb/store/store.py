"""The store: an index (SQLite or PostgreSQL) plus blob storage (a folder or object storage).

The workspace store is one folder (``Store(root)``)::

    index.sqlite                 the index (studies, series, instances, jobs, intents, garbage)
    files/{study}/{series}/{sop}.{token}.dcm   the blobs, never modified in place
    tmp/                         uploads being received; emptied at start-up when alone
    store.lock                   held shared by each process with the store open

A team store names its parts: ``Store(database="postgresql://...", storage="s3://bucket/prefix")``
(or a folder for ``storage``); several processes on several machines may share it.

Writes are atomic and crash-safe with any number of writers. For each batch: the blob keys to be
written are recorded as *intents* (committed first); the blobs are written (a new key per
version) and made durable; then one index transaction removes the intents, inserts the rows and
records what became *garbage* (a replaced version, a rejected duplicate). After the commit the
garbage is deleted (object storage keeps it readable for a grace period, for reads under way
elsewhere). A process killed at any point leaves intents of a dead session or due garbage, which
any process's sweep removes (at start-up and every ``sweep_interval`` seconds). So every
instance is complete or absent, and an index row never points at a missing blob.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from ..dicom.query import Query
from ..dicom.stow import (
    FAILURE_CANNOT_UNDERSTAND,
    FAILURE_DATASET_DOES_NOT_MATCH,
    FAILURE_DUPLICATE,
    FAILURE_PROCESSING,
    FAILURE_STUDY_UID_MISMATCH,
    describe_failure,
)
from ..fileio import StoreModes, write_atomically
from ..workspace import DATABASE_ENV, FILES_DIRNAME, INDEX_FILENAME, LOCK_FILENAME, STORAGE_ENV, TEAM_STORE_MARKER, TMP_DIRNAME
from .blobs import Blob, BlobStorage, open_blob_storage, redact_url, remove_path
from .index import DuplicatePolicy, Entry, Index, SchemaTooNew, open_index, sqlite_url
from .ingest import FrameLayout, InstanceRecord, MissingAttributeError, NotDicomError, ensure_part10, read_instance
from .outcomes import StoreOutcome, UrlBuilder
from .results import result
from .schema import METADATA_VERSION

if TYPE_CHECKING:
    from .worklist import Worklist

log = logging.getLogger("dicomweb_nb.store")

PARALLEL_PUT_BYTES = 4 << 20
# Seconds a deleted instance's blob stays readable, in a folder too: a retrieve of a study opens its
# files one after the other, and one under way when the study is deleted still sends every instance
# it began with. (A replaced blob keeps the storage's own grace.)
DELETED_BLOB_GRACE = 120.0
ROW_CACHE_SIZE = 2048  # single-instance rows kept per process (a few KB each: the instance's DICOM JSON)
DELETIONS_MARKER = ".deletions"  # beside local blobs (a dot name: never taken for a blob); see Store._note_deletion
STAGING_IN_MAKING = "making-"  # a staging folder's name until its process holds its lock
STAGING_MAKING_GRACE = 600.0  # seconds after which an unnamed staging folder is a dead process's

try:
    import fcntl
except ImportError:  # no flock (Windows): a single user is assumed
    fcntl = None  # type: ignore[assignment]


class StoreError(Exception):
    """Base of the store's errors."""


class NotFoundError(StoreError):
    """No study, series or instance with that UID (or not under that parent)."""


@dataclass
class InstanceRow:
    """Everything the read paths need about one stored instance, without opening its blob."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob: Blob
    size: int
    metadata_text: str
    layout: FrameLayout
    number_of_frames: int
    stored: float


@dataclass
class ChangeEntry:
    """One entry of the change feed; ``metadata_text`` is the instance's current DICOM JSON
    (relative BulkDataURIs) when it still exists and was asked for."""

    sequence: int
    timestamp: int  # microseconds since the epoch, UTC
    action: str  # create | delete
    study_uid: str
    series_uid: str
    sop_uid: str
    state: str  # current | replaced | deleted
    metadata_text: str | None

    @classmethod
    def from_row(cls, row: Any) -> ChangeEntry:
        return cls(int(row["seq"]), int(row["recorded"]), row["action"], row["study_uid"], row["series_uid"],
                   row["sop_uid"], row["state"], row["metadata"])


@dataclass
class SearchResult:
    items: list[dict[str, Any]]
    truncated: bool  # more matches exist beyond limit


class Store:
    """A DICOM store: an index plus blob storage. Thread-safe; may be shared by several processes.

    ``root``: the workspace store folder (SQLite index and files inside it, unless ``database``
    or ``storage`` say otherwise; also where uploads are staged). ``database``: ``sqlite:///path``
    or ``postgresql://...``; ``storage``: a folder or an fsspec URL (``s3://bucket/prefix``).
    ``group``: a Unix group sharing local files (modes 2770/0660 instead of owner-only).
    ``garbage_grace``: seconds a replaced or deleted blob stays readable (default: the blob
    storage's, 120 for object storage, 0 for a folder). ``pool_size``: connections to a PostgreSQL
    index, at most.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        database: str | None = None,
        storage: str | os.PathLike[str] | None = None,
        duplicates: DuplicatePolicy = "replace",
        pn_case_insensitive: bool = True,
        reconcile: bool = True,
        group: str | None = None,
        storage_options: dict[str, Any] | None = None,
        garbage_grace: float | None = None,
        sweep_interval: float = 60.0,
        pool_size: int = 8,
    ):
        if duplicates not in ("replace", "reject", "keep"):
            raise ValueError(f"duplicates policy must be replace, reject or keep, not {duplicates!r}")
        if root is None and (not database or not storage):
            raise ValueError("a store needs a folder (root), or both a database URL and a storage location")
        self.duplicates: DuplicatePolicy = duplicates
        self.pn_case_insensitive = pn_case_insensitive
        self.modes = StoreModes(group or None)
        self.modes.check()
        self.root = Path(root).expanduser().resolve() if root is not None else None
        if self.root is not None:
            self.modes.secure_root(self.root)
        self.is_folder_store = not database and not storage
        self.session = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
        self.blobs: BlobStorage = open_blob_storage(storage or self.root / FILES_DIRNAME,  # type: ignore[operator]
                                                    modes=self.modes, options=storage_options)
        self.garbage_grace = self.blobs.grace if garbage_grace is None else garbage_grace
        self.deletion_grace = max(self.blobs.grace, DELETED_BLOB_GRACE) if garbage_grace is None else garbage_grace
        try:
            self.index: Index = open_index(database or sqlite_url(self.root / INDEX_FILENAME),  # type: ignore[operator]
                                           modes=self.modes, pool_size=pool_size)
        except SchemaTooNew as exc:
            self.blobs.close()
            raise StoreError(str(exc)) from None
        self.index.start_session(self.session)
        if self.root is not None and not self.is_folder_store:
            self._write_team_marker(database, storage)
        self._lock_file: Any = None
        self._tmp_lock: Any = None
        # sop_uid -> InstanceRow of recent single-instance reads (see _cached_row), where a blob's
        # existence tells its version is current.
        staging = self.blobs.staging_dir()
        self._rows: OrderedDict[str, InstanceRow] | None = (
            OrderedDict() if staging is not None and self.garbage_grace <= 0 else None)
        self._rows_lock = threading.Lock()
        # A deleted instance's file stays readable for deletion_grace (reads under way finish), so its
        # existence no longer tells a cached row is current: every delete appends a byte to this file
        # beside the blobs, and a cache that sees its size change empties itself (all processes).
        self._deletions_marker: Path | None = staging.parent / DELETIONS_MARKER if staging is not None else None
        self._rows_generation = self._deletions_seen()
        self._secrets: dict[str, bytes] = {}
        self._secrets_lock = threading.Lock()
        self.tmp_dir = self._make_tmp_dir()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._worklist: Worklist | None = None
        alone = self._hold_store_lock() if self.is_folder_store else False
        if alone and reconcile:
            self.reconcile()  # others opening the store wait for this (they want the shared lock)
        elif reconcile:
            self.sweep()
        if reconcile:
            self.refresh_metadata()
        if alone and fcntl is not None:
            lock_file: Any = self._lock_file  # opened by _hold_store_lock
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_SH)
        if sweep_interval > 0:
            self._sweeper = threading.Thread(target=self._sweep_periodically, args=(sweep_interval,),
                                             name="dicomweb-store-sweep", daemon=True)
            self._sweeper.start()

    def _write_team_marker(self, database: str | None, storage: str | os.PathLike[str] | None) -> None:
        """Leave in the folder where this team store is (no password), so that ``dw.connect()`` in a
        notebook of this workspace and ``dicomweb-nb`` commands on the folder open the same store."""
        assert self.root is not None
        marker = {"database": redact_url(database, drop_password=True) if database else sqlite_url(self.root / INDEX_FILENAME),
                  "storage": os.fspath(storage) if storage else str(self.root / FILES_DIRNAME)}
        path = self.root / TEAM_STORE_MARKER
        try:
            if path.exists() and json.loads(path.read_text()) == marker:
                return
        except (OSError, ValueError):
            pass
        write_atomically(path, (json.dumps(marker, indent=2) + "\n").encode(), mode=self.modes.file_mode)

    @property
    def location(self) -> str:
        """Where the store is, for messages (no credentials)."""
        if self.is_folder_store:
            return str(self.root)
        return f"index {redact_url(self.index.url)}, blobs {self.blobs.url}"

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    # -- processes sharing the store --------------------------------------------------------
    def _hold_store_lock(self) -> bool:
        """Share the folder store with other processes; True when no other process has it open.

        Every process with the store open holds a shared lock on ``store.lock`` for its lifetime
        (the Jupyter server, a notebook kernel, ``dicomweb-nb import``). Reconciling deletes files
        no index row points at, which in a busy store may be another process's write in progress,
        so it runs only if the lock can be taken exclusively: no one else has the store open. When
        alone, the exclusive lock is kept until the caller has reconciled.
        """
        assert self.root is not None
        self._lock_file = self.modes.open_file(self.root / LOCK_FILENAME, "a+b")
        if fcntl is None:
            return True
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_SH)
            return False
        return True

    def _make_tmp_dir(self) -> Path:
        """Where uploads are staged on local disk before ``put``: the folder store's tmp/, else a
        folder of this process (beside local blobs, so that they move by rename) that another
        process's sweep removes once this one is gone."""
        if self.is_folder_store:
            assert self.root is not None
            tmp = self.root / TMP_DIRNAME
            self.modes.make_dir(tmp)
            return tmp
        base = self.blobs.staging_dir() or (self.root / TMP_DIRNAME if self.root is not None else
                                             Path(tempfile.gettempdir()) / f"dicomweb-nb-{os.getuid()}")
        self.modes.make_dir(base)
        # The folder gets its name only once its lock is held: another process's sweep removes any
        # named folder whose lock it can take, and a folder it could see before this one locked it
        # would be removed under this process's feet.
        making = base / f"{STAGING_IN_MAKING}{self.session}"
        self.modes.make_dir(making)
        self._tmp_lock = self.modes.open_file(making / ".lock", "a+b")
        if fcntl is not None:
            fcntl.flock(self._tmp_lock.fileno(), fcntl.LOCK_EX)
        tmp = base / self.session
        os.rename(making, tmp)
        return tmp

    def detach_lock(self) -> Any:
        """The folder store's shared lock, handed to the caller (None for a team store): ``close()``
        leaves it held until the caller closes it. A process that opened the store to reconcile it and
        then forks workers keeps it, so that no worker takes the store for its own alone."""
        lock, self._lock_file = self._lock_file, None
        return lock

    def session_alive(self, session: str) -> bool:
        """Whether the process that opened the store as ``session`` still has it open."""
        return self.index.session_alive(session)

    def close(self) -> None:
        """Stop the sweeper, close the index and give up the store's locks."""
        self._stop.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(timeout=30)
        self.index.close()
        self.blobs.close()
        if self._tmp_lock is not None and not self._tmp_lock.closed:
            self._tmp_lock.close()
            remove_path(self.tmp_dir)
        if self._lock_file is not None and not self._lock_file.closed:
            self._lock_file.close()

    # -- crash recovery ---------------------------------------------------------------------
    def sweep(self, *, now: float | None = None) -> dict[str, int]:
        """Remove what dead processes left (blobs of their write intents, their staging folders) and
        garbage whose grace period is over (at ``now``, default the current time). Safe while other
        processes write."""
        removed = {"intents": 0, "garbage": 0, "staging": 0}
        for key, session in self.index.dead_intents():
            if self.index.claim_intent(key, session):  # one sweeping process wins each
                self.blobs.delete(key)
                removed["intents"] += 1
        due = self.index.due_garbage(time.time() if now is None else now)
        for key in due:
            self.blobs.delete(key)
        self.index.forget_garbage(due)
        removed["garbage"] = len(due)
        if not self.is_folder_store:
            removed["staging"] = self._sweep_staging()
        return removed

    def _sweep_staging(self, *, now: float | None = None) -> int:
        """Remove the staging folders of processes that are gone (their lock is free)."""
        count = 0
        now = time.time() if now is None else now
        for folder in self.tmp_dir.parent.iterdir():
            if folder == self.tmp_dir or not folder.is_dir():
                continue
            if folder.name.startswith(STAGING_IN_MAKING):
                # being made (renamed within milliseconds), unless a process died in between
                try:
                    stale = now - folder.stat().st_mtime > STAGING_MAKING_GRACE
                except FileNotFoundError:
                    continue
                if stale:
                    remove_path(folder)
                    count += 1
                continue
            try:
                lock = os.open(folder / ".lock", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # not a staging folder (they are named only once locked)
            try:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove_path(folder)  # while holding the lock: a dead process's folder, for certain
                count += 1
            except BlockingIOError:
                pass  # its process is alive
            finally:
                os.close(lock)
        return count

    def _sweep_periodically(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:
                log.exception("store sweep failed")

    def reconcile(self) -> dict[str, int]:
        """Make the index and the blobs agree after a crash: temp files, blobs no row points at,
        rows whose blob vanished. Only for a store no other process is writing (the folder store
        runs it at start-up when alone); ``sweep`` is the safe cleanup with other writers."""
        removed = {"tmp": 0, "orphan_files": 0, "missing_files": 0}
        for entry in self.tmp_dir.iterdir():
            if entry.name != ".lock":
                remove_path(entry)
                removed["tmp"] += 1
        live = {k for k in self.index.intent_keys()}
        for key, session in self.index.dead_intents():
            self.index.claim_intent(key, session)
            live.discard(key)
        indexed = self.index.indexed_keys()
        for key in list(self.blobs.keys()):
            if key not in indexed and key not in live:
                self.blobs.delete(key)
                removed["orphan_files"] += 1
        missing = [key for key in indexed if not self.blobs.exists(key)]
        removed["missing_files"] = self.index.drop_rows_of_keys(missing)
        self.index.forget_garbage(self.index.due_garbage(float("inf")))
        cleanup = getattr(self.blobs, "remove_empty_dirs", None)
        if cleanup is not None:
            cleanup()
        return removed

    def refresh_metadata(self, batch: int = 200) -> int:
        """Re-derive, from their blobs, the precomputed metadata of instances stored by a version of
        dicomweb-nb that wrote it in an older format (``schema.METADATA_VERSION``: before issue 10's
        fixes, group lengths were kept, the trailing padding left out and ambiguous VRs taken from
        the dictionary). Runs when the store opens, once: a no-op afterwards. Returns how many."""
        if self.index.metadata_floor() >= METADATA_VERSION:
            return 0
        refreshed, after = 0, 0
        while rows := self.index.stale_instances(after, batch):
            after = rows[-1]["id"]
            if not refreshed:
                log.info("%s: re-deriving the metadata of instances stored by an older version (once)", self.location)
            entries, stored = [], {}
            for row in rows:
                try:
                    with Blob(self.blobs, row["path"], row["size"]).local_file() as path:
                        record = read_instance(path)
                    if record.sop_uid != row["sop_uid"]:
                        raise MissingAttributeError(f"the blob holds SOP Instance {record.sop_uid}")
                except (NotDicomError, MissingAttributeError, OSError) as exc:
                    log.warning("%s: the metadata of instance %s stays as it was: %s", self.location, row["sop_uid"], exc)
                    continue
                entries.append(Entry(record, row["path"], row["size"]))
                stored[record.sop_uid] = row["stored"]
            refreshed += self.index.refresh_metadata(entries, stored)
        self.index.set_metadata_floor(METADATA_VERSION)
        if refreshed:
            self.forget_cached_rows()  # rewritten in place: same blobs, new metadata
            log.info("%s: metadata of %d instance(s) re-derived", self.location, refreshed)
        return refreshed

    # -- writing ----------------------------------------------------------------------------
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
        files = [Path(p) for p in paths]
        source_names = list(sources) if sources is not None else [p.name for p in files]
        parsed = [parse_file(path, self.tmp_dir, source, owned=move) for path, source in zip(files, source_names)]
        return self.store_parsed(parsed, expected_study=expected_study)

    def store_parsed(self, parsed: Sequence[ParsedFile], *, expected_study: str | None = None) -> list[StoreOutcome]:
        """Store files already read by ``parse_file`` (which a caller may run as each upload arrives,
        in any thread or process) or whose records are known already (``migrate``); one outcome per
        file, the good ones indexed in one transaction."""
        outcomes: list[StoreOutcome] = []
        accepted: list[_Accepted] = []
        for item in parsed:
            outcomes.append(item.outcome)
            record = item.record
            if record is None:
                continue
            if expected_study is not None and record.study_uid != expected_study:
                item.outcome.failure_reason = FAILURE_STUDY_UID_MISMATCH
                item.outcome.message = (
                    f"StudyInstanceUID {record.study_uid} does not match the study {expected_study} of the request URL"
                )
                if item.rewritten:
                    remove_path(item.path)
                continue
            accepted.append(_Accepted(item.path, record, item.outcome, item.owned, item.synced))
        if accepted:
            self._write(accepted)
        return outcomes

    def _write(self, accepted: list[_Accepted]) -> None:
        to_write: list[_Accepted] = []
        if self.duplicates in ("reject", "keep"):
            # Stored already: settled without writing a blob (the transaction decides again).
            for item in accepted:
                if self.index.exists(item.record.sop_uid):
                    self._settle_duplicate(item.outcome)
                    if item.owned:
                        remove_path(item.path)
                else:
                    to_write.append(item)
        else:
            to_write = accepted
        if not to_write:
            return
        keys = [f"{a.record.study_uid}/{a.record.series_uid}/{a.record.sop_uid}.{secrets.token_hex(4)}.dcm" for a in to_write]
        self.index.add_intents(keys, self.session)
        try:
            sizes = self._put_all(list(zip(keys, to_write)))
            entries = [Entry(a.record, key, size) for key, size, a in zip(keys, sizes, to_write)]
            self.blobs.sync(keys)
            due = self.index.commit(entries, self.duplicates, self.session, self.garbage_grace)
        except BaseException:
            # Take back the blobs the index never saw: those whose intent is still there (a commit
            # whose answer was lost may have indexed them and removed their intents). Should the
            # index be unreachable, the intents stay and the blobs with them: never a row without its blob.
            try:
                unindexed = self.index.drop_intents(keys, self.session)
            except Exception:
                log.exception("cannot drop the write intents of a failed write")
                unindexed = []
            for key in unindexed:
                try:
                    self.blobs.delete(key)
                except Exception:
                    log.exception("cannot remove blob %s of a failed write", key)
            for item in to_write:
                item.outcome.stored = item.outcome.replaced = False
            raise
        finally:
            for item in to_write:
                if item.owned:
                    remove_path(item.path)  # not moved (object storage, a failure): the temporary copy goes
        for entry, item in zip(entries, to_write):
            if entry.decision in ("stored", "replaced"):
                item.outcome.stored = True
                item.outcome.replaced = entry.decision == "replaced"
            elif entry.decision in ("duplicate", "kept"):
                self._settle_duplicate(item.outcome)
            else:
                item.outcome.failure_reason = FAILURE_PROCESSING
                item.outcome.message = "the write was interrupted (this process was taken for dead by another); store it again"
        self._collect(due)

    def _put_all(self, puts: list[tuple[str, _Accepted]]) -> list[int]:
        """Write the blobs of a batch: one after the other into a folder (renames), several at
        once into object storage (each is a request), in waves of at most PARALLEL_PUT_BYTES so
        memory stays bounded (an object store client may hold a whole part in memory)."""
        def put(key: str, item: _Accepted) -> int:
            return self.blobs.put(key, item.path, move=item.owned, synced=item.synced)

        if self.blobs.staging_dir() is not None or len(puts) == 1:
            return [put(key, item) for key, item in puts]
        waves: list[list[tuple[str, _Accepted]]] = [[]]
        size = 0
        for key, item in puts:
            length = item.path.stat().st_size
            if waves[-1] and (size + length > PARALLEL_PUT_BYTES or len(waves[-1]) == 8):
                waves.append([])
                size = 0
            waves[-1].append((key, item))
            size += length
        sizes: list[int] = []
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomweb-put") as pool:
            for wave in waves:
                sizes += pool.map(lambda p: put(*p), wave)
        return sizes

    def _settle_duplicate(self, outcome: StoreOutcome) -> None:
        if self.duplicates == "reject":
            outcome.failure_reason = FAILURE_DUPLICATE
            outcome.message = f"SOP Instance {outcome.sop_uid} is already stored (duplicate policy: reject)"
        else:
            outcome.stored = True
            outcome.message = "already stored; the stored copy was kept (duplicate policy: keep)"

    def _collect(self, keys: Sequence[str]) -> None:
        """Delete garbage that is due now, then forget it (a crash in between: the sweep does it)."""
        if not keys:
            return
        for key in keys:
            self.blobs.delete(key)
        self.index.forget_garbage(keys)

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> int:
        """Delete a study, series or instance; returns the number of instances removed.

        One index transaction removes the rows (and records ``delete`` entries in the change feed);
        the blobs become garbage, readable ``deletion_grace`` seconds more for reads under way, then
        swept. Raises NotFoundError when nothing is there."""
        count, due = self.index.delete(study_uid, series_uid, sop_uid, self.deletion_grace)
        if not count:
            raise NotFoundError(self.index.not_found_message(study_uid, series_uid, sop_uid))
        self._note_deletion()
        self._collect(due)
        return count

    def _note_deletion(self) -> None:
        """Tell every process's row cache (``_cached_row``) that rows were deleted: after the index commit."""
        if self._deletions_marker is None:
            return
        fd = os.open(self._deletions_marker, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.modes.file_mode)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)

    def _deletions_seen(self) -> int:
        if self._deletions_marker is None:
            return 0
        try:
            return os.stat(self._deletions_marker).st_size
        except FileNotFoundError:
            return 0

    # -- reading ----------------------------------------------------------------------------
    def instances(self, study_uid: str | None, series_uid: str | None = None, sop_uid: str | None = None) -> list[InstanceRow]:
        """Instances of a study / series / one instance, in series then instance order.

        Raises NotFoundError when nothing matches, naming the level that does not exist. One
        instance (``sop_uid``) comes from the row cache when it is there (``_cached_row``).
        """
        deletions: int | None = None  # when the row may be cached: the deletions seen before reading it
        if sop_uid is not None:
            cached = self.cached_instance(study_uid, series_uid, sop_uid)
            if cached is not None:
                return [cached]
            if self._rows is not None:
                deletions = self._deletions_seen()
        rows = self.index.instances(study_uid, series_uid, sop_uid)
        if not rows:
            raise NotFoundError(self.index.not_found_message(study_uid, series_uid, sop_uid))
        out = [InstanceRow(
            study_uid=r["study_uid"], series_uid=r["series_uid"], sop_uid=r["sop_uid"],
            sop_class_uid=r["sop_class_uid"], transfer_syntax=r["transfer_syntax"],
            blob=Blob(self.blobs, r["path"], r["size"]), size=r["size"], metadata_text=r["metadata"],
            layout=FrameLayout.from_json(r["frames"]), number_of_frames=int(r["number_of_frames"] or 0),
            stored=r["stored"],
        ) for r in rows]
        # A delete committed while the index was read may have missed this row: then it is not cached.
        if sop_uid is not None and deletions is not None and self._rows is not None and self._deletions_seen() == deletions:
            with self._rows_lock:
                self._forget_rows_before(deletions)
                self._rows[sop_uid] = out[0]
                while len(self._rows) > ROW_CACHE_SIZE:
                    self._rows.popitem(last=False)
        return out

    def cached_instance(self, study_uid: str | None, series_uid: str | None, sop_uid: str) -> InstanceRow | None:
        """The instance's row if the cache holds it (no index query; a stat() at most), else None:
        for callers that would rather not wait on a worker thread for a cached answer."""
        row = self._cached_row(sop_uid)
        if row is not None and study_uid in (None, row.study_uid) and series_uid in (None, row.series_uid):
            return row
        return None

    def _cached_row(self, sop_uid: str) -> InstanceRow | None:
        """The row of a recently read instance, if it is still the stored one.

        Frames, rendered images and single-instance retrieves ask for the same few instances again
        and again; the cache spares them the index (and the parse of the frame offsets). It is on
        where the blobs are local files and a replaced one goes at once (no grace period): a version
        is current while its file exists, whichever process stored what since (a re-STOW writes a new
        file and removes the old one), so a stat() is the check. A deleted instance's file stays a
        while for reads under way, so deletes are seen through the deletions marker instead (one more
        stat). Elsewhere (object storage keeps old versions readable a while) every lookup asks the index.
        """
        if self._rows is None:
            return None
        deletions = self._deletions_seen()
        with self._rows_lock:
            if self._forget_rows_before(deletions):
                return None
            row = self._rows.get(sop_uid)
            if row is None:
                return None
            self._rows.move_to_end(sop_uid)
        path = row.blob.local_path
        if path is not None and os.path.isfile(path):
            return row
        with self._rows_lock:
            if self._rows.get(sop_uid) is row:
                del self._rows[sop_uid]
        return None

    def _forget_rows_before(self, deletions: int) -> bool:
        """Empty the row cache if instances were deleted since it was filled (``deletions``: the
        marker's size now); True if it was. Called holding ``_rows_lock``."""
        if self._rows is None or deletions == self._rows_generation:
            return False
        self._rows.clear()
        self._rows_generation = deletions
        return True

    def forget_cached_rows(self) -> None:
        """Empty the single-instance row cache: for rows rewritten in place (same blob, new metadata),
        which the cache, valid while an instance's blob file exists, would not notice."""
        if self._rows is not None:
            with self._rows_lock:
                self._rows.clear()

    def counts(self) -> dict[str, int]:
        return self.index.counts()

    def usage(self) -> dict[str, Any]:
        """``counts()`` plus ``bytes`` of the stored instances and ``jobs``: their number by state."""
        return self.index.usage()

    # -- the change feed ----------------------------------------------------------------------
    def changes(self, *, start: int | None = None, end: int | None = None, offset: int = 0, limit: int = 100,
                after: int | None = None, include_metadata: bool = True) -> list[ChangeEntry]:
        """Change-feed entries in order (see ``index.changes``): those recorded in ``[start, end)``
        (microseconds since the epoch) skipping ``offset`` of them, or with ``after``, those with a sequence in
        ``(after, after + limit]``. At most ``limit``."""
        rows = self.index.changes(start=start, end=end, offset=offset, limit=limit, after=after,
                                  include_metadata=include_metadata)
        return [ChangeEntry.from_row(r) for r in rows]

    def latest_change(self, *, include_metadata: bool = True) -> ChangeEntry | None:
        """The newest change-feed entry, or None when nothing was ever stored."""
        row = self.index.latest_change(include_metadata=include_metadata)
        return ChangeEntry.from_row(row) if row is not None else None

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
        limit = query.limit if query.limit is not None else max_results
        rows, truncated = self.index.search(query, study_uid=study_uid, series_uid=series_uid, limit=limit,
                                            pn_case_insensitive=self.pn_case_insensitive)
        parents: dict[tuple[str, str], Any] = {}  # study/series JSON parsed once per search (results.result)
        texts: dict[str, str] = {}

        def representative(row: Any, level: str) -> dict[str, Any]:
            """An instance's full metadata, for attributes of another level: fetched for every
            result at once, the first time one needs it (one query, not one per result)."""
            column = "study_uid" if level == "study" else "series_uid"
            if not texts:
                texts.update(self.index.representative_metadata(level, sorted({r[column] for r in rows})))
            text = texts.get(row[column])
            return json.loads(text) if text else {}

        return SearchResult(
            [result(row, query, study_uid, series_uid, retrieve_url, representative, parents) for row in rows], truncated
        )

    @property
    def worklist(self) -> Worklist:
        """The worklist (UPS-RS workitems) of this store, shared by every process on it."""
        if self._worklist is None:
            from .worklist import Worklist

            self._worklist = Worklist(self.index, pn_case_insensitive=self.pn_case_insensitive)
        return self._worklist

    # -- what processes share: proxy jobs (server/jobs.py's JobRecords) and servers added over REST --
    def load_jobs(self) -> dict[str, dict[str, Any]]:
        """Every saved job record by ID."""
        return self.index.load_jobs()

    def save_job(self, job_id: str, record: dict[str, Any] | None) -> None:
        """Save a job record (None deletes it)."""
        self.index.save_job(job_id, record)

    def claim_job(self, job_id: str, *, from_states: Sequence[str], to_state: str,
                  record: dict[str, Any] | None = None) -> bool:
        """Move a job between states for this process, atomically: one process wins a claim
        (``record``: the job's new record, written with the claim)."""
        return self.index.claim_job(job_id, self.session, from_states=from_states, to_state=to_state, record=record)

    def request_job_cancel(self, job_id: str) -> bool:
        """Ask the process that runs a job to cancel it."""
        return self.index.request_job_cancel(job_id)

    def job_cancel_requested(self, job_id: str) -> bool:
        """Whether a cancellation of the job was asked (by any process)."""
        return self.index.job_cancel_requested(job_id)

    def load_servers(self) -> dict[str, dict[str, Any]]:
        """Servers added with PUT /servers to a team store (a folder store keeps servers.json)."""
        return self.index.load_servers()

    def save_server(self, name: str, definition: dict[str, Any] | None) -> None:
        self.index.save_server(name, definition)

    def shared_secret(self, name: str) -> bytes:
        """32 random bytes kept in the index under ``name``: the same in every process on this store
        (the workers of a server, the servers of a team), and across restarts."""
        with self._secrets_lock:
            secret = self._secrets.get(name)
            if secret is None:
                secret = bytes.fromhex(self.index.shared_value(f"secret:{name}", lambda: secrets.token_hex(32)))
                self._secrets[name] = secret
            return secret


@dataclass
class ParsedFile:
    """A file read for storing (``parse_file``): its record, or None when it cannot be stored (the
    outcome says why), and what ``store_parsed`` may do with the file."""

    path: Path  # the Part 10 file to store: the file given, or its rewrite under the store's tmp/
    record: InstanceRecord | None
    outcome: StoreOutcome
    owned: bool  # the file may be moved into place or removed (an upload, a rewrite), else it is copied
    rewritten: bool = False
    synced: bool = False  # its bytes are durable already (the caller fsynced the upload)


@dataclass
class _Accepted:
    path: Path
    record: InstanceRecord
    outcome: StoreOutcome
    owned: bool
    synced: bool


def parse_file(path: str | os.PathLike[str], tmp_dir: Path, source: str | None = None, *, owned: bool = True,
               synced: bool = False) -> ParsedFile:
    """Read one file for ``Store.store_parsed``: the work of a store that needs no store (pure but
    for files), so that uploads are parsed as they arrive, in any thread or process.

    ``owned``: the file is an upload to be moved into the store; ``synced``: its bytes are already
    durable (a rewrite of a file without preamble, made under ``tmp_dir``, never is).
    """
    path = Path(path)
    source = source if source is not None else path.name
    rewritten = False
    try:
        part10 = ensure_part10(path, tmp_dir)
        rewritten = part10 != path
        if rewritten and owned:
            remove_path(path)
        record = read_instance(part10)
    except NotDicomError as exc:
        return ParsedFile(path, None, StoreOutcome(None, None, failure_reason=FAILURE_CANNOT_UNDERSTAND, message=str(exc),
                                                   source=source), owned)
    except MissingAttributeError as exc:
        if rewritten:
            remove_path(part10)
        return ParsedFile(path, None, StoreOutcome(None, None, failure_reason=FAILURE_DATASET_DOES_NOT_MATCH,
                                                   message=str(exc), source=source), owned)
    outcome = StoreOutcome(record.sop_uid, record.sop_class_uid, record.study_uid, record.series_uid, source=source)
    if record.warnings:
        outcome.message = "; ".join(record.warnings)
    return ParsedFile(part10, record, outcome, owned or rewritten, rewritten, synced and not rewritten)


def parse_files(uploads: Sequence[tuple[Path, str]], tmp_dir: Path) -> list[ParsedFile]:
    """``parse_file`` of uploads already durable, ``(path, source)`` each: the small parts of one
    STOW-RS request, parsed in one task (on a thread) or a few (one per CPU pool process), not one each."""
    return [parse_file(path, tmp_dir, source, owned=True, synced=True) for path, source in uploads]


class StoreLocation(TypedDict, total=False):
    """Where a team store's parts are: ``Store(root, **location)``."""

    database: str
    storage: str


def workspace_store_options(folder: str | os.PathLike[str], *, environment: bool = True) -> StoreLocation:
    """``database`` / ``storage`` of the team store a workspace folder stands for: from
    ``$DICOMWEB_NB_DATABASE`` / ``$DICOMWEB_NB_STORAGE`` (the Jupyter extension sets them for its
    kernels; only with ``environment``), else from the folder's ``team-store.json``; empty for a
    plain folder store."""
    database = os.environ.get(DATABASE_ENV) if environment else None
    storage = os.environ.get(STORAGE_ENV) if environment else None
    if database or storage:
        return location(database, storage)
    path = Path(folder) / TEAM_STORE_MARKER
    if path.exists():
        try:
            marker = json.loads(path.read_text())
            return StoreLocation(database=str(marker["database"]), storage=str(marker["storage"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path} does not say which team store this folder stands for: {exc}") from None
    return StoreLocation()


def location(database: str | None, storage: str | None) -> StoreLocation:
    """The parts given (an empty one is left out)."""
    found = StoreLocation()
    if database:
        found["database"] = database
    if storage:
        found["storage"] = storage
    return found


__all__ = [
    "Store", "StoreError", "NotFoundError", "StoreOutcome", "InstanceRow", "SearchResult", "ChangeEntry", "ParsedFile",
    "parse_file", "parse_files",
    "FAILURE_CANNOT_UNDERSTAND", "FAILURE_DATASET_DOES_NOT_MATCH", "FAILURE_STUDY_UID_MISMATCH",
    "FAILURE_DUPLICATE", "FAILURE_PROCESSING", "describe_failure",
    "workspace_store_options", "StoreLocation", "location",
]

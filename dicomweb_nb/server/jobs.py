"""Jobs: long transfers (STOW-RS to, WADO-RS from a remote server) run in the background.

Shaped like Orthanc's jobs so its scripts work unchanged: ``GET {root}/jobs`` lists IDs
(``?expand`` gives the jobs), ``GET {root}/jobs/{id}`` gives ``State`` (``Pending``, ``Running``,
``Success``, ``Failure``), ``Progress`` (0-100), ``ErrorCode`` / ``ErrorDescription`` /
``ErrorDetails`` and ``Content`` (what the job did so far); ``POST {root}/jobs/{id}/cancel`` stops
one. As in Orthanc, a cancelled job ends in ``Failure`` with ``ErrorCode`` 37 ("This job was
canceled"; we add ``"Cancelled": true``), so a script waiting for Success or Failure never hangs.

Jobs run on a bounded pool of threads (``c.DicomWeb.concurrent_jobs``), the highest ``Priority``
first, then in order of submission. Every change of state is written to the store's ``jobs``
table (through :class:`JobRecords`, what this module needs of the store, which implements it), which
every process sharing the store reads: a job is started by one process only (it
claims the job in the index), a cancellation asked of another process reaches the owner through
the index, and a job that was pending or running when its process died is reported as a
``Failure`` "interrupted by a server restart" by the next process that looks, never silently lost.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from .base import ApiError, DicomWebMixin

__all__ = ["JobManager", "JobRecords", "Job", "JobContext", "JobCancelled", "JobError", "JobsMixin", "JobMixin",
           "JobCancelMixin", "PENDING", "RUNNING", "SUCCESS", "FAILURE"]

log = logging.getLogger("dicomweb_nb.server.jobs")

PENDING, RUNNING, SUCCESS, FAILURE = "Pending", "Running", "Success", "Failure"
# Orthanc's error codes (OrthancFramework Enumerations), for the ones a transfer job can end with.
ERROR_INTERNAL, ERROR_SUCCESS, ERROR_BAD_REQUEST, ERROR_NETWORK_PROTOCOL = -1, 0, 8, 9
ERROR_TIMEOUT, ERROR_UNKNOWN_RESOURCE, ERROR_UNAUTHORIZED, ERROR_CANCELED_JOB = 16, 17, 29, 37
ERROR_CANNOT_STORE_INSTANCE = 2018
ERROR_DESCRIPTIONS = {
    ERROR_INTERNAL: "Internal error", ERROR_SUCCESS: "Success", ERROR_BAD_REQUEST: "Bad request",
    ERROR_NETWORK_PROTOCOL: "Error in the network protocol", ERROR_TIMEOUT: "Timeout",
    ERROR_UNKNOWN_RESOURCE: "Unknown resource", ERROR_UNAUTHORIZED: "Bad credentials were provided to an HTTP request",
    ERROR_CANCELED_JOB: "This job was canceled", ERROR_CANNOT_STORE_INSTANCE: "Cannot store an instance",
}
INTERRUPTED = "interrupted by a server restart"
_HOST = socket.gethostname()


class JobRecords(Protocol):
    """Where job records live so that every process sharing the store sees them: the store's index
    implements this (``Store.load_jobs`` ...); the job runner needs nothing else of the store."""

    @property
    def session(self) -> str:
        """This process's session on the store (written into the jobs it owns)."""
        ...

    def session_alive(self, session: str) -> bool:
        """Whether the process of ``session`` still has the store open."""
        ...

    def load_jobs(self) -> dict[str, dict[str, Any]]:
        """Every saved job record by ID."""
        ...

    def save_job(self, job_id: str, record: dict[str, Any] | None) -> None:
        """Save a job record (None deletes it)."""
        ...

    def claim_job(self, job_id: str, *, from_states: Sequence[str], to_state: str,
                  record: dict[str, Any] | None = None) -> bool:
        """Move a job between states for this process, atomically: one process wins a claim
        (``record``: the job's new record, written with the claim)."""
        ...

    def request_job_cancel(self, job_id: str) -> bool:
        """Ask the process that runs a job to cancel it."""
        ...

    def job_cancel_requested(self, job_id: str) -> bool:
        """Whether a cancellation of the job was asked (by any process)."""
        ...


class JobCancelled(Exception):
    """Raised inside a job's work when its cancellation was asked for."""


class JobError(Exception):
    """A job failure: ``http_status`` is what a synchronous caller gets, ``error_code`` Orthanc's code,
    ``content`` what the job did before failing (kept in the job's Content), ``extra`` more fields
    for the synchronous error answer (e.g. the remote server's status)."""

    def __init__(self, message: str, *, http_status: int = 502, error_code: int = ERROR_NETWORK_PROTOCOL,
                 details: str = "", content: dict[str, Any] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.error_code = error_code
        self.details = details
        self.content = content or {}
        self.extra = extra or {}


def _timestamp(t: float | None) -> str | None:
    """Orthanc's time format: ISO 8601 basic, UTC, milliseconds (``20240131T101530.123``)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]


@dataclass
class Job:
    id: str
    type: str
    priority: int
    request: dict[str, Any]  # what was asked (server, resources): shown in Content, never secrets
    state: str = PENDING
    progress: float = 0.0  # 0..1
    created: float = field(default_factory=time.time)
    started: float | None = None
    completed: float | None = None
    error_code: int = ERROR_SUCCESS
    error_description: str = "Success"
    error_details: str = ""
    content: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None  # of a failure, for a synchronous caller
    error_extra: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False
    owner: dict[str, Any] = field(default_factory=lambda: {"pid": os.getpid(), "host": _HOST})  # + "session" of the store
    updated: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    done: Future = field(default_factory=Future, repr=False)
    # Content is updated by the job's thread while handlers read it on the event loop.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update_content(self, values: dict[str, Any]) -> None:
        with self.lock:
            self.content.update(values)

    def content_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.content)

    @property
    def finished(self) -> bool:
        return self.state in (SUCCESS, FAILURE)

    def public(self) -> dict[str, Any]:
        """The job as ``GET /jobs/{id}`` shows it (Orthanc's fields)."""
        end = self.completed or time.time()
        out: dict[str, Any] = {
            "ID": self.id,
            "Type": self.type,
            "State": self.state,
            "Priority": self.priority,
            "Progress": round(100 * self.progress) if self.state != SUCCESS else 100,
            "CreationTime": _timestamp(self.created),
            "EffectiveRuntime": round(end - self.started, 3) if self.started else 0.0,
            "ErrorCode": self.error_code,
            "ErrorDescription": self.error_description,
            "ErrorDetails": self.error_details,
            "Content": {**self.request, **self.content_snapshot()},
            "Timestamp": _timestamp(time.time()),
        }
        if self.completed is not None:
            out["CompletionTime"] = _timestamp(self.completed)
        if self.cancelled:
            out["Cancelled"] = True
        return out

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id, "type": self.type, "priority": self.priority, "request": self.request, "state": self.state,
            "progress": self.progress, "created": self.created, "started": self.started, "completed": self.completed,
            "error_code": self.error_code, "error_description": self.error_description,
            "error_details": self.error_details, "content": self.content_snapshot(), "http_status": self.http_status,
            "error_extra": self.error_extra, "cancelled": self.cancelled, "owner": self.owner, "updated": self.updated,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Job:
        job = cls(id=r["id"], type=r["type"], priority=int(r.get("priority", 0)), request=r.get("request") or {})
        for name in ("state", "progress", "created", "started", "completed", "error_code", "error_description",
                     "error_details", "content", "http_status", "error_extra", "cancelled", "owner", "updated"):
            if name in r and r[name] is not None:
                setattr(job, name, r[name])
        if job.finished:
            job.done.set_result(job)
        return job


class JobContext:
    """What a job's work function sees: cancellation, progress and its Content."""

    def __init__(self, manager: JobManager, job: Job):
        self._manager = manager
        self.job = job

    @property
    def cancelled(self) -> bool:
        return self.job.cancel_event.is_set()

    def check_cancelled(self) -> None:
        if self.job.cancel_event.is_set():
            raise JobCancelled()

    def set_progress(self, done: float, total: float | None) -> None:
        """Progress as done/total; an unknown total keeps the job below 100 % until it ends."""
        value = min(max(done / total, 0.0), 1.0) if total else 0.0
        if not self.job.finished:
            self.job.progress = min(value, 0.99)
            self._manager._save_throttled(self.job)

    def update_content(self, **values: Any) -> None:
        self.job.update_content(values)
        self._manager._save_throttled(self.job)


Work = Callable[[JobContext], dict[str, Any]]


class JobManager:
    """Runs jobs on ``workers`` threads by priority and keeps them in the store's jobs table
    (``store``: the job records, None to keep them in memory only).

    ``history``: how many finished jobs are kept (Orthanc's ``JobsHistorySize``); older ones are
    forgotten, in memory and in the table.
    """

    SAVE_INTERVAL = 1.0

    def __init__(self, store: JobRecords | None, *, workers: int = 2, history: int = 100):
        self.store = store
        self.history = max(1, history)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()
        self._queue: list[tuple[int, int, Job]] = []
        self._ready = threading.Condition(self._lock)
        self._sequence = itertools.count()
        self._stopping = False
        self._last_saved: dict[str, float] = {}
        self._recover()
        self._threads = [threading.Thread(target=self._worker, name=f"dicomweb-job-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    # -- persistence ------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Load the jobs table; jobs whose process is gone were interrupted: mark them failed."""
        if self.store is None:
            return
        for record in self.store.load_jobs().values():
            try:
                job = Job.from_record(record)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring an unreadable job record: %s", exc)
                continue
            if not job.finished and not self._owner_alive(job.owner):
                job.state = FAILURE
                job.completed = job.updated or time.time()
                job.error_code = ERROR_INTERNAL
                job.error_description = INTERRUPTED
                job.error_details = (f"the server process (pid {job.owner.get('pid')}) stopped while this job was "
                                     f"{record.get('state', 'running').lower()}; what it had done is in Content")
                job.http_status = 500
                job.updated = time.time()
                # One process reports it: the one whose claim of the dead job succeeds. The report is
                # written with the claim: another process (a sibling worker) reading the job in
                # between would otherwise see its new state beside the old record's error fields.
                if not self.store.claim_job(job.id, from_states=(PENDING, RUNNING), to_state=FAILURE, record=job.record()):
                    continue
                self._last_saved[job.id] = job.updated
                job.done.set_result(job)
            self._jobs[job.id] = job
        self._prune()

    def _save(self, job: Job) -> None:
        job.updated = time.time()
        self._last_saved[job.id] = job.updated
        if self.store is None:
            return
        try:
            self.store.save_job(job.id, job.record())
        except Exception:
            log.exception("cannot save job %s", job.id)

    def _save_throttled(self, job: Job) -> None:
        if time.time() - self._last_saved.get(job.id, 0.0) >= self.SAVE_INTERVAL:
            self._save(job)
            # A cancellation asked through another process sharing the store arrives here.
            if self.store is not None and not job.cancel_event.is_set() and self.store.job_cancel_requested(job.id):
                job.cancel_event.set()

    def _owner_alive(self, owner: dict[str, Any]) -> bool:
        """Whether the process that ran a job still runs: its store session if it had one
        (processes on other machines included), else its pid on this machine."""
        session = owner.get("session")
        if self.store is not None and isinstance(session, str):
            return session != self.store.session and self.store.session_alive(session)
        return _owner_alive(owner)

    def _claim(self, job: Job) -> bool:
        """Take a pending job for this process in the index; False if another process took it
        (or reported it interrupted), in which case its record there is the truth."""
        try:
            claimed = self.store.claim_job(job.id, from_states=(PENDING,), to_state=RUNNING)  # type: ignore[union-attr]
        except Exception:
            log.exception("cannot claim job %s", job.id)
            return True
        if not claimed:
            log.warning("job %s was claimed by another process; not running it here", job.id)
            job.done.set_result(job)
        return claimed

    def _cancel_requested_elsewhere(self, job: Job) -> bool:
        try:
            return self.store.job_cancel_requested(job.id)  # type: ignore[union-attr]
        except Exception:
            log.exception("cannot read the cancellation of job %s", job.id)
            return False

    def _prune(self) -> None:
        with self._lock:
            finished = sorted((j for j in self._jobs.values() if j.finished), key=lambda j: j.completed or 0.0)
            for job in finished[:-self.history] if len(finished) > self.history else []:
                del self._jobs[job.id]
                self._last_saved.pop(job.id, None)
                if self.store is not None:
                    try:
                        self.store.save_job(job.id, None)
                    except Exception:
                        log.exception("cannot forget job %s", job.id)

    # -- API --------------------------------------------------------------------------------------
    def submit(self, job_type: str, work: Work, *, priority: int = 0, request: dict[str, Any] | None = None) -> Job:
        job = Job(id=str(uuid.uuid4()), type=job_type, priority=int(priority), request=dict(request or {}))
        if self.store is not None:
            job.owner["session"] = self.store.session
        with self._lock:
            if self._stopping:
                raise RuntimeError("the job runner is shutting down")
            self._jobs[job.id] = job
            self._save(job)
            heapq.heappush(self._queue, (-job.priority, next(self._sequence), job))
            job._work = work  # type: ignore[attr-defined]
            self._ready.notify()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job
        # Another process sharing the store (a Jupyter server and `dicomweb-nb serve`) may own it.
        if self.store is not None:
            record = self.store.load_jobs().get(job_id)
            if record is not None:
                return Job.from_record(record)
        raise KeyError(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            mine = dict(self._jobs)
        if self.store is not None:
            for job_id, record in self.store.load_jobs().items():
                if job_id not in mine:
                    try:
                        mine[job_id] = Job.from_record(record)
                    except (KeyError, TypeError, ValueError):
                        continue
        return sorted(mine.values(), key=lambda j: j.created)

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a pending one fails at once, a running one at its next check."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                other = self.get(job_id)  # KeyError if unknown anywhere
                if other.finished or self.store is None:
                    return other
                # Another process sharing the store owns it: it sees the request at its next save.
                self.store.request_job_cancel(job_id)
                return other
            if job.finished:
                return job
            job.cancel_event.set()
            if job.state == PENDING:
                self._queue = [entry for entry in self._queue if entry[2] is not job]
                heapq.heapify(self._queue)
                self._finish_cancelled(job)
            return job

    async def wait(self, job: Job) -> Job:
        return await asyncio.wrap_future(job.done)

    def shutdown(self, wait: float = 0.0) -> None:
        """Stop taking jobs: pending ones fail at once and running ones are asked to cancel, each
        recorded as interrupted by the shutdown. ``wait``: seconds to wait for the running ones to
        stop (one still running then is reported interrupted at the next start instead)."""
        with self._lock:
            self._stopping = True
            pending = [entry[2] for entry in self._queue]
            self._queue.clear()
            for job in pending:
                if not job.finished:
                    self._finish_cancelled(job)
            for job in self._jobs.values():
                if not job.finished:
                    job.cancel_event.set()
            self._ready.notify_all()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            thread.join(remaining)

    # -- running ----------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                _, _, job = heapq.heappop(self._queue)
                if job.finished:
                    continue
                if self.store is not None and not self._claim(job):
                    continue
                if self.store is not None and self._cancel_requested_elsewhere(job):
                    job.cancel_event.set()  # asked through another process while it waited here: it stops at once
                job.state = RUNNING
                job.started = time.time()
                self._save(job)
            self._run(job)

    def _run(self, job: Job) -> None:
        work: Work = job._work  # type: ignore[attr-defined]
        context = JobContext(self, job)
        try:
            content = work(context)
        except JobCancelled:
            with self._lock:
                self._finish_cancelled(job)
            return
        except JobError as exc:
            job.update_content(exc.content)
            if job.cancel_event.is_set():
                with self._lock:
                    self._finish_cancelled(job)
                return
            self._finish(job, FAILURE, exc.error_code, exc.message, exc.details, exc.http_status, exc.extra)
            return
        except Exception as exc:  # noqa: BLE001 - a bug in one job must not take the runner down
            log.error("job %s (%s) failed:\n%s", job.id, job.type, traceback.format_exc())
            self._finish(job, FAILURE, ERROR_INTERNAL, f"internal error: {type(exc).__name__}: {exc}", "", 500, {})
            return
        finally:
            del job._work  # type: ignore[attr-defined]
        job.update_content(content or {})
        job.progress = 1.0
        self._finish(job, SUCCESS, ERROR_SUCCESS, "Success", "", None, {})

    def _finish(self, job: Job, state: str, code: int, description: str, details: str, http_status: int | None,
                extra: dict[str, Any]) -> None:
        with self._lock:
            job.state = state
            job.error_code = code
            job.error_description = description
            job.error_details = details
            job.http_status = http_status
            job.error_extra = extra
            job.completed = time.time()
            self._save(job)
        job.done.set_result(job)
        self._prune()

    def _finish_cancelled(self, job: Job) -> None:
        if self._stopping:  # stopped by the server's shutdown, not by a user
            self._finish(job, FAILURE, ERROR_INTERNAL, INTERRUPTED, "the server stopped while this job was running",
                         503, {})
            return
        job.cancelled = True
        self._finish(job, FAILURE, ERROR_CANCELED_JOB, ERROR_DESCRIPTIONS[ERROR_CANCELED_JOB],
                     "cancelled through POST /jobs/{id}/cancel", 409, {})


def _owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process that ran a job still runs (same host, pid alive, and not us)."""
    pid = owner.get("pid")
    if owner.get("host") != _HOST or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- handlers ---------------------------------------------------------------------------------------

class _JobsBase(DicomWebMixin):
    @property
    def job_manager(self) -> JobManager:
        manager = self.ctx.jobs
        if manager is None:
            raise ApiError(503, "jobs are not available on this server")
        return manager

    def find_job(self, job_id: str) -> Job:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise ApiError(404, f"no job {job_id[:80]!r}: job IDs are UUIDs") from None
        try:
            return self.job_manager.get(job_id)
        except KeyError:
            raise ApiError(404, f"no job {job_id} (finished jobs are kept for the last {self.job_manager.history})") from None


class JobsMixin(_JobsBase):
    """``GET {root}/jobs``: job IDs, oldest first; ``?expand`` gives the jobs themselves."""

    async def get(self) -> None:
        jobs = await self.run_blocking(self.job_manager.jobs)
        expand = self.get_query_argument("expand", None) is not None
        self.write_json([j.public() for j in jobs] if expand else [j.id for j in jobs], 200, "application/json")


class JobMixin(_JobsBase):
    """``GET {root}/jobs/{id}``."""

    async def get(self, job_id: str) -> None:
        job = await self.run_blocking(self.find_job, job_id)
        self.write_json(job.public(), 200, "application/json")


class JobCancelMixin(_JobsBase):
    """``POST {root}/jobs/{id}/cancel``: answers ``{}`` as Orthanc does (the job says the rest)."""

    async def post(self, job_id: str) -> None:
        job = await self.run_blocking(self.find_job, job_id)
        await self.run_blocking(self.job_manager.cancel, job.id)
        self.write_json({}, 200, "application/json")


def job_answer(job: Job, root_path: str) -> dict[str, Any]:
    """The answer to an asynchronous submission, as Orthanc's: ``{"ID", "Path"}``."""
    return {"ID": job.id, "Path": f"{root_path}jobs/{job.id}"}

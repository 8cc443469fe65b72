"""Copy a store into another: a workspace folder into a team store (PostgreSQL + object storage), back,
or between any two backends. ``dicomweb-nb migrate`` is the command; ``migrate`` the Python call.

- **No re-parsing.** Each instance's record (UIDs, metadata, frame layout) is taken from the source's
  index row; only rows whose metadata has an older format (``schema.METADATA_VERSION``) are read
  again, from the copy being made.
- **Streaming.** Each blob is read in chunks (1 MiB from a folder, 8 MiB from object storage) into a
  staging file of the target, hashed (sha256) on the way, then stored by the target's own write path:
  write intent, put (a rename into a folder, an upload to object storage), index commit. Staging on
  local disk rather than a ``put_stream`` of the blob storages keeps one write path, crash-safe the
  same way as STOW-RS, and bounds memory by the chunk size whatever the blob's size.
- **Resumable.** The copy goes study by study in the source's order (so the target answers QIDO in
  the same order) and skips SOP Instances the target holds already with the same size: an
  interrupted copy, run again, continues where it stopped. What a killed copy left half-written is
  removed by the target's crash recovery when it is opened again.
- **Verified.** At the end, every source instance is looked up in the target (same study, series,
  size) and the sha256 of both blobs compared; the counts of studies, series and instances too.
- **What else moves.** Servers added with PUT /servers (a folder store's ``servers.json``, a team
  store's servers table) are copied, a source entry replacing a target entry of the same name.
  Finished proxy jobs (the history GET /jobs shows) are copied; jobs still pending or running
  belong to a server process of the source and stay there (counted in the report).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import write_atomically
from ..workspace import INDEX_FILENAME, SERVERS_FILENAME, TEAM_STORE_MARKER
from .blobs import Blob, remove_path
from .index import Row
from .index.sql import JOB_ACTIVE
from .ingest import FrameLayout, InstanceRecord, read_instance
from .outcomes import StoreOutcome
from .schema import METADATA_VERSION
from .store import ParsedFile, Store, StoreError, workspace_store_options

BATCH_INSTANCES = 200  # instances per target commit
BATCH_BYTES = 256 << 20  # bytes staged on local disk at once, at most (a batch ends at whichever comes first)


class MigrationError(StoreError, ValueError):
    """A copy that cannot start: the same store twice, a source that is not a store."""


class MigrationFailed(StoreError):
    """A copy that ended with instances missing from the target or differing from the source;
    ``report`` (a ``MigrationReport``) names each one. Running the copy again resumes it."""

    def __init__(self, report: MigrationReport):
        self.report = report
        problems = report.failed + report.mismatches
        named = "; ".join(f"{sop}: {why}" for sop, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        verb = "could not copy" if report.failed else "verification failed for"
        super().__init__(f"migrate {report.source} -> {report.target}: {verb} {len(problems)} instance(s): {named}{more}")


@dataclass
class MigrationReport:
    """What ``migrate`` did. ``ok``: every source instance is in the target, its bytes equal."""

    source: str
    target: str
    source_counts: dict[str, int] = field(default_factory=dict)
    target_counts: dict[str, int] = field(default_factory=dict)
    copied: int = 0
    copied_bytes: int = 0
    already_there: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, why)
    verified: int | None = None  # None: not verified
    mismatches: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, what differs)
    servers: int = 0
    jobs: int = 0
    active_jobs_left: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.mismatches and self.verified is not None

    def __str__(self) -> str:
        mb = self.copied_bytes / 1e6
        lines = [f"migrated {self.source} -> {self.target} in {self.seconds:.1f} s",
                 f"  copied {self.copied} instance(s) ({mb:.1f} MB); {self.already_there} already there"]
        if self.failed:
            lines.append(f"  FAILED to copy {len(self.failed)} instance(s):")
            lines += [f"    {sop}: {why}" for sop, why in self.failed[:20]]
        for level in ("studies", "series", "instances"):
            lines.append(f"  {level}: {self.source_counts.get(level, 0)} in the source, "
                         f"{self.target_counts.get(level, 0)} in the target")
        if self.verified is None:
            lines.append("  not verified (--no-verify)")
        elif self.mismatches:
            lines.append(f"  VERIFICATION FAILED for {len(self.mismatches)} of {self.verified} instance(s):")
            lines += [f"    {sop}: {what}" for sop, what in self.mismatches[:20]]
            lines.append("  (delete those instances from the target, or let them be replaced, and run migrate again)")
        else:
            lines.append(f"  verified: {self.verified} instance(s) in the target, sha256 of every blob equal to the source's")
        lines.append(f"  servers: {self.servers} copied; jobs: {self.jobs} finished job(s) copied"
                     + (f", {self.active_jobs_left} pending or running left in the source" if self.active_jobs_left else ""))
        return "\n".join(lines)


def migrate(source: Store | str | os.PathLike[str], target: Store | str | os.PathLike[str], *, verify: bool = True,
            progress: bool = True, workers: int = 4, check: bool = True) -> MigrationReport:
    """Copy every instance of ``source`` (with its servers and finished jobs) into ``target``;
    resumable, streamed, verified by counts and sha256 (see the module's description).

    ``source`` / ``target``: a ``Store`` (a team store: ``Store(database=..., storage=...)``) or a
    store folder (the source must hold a store; the target is made if missing)::

        from dicomweb_nb.store import Store
        from dicomweb_nb.store.migrate import migrate
        team = Store(database="postgresql://me@db/pacs", storage="s3://bucket/pacs")
        print(migrate("~/work/.dicomweb", team))     # a folder into a team store
        migrate(team, "~/copy/.dicomweb")            # and back

    ``verify``: compare the sha256 of every blob at the end (``False``: counts only).
    ``progress``: tqdm bars. ``workers``: blobs read and written at once. Returns a
    ``MigrationReport`` (``print(report)``); with ``check`` (the default) raises
    ``MigrationFailed`` naming the instances that could not be copied or differ. Run it again
    after an interruption or a failure: instances in the target with their size are skipped.
    The target's duplicate policy applies to an instance it holds with another size ("replace",
    the default, replaces it).
    """
    opened: list[Store] = []
    try:
        if not isinstance(source, Store):
            source = open_source(source)
            opened.append(source)
        if not isinstance(target, Store):
            target = open_target(target)
            opened.append(target)
        report = _migrate(source, target, verify=verify, progress=progress, workers=workers)
    finally:
        for store in opened:
            store.close()
    if check and (report.failed or report.mismatches):
        raise MigrationFailed(report)
    return report


def _migrate(source: Store, target: Store, *, verify: bool, progress: bool, workers: int) -> MigrationReport:
    if _same_store(source, target):
        raise MigrationError(f"the source and the target are the same store ({source.location})")
    started = time.monotonic()
    report = MigrationReport(source.location, target.location)
    studies = source.index.study_sizes()
    digests: dict[str, bytes] = {}  # sha256 of the source blobs read by this run
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="dicomweb-migrate") as pool:
        with tqdm(total=sum(n for _, n in studies), unit="instance", desc="copy", disable=not progress) as bar:
            for rows in _batches(source, studies):
                present = target.index.sizes([r["sop_uid"] for r in rows])
                todo = [r for r in rows if present.get(r["sop_uid"]) != r["size"]]
                report.already_there += len(rows) - len(todo)
                _copy(source, target, todo, pool, report, digests)
                bar.update(len(rows))
        _copy_servers(source, target, report)
        _copy_jobs(source, target, report)
        report.source_counts, report.target_counts = source.counts(), target.counts()
        if verify:
            _verify(source, target, studies, digests, pool, report, progress)
    report.seconds = time.monotonic() - started
    return report


def _same_store(a: Store, b: Store) -> bool:
    """Whether the two share their index or their blob storage (either would copy a store onto itself)."""
    return a.index.url == b.index.url or a.blobs.url == b.blobs.url


def _batches(source: Store, studies: list[tuple[str, int]]) -> Iterator[list[Row]]:
    """The source's instance rows in QIDO order, read a few studies at a time, in batches of at most
    BATCH_INSTANCES instances and BATCH_BYTES bytes."""
    group: list[str] = []
    count = 0
    for uid, n in studies:
        if group and count + n > BATCH_INSTANCES * 5:
            yield from _split(source.index.export(group))
            group, count = [], 0
        group.append(uid)
        count += n
    if group:
        yield from _split(source.index.export(group))


def _split(rows: list[Row]) -> Iterator[list[Row]]:
    batch: list[Row] = []
    size = 0
    for row in rows:
        if batch and (len(batch) >= BATCH_INSTANCES or size + row["size"] > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row["size"]
    if batch:
        yield batch


def _record(row: Row) -> InstanceRecord:
    """The record of a stored instance, from its index row (what ingest computed from the file)."""
    return InstanceRecord(
        study_uid=row["study_uid"], series_uid=row["series_uid"], sop_uid=row["sop_uid"],
        sop_class_uid=row["sop_class_uid"], transfer_syntax=row["transfer_syntax"],
        metadata=json.loads(row["metadata"]), metadata_text=row["metadata"],
        layout=FrameLayout.from_json(row["frames"]), number_of_frames=int(row["number_of_frames"] or 0),
    )


def _stage(source: Store, target: Store, row: Row) -> tuple[Path, InstanceRecord, bytes]:
    """The source blob streamed into a staging file of the target, hashed on the way."""
    path = target.tmp_dir / f"migrate-{secrets.token_hex(8)}.dcm"
    digest = hashlib.sha256()
    written = 0
    try:
        with open(path, "wb") as out:
            for chunk in Blob(source.blobs, row["path"], row["size"]).chunks():
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
        if written != row["size"]:
            raise OSError(f"the source blob {row['path']} holds {written} bytes, its index row says {row['size']}")
        # Metadata of an older format is made again from the file; otherwise the row is the record.
        record = _record(row) if (row["metadata_version"] or 0) >= METADATA_VERSION else read_instance(path)
    except BaseException:
        remove_path(path)
        raise
    return path, record, digest.digest()


def _copy(source: Store, target: Store, rows: list[Row], pool: ThreadPoolExecutor, report: MigrationReport,
          digests: dict[str, bytes]) -> None:
    if not rows:
        return
    futures = [pool.submit(_stage, source, target, row) for row in rows]
    staged: list[tuple[Path, InstanceRecord, bytes, Row]] = []
    try:
        for row, future in zip(rows, futures):
            try:
                path, record, digest = future.result()
            except Exception as exc:  # noqa: BLE001 - one unreadable blob fails alone, named in the report
                report.failed.append((row["sop_uid"], f"{type(exc).__name__}: {exc}"))
                continue
            staged.append((path, record, digest, row))
        known = [ParsedFile(path, record, StoreOutcome(record.sop_uid, record.sop_class_uid, record.study_uid,
                                                       record.series_uid, source=path.name), owned=True)
                 for path, record, _d, _r in staged]
        outcomes = target.store_parsed(known)
    except BaseException:
        for future in futures:
            future.cancel()
        for path, *_rest in staged:
            remove_path(path)
        raise
    for (_path, record, digest, row), outcome in zip(staged, outcomes):
        if outcome.stored and not outcome.failure_reason:
            report.copied += 1
            report.copied_bytes += row["size"]
            digests[record.sop_uid] = digest
        else:
            report.failed.append((record.sop_uid, outcome.message or f"failure {outcome.failure_reason}"))


def _servers(store: Store) -> dict[str, dict[str, Any]]:
    if store.is_folder_store:
        assert store.root is not None
        path = store.root / SERVERS_FILENAME
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return store.load_servers()


def _copy_servers(source: Store, target: Store, report: MigrationReport) -> None:
    servers = _servers(source)
    if not servers:
        return
    if target.is_folder_store:
        assert target.root is not None
        merged = {**_servers(target), **servers}
        text = json.dumps(merged, indent=2, sort_keys=True) + "\n"
        write_atomically(target.root / SERVERS_FILENAME, text.encode("utf-8"), mode=0o600)  # it holds passwords
    else:
        for name, definition in servers.items():
            target.save_server(name, definition)
    report.servers = len(servers)


def _copy_jobs(source: Store, target: Store, report: MigrationReport) -> None:
    for job_id, record in source.load_jobs().items():
        if record.get("state") in JOB_ACTIVE:
            report.active_jobs_left += 1
            continue
        target.save_job(job_id, record)
        report.jobs += 1


def _hash_blob(store: Store, key: str, size: int) -> bytes:
    digest = hashlib.sha256()
    for chunk in Blob(store.blobs, key, size).chunks():
        digest.update(chunk)
    return digest.digest()


def _done(digest: bytes) -> Future[bytes]:
    """A digest computed while copying, as a finished future beside those being computed."""
    future: Future[bytes] = Future()
    future.set_result(digest)
    return future


def _verify(source: Store, target: Store, studies: list[tuple[str, int]], digests: dict[str, bytes],
            pool: ThreadPoolExecutor, report: MigrationReport, progress: bool) -> None:
    from tqdm.auto import tqdm

    verified = 0
    with tqdm(total=sum(n for _, n in studies), unit="instance", desc="verify", disable=not progress) as bar:
        for rows in _batches(source, studies):
            theirs = {r["sop_uid"]: r for r in target.index.export(sorted({r["study_uid"] for r in rows}))}
            checks = []
            for row in rows:
                other = theirs.get(row["sop_uid"])
                if other is None:
                    report.mismatches.append((row["sop_uid"], "not in the target"))
                elif (other["study_uid"], other["series_uid"]) != (row["study_uid"], row["series_uid"]):
                    where = f"in study {other['study_uid']} / series {other['series_uid']} of the target"
                    report.mismatches.append((row["sop_uid"], where))
                elif other["size"] != row["size"]:
                    sizes = f"{other['size']} bytes in the target, {row['size']} in the source"
                    report.mismatches.append((row["sop_uid"], sizes))
                else:
                    mine = digests.get(row["sop_uid"])
                    source_digest = _done(mine) if mine is not None else pool.submit(_hash_blob, source, row["path"], row["size"])
                    checks.append((row, source_digest, pool.submit(_hash_blob, target, other["path"], other["size"])))
            for row, source_digest, target_digest in checks:
                try:
                    expected, found = source_digest.result(), target_digest.result()
                except (OSError, ConnectionError) as exc:
                    report.mismatches.append((row["sop_uid"], f"cannot be read: {exc}"))
                    continue
                if found != expected:
                    report.mismatches.append((row["sop_uid"], f"sha256 {found.hex()[:16]}... in the target, "
                                                              f"{expected.hex()[:16]}... in the source"))
            verified += len(rows)
            bar.update(len(rows))
    if report.target_counts.get("instances", 0) < report.source_counts.get("instances", 0):
        report.mismatches.append(("(counts)", f"the target holds {report.target_counts.get('instances', 0)} instances, "
                                              f"the source {report.source_counts.get('instances', 0)}"))
    report.verified = verified


def open_target(folder: str | os.PathLike[str] | None = None, *, database: str | None = None,
                storage: str | None = None, group: str | None = None) -> Store:
    """The store to copy into: a folder (made if missing; the team store it names, if it names one),
    or a team store's database and storage."""
    if database:
        return Store(folder, database=database, storage=storage, group=group)
    if folder is None:
        raise MigrationError("a store to copy into needs a folder, or a team store's database URL and storage")
    options = workspace_store_options(folder, environment=False)
    return Store(folder, database=options.get("database"), storage=options.get("storage"), group=group)


def open_source(folder: str | os.PathLike[str] | None = None, *, database: str | None = None,
                storage: str | None = None) -> Store:
    """The store to copy from: a folder (a workspace store, or the team store it names), or a team
    store's database and storage. A folder that holds no store is refused rather than created."""
    if folder is not None and not database:
        root = Path(folder).expanduser()
        if not (root / INDEX_FILENAME).exists() and not (root / TEAM_STORE_MARKER).exists():
            raise MigrationError(f"there is no store in {root} (no {INDEX_FILENAME}, no {TEAM_STORE_MARKER})")
        return open_target(root)
    if not database or not storage:
        raise MigrationError("a team store to copy from needs both its database URL and its storage")
    return Store(folder, database=database, storage=storage)


__all__ = ["migrate", "MigrationReport", "MigrationError", "MigrationFailed", "open_source", "open_target"]


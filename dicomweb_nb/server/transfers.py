"""The work of the proxy's transfers, run inside jobs (no tornado here).

- ``stow_to_remote``: local instances sent by STOW-RS in batches through the notebook client's
  ``WebSource.store_instances`` (files read one at a time as the socket takes them).
- ``retrieve_from_remote``: a WADO-RS retrieve read as a stream through the client's ``HttpClient``;
  each part goes straight to a file under the store's ``tmp/`` (never a whole instance, let alone a
  whole study, in memory), is fsynced, and is stored in small batches, so a retrieve that breaks
  half way keeps - and reports - every instance that arrived whole.

Remote failures become ``JobError`` with the HTTP status a synchronous caller gets: 504 when the
remote did not answer in time, 502 otherwise, always with the remote's own status and message.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from ..client.http import encode_query
from ..client.stow import batches, response_outcomes
from ..client.web import INSTANCE_ACCEPT, INSTANCE_ACCEPT_FALLBACK, WebSource
from ..dicom import mediatypes as mt
from ..dicom.multipart import MultipartError, MultipartParser, PartBegin, PartData, PartEnd
from ..dicom.uids import UID_RULE, is_valid_uid
from ..errors import ConnectionFailed, DicomWebError, InvalidResponse
from ..fileio import open_private
from ..protocol import StowItem
from ..store import InstanceRow, NotFoundError, Store, describe_failure
from .jobs import (
    ERROR_BAD_REQUEST,
    ERROR_CANNOT_STORE_INSTANCE,
    ERROR_NETWORK_PROTOCOL,
    ERROR_TIMEOUT,
    ERROR_UNAUTHORIZED,
    ERROR_UNKNOWN_RESOURCE,
    JobCancelled,
    JobContext,
    JobError,
)

__all__ = ["Resource", "ResourceError", "parse_stow_resources", "parse_retrieve_resources", "resolve_local",
           "stow_to_remote", "retrieve_from_remote", "remote_failure", "STOW_BATCH_COUNT", "STOW_BATCH_BYTES"]

STOW_BATCH_COUNT = 100
STOW_BATCH_BYTES = 256 * 1024 * 1024
_STORE_BATCH = 16          # instances stored per index transaction during a retrieve ...
_STORE_INTERVAL = 1.0      # ... or at least this often (seconds), so progress and partial results stay current
_CHUNK = 1 << 20
# Orthanc's "Debug" pauses, per instance, to watch progress and cancellation.
RETRIEVE_DEBUG_DELAY = 0.05
STOW_DEBUG_DELAY = 0.1
_MB = 1024 * 1024
# Answers to a retrieve with transfer-syntax=* after which the server's default syntax is asked for.
_FALLBACK_STATUSES = frozenset({400, 406, 415, 501})


class ResourceError(ValueError):
    """A resource of a request that is malformed (``status`` 400) or not in the store (404)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Resource:
    """A study, series or instance, by DICOM UIDs; ``series`` / ``instance`` may be None."""

    study: str | None
    series: str | None = None
    instance: str | None = None

    def public(self) -> dict[str, str]:
        out = {}
        for key, value in (("Study", self.study), ("Series", self.series), ("Instance", self.instance)):
            if value:
                out[key] = value
        return out

    def segments(self) -> list[str]:
        assert self.study
        out = ["studies", self.study]
        if self.series:
            out += ["series", self.series]
        if self.instance:
            out += ["instances", self.instance]
        return out


def _uid(value: Any, what: str) -> str:
    if not is_valid_uid(value):
        raise ResourceError(f"{what} {value!r} is not a DICOM UID ({UID_RULE})")
    return value


def _resource_object(item: Mapping[str, Any], index: int, *, study_required: bool) -> Resource:
    unknown = set(item) - {"Study", "Series", "Instance"}
    if unknown:
        raise ResourceError(f'Resources[{index}]: unknown field(s) {", ".join(sorted(unknown))}; '
                            'use "Study", "Series" and "Instance" (DICOM UIDs)')
    study = _uid(item["Study"], f"Resources[{index}].Study") if item.get("Study") else None
    series = _uid(item["Series"], f"Resources[{index}].Series") if item.get("Series") else None
    instance = _uid(item["Instance"], f"Resources[{index}].Instance") if item.get("Instance") else None
    if study_required and not study:
        raise ResourceError(f'Resources[{index}]: "Study" is required')
    if instance and not series and study_required:
        raise ResourceError(f'Resources[{index}]: "Series" is required with "Instance"')
    if not (study or series or instance):
        raise ResourceError(f'Resources[{index}]: give at least one of "Study", "Series", "Instance"')
    return Resource(study, series, instance)


def _resource_list(value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ResourceError('"Resources" must be a non-empty array')
    return value


def parse_stow_resources(value: Any) -> list[Resource | str]:
    """Resources of a ``/stow`` call: objects ``{"Study", "Series"?, "Instance"?}``, or a bare UID
    string, which is looked up as a study, then a series, then an instance UID (Orthanc takes any
    level's identifier too; its identifiers are its own hashes, ours are DICOM UIDs)."""
    out: list[Resource | str] = []
    for index, item in enumerate(_resource_list(value)):
        if isinstance(item, str):
            if not is_valid_uid(item):
                raise ResourceError(f"Resources[{index}]: {item!r} is not a DICOM UID; this server identifies studies, "
                                    "series and instances by their DICOM UIDs (not by Orthanc's identifiers)")
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(_resource_object(item, index, study_required=False))
        else:
            raise ResourceError(f"Resources[{index}]: expected a UID string or an object with Study/Series/Instance")
    return out


def parse_retrieve_resources(value: Any) -> list[Resource]:
    """Resources of a ``/retrieve`` call: ``{"Study", "Series"?, "Instance"?}`` (a bare string is a study UID)."""
    out = []
    for index, item in enumerate(_resource_list(value)):
        if isinstance(item, str):
            out.append(Resource(_uid(item, f"Resources[{index}]")))
        elif isinstance(item, Mapping):
            out.append(_resource_object(item, index, study_required=True))
        else:
            raise ResourceError(f'Resources[{index}]: expected {{"Study": ..., "Series": ..., "Instance": ...}}')
    return out


def resolve_local(store: Store, resources: Sequence[Resource | str]) -> list[InstanceRow]:
    """The stored instances the resources stand for, each once, in order; 404 for an unknown one."""
    rows: list[InstanceRow] = []
    seen: set[str] = set()
    for resource in resources:
        if isinstance(resource, str):
            found = None
            for args in ((resource,), (None, resource), (None, None, resource)):
                try:
                    found = store.instances(*args)
                    break
                except NotFoundError:
                    continue
            if found is None:
                raise ResourceError(f"{resource} is neither a study, a series nor an instance of this store", 404)
        else:
            try:
                found = store.instances(resource.study, resource.series, resource.instance)
            except NotFoundError as exc:
                raise ResourceError(str(exc), 404) from None
        for row in found:
            if row.sop_uid not in seen:
                seen.add(row.sop_uid)
                rows.append(row)
    return rows


# -- remote failures ----------------------------------------------------------------------------------

def _is_timeout(exc: BaseException) -> bool:
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.exceptions.Timeout, socket.timeout, TimeoutError)):
            return True
        if "timed out" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def remote_failure(exc: DicomWebError, server: str, *, content: dict[str, Any] | None = None,
                   action: str = "the call") -> JobError:
    """A JobError for a remote server's failure: 504 for a timeout, else 502, with its status and message."""
    extra: dict[str, Any] = {"RemoteServer": server}
    if exc.url:
        extra["RemoteUrl"] = exc.url
    if isinstance(exc, ConnectionFailed):
        if _is_timeout(exc):
            return JobError(f"remote DICOMweb server {server!r} did not answer in time during {action}: {exc}",
                            http_status=504, error_code=ERROR_TIMEOUT, details=str(exc), content=content, extra=extra)
        return JobError(f"cannot reach remote DICOMweb server {server!r} during {action}: {exc}", http_status=502,
                        error_code=ERROR_NETWORK_PROTOCOL, details=str(exc), content=content, extra=extra)
    if exc.status is not None:
        extra["RemoteStatus"] = exc.status
    if exc.server_message:
        extra["RemoteMessage"] = exc.server_message
    if isinstance(exc, InvalidResponse):
        return JobError(f"remote DICOMweb server {server!r} answered {action} with something that is not DICOMweb: {exc}",
                        http_status=502, error_code=ERROR_NETWORK_PROTOCOL, details=str(exc), content=content, extra=extra)
    status = exc.status or 0
    code = {401: ERROR_UNAUTHORIZED, 403: ERROR_UNAUTHORIZED, 404: ERROR_UNKNOWN_RESOURCE, 400: ERROR_BAD_REQUEST}.get(
        status, ERROR_NETWORK_PROTOCOL)
    message = f"remote DICOMweb server {server!r} answered {action} with HTTP {status}"
    if exc.server_message:
        message += f": {exc.server_message}"
    return JobError(message, http_status=504 if status == 504 else 502, error_code=code, details=str(exc),
                    content=content, extra=extra)


# -- STOW-RS to a remote ------------------------------------------------------------------------------

def stow_to_remote(ctx: JobContext, source: WebSource, rows: Sequence[InstanceRow], *, server: str,
                   batch_count: int = STOW_BATCH_COUNT, batch_bytes: int = STOW_BATCH_BYTES,
                   debug_delay: float = 0.0) -> dict[str, Any]:
    """Send the instances by STOW-RS in batches; Content lists what the remote accepted or refused."""
    items = [StowItem(row.sop_uid, row.size, row.blob.read, row.sop_uid, row.sop_class_uid, row.study_uid)
             for row in rows]
    accepted: list[str] = []
    refused: list[dict[str, Any]] = []
    sent_bytes = 0
    total = len(items)

    def content() -> dict[str, Any]:
        return {"InstancesCount": total, "SentInstancesCount": len(accepted) + len(refused), "Instances": list(accepted),
                "FailedInstances": list(refused), "NetworkSizeMB": round(sent_bytes / _MB, 3)}

    ctx.update_content(**content())
    for batch in batches(items, max_count=batch_count, max_bytes=batch_bytes):
        ctx.check_cancelled()
        sent_in_batch: set[str] = set()
        done_before = len(accepted) + len(refused)

        def on_sent(item: StowItem, sent_in_batch: set[str] = sent_in_batch, done_before: int = done_before) -> None:
            if debug_delay:
                time.sleep(debug_delay)
            sent_in_batch.add(item.label)
            ctx.set_progress(done_before + len(sent_in_batch), total)
            ctx.check_cancelled()  # raised inside the upload: the request is abandoned mid-body

        try:
            answer = source.store_instances(batch, on_sent=on_sent)
        except DicomWebError as exc:
            raise remote_failure(exc, server, content=content(), action="STOW-RS") from None
        except FileNotFoundError as exc:
            raise JobError(f"a local instance vanished while being sent (deleted or replaced meanwhile): {exc}",
                           http_status=409, error_code=ERROR_UNKNOWN_RESOURCE, content=content()) from None
        sent_bytes += sum(item.size for item in batch)
        outcomes = response_outcomes(answer)
        for item in batch:
            outcome = outcomes.get(item.label)
            if outcome is None:
                refused.append({"SOPInstanceUID": item.label, "Error": "not acknowledged in the remote's STOW-RS answer"})
            elif outcome["status"] == "failed":
                reason = outcome.get("failure_reason")
                refused.append({"SOPInstanceUID": item.label, "FailureReason": reason,
                                "Error": describe_failure(int(reason)) if isinstance(reason, int) else "refused"})
            else:
                accepted.append(item.label)
        ctx.set_progress(len(accepted) + len(refused), total)
        ctx.update_content(**content())
    if refused:
        raise JobError(f"remote DICOMweb server {server!r} refused {len(refused)} of {total} instances",
                       http_status=502, error_code=ERROR_NETWORK_PROTOCOL,
                       details="; ".join(f"{r['SOPInstanceUID']}: {r['Error']}" for r in refused[:10]),
                       content=content(), extra={"RemoteServer": server})
    return content()


# -- WADO-RS from a remote ----------------------------------------------------------------------------

def _count(source: WebSource, resource: Resource) -> int | None:
    """How many instances a resource holds, by QIDO-RS; None when the remote does not say."""
    if resource.instance:
        return 1
    try:
        if resource.series:
            found = source.search("series", [("SeriesInstanceUID", resource.series)], study=resource.study,
                                  fields=["NumberOfSeriesRelatedInstances"], limit=1)
            tag = "00201209"
        else:
            found = source.search("study", [("StudyInstanceUID", resource.study or "")],
                                  fields=["NumberOfStudyRelatedInstances"], limit=1)
            tag = "00201208"
    except ConnectionFailed:
        raise
    except DicomWebError:
        return None
    values = (found[0].get(tag) or {}).get("Value") if found else None
    try:
        return int(values[0]) if values else None
    except (TypeError, ValueError):
        return None


class _Retrieval:
    """State of one retrieve job: what was stored, what failed, the part being written."""

    def __init__(self, ctx: JobContext, store: Store, server: str, debug_delay: float = 0.0):
        self.ctx = ctx
        self.debug_delay = debug_delay
        self.store = store
        self.server = server
        self.stored: list[str] = []
        self.failed: list[dict[str, Any]] = []
        self.pending: list[tuple[Path, str]] = []
        self.network_bytes = 0
        self.total: int | None = None
        self.parts = 0
        self.last_store = time.monotonic()
        self.current: Any = None
        self.current_path: Path | None = None
        self.prefix = f"retrieve-{ctx.job.id[:8]}-{os.getpid()}"

    def content(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ReceivedInstancesCount": len(self.stored), "Instances": list(self.stored),
                               "FailedInstances": list(self.failed),
                               "NetworkUsageMB": round(self.network_bytes / _MB, 3)}
        if self.total is not None:
            out["InstancesCount"] = self.total
        return out

    def begin_part(self, headers: Mapping[str, str]) -> None:
        self.parts += 1
        part_type = (headers.get("content-type") or mt.DICOM).split(";")[0].strip().lower()
        if part_type not in (mt.DICOM, "application/octet-stream"):
            self.failed.append({"Part": self.parts, "Error": f"part {self.parts} is {part_type}, not application/dicom"})
            self.current = None
            return
        self.current_path = self.store.tmp_dir / f"{self.prefix}-{self.parts}.part"
        self.current = open_private(self.current_path, "wb")

    def data(self, data: bytes | memoryview) -> None:
        if self.current is not None:
            self.current.write(data)

    def end_part(self) -> None:
        if self.current is None:
            return
        fp, path = self.current, self.current_path
        self.current = self.current_path = None
        try:
            fp.flush()
            os.fsync(fp.fileno())
        finally:
            fp.close()
        assert path is not None
        self.pending.append((path, f"part {self.parts}"))
        if self.debug_delay:
            time.sleep(self.debug_delay)
        self.ctx.check_cancelled()  # one chunk of the answer may hold many parts: check between them
        if len(self.pending) >= _STORE_BATCH or time.monotonic() - self.last_store >= _STORE_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Store the complete parts received so far (one index transaction)."""
        self.last_store = time.monotonic()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        try:
            outcomes = self.store.store_files([p for p, _ in pending], sources=[s for _, s in pending])
        finally:
            for path, _ in pending:  # refused files are left in tmp/ by the store
                _unlink(path)
        for outcome in outcomes:
            if outcome.stored and outcome.sop_uid:
                self.stored.append(outcome.sop_uid)
            else:
                reason = describe_failure(outcome.failure_reason) if outcome.failure_reason else "not stored"
                self.failed.append({"Part": outcome.source, "SOPInstanceUID": outcome.sop_uid,
                                    "Error": f"{reason}: {outcome.message}" if outcome.message else reason})
        self.ctx.set_progress(len(self.stored) + len(self.failed), self.total)
        self.ctx.update_content(**self.content())

    def abandon_part(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        if self.current_path is not None:
            _unlink(self.current_path)
            self.current_path = None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def iter_available(response: requests.Response, size: int = _CHUNK) -> Iterator[bytes]:
    """The answer's bytes as they arrive (up to ``size`` at a time), decoded if the server compressed them.

    Not ``iter_content``: it waits for ``size`` bytes, so parts of a slow answer would be stored late,
    and the bytes of a last read cut short by the remote are lost with the error.
    """
    raw = response.raw
    while True:
        chunk = raw.read1(size, decode_content=True)
        if not chunk:
            return
        yield chunk


def _open_retrieve(source: WebSource, url: str, headers: dict[str, str], universal: bool) -> requests.Response:
    headers = {"Accept-Encoding": "identity", **headers}  # pixel data does not compress; read it as sent
    if any(k.lower() == "accept" for k in headers):
        return source.http.get(url, stream=True, headers=headers)
    if universal:
        try:
            return source.http.get(url, accept=INSTANCE_ACCEPT, stream=True, headers=headers)
        except DicomWebError as exc:
            if exc.status not in _FALLBACK_STATUSES:
                raise
    return source.http.get(url, accept=INSTANCE_ACCEPT_FALLBACK, stream=True, headers=headers)


def _stream_parts(state: _Retrieval, response: requests.Response) -> None:
    content_type = response.headers.get("Content-Type", "")
    try:
        media = mt.parse_media_type(content_type) if content_type else None
    except mt.MediaTypeError:
        media = None
    parser: MultipartParser | None = None
    if media is not None and media.type == mt.MULTIPART_RELATED:
        boundary = media.params.get("boundary")
        if not boundary:
            raise InvalidResponse(f"GET {response.url}: multipart answer without a boundary", status=response.status_code,
                                  url=response.url)
        parser = MultipartParser(boundary)
    elif media is not None and media.type == mt.DICOM:
        state.begin_part({"content-type": mt.DICOM})  # a lone instance, not wrapped in multipart
    else:
        raise InvalidResponse(f'GET {response.url}: expected multipart/related; type="application/dicom", '
                              f"got {content_type or 'no Content-Type'}", status=response.status_code, url=response.url)
    try:
        for chunk in iter_available(response):
            if state.ctx.cancelled:
                raise JobCancelled()
            state.network_bytes += len(chunk)
            if parser is None:
                state.data(chunk)
                continue
            for event in parser.feed(chunk):
                if isinstance(event, PartBegin):
                    state.begin_part(event.headers)
                elif isinstance(event, PartData):
                    state.data(event.data)
                elif isinstance(event, PartEnd):
                    state.end_part()
            if parser.complete:
                break
        if parser is None:
            state.end_part()
        else:
            parser.finish()
    except MultipartError as exc:
        raise InvalidResponse(f"GET {response.url}: the multipart answer is malformed or cut short ({exc})",
                              status=response.status_code, url=response.url) from exc
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ConnectionFailed(f"GET {response.url}: the connection broke while reading the answer: {exc}",
                               url=response.url, method="GET") from exc
    finally:
        response.close()


def retrieve_from_remote(ctx: JobContext, source: WebSource, store: Store, resources: Sequence[Resource], *,
                         server: str, headers: Mapping[str, str] | None = None,
                         arguments: Sequence[tuple[str, str]] = (), universal: bool = True,
                         debug_delay: float = 0.0) -> dict[str, Any]:
    """Download the resources by WADO-RS into the store, part by part; Content lists the stored SOP
    Instance UIDs (``Instances``) and anything the remote sent that could not be stored."""
    state = _Retrieval(ctx, store, server, debug_delay)
    try:
        counts = []
        for resource in resources:
            ctx.check_cancelled()
            counts.append(_count(source, resource))
        known = [c for c in counts if c is not None]
        state.total = sum(known) if len(known) == len(counts) else None
        ctx.update_content(**state.content())
        for resource in resources:
            ctx.check_cancelled()
            url = source.http.url(*resource.segments())
            if arguments:
                url += "?" + encode_query(list(arguments))
            response = _open_retrieve(source, url, dict(headers or {}), universal)
            _stream_parts(state, response)
            state.flush()
    except DicomWebError as exc:
        state.abandon_part()
        state.flush()
        raise remote_failure(exc, server, content=state.content(), action="WADO-RS retrieve") from None
    except BaseException:
        state.abandon_part()
        state.flush()
        ctx.update_content(**state.content())
        raise
    if state.failed:
        raise JobError(f"{len(state.failed)} of the instances sent by remote DICOMweb server {server!r} could not be "
                       f"stored ({len(state.stored)} were)", http_status=502, error_code=ERROR_CANNOT_STORE_INSTANCE,
                       details="; ".join(str(f.get("Error")) for f in state.failed[:10]), content=state.content(),
                       extra={"RemoteServer": server})
    return state.content()

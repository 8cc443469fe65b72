"""STOW-RS (PS3.18 10.5): ``POST {root}/studies[/{study}]``, streamed to disk part by part.

The body is never held in memory: each part of the multipart/related body is written to a file
under the store's tmp/ as it arrives (tornado ``stream_request_body``), then all parts are
checked and indexed together. A bad part fails alone; the good ones are stored.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..dicom import mediatypes as mt
from ..dicom.dicomjson import json_to_xml
from ..dicom.multipart import MultipartError, MultipartParser, PartBegin, PartData, PartEnd
from ..dicom.stow import FAILURE_CANNOT_UNDERSTAND, FAILURE_PROCESSING, describe_failure, is_referenced, response_dataset
from ..fileio import open_private
from ..store import ParsedFile, StoreOutcome, parse_file, parse_files
from .base import DRAIN_LIMIT, ApiError, StreamedBodyMixin
from .qido import QidoMixin

_ACCEPTED_PART_TYPES = ("application/dicom", "application/octet-stream")


# fsync blocks on the disk, not the CPU: several in flight let the filesystem commit them together
# (50 small files: 10 ms here, against 140-230 ms one after the other).
_FSYNC_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomweb-fsync")
# A part at least this large is parsed as soon as it is complete, overlapping the rest of the upload.
# Smaller ones are parsed together, in the one worker call that stores the request: handing each to a
# worker and its answer back to the event loop cost more than parsing it (a 3 KB CT instance). Every
# part's fsync starts as soon as it is complete, overlapping the parsing. Server CPU per instance of a
# 50-part STOW of 3 KB instances, 1 worker: 1.45 -> 1.16 ms, with a server of each version answering
# alternate requests (load average 5.5-6; README, issue 13).
EARLY_PARSE_BYTES = 256 << 10


@dataclass
class _Part:
    number: int
    path: Path | None = None
    file: BinaryIO | None = None
    rejected: str | None = None  # why the part was refused before reading it
    synced: Future | None = None  # fsync + close, started as soon as the part is complete
    parsed: Future | None = None  # parse_file of a large part, started at the same moment (ParsedFile)
    size: int = 0


def _sync_and_close(fp: BinaryIO) -> None:
    try:
        fp.flush()
        os.fsync(fp.fileno())
    finally:
        fp.close()


class StowMixin(StreamedBodyMixin):
    """POST handler body; combined with the QIDO / WADO GET handlers on the same URLs. A refusal
    (of the headers, of a part, of the size) is answered once the body is drained (StreamedBodyMixin)."""

    _stow_parser: MultipartParser | None = None
    _stow_parts: list[_Part]
    _stow_received = 0
    _stow_single: _Part | None = None

    async def prepare_body(self) -> None:
        self._stow_parts = []
        if self.request.method != "POST":
            return
        self._stow_response_type, _ = self.choose([mt.DICOM_JSON, mt.JSON, mt.DICOM_XML])
        ctype = self._stow_content_type()
        limit = self.ctx.config.max_upload_size
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"the upload is {int(length)} bytes; this server accepts at most {limit} (max_upload_size)")
        # Tornado answers a chunked body over its limit with a bare "400" and a closed connection, so
        # its limit sits a little above ours: this handler counts the bytes, drains up to DRAIN_LIMIT
        # more, and answers 413 with a message (a body with Content-Length was refused above).
        self.http_connection.set_max_body_size(limit + DRAIN_LIMIT)
        if ctype.type == mt.DICOM:
            # Not in PS3.18, but convenient for curl: a single Part 10 file as the whole body.
            self._stow_single = self._open_part(1)
            self._stow_parts.append(self._stow_single)
            return
        boundary = ctype.params.get("boundary")
        if not boundary:
            raise ApiError(400, "the multipart/related Content-Type has no boundary parameter")
        try:
            self._stow_parser = MultipartParser(boundary)
        except MultipartError as exc:
            raise ApiError(400, str(exc)) from None

    def _stow_content_type(self) -> mt.MediaType:
        """The request's Content-Type, if STOW-RS takes it (415 or 400 otherwise)."""
        raw_type = self.request.headers.get("Content-Type", "")
        if not raw_type:
            raise ApiError(415, 'STOW-RS needs Content-Type: multipart/related; type="application/dicom"; boundary=...')
        try:
            ctype = mt.parse_media_type(raw_type)
        except mt.MediaTypeError as exc:
            raise ApiError(400, f"malformed Content-Type: {exc}") from None
        if ctype.type == mt.DICOM:
            return ctype
        if ctype.type != mt.MULTIPART_RELATED:
            raise ApiError(415, f'STOW-RS accepts multipart/related; type="application/dicom", not {ctype.type}')
        part_type = ctype.params.get("type", mt.DICOM).lower()
        if part_type in (mt.DICOM_JSON, mt.DICOM_XML, mt.JSON):
            raise ApiError(
                415, f"STOW-RS of metadata and bulk data ({part_type}) is not supported; send Part 10 files as application/dicom"
            )
        if part_type != mt.DICOM:
            raise ApiError(415, f'STOW-RS parts must be application/dicom, not {part_type}')
        return ctype

    def _open_part(self, number: int) -> _Part:
        path = self.store.tmp_dir / f"stow-{os.getpid()}-{id(self)}-{number}.part"
        return _Part(number, path, open_private(path, "wb"))

    def data_received(self, chunk: bytes) -> None:
        if self.refusing() or self.request.method != "POST":
            return
        self._stow_received += len(chunk)
        if self._stow_received > self.ctx.config.max_upload_size:
            self._refuse_body(ApiError(413, f"the upload exceeds {self.ctx.config.max_upload_size} bytes (max_upload_size)"))
            return
        if self._stow_single is not None:
            assert self._stow_single.file is not None
            self._stow_single.file.write(chunk)
            self._stow_single.size += len(chunk)
            return
        assert self._stow_parser is not None
        try:
            events = self._stow_parser.feed(chunk)
        except MultipartError as exc:
            self._refuse_body(ApiError(400, f"malformed multipart body: {exc}"))
            return
        for event in events:
            if isinstance(event, PartBegin):
                part_type = (event.content_type or mt.DICOM).split(";")[0].strip().lower()
                number = len(self._stow_parts) + 1
                if part_type not in _ACCEPTED_PART_TYPES:
                    self._stow_parts.append(_Part(number, rejected=f"part {number} is {part_type}, not application/dicom"))
                else:
                    self._stow_parts.append(self._open_part(number))
            elif isinstance(event, PartData):
                current = self._stow_parts[-1]
                if current.file is not None:
                    current.file.write(event.data)
                    current.size += len(event.data)
            elif isinstance(event, PartEnd):
                self._part_complete(self._stow_parts[-1])

    def _part_complete(self, part: _Part) -> None:
        """A part is all here: its fsync starts (overlapping the parts still arriving and the parsing),
        and so does the parsing of a large one; the index write waits for both."""
        if part.file is None:
            return
        part.file.flush()  # the parser reads the file while the fsync runs
        part.synced = _FSYNC_POOL.submit(_sync_and_close, part.file)
        if part.size >= EARLY_PARSE_BYTES:
            assert self.ctx.cpu is not None
            part.parsed = self.ctx.cpu.submit(parse_file, part.path, self.store.tmp_dir, f"part {part.number}",
                                              owned=True, synced=True)

    def _refuse_body(self, refusal: ApiError) -> None:
        """A refusal found in the body: the rest is drained (tornado's limit, set in prepare_body,
        stops a body far over max_upload_size), then answered."""
        self.keep_refusal(refusal)
        self._close_parts()

    def _close_parts(self) -> None:
        for part in self._stow_parts:
            if part.synced is None and part.file is not None and not part.file.closed:
                part.file.close()  # parts with an fsync under way are closed by it

    def _discard_parts(self) -> None:
        self._close_parts()
        for part in self._stow_parts:
            if part.path is not None:
                try:
                    part.path.unlink()
                except FileNotFoundError:
                    pass

    def on_finish(self) -> None:
        if getattr(self, "_stow_parts", None):
            self._discard_parts()  # stored parts were moved away; anything left is a leftover
        super().on_finish()

    def on_connection_close(self) -> None:
        if getattr(self, "_stow_parts", None):
            self._discard_parts()
        super().on_connection_close()

    async def post(self, study: str | None = None) -> None:
        if study is not None:
            study = self.uid(study, "StudyInstanceUID")
        if self._stow_parser is not None:
            try:
                self._stow_parser.finish()
            except MultipartError as exc:
                raise ApiError(400, f"malformed multipart body: {exc}") from None
        if not self._stow_parts:
            raise ApiError(400, "the multipart body holds no parts")
        if self._stow_single is not None and self._stow_single.synced is None:
            self._part_complete(self._stow_single)
        outcomes = await self.run_blocking(self._store_parts, study)
        rejected = [
            StoreOutcome(
                None, None, failure_reason=FAILURE_CANNOT_UNDERSTAND, message=p.rejected or "", source=f"part {p.number}"
            )
            for p in self._stow_parts
            if p.rejected
        ]
        self._respond(outcomes + rejected, study)

    def _store_parts(self, study: str | None) -> list[StoreOutcome]:
        """On a worker thread: parse the small parts (in the CPU pool when it has processes, one task
        per pool process), wait for the large ones' parsing and every fsync, and store them all (one
        index transaction)."""
        parts = [p for p in self._stow_parts if p.path is not None and not p.rejected]
        small = [p for p in parts if p.parsed is None]
        assert self.ctx.cpu is not None
        uploads = [(p.path, f"part {p.number}") for p in small if p.path is not None]
        if self.ctx.cpu.in_processes and uploads:
            # One task per pool process, each a share of the parts: the pool's processes parse at once.
            shares = min(len(uploads), self.ctx.cpu.processes)
            tasks = [self.ctx.cpu.submit(parse_files, uploads[i::shares], self.store.tmp_dir) for i in range(shares)]
            results = [task.result() for task in tasks]
            small_parsed = [results[i % shares][i // shares] for i in range(len(uploads))]
        else:
            small_parsed = parse_files(uploads, self.store.tmp_dir)
        by_part = dict(zip(map(id, small), small_parsed))
        parsed: list[ParsedFile] = []
        for part in parts:
            parsed.append(part.parsed.result() if part.parsed is not None else by_part[id(part)])
            if parsed[-1].record is not None:
                part.path = parsed[-1].path  # a rewrite replaced it
        for part in parts:
            if part.synced is not None:
                part.synced.result()  # blob durable before its index row
        return self.store.store_parsed(parsed, expected_study=study)

    def _respond(self, outcomes: list[StoreOutcome], study: str | None) -> None:
        body = response_dataset(outcomes, self.url_builder(), study)
        status = stow_status(outcomes)
        for message in failure_messages(outcomes)[:20]:
            self.add_header("Warning", f'299 dicomweb-nb "{_header_safe(message)}"')
        if self._stow_response_type == mt.DICOM_XML:
            self.set_status(status)
            self.set_header("Content-Type", "application/dicom+xml")
            self.finish(json_to_xml(body))
        else:
            self.write_json(body, status, self._stow_response_type)


def stow_status(outcomes: list[StoreOutcome]) -> int:
    """The HTTP status of a STOW-RS answer (PS3.18 10.5.3): 200 all stored; 202 some failed or carry
    warnings; 409 none stored."""
    failed = any(not is_referenced(o) for o in outcomes)
    warnings = any(o.warning_reason is not None for o in outcomes)
    if not failed and not warnings:
        return 200
    return 202 if any(is_referenced(o) for o in outcomes) else 409


def failure_messages(outcomes: list[StoreOutcome]) -> list[str]:
    """One readable line per instance not stored (``Warning`` headers of the answer)."""
    return [f"{o.source}: {o.message or describe_failure(o.failure_reason or FAILURE_PROCESSING)}"
            for o in outcomes if not is_referenced(o)]


class StudiesMixin(StowMixin, QidoMixin):
    """``/studies``: GET searches studies (QIDO-RS), POST stores instances (STOW-RS)."""


def _header_safe(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 and ch != '"' else "'" if ch == '"' else " " for ch in text)[:300]

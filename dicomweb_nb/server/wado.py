"""WADO-RS (PS3.18 10.4): retrieve instances, metadata, frames and bulk data from the store.

Instances stream from disk in chunks with back-pressure (``await flush()``), so a 2 GB study
never sits in memory; metadata comes from the DICOM JSON computed at ingest; uncompressed frames
come from the byte offsets recorded at ingest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from functools import partial
from typing import Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..dicom import mediatypes as mt
from ..dicom.dicomjson import absolutize_bulk_uris, json_to_xml
from ..dicom.multipart import MultipartWriter
from ..store import InstanceRow, NotFoundError, reader
from ..store import transcode as tc
from ..store.ingest import read_instance
from . import queryparams as qp
from .base import ApiError, DicomWebMixin
from .stow import StowMixin
from .streaming import Piece, StreamingMixin

_XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'


# -- transfer syntax negotiation ------------------------------------------------------------------

@dataclass
class InstanceDelivery:
    """How retrieved instances are sent: container (multipart, zip, single) and transfer syntax."""

    container: str  # "multipart" | "zip" | "single"
    transfer_syntax: str  # a UID, or "*" for as stored


def choose_instance_delivery(accepted: list[mt.MediaType], rows: list[InstanceRow], *, allow_single: bool) -> InstanceDelivery:
    """The first acceptable media range the server can satisfy for every instance (PS3.18 8.7.3)."""
    reasons: list[str] = []
    for rng in accepted:
        if rng.type in (mt.MULTIPART_RELATED, "multipart/*", "*/*"):
            part_type = rng.params.get("type", mt.DICOM).lower() if rng.type == mt.MULTIPART_RELATED else mt.DICOM
            if part_type not in (mt.DICOM, "application/*", "*/*"):
                reasons.append(f"{rng}: instances are application/dicom")
                continue
            container = "multipart"
        elif rng.type == mt.ZIP:
            container = "zip"
        elif rng.type in (mt.DICOM, "application/*"):
            container = "single" if allow_single else "multipart"
        else:
            reasons.append(f"{rng.type} is not a media type for DICOM instances")
            continue
        ts = rng.params.get("transfer-syntax", ExplicitVRLittleEndian if rng.type != mt.ZIP else "*")
        problem = next((p for p in (tc.transcode_problem(row, ts) for row in rows) if p), None)
        if problem:
            reasons.append(problem)
            continue
        return InstanceDelivery(container, ts)
    raise ApiError(406, "cannot produce an acceptable answer: " + "; ".join(reasons or ["no acceptable media type"]))


class RetrieveMixin(StreamingMixin):
    """Streams instances of a study, series or one instance."""

    async def retrieve(self, study: str, series: str | None = None, instance: str | None = None) -> None:
        qp.warn_unknown(self, qp.RETRIEVE)
        rows = ([await self.instance_row(study, series, instance)] if instance is not None
                else await self.run_blocking(self.store.instances, study, series, instance))
        delivery = choose_instance_delivery(self.accepted(), rows, allow_single=instance is not None)
        url = self.url_builder()
        if delivery.container == "zip":
            await self._send_zip(rows, delivery.transfer_syntax)
            return
        writer = MultipartWriter() if delivery.container == "multipart" else None
        pieces: list[Piece] = []
        first_ts = ""
        for row in rows:
            ts = row.transfer_syntax if delivery.transfer_syntax == "*" else delivery.transfer_syntax
            first_ts = first_ts or ts
            head = b""
            if writer is not None:
                head = writer.part_head(f"{mt.DICOM}; transfer-syntax={ts}",
                                        {"Content-Location": url(row.study_uid, row.series_uid, row.sop_uid)})
            if ts == row.transfer_syntax:
                pieces.append(Piece(head, row.blob, 0, row.size))
            else:
                pieces.append(Piece(head, compute=partial(tc.transcode_file, row.blob, ts)))
        if writer is not None:
            self.set_header("Content-Type", mt.multipart_content_type(mt.DICOM, writer.boundary))
        else:
            self.set_header("Content-Type", f"{mt.DICOM}; transfer-syntax={first_ts}")
        await self.send_pieces(pieces, writer.close() if writer is not None else b"")

    async def _send_zip(self, rows: list[InstanceRow], transfer_syntax: str) -> None:
        self.set_header("Content-Type", mt.ZIP)
        self.set_header("Content-Disposition", 'attachment; filename="dicom.zip"')
        sink = _ChunkSink()
        archive = zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        for row in rows:
            name = f"{row.study_uid}/{row.series_uid}/{row.sop_uid}.dcm"
            if transfer_syntax in ("*", row.transfer_syntax):
                with archive.open(zipfile.ZipInfo(name), mode="w", force_zip64=row.size > 0x7FFFFFFF) as entry:
                    chunks = reader.iter_file(row)
                    while True:
                        data = await self.run_blocking(next, chunks, None)
                        if data is None:
                            break
                        entry.write(data)
                        self.write(sink.take())
                        await self.flush()
            else:
                archive.writestr(name, await self.run_blocking(tc.transcode_file, row.blob, transfer_syntax))
            self.write(sink.take())
            await self.flush()
        archive.close()
        self.write(sink.take())
        self.finish()


class _ChunkSink(io.RawIOBase):
    """A write-only, unseekable stream zipfile writes into; the handler drains it as it goes."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class StudyMixin(StowMixin, RetrieveMixin):
    """``/studies/{study}``: GET retrieves the study, POST stores into it."""

    async def get(self, study: str) -> None:
        await self.retrieve(self.uid(study, "StudyInstanceUID"))


class SeriesMixin(RetrieveMixin):
    async def get(self, study: str, series: str) -> None:
        await self.retrieve(self.uid(study, "StudyInstanceUID"), self.uid(series, "SeriesInstanceUID"))


class InstanceMixin(RetrieveMixin):
    async def get(self, study: str, series: str, instance: str) -> None:
        await self.retrieve(self.uid(study, "StudyInstanceUID"), self.uid(series, "SeriesInstanceUID"),
                            self.uid(instance, "SOPInstanceUID"))


# -- metadata ------------------------------------------------------------------------------------

# Instance-level attributes Orthanc keeps as "main DICOM tags" (MainDicomTags mode).
_MAIN_INSTANCE_TAGS = {
    "00080016", "00080018", "00080012", "00080013", "00200013", "00201041", "00280008", "00200100", "00200012",
    "00200032", "00200037", "00204000", "00280010", "00280011", "00280100", "00280002", "00280004",
}


class MetadataMixin(DicomWebMixin):
    """``.../metadata`` at study, series and instance level: DICOM JSON (default) or XML."""

    async def get(self, study: str, series: str | None = None, instance: str | None = None) -> None:
        study = self.uid(study, "StudyInstanceUID")
        series = self.uid(series, "SeriesInstanceUID") if series else None
        instance = self.uid(instance, "SOPInstanceUID") if instance else None
        qp.warn_unknown(self, qp.METADATA)
        rows = await self.run_blocking(self.store.instances, study, series, instance)
        media_type, _ = self.choose([mt.DICOM_JSON, mt.JSON, _XML_MULTIPART])
        qp.check_charset(self.get_query_arguments("charset"), ["utf-8"], "DICOM JSON and XML metadata")
        config = self.ctx.config
        mode = "Full"
        if instance is None:
            mode = config.series_metadata if series else config.studies_metadata
        newest = max(r.stored for r in rows)
        representation = f"{len(rows)}:{newest}:{mode}:{config.other_binary_mode}:{media_type}:{self.public_root()}"
        etag = '"' + hashlib.sha1(representation.encode()).hexdigest()[:20] + '"'
        self.set_header("ETag", etag)
        self.set_header("Last-Modified", formatdate(newest, usegmt=True))
        self.set_header("Cache-Control", "private, no-cache")
        if self._not_modified(etag, newest):
            self.set_status(304)
            self.finish()
            return
        url = self.url_builder()
        level = "instance" if instance else "series" if series else "study"
        texts = await self.run_blocking(self._metadata_texts, rows, mode, level, url)
        if media_type == _XML_MULTIPART:
            writer = MultipartWriter()
            self.set_header("Content-Type", mt.multipart_content_type(mt.DICOM_XML, writer.boundary))
            for text in texts:
                self.write(writer.part_head(mt.DICOM_XML))
                self.write(json_to_xml(json.loads(text)))
            self.finish(writer.close())
            return
        body = ("[" + ",".join(texts) + "]").encode("utf-8")
        self.set_header("Content-Type", media_type)
        self.finish(self._maybe_gzip(body))

    def _not_modified(self, etag: str, newest: float) -> bool:
        inm = self.request.headers.get("If-None-Match")
        if inm:
            return etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*"
        ims = self.request.headers.get("If-Modified-Since")
        if ims:
            try:
                return int(newest) <= parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                return False
        return False

    def _maybe_gzip(self, body: bytes) -> bytes:
        if len(body) < 1024 or "gzip" not in self.request.headers.get("Accept-Encoding", ""):
            return body
        self.set_header("Content-Encoding", "gzip")
        self.add_header("Vary", "Accept-Encoding")
        return gzip.compress(body, compresslevel=4)

    def _metadata_texts(self, rows: list[InstanceRow], mode: str, level: str, url: Any) -> list[str]:
        config = self.ctx.config
        if mode == "Full":
            texts = []
            for row in rows:
                text = row.metadata_text if config.enable_metadata_cache else _reread_metadata(row)
                if config.other_binary_mode == "InlineBinary":
                    text = tc.inline_other_binary(row, text)
                texts.append(absolutize_bulk_uris(text, url(row.study_uid, row.series_uid, row.sop_uid)))
            return texts
        objects = [json.loads(row.metadata_text) for row in rows]
        level_keys = self._main_keys(objects[0] if objects else {})
        extrapolated: dict[str, Any] = {}
        if mode == "Extrapolate":
            names = config.series_metadata_extrapolated_tags if level == "series" else config.studies_metadata_extrapolated_tags
            extrapolated = _extrapolate(objects, names)
        out = []
        for obj in objects:
            reduced = {k: v for k, v in obj.items() if k in level_keys and "BulkDataURI" not in v}
            reduced.update(extrapolated)
            out.append(json.dumps(dict(sorted(reduced.items())), separators=(",", ":"), ensure_ascii=False))
        return out

    @staticmethod
    def _main_keys(sample: dict[str, Any]) -> set[str]:
        from ..dicom.tags import level_of

        keys = {k for k in sample if level_of(int(k, 16)) in ("study", "series")}
        return keys | _MAIN_INSTANCE_TAGS


def _extrapolate(objects: list[dict[str, Any]], keywords: Iterable[str]) -> dict[str, Any]:
    """Orthanc's Extrapolate mode: a tag's value when most of 3 sampled instances agree on it."""
    from ..dicom.tags import parse_tag, tag_hex

    if not objects:
        return {}
    picks = [objects[i * (len(objects) - 1) // 2] for i in range(3)] if len(objects) >= 3 else objects
    out: dict[str, Any] = {}
    for keyword in keywords:
        key = tag_hex(parse_tag(keyword))
        values = [json.dumps(o.get(key), sort_keys=True) for o in picks if key in o]
        if not values:
            continue
        best = max(set(values), key=values.count)
        if values.count(best) * 2 > len(picks):
            out[key] = json.loads(best)
    return out


# -- frames and bulk data ----------------------------------------------------------------------

_FRAME_LIST = re.compile(r"^\d+(,\d+)*$")


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` -> [1, 3, 5]; raises ApiError(400) for anything else."""
    cleaned = text.replace(" ", "").replace("%2C", ",").replace("%2c", ",")
    if not _FRAME_LIST.match(cleaned):
        raise ApiError(400, f"malformed frame list {text!r}: expected comma-separated frame numbers such as 1,3,5")
    numbers = [int(n) for n in cleaned.split(",")]
    if any(n < 1 for n in numbers):
        raise ApiError(400, "frame numbers start at 1")
    return numbers


class FramesMixin(StreamingMixin):
    """``.../frames/{list}``: raw (octet-stream) or compressed bitstreams of selected frames."""

    async def get(self, study: str, series: str, instance: str, frame_list: str) -> None:
        study, series, instance = (self.uid(study, "StudyInstanceUID"), self.uid(series, "SeriesInstanceUID"),
                                   self.uid(instance, "SOPInstanceUID"))
        numbers = parse_frame_list(frame_list)
        qp.warn_unknown(self, qp.FRAMES)
        row = await self.instance_row(study, series, instance)
        count = reader.frame_count(row)
        if not count:
            raise ApiError(404, f"instance {instance} has no pixel data, so no frames")
        bad = [n for n in numbers if n > count]
        if bad:
            raise ApiError(404, f"frame {bad[0]} is out of range: instance {instance} has {count} frame(s)")
        part_type, ts, single = self._negotiate(row)
        writer = None if single else MultipartWriter()
        if writer is not None:
            self.set_header("Content-Type", mt.multipart_content_type(part_type, writer.boundary))
        else:
            self.set_header("Content-Type", f"{part_type}; transfer-syntax={ts}")
        base = self.url_builder()(study, series, instance)
        slices = [s for s in (tc.stored_frame_slice(row, n - 1, ts) for n in numbers) if s is not None]
        if len(slices) == len(numbers):
            # Each frame is one range of the stored file: sent from it as it is (sendfile(2) when local).
            part_head = f"{part_type}; transfer-syntax={ts}"
            pieces = [Piece(writer.part_head(part_head, {"Content-Location": f"{base}/frames/{n}"}) if writer else b"",
                            row.blob, offset, length)
                      for n, (offset, length) in zip(numbers, slices)]
            await self.send_pieces(pieces, writer.close() if writer is not None else b"")
            return
        for n in numbers:
            data = await self.run_blocking(tc.frame_bytes, row, n - 1, ts)
            if writer is not None:
                self.write(writer.part_head(f"{part_type}; transfer-syntax={ts}", {"Content-Location": f"{base}/frames/{n}"}))
            self.write(data)
            await self.flush()
        if writer is not None:
            self.write(writer.close())
        self.finish()

    def _negotiate(self, row: InstanceRow) -> tuple[str, str, bool]:
        """(part media type, transfer syntax, single-part) for the frames of ``row``."""
        stored_type = mt.TRANSFER_SYNTAX_MEDIA_TYPES.get(row.transfer_syntax)
        reasons = []
        for rng in self.accepted():
            multipart = rng.type in (mt.MULTIPART_RELATED, "multipart/*", "*/*")
            wanted = (rng.params.get("type", "*/*") if rng.type == mt.MULTIPART_RELATED else
                      "*/*" if multipart else rng.type).lower()
            single = not multipart
            ts = rng.params.get("transfer-syntax")
            if wanted in ("*/*", "image/*") and stored_type and ts in (None, "*", row.transfer_syntax):
                return stored_type, row.transfer_syntax, single  # anything goes: the stored bitstream
            if wanted in ("*/*", mt.OCTET_STREAM, "application/*"):
                ts = ts or ExplicitVRLittleEndian
                if ts == "*":
                    if row.transfer_syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
                        return mt.OCTET_STREAM, ExplicitVRLittleEndian, single  # frames are never deflated nor big endian
                    return stored_type or mt.OCTET_STREAM, row.transfer_syntax, single
                if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and tc.can_decode(row.transfer_syntax):
                    return mt.OCTET_STREAM, ExplicitVRLittleEndian, single
                reasons.append(f"frames cannot be sent as {ts}")
                continue
            if wanted == stored_type and ts in (None, "*", row.transfer_syntax):
                return stored_type, row.transfer_syntax, single
            if wanted.startswith(("image/", "video/")) and ts and tc.can_encode_frames(ts, row):
                return wanted, ts, single
            reasons.append(f"frames of this instance are stored as {row.transfer_syntax}"
                           f" ({stored_type or 'uncompressed'}), not {wanted}{'; transfer-syntax=' + ts if ts else ''}")
        raise ApiError(406, "cannot send frames in an acceptable form: " + "; ".join(reasons))


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class BulkDataMixin(StreamingMixin):
    """``.../bulk/{tag path}``: the value of a binary element (BulkDataURI target), with HTTP Range."""

    async def get(self, study: str, series: str, instance: str, path: str) -> None:
        study, series, instance = (self.uid(study, "StudyInstanceUID"), self.uid(series, "SeriesInstanceUID"),
                                   self.uid(instance, "SOPInstanceUID"))
        qp.warn_unknown(self, qp.BULKDATA)
        rows = await self.run_blocking(self.store.instances, study, series, instance)
        row = rows[0]
        is_pixels = path.strip("/").upper() in ("7FE00010", "7FE00008", "7FE00009")
        if is_pixels and row.layout.encapsulated:
            await self._send_encapsulated_frames(row, study, series, instance)
            return
        try:
            data = await self.run_blocking(_bulk_bytes, row, path, is_pixels)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        multipart = any(r.type == mt.MULTIPART_RELATED for r in self.accepted()[:1])
        self.set_header("Accept-Ranges", "bytes")
        start, end = self._range(len(data))
        body = data[start:end]
        if multipart:
            writer = MultipartWriter()
            self.set_header("Content-Type", mt.multipart_content_type(mt.OCTET_STREAM, writer.boundary))
            body = writer.part_head(mt.OCTET_STREAM) + body + writer.close()
        else:
            self.set_header("Content-Type", mt.OCTET_STREAM)
        self.finish(body)

    def _range(self, size: int) -> tuple[int, int]:
        header = self.request.headers.get("Range")
        if not header:
            return 0, size
        m = _RANGE.match(header.strip())
        if not m or (not m.group(1) and not m.group(2)):
            return 0, size  # unsupported forms (several ranges) get the whole value, as RFC 9110 allows
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)) + 1, size) if m.group(2) else size
        else:
            start, end = max(size - int(m.group(2)), 0), size
        if start >= size or start >= end:
            raise ApiError(416, f"range {header} is outside the {size}-byte value", Content_Range=f"bytes */{size}")
        self.set_status(206)
        self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        return start, end

    async def _send_encapsulated_frames(self, row: InstanceRow, study: str, series: str, instance: str) -> None:
        # Compressed pixel data as bulk data is the multipart of its frames' bitstreams (PS3.18 8.7.3.4).
        writer = MultipartWriter()
        part_type = mt.TRANSFER_SYNTAX_MEDIA_TYPES.get(row.transfer_syntax, mt.OCTET_STREAM)
        self.set_header("Content-Type", mt.multipart_content_type(part_type, writer.boundary))
        base = self.url_builder()(study, series, instance)
        for index in range(reader.frame_count(row)):
            data = await self.run_blocking(tc.frame_bytes, row, index, row.transfer_syntax)
            self.write(writer.part_head(f"{part_type}; transfer-syntax={row.transfer_syntax}",
                                        {"Content-Location": f"{base}/frames/{index + 1}"}))
            self.write(data)
            await self.flush()
        self.finish(writer.close())


def _bulk_bytes(row: InstanceRow, path: str, is_pixels: bool) -> bytes:
    if is_pixels and path.strip("/").upper() == "7FE00010":
        return tc.native_pixel_data(row)
    return reader.bulk_value(row, path)  # little endian, whatever the stored byte order


def _reread_metadata(row: InstanceRow) -> str:
    """The instance's DICOM JSON parsed again from its blob (metadata cache off)."""
    with row.blob.local_file() as path:
        return read_instance(path).metadata_text


__all__ = [
    "StudyMixin", "SeriesMixin", "InstanceMixin", "MetadataMixin", "FramesMixin", "BulkDataMixin",
    "RetrieveMixin", "ResourceBulkDataMixin", "parse_frame_list", "choose_instance_delivery", "NotFoundError",
]


class ResourceBulkDataMixin(StreamingMixin):
    """``{study}[/series/{series}[/instances/{instance}]]/bulkdata`` (PS3.18 10.4, Retrieve Bulkdata):
    every bulk data value of the resource in one multipart answer, each part's Content-Location its
    BulkDataURI. With the metadata, this is a whole series' pixels in one request, no parsing.

    ``transfer-syntax=*`` (or asking for image/* parts) sends compressed pixel data as stored, one part
    per frame; otherwise pixel data comes uncompressed (Explicit VR Little Endian).
    """

    async def get(self, study: str, series: str | None = None, instance: str | None = None) -> None:
        study = self.uid(study, "StudyInstanceUID")
        series = self.uid(series, "SeriesInstanceUID") if series else None
        instance = self.uid(instance, "SOPInstanceUID") if instance else None
        qp.warn_unknown(self, qp.BULKDATA)
        rows = await self.run_blocking(self.store.instances, study, series, instance)
        as_stored = self._negotiate()
        url = self.url_builder()
        writer = MultipartWriter()
        pieces: list[Piece] = []
        for row in rows:
            for value in tc.bulk_values(row, url(row.study_uid, row.series_uid, row.sop_uid), as_stored=as_stored):
                part_type = value.media_type + (f"; transfer-syntax={value.transfer_syntax}" if value.transfer_syntax else "")
                head = writer.part_head(part_type, {"Content-Location": value.location})
                pieces.append(Piece(head, value.blob, value.offset, value.length, value.compute))
        if not pieces:
            raise ApiError(404, "this resource holds no bulk data")
        self.set_header("Content-Type", mt.multipart_content_type(mt.OCTET_STREAM, writer.boundary))
        await self.send_pieces(pieces, writer.close())

    def _negotiate(self) -> bool:
        """True to send compressed pixel data as stored."""
        for rng in self.accepted():
            if rng.type not in (mt.MULTIPART_RELATED, "*/*", "multipart/*"):
                continue
            wanted = rng.params.get("type", mt.OCTET_STREAM).lower() if rng.type == mt.MULTIPART_RELATED else "*/*"
            ts = rng.params.get("transfer-syntax")
            if wanted in (mt.OCTET_STREAM, "application/*") and ts in (None, ExplicitVRLittleEndian):
                return False
            if wanted in (mt.OCTET_STREAM, "application/*", "*/*", "image/*") and ts == "*":
                return True
            if wanted in ("*/*", "image/*") and ts is None:
                return True
        raise ApiError(406, 'bulk data is sent as multipart/related; type="application/octet-stream" '
                            '(add transfer-syntax=* for compressed pixel data as stored)')

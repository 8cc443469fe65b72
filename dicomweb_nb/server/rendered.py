"""Rendered resources and thumbnails (PS3.18 10.4.1.1.3, 8.3.5) and WADO-URI (PS3.18 9).

Frames are decoded once (from their recorded offsets when uncompressed) and handed to
``pixels.render``; window, viewport and quality come from the query as the standard names them
(parsed by ``pixels.renderparams``; WADO-URI requests by ``renderparams``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ..dicom import mediatypes as mt
from ..dicom.deidentify import Deidentifier, burned_in_annotation
from ..dicom.dicomjson import values
from ..dicom.mediatypes import NotAcceptable
from ..dicom.multipart import MultipartWriter
from ..pixels import encode
from ..pixels import render as rd
from ..pixels.renderparams import parse_rendered_params
from ..pixels.voi import DisplayError
from ..store import InstanceRow, NotFoundError, Store, reader
from ..store import transcode as tc
from . import queryparams as qp
from . import renderparams as rp
from .base import ApiError, DicomWebMixin
from .cpu import Refusal
from .streaming import StreamingMixin
from .wado import RetrieveMixin, parse_frame_list

_RENDERED = list(rd.RENDERED_MEDIA_TYPES)


class RenderedMixin(StreamingMixin):
    """``.../rendered`` and ``.../thumbnail`` at study, series, instance and frame level."""

    async def get(self, *parts: str) -> None:
        kind = parts[-1]
        uids = list(parts[:-1])
        frame_list = None
        if len(uids) == 4:  # study, series, instance, frame list
            frame_list = parse_frame_list(uids.pop())
        names = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        checked: list[str | None] = [self.uid(u, n) for u, n in zip(uids, names)]
        study, series, instance = (checked + [None, None])[:3]
        media_type = self._media_type()
        try:
            options = parse_rendered_params(self.request.query_arguments)
        except rd.RenderParameterError as exc:
            raise ApiError(400, f"bad rendering parameter {exc}") from None
        except NotAcceptable as exc:
            raise ApiError(406, str(exc)) from None
        thumbnail = kind == "thumbnail"
        qp.warn_unknown(self, qp.THUMBNAIL if thumbnail else qp.RENDERED)
        if instance is None:
            rows = await self.run_blocking(self.store.instances, study, series, instance)
            # A study or series: its images, one per instance (a thumbnail: the middle one of the first series).
            chosen = tc.representative(rows)
            if chosen is None:
                raise ApiError(404, "nothing to render: no instance here has pixel data")
            if thumbnail:
                await self._send_image(*chosen, media_type, options, True)
                return
            await self._send_multipart([(r, 0) for r in rows if reader.frame_count(r)], media_type, options)
            return
        row = await self.instance_row(study, series, instance)
        count = reader.frame_count(row)
        if not count:
            raise ApiError(404, f"instance {instance} has no pixel data to render")
        if frame_list is None:
            if count > 1 and media_type == "image/gif" and not thumbnail:
                data = await self.run_cpu(animation_task, row, list(range(count)), media_type, options)
                self._finish_image(data, media_type)
                return
            await self._send_image(row, 0 if not thumbnail else count // 2, media_type, options, thumbnail)
            return
        bad = [n for n in frame_list if n > count]
        if bad:
            raise ApiError(404, f"frame {bad[0]} is out of range: instance {instance} has {count} frame(s)")
        if len(frame_list) == 1 or thumbnail:
            await self._send_image(row, frame_list[0] - 1, media_type, options, thumbnail)
        elif media_type == "image/gif":
            data = await self.run_cpu(animation_task, row, [n - 1 for n in frame_list], media_type, options)
            self._finish_image(data, media_type)
        else:
            await self._send_multipart([(row, n - 1) for n in frame_list], media_type, options)

    def _media_type(self) -> str:
        for rng in self.accepted():
            if rng.type == mt.MULTIPART_RELATED:
                wanted = rng.params.get("type", "image/jpeg").lower()
                if wanted in _RENDERED:
                    return wanted
                continue
            for offer in _RENDERED:
                if rng.matches(offer):
                    return offer
        raise ApiError(406, f"rendered images are {', '.join(_RENDERED)}; none of them is acceptable here")

    async def _send_image(
        self, row: InstanceRow, index: int, media_type: str, options: rd.RenderOptions, thumbnail: bool
    ) -> None:
        data = await rendered_frame(self, row, index, media_type, options, thumbnail)
        self._finish_image(data, media_type)

    def _finish_image(self, data: bytes, media_type: str) -> None:
        self.set_header("Content-Type", media_type)
        self.set_header("Cache-Control", "private, max-age=3600")
        self.finish(data)

    async def _send_multipart(self, items: list[tuple[InstanceRow, int]], media_type: str, options: rd.RenderOptions) -> None:
        writer = MultipartWriter()
        self.set_header("Content-Type", mt.multipart_content_type(media_type, writer.boundary))
        url = self.url_builder()
        for row, index in items:
            data = await rendered_frame(self, row, index, media_type, options, False)
            location = url(row.study_uid, row.series_uid, row.sop_uid) + f"/frames/{index + 1}/rendered"
            self.write(writer.part_head(media_type, {"Content-Location": location}))
            self.write(data)
            await self.flush()
        self.finish(writer.close())


def _charsets_of(row: InstanceRow) -> list[str]:
    return qp.instance_charsets(values(json.loads(row.metadata_text), "SpecificCharacterSet"))


async def rendered_frame(handler: DicomWebMixin, row: InstanceRow, index: int, media_type: str,
                         options: rd.RenderOptions, thumbnail: bool) -> bytes:
    """One rendered frame: from this process's cache of answers, else rendered (on this thread when
    light, else in the CPU pool) and kept there."""
    key = tc.render_key(row, index, media_type, options, thumbnail)
    data: bytes | None = tc.RENDERED.get(key)
    if data is None:
        data = await handler.run_cpu(render_task, row, index, media_type, options, thumbnail,
                                     inline=tc.render_is_light(row, index, media_type, options))
        tc.RENDERED.put(key, data)
    return data


def render_task(row: InstanceRow, index: int, media_type: str, options: rd.RenderOptions, thumbnail: bool) -> bytes | Refusal:
    """One rendered frame, or why not (run in the CPU pool: ``run_cpu``)."""
    return _refusing(row, lambda: tc.render(row, index, media_type, options, thumbnail=thumbnail))


def animation_task(row: InstanceRow, indices: list[int], media_type: str, options: rd.RenderOptions) -> bytes | Refusal:
    """Several frames of one instance as an animated GIF or PNG, or why not."""
    return _refusing(row, lambda: tc.render_animation(row, indices, media_type, options))


def _refusing(row: InstanceRow, work: Callable[[], bytes]) -> bytes | Refusal:
    try:
        return work()
    except rd.RenderParameterError as exc:
        return Refusal(400, f"bad rendering parameter {exc}")
    except NotAcceptable as exc:
        return Refusal(406, str(exc))
    except DisplayError as exc:
        return Refusal(406, f"instance {row.sop_uid} cannot be rendered: {exc}")
    except tc.TranscodeError as exc:
        return Refusal(406, str(exc))
    except NotFoundError as exc:
        return Refusal(404, str(exc))


class WadoUriMixin(RetrieveMixin):
    """``{wado_root}?requestType=WADO&studyUID=&seriesUID=&objectUID=&contentType=...`` (PS3.18 9).

    What each parameter does (or why it is refused) is listed in ``queryparams``.
    """

    async def get(self) -> None:
        try:
            request = rp.parse_wado_uri_params(self.request.query_arguments)
        except rd.RenderParameterError as exc:
            raise ApiError(400, f"bad WADO-URI request: {exc}") from None
        qp.warn_unknown(self, qp.WADO_URI)
        if request.presentation_uid:
            qp.refuse_presentation_state()
        row = await self.run_blocking(self._find, request)
        wants = request.content_types or ("image/jpeg",)
        media_type = next((t for t in wants if t in (mt.DICOM, *_RENDERED)), None)
        if media_type is None and any(t in ("*/*", "image/*") for t in wants):
            media_type = "image/jpeg"
        if media_type is None:
            raise ApiError(406, f"WADO-URI serves application/dicom, {', '.join(_RENDERED)}; not {', '.join(wants)}")
        if media_type == mt.DICOM:
            await self._send_instance(row, request)
            return
        # An image's text (annotations) is drawn as pixels: no character set is involved, any charset holds.
        count = reader.frame_count(row)
        if not count:
            raise ApiError(406, f"object {row.sop_uid} has no pixel data; ask for contentType=application/dicom")
        index = (request.frame_number or 1) - 1
        if index >= count:
            raise ApiError(404, f"frameNumber {index + 1} is out of range: the object has {count} frame(s)")
        if request.anonymize:
            # A rendering carries no attributes; only text burned into the pixels (or drawn by
            # annotation=patient) could identify.
            if "patient" in request.render.annotation:
                raise ApiError(400, "anonymize=yes with annotation=patient: the annotation would draw the patient's "
                                    "identity into the image")
            await self.run_blocking(_refuse_burned_in, row, None)
        data = await rendered_frame(self, row, index, media_type, request.render, False)
        self.set_header("Content-Type", media_type)
        self.finish(data)

    async def _send_instance(self, row: InstanceRow, request: rp.WadoUriRequest) -> None:
        # PS3.18 9.4.2.4 / 8.7.3.5.2: without transferSyntax, Explicit VR Little Endian, not the stored syntax.
        target = request.transfer_syntax or ExplicitVRLittleEndian
        problem = tc.transcode_problem(row, target)
        if problem:
            hint = "" if request.transfer_syntax else f"; ask transferSyntax={row.transfer_syntax} for the instance as stored"
            raise ApiError(406, f"cannot send object {row.sop_uid} as {target}: {problem}{hint}")
        if request.charset:
            charsets = await self.run_blocking(_charsets_of, row)
            qp.check_charset([request.charset], charsets, f"the text of object {row.sop_uid}")
        if request.anonymize:
            data, sop = await self.run_blocking(_anonymized_file, row, target, self.store)
            self.set_header("Content-Type", f"{mt.DICOM}; transfer-syntax={target}")
            self.set_header("Content-Disposition", f'attachment; filename="{sop}.dcm"')
            self.finish(data)
            return
        if target == row.transfer_syntax:
            self.set_header("Content-Type", f"{mt.DICOM}; transfer-syntax={target}")
            self.set_header("Content-Disposition", f'attachment; filename="{row.sop_uid}.dcm"')
            self.set_header("Content-Length", str(row.size))
            await self.stream_blocks(reader.iter_file(row))
            self.finish()
            return
        data = await self.run_blocking(tc.transcode_file, row.blob, target)  # TranscodeError: 406, nothing sent yet
        self.set_header("Content-Type", f"{mt.DICOM}; transfer-syntax={target}")
        self.set_header("Content-Disposition", f'attachment; filename="{row.sop_uid}.dcm"')
        self.finish(data)

    def _find(self, request: rp.WadoUriRequest) -> InstanceRow:
        rows = self.store.instances(None, None, request.object_uid)
        row = rows[0]
        if request.study_uid and row.study_uid != request.study_uid:
            raise NotFoundError(f"object {row.sop_uid} is not in study {request.study_uid}")
        if request.series_uid and row.series_uid != request.series_uid:
            raise NotFoundError(f"object {row.sop_uid} is not in series {request.series_uid}")
        return row


# WADO-URI anonymize=yes remaps UIDs under one key kept in the store (Store.shared_secret): the objects
# of a series fetched one by one keep sharing their new Study and Series Instance UIDs, whichever
# worker process or team server answers each request.
ANONYMIZE_SECRET = "wado-uri-anonymize"


def _refuse_burned_in(row: InstanceRow, ds: Dataset | None) -> None:
    """409 for an object whose pixels may show identifying text: nothing here removes it."""
    reason = burned_in_annotation(ds if ds is not None else reader.read_dataset(row, stop_before_pixels=True))
    if reason:
        raise ApiError(409, f"object {row.sop_uid} cannot be anonymized here: {reason}, and this server does not "
                            "clean pixels")


def _anonymized_file(row: InstanceRow, target: str, store: Store) -> tuple[bytes, str]:
    """The stored object de-identified by the PS3.15 Basic Profile (the notebook's pacs.deidentify rules)."""
    ds = reader.read_dataset(row)
    _refuse_burned_in(row, ds)
    out = Deidentifier(secret=store.shared_secret(ANONYMIZE_SECRET)).deidentify(ds).dataset
    if target != row.transfer_syntax:
        try:
            out = encode.transcode_dataset(out, target)
        except encode.TranscodeError as exc:
            raise ApiError(406, str(exc)) from None
    return encode.dataset_to_bytes(out), str(out.SOPInstanceUID)


__all__ = ["RenderedMixin", "WadoUriMixin"]

"""Pixel data of stored instances in the form a reader asks for: frames decoded or re-encoded,
whole instances in another transfer syntax (used by WADO-RS and by the in-process store client).

A frame is read from its recorded byte range and, only when the client asked for another
syntax, decoded (pydicom's decoders) or re-encoded (``pixels.encode``) — never the whole
multi-frame instance to serve one frame.
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import numpy as np
import pydicom
from pydicom.pixels import get_decoder, pack_bits, pixel_array

from ..dicom.dicomjson import BULK_PLACEHOLDER
from ..dicom.mediatypes import OCTET_STREAM, TRANSFER_SYNTAX_MEDIA_TYPES
from ..pixels import encode
from ..pixels import render as rd
from ..pixels.decode import PixelAttributes, PixelDecodeError, decode_frame
from ..pixels.voi import ImageAttributes
from . import reader
from .blobs import Blob
from .store import InstanceRow

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
UNCOMPRESSED = frozenset({EXPLICIT_LE, IMPLICIT_LE, BIG_ENDIAN, DEFLATED})


class TranscodeError(ValueError):
    """Stored pixel data that cannot be turned into the requested transfer syntax."""


def can_decode(transfer_syntax: str) -> bool:
    """Whether pixel data stored in this syntax can be decoded here."""
    if transfer_syntax in UNCOMPRESSED:
        return True
    try:
        return get_decoder(transfer_syntax).is_available
    except (NotImplementedError, ValueError):
        return False


def can_encode_frames(transfer_syntax: str, row: InstanceRow) -> bool:
    if transfer_syntax in UNCOMPRESSED or not can_decode(row.transfer_syntax):
        return False
    try:
        return encode.can_encode(transfer_syntax, image_attributes(row))
    except (ValueError, LookupError):
        return False


def transcode_problem(stored: str, target: str) -> str | None:
    """Why an instance stored as ``stored`` cannot be sent as ``target``; None when it can."""
    if target in ("*", stored):
        return None
    if target not in encode.TARGET_TRANSFER_SYNTAXES:
        return f"this server cannot write transfer syntax {target}"
    if not can_decode(stored):
        return f"instances stored as {stored} cannot be decoded here"
    return None


def transcode_file(blob: Blob, target: str) -> bytes:
    """The Part 10 bytes of a stored instance in transfer syntax ``target``."""
    with blob.open() as fp:
        ds = pydicom.dcmread(fp)
    try:
        return encode.dataset_to_bytes(encode.transcode_dataset(ds, target))
    except encode.TranscodeError as exc:
        raise TranscodeError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a codec failure on stored data is the same answer to the client
        raise TranscodeError(f"{blob.key}: cannot transcode to {target}: {str(exc).splitlines()[0]}") from None


def decoded_frame(row: InstanceRow, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) decoded to a numpy array, from its recorded bytes when they are known."""
    problems = []
    # Retired big endian: 8-bit samples may sit in byte-swapped OW words, which only the file tells.
    if row.layout.frames and row.transfer_syntax != BIG_ENDIAN:
        try:
            return decode_frame(reader.read_stored_frame(row, index), pixel_attributes(row), row.transfer_syntax)
        except PixelDecodeError as exc:
            problems.append(str(exc))
    # Odd files (no usable offsets, deflated, inconsistent encapsulation): let pydicom read the file,
    # first only the frame asked for, then, as the last resort, the whole dataset.
    for attempt in (lambda: _one_frame(row, index), lambda: _whole_file_frame(row, index)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return attempt()
        except Exception as exc:  # noqa: BLE001 - every codec failure means the same thing to the client
            problems.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    raise TranscodeError(
        f"frame {index + 1} of instance {row.sop_uid} ({row.transfer_syntax}) cannot be decoded: "
        f"{problems[0]}; ask for transfer-syntax=* to get it as stored"
    )


def _one_frame(row: InstanceRow, index: int) -> np.ndarray:
    with row.blob.open() as fp:
        return pixel_array(fp, index=index)


def _whole_file_frame(row: InstanceRow, index: int) -> np.ndarray:
    ds = reader.read_dataset(row)
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr[index] if frames > 1 else arr


def pixel_attributes(row: InstanceRow) -> PixelAttributes:
    """The Image Pixel attributes of a stored instance (cached per instance version)."""
    return _cached_pixel_attributes(row.sop_uid, row.stored, row.metadata_text)


@lru_cache(maxsize=4096)
def _cached_pixel_attributes(sop_uid: str, stored: float, metadata_text: str) -> PixelAttributes:
    try:
        return PixelAttributes.from_json(json.loads(metadata_text))
    except PixelDecodeError as exc:
        raise TranscodeError(f"instance {sop_uid}: {exc}") from None


def frame_bytes(row: InstanceRow, index: int, target: str) -> bytes:
    """Frame ``index`` (0-based) in ``target``: as stored when it matches, else decoded or re-encoded."""
    stored = row.transfer_syntax
    if target == stored and row.layout.frames and stored != DEFLATED:
        return reader.read_stored_frame(row, index)
    if target in UNCOMPRESSED:
        if stored in (EXPLICIT_LE, IMPLICIT_LE) and row.layout.frames:
            return reader.read_stored_frame(row, index)  # native little-endian pixels: the bytes are the frame
        arr = decoded_frame(row, index)
        if arr.dtype == np.uint8 and _bits_allocated(row) == 1:
            return pack_bits(arr)
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    arr = decoded_frame(row, index)
    try:
        return encode.encode_frames([arr], image_attributes(row, index), target)[0]
    except encode.TranscodeError as exc:
        raise TranscodeError(str(exc)) from None


def _bits_allocated(row: InstanceRow) -> int:
    return pixel_attributes(row).bits_allocated


_ATTRIBUTES: OrderedDict[tuple[str, float, int], ImageAttributes] = OrderedDict()
_ATTRIBUTES_LOCK = threading.Lock()


def image_attributes(row: InstanceRow, index: int = 0) -> ImageAttributes:
    """Display and encoding attributes of frame ``index``, from the metadata stored at ingest.

    Cached by SOP Instance UID and store time (a replaced instance has a new time), since
    building them from JSON costs more than rendering a small image.
    """
    key = (row.sop_uid, row.stored, index)
    with _ATTRIBUTES_LOCK:
        if key in _ATTRIBUTES:
            _ATTRIBUTES.move_to_end(key)
            return _ATTRIBUTES[key]
    attrs = ImageAttributes.from_json(json.loads(row.metadata_text), frame_index=index,
                                      bulk_data_handler=lambda tag, vr, uri: reader.bulk_value(row, _bulk_path(uri)))
    with _ATTRIBUTES_LOCK:
        _ATTRIBUTES[key] = attrs
        while len(_ATTRIBUTES) > 2048:
            _ATTRIBUTES.popitem(last=False)
    return attrs


def _bulk_path(uri: str) -> str:
    return uri.split("bulk/", 1)[1] if "bulk/" in uri else uri


# -- rendering --------------------------------------------------------------------------------------

THUMBNAIL_SIZE = 128


def render(row: InstanceRow, index: int, media_type: str = "image/jpeg", options: "rd.RenderOptions | None" = None,
           *, thumbnail: bool = False) -> bytes:
    """Frame ``index`` (0-based) of a stored instance as a consumer image (PS3.18 rendered / thumbnail)."""
    frame = decoded_frame(row, index)
    attrs = image_attributes(row, index)
    if thumbnail:
        return rd.thumbnail(frame, attrs, THUMBNAIL_SIZE, media_type=media_type, options=options)
    return rd.render(frame, attrs, media_type=media_type, options=options)


def render_animation(row: InstanceRow, indices: list[int], media_type: str, options: "rd.RenderOptions | None" = None) -> bytes:
    """Several frames of one instance as an animated GIF (or APNG)."""
    frames = [decoded_frame(row, i) for i in indices]
    attrs = [image_attributes(row, i) for i in indices]
    return rd.render_frames(frames, attrs, media_type=media_type, options=options)


def representative(rows: list[InstanceRow]) -> tuple[InstanceRow, int] | None:
    """The image standing for a study or series: the middle instance of its first series with pixels."""
    images = [r for r in rows if reader.frame_count(r)]
    if not images:
        return None
    first_series = [r for r in images if r.series_uid == images[0].series_uid]
    row = first_series[len(first_series) // 2]
    return row, reader.frame_count(row) // 2


# -- bulk data of a resource ------------------------------------------------------------------------

_BULK_URI = re.compile(r'"BulkDataURI":\s*"' + re.escape(BULK_PLACEHOLDER) + r'bulk/([0-9A-Fa-f/]+)"')


@dataclass
class BulkValue:
    """One part of a Retrieve Bulkdata answer: a slice of the stored blob, or bytes computed on demand."""

    location: str  # the BulkDataURI (or a frame URL for compressed pixel data sent as stored)
    media_type: str
    transfer_syntax: str | None
    blob: Blob | None = None
    offset: int = 0
    length: int = 0
    compute: Callable[[], bytes] | None = None

    def read(self) -> bytes:
        if self.compute is not None:
            return self.compute()
        assert self.blob is not None
        return self.blob.read(self.offset, self.offset + self.length)


def bulk_values(row: InstanceRow, instance_url: str, *, as_stored: bool) -> list[BulkValue]:
    """Every bulk data value of an instance, in metadata order; pixel data uncompressed unless ``as_stored``
    (then compressed pixel data comes as its frames' bitstreams, one value per frame)."""
    out: list[BulkValue] = []
    layout = row.layout
    for path in _BULK_URI.findall(row.metadata_text):
        location = f"{instance_url}/bulk/{path}"
        is_pixels = path.upper() in ("7FE00010", "7FE00008", "7FE00009")
        if not is_pixels:
            out.append(BulkValue(location, OCTET_STREAM, None, compute=partial(reader.bulk_value, row, path)))
        elif row.transfer_syntax in (EXPLICIT_LE, IMPLICIT_LE) and layout.value_offset is not None and layout.value_length is not None:
            out.append(BulkValue(location, OCTET_STREAM, EXPLICIT_LE, row.blob, layout.value_offset, layout.value_length))
        elif as_stored and layout.encapsulated and layout.frames:
            media = TRANSFER_SYNTAX_MEDIA_TYPES.get(row.transfer_syntax, OCTET_STREAM)
            for index, fragments in enumerate(layout.frames):
                frame_url = f"{instance_url}/frames/{index + 1}"
                if len(fragments) == 1:
                    out.append(BulkValue(frame_url, media, row.transfer_syntax, row.blob, fragments[0][0], fragments[0][1]))
                else:
                    out.append(BulkValue(frame_url, media, row.transfer_syntax,
                                         compute=partial(reader.read_stored_frame, row, index)))
        else:
            out.append(BulkValue(location, OCTET_STREAM, EXPLICIT_LE, compute=partial(uncompressed_pixel_data, row)))
    return out


def uncompressed_pixel_data(row: InstanceRow) -> bytes:
    """Every frame decoded, concatenated as native little-endian pixel data."""
    return b"".join(frame_bytes(row, index, EXPLICIT_LE) for index in range(reader.frame_count(row)))

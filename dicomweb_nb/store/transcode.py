"""Pixel data of stored instances in the form a reader asks for: frames decoded or re-encoded,
whole instances in another transfer syntax (used by WADO-RS and by the in-process store client).

A frame is read from its recorded byte range and, only when the client asked for another
syntax, decoded (pydicom's decoders) or re-encoded (``pixels.encode``) — never the whole
multi-frame instance to serve one frame.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pack_bits, pixel_array
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..dicom.dicomjson import (
    BULK_PLACEHOLDER,
    PIXEL_DATA_TAGS,
    big_endian_word_size,
    little_endian_value,
)
from ..dicom.mediatypes import OCTET_STREAM, TRANSFER_SYNTAX_MEDIA_TYPES
from ..dicom.tags import tag_hex
from ..errors import TranscodeError
from ..pixels import encode
from ..pixels import render as rd
from ..pixels.decode import PixelAttributes, PixelDecodeError, decode_frame
from ..pixels.voi import ImageAttributes
from . import reader
from .blobs import Blob
from .store import InstanceRow

# Short names of pydicom's constants (the in-process source uses them too).
EXPLICIT_LE = ExplicitVRLittleEndian
IMPLICIT_LE = ImplicitVRLittleEndian
BIG_ENDIAN = ExplicitVRBigEndian
DEFLATED = DeflatedExplicitVRLittleEndian
PIXEL_DATA = 0x7FE00010
UNCOMPRESSED = frozenset({EXPLICIT_LE, IMPLICIT_LE, BIG_ENDIAN, DEFLATED})


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


def transcode_problem(row: InstanceRow, target: str) -> str | None:
    """Why the stored instance cannot be sent as ``target``; None when it can (as far as its attributes
    tell: a codec may still fail on the data, which ``transcode_file`` reports as TranscodeError)."""
    stored = row.transfer_syntax
    if target in ("*", stored):
        return None
    if target not in encode.TARGET_TRANSFER_SYNTAXES:
        return f"this server cannot write transfer syntax {target}"
    compressed = target not in UNCOMPRESSED
    if not row.layout.pixel_tag or (stored in UNCOMPRESSED and not compressed):
        return None  # only the encoding of the attributes changes
    if row.layout.pixel_tag != PIXEL_DATA:
        return f"instance {row.sop_uid} holds float pixel data, which is never compressed" if compressed else None
    if not can_decode(stored):
        return f"instances stored as {stored} cannot be decoded here"
    if not compressed:
        return None
    try:
        problem = encode.encode_problem(target, image_attributes(row))
    except TranscodeError as exc:
        return str(exc)
    return f"instance {row.sop_uid}: {problem}" if problem else None


def transcode_file(blob: Blob, target: str) -> bytes:
    """The Part 10 bytes of a stored instance in transfer syntax ``target``."""
    with blob.open() as fp:
        ds = pydicom.dcmread(fp)
    try:
        return encode.dataset_to_bytes(encode.transcode_dataset(ds, target))
    except TranscodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec failure on stored data is the same answer to the client
        raise TranscodeError(f"{blob.key}: cannot transcode to {target}: {str(exc).splitlines()[0]}") from None


class SizedLru:
    """A thread-safe least-recently-used map bounded by the bytes of its values (``nbytes`` of an array,
    ``len`` of bytes); a value larger than an eighth of the bound is not kept (it would push out many)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        size = _size_of(value)
        if size > self.max_bytes // 8:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= _size_of(old)


def _size_of(value: Any) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else len(value)


# Decoded frames of compressed instances, by blob key (a new version has a new key, so an entry never
# goes stale; a deleted instance has no row to reach it) and frame: a viewer asks for the same image
# again and again with another window, and a JPEG 2000 or JPEG-LS decode costs 10-100x the windowing
# and encoding of a render.
DECODED_CACHE_BYTES = 128 << 20
_DECODED = SizedLru(DECODED_CACHE_BYTES)


def decoded_frame(row: InstanceRow, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) decoded to a numpy array, from its recorded bytes when they are known.
    Frames of compressed instances are kept (read-only) for the next request of the same frame."""
    if row.transfer_syntax in UNCOMPRESSED:
        # A read of the recorded bytes and one copy: 0.04 ms for a 512x512 slice, not worth a second copy in memory.
        return _decode(row, index)
    key = (row.blob.key, index)
    cached = _DECODED.get(key)
    if cached is not None:
        return cached
    frame = _decode(row, index)
    frame.flags.writeable = False
    _DECODED.put(key, frame)
    return frame


def _decode(row: InstanceRow, index: int) -> np.ndarray:
    problems = []
    if row.layout.frames:
        try:
            if row.transfer_syntax == BIG_ENDIAN:  # made little endian first: then it is an Explicit VR LE frame
                return decode_frame(_big_endian_frame(row, index), pixel_attributes(row), EXPLICIT_LE)
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
    except (PixelDecodeError, ValueError, TypeError) as exc:
        raise TranscodeError(f"instance {sop_uid}: {exc}") from None


def stored_frame_slice(row: InstanceRow, index: int, target: str) -> tuple[int, int] | None:
    """(offset, length) of frame ``index`` in the stored blob when its bytes there are exactly what
    ``frame_bytes(row, index, target)`` gives (one fragment, or native little-endian pixels asked for
    uncompressed); None when they must be read and put together, decoded or converted."""
    frames = row.layout.frames
    if not frames or not 0 <= index < len(frames) or len(frames[index]) != 1:
        return None
    stored = row.transfer_syntax
    if (target == stored and stored != DEFLATED) or (target in UNCOMPRESSED and stored in (EXPLICIT_LE, IMPLICIT_LE)):
        return frames[index][0]
    return None


def frame_bytes(row: InstanceRow, index: int, target: str) -> bytes:
    """Frame ``index`` (0-based) in ``target``: as stored when it matches, else decoded or re-encoded."""
    stored = row.transfer_syntax
    if target == stored and row.layout.frames and stored != DEFLATED:
        return reader.read_stored_frame(row, index)
    if target in UNCOMPRESSED:
        if stored in (EXPLICIT_LE, IMPLICIT_LE) and row.layout.frames:
            return reader.read_stored_frame(row, index)  # native little-endian pixels: the bytes are the frame
        if stored == BIG_ENDIAN and row.layout.frames:
            return _big_endian_frame(row, index)
        arr = decoded_frame(row, index)
        if arr.dtype == np.uint8 and _bits_allocated(row) == 1:
            return pack_bits(arr)
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    arr = decoded_frame(row, index)
    return encode.encode_frames([arr], image_attributes(row, index), target)[0]


def _big_endian_frame(row: InstanceRow, index: int) -> bytes:
    """A frame of native big-endian pixel data as Explicit VR Little Endian holds it: the same layout
    (Planar Configuration kept, as the metadata says), each word reversed. The frame is read widened
    to whole words, since 8-bit samples in OW words can straddle frames."""
    (offset, length), = row.layout.frames[index]
    value_offset = row.layout.value_offset or 0
    bits = _bits_allocated(row)
    width = big_endian_word_size(_pixel_vr(row), bits)
    relative = offset - value_offset
    start = relative - relative % width
    end = -(-(relative + length) // width) * width
    words = row.blob.read(value_offset + start, value_offset + end)
    swapped = little_endian_value(words, _pixel_vr(row), bits)
    return swapped[relative - start:relative - start + length]


def _pixel_vr(row: InstanceRow) -> str:
    return _cached_pixel_vr(row.sop_uid, row.stored, row.metadata_text)


@lru_cache(maxsize=1024)
def _cached_pixel_vr(sop_uid: str, stored: float, metadata_text: str) -> str:
    element = json.loads(metadata_text).get(tag_hex(PIXEL_DATA), {})
    return str(element.get("vr", "OW"))


def native_pixel_data(row: InstanceRow) -> bytes:
    """The whole uncompressed Pixel Data value in little-endian byte order (PS3.18 octet-stream bulk data):
    read as stored, word-swapped when stored big endian, inflated when deflated."""
    if stored_little_endian_native(row):
        offset = row.layout.value_offset or 0
        return row.blob.read(offset, offset + (row.layout.value_length or 0))
    return reader.bulk_value(row, tag_hex(PIXEL_DATA))


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
    try:
        attrs = ImageAttributes.from_json(json.loads(row.metadata_text), frame_index=index,
                                          bulk_data_handler=lambda tag, vr, uri: reader.bulk_value(row, _bulk_path(uri)))
    except Exception as exc:  # noqa: BLE001 - malformed stored attributes (an IS "1A") are the instance's, not ours
        raise TranscodeError(f"instance {row.sop_uid} has image attributes that cannot be read: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    with _ATTRIBUTES_LOCK:
        _ATTRIBUTES[key] = attrs
        while len(_ATTRIBUTES) > 2048:
            _ATTRIBUTES.popitem(last=False)
    return attrs


def _bulk_path(uri: str) -> str:
    return uri.split("bulk/", 1)[1] if "bulk/" in uri else uri


# -- rendering --------------------------------------------------------------------------------------

THUMBNAIL_SIZE = 128


def render(row: InstanceRow, index: int, media_type: str = "image/jpeg", options: rd.RenderOptions | None = None,
           *, thumbnail: bool = False) -> bytes:
    """Frame ``index`` (0-based) of a stored instance as a consumer image (PS3.18 rendered / thumbnail)."""
    frame = decoded_frame(row, index)
    attrs = image_attributes(row, index)
    if thumbnail:
        return rd.thumbnail(frame, attrs, THUMBNAIL_SIZE, media_type=media_type, options=options)
    return rd.render(frame, attrs, media_type=media_type, options=options, annotation=_annotation(row, options))


# Rendered images (``render``'s answers) kept by the process that answers requests, by everything their
# bytes depend on: the stored version (blob key and store time: a re-STOW writes a new blob, a deleted
# instance has no row to reach its entries), its metadata (windows, annotation text), frame, media type,
# options. A viewer scrolling back and forth asks for the same images again; a render of a 512x512 CT
# slice as JPEG costs ~0.6 ms of the ~2 ms of server CPU its request costs.
RENDERED_CACHE_BYTES = 32 << 20
RENDERED = SizedLru(RENDERED_CACHE_BYTES)


def render_key(row: InstanceRow, index: int, media_type: str, options: rd.RenderOptions | None,
               thumbnail: bool) -> tuple[Any, ...]:
    """The key of ``render(row, index, media_type, options, thumbnail=thumbnail)`` in ``RENDERED``."""
    return row.blob.key, row.stored, hash(row.metadata_text), index, media_type, options, thumbnail


# A render is done on the thread handling the request when it costs less than handing it to another
# thread and back: two thread wake-ups, ~0.3 ms of CPU on the 2-core VM and, on a busy machine, a wait
# for the scheduler each. A 512x512 16-bit slice (0.5 MiB) renders as JPEG in ~0.6 ms.
LIGHT_RENDER_BYTES = 1 << 20
_READ_AS_STORED = frozenset({EXPLICIT_LE, IMPLICIT_LE, BIG_ENDIAN})


def render_is_light(row: InstanceRow, index: int, media_type: str, options: rd.RenderOptions | None) -> bool:
    """Whether ``render`` of this frame is cheap (about a millisecond): a JPEG without annotation of a
    frame of at most ``LIGHT_RENDER_BYTES`` at hand in a local file (uncompressed at its recorded
    offsets) or decoded in the cache."""
    if media_type != "image/jpeg" or (options is not None and options.annotation) or row.blob.local_path is None:
        return False
    decoded = _DECODED.get((row.blob.key, index))
    if decoded is not None:
        return bool(decoded.nbytes <= LIGHT_RENDER_BYTES)
    frames = row.layout.frames
    if row.transfer_syntax not in _READ_AS_STORED or not 0 <= index < len(frames):
        return False
    return sum(length for _, length in frames[index]) <= LIGHT_RENDER_BYTES


def render_animation(row: InstanceRow, indices: list[int], media_type: str, options: rd.RenderOptions | None = None) -> bytes:
    """Several frames of one instance as an animated GIF (or APNG)."""
    frames = [decoded_frame(row, i) for i in indices]
    attrs = [image_attributes(row, i) for i in indices]
    return rd.render_frames(frames, attrs, media_type=media_type, options=options, annotation=_annotation(row, options))


def _annotation(row: InstanceRow, options: rd.RenderOptions | None) -> list[str]:
    if options is None or not options.annotation:
        return []
    return rd.annotation_lines(json.loads(row.metadata_text), options.annotation)


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
        elif stored_little_endian_native(row):
            out.append(
                BulkValue(location, OCTET_STREAM, EXPLICIT_LE, row.blob, layout.value_offset or 0, layout.value_length or 0)
            )
        elif not layout.encapsulated and path.upper() == "7FE00010":
            out.append(BulkValue(location, OCTET_STREAM, EXPLICIT_LE, compute=partial(native_pixel_data, row)))
        elif not layout.encapsulated:
            out.append(BulkValue(location, OCTET_STREAM, EXPLICIT_LE, compute=partial(reader.bulk_value, row, path)))
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


# Orthanc's OtherBinaryMode covers these VRs; pixel data stays a BulkDataURI whatever the mode.
OTHER_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})


def inline_other_binary(row: InstanceRow, text: str) -> str:
    """The instance's metadata ``text`` with every BulkDataURI of a binary value other than pixel data
    (VR OB, OD, OF, OL, OV, OW, in sequences too) replaced by its ``InlineBinary`` (base64), read
    from the stored instance once; pixel data keeps its BulkDataURI."""
    if BULK_PLACEHOLDER not in text:
        return text
    metadata = json.loads(text)
    found: list[tuple[dict[str, Any], str]] = []

    def walk(obj: dict[str, Any], prefix: str) -> None:
        for key, elem in obj.items():
            uri = elem.get("BulkDataURI")
            pixel_data = not prefix and int(key, 16) in PIXEL_DATA_TAGS
            if isinstance(uri, str) and elem.get("vr") in OTHER_BINARY_VRS and not pixel_data:
                found.append((elem, uri[len(BULK_PLACEHOLDER) + len("bulk/"):]))
            for index, item in enumerate(elem.get("Value") or []) if elem.get("vr") == "SQ" else ():
                walk(item, f"{prefix}{key}/{index}/")

    walk(metadata, "")
    if not found:
        return text
    values = reader.bulk_values_at(row, [path for _elem, path in found])
    for elem, path in found:
        del elem["BulkDataURI"]
        elem["InlineBinary"] = base64.b64encode(values[path]).decode("ascii")
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)


def stored_little_endian_native(row: InstanceRow) -> bool:
    """Whether the stored pixel data value is already what PS3.18 sends as octet-stream bulk data:
    uncompressed, little endian, at a known place in the file."""
    layout = row.layout
    return (row.transfer_syntax in (EXPLICIT_LE, IMPLICIT_LE) and not layout.encapsulated
            and layout.value_offset is not None and layout.value_length is not None)


def uncompressed_pixel_data(row: InstanceRow) -> bytes:
    """Every frame decoded, concatenated as native little-endian pixel data."""
    return b"".join(frame_bytes(row, index, EXPLICIT_LE) for index in range(reader.frame_count(row)))

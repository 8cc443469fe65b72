"""Transfer syntax changes for WADO-RS answers: whole instances and single frames.

A frame is read from its recorded byte range and, only when the client asked for another
syntax, decoded (pydicom's decoders) or re-encoded (``pixels.encode``) — never the whole
multi-frame instance to serve one frame.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import pydicom
from pydicom.pixels import get_decoder, pack_bits, pixel_array

from ..pixels import encode
from ..pixels.voi import ImageAttributes
from ..store import InstanceRow
from ..store import reader

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


def transcode_file(path: str, target: str) -> bytes:
    """The Part 10 bytes of the instance at ``path`` in transfer syntax ``target``."""
    ds = pydicom.dcmread(path)
    try:
        return encode.dataset_to_bytes(encode.transcode_dataset(ds, target))
    except encode.TranscodeError as exc:
        raise TranscodeError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a codec failure on stored data is the same answer to the client
        raise TranscodeError(f"{path}: cannot transcode to {target}: {str(exc).splitlines()[0]}") from None


def decoded_frame(row: InstanceRow, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) decoded to a numpy array (native pixels straight from their offsets)."""
    native = _native_frame(row, index)
    if native is not None:
        return native
    try:
        return pixel_array(row.path, index=index)
    except Exception as exc:  # noqa: BLE001 - every codec failure means the same thing to the client
        raise TranscodeError(
            f"frame {index + 1} of instance {row.sop_uid} ({row.transfer_syntax}) cannot be decoded: "
            f"{str(exc).splitlines()[0]}; ask for transfer-syntax=* to get it as stored"
        ) from None


def _native_frame(row: InstanceRow, index: int) -> np.ndarray | None:
    """An uncompressed little-endian frame read from its byte range, without pydicom; None if not that simple."""
    if row.transfer_syntax not in (EXPLICIT_LE, IMPLICIT_LE) or not row.layout.frames or row.layout.pixel_tag != 0x7FE00010:
        return None
    first = _pixel_module(row)
    bits, samples = int(first("00280100", 16)), int(first("00280002", 1))
    rows, columns = int(first("00280010", 0)), int(first("00280011", 0))
    photometric = str(first("00280004", ""))
    if bits not in (8, 16, 32) or not rows or not columns or photometric.startswith("YBR_FULL_42"):
        return None
    signed = int(first("00280103", 0)) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    data = reader.read_stored_frame(row, index)
    if len(data) < rows * columns * samples * dtype.itemsize:
        return None
    arr = np.frombuffer(data, dtype=dtype, count=rows * columns * samples)
    if samples == 1:
        arr = arr.reshape(rows, columns)
    elif int(first("00280006", 0)) == 1:
        arr = arr.reshape(samples, rows, columns).transpose(1, 2, 0)
    else:
        arr = arr.reshape(rows, columns, samples)
    bits_stored = int(first("00280101", bits))
    if bits_stored < bits:
        # Bits above BitsStored are not pixel data (overlays, garbage); pydicom masks them too.
        if signed:
            shift = bits - bits_stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & ((1 << bits_stored) - 1)
    return arr


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
    return int(_pixel_module(row)("00280100", 16))


def _pixel_module(row: InstanceRow) -> Callable[[str, Any], Any]:
    """``first(key, default)``: the first value of a top-level attribute of the instance's metadata."""
    values = _cached_pixel_module(row.sop_uid, row.stored, row.metadata_text)

    def first(key: str, default: Any) -> Any:
        return values.get(key, default)

    return first


@lru_cache(maxsize=4096)
def _cached_pixel_module(sop_uid: str, stored: float, metadata_text: str) -> dict[str, Any]:
    meta = json.loads(metadata_text)
    return {key: elem["Value"][0] for key, elem in meta.items()
            if key.startswith("0028") and elem.get("Value") and not isinstance(elem["Value"][0], dict)}


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

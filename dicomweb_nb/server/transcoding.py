"""Transfer syntax changes for WADO-RS answers: whole instances and single frames.

A frame is read from its recorded byte range and, only when the client asked for another
syntax, decoded (pydicom's decoders) or re-encoded — never the whole multi-frame instance to
serve one frame.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.pixels import get_decoder, pack_bits, pixel_array
from pydicom.uid import UID

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


def can_encode(transfer_syntax: str) -> bool:
    try:
        from ..pixels import encode
    except ImportError:
        return False
    return encode.can_encode(transfer_syntax)


def can_encode_frames(transfer_syntax: str, row: InstanceRow) -> bool:
    return transfer_syntax not in UNCOMPRESSED and can_encode(transfer_syntax) and can_decode(row.transfer_syntax)


def transcode_problem(stored: str, target: str) -> str | None:
    """Why an instance stored as ``stored`` cannot be sent as ``target``; None when it can."""
    if target in ("*", stored):
        return None
    if not UID(target).is_valid or not UID(target).is_transfer_syntax:
        return f"{target} is not a transfer syntax this server knows"
    if target in (EXPLICIT_LE, IMPLICIT_LE, DEFLATED, BIG_ENDIAN):
        return None if can_decode(stored) else f"instances stored as {stored} cannot be decoded here"
    if not can_encode(target):
        return f"this server has no encoder for {target}"
    if not can_decode(stored):
        return f"instances stored as {stored} cannot be decoded here"
    return None


def transcode_file(path: str, target: str) -> bytes:
    """The Part 10 bytes of the instance at ``path`` in transfer syntax ``target``."""
    ds = pydicom.dcmread(path)
    current = str(ds.file_meta.TransferSyntaxUID)
    if current not in UNCOMPRESSED and "PixelData" in ds:
        ds.decompress(generate_instance_uid=False)
    if target in UNCOMPRESSED:
        ds.file_meta.TransferSyntaxUID = target
        out = io.BytesIO()
        ds.save_as(out, implicit_vr=target == IMPLICIT_LE, little_endian=target != BIG_ENDIAN, enforce_file_format=True)
        return out.getvalue()
    from ..pixels import encode

    ds = encode.transcode_dataset(ds, target)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def decoded_frame(row: InstanceRow, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) decoded to a numpy array."""
    try:
        return pixel_array(row.path, index=index)
    except Exception as exc:  # noqa: BLE001 - every codec failure means the same thing to the client
        raise TranscodeError(
            f"frame {index + 1} of instance {row.sop_uid} ({row.transfer_syntax}) cannot be decoded: "
            f"{str(exc).splitlines()[0]}; ask for transfer-syntax=* to get it as stored"
        ) from None


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
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        return little.tobytes()
    from ..pixels import encode

    arr = decoded_frame(row, index)
    return encode.encode_frames([arr], _attributes(row), target)[0]


def _bits_allocated(row: InstanceRow) -> int:
    import json

    meta = json.loads(row.metadata_text)
    return int((meta.get("00280100", {}).get("Value") or [16])[0])


def _attributes(row: InstanceRow) -> pydicom.Dataset:
    import json

    return pydicom.Dataset.from_json(json.loads(row.metadata_text), lambda uri: b"")

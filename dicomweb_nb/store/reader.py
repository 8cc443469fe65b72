"""Reading stored instances back: blob chunks, frame bitstreams by their recorded offsets, bulk data.

Everything here works from the ``InstanceRow`` the index returns, so a frame is read with one
ranged read per fragment (a local pread or one ranged GET from object storage), never by parsing
the file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian

from ..dicom.dicomjson import PIXEL_DATA_TAGS, little_endian_value
from .blobs import CHUNK
from .store import InstanceRow, NotFoundError


def iter_file(row: InstanceRow, start: int = 0, end: int | None = None, chunk: int = CHUNK) -> Iterator[bytes]:
    """The stored instance's bytes ``[start, end)`` in chunks."""
    return row.blob.chunks(start, end, chunk)


def frame_count(row: InstanceRow) -> int:
    if row.layout.frames:
        return len(row.layout.frames)
    return row.number_of_frames


def read_stored_frame(row: InstanceRow, index: int) -> bytes:
    """Frame ``index`` (0-based) as stored: raw pixels, or the compressed bitstream without item headers."""
    frames = row.layout.frames
    if not frames:
        raise LookupError("frame offsets unknown for this instance")
    if not 0 <= index < len(frames):
        raise NotFoundError(f"frame {index + 1} is out of range: instance {row.sop_uid} has {len(frames)} frame(s)")
    fragments = frames[index]
    if len(fragments) == 1:
        offset, length = fragments[0]
        return row.blob.read(offset, offset + length)
    # Several fragments: one read spanning them, then the item headers between them dropped.
    start, end = fragments[0][0], fragments[-1][0] + fragments[-1][1]
    span = row.blob.read(start, end)
    return b"".join(span[offset - start:offset - start + length] for offset, length in fragments)


def is_big_endian(row: InstanceRow) -> bool:
    return row.transfer_syntax == ExplicitVRBigEndian


def read_dataset(row: InstanceRow, *, stop_before_pixels: bool = False) -> Dataset:
    with row.blob.open() as fp:
        return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels)


def bulk_value(row: InstanceRow, path: str) -> bytes:
    """The value of the element a BulkDataURI ``bulk/{tag}[/{item}/{tag}...]`` names, in little-endian
    byte order whatever the stored transfer syntax (PS3.18 sends binary values little endian)."""
    return bulk_values_at(row, [path])[path]


def bulk_values_at(row: InstanceRow, paths: list[str]) -> dict[str, bytes]:
    """``bulk_value`` of several paths, the instance read once; values larger than 64 KiB that no
    path names (pixel data, mostly) are never read."""
    parsed = {path: _parse_bulk_path(path) for path in paths}
    with row.blob.open() as fp:
        ds = pydicom.dcmread(fp, defer_size=64 << 10)
        return {path: _value_at(ds, row, path, *tags_items) for path, tags_items in parsed.items()}


def _parse_bulk_path(path: str) -> tuple[list[int], list[int]]:
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or len(parts) % 2 == 0:
        raise ValueError(f"malformed bulk data path {path!r}: expected tag[/item/tag...]")
    try:
        return [int(p, 16) for p in parts[0::2]], [int(p) for p in parts[1::2]]
    except ValueError:
        raise ValueError(f"malformed bulk data path {path!r}: tags are 8 hex digits, items numbers") from None


def _value_at(ds: Dataset, row: InstanceRow, path: str, tags: list[int], items: list[int]) -> bytes:
    node: Dataset = ds
    for depth, tag in enumerate(tags):
        if tag not in node:
            raise NotFoundError(f"instance {row.sop_uid} has no bulk data at {path}")
        elem = node[tag]
        if depth == len(tags) - 1:
            if elem.VR == "SQ" or not isinstance(elem.value, (bytes, bytearray)):
                raise NotFoundError(f"{path} of instance {row.sop_uid} is not a binary value")
            if not is_big_endian(row):
                return bytes(elem.value)
            bits = int(node.get("BitsAllocated", 0) or 0) if tag in PIXEL_DATA_TAGS else None
            return little_endian_value(bytes(elem.value), elem.VR, bits)
        seq = elem.value
        if elem.VR != "SQ" or not 0 <= items[depth] < len(seq):
            raise NotFoundError(f"instance {row.sop_uid} has no item {items[depth]} in {path.split('/')[2 * depth]}")
        node = seq[items[depth]]
    raise NotFoundError(path)

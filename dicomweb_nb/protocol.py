"""The DICOMweb transactions the notebook client is built on, as a Protocol.

``Client`` (DataFrames, numpy, volumes, progress bars) only talks to a ``DicomWebSource``:
``WebSource`` (``client/web.py``) implements it over HTTP for any DICOMweb server, and
``StoreSource`` (``client/local.py``) in-process over the workspace store, so ``dw.connect()`` on
the workspace needs no HTTP round trip. Values are DICOM JSON (PS3.18 Annex F) and Part 10 bytes,
so any implementation can be checked against another with the same tests.

A neutral module (it imports nothing of the package): the client's sources implement it, the
server's proxy sends ``StowItem``s with the HTTP source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

DicomJson = dict[str, Any]
Level = Literal["study", "series", "instance"]

__all__ = ["DicomJson", "Level", "EncodedFrame", "BulkPart", "BulkRoom", "RenderedImage", "StowItem", "DicomWebSource"]


@dataclass(frozen=True)
class EncodedFrame:
    """One frame as the server sent it: raw pixels or a codestream, and its transfer syntax."""

    data: bytes | memoryview  # bytes-like: a view of a larger answer where the frame arrived in one
    transfer_syntax_uid: str
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class BulkPart:
    """One part of a Retrieve Bulkdata answer: where it comes from (its BulkDataURI, or a frame URL
    for compressed pixel data), its transfer syntax and media type, and the bytes."""

    location: str
    data: bytes | memoryview  # bytes-like: a view of the received chunk where the part fitted in one
    transfer_syntax_uid: str | None = None
    media_type: str = "application/octet-stream"
    filled: bool = False  # data is the room ``into`` gave for this part, filled with its bytes


# ``into(location, transfer_syntax_uid)`` of Retrieve Bulkdata: a writable byte view the part's
# content should be read into when it has exactly that size, or None to receive it as bytes.
BulkRoom = Callable[[str, str | None], memoryview | None]


@dataclass(frozen=True)
class RenderedImage:
    """A rendered image or thumbnail (PNG, JPEG, GIF) with its media type."""

    data: bytes
    media_type: str


@dataclass
class StowItem:
    """One instance to store: a Part 10 payload of known size, read only when it is sent.

    ``read()`` returns the whole file; ``label`` names it in results (a path, or ``dataset[i]``).
    """

    label: str
    size: int
    read: Callable[[], bytes]
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None

    @classmethod
    def from_bytes(cls, label: str, data: bytes, sop_instance_uid: str | None = None, sop_class_uid: str | None = None,
                   study_instance_uid: str | None = None) -> StowItem:
        """An item whose Part 10 payload is already in memory."""
        return cls(label, len(data), lambda: data, sop_instance_uid, sop_class_uid, study_instance_uid)


@runtime_checkable
class DicomWebSource(Protocol):
    """What a DICOMweb service offers the client: QIDO-RS, WADO-RS, STOW-RS and rendering."""

    def search(self, level: Level, filters: Sequence[tuple[str, str]], *, study: str | None = None,
               series: str | None = None, fields: Sequence[str] = (), fuzzy: bool = False,
               limit: int | None = None, offset: int = 0) -> list[DicomJson]:
        """QIDO-RS: every match of ``filters`` (keyword or tag, DICOM query text), all pages."""
        ...

    def retrieve_metadata(self, study: str, series: str | None = None, instance: str | None = None) -> list[DicomJson]:
        """WADO-RS metadata: one DICOM JSON object per instance."""
        ...

    def iter_instances(self, study: str, series: str | None = None, instance: str | None = None) -> Iterator[bytes]:
        """WADO-RS retrieve: the Part 10 bytes of each instance, one at a time as they arrive."""
        ...

    def iter_bulkdata(self, study: str, series: str | None = None, instance: str | None = None, *,
                      into: BulkRoom | None = None) -> Iterator[BulkPart]:
        """WADO-RS Retrieve Bulkdata of a resource: every bulk value, compressed pixel data as stored.

        ``into`` places the parts the caller has room for: a part of the room's size is read
        into it (``BulkPart.filled``; its ``data`` is the room, valid until the next part is asked for).
        Optional for a server (Orthanc 1.10 has none): callers fall back when it raises DicomWebError.
        """
        ...

    def retrieve_frames(self, study: str, series: str, instance: str, frames: Sequence[int]) -> list[EncodedFrame]:
        """WADO-RS frames (1-based numbers) in the stored transfer syntax where the server allows it."""
        ...

    def retrieve_rendered(self, study: str, series: str | None = None, instance: str | None = None,
                          frame: int | None = None, *, media_type: str = "image/png",
                          params: Mapping[str, str] | None = None) -> RenderedImage:
        """WADO-RS rendered: a consumer-format image of a study, series, instance or frame."""
        ...

    def retrieve_thumbnail(self, study: str, series: str | None = None, instance: str | None = None,
                           frame: int | None = None, *, media_type: str = "image/png",
                           size: int | None = None) -> RenderedImage:
        """WADO-RS thumbnail: a small image standing for the resource."""
        ...

    def store_instances(self, items: Sequence[StowItem], *, study: str | None = None,
                        on_sent: Callable[[StowItem], None] | None = None) -> DicomJson:
        """STOW-RS one batch; returns the server's response dataset (may list failures)."""
        ...

    def close(self) -> None:
        ...

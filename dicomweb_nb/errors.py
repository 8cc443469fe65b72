"""The exceptions of dicomweb-nb: one hierarchy rooted at ``DicomWebError``.

Every error a notebook user can get back from a DICOMweb exchange is a ``DicomWebError``; those
that come from an HTTP answer carry its ``status``, the ``url`` asked and the server's own
``server_message`` (Orthanc and our server both explain themselves in the body), so
``except dw.errors.NotFound`` or ``err.status == 404`` both work.

Errors that are also plain value errors (a bad query filter, undecodable pixels) subclass
``ValueError`` as well, so code written against the standard library's conventions keeps working.
Those raised without any HTTP exchange (by the pure ``dicom`` and ``pixels`` modules, or by the
client before it sends anything) have ``status`` None.

This module is a leaf: it imports nothing of the package, and every other module takes its errors
from here (the modules that raise them re-export them under their old names).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "DicomWebError", "HTTPStatusError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "NotAcceptable",
    "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "TooManyRequests", "ServerError", "ServiceUnavailable",
    "ConnectionFailed", "InvalidFilter", "ConfirmationRequired", "ConfigurationError", "UnknownServer", "InvalidResponse",
    "FrameError",
    "QueryError", "UnknownAttributeError", "MediaTypeError", "MultipartError",
    "PixelDecodeError", "DisplayError", "RenderParameterError", "TranscodeError", "VolumeError",
    "SegmentationError", "MeasurementError", "DicomWebWarning", "NotDicomError", "MissingAttributeError",
    "WorkitemError", "InvalidWorkitem", "WorkitemStateError",
]


class DicomWebError(Exception):
    """Base of every dicomweb-nb error.

    ``status`` is the HTTP status (None when no answer came back), ``url`` what was asked,
    ``server_message`` the explanation the server sent (None when it sent none).
    """

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None,
                 server_message: str | None = None, method: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url
        self.server_message = server_message
        self.method = method

    def __str__(self) -> str:
        text = self.message
        if self.server_message and self.server_message not in text:
            text += f": {self.server_message}"
        return text


class HTTPStatusError(DicomWebError):
    """The server answered with an HTTP error status."""


class BadRequest(HTTPStatusError):
    """400: the server did not understand or refused the request."""


class Unauthorized(HTTPStatusError):
    """401: credentials are missing or wrong (see ``connect(username=, password=, token=)``)."""


class Forbidden(HTTPStatusError):
    """403: the credentials do not allow this."""


class NotFound(HTTPStatusError):
    """404: no such study, series, instance or service."""


class NotAcceptable(HTTPStatusError, ValueError):
    """406: none of the requested media types (or transfer syntaxes, or rendering options such as an
    ICC profile) can be produced. Raised by a server's answer, and in-process by content negotiation
    and rendering before any answer exists (``status`` None then)."""


class Conflict(HTTPStatusError):
    """409: STOW-RS refused every instance."""


class PayloadTooLarge(HTTPStatusError):
    """413: the upload is larger than the server accepts."""


class UnsupportedMediaType(HTTPStatusError):
    """415: the server does not accept the uploaded media type."""


class TooManyRequests(HTTPStatusError):
    """429: rate limited, and still so after retrying."""


class ServerError(HTTPStatusError):
    """5xx: the server failed."""


class ServiceUnavailable(ServerError):
    """502, 503, 504: the server or a gateway is down, and still so after retrying."""


class ConnectionFailed(DicomWebError):
    """No HTTP answer: refused connection, timeout, reset, TLS failure."""


class QueryError(DicomWebError, ValueError):
    """A QIDO-RS query that is not valid; the message says which parameter and why."""


class InvalidFilter(QueryError):
    """A search filter that is not valid DICOM; raised before any request is sent."""


class ConfirmationRequired(DicomWebError, ValueError):
    """An irreversible request made without saying so (``pacs.delete(study)`` without ``confirm=True``)."""


class UnknownAttributeError(DicomWebError, ValueError):
    """An attribute keyword or tag that the DICOM dictionary does not know."""


class ConfigurationError(DicomWebError):
    """A connection that cannot be set up from the given arguments or configuration."""


class UnknownServer(ConfigurationError, KeyError):
    """``connect(name)`` with a name that is not among the configured servers."""

    def __str__(self) -> str:  # KeyError would quote the message
        return DicomWebError.__str__(self)


class InvalidResponse(DicomWebError):
    """The server answered 2xx but with a body that is not what DICOMweb promises."""


class MediaTypeError(DicomWebError, ValueError):
    """A Content-Type or Accept header (or a media type parameter) that cannot be parsed."""


class MultipartError(DicomWebError, ValueError):
    """A body that is not a well-formed multipart message."""


class PixelDecodeError(DicomWebError, ValueError):
    """A frame that cannot be decoded: unknown syntax, missing codec, wrong size or corrupt data."""


class DisplayError(DicomWebError, ValueError):
    """A frame that does not fit its attributes, or attributes the display pipeline cannot use."""


class RenderParameterError(DicomWebError, ValueError):
    """A rendering or WADO-URI parameter with a bad value; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class TranscodeError(DicomWebError, ValueError):
    """Pixel data that cannot be put into the transfer syntax asked for (no codec, a profile that
    refuses the image, or data a codec fails on)."""


class NotDicomError(DicomWebError, ValueError):
    """Content that is not a DICOM Part 10 file (or a dataset), or is truncated beyond reading."""


class MissingAttributeError(DicomWebError, ValueError):
    """A DICOM file that lacks an attribute the store needs (a UID), or has it in a form that is not valid."""


class VolumeError(DicomWebError, ValueError):
    """A series that is not one regular volume: mixed orientations or sizes, missing geometry, gaps."""


class SegmentationError(DicomWebError, ValueError):
    """A segmentation that cannot be read onto (or written for) its source series."""


class MeasurementError(SegmentationError):
    """A measurement table that cannot be written as a report, or a report that is not TID 1500."""


class WorkitemError(HTTPStatusError):
    """A worklist (UPS-RS, PS3.18 11) request refused by the rules of PS3.4 Annex CC.

    ``status`` is the HTTP status PS3.18 gives the refusal (400, 404 or 409), ``warning`` the PS3.18
    ``Warning`` text that goes with it (None where PS3.18 names none) and ``dimse_status`` the PS3.4
    status code of the same refusal (``"C301"``: the correct Transaction UID was not provided, ...).
    """

    def __init__(self, message: str, *, status: int | None = None, warning: str | None = None,
                 dimse_status: str | None = None, **kwargs: Any):
        super().__init__(message, status=status, **kwargs)
        self.warning = warning
        self.dimse_status = dimse_status


class InvalidWorkitem(WorkitemError, BadRequest, ValueError):
    """A workitem dataset that does not meet PS3.4 Table CC.2.5-3 (a required attribute missing or empty,
    an attribute that may not be set, a value outside its enumerated values); the message names them."""


class WorkitemStateError(WorkitemError):
    """A change the workitem's state or its transaction UID does not allow: claiming a workitem someone
    else claimed, completing one that is not IN PROGRESS, changing one that is COMPLETED or CANCELED, a
    missing or wrong transaction UID. ``status`` is 400 or 409, as PS3.18 11.6-11.8 assign them."""


class DicomWebWarning(UserWarning):
    """A server's ``Warning`` header (PS3.18 8.1.2.2): the answer came, but not quite as asked
    (a parameter not performed, a value read differently). Shown once per message by Python's warnings."""


class FrameError(DicomWebError):
    """Frames of a lazy volume or slide that could not be fetched or decoded when a computation needed them.

    Names the frames (``frames``, 1-based), their ``instance``, ``series`` and ``study``; ``status``,
    ``url`` and ``server_message`` are those of the failed request, ``cause`` the error behind it.
    """

    def __init__(self, message: str, *, frames: list[int] | None = None, instance: str | None = None,
                 series: str | None = None, study: str | None = None, cause: BaseException | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.frames = list(frames or [])
        self.instance = instance
        self.series = series
        self.study = study
        self.cause = cause

    @classmethod
    def of(cls, error: DicomWebError, study: str, series: str, instance: str, frames: list[int]) -> FrameError:
        """The FrameError for frames whose request failed with ``error``."""
        which = f"frame {frames[0]}" if len(frames) == 1 else f"frames {', '.join(map(str, frames))}"
        return cls(f"{which} of instance {instance} (series {series}) could not be fetched: {error}", frames=frames,
                   instance=instance, series=series, study=study, cause=error, status=error.status, url=error.url,
                   method=error.method)


_STATUS_CLASSES: dict[int, type[HTTPStatusError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 406: NotAcceptable, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 429: TooManyRequests,
    502: ServiceUnavailable, 503: ServiceUnavailable, 504: ServiceUnavailable,
}


def error_class_for_status(status: int) -> type[HTTPStatusError]:
    """The exception class for an HTTP error status."""
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status >= 500:
        return ServerError
    return HTTPStatusError


def server_message_from_body(body: bytes | str | None, content_type: str | None = None) -> str | None:
    """The human explanation inside an error answer.

    Orthanc answers ``{"Message": ..., "Details": ...}``, jupyter-server ``{"message": ...}``,
    others plain text or HTML; the first few hundred characters of anything else are kept.
    """
    if not body:
        return None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    if not text:
        return None
    if (content_type or "").split(";")[0].strip().endswith("json") or text[:1] in "{[":
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            parts = []
            for key in ("Message", "message", "error", "Error", "reason", "Details", "details"):
                value = data.get(key)
                if isinstance(value, str) and value and value not in parts:
                    parts.append(value)
            if parts:
                return " - ".join(parts)
    return text[:500]

"""The query parameters of WADO-URI requests (PS3.18 9), parsed into a :class:`WadoUriRequest`: object
UIDs, content types, ``frameNumber``, ``transferSyntax`` ... with its ``render`` options
(``windowCenter``/``windowWidth``, ``rows``/``columns``, ``region``, ``imageQuality``).

WADO-URI is an HTTP service, so its request parsing is the server's; the rendered parameters
vocabulary it shares with WADO-RS rendered requests and the client's in-process source is
``pixels/renderparams.py``. Errors: :class:`~dicomweb_nb.errors.RenderParameterError` (a
``ValueError``: an HTTP 400) naming the parameter at fault. Which parameters each service honours,
refuses or ignores is ``queryparams``' table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..dicom.mediatypes import parse_media_type
from ..dicom.uids import UID_RULE, is_valid_uid
from ..errors import MediaTypeError, RenderParameterError
from ..pixels.render import RenderOptions, check_region
from ..pixels.renderparams import QueryValues, integer_value, number_value, parse_annotation, single_value, window_value

__all__ = ["WadoUriRequest", "parse_wado_uri_params"]


@dataclass(frozen=True)
class WadoUriRequest:
    """A parsed WADO-URI request (PS3.18 9.1 / 9.2).

    ``content_types`` are the media types of ``contentType`` in the order given (empty when absent:
    the server picks its default). ``frame_number`` is 1-based as in the request. ``anonymize``,
    ``presentation_uid``/``presentation_series_uid`` and ``charset`` are parsed and validated for the
    server to act on (or refuse); ``annotation`` is in ``render`` as well, which
    :func:`~dicomweb_nb.pixels.render.render` draws.
    """

    study_uid: str
    series_uid: str
    object_uid: str
    content_types: tuple[str, ...] = ()
    frame_number: int | None = None
    transfer_syntax: str | None = None
    charset: str | None = None
    anonymize: bool = False
    annotation: tuple[str, ...] = ()
    presentation_uid: str | None = None
    presentation_series_uid: str | None = None
    render: RenderOptions = field(default_factory=RenderOptions)

    @property
    def wants_dicom(self) -> bool:
        """True when ``application/dicom`` is among the content types asked for."""
        return "application/dicom" in self.content_types


_IMAGE_ONLY_URI_PARAMS = ("annotation", "rows", "columns", "region", "windowCenter", "windowWidth", "frameNumber",
                          "imageQuality", "presentationUID", "presentationSeriesUID")


def _uid(query: QueryValues, name: str, *, required: bool) -> str | None:
    value = single_value(query, name)
    if not value:
        if required:
            raise RenderParameterError(name, "is required")
        return None
    if not is_valid_uid(value):
        raise RenderParameterError(name, f"{value!r} is not a DICOM UID ({UID_RULE})")
    return value


def parse_wado_uri_params(query: QueryValues) -> WadoUriRequest:
    """A WADO-URI request (PS3.18 9.1.2 / 9.2.2): ``requestType=WADO&studyUID=&seriesUID=&objectUID=``
    plus the optional parameters. Parameter names are case-sensitive, as in the standard.
    """
    request_type = single_value(query, "requestType")
    if request_type is None:
        raise RenderParameterError("requestType", "is required (requestType=WADO)")
    if request_type != "WADO":
        raise RenderParameterError("requestType", f"must be WADO, got {request_type!r}")
    # PS3.18 requires studyUID and seriesUID; Orthanc (and so its users' links) needs only objectUID.
    study = _uid(query, "studyUID", required=False)
    series = _uid(query, "seriesUID", required=False)
    instance = _uid(query, "objectUID", required=True)

    content_types: tuple[str, ...] = ()
    if (text := single_value(query, "contentType")) is not None:
        found = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                found.append(parse_media_type(part).type)
            except MediaTypeError as exc:
                raise RenderParameterError("contentType", str(exc)) from None
        if not found:
            raise RenderParameterError("contentType", "is empty")
        content_types = tuple(found)
    only_dicom = content_types == ("application/dicom",)
    if only_dicom:
        for name in _IMAGE_ONLY_URI_PARAMS:
            if name in query:
                raise RenderParameterError(name, "must not be present when contentType is application/dicom")

    transfer_syntax = _uid(query, "transferSyntax", required=False)
    if transfer_syntax and content_types and "application/dicom" not in content_types:
        raise RenderParameterError("transferSyntax", "is only allowed with contentType application/dicom")

    anonymize = False
    if (text := single_value(query, "anonymize")) is not None:
        if text != "yes":
            raise RenderParameterError("anonymize", f"the only value allowed is 'yes', got {text!r}")
        anonymize = True

    annotation: tuple[str, ...] = ()
    if (text := single_value(query, "annotation")) is not None:
        annotation = parse_annotation(text)

    presentation_uid = _uid(query, "presentationUID", required=False)
    presentation_series_uid = _uid(query, "presentationSeriesUID", required=False)
    if presentation_uid and not presentation_series_uid:
        raise RenderParameterError("presentationSeriesUID", "is required with presentationUID")
    if presentation_series_uid and not presentation_uid:
        raise RenderParameterError("presentationUID", "is required with presentationSeriesUID")

    frame_number = None
    if (text := single_value(query, "frameNumber")) is not None:
        frame_number = integer_value("frameNumber", text, minimum=1)

    options: dict[str, Any] = {}
    for name in ("rows", "columns"):
        if (text := single_value(query, name)) is not None:
            options[name] = integer_value(name, text, minimum=1)
    if (text := single_value(query, "region")) is not None:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4:
            raise RenderParameterError("region", f"expected x1,y1,x2,y2, got {text!r}")
        region = tuple(number_value("region", p) for p in parts)
        check_region(region)
        options["region"] = region
    center = single_value(query, "windowCenter")
    width = single_value(query, "windowWidth")
    if (center is None) != (width is None):
        missing = "windowWidth" if width is None else "windowCenter"
        raise RenderParameterError(missing, "windowCenter and windowWidth must be given together")
    if center is not None and width is not None:
        options["window"] = window_value("windowWidth", center, width)
    if (text := single_value(query, "imageQuality")) is not None:
        options["quality"] = integer_value("imageQuality", text, minimum=1, maximum=100)
    if annotation:
        options["annotation"] = annotation

    return WadoUriRequest(
        study_uid=study or "",
        series_uid=series or "",
        object_uid=instance or "",
        content_types=content_types,
        frame_number=frame_number,
        transfer_syntax=transfer_syntax,
        charset=single_value(query, "charset") or None,
        anonymize=anonymize,
        annotation=annotation,
        presentation_uid=presentation_uid,
        presentation_series_uid=presentation_series_uid,
        render=RenderOptions(**options),
    )

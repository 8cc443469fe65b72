"""The query parameters of rendered resources (PS3.18 8.3.5.1) and WADO-URI requests (PS3.18 9),
parsed into the typed options ``pixels.render`` takes.

* :func:`parse_rendered_params` reads ``window``, ``viewport``, ``quality``, ``annotation`` and
  ``iccprofile`` of a WADO-RS ``.../rendered`` or ``.../thumbnail`` request into a
  :class:`~dicomweb_nb.pixels.render.RenderOptions`;
* :func:`parse_wado_uri_params` reads a whole WADO-URI request into a :class:`WadoUriRequest`
  (object UIDs, content types, ``frameNumber``, ``transferSyntax`` ...) with its ``render`` options
  (``windowCenter``/``windowWidth``, ``rows``/``columns``, ``region``, ``imageQuality``).

Both raise :class:`~dicomweb_nb.errors.RenderParameterError` (a ``ValueError``: an HTTP 400) naming
the parameter at fault, and NotAcceptable (406) for an ICC profile that cannot be delivered. Which
parameters each service honours, refuses or ignores is ``queryparams``' table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..dicom.mediatypes import parse_media_type
from ..dicom.uids import UID_RULE, is_valid_uid
from ..errors import DisplayError, MediaTypeError, NotAcceptable, RenderParameterError
from ..pixels.render import ANNOTATIONS, RenderOptions, Viewport, check_region
from ..pixels.transforms import Window

__all__ = [
    "RENDERED_PARAMETERS",
    "WadoUriRequest",
    "check_iccprofile",
    "parse_annotation",
    "parse_rendered_params",
    "parse_viewport",
    "parse_wado_uri_params",
    "parse_window",
]

QueryValues = Mapping[str, Any]


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
    render: RenderOptions = RenderOptions()

    @property
    def wants_dicom(self) -> bool:
        """True when ``application/dicom`` is among the content types asked for."""
        return "application/dicom" in self.content_types


def _single(query: QueryValues, name: str) -> str | None:
    """The one value of ``name`` (a str, bytes, or a list of them as tornado and urllib give)."""
    if name not in query:
        return None
    values = query[name]
    if isinstance(values, (str, bytes)):
        values = [values]
    values = list(values)
    if not values:
        return None
    if len(values) > 1:
        raise RenderParameterError(name, f"given {len(values)} times; give it once")
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RenderParameterError(name, "is not valid UTF-8") from None
    return str(value).strip()


def _number(name: str, text: str, what: str = "value") -> float:
    try:
        value = float(text)
    except ValueError:
        raise RenderParameterError(name, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise RenderParameterError(name, f"{what} {text!r} is not a finite number")
    return value


def _integer(name: str, text: str, what: str = "value", *, minimum: int | None = None,
             maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RenderParameterError(name, f"{what} {text!r} is not an integer") from None
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise RenderParameterError(name, f"{what} must be {bounds}, got {value}")
    return value


def _window(name: str, center_text: str, width_text: str, function: str = "linear") -> Window:
    center = _number(name, center_text, "center")
    width = _number(name, width_text, "width")
    try:
        return Window(center, width, function)
    except DisplayError as exc:
        raise RenderParameterError(name, str(exc)) from None


def parse_window(text: str) -> Window:
    """``center,width[,function]`` of the rendered ``window`` parameter (function: linear,
    linear-exact or sigmoid, any case; ``linear`` when left out)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3) or not all(parts):
        raise RenderParameterError("window", f"expected center,width,function, got {text!r}")
    return _window("window", *parts)


def parse_viewport(text: str) -> Viewport:
    """``vw,vh`` or ``vw,vh,sx,sy,sw,sh`` of the rendered ``viewport`` parameter.

    Empty fields take their defaults (vw or vh: unconstrained; sx, sy: 0; sw, sh: to the image edge).
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise RenderParameterError("viewport", f"expected vw,vh or vw,vh,sx,sy,sw,sh, got {text!r}")
    names = ("vw", "vh", "sx", "sy", "sw", "sh")
    values: list[int | None] = []
    for name, part in zip(names, parts):
        if not part:
            values.append(None)
            continue
        values.append(_integer("viewport", part, name, minimum=1 if name in ("vw", "vh") else None))
    if values[0] is None and values[1] is None and len(parts) == 2:
        raise RenderParameterError("viewport", "give vw, vh or both")
    vw, vh, *source = values + [None] * (6 - len(values))
    sx, sy, sw, sh = source
    return Viewport(vw, vh, sx or 0, sy or 0, sw, sh)


def parse_rendered_params(query: QueryValues) -> RenderOptions:
    """Rendering options of a WADO-RS rendered or thumbnail request (PS3.18 8.3.5.1).

    ``query`` maps parameter names to a value or a list of values (``str`` or ``bytes``), as
    ``urllib.parse.parse_qs`` or tornado's ``request.query_arguments`` give them.
    """
    options: dict[str, Any] = {}
    if (text := _single(query, "window")) is not None:
        options["window"] = parse_window(text)
    if (text := _single(query, "viewport")) is not None:
        options["viewport"] = parse_viewport(text)
    if (text := _single(query, "quality")) is not None:
        options["quality"] = _integer("quality", text, minimum=1, maximum=100)
    if (text := _single(query, "annotation")) is not None:
        options["annotation"] = parse_annotation(text)
    check_iccprofile(_single(query, "iccprofile"))
    # charset concerns annotation text, which is drawn as pixels: every charset holds.
    return RenderOptions(**options)


# The query parameters of rendered and thumbnail requests this module reads (PS3.18 8.3.5.1).
RENDERED_PARAMETERS = frozenset({"annotation", "charset", "iccprofile", "quality", "viewport", "window"})


def check_iccprofile(value: str | None) -> None:
    """``iccprofile`` (PS3.18 8.3.5.1.4): ``no`` is what every image rendered here is (no profile
    embedded, no colour conversion); a profile or a colour space cannot be delivered: NotAcceptable."""
    if value is None or value.strip().lower() == "no":
        return
    raise NotAcceptable(f"iccprofile={value}: rendered images from this server carry no ICC profile and are not "
                        "converted to another colour space; ask iccprofile=no or leave it out")


def parse_annotation(text: str) -> tuple[str, ...]:
    """``patient``, ``technique`` or both, comma-separated (PS3.18 8.3.5.1.1 and 9.5.2.1)."""
    words = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    bad = [w for w in words if w not in ANNOTATIONS]
    if bad or not words:
        raise RenderParameterError("annotation", f"values are patient and/or technique, got {text!r}")
    return words


_IMAGE_ONLY_URI_PARAMS = ("annotation", "rows", "columns", "region", "windowCenter", "windowWidth", "frameNumber",
                          "imageQuality", "presentationUID", "presentationSeriesUID")


def _uid(query: QueryValues, name: str, *, required: bool) -> str | None:
    value = _single(query, name)
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
    request_type = _single(query, "requestType")
    if request_type is None:
        raise RenderParameterError("requestType", "is required (requestType=WADO)")
    if request_type != "WADO":
        raise RenderParameterError("requestType", f"must be WADO, got {request_type!r}")
    # PS3.18 requires studyUID and seriesUID; Orthanc (and so its users' links) needs only objectUID.
    study = _uid(query, "studyUID", required=False)
    series = _uid(query, "seriesUID", required=False)
    instance = _uid(query, "objectUID", required=True)

    content_types: tuple[str, ...] = ()
    if (text := _single(query, "contentType")) is not None:
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
    if (text := _single(query, "anonymize")) is not None:
        if text != "yes":
            raise RenderParameterError("anonymize", f"the only value allowed is 'yes', got {text!r}")
        anonymize = True

    annotation: tuple[str, ...] = ()
    if (text := _single(query, "annotation")) is not None:
        annotation = parse_annotation(text)

    presentation_uid = _uid(query, "presentationUID", required=False)
    presentation_series_uid = _uid(query, "presentationSeriesUID", required=False)
    if presentation_uid and not presentation_series_uid:
        raise RenderParameterError("presentationSeriesUID", "is required with presentationUID")
    if presentation_series_uid and not presentation_uid:
        raise RenderParameterError("presentationUID", "is required with presentationSeriesUID")

    frame_number = None
    if (text := _single(query, "frameNumber")) is not None:
        frame_number = _integer("frameNumber", text, minimum=1)

    options: dict[str, Any] = {}
    for name in ("rows", "columns"):
        if (text := _single(query, name)) is not None:
            options[name] = _integer(name, text, minimum=1)
    if (text := _single(query, "region")) is not None:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4:
            raise RenderParameterError("region", f"expected x1,y1,x2,y2, got {text!r}")
        region = tuple(_number("region", p) for p in parts)
        check_region(region)
        options["region"] = region
    center = _single(query, "windowCenter")
    width = _single(query, "windowWidth")
    if (center is None) != (width is None):
        missing = "windowWidth" if width is None else "windowCenter"
        raise RenderParameterError(missing, "windowCenter and windowWidth must be given together")
    if center is not None and width is not None:
        options["window"] = _window("windowWidth", center, width)
    if (text := _single(query, "imageQuality")) is not None:
        options["quality"] = _integer("imageQuality", text, minimum=1, maximum=100)
    if annotation:
        options["annotation"] = annotation

    return WadoUriRequest(
        study_uid=study or "",
        series_uid=series or "",
        object_uid=instance or "",
        content_types=content_types,
        frame_number=frame_number,
        transfer_syntax=transfer_syntax,
        charset=_single(query, "charset") or None,
        anonymize=anonymize,
        annotation=annotation,
        presentation_uid=presentation_uid,
        presentation_series_uid=presentation_series_uid,
        render=RenderOptions(**options),
    )

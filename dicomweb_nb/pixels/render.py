"""Rendered images: PS3.18 rendered resources (8.3.5, 10.4.1.1.3), thumbnails and WADO-URI images (9).

Parsing turns query strings into typed options and names the parameter at fault:

* :func:`parse_rendered_params` reads ``window``, ``viewport`` and ``quality`` of a WADO-RS
  ``.../rendered`` or ``.../thumbnail`` request into :class:`RenderOptions`;
* :func:`parse_wado_uri_params` reads a whole WADO-URI request into :class:`WadoUriRequest`
  (object UIDs, content types, ``frameNumber``, ``transferSyntax`` ...) with its ``render`` options
  (``windowCenter``/``windowWidth``, ``rows``/``columns``, ``region``, ``imageQuality``).

Both raise :class:`RenderParameterError` (a ``ValueError``, so an HTTP 400) for bad values.
``annotation=patient,technique`` is honoured: :func:`annotation_lines` picks the text from the
instance and :func:`render` burns it in. What the server refuses or ignores (``iccprofile`` other
than ``no``, presentation states, unknown parameters) is the server's decision (server/queryparams.py).

Rendering (:func:`render`, :func:`render_image`, :func:`render_frames`, :func:`thumbnail`) takes a
decoded frame and its :class:`~dicomweb_nb.pixels.voi.ImageAttributes`, applies the display pipeline
of :mod:`dicomweb_nb.pixels.voi`, then the source region (``viewport`` sx,sy,sw,sh or WADO-URI
``region``; negative sw/sh flip), then scales to fit the viewport (``vw``/``vh`` or ``columns``/
``rows``, each a maximum, aspect ratio kept, in the order PS3.18 8.3.5.1 gives), and encodes with
Pillow. An unsupported media type raises :class:`~dicomweb_nb.dicom.mediatypes.NotAcceptable` (406).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from ..dicom.dicomjson import first, pn_text
from ..dicom.mediatypes import MediaTypeError, NotAcceptable, parse_media_type
from .voi import DisplayError, ImageAttributes, Window, default_window, to_display

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "RENDERED_MEDIA_TYPES",
    "RenderOptions",
    "RenderParameterError",
    "Viewport",
    "WadoUriRequest",
    "RENDERED_PARAMETERS",
    "annotate",
    "annotation_lines",
    "check_iccprofile",
    "encode_image",
    "parse_annotation",
    "parse_rendered_params",
    "parse_viewport",
    "parse_wado_uri_params",
    "parse_window",
    "render",
    "render_frames",
    "render_image",
    "thumbnail",
]

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
DEFAULT_JPEG_QUALITY = 90  # Orthanc's default too
PNG_COMPRESS_LEVEL = 3  # zlib level: on a 512x512 CT slice ~1.5x faster than Pillow's default 6, ~10% larger
DEFAULT_FRAME_TIME_MS = 100.0


class RenderParameterError(ValueError):
    """A rendering or WADO-URI query parameter with a bad value; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


@dataclass(frozen=True)
class Viewport:
    """PS3.18 ``viewport=vw,vh[,sx,sy,sw,sh]``.

    ``width``/``height`` (vw, vh) bound the output; either may be ``None`` (unconstrained). The source
    region starts at (``source_x``, ``source_y``) and spans ``source_width`` x ``source_height``
    pixels (``None``: to the image edge); a negative span flips the region along that axis.
    """

    width: int | None
    height: int | None
    source_x: int = 0
    source_y: int = 0
    source_width: int | None = None
    source_height: int | None = None

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RenderParameterError("viewport", f"{'vw' if name == 'width' else 'vh'} must be at least 1, got {value}")
        if self.source_x < 0 or self.source_y < 0:
            raise RenderParameterError("viewport", f"sx, sy must not be negative, got {self.source_x}, {self.source_y}")
        if self.source_width == 0 or self.source_height == 0:
            raise RenderParameterError("viewport", "sw and sh must not be 0")

    @property
    def has_source_region(self) -> bool:
        return bool(self.source_x or self.source_y or self.source_width is not None or self.source_height is not None)


@dataclass(frozen=True)
class RenderOptions:
    """How to render: VOI window, source region, output size, JPEG quality and burned-in annotation.

    ``viewport`` (WADO-RS) and ``region`` + ``rows``/``columns`` (WADO-URI) are alternatives.
    ``region`` is ``(x1, y1, x2, y2)`` normalised to 0..1 (top left, bottom right).
    ``quality`` (1..100) applies to JPEG only. ``annotation`` names what to write on the image
    (``patient``, ``technique``); the text itself comes from the instance (:func:`annotation_lines`).
    """

    window: Window | None = None
    viewport: Viewport | None = None
    region: tuple[float, float, float, float] | None = None
    rows: int | None = None
    columns: int | None = None
    quality: int | None = None
    annotation: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.viewport is not None and (self.region is not None or self.rows or self.columns):
            raise RenderParameterError("viewport", "cannot be combined with region, rows or columns")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise RenderParameterError("quality", f"must be between 1 and 100, got {self.quality}")
        for name in ("rows", "columns"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RenderParameterError(name, f"must be a positive integer, got {value}")
        if self.region is not None:
            _check_region(self.region)


@dataclass(frozen=True)
class WadoUriRequest:
    """A parsed WADO-URI request (PS3.18 9.1 / 9.2).

    ``content_types`` are the media types of ``contentType`` in the order given (empty when absent:
    the server picks its default). ``frame_number`` is 1-based as in the request. ``anonymize``,
    ``presentation_uid``/``presentation_series_uid`` and ``charset`` are parsed and validated for the
    server to act on (or refuse); ``annotation`` is in ``render`` as well, which :func:`render` draws.
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


# ------------------------------------------------------------------------------------ parsing

QueryValues = Mapping[str, Any]
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


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


ANNOTATIONS = ("patient", "technique")


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
    if len(value) > 64 or not _UID.match(value):
        raise RenderParameterError(name, f"{value!r} is not a DICOM UID")
    return value


def _check_region(region: Sequence[float]) -> None:
    if len(region) != 4:
        raise RenderParameterError("region", f"expected x1,y1,x2,y2, got {len(region)} values")
    x1, y1, x2, y2 = region
    if not all(0.0 <= v <= 1.0 for v in region):
        raise RenderParameterError("region", f"values must lie in 0.0..1.0, got {tuple(region)}")
    if not (x1 < x2 and y1 < y2):
        raise RenderParameterError("region", f"needs x1 < x2 and y1 < y2, got {tuple(region)}")


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
        _check_region(region)
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


# ---------------------------------------------------------------------------------- rendering

WindowLike = Window | tuple[float, float] | tuple[float, float, str]
ViewportLike = Viewport | tuple[int, int] | tuple[int, int, int, int, int, int]


def _options(
    options: RenderOptions | None,
    window: WindowLike | None,
    viewport: ViewportLike | None,
    region: Sequence[float] | None,
    rows: int | None,
    columns: int | None,
    quality: int | None,
) -> RenderOptions:
    """``options`` with any keyword given on top of it."""
    changes: dict[str, Any] = {}
    if window is not None:
        changes["window"] = window if isinstance(window, Window) else _window("window", *map(str, window))
    if viewport is not None:
        if isinstance(viewport, Viewport):
            changes["viewport"] = viewport
        else:
            changes["viewport"] = parse_viewport(",".join("" if v is None else str(int(v)) for v in viewport))
    if region is not None:
        changes["region"] = tuple(float(v) for v in region)
    if rows is not None:
        changes["rows"] = rows
    if columns is not None:
        changes["columns"] = columns
    if quality is not None:
        changes["quality"] = quality
    base = options or RenderOptions()
    return replace(base, **changes) if changes else base


def _source_slices(opts: RenderOptions, rows: int, columns: int) -> tuple[slice, slice] | None:
    """The source region as a pair of slices (negative steps for flips), or None for the whole frame."""
    if opts.viewport is not None and opts.viewport.has_source_region:
        vp = opts.viewport
        if vp.source_x >= columns or vp.source_y >= rows:
            raise RenderParameterError(
                "viewport", f"source region origin ({vp.source_x}, {vp.source_y}) lies outside the "
                f"{columns}x{rows} image")
        x0, y0 = vp.source_x, vp.source_y
        # Spans past the edge are clipped to it, as Orthanc does.
        x1 = columns if vp.source_width is None else min(columns, x0 + abs(vp.source_width))
        y1 = rows if vp.source_height is None else min(rows, y0 + abs(vp.source_height))
        xs = slice(x0, x1) if (vp.source_width or 1) > 0 else slice(x1 - 1, x0 - 1 if x0 else None, -1)
        ys = slice(y0, y1) if (vp.source_height or 1) > 0 else slice(y1 - 1, y0 - 1 if y0 else None, -1)
        return ys, xs
    if opts.region is not None:
        x1n, y1n, x2n, y2n = opts.region
        x0, x1 = int(math.floor(x1n * columns)), int(math.ceil(x2n * columns))
        y0, y1 = int(math.floor(y1n * rows)), int(math.ceil(y2n * rows))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        return slice(y0, min(y1, rows)), slice(x0, min(x1, columns))
    return None


def _fit(width: int, height: int, box_width: int | None, box_height: int | None) -> tuple[int, int]:
    """Size of a width x height image scaled to fit the box (each bound optional), aspect ratio kept."""
    scales = []
    if box_width:
        scales.append(box_width / width)
    if box_height:
        scales.append(box_height / height)
    if not scales:
        return width, height
    scale = min(scales)
    new_width = max(1, min(round(width * scale), box_width or 1 << 30))
    new_height = max(1, min(round(height * scale), box_height or 1 << 30))
    return new_width, new_height


def render_image(
    frame: np.ndarray,
    attrs: ImageAttributes,
    *,
    options: RenderOptions | None = None,
    window: WindowLike | None = None,
    viewport: ViewportLike | None = None,
    region: Sequence[float] | None = None,
    rows: int | None = None,
    columns: int | None = None,
    fill_viewport: bool = False,
) -> Image.Image:
    """One frame rendered to a Pillow image (mode ``L`` or ``RGB``) with the options given.

    ``fill_viewport`` pads the fitted image, centred on black, to exactly vw x vh (what Orthanc
    returns); by default the image is only as large as the fitted region.
    """
    opts = _options(options, window, viewport, region, rows, columns, None)
    frame = np.asarray(frame)
    if frame.ndim < 2:
        raise DisplayError(f"a frame has at least 2 dimensions, got shape {frame.shape}")
    slices = _source_slices(opts, frame.shape[0], frame.shape[1])
    pixels = to_display(frame, attrs, window=opts.window, region=slices)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if opts.viewport is not None:
        box_width, box_height = opts.viewport.width, opts.viewport.height
    else:
        box_width, box_height = opts.columns, opts.rows
    size = _fit(image.width, image.height, box_width, box_height)
    if size != image.size:
        shrinking = size[0] < image.width
        image = image.resize(
            size,
            Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC,
            reducing_gap=3.0 if shrinking else None,
        )
    if fill_viewport and (box_width or box_height):
        canvas = Image.new(image.mode, (box_width or image.width, box_height or image.height))
        canvas.paste(image, ((canvas.width - image.width) // 2, (canvas.height - image.height) // 2))
        image = canvas
    return image


# ----------------------------------------------------------------------------------- annotation

def _text(metadata: dict[str, Any], keyword: str) -> str:
    value = first(metadata, keyword)
    if value is None:
        return ""
    if isinstance(value, dict):  # PN
        return pn_text(value).replace("^", " ").strip()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _joined(*parts: str) -> str:
    return "  ".join(p for p in parts if p)


def annotation_lines(metadata: dict[str, Any], kinds: Iterable[str]) -> list[str]:
    """The text PS3.18 ``annotation=patient,technique`` burns into a rendered image, from the
    instance's DICOM JSON: who (name, ID, birth date and sex, study) and how (modality and series,
    exposure, slice thickness, MR timings). Attributes the instance lacks are left out."""
    def labelled(label: str, keyword: str, unit: str = "") -> str:
        text = _text(metadata, keyword)
        return f"{label} {text}{unit}".strip() if text else ""

    lines: list[str] = []
    for kind in kinds:
        if kind == "patient":
            lines += [_text(metadata, "PatientName"), labelled("ID", "PatientID"),
                      _joined(labelled("DOB", "PatientBirthDate"), labelled("Sex", "PatientSex")),
                      _joined(_text(metadata, "StudyDate"), _text(metadata, "StudyDescription"))]
        elif kind == "technique":
            lines += [_joined(_text(metadata, "Modality"), _text(metadata, "SeriesDescription")),
                      _joined(labelled("kVp", "KVP"), labelled("", "XRayTubeCurrent", " mA"), labelled("", "ExposureTime", " ms")),
                      labelled("Thk", "SliceThickness", " mm"),
                      _joined(labelled("TR", "RepetitionTime"), labelled("TE", "EchoTime"))]
        else:
            raise RenderParameterError("annotation", f"values are patient and/or technique, got {kind!r}")
    return [line for line in lines if line]


def annotate(image: Image.Image, lines: Sequence[str]) -> Image.Image:
    """``lines`` written in the top left corner of ``image`` (in place), white on a black outline,
    in a size that follows the image's (Pillow's own font: glyphs it lacks show as boxes)."""
    if not lines:
        return image
    from PIL import ImageDraw, ImageFont

    size = max(8, min(image.width, image.height) // 24)
    font = ImageFont.load_default(size=size)
    white, black = (255, 0) if image.mode == "L" else ((255, 255, 255), (0, 0, 0))
    ImageDraw.Draw(image).multiline_text((2, 2), "\n".join(lines), font=font, fill=white,
                                         stroke_width=max(1, size // 12), stroke_fill=black)
    return image


def _media_type(media_type: str) -> str:
    try:
        parsed = parse_media_type(media_type).type
    except MediaTypeError as exc:
        raise NotAcceptable(str(exc)) from None
    if parsed not in RENDERED_MEDIA_TYPES:
        raise NotAcceptable(f"{media_type!r} is not a rendered media type this server produces "
                            f"({', '.join(RENDERED_MEDIA_TYPES)})")
    return parsed


def encode_image(image: Image.Image | np.ndarray, media_type: str = "image/jpeg", quality: int | None = None) -> bytes:
    """A Pillow image (or uint8 array) as JPEG, PNG or GIF bytes. ``quality`` is for JPEG only."""
    kind = _media_type(media_type)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image))
    if quality is not None and not 1 <= quality <= 100:
        raise RenderParameterError("quality", f"must be between 1 and 100, got {quality}")
    out = io.BytesIO()
    if kind == "image/jpeg":
        image.save(out, "JPEG", quality=quality or DEFAULT_JPEG_QUALITY)
    elif kind == "image/png":
        image.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        image.save(out, "GIF")
    return out.getvalue()


def render(
    frame: np.ndarray,
    attrs: ImageAttributes,
    *,
    media_type: str = "image/jpeg",
    options: RenderOptions | None = None,
    window: WindowLike | None = None,
    viewport: ViewportLike | None = None,
    region: Sequence[float] | None = None,
    rows: int | None = None,
    columns: int | None = None,
    quality: int | None = None,
    fill_viewport: bool = False,
    annotation: Sequence[str] = (),
) -> bytes:
    """One decoded frame as ``image/jpeg``, ``image/png`` or ``image/gif`` bytes.

    ``options`` usually comes from :func:`parse_rendered_params` or :func:`parse_wado_uri_params`;
    the keywords override it (``window=(40, 400, "linear")``, ``viewport=(256, 256)`` ...).
    ``annotation`` is the text to burn in (see :func:`annotation_lines`).
    """
    kind = _media_type(media_type)
    opts = _options(options, window, viewport, region, rows, columns, quality)
    image = annotate(render_image(frame, attrs, options=opts, fill_viewport=fill_viewport), annotation)
    return encode_image(image, kind, opts.quality)


def thumbnail(
    frame: np.ndarray,
    attrs: ImageAttributes,
    size: int = 128,
    *,
    media_type: str = "image/jpeg",
    options: RenderOptions | None = None,
) -> bytes:
    """A small image of the frame that fits in ``size`` x ``size`` (aspect ratio kept).

    A viewport in ``options`` (from a thumbnail request's query) takes precedence over ``size``.
    """
    if size < 1:
        raise RenderParameterError("size", f"must be at least 1, got {size}")
    opts = options or RenderOptions()
    if opts.viewport is None and not (opts.rows or opts.columns):
        opts = replace(opts, viewport=Viewport(size, size))
    return render(frame, attrs, media_type=media_type, options=opts)


def render_frames(
    frames: Iterable[np.ndarray],
    attrs: ImageAttributes | Sequence[ImageAttributes],
    *,
    media_type: str = "image/gif",
    options: RenderOptions | None = None,
    window: WindowLike | None = None,
    viewport: ViewportLike | None = None,
    region: Sequence[float] | None = None,
    rows: int | None = None,
    columns: int | None = None,
    frame_time_ms: float | None = None,
    loop: int = 0,
    annotation: Sequence[str] = (),
) -> bytes:
    """Several frames as one animated ``image/gif`` or ``image/png`` (APNG).

    ``attrs`` is one ImageAttributes for all frames or one per frame (enhanced multi-frame objects
    window frames differently). Without a window in the options or attributes, one window spanning
    all frames is used so the animation does not flicker. The frame duration is ``frame_time_ms``,
    else the attributes' Frame Time, else 100 ms.
    """
    kind = _media_type(media_type)
    if kind == "image/jpeg":
        raise NotAcceptable("image/jpeg holds one frame; ask for image/gif or image/png for several")
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise DisplayError("no frames to render")
    per_frame = list(attrs) if isinstance(attrs, Sequence) else [attrs] * len(frames)
    if len(per_frame) != len(frames):
        raise DisplayError(f"{len(per_frame)} attribute sets for {len(frames)} frames")
    opts = _options(options, window, viewport, region, rows, columns, None)
    first = per_frame[0]
    if opts.window is None and first.is_grayscale and not first.windows and not first.voi_luts:
        low = min(f.min() for f in frames)
        high = max(f.max() for f in frames)
        opts = replace(opts, window=default_window(np.array([low, high], dtype=frames[0].dtype), first))
    images = [annotate(render_image(f, a, options=opts), annotation) for f, a in zip(frames, per_frame)]
    duration = frame_time_ms or first.frame_time_ms or DEFAULT_FRAME_TIME_MS
    out = io.BytesIO()
    fmt = "GIF" if kind == "image/gif" else "PNG"
    extra = {"compress_level": PNG_COMPRESS_LEVEL} if fmt == "PNG" else {}
    images[0].save(out, fmt, save_all=True, append_images=images[1:], duration=int(round(duration)),
                   loop=loop, **extra)
    return out.getvalue()

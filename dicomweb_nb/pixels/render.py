"""Rendered images: PS3.18 rendered resources (8.3.5, 10.4.1.1.3), thumbnails and WADO-URI images (9).

Rendering (:func:`render`, :func:`render_image`, :func:`render_frames`, :func:`thumbnail`) takes a
decoded frame, its :class:`~dicomweb_nb.pixels.attributes.ImageAttributes` and typed options
(:class:`RenderOptions`, or the same as keywords), applies the display pipeline of
:mod:`dicomweb_nb.pixels.voi`, then the source region (``viewport`` sx,sy,sw,sh or WADO-URI
``region``; negative sw/sh flip), then scales to fit the viewport (``vw``/``vh`` or ``columns``/
``rows``, each a maximum, aspect ratio kept, in the order PS3.18 8.3.5.1 gives), burns in the
``annotation`` text (:func:`annotation_lines`) and encodes with Pillow. Bad options raise
:class:`~dicomweb_nb.errors.RenderParameterError` naming the option; an unsupported media type
:class:`~dicomweb_nb.errors.NotAcceptable` (406).

The rendered parameters of PS3.18 8.3.5.1 are parsed into these options by ``pixels/renderparams.py``
(for the server's rendered resources and the client's in-process source); WADO-URI requests by the
server (``server/renderparams.py``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from ..dicom.dicomjson import first, pn_text
from ..dicom.mediatypes import parse_media_type
from ..errors import DisplayError, MediaTypeError, NotAcceptable, RenderParameterError
from .attributes import ImageAttributes
from .transforms import Window
from .voi import default_window, to_display

__all__ = [
    "ANNOTATIONS",
    "DEFAULT_JPEG_QUALITY",
    "RENDERED_MEDIA_TYPES",
    "RenderOptions",
    "RenderParameterError",
    "Viewport",
    "annotate",
    "annotation_lines",
    "check_region",
    "encode_image",
    "render",
    "render_frames",
    "render_image",
    "thumbnail",
]

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
DEFAULT_JPEG_QUALITY = 90  # Orthanc's default too
PNG_COMPRESS_LEVEL = 3  # zlib level: on a 512x512 CT slice ~1.5x faster than Pillow's default 6, ~10% larger
DEFAULT_FRAME_TIME_MS = 100.0


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
            check_region(self.region)


# What ``annotation`` can burn into an image (PS3.18 8.3.5.1.1 and 9.5.2.1).
ANNOTATIONS = ("patient", "technique")


def check_region(region: Sequence[float]) -> None:
    """A WADO-URI ``region`` ``(x1, y1, x2, y2)``: four values in 0..1 with x1 < x2 and y1 < y2."""
    if len(region) != 4:
        raise RenderParameterError("region", f"expected x1,y1,x2,y2, got {len(region)} values")
    x1, y1, x2, y2 = region
    if not all(0.0 <= v <= 1.0 for v in region):
        raise RenderParameterError("region", f"values must lie in 0.0..1.0, got {tuple(region)}")
    if not (x1 < x2 and y1 < y2):
        raise RenderParameterError("region", f"needs x1 < x2 and y1 < y2, got {tuple(region)}")


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
        changes["window"] = window if isinstance(window, Window) else _window_of(window)
    if viewport is not None:
        changes["viewport"] = viewport if isinstance(viewport, Viewport) else _viewport_of(viewport)
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


def _window_of(values: Sequence[Any]) -> Window:
    """``(center, width[, function])`` as a Window, a bad value named as the ``window`` option."""
    try:
        return Window(*values)
    except (DisplayError, TypeError, ValueError) as exc:
        raise RenderParameterError("window", str(exc)) from None


def _viewport_of(values: Sequence[int | None]) -> Viewport:
    """``(vw, vh)`` or ``(vw, vh, sx, sy, sw, sh)`` as a Viewport (None: the default of that field)."""
    if len(values) not in (2, 6):
        raise RenderParameterError("viewport", f"expected vw,vh or vw,vh,sx,sy,sw,sh, got {tuple(values)}")
    vw, vh, sx, sy, sw, sh = (None if v is None else int(v) for v in (*values, *[None] * (6 - len(values))))
    if vw is None and vh is None and len(values) == 2:
        raise RenderParameterError("viewport", "give vw, vh or both")
    return Viewport(vw, vh, sx or 0, sy or 0, sw, sh)


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
        x0, x1 = math.floor(x1n * columns), math.ceil(x2n * columns)
        y0, y1 = math.floor(y1n * rows), math.ceil(y2n * rows)
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
            lines += [
                _joined(_text(metadata, "Modality"), _text(metadata, "SeriesDescription")),
                _joined(labelled("kVp", "KVP"), labelled("", "XRayTubeCurrent", " mA"), labelled("", "ExposureTime", " ms")),
                labelled("Thk", "SliceThickness", " mm"),
                _joined(labelled("TR", "RepetitionTime"), labelled("TE", "EchoTime")),
            ]
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

    ``options`` usually comes from parsed parameters (``pixels.renderparams``);
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
    images[0].save(out, fmt, save_all=True, append_images=images[1:], duration=round(duration),
                   loop=loop, **extra)
    return out.getvalue()

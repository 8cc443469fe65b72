"""The rendering parameters of PS3.18 8.3.5.1 (``window``, ``viewport``, ``quality``, ``annotation``,
``iccprofile``), parsed into the typed options ``pixels.render`` takes.

Pure functions shared by the two places that speak this vocabulary: the server's rendered and
thumbnail resources (their query strings) and the client's in-process source
(``client/local.py``, whose ``retrieve_rendered`` takes the same parameters). The HTTP-specific
parts stay in the server: WADO-URI requests (``server/renderparams.py``), which parameters each
service honours and the ``Warning`` header for the others (``server/queryparams.py``), and turning
these errors into HTTP statuses.

Errors: :class:`~dicomweb_nb.errors.RenderParameterError` (a ``ValueError``) naming the parameter at
fault, and :class:`~dicomweb_nb.errors.NotAcceptable` for an ICC profile that cannot be delivered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import DisplayError, NotAcceptable, RenderParameterError
from .render import ANNOTATIONS, RenderOptions, Viewport
from .transforms import Window

__all__ = [
    "RENDERED_PARAMETERS",
    "QueryValues",
    "check_iccprofile",
    "integer_value",
    "number_value",
    "parse_annotation",
    "parse_rendered_params",
    "parse_viewport",
    "parse_window",
    "single_value",
    "window_value",
]

QueryValues = Mapping[str, Any]


def single_value(query: QueryValues, name: str) -> str | None:
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


def number_value(name: str, text: str, what: str = "value") -> float:
    """``text`` as a finite number; RenderParameterError naming ``name`` (and ``what`` part of it) otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise RenderParameterError(name, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise RenderParameterError(name, f"{what} {text!r} is not a finite number")
    return value


def integer_value(name: str, text: str, what: str = "value", *, minimum: int | None = None,
                  maximum: int | None = None) -> int:
    """``text`` as an integer within the bounds given; RenderParameterError naming ``name`` otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise RenderParameterError(name, f"{what} {text!r} is not an integer") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise RenderParameterError(name, f"{what} must be {bounds}, got {value}")
    return value


def window_value(name: str, center_text: str, width_text: str, function: str = "linear") -> Window:
    """A window from its texts; RenderParameterError naming ``name`` when it is not one."""
    center = number_value(name, center_text, "center")
    width = number_value(name, width_text, "width")
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
    return window_value("window", *parts)


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
        values.append(integer_value("viewport", part, name, minimum=1 if name in ("vw", "vh") else None))
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
    if (text := single_value(query, "window")) is not None:
        options["window"] = parse_window(text)
    if (text := single_value(query, "viewport")) is not None:
        options["viewport"] = parse_viewport(text)
    if (text := single_value(query, "quality")) is not None:
        options["quality"] = integer_value("quality", text, minimum=1, maximum=100)
    if (text := single_value(query, "annotation")) is not None:
        options["annotation"] = parse_annotation(text)
    check_iccprofile(single_value(query, "iccprofile"))
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

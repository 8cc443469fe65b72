"""From stored pixel values to display pixels: the grayscale and colour pipelines of PS3.3 C.11 / PS3.4 N.2.

``to_display(frame, attrs)`` turns one decoded frame into 8-bit display pixels:

* grayscale: Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence) -> VOI (a window with the
  LINEAR, LINEAR_EXACT or SIGMOID function of PS3.3 C.11.2.1.2, or a VOI LUT Sequence) -> MONOCHROME1
  inversion -> ``uint8`` of shape ``(rows, columns)``;
* colour: RGB passes through (high bit depths scaled to 8 bits), YBR_FULL / YBR_FULL_422 are converted
  with pydicom's ``convert_color_space``, PALETTE COLOR is looked up with pydicom's ``apply_color_lut``
  -> ``uint8`` of shape ``(rows, columns, 3)``.

The attributes the pipeline needs travel in an :class:`ImageAttributes`, built from a pydicom Dataset
(:meth:`ImageAttributes.from_dataset`) or from DICOM JSON metadata (:meth:`ImageAttributes.from_json`,
which decodes only the handful of attributes it needs with pydicom's ``Dataset.from_json``).  Per-frame
values of enhanced multi-frame objects (Pixel Value Transformation and Frame VOI LUT functional groups)
are resolved for the frame asked for.

Integer frames of 8 or 16 bits are mapped through one lookup table built over every possible stored
value (at most 65536 entries), so the per-pixel work is a single ``numpy.take``; 32-bit and float
frames are computed directly, still vectorised.

Choices made where the standard leaves room:

* A window (Window Center/Width) is preferred over a VOI LUT Sequence when both are present; with
  neither, the window spans the frame's range of modality values.
* Windowed values are rounded half up to the nearest integer in 0..255.
* VOI LUT output is scaled from its nominal range (0 .. 2**n - 1, n the third LUT Descriptor value).
* Windows are not applied to colour images (PS3.4 N.2: there is no VOI stage for colour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword

__all__ = [
    "CT_WINDOW_PRESETS",
    "DisplayError",
    "ImageAttributes",
    "Lut",
    "VOI_FUNCTIONS",
    "Window",
    "apply_window",
    "default_window",
    "modality_values",
    "to_display",
    "window_preset",
]


class DisplayError(ValueError):
    """A frame that does not fit its attributes, or attributes the display pipeline cannot use."""


# PS3.3 C.11.2.1.3: the defined terms of VOI LUT Function.
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_YBR_DECODED_AS_RGB = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "YBR_PARTIAL_422")


@dataclass(frozen=True)
class Window:
    """A VOI window: center and width in modality units, and the VOI LUT Function applied with them.

    ``function`` accepts the DICOM defined terms (``LINEAR``, ``LINEAR_EXACT``, ``SIGMOID``) and the
    PS3.18 rendered-parameter spellings (``linear``, ``linear-exact``, ``sigmoid``).
    """

    center: float
    width: float
    function: str = "LINEAR"
    explanation: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        function = str(self.function).strip().upper().replace("-", "_")
        if function not in VOI_FUNCTIONS:
            raise DisplayError(
                f"VOI LUT function {self.function!r} is not one of linear, linear-exact, sigmoid"
            )
        object.__setattr__(self, "function", function)
        center, width = float(self.center), float(self.width)
        if not (math.isfinite(center) and math.isfinite(width)):
            raise DisplayError(f"window center and width must be finite numbers, got {self.center!r}, {self.width!r}")
        # PS3.3 C.11.2.1.2.1: Window Width >= 1 for LINEAR; C.11.2.1.3: > 0 for the other functions.
        if function == "LINEAR" and width < 1:
            raise DisplayError(f"window width must be at least 1 for the LINEAR function, got {width:g}")
        if width <= 0:
            raise DisplayError(f"window width must be greater than 0, got {width:g}")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "width", width)

    def apply(self, values: np.ndarray, ymin: float = 0.0, ymax: float = 255.0) -> np.ndarray:
        """The window's output (float64, in ``ymin..ymax``) for modality values ``values``."""
        return apply_window(values, self, ymin, ymax)


# Common CT windows in Hounsfield units (center, width), as taught in radiology references.
CT_WINDOW_PRESETS: dict[str, Window] = {
    "brain": Window(40, 80, explanation="brain"),
    "subdural": Window(75, 215, explanation="subdural"),
    "stroke": Window(40, 40, explanation="stroke"),
    "temporal_bone": Window(600, 2800, explanation="temporal bone"),
    "soft_tissue": Window(40, 400, explanation="soft tissue"),
    "abdomen": Window(50, 400, explanation="abdomen"),
    "mediastinum": Window(50, 350, explanation="mediastinum"),
    "liver": Window(30, 150, explanation="liver"),
    "lung": Window(-600, 1500, explanation="lung"),
    "bone": Window(400, 1800, explanation="bone"),
}


def window_preset(name: str) -> Window:
    """A CT window preset by name: ``window_preset("Soft tissue")``, ``"lung"``, ``"bone"`` ...

    Case, spaces and hyphens do not matter. Raises ``KeyError`` listing the known names.
    """
    key = "_".join(name.strip().lower().replace("-", " ").split())
    try:
        return CT_WINDOW_PRESETS[key]
    except KeyError:
        raise KeyError(f"no CT window preset {name!r}; known: {', '.join(CT_WINDOW_PRESETS)}") from None


def apply_window(values: np.ndarray, window: Window, ymin: float = 0.0, ymax: float = 255.0) -> np.ndarray:
    """The VOI window functions of PS3.3 C.11.2.1.2 (LINEAR) and C.11.2.1.3 (LINEAR_EXACT, SIGMOID).

    Returns float64 values in ``ymin..ymax``. The piecewise definitions reduce to clipping the linear
    formula, which keeps this a handful of vectorised operations.
    """
    x = np.asarray(values, dtype=np.float64)
    c, w = window.center, window.width
    span = ymax - ymin
    if window.function == "LINEAR":
        if w == 1:  # the standard's formula divides by w - 1: a step at c - 0.5
            return np.where(x <= c - 0.5, ymin, ymax).astype(np.float64)
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * span + ymin
        return np.clip(y, ymin, ymax, out=y)
    if window.function == "LINEAR_EXACT":
        y = ((x - c) / w + 0.5) * span + ymin
        return np.clip(y, ymin, ymax, out=y)
    with np.errstate(over="ignore"):
        return span / (1.0 + np.exp(-4.0 * (x - c) / w)) + ymin


@dataclass(frozen=True, eq=False)
class Lut:
    """A lookup table of PS3.3 C.11.1 / C.11.2 (Modality or VOI LUT): descriptor plus data."""

    first_mapped: int
    bits: int
    data: np.ndarray
    explanation: str = ""

    @property
    def max_output(self) -> int:
        """The top of the LUT's nominal output range, 2**bits - 1."""
        return (1 << self.bits) - 1

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Values below the first mapped value take the first entry, above the last the last entry."""
        index = np.rint(np.asarray(values, dtype=np.float64)) - self.first_mapped
        np.clip(index, 0, len(self.data) - 1, out=index)
        return self.data[index.astype(np.intp)]

    @classmethod
    def from_item(cls, item: Dataset, *, little_endian: bool = True, signed_input: bool = False) -> "Lut":
        """Read an item of Modality LUT Sequence or VOI LUT Sequence.

        LUT Data may be US (values) or OW (bytes in the dataset's byte order). The first mapped value
        is SS when the input values are signed (PS3.3 C.11.1.1.1); pydicom reads it as US, so it is
        reinterpreted here when ``signed_input``.
        """
        try:
            entries, first, bits = (int(v) for v in item.LUTDescriptor)
        except (AttributeError, TypeError, ValueError):
            raise DisplayError("LUT item without a valid three-valued LUT Descriptor") from None
        entries = entries or 65536
        if signed_input and first >= 32768:
            first -= 65536
        value = item["LUTData"].value if "LUTData" in item else None
        if value is None:
            raise DisplayError("LUT item without LUT Data")
        if isinstance(value, (bytes, bytearray, memoryview)):
            itemsize = 1 if len(value) == entries else 2
            dtype = np.dtype("u1") if itemsize == 1 else np.dtype("<u2" if little_endian else ">u2")
            data = np.frombuffer(bytes(value), dtype=dtype)[:entries].astype(np.int64)
        else:
            data = np.atleast_1d(np.asarray(value, dtype=np.int64))
        if len(data) == 0:
            raise DisplayError("LUT item with empty LUT Data")
        if not 1 <= bits <= 16:
            raise DisplayError(f"LUT Descriptor gives {bits} bits per entry; DICOM allows 1 to 16")
        return cls(first, bits, data, str(item.get("LUTExplanation", "") or ""))


# The attributes ImageAttributes reads, by keyword; from_json keeps only these before decoding.
_PIXEL_KEYWORDS = (
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames",
)
_TRANSFORM_KEYWORDS = (
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence",
)
_PALETTE_KEYWORDS = tuple(
    f"{prefix}{colour}PaletteColorLookupTable{suffix}"
    for colour in ("Red", "Green", "Blue", "Alpha")
    for prefix, suffix in (("", "Descriptor"), ("", "Data"), ("Segmented", "Data"))
) + ("PixelPresentation",)
_OTHER_KEYWORDS = ("FrameTime", "RecommendedDisplayFrameRate", "CineRate")
_FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _json_key(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}"


_JSON_KEYS = frozenset(
    _json_key(k) for k in _PIXEL_KEYWORDS + _TRANSFORM_KEYWORDS + _PALETTE_KEYWORDS + _OTHER_KEYWORDS
)
_SHARED_KEY = _json_key("SharedFunctionalGroupsSequence")
_PER_FRAME_KEY = _json_key("PerFrameFunctionalGroupsSequence")
_FG_ITEM_KEYS = frozenset(_json_key(k) for k in ("PixelValueTransformationSequence", "FrameVOILUTSequence"))

BulkDataHandler = Callable[[str, str, str], Any]


@dataclass(frozen=True)
class ImageAttributes:
    """What the display pipeline needs to know about the frames it is given.

    ``photometric_interpretation`` describes the *frames as passed in*. pydicom decodes YCbCr
    data to RGB by default (``as_rgb=True``), so the constructors record ``"RGB"`` for YBR images
    unless told ``as_rgb=False``; the value in the file stays in ``stored_photometric_interpretation``.

    Build one with :meth:`from_dataset` or :meth:`from_json`; construct directly for synthetic data.
    """

    rows: int
    columns: int
    photometric_interpretation: str = "MONOCHROME2"
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    planar_configuration: int = 0
    number_of_frames: int = 1
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    rescale_type: str = ""
    modality_lut: Lut | None = field(default=None, compare=False)
    windows: tuple[Window, ...] = ()
    voi_luts: tuple[Lut, ...] = field(default=(), compare=False)
    palette: Dataset | None = field(default=None, compare=False, repr=False)
    frame_time_ms: float | None = None
    stored_photometric_interpretation: str = ""

    def __post_init__(self) -> None:
        pi = str(self.photometric_interpretation).strip().upper()
        object.__setattr__(self, "photometric_interpretation", pi)
        if not self.stored_photometric_interpretation:
            object.__setattr__(self, "stored_photometric_interpretation", pi)

    @property
    def is_grayscale(self) -> bool:
        return self.photometric_interpretation in _GRAYSCALE

    @property
    def is_palette(self) -> bool:
        return self.photometric_interpretation == "PALETTE COLOR"

    def with_window(self, window: Window | None) -> "ImageAttributes":
        """A copy whose default VOI is ``window`` (``None`` drops the stored windows)."""
        return replace(self, windows=(window,) if window else ())

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_dataset(cls, ds: Dataset, *, frame_index: int = 0, as_rgb: bool = True) -> "ImageAttributes":
        """Attributes of frame ``frame_index`` (0-based) of a pydicom Dataset.

        Only the Image Pixel, Modality LUT, VOI LUT, Palette Color LUT and enhanced functional-group
        attributes are read; a Dataset holding just those works too. ``as_rgb`` says whether the
        frames you will pass were decoded with pydicom's default YBR-to-RGB conversion.
        """
        if "Rows" not in ds or "Columns" not in ds:
            raise DisplayError("the dataset has no Rows/Columns: it is not an image")
        little_endian = _is_little_endian(ds)
        stored_pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
        pi = "RGB" if as_rgb and stored_pi in _YBR_DECODED_AS_RGB else stored_pi
        if stored_pi in ("YBR_ICT", "YBR_RCT"):
            pi = "RGB"  # JPEG 2000 decoders always undo the component transform
        pixel_representation = _int(ds.get("PixelRepresentation"), 0)
        signed_input = pixel_representation == 1

        # Enhanced objects keep rescale and window in functional groups; per-frame beats shared.
        sources: list[Dataset] = [ds]
        for keyword in _FUNCTIONAL_GROUPS:
            groups = ds.get(keyword)
            if not groups:
                continue
            if keyword == "SharedFunctionalGroupsSequence":
                item = groups[0]
            elif 0 <= frame_index < len(groups):
                item = groups[frame_index]
            else:
                raise DisplayError(
                    f"frame index {frame_index} is outside the {len(groups)} Per-Frame Functional Groups items"
                )
            for macro in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
                if item.get(macro):
                    sources.append(item.get(macro)[0])

        def latest(keyword: str) -> Any:
            found = None
            for source in sources:
                if keyword in source and source[keyword].value not in (None, "", []):
                    found = source[keyword].value
            return found

        slope = _float(latest("RescaleSlope"), 1.0)
        intercept = _float(latest("RescaleIntercept"), 0.0)
        modality_lut = None
        mlut_seq = latest("ModalityLUTSequence")
        if mlut_seq:
            modality_lut = Lut.from_item(mlut_seq[0], little_endian=little_endian, signed_input=signed_input)

        windows = _read_windows(latest("WindowCenter"), latest("WindowWidth"),
                                latest("VOILUTFunction"), latest("WindowCenterWidthExplanation"))
        voi_luts: tuple[Lut, ...] = ()
        vlut_seq = latest("VOILUTSequence")
        if vlut_seq:
            voi_signed = signed_input or (modality_lut is None and (intercept < 0 or slope < 0))
            voi_luts = tuple(Lut.from_item(item, little_endian=little_endian, signed_input=voi_signed)
                             for item in vlut_seq)

        palette = _palette_dataset(ds, little_endian) if stored_pi == "PALETTE COLOR" else None
        return cls(
            rows=_int(ds.get("Rows"), 0),
            columns=_int(ds.get("Columns"), 0),
            photometric_interpretation=pi,
            samples_per_pixel=_int(ds.get("SamplesPerPixel"), 1),
            bits_allocated=_int(ds.get("BitsAllocated"), 16),
            bits_stored=_int(ds.get("BitsStored"), _int(ds.get("BitsAllocated"), 16)),
            pixel_representation=pixel_representation,
            planar_configuration=0 if pi != stored_pi else _int(ds.get("PlanarConfiguration"), 0),
            number_of_frames=max(_int(ds.get("NumberOfFrames"), 1), 1),
            rescale_slope=slope,
            rescale_intercept=intercept,
            rescale_type=str(latest("RescaleType") or ""),
            modality_lut=modality_lut,
            windows=windows,
            voi_luts=voi_luts,
            palette=palette,
            frame_time_ms=_frame_time_ms(ds),
            stored_photometric_interpretation=stored_pi,
        )

    @classmethod
    def from_json(
        cls,
        obj: Mapping[str, Any],
        *,
        frame_index: int = 0,
        as_rgb: bool = True,
        bulk_data_handler: BulkDataHandler | None = None,
    ) -> "ImageAttributes":
        """Attributes of frame ``frame_index`` (0-based) from a DICOM JSON object (PS3.18 F.2).

        Binary values (palette and LUT data) may be InlineBinary (little endian, PS3.18 F.2.7) or
        BulkDataURI; the latter need ``bulk_data_handler(tag, vr, uri) -> bytes``, the same callable
        pydicom's ``Dataset.from_json`` takes. Only the attributes the pipeline needs are decoded, and
        of the Per-Frame Functional Groups only the item of this frame.
        """
        reduced: dict[str, Any] = {}
        for key, element in obj.items():
            upper = key.upper()
            if upper in _JSON_KEYS:
                reduced[upper] = element
            elif upper == _SHARED_KEY:
                reduced[upper] = _reduce_groups(element, None)
            elif upper == _PER_FRAME_KEY:
                reduced[upper] = _reduce_groups(element, frame_index)
        if bulk_data_handler is None:
            for key, element in reduced.items():
                if isinstance(element, Mapping) and "BulkDataURI" in element:
                    raise DisplayError(
                        f"attribute {key} is given by BulkDataURI; pass bulk_data_handler to fetch it"
                    )
        ds = Dataset.from_json(dict(reduced), bulk_data_uri_handler=bulk_data_handler)
        ds.set_original_encoding(False, True)
        # Of the Per-Frame Functional Groups only this frame's item was kept: it is item 0 now.
        kept_one = _PER_FRAME_KEY in reduced
        return cls.from_dataset(ds, frame_index=0 if kept_one else frame_index, as_rgb=as_rgb)


def _reduce_groups(element: Any, frame_index: int | None) -> Any:
    """Keep one item of a functional-groups sequence, and in it only the macros the pipeline reads."""
    if not isinstance(element, Mapping):
        return element
    items = element.get("Value") or []
    if frame_index is None:
        chosen = items[:1]
    else:
        if not 0 <= frame_index < len(items):
            raise DisplayError(
                f"frame index {frame_index} is outside the {len(items)} Per-Frame Functional Groups items"
            )
        chosen = [items[frame_index]]
    kept = [{k.upper(): v for k, v in item.items() if k.upper() in _FG_ITEM_KEYS} for item in chosen]
    return {"vr": "SQ", "Value": kept}


def _is_little_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        try:
            return bool(meta.TransferSyntaxUID.is_little_endian)
        except (AttributeError, ValueError):
            pass
    encoding = getattr(ds, "original_encoding", (None, None))
    return encoding[1] is not False


def _int(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default
    try:
        result = float(value)
    except (TypeError, ValueError):
        return default
    return result if math.isfinite(result) else default


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _read_windows(centers: Any, widths: Any, function: Any, explanations: Any) -> tuple[Window, ...]:
    """Windows of the VOI LUT module; unusable pairs (missing, zero width) are skipped, not fatal."""
    centers, widths, names = _as_list(centers), _as_list(widths), _as_list(explanations)
    func = str(function or "LINEAR").strip().upper() or "LINEAR"
    if func not in VOI_FUNCTIONS:
        func = "LINEAR"
    windows = []
    for i, (center, width) in enumerate(zip(centers, widths)):
        try:
            windows.append(Window(float(center), float(width), func, str(names[i]) if i < len(names) else ""))
        except (TypeError, ValueError):
            continue
    return tuple(windows)


def _frame_time_ms(ds: Dataset) -> float | None:
    frame_time = _float(ds.get("FrameTime"), 0.0)
    if frame_time > 0:
        return frame_time
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = _float(ds.get(keyword), 0.0)
        if rate > 0:
            return 1000.0 / rate
    return None


def _palette_dataset(ds: Dataset, little_endian: bool) -> Dataset:
    """The palette attributes alone, little endian, in the shape pydicom's ``apply_color_lut`` reads."""
    palette = Dataset()
    for keyword in _PALETTE_KEYWORDS:
        if keyword not in ds or ds[keyword].value in (None, b"", []):
            continue
        element = ds[keyword]
        value = element.value
        if keyword.endswith("Data") and isinstance(value, (bytes, bytearray)) and not little_endian:
            value = np.frombuffer(bytes(value), dtype=">u2").astype("<u2").tobytes()
        palette.add_new(element.tag, element.VR, value)
    if "RedPaletteColorLookupTableDescriptor" not in palette:
        raise DisplayError("PALETTE COLOR image without a Red Palette Color Lookup Table Descriptor")
    palette.set_original_encoding(False, True)
    return palette


# ---------------------------------------------------------------------------------- pipeline


def modality_values(frame: np.ndarray, attrs: ImageAttributes) -> np.ndarray:
    """Stored values to modality values (HU for CT): the Modality LUT, else Rescale Slope/Intercept.

    Without either, the stored values are returned unchanged (as given, no copy).
    """
    if attrs.modality_lut is not None:
        return attrs.modality_lut(frame)
    if attrs.rescale_slope == 1.0 and attrs.rescale_intercept == 0.0:
        return frame
    return np.asarray(frame, dtype=np.float64) * attrs.rescale_slope + attrs.rescale_intercept


def default_window(frame: np.ndarray, attrs: ImageAttributes) -> Window:
    """The window used when none is asked for and the image carries none: its range of modality values.

    LINEAR_EXACT maps the lowest value exactly to black and the highest to white.
    """
    lowest, highest = _modality_range(frame, attrs)
    width = max(highest - lowest, 1e-6)
    return Window(lowest + width / 2, width, "LINEAR_EXACT", "full range")


def _modality_range(frame: np.ndarray, attrs: ImageAttributes) -> tuple[float, float]:
    if frame.size == 0:
        return 0.0, 1.0
    if np.issubdtype(frame.dtype, np.floating):
        low, high = float(np.nanmin(frame)), float(np.nanmax(frame))
    else:
        low, high = float(frame.min()), float(frame.max())
    if attrs.modality_lut is not None:
        mapped = attrs.modality_lut(np.arange(low, high + 1))
        return float(mapped.min()), float(mapped.max())
    a, b = low * attrs.rescale_slope + attrs.rescale_intercept, high * attrs.rescale_slope + attrs.rescale_intercept
    return (a, b) if a <= b else (b, a)


def _to_uint8(y: np.ndarray) -> np.ndarray:
    # Round half up; NaN (from float frames) shows as black.
    out = np.floor(y + 0.5)
    np.nan_to_num(out, copy=False, nan=0.0)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _grayscale_display(values: np.ndarray, attrs: ImageAttributes, voi: Window | Lut) -> np.ndarray:
    """Modality values -> uint8 display values (VOI then MONOCHROME1 inversion)."""
    if isinstance(voi, Lut):
        y = voi(values).astype(np.float64) * (255.0 / voi.max_output)
    else:
        y = voi.apply(values)
    out = _to_uint8(y)
    if attrs.photometric_interpretation == "MONOCHROME1":
        np.subtract(255, out, out=out)
    return out


def to_display(
    frame: np.ndarray,
    attrs: ImageAttributes,
    *,
    window: Window | None = None,
    voi_lut_index: int | None = None,
    region: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """One decoded frame as 8-bit display pixels: ``(rows, columns)`` grayscale or ``(rows, columns, 3)`` RGB.

    ``window`` overrides the image's own VOI; ``voi_lut_index`` picks an item of the VOI LUT Sequence
    instead. ``region`` (a pair of slices, steps of -1 allowed for flips) crops the output, while the
    default window is still taken from the whole frame. Windows are ignored for colour images.
    """
    frame = np.asarray(frame)
    _check_shape(frame, attrs)
    if attrs.is_grayscale:
        return _grayscale(frame, attrs, window, voi_lut_index, region)
    if region is not None:
        frame = frame[region]
    return _colour(frame, attrs)


def _check_shape(frame: np.ndarray, attrs: ImageAttributes) -> None:
    pi = attrs.photometric_interpretation
    if attrs.is_grayscale or attrs.is_palette:
        if frame.ndim != 2:
            raise DisplayError(f"a {pi} frame must be 2-D (rows, columns), got shape {frame.shape}")
    elif frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise DisplayError(f"a {pi} frame must be (rows, columns, 3), got shape {frame.shape}")
    if attrs.rows and attrs.columns and frame.shape[:2] != (attrs.rows, attrs.columns):
        raise DisplayError(
            f"frame shape {frame.shape[:2]} does not match Rows x Columns {attrs.rows} x {attrs.columns}"
        )
    if frame.dtype.kind not in "uifb":
        raise DisplayError(f"frame dtype {frame.dtype} is not numeric")


def _choose_voi(frame: np.ndarray, attrs: ImageAttributes, window: Window | None,
                voi_lut_index: int | None) -> Window | Lut:
    if window is not None:
        return window
    if voi_lut_index is not None:
        if not 0 <= voi_lut_index < len(attrs.voi_luts):
            raise DisplayError(f"VOI LUT index {voi_lut_index} outside the {len(attrs.voi_luts)} VOI LUTs present")
        return attrs.voi_luts[voi_lut_index]
    if attrs.windows:
        return attrs.windows[0]
    if attrs.voi_luts:
        return attrs.voi_luts[0]
    return default_window(frame, attrs)


def _grayscale(frame: np.ndarray, attrs: ImageAttributes, window: Window | None,
               voi_lut_index: int | None, region: tuple[slice, slice] | None) -> np.ndarray:
    voi = _choose_voi(frame, attrs, window, voi_lut_index)
    if frame.dtype == np.bool_:
        frame = frame.view(np.uint8)
    elif not frame.dtype.isnative:
        frame = frame.astype(frame.dtype.newbyteorder("="))
    if frame.dtype.kind in "ui" and frame.dtype.itemsize <= 2:
        # Every possible stored value through the pipeline once, then one gather per pixel.
        table = _grayscale_display(modality_values(_all_values(frame.dtype), attrs), attrs, voi)
        part = frame if region is None else frame[region]
        return np.take(table, part.view(f"u{frame.dtype.itemsize}"))
    part = frame if region is None else frame[region]
    return _grayscale_display(modality_values(part, attrs), attrs, voi)


def _all_values(dtype: np.dtype) -> np.ndarray:
    """Every value of an 8- or 16-bit integer dtype, ordered by bit pattern (so a pixel's unsigned view
    indexes its own entry)."""
    unsigned = np.dtype(f"u{dtype.itemsize}")
    return np.arange(1 << (8 * dtype.itemsize), dtype=np.int64).astype(unsigned).view(dtype)


def _colour(frame: np.ndarray, attrs: ImageAttributes) -> np.ndarray:
    from pydicom.pixels.processing import apply_color_lut, convert_color_space

    pi = attrs.photometric_interpretation
    if pi == "PALETTE COLOR":
        if attrs.palette is None:
            raise DisplayError("PALETTE COLOR frame but no palette in the attributes")
        nominal_bits = int(attrs.palette.RedPaletteColorLookupTableDescriptor[2])
        small_ints = frame.dtype.kind in "ui" and frame.dtype.itemsize <= 2
        if small_ints and not frame.dtype.isnative:
            frame = frame.astype(frame.dtype.newbyteorder("="))
        # As for grayscale: look every possible index up once, then gather.
        indices = _all_values(frame.dtype) if small_ints else frame
        try:
            rgb = apply_color_lut(indices, attrs.palette)[..., :3]
        except (ValueError, AttributeError, KeyError) as exc:
            raise DisplayError(f"cannot apply the palette: {exc}") from exc
        if nominal_bits > 8:
            rgb = rgb >> (nominal_bits - 8)
        rgb = rgb.astype(np.uint8)
        if small_ints:
            return np.take(rgb, frame.view(f"u{frame.dtype.itemsize}"), axis=0)
        return rgb
    rgb = frame[..., :3]
    if rgb.dtype != np.uint8:
        if rgb.dtype.kind == "f":
            rgb = np.clip(rgb, 0, 255)
        else:
            shift = max(attrs.bits_stored - 8, 0) if rgb.dtype.itemsize > 1 else 0
            rgb = rgb >> shift if shift else rgb
        rgb = rgb.astype(np.uint8)
    if pi == "RGB":
        return rgb
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        # pydicom's decoders give YBR_FULL_422 at full resolution, so both convert the same way.
        return convert_color_space(np.ascontiguousarray(rgb), "YBR_FULL", "RGB")
    raise DisplayError(f"photometric interpretation {pi!r} is not supported for display")

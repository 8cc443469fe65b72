"""From stored pixel values to display pixels: the grayscale and colour pipelines of PS3.3 C.11 / PS3.4 N.2.

``to_display(frame, attrs)`` turns one decoded frame into 8-bit display pixels:

* grayscale: Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence) -> VOI (a window with the
  LINEAR, LINEAR_EXACT or SIGMOID function of PS3.3 C.11.2.1.2, or a VOI LUT Sequence) -> MONOCHROME1
  inversion -> ``uint8`` of shape ``(rows, columns)``; each stage is pydicom's (``apply_modality_lut``,
  ``apply_windowing``, ``apply_voi``, see :mod:`dicomweb_nb.pixels.transforms`);
* colour: RGB passes through (high bit depths scaled to 8 bits), YBR_FULL / YBR_FULL_422 are converted
  with pydicom's ``convert_color_space``, PALETTE COLOR is looked up with pydicom's ``apply_color_lut``
  -> ``uint8`` of shape ``(rows, columns, 3)``.

The attributes the pipeline needs travel in an :class:`~dicomweb_nb.pixels.attributes.ImageAttributes`.

Integer frames of 8 or 16 bits are mapped through one lookup table built over the values they hold (of
at most 65536), so pydicom's functions run once per value and the per-pixel work is a single
``numpy.take``; 32-bit and float frames go through them pixel by pixel.

Choices made where the standard leaves room:

* A window (Window Center/Width) is preferred over a VOI LUT Sequence when both are present; with
  neither, the window spans the frame's range of modality values.
* Windowed values are rounded half up to the nearest integer in 0..255.
* VOI LUT output is scaled from its nominal range (0 .. 2**n - 1, n the third LUT Descriptor value).
* Windows are not applied to colour images (PS3.4 N.2: there is no VOI stage for colour).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, convert_color_space

from ..errors import DisplayError
from .attributes import BulkDataHandler, ImageAttributes
from .transforms import CT_WINDOW_PRESETS, VOI_FUNCTIONS, Lut, Window, apply_window, window_preset

__all__ = [
    "BulkDataHandler",
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


def modality_values(frame: np.ndarray, attrs: ImageAttributes) -> np.ndarray:
    """Stored values to modality values (HU for CT): the Modality LUT, else Rescale Slope/Intercept,
    by pydicom's ``apply_modality_lut``.

    Without either, the stored values are returned unchanged (as given, no copy).
    """
    return _modality(frame, attrs.rescale_slope, attrs.rescale_intercept, attrs.modality_lut)


def _modality(values: np.ndarray, slope: float, intercept: float, lut: Lut | None) -> np.ndarray:
    if lut is not None:
        return lut(values)
    if slope == 1.0 and intercept == 0.0:
        return values
    return apply_modality_lut(np.asarray(values), _rescale_module(slope, intercept))


@lru_cache(maxsize=256)
def _rescale_module(slope: float, intercept: float) -> Dataset:
    """Rescale Slope and Intercept as the Modality LUT module pydicom reads (FD: DS would round them)."""
    module = Dataset()
    module.add_new(0x00281053, "FD", slope)
    module.add_new(0x00281052, "FD", intercept)
    return module


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
    # A LUT need not be monotonic: every value of the range goes through it. A rescale is linear.
    values = np.arange(low, high + 1) if attrs.modality_lut is not None else np.array([low, high])
    mapped = modality_values(values, attrs)
    return float(mapped.min()), float(mapped.max())


def _to_uint8(y: np.ndarray) -> np.ndarray:
    # Round half up; NaN (from float frames) shows as black.
    out = np.floor(y + 0.5)
    np.nan_to_num(out, copy=False, nan=0.0)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _grayscale_display(values: np.ndarray, voi: Window | Lut, monochrome1: bool) -> np.ndarray:
    """Modality values -> uint8 display values (VOI then MONOCHROME1 inversion)."""
    y = voi.voi(values).astype(np.float64) * (255.0 / voi.max_output) if isinstance(voi, Lut) else voi.apply(values)
    out = _to_uint8(y)
    if monochrome1:
        np.subtract(255, out, out=out)
    return out


def _display_table(dtype: str, slope: float, intercept: float, modality_lut: Lut | None, voi: Window | Lut,
                   monochrome1: bool, low: int, high: int) -> np.ndarray:
    """The display value of the values ``low..high`` of an 8- or 16-bit dtype, in a table indexed by the
    bit pattern of every value of the dtype (entries outside ``low..high`` are 0 and never looked up)."""
    kind = np.dtype(dtype)
    unsigned = np.dtype(f"u{kind.itemsize}")
    values = np.arange(low, high + 1, dtype=np.int64).astype(kind)
    table = np.zeros(1 << (8 * kind.itemsize), dtype=np.uint8)
    table[values.view(unsigned)] = _grayscale_display(_modality(values, slope, intercept, modality_lut), voi, monochrome1)
    table.flags.writeable = False
    return table


# Display tables (``_display_table``) kept for the next frames with the same transforms, each with the
# range of values it covers: the slices of a series share one, and a window dragged over one image
# makes a new one per step. A table over the values a frame holds (a CT slice: ~1,000-4,000 of 65,536)
# costs ~0.1 ms through pydicom's functions, a table over every 16-bit value 0.4-0.6 ms; the frame's
# min and max 0.01 ms, the gather over a 512x512 frame 0.2 ms (benchmarks/bench_pure.py render).
_TABLES: OrderedDict[tuple[Any, ...], tuple[int, int, np.ndarray]] = OrderedDict()
_TABLES_LOCK = threading.Lock()
_TABLES_KEPT = 64


def _table_for(frame: np.ndarray, slope: float, intercept: float, modality_lut: Lut | None, voi: Window | Lut,
               monochrome1: bool) -> np.ndarray:
    """A display table covering every value of ``frame`` (an 8- or 16-bit integer array)."""
    key = (frame.dtype.str, slope, intercept, modality_lut, voi, monochrome1)
    if frame.dtype.itemsize == 1 or frame.size == 0:
        low, high = int(np.iinfo(frame.dtype).min), int(np.iinfo(frame.dtype).max)
    else:
        low, high = int(frame.min()), int(frame.max())
    with _TABLES_LOCK:
        kept = _TABLES.get(key)
        if kept is not None:
            _TABLES.move_to_end(key)
            if kept[0] <= low and high <= kept[1]:
                return kept[2]
            low, high = min(low, kept[0]), max(high, kept[1])
    table = _display_table(frame.dtype.str, slope, intercept, modality_lut, voi, monochrome1, low, high)
    with _TABLES_LOCK:
        _TABLES[key] = (low, high, table)
        _TABLES.move_to_end(key)
        while len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    return table


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
    monochrome1 = attrs.photometric_interpretation == "MONOCHROME1"
    if frame.dtype.kind in "ui" and frame.dtype.itemsize <= 2:
        # Every value the frame holds through the pipeline once (a table kept for the next frames), then
        # one gather per pixel.
        table = _table_for(frame, attrs.rescale_slope, attrs.rescale_intercept, attrs.modality_lut, voi, monochrome1)
        part = frame if region is None else frame[region]
        return np.take(table, part.view(f"u{frame.dtype.itemsize}"))
    part = frame if region is None else frame[region]
    return _grayscale_display(modality_values(part, attrs), voi, monochrome1)


def _all_values(dtype: np.dtype) -> np.ndarray:
    """Every value of an 8- or 16-bit integer dtype, ordered by bit pattern (so a pixel's unsigned view
    indexes its own entry)."""
    unsigned = np.dtype(f"u{dtype.itemsize}")
    return np.arange(1 << (8 * dtype.itemsize), dtype=np.int64).astype(unsigned).view(dtype)


def _colour(frame: np.ndarray, attrs: ImageAttributes) -> np.ndarray:
    pi = attrs.photometric_interpretation
    if pi == "PALETTE COLOR":
        if attrs.unfetched:
            raise DisplayError(f"the palette attribute {attrs.unfetched[0]} is given by BulkDataURI and was not "
                               "fetched; read the attributes with a bulk_data_handler")
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

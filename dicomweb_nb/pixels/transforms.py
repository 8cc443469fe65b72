"""The grayscale transforms of PS3.3 C.11: VOI windows and lookup tables, computed by pydicom.

A :class:`Window` (center, width, VOI LUT Function) maps modality values onto display values with
pydicom's ``apply_windowing``; a :class:`Lut` (a Modality or VOI LUT Sequence item) looks values up
with pydicom's ``apply_modality_lut`` / ``apply_voi``. What this module adds is the reading of the
LUT items pydicom's functions cannot take as stored (see :meth:`Lut.from_values`), and the shape
pydicom needs around a window or a table (a small dataset holding just that transform, built once).

The display pipeline (:mod:`dicomweb_nb.pixels.voi`) calls these once per possible stored value of
an image, not once per pixel, so pydicom's per-call cost is paid on at most 65536 values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi, apply_windowing

from ..errors import DisplayError

__all__ = ["CT_WINDOW_PRESETS", "Lut", "VOI_FUNCTIONS", "Window", "apply_window", "window_preset"]

# PS3.3 C.11.2.1.3: the defined terms of VOI LUT Function.
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

_WINDOW_CENTER, _WINDOW_WIDTH, _VOI_LUT_FUNCTION = 0x00281050, 0x00281051, 0x00281056
_RESCALE_INTERCEPT, _RESCALE_SLOPE = 0x00281052, 0x00281053
_LUT_DESCRIPTOR, _LUT_DATA = 0x00283002, 0x00283006
_MODALITY_LUT_SEQUENCE, _VOI_LUT_SEQUENCE = 0x00283000, 0x00283010


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

    @cached_property
    def _voi_module(self) -> Dataset:
        return self._module(None)

    def _module(self, output_range: tuple[float, float] | None) -> Dataset:
        """The window as the VOI LUT module of an 8-bit unsigned MONOCHROME2 image, which is what makes
        pydicom's ``apply_windowing`` answer in 0..255; another output range is given the way pydicom
        derives it, as a rescale of that range (applied to the range only, not to the input values)."""
        ds = Dataset()
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsStored, ds.PixelRepresentation = 8, 0
        # FD rather than DS: a DS value is limited to 16 characters, these are exact binary numbers.
        ds.add_new(_WINDOW_CENTER, "FD", self.center)
        ds.add_new(_WINDOW_WIDTH, "FD", self.width)
        ds.add_new(_VOI_LUT_FUNCTION, "CS", self.function)
        if output_range is not None:
            ymin, ymax = output_range
            ds.add_new(_RESCALE_SLOPE, "FD", (ymax - ymin) / 255.0)
            ds.add_new(_RESCALE_INTERCEPT, "FD", ymin)
        return ds


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
    """The VOI window functions of PS3.3 C.11.2.1.2 (LINEAR) and C.11.2.1.3 (LINEAR_EXACT, SIGMOID),
    as pydicom's ``apply_windowing`` computes them. Returns float64 values in ``ymin..ymax``."""
    module = window._voi_module if (ymin, ymax) == (0.0, 255.0) else window._module((ymin, ymax))
    with np.errstate(over="ignore"):  # SIGMOID far from the center: exp overflows to inf, the output to ymin
        return apply_windowing(np.asarray(values, dtype=np.float64), module)


@dataclass(frozen=True, eq=False)
class Lut:
    """A lookup table of PS3.3 C.11.1 / C.11.2 (Modality or VOI LUT): descriptor plus data.

    ``data`` is None when the LUT Data was given by a BulkDataURI that was not fetched (metadata read
    without a bulk data handler); using the table then raises a DisplayError saying so.
    """

    first_mapped: int
    bits: int
    data: np.ndarray | None
    explanation: str = ""
    unavailable: str = ""

    @property
    def max_output(self) -> int:
        """The top of the LUT's nominal output range, 2**bits - 1."""
        return (1 << self.bits) - 1

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """The table as a Modality LUT (pydicom's ``apply_modality_lut``): values below the first mapped
        value take the first entry, above the last the last entry."""
        return apply_modality_lut(self._index(values), self._module(_MODALITY_LUT_SEQUENCE))

    def voi(self, values: np.ndarray) -> np.ndarray:
        """The table as a VOI LUT (pydicom's ``apply_voi``), in the LUT's nominal output range."""
        return apply_voi(self._index(values), self._module(_VOI_LUT_SEQUENCE))

    def _index(self, values: np.ndarray) -> np.ndarray:
        # pydicom indexes with the values as given: a fractional modality value would be truncated, and
        # its VOI path holds the offsets in the table's uint16, where one past 65535 wraps. Rounded and
        # clipped to the table's input range here, the lookup itself is pydicom's.
        table = self._table
        values = np.asarray(values)
        if values.dtype.kind == "f":
            values = np.rint(values)
        return np.clip(values, self.first_mapped, self.first_mapped + len(table) - 1).astype(np.int64)

    @property
    def _table(self) -> np.ndarray:
        if self.data is None:
            raise DisplayError(self.unavailable or "the LUT has no LUT Data")
        return self.data

    def _module(self, sequence_tag: int) -> Dataset:
        modules = self.__dict__.setdefault("_modules", {})
        if sequence_tag not in modules:
            table = self._table
            item = Dataset()
            # Given as 16 bits per entry whatever the nominal depth (every entry fits): pydicom keeps a
            # table in uint<bits>, so only 8 and 16 work at all, and its apply_voi holds the offsets into
            # the table in that same dtype, so an 8-bit table of more than 256 entries would wrap there.
            # The nominal depth stays ``bits`` (the VOI output is scaled by it). 65536 entries are written 0.
            descriptor = [len(table) % 65536, self.first_mapped, 16]
            item.add_new(_LUT_DESCRIPTOR, "SS" if self.first_mapped < 0 else "US", descriptor)
            item.add_new(_LUT_DATA, "US", table.tolist())
            module = Dataset()
            module.add_new(sequence_tag, "SQ", [item])
            modules[sequence_tag] = module
        return modules[sequence_tag]

    @classmethod
    def from_values(cls, descriptor: Any, data: Any, explanation: Any = None, *, little_endian: bool = True,
                    signed_input: bool = False, unavailable: str = "") -> Lut:
        """A LUT from its LUT Descriptor, LUT Data and LUT Explanation values.

        LUT Data may be US (values) or OW (bytes in the dataset's byte order; an OW value as long as
        the table has entries holds one byte per entry, as some writers store 8-bit tables). The
        first mapped value is SS when the input values are signed (PS3.3 C.11.1.1.1); read as US it
        is reinterpreted here when ``signed_input``. pydicom's lookups take neither of these, nor
        entries of other than 8 or 16 bits, as stored. ``data`` None with ``unavailable`` set makes
        a table that names why it has no data when used.
        """
        try:
            entries, first, bits = (int(v) for v in descriptor)
        except (TypeError, ValueError):
            raise DisplayError("LUT item without a valid three-valued LUT Descriptor") from None
        entries = entries or 65536
        if signed_input and first >= 32768:
            first -= 65536
        if not 1 <= bits <= 16:
            raise DisplayError(f"LUT Descriptor gives {bits} bits per entry; DICOM allows 1 to 16")
        text = str(explanation or "")
        if data is None and unavailable:
            return cls(first, bits, None, text, unavailable)
        if data is None:
            raise DisplayError("LUT item without LUT Data")
        if isinstance(data, (bytes, bytearray, memoryview)):
            itemsize = 1 if len(data) == entries else 2
            dtype = np.dtype("u1") if itemsize == 1 else np.dtype("<u2" if little_endian else ">u2")
            table = np.frombuffer(bytes(data), dtype=dtype)[:entries].astype(np.int64)
        else:
            table = np.atleast_1d(np.asarray(data, dtype=np.int64))
        if len(table) == 0:
            raise DisplayError("LUT item with empty LUT Data")
        return cls(first, bits, table, text)

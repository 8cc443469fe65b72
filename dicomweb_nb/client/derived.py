"""What segmentations and measurement reports share: the source series' grid, its instances as
header-only Datasets, and storing one new instance.

The grid is the one ``Client.volume`` builds (``pixels.volume.plan_volume`` over the series
metadata), so a mask ``[segment, k, r, c]`` lines up with ``pacs.volume(study, series).array[k, r, c]``
without reading a single source pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset

from ..errors import DicomWebError
from ..pixels.volume import Volume, VolumePlan
from ..protocol import DicomJson, DicomWebSource, StowItem
from .stow import dataset_part10
from .wado import _plan_from_metadata

if TYPE_CHECKING:
    from .client import Client

__all__ = ["SourceGrid", "load_grid", "dataset_from_json", "store_dataset", "require_highdicom"]

# Attributes whose values are bulk data: left out of header-only datasets built from metadata.
_BULK_TAGS = frozenset({"7FE00010", "7FE00008", "7FE00009", "00420011", "00282000", "00880200"})


def require_highdicom() -> Any:
    """The highdicom module, or an ImportError that says what to install."""
    try:
        import highdicom
    except ImportError:  # pragma: no cover - highdicom is a runtime dependency
        raise ImportError("segmentations and measurement reports need highdicom: pip install highdicom") from None
    return highdicom


@dataclass
class SourceGrid:
    """The voxel grid of a source series: slice order, geometry and where each slice comes from."""

    study: str
    series: str
    metas: list[DicomJson]  # image instances' metadata
    owners: list[tuple[int, int]]  # per source frame: (index in metas, 1-based frame number)
    plan: VolumePlan

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.plan.shape

    @property
    def keys(self) -> list[tuple[str, int]]:
        """``(SOPInstanceUID, frame)`` of each slice, in volume order."""
        return [self.key_of(self.plan.order[k]) for k in range(len(self.plan.order))]

    def key_of(self, owner_index: int) -> tuple[str, int]:
        meta_index, frame = self.owners[owner_index]
        return str(self.metas[meta_index]["00080018"]["Value"][0]), frame

    def slice_of_key(self) -> dict[tuple[str, int], int]:
        """Volume slice index of each ``(SOPInstanceUID, frame)``."""
        return {self.key_of(owner): k for k, owner in enumerate(self.plan.order)}

    def empty_volume(self, array: np.ndarray) -> Volume:
        """A Volume on this grid holding ``array`` (same shape as the grid)."""
        return Volume(array, self.plan.spacing, self.plan.origin, self.plan.direction, self.keys)

    def nearest_slice(self, position: np.ndarray, tolerance: float) -> tuple[int | None, float, float, float]:
        """For a point in patient coordinates: the nearest slice index (None when farther than
        ``tolerance`` times the slice spacing) and its fractional (k, r, c) voxel position."""
        plan = self.plan
        offset = np.asarray(position, dtype=float) - np.asarray(plan.origin)
        along = float(np.dot(np.asarray(position, dtype=float), plan.direction[0]))
        r = float(np.dot(offset, plan.direction[1])) / plan.spacing[1]
        c = float(np.dot(offset, plan.direction[2])) / plan.spacing[2]
        distances = np.abs(plan.slice_positions - along)
        k = int(np.argmin(distances))
        k_fraction = k + (along - float(plan.slice_positions[k])) / plan.spacing[0]
        if distances[k] > tolerance * plan.spacing[0]:
            return None, k_fraction, r, c
        return k, k_fraction, r, c

    def datasets(self) -> list[Dataset]:
        """The source instances as header-only pydicom Datasets (no pixel data), in ``metas`` order."""
        return [dataset_from_json(meta) for meta in self.metas]


def load_grid(source: DicomWebSource, study: str, series: str) -> SourceGrid:
    """The grid of a series, from its metadata only (``Client.volume``'s order and geometry)."""
    metas, _slices, owners, _attrs, plan = _plan_from_metadata(source, study, series)
    return SourceGrid(study, series, metas, owners, plan)


def dataset_from_json(meta: DicomJson) -> Dataset:
    """A header-only Dataset from DICOM JSON: bulk data (pixels, overlays, icons) left out."""

    def strip(obj: DicomJson) -> DicomJson:
        out = {}
        for tag, elem in obj.items():
            if tag.upper() in _BULK_TAGS or "BulkDataURI" in elem or ("InlineBinary" in elem and tag.upper().startswith("7FE0")):
                continue
            if elem.get("vr") == "SQ" and elem.get("Value"):
                elem = {**elem, "Value": [strip(item or {}) for item in elem["Value"]]}
            out[tag] = elem
        return out

    return Dataset.from_json(strip(meta))


def store_dataset(client: Client, ds: Dataset, what: str) -> dict[str, str]:
    """STOW-RS one new instance; its Study/Series/SOP Instance UIDs, or a DicomWebError saying why not."""
    data = dataset_part10(ds)
    sop = str(ds.SOPInstanceUID)
    item = StowItem(f"{what} {sop}", len(data), lambda: data, sop, str(ds.SOPClassUID), str(ds.StudyInstanceUID))
    result = client.store_items([item], progress=False)
    row = result.iloc[0]
    if row["status"] not in ("stored", "warning"):
        failure = row["failure_reason"]
        reason = row["error"] or (f"failure reason 0x{int(failure):04X}" if not pd.isna(failure) else "no reason given")
        raise DicomWebError(f"the server did not store the {what}: {reason}")
    return {"StudyInstanceUID": str(ds.StudyInstanceUID), "SeriesInstanceUID": str(ds.SeriesInstanceUID),
            "SOPInstanceUID": sop}


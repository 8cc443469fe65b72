"""Generated data and request counting for the lazy pixel tests: enhanced multi-frame CT, tiled
whole-slide images (TILED_FULL, tiles in highdicom's order), shuffled and oblique series."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicomweb_nb import samples

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
_FRAMES = re.compile(r"/instances/([^/]+)/frames/([\d,]+)")


def shuffled(datasets, seed: int = 5) -> list:
    out = list(datasets)
    random.Random(seed).shuffle(out)
    return out


def _item(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def enhanced_ct(n_frames: int = 10, rows: int = 24, columns: int = 20, *, instances: int = 2, seed: int = 3,
                study_uid: str | None = None) -> tuple[list[Dataset], np.ndarray]:
    """A series of ``instances`` Enhanced CT instances, whose frames (positions in the per-frame
    functional groups, deliberately out of order) together form one oblique volume.

    Returns the datasets and the expected stored-value volume, sorted along the normal.
    """
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, 4000, size=(n_frames, rows, columns), dtype=np.uint16)
    orientation = [1.0, 0.0, 0.0, 0.0, 0.6, -0.8]  # oblique: normal (0, 0.8, 0.6)
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.array([-12.0, 3.0, 40.0])
    order = list(range(n_frames))
    random.Random(seed).shuffle(order)  # which slice each stored frame is
    per_instance = np.array_split(np.array(order), instances)
    datasets = []
    for number, slice_indices in enumerate(per_instance, start=1):
        ds = samples._base_dataset(ENHANCED_CT, study_uid, series_uid)
        ds.PatientName, ds.PatientID, ds.Modality = "Enhanced^CT", "ENH-1", "CT"
        ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240101", 7, number
        ds.FrameOfReferenceUID = "1.2.3.4.5"
        ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, len(slice_indices)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SharedFunctionalGroupsSequence = Sequence([_item(
            PixelMeasuresSequence=Sequence([_item(PixelSpacing=[0.6, 0.7], SliceThickness=1.5)]),
            PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=orientation)]),
        )])
        ds.PerFrameFunctionalGroupsSequence = Sequence([
            _item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=[float(v) for v in origin + 1.5 * k * normal])]))
            for k in slice_indices
        ])
        ds.PixelData = np.ascontiguousarray(volume[slice_indices]).tobytes()
        datasets.append(ds)
    return datasets, volume


def oblique_series(study_uid: str | None = None):
    """A 9-slice series with non-axial geometry (as in the eager volume tests)."""
    return samples.generate_ct_series(n_slices=9, rows=24, columns=20, pixel_spacing=(0.7, 0.9), slice_spacing=3.0,
                                      orientation=(1, 0, 0, 0, 0, -1), origin=(-10.0, 5.0, 40.0), seed=11,
                                      study_uid=study_uid)


def tiled_slide(sizes=((300, 470), (150, 235), (75, 118)), tile: tuple[int, int] = (64, 64), *, seed: int = 4,
                compress: str | None = None, organization: str = "TILED_FULL") -> tuple[list[Dataset], list[np.ndarray]]:
    """A VL Whole Slide Microscopy series: one RGB TILED_FULL instance per level (edge tiles padded),
    plus a LABEL image. Returns the datasets and each level's pixels."""
    from highdicom.spatial import tile_pixel_matrix

    study_uid, series_uid = generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(*sizes[0], 3), dtype=np.uint8)
    datasets, levels = [], []
    for number, (height, width) in enumerate(sizes, start=1):
        ys = (np.arange(height) * sizes[0][0] // height)
        xs = (np.arange(width) * sizes[0][1] // width)
        pixels = np.ascontiguousarray(base[np.ix_(ys, xs)])
        levels.append(pixels)
        frames = []
        for column, row in tile_pixel_matrix(height, width, *tile):  # 1-based tile indices, TILED_FULL order
            frame = np.zeros((*tile, 3), dtype=np.uint8)
            part = pixels[(row - 1) * tile[0]:row * tile[0], (column - 1) * tile[1]:column * tile[1]]
            frame[:part.shape[0], :part.shape[1]] = part
            frames.append(frame)
        datasets.append(_wsi_instance(study_uid, series_uid, number, (height, width), tile, frames,
                                      ["ORIGINAL" if number == 1 else "DERIVED", "PRIMARY", "VOLUME", "NONE"],
                                      25.0e-4 * sizes[0][1] / width, organization))
    label = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    datasets.append(_wsi_instance(study_uid, series_uid, len(sizes) + 1, (32, 48), (32, 48), [label],
                                  ["ORIGINAL", "PRIMARY", "LABEL", "NONE"], 0.1, "TILED_FULL"))
    if compress:
        for ds in datasets:
            ds.compress(compress)
    return datasets, levels


def _wsi_instance(study_uid, series_uid, number, size, tile, frames, image_type, spacing, organization) -> Dataset:
    ds = samples._base_dataset(WSI, study_uid, series_uid)
    ds.PatientName, ds.PatientID, ds.Modality = "Slide^Tissue", "WSI-1", "SM"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240101", 1, number
    ds.ImageType = image_type
    ds.FrameOfReferenceUID = "1.2.3.4.6"
    ds.DimensionOrganizationType = organization
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = size
    ds.TotalPixelMatrixFocalPlanes, ds.NumberOfOpticalPaths = 1, 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = tile[0], tile[1], len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[spacing, spacing], SliceThickness=0.001)]))])
    ds.PixelData = b"".join(frame.tobytes() for frame in frames)
    return ds


class RequestLog:
    """The WADO-RS frames requests a Client sent: ``(instance UID, [frame numbers])`` in order."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, list[int]]] = []
        self.urls: list[str] = []

    def record(self, url: str) -> None:
        url = unquote(url)  # the client escapes the commas of a frame list
        self.urls.append(url)
        match = _FRAMES.search(url)
        if match:
            self.frames.append((match.group(1), [int(n) for n in match.group(2).split(",")]))

    def frame_counts(self) -> Counter:
        return Counter((uid, n) for uid, numbers in self.frames for n in numbers)

    def clear(self) -> None:
        self.frames.clear()
        self.urls.clear()


@contextmanager
def counting(pacs) -> Iterator[RequestLog]:
    """Record every request ``pacs`` sends: a response hook on its HTTP session, or a wrapper around
    an in-process source's transactions."""
    log = RequestLog()
    source = pacs.source
    if hasattr(source, "http"):
        def hook(response, *args, **kwargs):
            log.record(response.request.url)
        hooks = source.http.session.hooks["response"]
        hooks.append(hook)
        try:
            yield log
        finally:
            hooks.remove(hook)
        return
    original_frames, original_bulk = source.retrieve_frames, source.iter_bulkdata

    def retrieve_frames(study, series, instance, frames):
        log.record(f"/studies/{study}/series/{series}/instances/{instance}/frames/{','.join(map(str, frames))}")
        return original_frames(study, series, instance, frames)

    def iter_bulkdata(study, series=None, instance=None, **options):
        log.record(f"/studies/{study}/series/{series}/bulkdata")
        return original_bulk(study, series, instance, **options)

    source.retrieve_frames, source.iter_bulkdata = retrieve_frames, iter_bulkdata
    try:
        yield log
    finally:
        del source.retrieve_frames, source.iter_bulkdata

"""Sample data: pydicom's bundled test files and generated series with known geometry.

Used to preload the workspace store (``dicomweb-nb samples``), by the example notebooks, the tests
and the benchmarks, so they all see the same studies.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

if TYPE_CHECKING:
    import pandas as pd

    from .client.client import Client

UID_ROOT = "1.2.826.0.1.3680043.10.1082."  # generate_uid() prefix for this project's samples


def pydicom_test_files(*, with_pixels: bool | None = None, distinct_sops: bool = True) -> list[Path]:
    """pydicom's bundled DICOM files that are complete composite instances (study, series and SOP UIDs).

    ``with_pixels=True`` keeps only those with Pixel Data, ``False`` only those without.
    Files pydicom cannot read, and those lacking the UIDs a store needs, are left out. Several
    files are the same instance in other transfer syntaxes (same SOP Instance UID); with
    ``distinct_sops`` only the first of them is kept, as a store would keep one.
    """
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    found: list[Path] = []
    seen_sops: set[str] = set()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() in (".py", ".json", ".txt", ".gz", ".bz2", ".xz", ".zip", ".md", ".pyc"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's corpus is full of deliberately odd values
                ds = pydicom.dcmread(path, stop_before_pixels=False, defer_size=64)
        except Exception:  # noqa: BLE001 - deliberately broken files are part of pydicom's corpus
            continue
        uids = [str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")]
        if not all(uids) or (distinct_sops and uids[2] in seen_sops):
            continue
        has_pixels = "PixelData" in ds
        if with_pixels is not None and has_pixels != with_pixels:
            continue
        seen_sops.add(uids[2])
        found.append(path)
    return found


def generate_ct_series(
    n_slices: int = 24,
    rows: int = 64,
    columns: int = 64,
    *,
    pixel_spacing: tuple[float, float] = (0.8, 0.8),
    slice_spacing: float = 2.5,
    origin: Sequence[float] = (-25.6, -25.6, -30.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    patient_name: str = "Phantom^CT",
    patient_id: str = "PHANTOM-CT-1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: str = "20240315",
    modality: str = "CT",
    series_number: int = 1,
    series_description: str = "Sphere phantom",
    seed: int = 0,
) -> list[Dataset]:
    """A CT series of a water sphere in air, with known spacing and orientation.

    Pixel values are stored unsigned with RescaleIntercept -1024, so modality values are HU:
    about 0 inside the sphere, -1000 outside. Each slice's ImagePositionPatient lies along the
    normal of ``orientation``; InstanceNumber follows slice order.
    """
    study_uid = study_uid or generate_uid(UID_ROOT)
    series_uid = series_uid or generate_uid(UID_ROOT)
    frame_of_reference = generate_uid(UID_ROOT)
    row_dir = np.array(orientation[:3], dtype=float)
    col_dir = np.array(orientation[3:], dtype=float)
    normal = np.cross(row_dir, col_dir)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns]
    radius = min(rows, columns) * 0.35
    centre_slice = (n_slices - 1) / 2
    datasets = []
    for k in range(n_slices):
        dz = (k - centre_slice) * slice_spacing / (pixel_spacing[0] * 1.0)
        r2 = (yy - rows / 2) ** 2 + (xx - columns / 2) ** 2 + dz ** 2
        hu = np.where(r2 < radius ** 2, 0.0, -1000.0) + rng.normal(0, 5, size=(rows, columns))
        stored = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)
        position = np.asarray(origin, dtype=float) + k * slice_spacing * normal
        ds = _base_dataset(CTImageStorage if modality == "CT" else MRImageStorage, study_uid, series_uid)
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.SeriesDate = study_date
        ds.SeriesTime = "101600"
        ds.ContentDate = study_date
        ds.ContentTime = f"1016{k % 60:02d}"
        ds.AccessionNumber = f"ACC{patient_id[-4:]}"
        ds.StudyID = "1"
        ds.StudyDescription = "Generated phantom study"
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.Modality = modality
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.BodyPartExamined = "PHANTOM"
        ds.FrameOfReferenceUID = frame_of_reference
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(round(v, 4)) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
        ds.SliceThickness = float(slice_spacing)
        ds.SliceLocation = float(round(float(np.dot(position, normal)), 4))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = stored.tobytes()
        datasets.append(ds)
    return datasets


def _base_dataset(sop_class: str, study_uid: str, series_uid: str) -> Dataset:
    sop_uid = generate_uid(UID_ROOT)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    now = _dt.datetime(2024, 3, 15, 10, 15)
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """The Part 10 file bytes of a dataset (with its file meta)."""
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_series(datasets: Sequence[Dataset], folder: str | Path) -> list[Path]:
    """Write datasets as ``<folder>/<SOPInstanceUID>.dcm``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def iter_sample_datasets() -> Iterator[Dataset]:
    """The datasets ``dicomweb-nb samples`` preloads: generated CT and MR series."""
    yield from generate_ct_series(n_slices=40, rows=128, columns=128, patient_name="Phantom^CT", patient_id="PHANTOM-CT-1")
    yield from generate_ct_series(
        n_slices=16, rows=96, columns=96, modality="MR", patient_name="Phantom^MR", patient_id="PHANTOM-MR-1",
        study_date="20231102", series_description="Sphere phantom MR", slice_spacing=4.0,
        orientation=(1, 0, 0, 0, 0, -1), origin=(-38.4, -20.0, 38.4),
    )


# The CT phantom's patient: the example notebooks look for it to know the samples are loaded.
SAMPLE_PATIENT_ID = "PHANTOM-CT-1"


def load(client: Client, *, progress: bool | None = None) -> pd.DataFrame:
    """Store the sample studies through ``client`` (STOW-RS, or in-process for ``dw.connect()``):
    pydicom's test files and the generated CT and MR phantoms, what ``dicomweb-nb samples`` preloads.

    Returns ``client.store``'s report, one row per file or dataset.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's corpus is full of deliberately odd values
        return client.store([*pydicom_test_files(), *iter_sample_datasets()], progress=progress)


def ensure_loaded(client: Client) -> bool:
    """Load the sample studies through ``client`` unless they are there already, saying what it does.

    What the example notebooks call first, so they run in any folder: an empty workspace store
    gets the samples (as ``dicomweb-nb samples`` in a terminal would). Returns whether it loaded them.
    """
    if not client.studies(PatientID=SAMPLE_PATIENT_ID, limit=1).empty:
        return False
    state = "is empty" if client.studies(limit=1).empty else "has no sample studies"
    print(f"The store at {client.url} {state}: loading the sample studies into it "
          f"(`dicomweb-nb samples` in a terminal does the same)...")
    report = load(client)
    kept = report["status"].isin(["stored", "warning"])
    print(f"{int(kept.sum())} instances stored; {int((~kept).sum())} file(s) left out "
          f"(not DICOM, or refused: see dicomweb_nb.samples.load's report)")
    return True

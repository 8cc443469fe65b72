"""Measurement reports (DICOM SR, TID 1500) as DataFrames, read and written with highdicom.

One row per numeric measurement: what was measured (``name``, ``code``), ``value`` and ``unit``,
and the measurement group it belongs to (``tracking_id``, ``tracking_uid``, ``finding``,
``finding_site``), with the ``segment`` number and ``segmentation`` SOP Instance UID when the
group measures a segment of a DICOM SEG (TID 1411 with a Referenced Segment).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import DicomWebError, MeasurementError
from ..protocol import DicomWebSource
from .derived import dataset_from_json, require_highdicom, store_dataset
from .segmentation import SEG_SOP_CLASSES, _as_code, _next_series_number, _version

if TYPE_CHECKING:
    from .client import Client

__all__ = ["read_measurements", "build_measurement_report", "store_measurements", "MEASUREMENT_COLUMNS"]

MEASUREMENT_COLUMNS = ["name", "code", "value", "unit", "segment", "segmentation", "tracking_id", "tracking_uid",
                       "finding", "finding_site", "group"]
_IMAGING_PROCEDURE = ("363679005", "SCT", "Imaging procedure")


def _code_key(concept: Any) -> str | None:
    return f"{concept.scheme_designator}:{concept.value}" if concept is not None else None


def read_measurements(source: DicomWebSource, study: str, series: str, sop: str) -> pd.DataFrame:
    """The measurements of a TID 1500 report instance as a DataFrame (``MEASUREMENT_COLUMNS``)."""
    hd = require_highdicom()
    parts = list(source.iter_instances(study, series, sop))
    if len(parts) != 1:
        raise DicomWebError(f"asked for instance {sop}, the server sent {len(parts)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = hd.sr.srread(BytesIO(parts[0]))
    except (RuntimeError, ValueError, AttributeError) as exc:
        raise MeasurementError(f"instance {sop} is not a structured report highdicom can read: {exc}") from exc
    content = report.content
    if not isinstance(content, hd.sr.MeasurementReport):
        raise MeasurementError(f"instance {sop} is a structured report but not a TID 1500 Measurement Report")
    rows: list[dict[str, Any]] = []
    groups = [*content.get_volumetric_roi_measurement_groups(), *content.get_planar_roi_measurement_groups(),
              *content.get_image_measurement_groups()]
    for number, group in enumerate(groups, start=1):
        segment = segmentation = None
        reference = getattr(group, "referenced_segment", None)
        if reference is not None:
            item = reference[0]
            numbers = item.referenced_segment_numbers or []
            segment = int(numbers[0]) if numbers else None
            segmentation = str(item.referenced_sop_instance_uid)
        finding = group.finding_type
        sites = group.finding_sites
        for measurement in group.get_measurements():
            rows.append({"name": measurement.name.meaning, "code": _code_key(measurement.name),
                         "value": float(measurement.value), "unit": measurement.unit.value, "segment": segment,
                         "segmentation": segmentation, "tracking_id": group.tracking_identifier,
                         "tracking_uid": str(group.tracking_uid) if group.tracking_uid else None,
                         "finding": finding.meaning if finding is not None else None,
                         "finding_site": sites[0].value.meaning if sites else None, "group": number})
    frame = pd.DataFrame(rows, columns=MEASUREMENT_COLUMNS)
    frame["segment"] = frame["segment"].astype("Int64")
    return frame


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (value is pd.NA or (isinstance(value, str) and not value.strip()))


def _measurement_code(row: Mapping[str, Any]) -> Any:
    code, name = row.get("code"), row.get("name")
    if _present(code):
        text = str(code)
        if text.count(":") == 1:  # "SCHEME:VALUE" with the meaning in ``name``
            if not _present(name):
                raise MeasurementError(f"measurement code {text!r} needs a name (its meaning)")
            text = f"{text}:{name}"
        return _as_code(text, "measurement code")
    if not _present(name):
        raise MeasurementError("each measurement needs a name or a code")
    return _as_code(str(name), "measurement name")


def build_measurement_report(measurements: pd.DataFrame, evidence: list[Any], *, segmentation: Any | None,
                             source_series: str, title: str | None = None, description: str | None = None,
                             series_number: int = 400) -> Any:
    """A Comprehensive 3D SR holding a TID 1500 report of the rows of ``measurements``."""
    hd = require_highdicom()
    if not isinstance(measurements, pd.DataFrame):
        raise MeasurementError(f"measurements are a DataFrame, not {type(measurements).__name__}")
    missing = [c for c in ("value", "unit") if c not in measurements.columns]
    if missing or not ({"name", "code"} & set(measurements.columns)):
        raise MeasurementError(f"measurements need columns name (or code), value and unit; missing {missing or ['name']}")
    if measurements.empty:
        raise MeasurementError("no measurements to store")
    table = measurements.reset_index(drop=True)
    groups: dict[tuple[int | None, str | None, str | None], list[int]] = {}
    for index, row in table.iterrows():
        segment = row.get("segment")
        key = (int(segment) if _present(segment) else None,
               str(row["tracking_id"]) if _present(row.get("tracking_id")) else None,
               str(row["finding"]) if _present(row.get("finding")) else None)
        groups.setdefault(key, []).append(index)
    if any(key[0] is not None for key in groups) and segmentation is None:
        raise MeasurementError("rows name segments: give segmentation= (the SEG's SOP Instance UID, or the dict "
                               "store_segmentation returned)")
    seg_numbers = (
        {int(item.SegmentNumber) for item in segmentation.get("SegmentSequence", [])} if segmentation is not None else set()
    )
    built = []
    for number, ((segment, tracking_id, finding), indices) in enumerate(groups.items(), start=1):
        items = []
        for index in indices:
            row = table.loc[index]
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                raise MeasurementError(f"row {index}: value {row['value']!r} is not a number") from None
            if not math.isfinite(value):
                raise MeasurementError(f"row {index}: value {value} is not finite")
            if not _present(row["unit"]):
                raise MeasurementError(f"row {index}: no unit (UCUM, e.g. 'mm', 'mm3', '[hnsf\\'U]', '1')")
            unit = hd.sr.CodedConcept(str(row["unit"]), "UCUM", str(row["unit"]))
            items.append(hd.sr.Measurement(name=_measurement_code(row), value=value, unit=unit))
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=tracking_id or f"Measurement group {number}")
        finding_type = _as_code(finding, "finding") if finding else None
        if segment is not None:
            assert segmentation is not None  # rows naming segments without one were refused above
            if segment not in seg_numbers:
                raise MeasurementError(f"segment {segment} is not a segment of SEG {segmentation.SOPInstanceUID} "
                                       f"(it has {sorted(seg_numbers)})")
            reference = hd.sr.ReferencedSegment(
                sop_class_uid=str(segmentation.SOPClassUID), sop_instance_uid=str(segmentation.SOPInstanceUID),
                segment_number=segment, source_series=hd.sr.SourceSeriesForSegmentation(source_series))
            built.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, referenced_segment=reference, finding_type=finding_type, measurements=items))
        else:
            built.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, finding_type=finding_type, measurements=items))
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="dicomweb-nb"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_as_code(_IMAGING_PROCEDURE, "procedure"), imaging_measurements=built,
        title=_as_code(title, "report title") if title else None)
    try:
        return hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report, series_number=int(series_number), series_instance_uid=hd.UID(),
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="dicomweb-nb",
            series_description=description or "Measurements", software_versions=_version())
    except (ValueError, TypeError, AttributeError) as exc:
        raise MeasurementError(f"highdicom could not build the report: {exc}") from exc


def _segmentation_header(client: Client, study: str, segmentation: str | Mapping[str, str]) -> Any:
    if isinstance(segmentation, Mapping):
        seg_study = segmentation.get("StudyInstanceUID", study)
        series, sop = segmentation.get("SeriesInstanceUID"), segmentation.get("SOPInstanceUID")
    else:
        seg_study, series, sop = study, None, str(segmentation)
    if not sop:
        raise MeasurementError("segmentation= names no SOPInstanceUID")
    if series is None:
        found = client.source.search("instance", [("SOPInstanceUID", sop)], study=seg_study, fields=["SeriesInstanceUID"])
        if not found:
            raise MeasurementError(f"segmentation {sop} is not in study {seg_study}")
        series = str(found[0]["0020000E"]["Value"][0])
    metas = client.source.retrieve_metadata(str(seg_study), str(series), sop)
    if not metas:
        raise MeasurementError(f"no metadata for segmentation {sop}")
    header = dataset_from_json(metas[0])
    if str(header.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
        raise MeasurementError(f"instance {sop} is not a DICOM SEG")
    return header


def store_measurements(client: Client, measurements: pd.DataFrame, source: tuple[str, str], *,
                       segmentation: str | Mapping[str, str] | None = None, title: str | None = None,
                       description: str | None = None, series_number: int | None = None) -> dict[str, str]:
    """Build a TID 1500 report of a source series' measurements and STOW it."""
    study, series = source
    # Evidence: every instance of the source series (headers only); it need not be a regular volume.
    evidence = [dataset_from_json(meta) for meta in client.source.retrieve_metadata(study, series)]
    if not evidence:
        raise MeasurementError(f"series {series} of study {study} has no instances")
    header = _segmentation_header(client, study, segmentation) if segmentation is not None else None
    if header is not None:
        evidence.append(header)
    report = build_measurement_report(
        measurements,
        evidence,
        segmentation=header,
        source_series=series,
        title=title,
        description=description,
        series_number=series_number if series_number is not None else _next_series_number(client, study),
    )
    return store_dataset(client, report, "measurement report")

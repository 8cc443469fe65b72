"""Segmentations and measurement reports through the client, on our server and on a real Orthanc:
round trips of generated masks, SEGs other tools made, RTSTRUCT contours, TID 1500 measurements."""

from __future__ import annotations

import random
from io import BytesIO

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.client.segmentation import SegmentationError
from tests.fixtures.data import read_dicom

ROWS, COLUMNS, SLICES = 40, 36, 6
SPACING = (3.0, 0.7, 0.9)  # slice, row, column (mm)
ORIGIN = np.array([-10.0, 5.0, 40.0])
ROW_COSINES, COLUMN_COSINES = np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
NORMAL = np.cross(ROW_COSINES, COLUMN_COSINES)  # (0, 1, 0)


def _patient_point(k: float, r: float, c: float) -> np.ndarray:
    """Patient coordinates of voxel (k, r, c), computed from the generation parameters by hand."""
    return ORIGIN + k * SPACING[0] * NORMAL + r * SPACING[1] * COLUMN_COSINES + c * SPACING[2] * ROW_COSINES


@pytest.fixture(scope="module", params=["ours", "orthanc"])
def pacs(request, store_backend):
    server = request.getfixturevalue("our_server" if request.param == "ours" else "orthanc")
    with dw.connect(server.dicomweb_url, progress=False) as client:
        client.kind = request.param
        yield client


@pytest.fixture(scope="module")
def source(pacs):
    """An oblique CT series of known geometry, stored in shuffled order; returns (study, series, datasets)."""
    series = samples.generate_ct_series(n_slices=SLICES, rows=ROWS, columns=COLUMNS, pixel_spacing=SPACING[1:],
                                        slice_spacing=SPACING[0], orientation=(*ROW_COSINES, *COLUMN_COSINES),
                                        origin=tuple(ORIGIN), seed=3, patient_id=f"SEG-{random.random():.8f}")
    shuffled = list(series)
    random.Random(2).shuffle(shuffled)
    assert (pacs.store(shuffled).status == "stored").all()
    return str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID), series


def _masks() -> np.ndarray:
    masks = np.zeros((3, SLICES, ROWS, COLUMNS), dtype=bool)
    masks[0, 1:4, 5:25, 4:20] = True  # "organ"
    masks[1, 2:5, 15:35, 10:30] = True  # overlaps the organ on slices 2-3
    masks[2, 4, 7, 9] = True  # one voxel: a sparse segment
    return masks


def test_binary_overlapping_and_sparse_masks_round_trip(pacs, source):
    study, series, _ = source
    masks = _masks()
    stored = pacs.store_segmentation(masks, (study, series), ["organ", "lesion", "dot"],
                                     colours=["#ff0000", (0, 128, 255), None], algorithm="test-net")
    assert stored["StudyInstanceUID"] == study and set(stored) == {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}
    seg = pacs.segmentation(stored["StudyInstanceUID"], stored["SeriesInstanceUID"], stored["SOPInstanceUID"])
    assert seg.kind == "BINARY" and seg.masks.dtype == np.bool_
    assert np.array_equal(seg.masks, masks)
    assert seg.source == (study, series)
    assert seg.segments["SegmentLabel"].tolist() == ["organ", "lesion", "dot"]
    assert seg.segments["SegmentNumber"].tolist() == [1, 2, 3]
    assert seg.segments["colour"].tolist()[:2] == ["#ff0000", "#0080ff"]
    assert set(seg.segments["algorithm_type"]) == {"AUTOMATIC"} and set(seg.segments["algorithm"]) == {"test-net"}
    volume = pacs.volume(study, series)
    assert seg.keys == volume.keys and np.allclose(seg.affine, volume.affine)
    assert np.array_equal(seg.mask("lesion"), masks[1]) and np.array_equal(seg.mask(3), masks[2])
    # Compressed where the server takes it: frames of 40x36 go as JPEG 2000 lossless; empty frames are left out.
    ds = pacs.instance(stored["StudyInstanceUID"], stored["SeriesInstanceUID"], stored["SOPInstanceUID"])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    assert int(ds.NumberOfFrames) == 3 + 3 + 1


def test_fractional_masks_round_trip(pacs, source):
    study, series, _ = source
    rng = np.random.default_rng(1)
    masks = np.zeros((2, SLICES, ROWS, COLUMNS), dtype=np.float32)
    masks[0, 2:4] = rng.integers(0, 256, size=(2, ROWS, COLUMNS)) / 255
    masks[1, 0, 10:20, 10:20] = 1.0
    stored = pacs.store_segmentation(masks, (study, series), ["probability", "certain"])
    seg = pacs.segmentation(stored["StudyInstanceUID"], stored["SeriesInstanceUID"], stored["SOPInstanceUID"])
    assert seg.kind == "FRACTIONAL" and seg.masks.dtype == np.float32
    assert np.array_equal(seg.masks, masks)  # values in 1/255 steps come back exactly


def test_a_3d_mask_is_one_segment_on_small_frames(pacs):
    tiny = samples.generate_ct_series(n_slices=3, rows=12, columns=10, patient_id=f"SEG-TINY-{random.random():.6f}")
    assert (pacs.store(tiny).status == "stored").all()
    study, series = str(tiny[0].StudyInstanceUID), str(tiny[0].SeriesInstanceUID)
    mask = np.zeros((3, 12, 10), dtype=np.uint8)
    mask[1, 2:5, 3:4] = 1
    stored = pacs.store_segmentation(mask, (study, series), "liver")
    seg = pacs.segmentation(stored["StudyInstanceUID"], stored["SeriesInstanceUID"], stored["SOPInstanceUID"])
    assert seg.masks.shape == (1, 3, 12, 10) and np.array_equal(seg.masks[0], mask.astype(bool))
    assert seg.segments.loc[0, "type_code"] == "SCT:10200004"  # "liver" found in pydicom's code dictionary
    ds = pacs.instance(stored["StudyInstanceUID"], stored["SeriesInstanceUID"], stored["SOPInstanceUID"])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian  # openjpeg needs 32 pixels a side


def test_a_seg_highdicom_made_lands_on_hand_computed_voxels(pacs, source):
    study, _series, datasets = source
    # highdicom's own SEG, of the source images in generation order, covering slices 2 and 4 only.
    pixel = np.zeros((len(datasets), ROWS, COLUMNS), dtype=np.uint8)
    pixel[2, 5, 7] = 1
    pixel[4, 30, 20] = 1
    description = hd.seg.SegmentDescription(segment_number=1, segment_label="spots",
                                            segmented_property_category=codes.SCT.Tissue,
                                            segmented_property_type=codes.SCT.Tissue,
                                            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    made = hd.seg.Segmentation(source_images=datasets, pixel_array=pixel, segmentation_type="BINARY",
                               segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=90,
                               sop_instance_uid=hd.UID(), instance_number=1, manufacturer="highdicom test",
                               manufacturer_model_name="m", software_versions="1", device_serial_number="1")
    assert int(made.NumberOfFrames) == 2
    assert (pacs.store(made).status == "stored").all()
    seg = pacs.segmentation(study, str(made.SeriesInstanceUID), str(made.SOPInstanceUID))
    found = np.argwhere(seg.masks[0])
    # Where the generator put those pixels in patient space, and which voxel that is by hand.
    for k, r, c in ((2, 5, 7), (4, 30, 20)):
        position = np.asarray(datasets[k].ImagePositionPatient) + r * SPACING[1] * COLUMN_COSINES + c * SPACING[2] * ROW_COSINES
        assert np.allclose(position, _patient_point(k, r, c))
        assert np.allclose(seg.volume(1).position_of(k, r, c), position)
    assert found.tolist() == [[2, 5, 7], [4, 30, 20]]


def test_a_dcmqi_seg_from_pydicoms_test_files(pacs):
    liver = read_dicom("liver_1frame.dcm")  # made by dcmqi (3D Slicer); pydicom keeps its first frame
    liver.NumberOfFrames = 1  # that copy dropped the attribute with the other frames
    liver.PerFrameFunctionalGroupsSequence = Sequence([liver.PerFrameFunctionalGroupsSequence[0]])
    liver.SOPInstanceUID = liver.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    referenced = liver.ReferencedSeriesSequence[0]
    # A source series with the UIDs and geometry the SEG names (512 x 512, 0.810547 mm, z = -128.69 ... -126.69).
    positions = {"1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.23433.1": -128.69,
                 "1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.23432.1": -127.69,
                 "1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.23431.1": -126.69}
    ct = samples.generate_ct_series(n_slices=3, rows=512, columns=512, pixel_spacing=(0.810547, 0.810547),
                                    slice_spacing=1.0, origin=(-235.2, -226.8, -128.69), study_uid=str(liver.StudyInstanceUID),
                                    series_uid=str(referenced.SeriesInstanceUID), patient_id="99000")
    for ds, (uid, z) in zip(ct, positions.items()):
        assert ds.ImagePositionPatient[2] == pytest.approx(z)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.FrameOfReferenceUID = liver.FrameOfReferenceUID
    assert (pacs.store([*ct, liver]).status == "stored").all()
    seg = pacs.segmentation(str(liver.StudyInstanceUID), str(liver.SeriesInstanceUID), str(liver.SOPInstanceUID))
    assert seg.segments.loc[0, "SegmentLabel"] == "Liver" and seg.segments.loc[0, "type"] == "Liver"
    assert seg.masks.shape == (1, 3, 512, 512)
    expected = read_dicom("liver_1frame.dcm").pixel_array.astype(bool)
    assert np.array_equal(seg.masks[0, 0], expected) and expected.sum() == 36233
    assert not seg.masks[0, 1:].any()  # the SEG covers only its first slice


def test_a_seg_of_a_multi_frame_source(pacs):
    legacy = samples.generate_ct_series(n_slices=4, rows=32, columns=32, patient_id=f"SEG-MF-{random.random():.6f}")
    multi = hd.legacy.LegacyConvertedEnhancedCTImage(legacy_datasets=legacy, series_instance_uid=hd.UID(), series_number=7,
                                                     sop_instance_uid=hd.UID(), instance_number=1)
    assert (pacs.store(multi).status == "stored").all()
    study, series = str(multi.StudyInstanceUID), str(multi.SeriesInstanceUID)
    volume = pacs.volume(study, series)
    assert volume.shape == (4, 32, 32) and len({key[0] for key in volume.keys}) == 1
    masks = np.zeros((2, 4, 32, 32), bool)
    masks[0, 1, 3:9, 4:6] = True
    masks[1, 3, 20:30, 0:32] = True
    stored = pacs.store_segmentation(masks, (study, series), ["a", "b"])
    seg = pacs.segmentation(stored["StudyInstanceUID"], stored["SeriesInstanceUID"], stored["SOPInstanceUID"])
    assert np.array_equal(seg.masks, masks) and seg.keys == volume.keys


def _rtstruct(source_datasets, contours_by_roi) -> Dataset:
    first = source_datasets[0]
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "RTSTRUCT", first.PatientID, first.PatientName
    ds.StructureSetLabel = "test"
    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_item.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_item])
    rois, roi_contours = [], []
    for number, (name, contours) in enumerate(contours_by_roi.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, first.FrameOfReferenceUID
        rois.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ROIDisplayColor = number, [255, 0, 0]
        items = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [round(float(v), 4) for point in points for v in point]
            items.append(contour)
        item.ContourSequence = Sequence(items)
        roi_contours.append(item)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    return ds


def test_rtstruct_contours_are_filled_on_the_referenced_grid(pacs, source):
    study, _series, datasets = source
    # A square from voxel (r, c) = (4.5, 2.5) to (14.5, 12.5) on slice 1 - the pixel centres 5..14 x 3..12 -
    # with a 4 x 4 hole, and a second ROI: a triangle on slice 3.
    square = [_patient_point(1, r, c) for r, c in ((4.5, 2.5), (4.5, 12.5), (14.5, 12.5), (14.5, 2.5))]
    hole = [_patient_point(1, r, c) for r, c in ((7.5, 5.5), (7.5, 9.5), (11.5, 9.5), (11.5, 5.5))]
    triangle = [_patient_point(3, r, c) for r, c in ((20, 10), (20, 30), (35, 10))]
    rtstruct = _rtstruct(datasets, {"ring": [square, hole], "wedge": [triangle]})
    assert (pacs.store(rtstruct).status == "stored").all()
    seg = pacs.segmentation(study, str(rtstruct.SeriesInstanceUID), str(rtstruct.SOPInstanceUID))
    assert seg.kind == "RTSTRUCT" and seg.segments["SegmentLabel"].tolist() == ["ring", "wedge"]
    expected = np.zeros((SLICES, ROWS, COLUMNS), bool)
    expected[1, 5:15, 3:13] = True
    expected[1, 8:12, 6:10] = False
    assert np.array_equal(seg.masks[0], expected) and seg.masks[0].sum() == 100 - 16
    wedge = seg.masks[1]
    assert wedge[3].any() and not np.delete(wedge, 3, axis=0).any()
    assert wedge[3, 25, 12] and not wedge[3, 34, 29] and not wedge[3, 19, 15]
    assert seg.segments.loc[0, "colour"] == "#ff0000"


def test_measurements_round_trip(pacs, source):
    study, series, _ = source
    stored = pacs.store_segmentation(_masks(), (study, series), ["organ", "lesion", "dot"])
    table = pd.DataFrame({"name": ["Volume", "Mean", "Diameter"], "value": [1234.5, -12.25, 7.0],
                          "unit": ["mm3", "[hnsf'U]", "mm"], "segment": [1, 1, 2],
                          "tracking_id": ["organ", "organ", "lesion"]})
    report = pacs.store_measurements(table, (study, series), segmentation=stored, title="Imaging Measurement Report")
    back = pacs.measurements(report["StudyInstanceUID"], report["SeriesInstanceUID"], report["SOPInstanceUID"])
    assert back[["name", "value", "unit", "tracking_id"]].equals(table[["name", "value", "unit", "tracking_id"]])
    assert back["segment"].tolist() == [1, 1, 2]
    assert set(back["segmentation"]) == {stored["SOPInstanceUID"]}
    assert back["code"].tolist() == ["SCT:118565006", "SCT:373098007", "SCT:81827009"]
    assert back.groupby("tracking_id")["tracking_uid"].nunique().tolist() == [1, 1]
    plain = pd.DataFrame({"code": ["DCM:121207"], "name": ["Height"], "value": [3.5], "unit": ["cm"],
                          "finding": ["SCT:52988006:Lesion"]})
    report = pacs.store_measurements(plain, (study, series))
    back = pacs.measurements(report["StudyInstanceUID"], report["SeriesInstanceUID"], report["SOPInstanceUID"])
    assert back.loc[0, ["name", "code", "value", "unit", "finding"]].tolist() == ["Height", "DCM:121207", 3.5, "cm", "Lesion"]
    assert pd.isna(back.loc[0, "segment"])


def test_bad_input_gets_a_clear_error(pacs, source):
    study, series, _ = source
    with pytest.raises(SegmentationError, match="do not fit the source series' grid"):
        pacs.store_segmentation(np.zeros((1, 2, 3, 4), bool), (study, series), ["x"])
    with pytest.raises(SegmentationError, match="3 mask"):
        pacs.store_segmentation(_masks(), (study, series), ["only one"])
    with pytest.raises(SegmentationError, match="between 0 and 1"):
        pacs.store_segmentation(np.full((SLICES, ROWS, COLUMNS), 2.0), (study, series), ["x"])
    image = source[2][0]
    with pytest.raises(SegmentationError, match="names no source series|neither"):
        pacs.segmentation(study, series, str(image.SOPInstanceUID))
    with pytest.raises(dw.errors.DicomWebError, match="segmentation="):
        pacs.store_measurements(pd.DataFrame({"name": ["Volume"], "value": [1.0], "unit": ["mm3"], "segment": [1]}),
                                (study, series))


def test_seg_bytes_are_a_valid_highdicom_segmentation(pacs, source):
    study, series, _ = source
    stored = pacs.store_segmentation(_masks()[:1], (study, series), ["organ"])
    raw = next(pacs.source.iter_instances(stored["StudyInstanceUID"], stored["SeriesInstanceUID"], stored["SOPInstanceUID"]))
    parsed = hd.seg.segread(BytesIO(raw))
    assert parsed.number_of_segments == 1 and parsed.SegmentationType == "BINARY"
    assert str(parsed.ReferencedSeriesSequence[0].SeriesInstanceUID) == series

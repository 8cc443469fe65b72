"""The PS3.15 Annex E Basic Profile rules (pure): every attribute of Table E.1-1, the options, the UID
remapping's referential integrity, dates, burned-in annotation."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb_nb import samples
from dicomweb_nb.dicom.deid_table import OPTION_COLUMNS, PROFILE_ROWS, REVISION
from dicomweb_nb.dicom.deidentify import Deidentifier, burned_in_annotation
from tests.fixtures.data import read_dicom
from tests.fixtures.deid import SECRET, check_profile, identified_dataset, leftover_identifiers


def _roundtrip(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(samples.dataset_bytes(ds)))


@pytest.fixture(scope="module")
def identified():
    return _roundtrip(identified_dataset())


def test_table_is_the_standards_table_e1_1():
    assert REVISION == "2024b" and len(PROFILE_ROWS) == 621
    rows = {row[0]: row for row in PROFILE_ROWS}
    # Spot checks against the standard's text of Table E.1-1.
    assert rows["00100010"][1:4] == ("Patient's Name", True, "Z")
    assert rows["00100020"][3] == "Z/D"
    assert rows["0020000D"][3] == "U" and dict(zip(OPTION_COLUMNS, rows["0020000D"][4:]))["retain_uids"] == "K"
    assert rows["00080020"][3] == "Z" and dict(zip(OPTION_COLUMNS, rows["00080020"][4:]))["retain_modified_dates"] == "C"
    assert rows["00081140"][3] == "X/Z/U*"
    assert rows["00101010"][3] == "X" and dict(zip(OPTION_COLUMNS, rows["00101010"][4:]))["retain_patient_characteristics"] == "K"
    assert rows["PRIVATE"][3] == "X" and {"60xx3000", "60xx4000", "50xxxxxx"} <= set(rows)
    assert {row[3] for row in PROFILE_ROWS} == {"X", "Z", "D", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}


def test_basic_profile_treats_every_attribute_of_the_table(identified):
    out = Deidentifier().deidentify(identified).dataset
    assert check_profile(identified, out) == 614  # every row but command/file-meta groups, masks and private
    assert leftover_identifiers(out) == []
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert all(len(value) <= 64 for value in out.DeidentificationMethod)
    # The result is a valid file whose meta names the new instance.
    back = _roundtrip(out)
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID != identified.SOPInstanceUID
    assert back.PatientID == back.PatientName == out.PatientID and back.PatientID.startswith("ANON")
    assert str(identified.PatientName).startswith(SECRET), "the input is left alone"


@pytest.mark.parametrize("option", ["retain_patient_characteristics", "retain_device_identity",
                                    "retain_institution_identity", "retain_uids"])
def test_each_retain_option_keeps_what_its_column_marks_k(identified, option):
    deidentifier = Deidentifier(**{option: True})
    out = deidentifier.deidentify(identified).dataset
    check_profile(identified, out, options={option})
    code = {"retain_patient_characteristics": "113108", "retain_device_identity": "113109",
            "retain_institution_identity": "113112", "retain_uids": "113110"}[option]
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100", code]
    kept = [row for row in PROFILE_ROWS if dict(zip(OPTION_COLUMNS, row[4:]))[option] == "K"]
    assert kept and all(int(row[0], 16) in out for row in kept if int(row[0], 16) in identified)


def test_dates_kept_or_shifted_by_one_offset_per_patient(identified):
    kept = Deidentifier(dates="keep").deidentify(identified).dataset
    check_profile(identified, kept, options={"retain_full_dates"})
    assert kept.StudyDate == identified.StudyDate and kept.LongitudinalTemporalInformationModified == "UNMODIFIED"
    fixed = Deidentifier(dates="shift", date_offset=-40).deidentify(identified).dataset
    check_profile(identified, fixed, options={"retain_modified_dates"}, date_offset=-40)
    assert fixed.StudyDate == "20001225" and fixed.LongitudinalTemporalInformationModified == "MODIFIED"
    assert fixed.AcquisitionDateTime == "20001225101112" and fixed.StudyTime == identified.StudyTime
    per_patient = Deidentifier(dates="shift")
    first = per_patient.deidentify(identified)
    again = per_patient.deidentify(_roundtrip(identified_dataset()))
    other = per_patient.deidentify(_roundtrip(identified_dataset(patient_id="SOMEONE-ELSE")))
    assert first.date_offset_days == again.date_offset_days and -3650 <= first.date_offset_days <= -1
    assert first.dataset.StudyDate == again.dataset.StudyDate
    assert other.date_offset_days != first.date_offset_days and other.new["PatientID"] != first.new["PatientID"]


def test_uids_are_remapped_consistently_across_instances_and_references():
    ct = samples.generate_ct_series(3, rows=8, columns=8)
    derived = Dataset()
    derived.SOPClassUID, derived.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.66.4", pydicom.uid.generate_uid()
    derived.StudyInstanceUID, derived.SeriesInstanceUID = ct[0].StudyInstanceUID, pydicom.uid.generate_uid()
    derived.FrameOfReferenceUID = ct[0].FrameOfReferenceUID
    reference = Dataset()
    reference.SeriesInstanceUID = ct[0].SeriesInstanceUID
    instance = Dataset()
    instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = ct[1].SOPClassUID, ct[1].SOPInstanceUID
    reference.ReferencedInstanceSequence = Sequence([instance])
    derived.ReferencedSeriesSequence = Sequence([reference])
    deidentifier = Deidentifier(secret="study set key")
    outs = [deidentifier.deidentify(ds).dataset for ds in ct]
    seg = deidentifier.deidentify(derived).dataset
    assert len({o.StudyInstanceUID for o in outs} | {seg.StudyInstanceUID}) == 1
    assert seg.FrameOfReferenceUID == outs[0].FrameOfReferenceUID != ct[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == outs[0].SeriesInstanceUID
    item = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert item.ReferencedSOPInstanceUID == outs[1].SOPInstanceUID and item.ReferencedSOPClassUID == ct[1].SOPClassUID
    assert len({o.SOPInstanceUID for o in outs}) == 3
    assert all(len(o.SOPInstanceUID) <= 64 for o in outs)
    # The same secret gives the same mapping in a later run; another secret another one.
    assert Deidentifier(secret="study set key").deidentify(ct[0]).dataset.SOPInstanceUID == outs[0].SOPInstanceUID
    assert Deidentifier(secret="other").deidentify(ct[0]).dataset.SOPInstanceUID != outs[0].SOPInstanceUID
    assert deidentifier.uid_map[str(ct[1].SOPInstanceUID)] == outs[1].SOPInstanceUID


def test_pseudonyms_can_be_given():
    ds = samples.generate_ct_series(1, rows=8, columns=8, patient_id="MRN-1")[0]
    result = Deidentifier(patient_ids={"MRN-1": "SUBJECT-07"}).deidentify(ds)
    assert result.dataset.PatientID == result.dataset.PatientName == "SUBJECT-07"
    assert result.original["PatientID"] == "MRN-1" and result.new["PatientID"] == "SUBJECT-07"


def test_structured_report_content_keeps_codes_but_not_text_or_names():
    sr = read_dicom("test-SR.dcm")
    out = Deidentifier().deidentify(sr).dataset

    def walk(items):
        for item in items:
            yield item
            yield from walk(item.get("ContentSequence", []))

    before, after = list(walk(sr.ContentSequence)), list(walk(out.ContentSequence))
    assert len(before) == len(after)
    assert [i.get("ValueType") for i in before] == [i.get("ValueType") for i in after]
    for old, new in zip(before, after):
        if "TextValue" in old:
            assert new.TextValue == "ANONYMIZED"
        if "PersonName" in old:
            assert str(new.PersonName) == "ANONYMIZED"
        if "ConceptNameCodeSequence" in old:
            assert new.ConceptNameCodeSequence[0].CodeValue == old.ConceptNameCodeSequence[0].CodeValue


def test_keep_lets_reviewed_attributes_through_and_says_so(identified):
    out = Deidentifier(keep=["SeriesDescription"]).deidentify(identified).dataset
    check_profile(identified, out, kept_keywords={"SeriesDescription"})
    assert out.SeriesDescription == identified.SeriesDescription
    assert "kept after review: SeriesDescription" in out.DeidentificationMethod


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="dates"):
        Deidentifier(dates="fuzzy")
    with pytest.raises(ValueError, match="date_offset"):
        Deidentifier(date_offset=3)
    with pytest.raises(ValueError, match="keyword"):
        Deidentifier(keep=["NoSuchKeyword"])


def test_burned_in_annotation_is_recognised():
    ds = samples.generate_ct_series(1, rows=8, columns=8)[0]
    assert burned_in_annotation(ds) is None
    ds.BurnedInAnnotation = "YES"
    assert "YES" in burned_in_annotation(ds)
    us = samples.generate_ct_series(1, rows=8, columns=8, modality="MR")[0]
    us.Modality = "US"
    assert "US" in burned_in_annotation(us)
    us.BurnedInAnnotation = "NO"
    assert burned_in_annotation(us) is None  # the device's explicit NO is taken at its word
    sc = samples.generate_ct_series(1, rows=8, columns=8)[0]
    sc.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    assert "Secondary Capture" in burned_in_annotation(sc)

"""``pacs.deidentify`` on our server and a real Orthanc: into a folder and into another server, the
identifier mapping, study sets kept consistent, burned-in annotation flagged."""

from __future__ import annotations

import io
import random
import stat
import warnings

import pydicom
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.client.deidentify import BurnedInAnnotationWarning
from dicomweb_nb.dicom.deidentify import Deidentifier
from tests.fixtures.deid import check_profile, identified_dataset, leftover_identifiers


@pytest.fixture(scope="module", params=["ours", "orthanc"])
def pacs(request, store_backend):
    server = request.getfixturevalue("our_server" if request.param == "ours" else "orthanc")
    with dw.connect(server.dicomweb_url, progress=False) as client:
        yield client


def _study(pacs, patient_id: str):
    """One study: the every-attribute instance, a plain CT series and an ultrasound image without Burned In Annotation NO."""
    tagged = identified_dataset(patient_id=patient_id)
    series = samples.generate_ct_series(n_slices=3, rows=8, columns=8, patient_id=patient_id,
                                        study_uid=str(tagged.StudyInstanceUID))
    us = samples.generate_ct_series(n_slices=1, rows=8, columns=8, patient_id=patient_id, modality="MR",
                                    study_uid=str(tagged.StudyInstanceUID))[0]
    us.Modality = "US"
    assert (pacs.store([tagged, *series, us]).status == "stored").all()
    return tagged, series, us


def test_deidentify_a_study_into_a_folder(pacs, tmp_path):
    patient = f"SECRET-{random.random():.8f}"
    tagged, series, us = _study(pacs, patient)
    with pytest.warns(BurnedInAnnotationWarning, match="1 instance"):
        mapping = pacs.deidentify(str(tagged.StudyInstanceUID), to=tmp_path / "export")
    assert len(mapping) == 5
    assert set(mapping["StudyInstanceUID"]) == {str(tagged.StudyInstanceUID)}
    assert set(mapping["PatientID"]) == {patient}
    assert mapping["new_StudyInstanceUID"].nunique() == 1 and mapping["new_PatientID"].nunique() == 1
    skipped = mapping[mapping["status"] == "skipped"]
    assert skipped["SOPInstanceUID"].tolist() == [str(us.SOPInstanceUID)]
    assert "modality US" in skipped["burned_in_annotation"].iloc[0]
    exported = mapping[mapping["status"] == "exported"]
    assert len(exported) == 4
    files = sorted((tmp_path / "export").rglob("*.dcm"))
    assert len(files) == 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = path.read_bytes()
        assert patient.encode() not in data and b"SECRET" not in data  # the mapping is never in the export
        ds = pydicom.dcmread(path)
        row = exported[exported["new_SOPInstanceUID"] == ds.SOPInstanceUID].iloc[0]
        assert path.parts[-3:] == (ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")
        assert ds.PatientID == row["new_PatientID"] and ds.PatientIdentityRemoved == "YES"
        if row["SOPInstanceUID"] == str(tagged.SOPInstanceUID):
            original = pydicom.dcmread(io.BytesIO(samples.dataset_bytes(tagged)))
            assert check_profile(original, ds) == 614
            assert leftover_identifiers(ds) == []
    # The new CT series is still one volume, its pixels untouched.
    ct_rows = exported[exported["SeriesInstanceUID"] == str(series[0].SeriesInstanceUID)]
    assert ct_rows["new_SeriesInstanceUID"].nunique() == 1


def test_deidentify_into_another_server_with_burned_in_included_and_options(pacs, our_server, tmp_path):
    patient = f"SECRET-{random.random():.8f}"
    tagged, _series, _us = _study(pacs, patient)
    with dw.connect(our_server.dicomweb_url, progress=False) as target, \
            pytest.warns(BurnedInAnnotationWarning, match="exported as they are"):
        mapping = pacs.deidentify(str(tagged.StudyInstanceUID), to=target, burned_in="include", dates="shift",
                                  date_offset=-30, retain_patient_characteristics=True)
        assert (mapping["status"] == "exported").all(), mapping[["status", "error"]]
        assert mapping["burned_in_annotation"].notna().sum() == 1
        new_study = mapping["new_StudyInstanceUID"].iloc[0]
        found = target.instances(new_study)
        assert set(found["SOPInstanceUID"]) == set(mapping["new_SOPInstanceUID"])
        row = mapping[mapping["SOPInstanceUID"] == str(tagged.SOPInstanceUID)].iloc[0]
        out = target.instance(new_study, row["new_SeriesInstanceUID"], row["new_SOPInstanceUID"])
        original = pydicom.dcmread(io.BytesIO(samples.dataset_bytes(tagged)))
        check_profile(original, out, options={"retain_modified_dates", "retain_patient_characteristics"}, date_offset=-30)
        assert out.StudyDate == "20010104" and out.PatientAge == original.PatientAge
        assert target.studies(StudyInstanceUID=new_study, fields=["PatientID"])["PatientID"].tolist() == [row["new_PatientID"]]
    assert set(mapping["date_offset_days"]) == {-30}


def test_a_study_set_keeps_one_pseudonym_and_one_date_shift_per_patient(pacs, tmp_path):
    patient = f"SECRET-{random.random():.8f}"
    first = samples.generate_ct_series(n_slices=2, rows=8, columns=8, patient_id=patient, study_date="20200101")
    second = samples.generate_ct_series(n_slices=2, rows=8, columns=8, patient_id=patient, study_date="20200301")
    assert (pacs.store([*first, *second]).status == "stored").all()
    profile = Deidentifier(dates="shift", secret="project key")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no burned-in instance here: no warning
        mapping = pacs.deidentify([str(first[0].StudyInstanceUID), str(second[0].StudyInstanceUID)],
                                  to=tmp_path / "set", profile=profile)
    assert mapping["new_PatientID"].nunique() == 1 and mapping["date_offset_days"].nunique() == 1
    assert mapping["new_StudyInstanceUID"].nunique() == 2
    dates = {pydicom.dcmread(p).StudyDate for p in (tmp_path / "set").rglob("*.dcm")}
    assert len(dates) == 2
    early, late = sorted(dates)
    assert (pydicom.valuerep.DA(late) - pydicom.valuerep.DA(early)).days == 60  # the interval survives
    # The same key reproduces the mapping later; the identities map to the same new UIDs.
    again = Deidentifier(dates="shift", secret="project key")
    assert again.new_uid(str(first[0].StudyInstanceUID)) == mapping["new_StudyInstanceUID"].iloc[0]


def test_bad_arguments(pacs, tmp_path):
    with pytest.raises(ValueError, match="burned_in"):
        pacs.deidentify("1.2.3", to=tmp_path, burned_in="maybe")
    with pytest.raises(TypeError, match="options"):
        pacs.deidentify("1.2.3", to=tmp_path, retain_everything=True)
    with pytest.raises(TypeError, match="folder path or a Client"):
        pacs.deidentify("1.2.3", to=42)

"""The test Orthanc itself answers DICOMweb: guards the fixture every client test relies on."""

import requests

from dicomweb_nb import samples


def test_orthanc_serves_dicomweb(orthanc):
    ds = samples.generate_ct_series(n_slices=1, rows=8, columns=8, patient_id="PEER-CHECK")[0]
    stored = requests.post(f"{orthanc.url}/instances", data=samples.dataset_bytes(ds), timeout=30)  # its own REST API
    assert stored.status_code == 200, stored.text
    try:
        answer = requests.get(f"{orthanc.dicomweb_url}/studies", params={"StudyInstanceUID": ds.StudyInstanceUID},
                              timeout=10)
        assert answer.status_code == 200
        [study] = answer.json()
        assert study["0020000D"]["Value"] == [ds.StudyInstanceUID]
        assert study["00100020"]["Value"] == ["PEER-CHECK"]
    finally:
        requests.delete(f"{orthanc.url}/studies/{stored.json()['ParentStudy']}", timeout=30)

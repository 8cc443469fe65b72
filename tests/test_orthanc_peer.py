"""The test Orthanc itself answers DICOMweb: guards the fixture every client test relies on."""

import requests


def test_orthanc_serves_dicomweb(orthanc):
    answer = requests.get(f"{orthanc.dicomweb_url}/studies", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == [] or isinstance(answer.json(), list)

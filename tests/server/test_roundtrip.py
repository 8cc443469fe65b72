"""End to end over real HTTP on both mount points: STOW-RS a series, find it with QIDO-RS, get it back."""

from __future__ import annotations

import pytest
import requests

from dicomweb_nb import samples
from dicomweb_nb.dicom.multipart import encode_multipart


@pytest.fixture(params=["standalone", "jupyter"])
def server(request):
    return request.getfixturevalue("our_server" if request.param == "standalone" else "jupyter_dicomweb")


def test_stow_then_qido_then_retrieve(server):
    series = samples.generate_ct_series(3, rows=16, columns=16, patient_id=f"RT-{id(server)}")
    body, boundary = encode_multipart([("application/dicom", samples.dataset_bytes(ds)) for ds in series])
    answer = requests.post(
        f"{server.dicomweb_url}/studies", data=body,
        headers={**server.headers, "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    assert answer.status_code == 200, answer.text
    referenced = answer.json()["00081199"]["Value"]
    assert [r["00081155"]["Value"][0] for r in referenced] == [ds.SOPInstanceUID for ds in series]
    assert referenced[0]["00081190"]["Value"][0].startswith(server.dicomweb_url + "/studies/")

    found = requests.get(
        f"{server.dicomweb_url}/studies", params={"PatientID": series[0].PatientID}, headers=server.headers
    ).json()
    assert len(found) == 1
    assert found[0]["0020000D"]["Value"] == [series[0].StudyInstanceUID]
    assert found[0]["00201208"]["Value"] == [3]

    url = found[0]["00081190"]["Value"][0]
    retrieved = requests.get(
        url, headers={**server.headers, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    assert retrieved.status_code == 200
    assert samples.dataset_bytes(series[0])[132:200] in retrieved.content


def test_unauthenticated_requests_are_refused_by_jupyter(jupyter_dicomweb):
    answer = requests.get(f"{jupyter_dicomweb.dicomweb_url}/studies")
    assert answer.status_code == 403
    assert "token" in answer.json()["message"]

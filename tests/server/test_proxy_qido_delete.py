"""``/servers/{name}/qido`` and ``/servers/{name}/delete`` with the bodies of the Orthanc plugin, our
server and a real Orthanc each acting as the proxy, with our server and Orthanc as the remote: the
same requests get the same answers from both proxies."""

from __future__ import annotations

import json

import pytest
import requests

from ..fixtures.ourserver import start_standalone
from .proxy_helpers import Api, make_study, serve_studies, upload_to_orthanc

pytestmark = [pytest.mark.orthanc, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qido-delete-data")
    return {
        "in_orthanc": make_study(folder / "o", slices=2, patient="Qidoparity^Orthanc"),
        "in_ours": make_study(folder / "q", slices=3, patient="Qidoparity^Ours", series=2),
        "for_our_proxy": make_study(folder / "d1", slices=2, patient="Deleted^ByOurs", series=2),
        "for_orthanc_proxy": make_study(folder / "d2", slices=2, patient="Deleted^ByOrthanc", series=2),
    }


@pytest.fixture(scope="module")
def remote(tmp_path_factory, studies, store_backend):
    server = serve_studies(tmp_path_factory.mktemp("qido-delete-remote"),
                           *(studies[k] for k in ("in_ours", "for_our_proxy", "for_orthanc_proxy")), backend=store_backend)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, orthanc, remote, studies, store_backend):
    """{"ours": post(path, body), "orthanc": post(path, body)}: the same servers known to each."""
    upload_to_orthanc(orthanc, studies["in_orthanc"])
    ours = start_standalone(tmp_path_factory.mktemp("qido-delete-proxy"), backend=store_backend)
    api = Api(ours)
    definitions = {"orthanc": {"Url": orthanc.dicomweb_url, "HasDelete": "1"},
                   "ours": {"Url": remote.dicomweb_url, "HasDelete": "1"},
                   "ours-nodelete": {"Url": remote.dicomweb_url}}
    for name, definition in definitions.items():
        api.add_server(name, definition["Url"], **{k: v for k, v in definition.items() if k != "Url"})
        answer = requests.put(f"{orthanc.dicomweb_url}/servers/{name}", data=json.dumps(definition), timeout=30)
        assert answer.status_code == 200, answer.text

    def via(proxy_root: str, session: requests.Session):
        return lambda path, body: session.post(f"{proxy_root}/{path}", data=json.dumps(body), timeout=60)

    yield {"ours": via(ours.dicomweb_url, api.session), "orthanc": via(orthanc.dicomweb_url, requests.Session())}
    ours.stop()
    for name in definitions:
        requests.delete(f"{orthanc.dicomweb_url}/servers/{name}", timeout=30)


def without_dropped_numbers(ours: list[dict], theirs: list[dict]) -> list[dict]:
    """Ours, less the numbers Orthanc 1.7 leaves out: it drops a positive number's Value (jsoncpp
    reads it as unsigned, a type its /qido does not handle), where ours keeps it."""
    out = []
    for mine, other in zip(ours, theirs):
        item = {}
        for key, element in mine.items():
            if isinstance(element.get("Value"), int) and "Value" not in other.get(key, {}):
                element = {k: v for k, v in element.items() if k != "Value"}
            item[key] = element
        out.append(item)
    return out + ours[len(theirs):]


def both(proxies, path: str, body: dict) -> tuple[requests.Response, requests.Response]:
    return proxies["ours"](path, body), proxies["orthanc"](path, body)


@pytest.mark.parametrize("remote_name, study_key", [("ours", "in_ours"), ("orthanc", "in_orthanc")])
def test_qido_answers_the_same_simplified_matches_as_orthanc(proxies, studies, remote_name, study_key):
    study = studies[study_key]
    patient_id = study_key and ("Qidoparity-Ours" if study_key == "in_ours" else "Qidoparity-Orthanc")
    for body in ({"Uri": "/studies", "Arguments": {"PatientID": patient_id}},
                 {"Uri": f"/studies/{study.uid}/series", "HttpHeaders": {"Accept": "application/dicom+json"}},
                 {"Uri": "/instances", "Arguments": {"StudyInstanceUID": study.uid, "limit": "1"}}):
        ours, theirs = both(proxies, f"servers/{remote_name}/qido", body)
        assert (ours.status_code, theirs.status_code) == (200, 200), (ours.text, theirs.text)
        assert without_dropped_numbers(ours.json(), theirs.json()) == theirs.json(), body
        assert ours.json(), body
    [match] = proxies["ours"](f"servers/{remote_name}/qido", {"Uri": "/studies", "Arguments": {"PatientID": patient_id}}).json()
    assert match["0020000D"] == {"Group": 0x20, "Element": 0xD, "Name": "StudyInstanceUID", "vr": "UI", "Value": study.uid}
    expected_name = study_key.replace("in_", "Qidoparity^").replace("ours", "Ours").replace("orthanc", "Orthanc")
    assert match["00100010"]["Value"] == expected_name
    nothing = proxies["ours"](f"servers/{remote_name}/qido", {"Uri": "/studies", "Arguments": {"PatientID": "NOBODY-HERE"}})
    assert nothing.status_code == 200 and nothing.json() == []


def test_qido_refusals(proxies):
    ours, theirs = both(proxies, "servers/nowhere/qido", {"Uri": "/studies"})
    assert (ours.status_code, theirs.status_code) == (404, 404)
    answer = proxies["ours"]("servers/ours/qido", {"Uri": "http://elsewhere/studies"})
    assert answer.status_code == 400 and "only talks to configured servers" in answer.json()["message"]
    answer = proxies["ours"]("servers/ours/qido", {"Uri": "/studies/1.2.3/metadata"})  # a 404 there is a 404 here
    assert answer.status_code == 404 and answer.json()["RemoteStatus"] == 404


def _remote_has(remote, study: str, series: str | None = None) -> bool:
    path = f"/studies/{study}" + (f"/series/{series}" if series else "") + "/metadata"
    return requests.get(remote.dicomweb_url + path, timeout=30).status_code == 200


@pytest.mark.parametrize("proxy, study_key", [("ours", "for_our_proxy"), ("orthanc", "for_orthanc_proxy")])
def test_delete_on_the_remote_through_each_proxy(proxies, remote, studies, proxy, study_key):
    import pydicom

    study = studies[study_key]
    series = sorted({str(pydicom.dcmread(f).SeriesInstanceUID) for f in study.files})
    sop = next(str(ds.SOPInstanceUID) for ds in map(pydicom.dcmread, study.files) if str(ds.SeriesInstanceUID) == series[0])
    post = proxies[proxy]
    answer = post("servers/ours/delete", {"Level": "Instance", "StudyInstanceUID": study.uid, "SeriesInstanceUID": series[0],
                                          "SOPInstanceUID": sop})
    assert (answer.status_code, answer.json()) == (200, {})
    answer = post("servers/ours/delete", {"Level": "Series", "StudyInstanceUID": study.uid, "SeriesInstanceUID": series[1]})
    assert (answer.status_code, answer.json()) == (200, {})
    assert _remote_has(remote, study.uid, series[0]) and not _remote_has(remote, study.uid, series[1])
    answer = post("servers/ours/delete", {"Level": "Study", "StudyInstanceUID": study.uid})
    assert (answer.status_code, answer.json()) == (200, {})
    assert not _remote_has(remote, study.uid)


def test_delete_refusals_are_the_same_from_both_proxies(proxies, studies, remote):
    study = studies["in_ours"].uid
    # The server's definition must allow it.
    ours, theirs = both(proxies, "servers/ours-nodelete/delete", {"Level": "Study", "StudyInstanceUID": study})
    assert (ours.status_code, theirs.status_code) == (400, 400)
    assert "HasDelete" in ours.json()["message"] and "HasDelete" in theirs.json()["Details"]
    # A level needs its UIDs.
    ours, theirs = both(proxies, "servers/ours/delete", {"Level": "Series", "StudyInstanceUID": study})
    assert (ours.status_code, theirs.status_code) == (400, 400)
    assert "SeriesInstanceUID" in ours.json()["message"] and "SeriesInstanceUID" in theirs.json()["Details"]
    ours, theirs = both(proxies, "servers/ours/delete", {"StudyInstanceUID": study})
    assert (ours.status_code, theirs.status_code) == (400, 400)
    # Nothing there: 404 from both.
    ours, theirs = both(proxies, "servers/ours/delete", {"Level": "Study", "StudyInstanceUID": "1.2.3.4.5.6.7"})
    assert (ours.status_code, theirs.status_code) == (404, 404)
    assert _remote_has(remote, study)
    # Orthanc's DICOMweb server has no DELETE: an error through either proxy, the remote's status kept.
    ours, theirs = both(proxies, "servers/orthanc/delete", {"Level": "Study", "StudyInstanceUID": studies["in_orthanc"].uid})
    assert ours.status_code >= 400 and theirs.status_code >= 400
    assert ours.json()["RemoteStatus"] in (404, 405)
    assert proxies["ours"]("servers/ours", {}).status_code == 405  # POST on a server's definition
    operations = requests.get(f"{remote.dicomweb_url}/servers", timeout=30)
    assert operations.status_code == 200

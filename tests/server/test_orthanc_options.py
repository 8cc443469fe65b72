"""The options of the Orthanc plugin's 1.8-1.24 releases: read-only mode (every change of the stored
data refused with a 403 saying so; reading, searching and sending elsewhere go on), per-request
performance logs, and OtherBinaryMode (binary values other than pixel data inline in metadata)."""

from __future__ import annotations

import base64
import json
import re

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb_nb import samples
from dicomweb_nb.dicom.multipart import encode_multipart
from tests.fixtures.ourserver import start_jupyter, start_standalone

from .conftest import small_series, stow, stow_datasets, unique_patient
from .proxy_helpers import Api

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def body_of(datasets) -> tuple[bytes, str]:
    return encode_multipart([("application/dicom", samples.dataset_bytes(ds)) for ds in datasets])


@pytest.fixture(params=["standalone", "jupyter"])
def read_only_server(request, tmp_path):
    """A read-only server on a store that holds one study, and a remote it knows."""
    from .proxy_helpers import import_study, make_study

    study = make_study(tmp_path / "data", slices=2, patient="Read^Only")
    store = tmp_path / "store" if request.param == "standalone" else tmp_path / "root" / ".dicomweb"
    import_study(store, study)
    servers = json.dumps({"remote": {"Url": "http://127.0.0.1:9/dicom-web"}})
    if request.param == "standalone":
        server = start_standalone(tmp_path, store, "-c", "read_only=true", "-c", f"servers={servers}")
    else:
        server = start_jupyter(tmp_path, "--DicomWeb.read_only=True", f"--DicomWeb.servers={servers}")
    yield server, study
    server.stop()


def assert_read_only_refusal(answer: requests.Response, what: str) -> None:
    assert answer.status_code == 403, (what, answer.status_code, answer.text)
    message = answer.json()["message"]
    assert "read-only (c.DicomWeb.read_only)" in message and "would change the stored data" in message, message


def test_a_read_only_server_refuses_every_change_and_serves_the_rest(read_only_server):
    server, study = read_only_server
    api = Api(server)
    new = small_series(1, patient_id=unique_patient("RO"))
    body, boundary = body_of(new)
    assert_read_only_refusal(stow(server, body, boundary=boundary), "STOW-RS")
    assert_read_only_refusal(stow(server, body, boundary=boundary, study=str(new[0].StudyInstanceUID)), "STOW-RS study")
    assert_read_only_refusal(api.delete(f"studies/{study.uid}"), "DELETE study")
    sop = next(iter(study.sops))
    series = pydicom.dcmread(study.files[0]).SeriesInstanceUID
    assert_read_only_refusal(api.delete(f"studies/{study.uid}/series/{series}/instances/{sop}"), "DELETE instance")
    assert_read_only_refusal(api.put("servers/added", {"Url": "http://127.0.0.1:9/dicom-web"}), "PUT server")
    assert_read_only_refusal(api.delete("servers/remote"), "DELETE server")
    assert_read_only_refusal(api.post("servers/remote/retrieve", {"Resources": [{"Study": study.uid}]}), "retrieve")
    # Nothing changed, and reading goes on.
    assert api.instances_of(study.uid) == study.sops
    assert api.get(f"studies/{study.uid}/metadata").status_code == 200
    assert api.get("changefeed").status_code == 200 and len(api.get("changefeed").json()) == 2
    assert api.get("servers").json() == ["remote"]
    # Sending elsewhere changes nothing here: it is not refused (here it fails on the unreachable remote).
    answer = api.post("servers/remote/stow", {"Resources": [study.uid]})
    assert answer.status_code == 502, answer.text
    assert api.post("servers/remote/get", {"Uri": "/studies"}).status_code == 502
    assert api.post("jobs/not-a-job/cancel", {}).status_code == 404


def test_performance_logs_say_service_status_time_and_bytes(tmp_path):
    server = start_standalone(tmp_path, None, "-c", "enable_performance_logs=true")  # --quiet: warnings only, but these show
    try:
        datasets = small_series(2)
        sent = stow_datasets(server, datasets)
        study = datasets[0].StudyInstanceUID
        retrieved = requests.get(f"{server.dicomweb_url}/studies/{study}", timeout=30,
                                 headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert retrieved.status_code == 200
        requests.get(f"{server.dicomweb_url}/studies/1.2.3/metadata", timeout=30)
    finally:
        server.stop()
    log = server.log_text()
    stow_line = re.search(r"dicomweb_nb\.performance INFO STOW-RS: POST /dicom-web/studies 200, elapsed: (\d+) us, "
                          r"(\d+) bytes in, (\d+) bytes out, [\d.]+ Mbps", log)
    assert stow_line and int(stow_line.group(1)) > 0 and int(stow_line.group(2)) == sent, log[-2000:]
    retrieve_line = re.search(rf"WADO-RS: GET /dicom-web/studies/{study} 200, elapsed: \d+ us, 0 bytes in, (\d+) bytes out", log)
    assert retrieve_line and int(retrieve_line.group(1)) == len(retrieved.content)
    assert re.search(r"WADO-RS: GET /dicom-web/studies/1.2.3/metadata 404", log)


def test_performance_logs_are_off_by_default(fresh_server):
    assert requests.get(f"{fresh_server.dicomweb_url}/studies", timeout=30).status_code == 200
    fresh_server.stop()
    assert "dicomweb_nb.performance" not in fresh_server.log_text()


def _with_binary_values(patient: str) -> Dataset:
    """A CT instance with large binary values beside its pixels: at top level and in a sequence."""
    ds = samples.generate_ct_series(1, rows=16, columns=16, patient_id=patient)[0]
    ds.add_new(0x00091010, "OB", bytes(range(256)) * 8)  # a private OB value, 2 KiB
    item = Dataset()
    item.add_new(0x00420011, "OB", b"%PDF-1.4 " + bytes(3001))  # Encapsulated Document
    ds.add_new(0x00400555, "SQ", Sequence([item]))  # Acquisition Context Sequence, one item
    ds.add_new(0x00660023, "OW", bytes(4096))  # Triangle Point Index List (OW)
    return ds


@pytest.mark.parametrize("mode", ["BulkDataURI", "InlineBinary"])
def test_other_binary_mode(tmp_path, mode):
    server = start_standalone(tmp_path, None, "-c", f"other_binary_mode={mode}")
    try:
        ds = _with_binary_values(unique_patient("BIN"))
        stow_datasets(server, [ds])
        url = f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        [meta] = requests.get(url + "/metadata", timeout=30).json()
        [series_meta] = requests.get(url.rsplit("/instances/", 1)[0] + "/metadata", timeout=30).json()
        assert series_meta == meta
        private, pdf, ow = meta["00091010"], meta["00400555"]["Value"][0]["00420011"], meta["00660023"]
        assert "BulkDataURI" in meta["7FE00010"]  # pixel data stays a BulkDataURI in every mode
        if mode == "BulkDataURI":
            for element, value in ((private, ds[0x00091010].value), (pdf, ds.AcquisitionContextSequence[0][0x00420011].value),
                                   (ow, ds[0x00660023].value)):
                got = requests.get(element["BulkDataURI"], timeout=30, headers={"Accept": "application/octet-stream"})
                assert got.content == value
        else:
            assert base64.b64decode(private["InlineBinary"]) == ds[0x00091010].value
            assert base64.b64decode(pdf["InlineBinary"]) == ds.AcquisitionContextSequence[0][0x00420011].value
            assert (ow["vr"], base64.b64decode(ow["InlineBinary"])) == ("OW", ds[0x00660023].value)
            assert "BulkDataURI" not in json.dumps({k: v for k, v in meta.items() if k != "7FE00010"})
            # The metadata reads back as the instance (pydicom's own reading of DICOM JSON).
            back = Dataset.from_json(meta, bulk_data_uri_handler=lambda *_: b"")
            assert back[0x00091010].value == ds[0x00091010].value
    finally:
        server.stop()

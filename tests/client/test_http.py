"""Authentication, retries, error reporting and configuration, against a scripted local HTTP server."""

from __future__ import annotations

import base64
import json

import pytest
import requests

import dicomweb_nb as dw
from dicomweb_nb import errors
from dicomweb_nb.client import load_servers, lookup_server
from dicomweb_nb.client.http import encode_query
from dicomweb_nb.samples import generate_ct_series

STUDY = "1.2.3"


def test_basic_auth_and_extra_headers_are_sent(scripted_server):
    pacs = dw.connect(scripted_server.url, username="alice", password="s3cret", headers={"X-Site": "lab"}, progress=False)
    pacs.studies()
    _, _, headers, _ = scripted_server.requests[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert headers["X-Site"] == "lab"
    assert headers["Accept"] == "application/dicom+json"


@pytest.mark.parametrize("kwargs, expected", [({"token": "abc"}, "Bearer abc"), ({"jupyter_token": "xyz"}, "token xyz")])
def test_token_auth(scripted_server, kwargs, expected):
    dw.connect(scripted_server.url, progress=False, **kwargs).studies()
    assert scripted_server.requests[0][2]["Authorization"] == expected


def test_both_tokens_is_an_error():
    with pytest.raises(errors.DicomWebError, match="either token"):
        dw.connect("http://127.0.0.1:9/dicom-web", token="a", jupyter_token="b")


def test_caller_session_is_used(scripted_server):
    session = requests.Session()
    session.headers["X-From-Session"] = "yes"
    dw.connect(scripted_server.url, session=session, progress=False).studies()
    assert scripted_server.requests[0][2]["X-From-Session"] == "yes"


def test_401_raises_unauthorized_with_status_url_and_server_message(scripted_server):
    scripted_server.script = [(401, {"Content-Type": "application/json", "WWW-Authenticate": "Basic"},
                               {"Message": "Bad credentials for this DICOMweb root"})]
    pacs = dw.connect(scripted_server.url, username="alice", password="wrong", progress=False)
    with pytest.raises(errors.Unauthorized) as caught:
        pacs.studies(PatientID="X1")
    err = caught.value
    assert err.status == 401
    assert err.url.startswith(scripted_server.url + "/studies?PatientID=X1")
    assert err.server_message == "Bad credentials for this DICOMweb root"
    assert "Bad credentials" in str(err)
    assert isinstance(err, errors.DicomWebError)
    assert len(scripted_server.requests) == 1  # 401 is not retried


def test_503_is_retried_then_succeeds(scripted_server):
    scripted_server.script = [(503, {}, b"busy"), (503, {"Retry-After": "0"}, b"busy"),
                              (200, {"Content-Type": "application/dicom+json"},
                               [{"0020000D": {"vr": "UI", "Value": [STUDY]}}])]
    pacs = dw.connect(scripted_server.url, backoff_factor=0.01, progress=False)
    found = pacs.studies()
    assert found.StudyInstanceUID.tolist() == [STUDY]
    assert len(scripted_server.requests) == 3


def test_persistent_503_raises_service_unavailable_after_retries(scripted_server):
    scripted_server.default = (503, {"Content-Type": "text/plain"}, b"maintenance until noon")
    pacs = dw.connect(scripted_server.url, retries=2, backoff_factor=0.01, progress=False)
    with pytest.raises(errors.ServiceUnavailable) as caught:
        pacs.studies()
    assert caught.value.status == 503
    assert caught.value.server_message == "maintenance until noon"
    assert len(scripted_server.requests) == 3  # first try + 2 retries


def test_429_honours_retry_after(scripted_server):
    scripted_server.script = [(429, {"Retry-After": "0"}, b"slow down")]
    dw.connect(scripted_server.url, backoff_factor=0.01, progress=False).studies()
    assert len(scripted_server.requests) == 2


def test_connection_reset_is_retried(scripted_server):
    scripted_server.script = ["reset"]
    pacs = dw.connect(scripted_server.url, backoff_factor=0.01, progress=False)
    assert len(pacs.studies()) == 0
    assert len(scripted_server.requests) == 2


def test_refused_connection_raises_connection_failed():
    from tests.fixtures.peers import free_port

    pacs = dw.connect(f"http://127.0.0.1:{free_port()}/dicom-web", retries=1, backoff_factor=0.01, progress=False)
    with pytest.raises(errors.ConnectionFailed) as caught:
        pacs.studies()
    assert caught.value.status is None
    assert "127.0.0.1" in caught.value.url


def test_stow_retry_resends_the_whole_streamed_body(scripted_server, tmp_path):
    datasets = generate_ct_series(n_slices=3, rows=8, columns=8)
    answer = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
                                                  "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]}}
                                                 for ds in datasets]}}
    scripted_server.script = [(503, {}, b"busy"), (200, {"Content-Type": "application/dicom+json"}, answer)]
    pacs = dw.connect(scripted_server.url, backoff_factor=0.01, progress=False)
    result = pacs.store(datasets)
    assert result.status.tolist() == ["stored"] * 3
    first, second = scripted_server.requests
    assert first[0] == second[0] == "POST"
    assert first[3] == second[3] and len(first[3]) == int(second[2]["Content-Length"])
    assert second[2]["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    assert "chunked" not in second[2].get("Transfer-Encoding", "")


def test_failed_stow_batch_is_listed_not_raised(scripted_server):
    scripted_server.default = (413, {"Content-Type": "application/json"}, {"message": "upload too large"})
    result = dw.connect(scripted_server.url, progress=False).store(generate_ct_series(n_slices=2, rows=8, columns=8))
    assert result.status.tolist() == ["failed", "failed"]
    assert all("upload too large" in e for e in result.error)


def test_bad_filters_raise_before_any_request(scripted_server):
    pacs = dw.connect(scripted_server.url, progress=False)
    bad_calls = [
        lambda: pacs.studies(PatientNam="DOE*"),
        lambda: pacs.studies(StudyDate="2020-13-45x"),
        lambda: pacs.studies(StudyDate="20201231-20200101"),
        lambda: pacs.series(STUDY, SeriesNumber="three"),
        lambda: pacs.studies(StudyInstanceUID="not-a-uid"),
        lambda: pacs.studies({"0010001": "x"}),
        lambda: pacs.studies(limit=5, PatientID="x", fuzzymatching="true"),
        lambda: pacs.studies(fields=["NoSuchKeyword"]),
        lambda: pacs.studies(PatientID="A", **{"00100020": "B"}),
        lambda: pacs.studies(includefield="all"),
    ]
    for call in bad_calls:
        with pytest.raises(errors.InvalidFilter) as caught:
            call()
        assert isinstance(caught.value, ValueError)
    assert scripted_server.requests == []
    with pytest.raises(ValueError, match="limit"):
        pacs.studies(limit=-1)
    assert scripted_server.requests == []


def test_query_values_keep_rfc3986_query_characters_literal(scripted_server):
    pacs = dw.connect(scripted_server.url, progress=False)
    pacs.studies(PatientName="DOE*", StudyDate="20200101-20201231", StudyInstanceUID=["1.2.3", "1.2.4"],
                 AccessionNumber="A&B=C", fields=["StudyDescription"])
    path = scripted_server.requests[0][1]
    assert "PatientName=DOE*" in path
    assert "StudyDate=20200101-20201231" in path
    assert "StudyInstanceUID=1.2.3,1.2.4" in path
    assert "AccessionNumber=A?B?C" in path  # escaped characters become wildcards, then filtered locally
    # ... and the attribute is asked for, so it can be filtered
    assert "includefield=StudyDescription,AccessionNumber" in path and "fuzzymatching" not in path
    assert encode_query([("PatientName", "DOE^JOHN")]) == "PatientName=DOE%5EJOHN"


def test_paging_follows_pages_and_stops(scripted_server):
    def page(uids):
        return (200, {"Content-Type": "application/dicom+json"}, [{"0020000D": {"vr": "UI", "Value": [u]}} for u in uids])

    scripted_server.script = [page(["1.1", "1.2"]), page(["1.3", "1.4"]), page(["1.5"])]
    pacs = dw.connect(scripted_server.url, page_size=2, progress=False)
    assert pacs.studies().StudyInstanceUID.tolist() == ["1.1", "1.2", "1.3", "1.4", "1.5"]
    paths = [r[1] for r in scripted_server.requests]
    assert "limit=2" in paths[0] and "offset" not in paths[0]
    assert "offset=2" in paths[1] and "offset=4" in paths[2]


def test_paging_stops_when_a_server_ignores_offset(scripted_server):
    scripted_server.default = (200, {"Content-Type": "application/dicom+json"},
                               [{"0020000D": {"vr": "UI", "Value": [u]}} for u in ("1.1", "1.2")])
    pacs = dw.connect(scripted_server.url, page_size=2, progress=False)
    assert pacs.studies().StudyInstanceUID.tolist() == ["1.1", "1.2"]
    assert len(scripted_server.requests) == 2


def test_connect_by_configured_name(scripted_server, tmp_path, monkeypatch):
    (tmp_path / "servers.json").write_text(json.dumps({
        "lab": {"Url": scripted_server.url, "Username": "bob", "Password": "pw", "HttpHeaders": {"X-Lab": "1"},
                "Timeout": 5},
        "short": [scripted_server.url, "carol", "pw2"],
    }))
    monkeypatch.setenv("DICOMWEB_NB_STORE", str(tmp_path))
    assert set(load_servers()) == {"lab", "short"}
    assert lookup_server("short").username == "carol"
    dw.connect("lab", progress=False).studies()
    headers = scripted_server.requests[0][2]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"bob:pw").decode()
    assert headers["X-Lab"] == "1"
    with pytest.raises(errors.UnknownServer, match="lab, short"):
        dw.connect("nope")


def test_bad_servers_file_is_a_clear_error(tmp_path):
    (tmp_path / "servers.json").write_text(json.dumps({"x": {"Url": "ftp://nowhere"}}))
    with pytest.raises(errors.ConfigurationError, match="'x'.*http"):
        load_servers(tmp_path)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_json_answers_decode_whatever_their_unicode_encoding(scripted_server, encoding):
    """Answers are decoded by orjson, which reads UTF-8 (what PS3.18 F.2 asks for); one in UTF-16 or UTF-32
    still decodes (requests' decoder, which finds the encoding), and one that is not JSON is a clear error."""
    metadata = [{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Zoë"}]}}]
    content = json.dumps(metadata, ensure_ascii=False).encode(encoding)
    scripted_server.script = [(200, {"Content-Type": "application/dicom+json"}, content)] * 2
    pacs = dw.connect(scripted_server.url, progress=False)
    assert pacs.source.retrieve_metadata(STUDY, "1.2.3.4") == metadata
    assert pacs.studies(PatientName="Zoë").PatientName.tolist() == ["Zoë"]
    scripted_server.script = [(200, {"Content-Type": "application/dicom+json"}, b"[{not json")]
    with pytest.raises(errors.InvalidResponse, match="metadata answer is not JSON"):
        pacs.source.retrieve_metadata(STUDY, "1.2.3.4")

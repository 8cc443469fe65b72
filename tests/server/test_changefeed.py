"""The change feed over HTTP (Azure's): ``{root}/changefeed`` (version 2), ``v1/changefeed``,
``changefeed/latest``, after a scripted sequence of creates, re-STOWs and deletes; windows by time
and offset; parameter errors; metadata with BulkDataURIs that resolve."""

from __future__ import annotations

import copy
import time

import pytest
import requests

from .conftest import small_series, stow_datasets

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def feed(server, path: str = "changefeed", **params) -> requests.Response:
    return requests.get(f"{server.dicomweb_url}/{path}", params=params, headers=server.headers, timeout=60)


def test_the_feed_after_creates_restows_and_deletes(fresh_server):
    assert feed(fresh_server, "changefeed/latest").status_code == 204
    assert feed(fresh_server).json() == []
    first = small_series(3)
    a, b, c = (str(ds.SOPInstanceUID) for ds in first)
    study, series = str(first[0].StudyInstanceUID), str(first[0].SeriesInstanceUID)
    stow_datasets(fresh_server, first)
    time.sleep(0.05)
    again = copy.deepcopy(first[0])
    again.StudyDescription = "re-sent"
    stow_datasets(fresh_server, [again])
    time.sleep(0.05)
    url = f"{fresh_server.dicomweb_url}/studies/{study}/series/{series}/instances/{b}"
    assert requests.delete(url, headers=fresh_server.headers, timeout=60).status_code == 204

    entries = feed(fresh_server).json()
    assert [(e["Sequence"], e["Action"], e["SopInstanceUid"], e["State"]) for e in entries] == [
        (1, "create", a, "replaced"), (2, "create", b, "deleted"), (3, "create", c, "current"),
        (4, "create", a, "current"), (5, "delete", b, "deleted")]
    assert all(e["StudyInstanceUid"] == study and e["SeriesInstanceUid"] == series for e in entries)
    # Metadata is the current version's: a replaced entry shows what replaced it (as in Azure).
    assert [e["Metadata"]["00081030"]["Value"] for e in entries if "Metadata" in e] == \
        [["re-sent"], [first[2].StudyDescription], ["re-sent"]]
    assert ["Metadata" in e for e in entries] == [True, False, True, True, False]

    # A BulkDataURI of the feed's metadata resolves.
    pixels = entries[3]["Metadata"]["7FE00010"]["BulkDataURI"]
    assert pixels.startswith(f"{fresh_server.dicomweb_url}/studies/{study}/series/{series}/instances/{a}/")
    got = requests.get(pixels, headers={**fresh_server.headers, "Accept": "application/octet-stream"}, timeout=60)
    assert got.status_code == 200 and got.content == again.PixelData

    # Windows: startTime inclusive, endTime exclusive; offset skips within the window; limit.
    second = entries[3]["Timestamp"]
    assert [e["Sequence"] for e in feed(fresh_server, startTime=second).json()] == [4, 5]
    assert [e["Sequence"] for e in feed(fresh_server, endTime=second).json()] == [1, 2, 3]
    assert [e["Sequence"] for e in feed(fresh_server, offset=1, limit=2, includeMetadata="false").json()] == [2, 3]
    assert [e["Sequence"] for e in feed(fresh_server, offset=3).json()] == [4, 5]  # after sequence 3
    assert "Metadata" not in feed(fresh_server, includeMetadata="false").json()[0]
    # Version 1: entries whose Sequence is in (offset, offset + limit]; v2/changefeed is version 2.
    assert [e["Sequence"] for e in feed(fresh_server, "v1/changefeed", offset=1, limit=3).json()] == [2, 3, 4]
    assert feed(fresh_server, "v2/changefeed").json() == entries
    latest = feed(fresh_server, "changefeed/latest")
    assert latest.status_code == 200 and latest.headers["Content-Type"].startswith("application/json")
    assert latest.json() == {k: v for k, v in entries[-1].items()}
    assert feed(fresh_server, "v1/changefeed/latest", includeMetadata="false").json()["Sequence"] == 5


@pytest.mark.parametrize("params, message", [
    ({"limit": "500"}, "limit=500 is out of range: it must be from 1 to 200"),
    ({"offset": "-2"}, "offset=-2 is out of range"),
    ({"startTime": "now"}, "startTime='now' is not an ISO 8601 date-time"),
    ({"startTime": "2024-02-01T00:00:00Z", "endTime": "2024-01-01T00:00:00Z"}, "must be later than startTime"),
    ({"includeMetadata": "yes please"}, "must be true or false"),
])
def test_bad_parameters_are_400_naming_them(server, params, message):
    answer = feed(server, **params)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]


def test_both_mount_points_serve_it_with_urls_under_their_root(server):
    datasets = small_series(1)
    stow_datasets(server, datasets)
    latest = feed(server, "changefeed/latest").json()
    assert latest["SopInstanceUid"] == str(datasets[0].SOPInstanceUID) and latest["Action"] == "create"
    assert latest["Metadata"]["7FE00010"]["BulkDataURI"].startswith(server.dicomweb_url + "/studies/")
    page = feed(server, offset=latest["Sequence"] - 1).json()
    assert [e["Sequence"] for e in page] == [latest["Sequence"]]
    assert requests.get(f"{server.dicomweb_url}/changefeed", timeout=30).status_code in (401, 403) or not server.headers

"""The third-party dicomweb-client library stores into and searches our server, on both mount points.

dicomweb-client sets ``Host`` to the host name without the port (a known quirk of the library), so
RetrieveURLs in answers to its requests carry no port: their paths are checked, not their origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from dicomweb_client.api import DICOMwebClient

from .conftest import small_series, value


@pytest.fixture
def client(server):
    return DICOMwebClient(url=server.dicomweb_url, headers=dict(server.headers))


def test_store_and_search_with_dicomweb_client(client, server):
    datasets = small_series(3, patient_name="Client^Lib")
    answer = client.store_instances(datasets)
    referenced = answer.ReferencedSOPSequence
    assert [item.ReferencedSOPInstanceUID for item in referenced] == [ds.SOPInstanceUID for ds in datasets]
    assert "FailedSOPSequence" not in answer
    study_uid = datasets[0].StudyInstanceUID
    root_path = urlsplit(server.dicomweb_url).path
    for item, ds in zip(referenced, datasets):
        url = urlsplit(item.RetrieveURL)
        assert url.path == f"{root_path}/studies/{study_uid}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        assert url.hostname == "127.0.0.1"

    studies = client.search_for_studies(search_filters={"PatientID": datasets[0].PatientID})
    assert len(studies) == 1
    assert value(studies[0], "0020000D") == study_uid
    assert studies[0]["00100010"]["Value"] == [{"Alphabetic": "Client^Lib"}]
    assert value(studies[0], "00201208") == 3

    by_name = client.search_for_studies(search_filters={"PatientName": "client*", "PatientID": datasets[0].PatientID})
    assert [value(s, "0020000D") for s in by_name] == [study_uid]

    series = client.search_for_series(study_uid)
    assert [value(s, "0020000E") for s in series] == [datasets[0].SeriesInstanceUID]
    assert value(series[0], "00201209") == 3

    instances = client.search_for_instances(study_uid, datasets[0].SeriesInstanceUID, fields=["SliceThickness"])
    assert [value(i, "00080018") for i in instances] == [ds.SOPInstanceUID for ds in datasets]
    assert all(i["00180050"]["Value"] == [2.5] for i in instances)

    page = client.search_for_instances(search_filters={"PatientID": datasets[0].PatientID}, limit=2, offset=1)
    assert [value(i, "00080018") for i in page] == [ds.SOPInstanceUID for ds in datasets[1:3]]

    fuzzy = client.search_for_studies(
        search_filters={"PatientName": "lib", "PatientID": datasets[0].PatientID}, fuzzymatching=True
    )
    assert len(fuzzy) == 1


def test_store_into_a_study_with_dicomweb_client(client):
    datasets = small_series(2)
    answer = client.store_instances(datasets, study_instance_uid=datasets[0].StudyInstanceUID)
    assert len(answer.ReferencedSOPSequence) == 2


def test_dicomweb_client_retrieves_what_it_stored(client):
    datasets = small_series(1)
    client.store_instances(datasets)
    ds = datasets[0]
    got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.PixelData == ds.PixelData
    metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert metadata["00080018"]["Value"] == [ds.SOPInstanceUID]

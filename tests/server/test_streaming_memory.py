"""Streams, not buffers: a large STOW-RS upload and its retrieve leave the server's memory flat."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from dicomweb_nb import samples
from dicomweb_nb.dicom.multipart import MultipartWriter, iter_parts
from tests.fixtures.ourserver import start_standalone

INSTANCES = 48
SIDE = 1024  # 48 x 2 MiB of 16-bit pixels: a 96 MiB study


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def big_upload(tmp_path_factory, store_backend):
    template = samples.generate_ct_series(1, rows=SIDE, columns=SIDE, patient_id="BIG-STREAM")[0]
    server = start_standalone(tmp_path_factory.mktemp("memory"), backend=store_backend)
    yield server, template
    server.stop()


def _body(template, writer: MultipartWriter):
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    for index in range(INSTANCES):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        ds.PixelData = np.full((SIDE, SIDE), index, dtype=np.uint16).tobytes()
        yield writer.part_head("application/dicom") + samples.dataset_bytes(ds)
    yield writer.close()


def test_upload_and_retrieve_of_a_large_study_do_not_grow_the_server(big_upload):
    server, template = big_upload
    pid = server.process.pid
    before = _rss_kib(pid)
    writer = MultipartWriter()
    answer = requests.post(f"{server.dicomweb_url}/studies", data=_body(template, writer),  # chunked, generated lazily
                           headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={writer.boundary}"})
    assert answer.status_code == 200, answer.text
    study = answer.json()["00081190"]["Value"][0].rsplit("/", 1)[-1]
    after_upload = _rss_kib(pid)

    retrieved = requests.get(f"{server.dicomweb_url}/studies/{study}", stream=True,
                             headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    boundary = retrieved.headers["Content-Type"].split("boundary=")[1]
    count = sum(1 for _ in iter_parts(retrieved.iter_content(1 << 20), boundary))
    after_retrieve = _rss_kib(pid)

    assert count == INSTANCES
    study_kib = INSTANCES * SIDE * SIDE * 2 // 1024
    # The server may keep caches and arenas, but nothing close to the study's size.
    assert after_upload - before < study_kib // 3, (before, after_upload, study_kib)
    assert after_retrieve - before < study_kib // 3, (before, after_retrieve, study_kib)

"""Volumes whose pixels are received straight into place: Retrieve Bulkdata parts read from the
connection into the room the volume has for them (``iter_bulkdata(into=...)``), parts of another
size read whole, and the values equal to pydicom's bit for bit whatever the stored high bits hold."""

from __future__ import annotations

import gzip
import http.client
import random

import numpy as np
import pytest

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.client.http import _body_stream
from dicomweb_nb.client.web import BULKDATA_ACCEPT
from dicomweb_nb.dicom.multipart import MultipartWriter

ROWS, COLUMNS = 130, 124  # pixel data longer than the first look into a file


def stray_bit_series(signed: bool, seed: int) -> list:
    """A CT series stored in 12 of 16 bits whose 4 unused high bits hold noise (which readers must
    ignore, sign-extending bit 11 when signed), with a rescale slope that is not 1."""
    series = samples.generate_ct_series(6, rows=ROWS, columns=COLUMNS, seed=seed, patient_id=f"STRAY-{int(signed)}")
    rng = np.random.default_rng(seed)
    for ds in series:
        stored = np.frombuffer(ds.PixelData, dtype="<u2") & 0x0FFF
        noise = rng.integers(0, 16, size=stored.shape, dtype=np.uint16) << 12
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = "2.5", "-1024"
        ds.PixelData = (stored | noise).astype("<u2").tobytes()
    return series


@pytest.fixture(scope="module", params=[False, True], ids=["unsigned", "signed"])
def stray(request, our_server):
    series = stray_bit_series(request.param, seed=31 + request.param)
    shuffled = list(series)
    random.Random(4).shuffle(shuffled)
    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        assert set(pacs.store(shuffled).status) == {"stored"}
    return series


def uids(series) -> tuple[str, str]:
    return str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)


@pytest.mark.parametrize("method", ["bulkdata", "series", "frames"])
def test_volume_equals_pydicom_whatever_the_unused_bits_hold(our_server, stray, method):
    expected = np.stack([ds.pixel_array for ds in stray])  # generation order is the order along the normal
    assert (np.frombuffer(stray[0].PixelData, "<u2") >> 12).any()  # the noise is there to be ignored
    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        stored = pacs.volume(*uids(stray), rescale=False, method=method)
        rescaled = pacs.volume(*uids(stray), method=method)
    assert stored.array.dtype == expected.dtype and np.array_equal(stored.array, expected)
    assert rescaled.array.dtype == np.float32 and rescaled.rescaled
    assert np.array_equal(rescaled.array, expected.astype(np.float32) * np.float32(2.5) + np.float32(-1024))


def test_bulk_parts_of_our_server_are_received_into_their_rooms(our_server, stray):
    by_instance = {str(ds.SOPInstanceUID): ds.PixelData for ds in stray}
    rooms: dict[str, bytearray] = {}

    def into(location: str, syntax: str | None) -> memoryview:
        assert syntax == "1.2.840.10008.1.2.1"
        rooms[location] = bytearray(ROWS * COLUMNS * 2)
        return memoryview(rooms[location])

    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        parts = list(pacs.source.iter_bulkdata(*uids(stray), into=into))
        unplaced = list(pacs.source.iter_bulkdata(*uids(stray)))
    assert len(parts) == len(stray) and all(part.filled for part in parts)
    for part in parts:
        assert part.data.obj is rooms[part.location]
        assert bytes(part.data) == by_instance[part.location.split("/instances/")[1].split("/")[0]]
    assert [bytes(p.data) for p in unplaced] == [bytes(p.data) for p in parts] and not any(p.filled for p in unplaced)


def test_bulk_answers_are_read_from_the_connection_itself(our_server, stray):
    """No layer between the socket and the volume: urllib3's own readinto would copy twice more."""
    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        url = pacs.source.http.url("studies", *uids(stray)[:1], "series", uids(stray)[1], "bulkdata")
        response = pacs.source.http.get(url, accept=BULKDATA_ACCEPT, stream=True, headers={"Accept-Encoding": "identity"})
        try:
            assert isinstance(_body_stream(response), http.client.HTTPResponse)
        finally:
            response.close()


# -- a scripted server: parts of unexpected sizes, gzip, a cut answer -------------------------------------

def bulk_answer(parts: list[tuple[str, bytes, dict[str, str]]], *, coding: str | None = None) -> tuple[int, dict, bytes]:
    writer = MultipartWriter()
    body = bytearray()
    for location, content, extra in parts:
        body += writer.part_head("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
                                 {"Content-Location": location, **extra})
        body += content
    body += writer.close()
    headers = {"Content-Type": f'multipart/related; type="application/octet-stream"; boundary={writer.boundary}'}
    if coding == "gzip":
        headers["Content-Encoding"] = "gzip"
        return 200, headers, gzip.compress(bytes(body))
    return 200, headers, bytes(body)


ODD_SIZES = [("/i/1", b"A" * 8, {}), ("/i/2", b"B" * 9, {}), ("/i/3", b"C" * 6, {}), ("/i/4", b"D" * 8, {"Content-Length": "8"}),
             ("/i/5", b"E\r" * 4, {}), ("/i/6", b"F" * 8, {"Content-Length": "9"})]


@pytest.mark.parametrize("coding", [None, "gzip"])
def test_parts_of_another_size_than_their_room_are_read_whole(scripted_server, coding):
    scripted_server.script = [bulk_answer(ODD_SIZES, coding=coding)]
    with dw.connect(scripted_server.url, progress=False) as pacs:
        got = [(p.location, bytes(p.data), p.filled)
               for p in pacs.source.iter_bulkdata("1.2", "3.4", into=lambda _location, _syntax: memoryview(bytearray(8)))]
    # the last part says it is 9 bytes long while 8 arrive: not trusted into the room, read as it comes
    assert got == [("/i/1", b"A" * 8, True), ("/i/2", b"B" * 9, False), ("/i/3", b"C" * 6, False),
                   ("/i/4", b"D" * 8, True), ("/i/5", b"E\r" * 4, True), ("/i/6", b"F" * 8, False)]


def test_a_cut_bulk_answer_is_a_clear_error(scripted_server):
    status, headers, body = bulk_answer(ODD_SIZES[:2])
    scripted_server.script = [(status, headers, body[:-30])]
    with dw.connect(scripted_server.url, progress=False) as pacs, \
            pytest.raises(dw.errors.InvalidResponse, match="malformed multipart answer.*truncated"):
        list(pacs.source.iter_bulkdata("1.2", "3.4", into=lambda _location, _syntax: memoryview(bytearray(8))))


def _metadata(uid: str, z: float, location: str) -> dict:
    return {
        "00080018": {"vr": "UI", "Value": [uid]}, "00280010": {"vr": "US", "Value": [2]},
        "00280011": {"vr": "US", "Value": [2]}, "00280100": {"vr": "US", "Value": [16]},
        "00280101": {"vr": "US", "Value": [16]}, "00280103": {"vr": "US", "Value": [0]},
        "00280002": {"vr": "US", "Value": [1]}, "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "00200032": {"vr": "DS", "Value": [0, 0, z]}, "00200037": {"vr": "DS", "Value": [1, 0, 0, 0, 1, 0]},
        "00280030": {"vr": "DS", "Value": [1, 1]}, "7FE00010": {"vr": "OW", "BulkDataURI": location},
    }


def test_volume_from_parts_padded_or_exact(scripted_server):
    """A server padding one frame's part: that frame is decoded from its bytes, the other lands in place."""
    first, second = np.array([[1, 2], [3, 4]], "<u2"), np.array([[5, 6], [7, 8]], "<u2")
    base = "/dicom-web/studies/1.2/series/3.4/instances"
    scripted_server.script = [
        bulk_answer([(f"{base}/b/bulk/7FE00010", second.tobytes() + b"\x00\x00", {}),
                     (f"{base}/a/bulk/7FE00010", first.tobytes(), {})]),
        (200, {"Content-Type": "application/dicom+json"},
         [_metadata("b", 5.0, f"{base}/b/bulk/7FE00010"), _metadata("a", 2.0, f"{base}/a/bulk/7FE00010")]),
    ]
    with dw.connect(scripted_server.url, progress=False) as pacs:
        volume = pacs.volume("1.2", "3.4", method="bulkdata", rescale=False)
    assert volume.array.dtype == np.uint16 and np.array_equal(volume.array, np.stack([first, second]))
    assert [path for _method, path, _headers, _body in scripted_server.requests] == [
        "/dicom-web/studies/1.2/series/3.4/bulkdata", "/dicom-web/studies/1.2/series/3.4/metadata"]


# -- the series retrieve: each file's attributes parsed from its first bytes, its pixels received into place ------

def assorted_series() -> list:
    """Ten slices stored in every way a series retrieve may bring them: explicit and implicit VR
    little endian, RLE, an element after the pixel data, a header longer than the first look."""
    from pydicom.uid import ImplicitVRLittleEndian, RLELossless

    series = samples.generate_ct_series(10, rows=ROWS, columns=COLUMNS, seed=41, patient_id="ASSORTED")
    series[2].compress(RLELossless, generate_instance_uid=False)
    series[7].compress(RLELossless, generate_instance_uid=False)
    series[4].file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    series[5].add_new(0xFFFCFFFC, "OB", b"\x00" * 6)  # Data Set Trailing Padding: after the pixel data
    for index in (1, 8):  # a private element of 40 KB before the pixel data
        series[index].private_block(0x0009, "DICOMWEB-NB TEST", create=True).add_new(0x01, "OB", bytes(40_000))
    return series


def test_series_volume_places_what_it_can_and_parses_the_rest_whole(our_server, monkeypatch):
    from dicomweb_nb.client import wado

    series = assorted_series()
    expected = np.stack([ds.pixel_array for ds in series])
    whole = []
    original = wado._decode_instance
    monkeypatch.setattr(wado, "_decode_instance", lambda content, rescale: whole.append(1) or original(content, rescale))
    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        shuffled = list(series)
        random.Random(2).shuffle(shuffled)
        assert set(pacs.store(shuffled).status) == {"stored"}
        stored = pacs.volume(*uids(series), rescale=False, method="series")
        assert stored.array.dtype == np.uint16 and np.array_equal(stored.array, expected)
        # RLE twice, the trailing element, and the long headers (the first look into a file is short)
        assert len(whole) == 5
        rescaled = pacs.volume(*uids(series), method="series")
        assert np.array_equal(rescaled.array, expected.astype(np.float32) - np.float32(1024))
        assert [key[0] for key in stored.keys] == [str(ds.SOPInstanceUID) for ds in series]


def test_series_retrieve_gives_the_rest_of_each_file_its_room(our_server, stray):
    files = {samples.dataset_bytes(ds)[:512]: samples.dataset_bytes(ds) for ds in stray}
    with dw.connect(our_server.dicomweb_url, progress=False) as pacs:
        got = list(pacs.source.iter_instances_into(*uids(stray), head_size=lambda: 512,
                                                   room_for=lambda head: memoryview(bytearray(len(files[head]) - 512))))
    assert len(got) == len(stray) and all(filled for _head, _rest, filled in got)
    assert sorted(head + bytes(rest) for head, rest, _filled in got) == sorted(files.values())

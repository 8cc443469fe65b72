"""WADO-RS over real HTTP: retrieve, metadata, frames, bulk data, against what pydicom reads from the files."""

from __future__ import annotations

import copy
import gzip
import io
import json
import warnings

import numpy as np
import pydicom
import pytest
import requests
from pydicom.encaps import generate_frames

from dicomweb_nb import samples
from dicomweb_nb.dicom.mediatypes import parse_media_type
from dicomweb_nb.dicom.multipart import iter_parts
from tests.fixtures.backends import store_kwargs_for
from tests.fixtures.data import read_dicom as _read
from tests.fixtures.metadata import metadata_problems, native_layout
from tests.fixtures.ourserver import start_standalone

from .conftest import store_bundled

ANY_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
RAW_FRAMES = 'multipart/related; type="application/octet-stream"'
STORED_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, pydicom_files, store_backend):
    """A server whose store holds every bundled pydicom file (imported with the CLI) and a CT series."""
    import subprocess
    import sys
    from pathlib import Path

    workdir = tmp_path_factory.mktemp("wado")
    ct = samples.generate_ct_series(6, rows=40, columns=40, patient_id="WADO-CT")
    ct_files = samples.write_series(ct, workdir / "ct")
    kwargs = store_kwargs_for(workdir / "store", store_backend)
    subprocess.run([str(Path(sys.executable).parent / "dicomweb-nb"), "import", "--quiet", "--store", str(workdir / "store"),
                    *store_backend.serve_args(kwargs, workdir / "store"), *map(str, pydicom_files), *map(str, ct_files)],
                   check=True, capture_output=True)
    server = start_standalone(workdir, workdir / "store", backend=store_backend)
    server.files = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in [*pydicom_files, *ct_files]}
    server.ct = ct
    yield server
    server.stop()




def _instance_url(server, ds) -> str:
    return f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _parts(answer: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    ctype = parse_media_type(answer.headers["Content-Type"])
    assert ctype.type == "multipart/related", answer.headers["Content-Type"]
    return list(iter_parts([answer.content], ctype.params["boundary"]))


def _uids_of(server, sop: str) -> tuple[str, str]:
    found = requests.get(f"{server.dicomweb_url}/instances", params={"SOPInstanceUID": sop}).json()
    return found[0]["0020000D"]["Value"][0], found[0]["0020000E"]["Value"][0]


def _image_files(loaded):
    """(sop, path, dataset) of the files with pixel data and a readable NumberOfFrames."""
    out = []
    for sop, path in loaded.files.items():
        ds = _read(path)
        if "PixelData" not in ds or not ds.get("Rows") or not ds.get("Columns"):
            continue
        try:
            int(ds.get("NumberOfFrames", 1) or 1)
        except ValueError:
            continue  # pydicom's corpus has deliberately invalid values
        out.append((sop, path, ds))
    return out


def test_retrieved_instances_are_byte_identical_to_the_part10_originals(loaded):
    checked = 0
    for _sop, path in loaded.files.items():
        original = path.read_bytes()
        if original[128:132] != b"DICM":
            continue  # stored as a Part 10 rewrite: compared by content in another test
        ds = _read(path)
        answer = requests.get(_instance_url(loaded, ds), headers={"Accept": ANY_DICOM})
        assert answer.status_code == 200, (path.name, answer.text)
        (headers, body), = _parts(answer)
        assert body == original, path.name
        assert f"transfer-syntax={ds.file_meta.TransferSyntaxUID}" in headers["content-type"]
        checked += 1
    assert checked > 50


def test_series_and_study_retrieve_stream_every_instance(loaded):
    ds = loaded.ct[0]
    base = f"{loaded.dicomweb_url}/studies/{ds.StudyInstanceUID}"
    for url in (base, f"{base}/series/{ds.SeriesInstanceUID}"):
        answer = requests.get(url, headers={"Accept": ANY_DICOM})
        assert answer.status_code == 200
        assert int(answer.headers["Content-Length"]) == len(answer.content)
        got = [pydicom.dcmread(io.BytesIO(body)) for _, body in _parts(answer)]
        assert [g.SOPInstanceUID for g in got] == [d.SOPInstanceUID for d in loaded.ct]
        assert all(np.array_equal(g.pixel_array, d.pixel_array) for g, d in zip(got, loaded.ct))


def test_default_transfer_syntax_is_explicit_vr_little_endian(loaded):
    compressed = [(sop, p, ds) for sop, p, ds in _image_files(loaded)
                  if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50" and ds.get("NumberOfFrames", 1) in (1, "1")]
    _sop, _path, ds = compressed[0]
    answer = requests.get(_instance_url(loaded, ds), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert answer.status_code == 200
    (headers, body), = _parts(answer)
    assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["content-type"]
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(got.pixel_array, ds.pixel_array)


@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"])
def test_transcoding_to_lossless_syntaxes_keeps_every_pixel(loaded, target):
    ds = loaded.ct[1]
    answer = requests.get(
        _instance_url(loaded, ds), headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={target}'}
    )
    assert answer.status_code == 200, answer.text
    (_, body), = _parts(answer)
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == target
    assert np.array_equal(got.pixel_array, ds.pixel_array)


def test_zip_retrieve(loaded):
    import zipfile

    ds = loaded.ct[0]
    answer = requests.get(f"{loaded.dicomweb_url}/studies/{ds.StudyInstanceUID}", headers={"Accept": "application/zip"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        names = archive.namelist()
        assert len(names) == len(loaded.ct)
        first = pydicom.dcmread(io.BytesIO(archive.read(names[0])))
    assert first.StudyInstanceUID == ds.StudyInstanceUID


def test_unacceptable_retrieve_is_406(loaded):
    ds = loaded.ct[0]
    for accept in ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.57',
                   "text/html", 'multipart/related; type="image/png"'):
        answer = requests.get(_instance_url(loaded, ds), headers={"Accept": accept})
        assert answer.status_code == 406, accept
        assert answer.json()["message"]


def test_frames_as_stored_equal_pydicoms_frames(loaded):
    checked = 0
    for _sop, path, ds in _image_files(loaded):
        count = int(ds.get("NumberOfFrames", 1) or 1)
        ts = ds.file_meta.TransferSyntaxUID
        if ts.is_encapsulated:
            try:
                expected = list(generate_frames(ds.PixelData, number_of_frames=count))
            except Exception:  # noqa: BLE001 - broken encapsulation in pydicom's corpus of odd files
                continue
        elif ds.BitsAllocated % 8 == 0 and ts in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
            size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
            if len(ds.PixelData) < size * count:
                continue
            expected = [ds.PixelData[i * size:(i + 1) * size] for i in range(count)]
        else:
            continue
        numbers = ",".join(str(n + 1) for n in range(min(count, 3)))
        answer = requests.get(f"{_instance_url(loaded, ds)}/frames/{numbers}", headers={"Accept": STORED_FRAMES})
        assert answer.status_code == 200, (path.name, answer.text)
        bodies = [body for _, body in _parts(answer)]
        assert [b.rstrip(b"\0") for b in bodies] == [e.rstrip(b"\0") for e in expected[:3]], path.name
        checked += 1
    assert checked > 40


@pytest.fixture(scope="module")
def every_syntax(tmp_path_factory, store_backend):
    """A server holding every bundled pydicom image, each variant under its own new UIDs.

    pydicom ships one instance in many transfer syntaxes under one SOP Instance UID, which a store
    keeps once; new UIDs (pixel data bytes untouched) let every variant in.
    """
    from pydicom.uid import generate_uid

    from dicomweb_nb.dicom.multipart import encode_multipart
    from tests.fixtures.ourserver import start_standalone

    server = start_standalone(tmp_path_factory.mktemp("syntaxes"), backend=store_backend)
    server.files = {}
    blobs = []
    for path in samples.pydicom_test_files(with_pixels=True, distinct_sops=False):
        ds = _read(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(buffer, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - a few deliberately broken files cannot be written back
            continue
        blobs.append(buffer.getvalue())
        server.files[ds.SOPInstanceUID] = path
    body, boundary = encode_multipart([("application/dicom", b) for b in blobs])
    answer = requests.post(f"{server.dicomweb_url}/studies", data=body,
                           headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"})
    assert answer.status_code in (200, 202), answer.text
    yield server
    server.stop()


def test_uncompressed_frames_equal_pydicoms_decode_for_every_transfer_syntax(every_syntax):
    loaded = every_syntax
    seen_syntaxes = set()
    for sop, path, original in _image_files(loaded):
        ds = original.copy()
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = _uids_of(loaded, sop)
        count = int(ds.get("NumberOfFrames", 1) or 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = ds.pixel_array
        except Exception:  # noqa: BLE001
            answer = requests.get(f"{_instance_url(loaded, ds)}/frames/1", headers={"Accept": RAW_FRAMES})
            assert answer.status_code in (200, 406), path.name  # never a 500
            continue
        if ds.BitsAllocated == 1 or (
            ds.get("PhotometricInterpretation", "").startswith("YBR_FULL_42")
            and not ds.file_meta.TransferSyntaxUID.is_encapsulated
        ):
            continue
        frame = native_layout(ds, expected if count == 1 else expected[count - 1])
        answer = requests.get(f"{_instance_url(loaded, ds)}/frames/{count}", headers={"Accept": RAW_FRAMES})
        assert answer.status_code == 200, (path.name, answer.text)
        (headers, body), = _parts(answer)
        assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["content-type"]
        got = np.frombuffer(body, dtype=frame.dtype).reshape(frame.shape)
        assert np.array_equal(got, frame), path.name
        seen_syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    # Native, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000 all among the bundled files.
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"} <= seen_syntaxes


def test_compressed_frame_media_types(loaded):
    jpeg = next(ds for _, _, ds in _image_files(loaded) if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50")
    answer = requests.get(f"{_instance_url(loaded, jpeg)}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert answer.status_code == 200
    (headers, body), = _parts(answer)
    assert headers["content-type"].startswith("image/jpeg") and body[:2] == b"\xff\xd8"
    answer = requests.get(f"{_instance_url(loaded, jpeg)}/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert answer.status_code == 406


def test_frame_errors(loaded):
    ds = loaded.ct[0]
    url = _instance_url(loaded, ds)
    assert requests.get(f"{url}/frames/2", headers={"Accept": RAW_FRAMES}).status_code == 404
    for bad in ("0", "a", "1,,2", "-1"):
        assert requests.get(f"{url}/frames/{bad}", headers={"Accept": RAW_FRAMES}).status_code == 400, bad
    no_pixels = next(ds for sop, p in loaded.files.items() if "PixelData" not in (ds := _read(p)))
    assert requests.get(f"{_instance_url(loaded, no_pixels)}/frames/1").status_code == 404


def test_metadata_is_the_full_dicom_json_with_resolvable_bulk_data(loaded):
    ds = loaded.ct[2]
    url = f"{loaded.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
    answer = requests.get(url)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/dicom+json")
    items = answer.json()
    assert [i["00080018"]["Value"][0] for i in items] == [d.SOPInstanceUID for d in loaded.ct]
    item = items[2]
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": str(ds.PatientName)}]}
    assert item["00280030"]["Value"] == [float(v) for v in ds.PixelSpacing]
    assert item["00200032"]["Value"] == [float(v) for v in ds.ImagePositionPatient]
    bulk = item["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(loaded.dicomweb_url + "/studies/")
    pixel_answer = requests.get(bulk, headers={"Accept": "application/octet-stream"})
    assert pixel_answer.status_code == 200 and pixel_answer.content == ds.PixelData
    ranged = requests.get(bulk, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == ds.PixelData[10:20]
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(ds.PixelData)}"
    assert requests.get(bulk, headers={"Range": f"bytes={len(ds.PixelData) + 5}-"}).status_code == 416


def test_metadata_gzip_and_revalidation(loaded):
    ds = loaded.ct[0]
    url = f"{loaded.dicomweb_url}/studies/{ds.StudyInstanceUID}/metadata"
    raw = requests.get(url, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert raw.headers.get("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(raw.raw.read()))
    etag = raw.headers["ETag"]
    again = requests.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content


def test_metadata_xml(loaded):
    ds = loaded.ct[0]
    url = f"{_instance_url(loaded, ds)}/metadata"
    answer = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert answer.status_code == 200
    (headers, body), = _parts(answer)
    assert headers["content-type"] == "application/dicom+xml"
    assert b"NativeDicomModel" in body and ds.SOPInstanceUID.encode() in body


def test_unknown_and_mismatched_uids_are_404(loaded):
    ds = loaded.ct[0]
    other = next(d for sop, p in loaded.files.items() if (d := _read(p)).StudyInstanceUID != ds.StudyInstanceUID)
    base = loaded.dicomweb_url
    cases = [
        f"{base}/studies/1.2.3.4.5",
        f"{base}/studies/{ds.StudyInstanceUID}/series/1.2.3",
        f"{base}/studies/{other.StudyInstanceUID}/series/{ds.SeriesInstanceUID}",
        f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/1.2.3/metadata",
    ]
    for url in cases:
        answer = requests.get(url, headers={"Accept": ANY_DICOM})
        assert answer.status_code == 404, url
        assert "not" in answer.json()["message"]
    answer = requests.get(f"{base}/studies/{other.StudyInstanceUID}/series/{ds.SeriesInstanceUID}", headers={"Accept": ANY_DICOM})
    assert "belongs to study" in answer.json()["message"]


def test_metadata_modes(tmp_path, ct_series_files):
    from dicomweb_nb.dicom.multipart import encode_multipart

    server = start_standalone(tmp_path, None, "-c", "series_metadata=MainDicomTags", "-c", "studies_metadata=Extrapolate",
                              "-c", 'studies_metadata_extrapolated_tags=["SliceThickness"]')
    try:
        payload, boundary = encode_multipart([("application/dicom", p.read_bytes()) for p in ct_series_files])
        requests.post(
            f"{server.dicomweb_url}/studies",
            data=payload,
            headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
        ).raise_for_status()
        ds = _read(ct_series_files[0])
        series_meta = requests.get(
            f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
        ).json()
        assert "00200032" in series_meta[0]  # a main instance tag
        assert "00280030" not in series_meta[0] and "00180050" not in series_meta[0]
        study_meta = requests.get(f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/metadata").json()
        assert study_meta[0]["00180050"]["Value"] == [float(ds.SliceThickness)]  # extrapolated: constant in the series
        assert "00280030" not in study_meta[0]
        full = requests.get(f"{_instance_url(server, ds)}/metadata").json()
        assert "00280030" in full[0]  # instance metadata is always Full
    finally:
        server.stop()


def test_frames_of_a_deflated_instance_come_inflated(loaded):
    deflated = next(ds for sop, p, ds in _image_files(loaded) if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99")
    for accept in (STORED_FRAMES, RAW_FRAMES):
        answer = requests.get(f"{_instance_url(loaded, deflated)}/frames/1", headers={"Accept": accept})
        assert answer.status_code == 200, answer.text
        (headers, body), = _parts(answer)
        assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["content-type"]
        frame = deflated.pixel_array
        assert np.array_equal(np.frombuffer(body, dtype=frame.dtype).reshape(frame.shape), frame)


def test_series_bulkdata_is_every_pixel_data_in_metadata_order(loaded):
    ds = loaded.ct[0]
    base = f"{loaded.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    metadata = requests.get(f"{base}/metadata").json()
    answer = requests.get(f"{base}/bulkdata", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["Content-Length"]) == len(answer.content)  # file slices: sized, sent with sendfile
    parts = _parts(answer)
    assert [h["content-location"] for h, _ in parts] == [m["7FE00010"]["BulkDataURI"] for m in metadata]
    assert [body for _, body in parts] == [d.PixelData for d in loaded.ct]


def test_instance_bulkdata_of_compressed_pixels(loaded):
    jpeg = next(ds for _, _, ds in _image_files(loaded) if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50")
    url = f"{_instance_url(loaded, jpeg)}/bulkdata"
    stored = _parts(
        requests.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    )
    frames = list(generate_frames(jpeg.PixelData, number_of_frames=int(jpeg.get("NumberOfFrames", 1) or 1)))
    assert [b.rstrip(b"\0") for _, b in stored] == [f.rstrip(b"\0") for f in frames]
    assert stored[0][0]["content-type"].startswith("image/jpeg")
    (headers, raw), = _parts(requests.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'}))
    assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["content-type"]
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(jpeg.pixel_array.shape), jpeg.pixel_array)


def test_bulkdata_errors(loaded):
    ds = loaded.ct[0]
    url = f"{loaded.dicomweb_url}/studies/{ds.StudyInstanceUID}/bulkdata"
    assert requests.get(url, headers={"Accept": "image/png"}).status_code == 406
    no_pixels = next(d for sop, p in loaded.files.items() if "PixelData" not in (d := _read(p)) and not any(
        e.VR in ("OB", "OW") and len(e.value or b"") > 1024 for e in d.iterall()))
    assert requests.get(f"{_instance_url(loaded, no_pixels)}/bulkdata").status_code == 404
    assert requests.get(f"{loaded.dicomweb_url}/studies/1.2.3/bulkdata").status_code == 404


# -- every byte right, on both mount points ----------------------------------------------------------

BIG_ENDIAN_FILES = ("ExplVR_BigEnd.dcm", "MR_small_bigendian.dcm", "rtdose_expb.dcm", "SC_rgb_small_odd_big_endian.dcm")


def _get(server, url: str, accept: str) -> requests.Response:
    return requests.get(url, headers={**server.headers, "Accept": accept}, timeout=120)


def _native_pixels(instance) -> bytes:
    ds = instance.ds
    return native_layout(ds, ds.pixel_array).tobytes()


@pytest.mark.parametrize("name", BIG_ENDIAN_FILES)
def test_big_endian_pixel_data_comes_little_endian_everywhere(server, name):
    """Frames as octet-stream, the PixelData BulkDataURI and Retrieve Bulkdata at every level: the
    little-endian native bytes PS3.18 asks for, laid out as the metadata says."""
    instance = store_bundled(server)[name]
    ds, url = instance.ds, instance.url(server)
    native = _native_pixels(instance)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    numbers = ",".join(str(n) for n in range(1, count + 1))
    frames = _get(server, f"{url}/frames/{numbers}", RAW_FRAMES)
    assert frames.status_code == 200, frames.text
    assert b"".join(body for _, body in _parts(frames)) == native
    single = _get(server, f"{url}/frames/1", "application/octet-stream")
    assert single.status_code == 200 and single.content == native[:len(native) // count]
    metadata = _get(server, f"{url}/metadata", "application/dicom+json").json()[0]
    bulk = _get(server, metadata["7FE00010"]["BulkDataURI"], "application/octet-stream")
    assert bulk.status_code == 200 and bulk.content[:len(native)] == native
    study = f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}"
    for level in (f"{study}/bulkdata", f"{study}/series/{ds.SeriesInstanceUID}/bulkdata", f"{url}/bulkdata"):
        parts = dict((h["content-location"], body) for h, body in _parts(_get(server, level, RAW_FRAMES)))
        assert parts[metadata["7FE00010"]["BulkDataURI"]][:len(native)] == native, level


def test_big_endian_frames_with_dicomweb_client(server):
    """The dicomweb-client library, an independent reader, gets the same little-endian frames."""
    from dicomweb_client.api import DICOMwebClient

    instance = store_bundled(server)["MR_small_bigendian.dcm"]
    ds = instance.ds
    client = DICOMwebClient(url=server.dicomweb_url, headers=dict(server.headers))
    (frame,) = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1],
                                               media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert frame == _native_pixels(instance)


def test_metadata_of_every_bundled_file_equals_pydicom(server):
    """Every attribute of every stored bundled file, with its VR and value; each BulkDataURI resolves
    to the instance's bytes (little endian); no group length; trailing padding included."""
    bundled = store_bundled(server)
    assert len(bundled) > 120
    problems = {}
    for name, instance in bundled.items():
        answer = _get(server, f"{instance.url(server)}/metadata", "application/dicom+json")
        assert answer.status_code == 200, (name, answer.text)
        (meta,) = answer.json()
        encapsulated = instance.ds.file_meta.TransferSyntaxUID.is_encapsulated

        def resolve(uri, elem, encapsulated=encapsulated):
            if elem.tag == 0x7FE00010 and encapsulated:
                return None  # compressed pixel data is its frames (test_frames_as_stored_equal_pydicoms_frames)
            got = _get(server, uri, "application/octet-stream")
            assert got.status_code == 200, (uri, got.text)
            return got.content

        found = metadata_problems(instance.ds, meta, resolve=resolve)
        if found:
            problems[name] = found
    assert problems == {}
    implicit = bundled["MR_small_implicit.dcm"]
    meta = _get(server, f"{implicit.url(server)}/metadata", "application/dicom+json").json()[0]
    assert meta["00280106"]["vr"] == meta["00280107"]["vr"] == "SS"  # Pixel Representation 1
    ct = bundled["CT_small.dcm"]
    meta = _get(server, f"{ct.url(server)}/metadata", "application/dicom+json").json()[0]
    assert "FFFCFFFC" in meta and "BulkDataURI" in meta["FFFCFFFC"]
    assert not [k for k in meta if k.endswith("0000")]


JPEG_LOSSY = "JPEG-lossy.dcm"  # 12-bit JPEG Extended whose scan header pylibjpeg-libjpeg refuses as written


def test_12_bit_lossy_jpeg_is_decoded(server):
    instance = store_bundled(server)[JPEG_LOSSY]
    reference = _read("JPGExtended.dcm").pixel_array  # pydicom's fixed copy of the same image
    url = instance.url(server)
    answer = _get(server, url, 'multipart/related; type="application/dicom"')
    assert answer.status_code == 200, answer.text
    (_headers, body), = _parts(answer)
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(got.pixel_array, reference)
    frame = _get(server, f"{url}/frames/1", "application/octet-stream")
    assert frame.status_code == 200, frame.text
    assert np.array_equal(np.frombuffer(frame.content, "<u2").reshape(reference.shape), reference)
    assert _get(server, f"{url}/rendered", "image/png").status_code == 200


def test_unacceptable_transcodes_say_why(server):
    bundled = store_bundled(server)
    cases = [
        ("CT_small.dcm", "1.2.840.10008.1.2.4.50", "8-bit"),  # 16-bit signed into JPEG baseline
        ("SC_rgb_small_odd.dcm", "1.2.840.10008.1.2.4.90", "32x32"),  # too small for OpenJPEG
        ("SC_rgb_rle_32bit.dcm", "1.2.840.10008.1.2.4.80", "JPEG-LS"),  # 32 bits: outside JPEG-LS
    ]
    for name, target, fragment in cases:
        answer = _get(server, bundled[name].url(server), f'multipart/related; type="application/dicom"; transfer-syntax={target}')
        assert answer.status_code == 406, (name, target, answer.status_code)
        assert fragment in answer.json()["message"], answer.json()["message"]
    # No pixel data: a compressed syntax only labels the encoding, the attributes are the same bytes.
    report = bundled["rtplan.dcm"]
    answer = _get(
        server, report.url(server), 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    )
    assert answer.status_code == 200, answer.text
    (_, body), = _parts(answer)
    assert pydicom.dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"


_OFFERED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91"]


def _sweep_requests(server, instance) -> list[tuple[str, str]]:
    from dicomweb_nb.dicom.mediatypes import TRANSFER_SYNTAX_MEDIA_TYPES

    url = instance.url(server)
    out = [(url, 'multipart/related; type="application/dicom"'), (url, ANY_DICOM),
           (f"{url}/frames/1", RAW_FRAMES), (f"{url}/frames/1", STORED_FRAMES), (f"{url}/frames/1", "*/*"),
           (f"{url}/bulkdata", RAW_FRAMES), (f"{url}/bulk/7FE00010", "*/*"), (f"{url}/thumbnail", "image/jpeg")]
    for ts in _OFFERED:
        out.append((url, f'multipart/related; type="application/dicom"; transfer-syntax={ts}'))
        part = TRANSFER_SYNTAX_MEDIA_TYPES.get(ts, "application/octet-stream")
        out.append((f"{url}/frames/1", f'multipart/related; type="{part}"; transfer-syntax={ts}'))
    for media in ("image/jpeg", "image/png", "image/gif"):
        out.append((f"{url}/rendered", media))
    return out


def test_no_transcode_of_any_bundled_file_answers_5xx(server):
    """Every bundled file x every transfer syntax we offer (instance, frames) and every rendering:
    an answer or a 406/404 with a reason, never a 5xx; two requests at a time, as viewers send them."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [job for instance in store_bundled(server).values() for job in _sweep_requests(server, instance)]

    def run(job):
        url, accept = job
        answer = _get(server, url, accept)
        body = answer.content  # read it all: a cut answer raises here
        return url, accept, answer.status_code, body[:300] if answer.status_code >= 400 else b""

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, jobs))
    failures = [r for r in results if r[2] >= 500 or r[2] not in (200, 206, 404, 406)]
    assert failures == []
    assert all(b"message" in r[3] for r in results if r[2] in (404, 406))
    assert sum(r[2] == 200 for r in results) > len(results) // 2


def test_an_instance_no_codec_can_read_is_a_406_alone_and_cuts_a_series_visibly(server):
    """Data no decoder reads: retrieving it alone is a 406 saying so; as the second instance of a series
    the answer has begun, so the connection ends without the closing chunk, and the client knows the
    answer is broken (before, it got a complete-looking multipart without that instance)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    from dicomweb_nb.dicom.multipart import encode_multipart

    # First a JPEG instance that decodes to 7 MB (more than one block of the answer), then one that does not.
    good = _read("examples_ybr_color.dcm")
    good.StudyInstanceUID, good.SeriesInstanceUID, good.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    good.file_meta.MediaStorageSOPInstanceUID = good.SOPInstanceUID
    good.InstanceNumber = 1
    bad = copy.deepcopy(_read("SC_rgb_jpeg_dcmtk.dcm"))
    bad.StudyInstanceUID, bad.SeriesInstanceUID = good.StudyInstanceUID, good.SeriesInstanceUID
    bad.SOPInstanceUID = bad.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    bad.InstanceNumber = 2
    bad.PixelData = encapsulate([b"\xff\xd8\xff\xdb\x00\x04" + bytes(200) + b"\xff\xd9"])  # a JPEG of nothing
    blobs = []
    for ds in (good, bad):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        blobs.append(buffer.getvalue())
    body, boundary = encode_multipart([("application/dicom", b) for b in blobs])
    stored = requests.post(
        f"{server.dicomweb_url}/studies",
        data=body,
        timeout=60,
        headers={**server.headers, "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
    )
    assert stored.status_code == 200, stored.text
    series = f"{server.dicomweb_url}/studies/{good.StudyInstanceUID}/series/{good.SeriesInstanceUID}"
    alone = _get(server, f"{series}/instances/{bad.SOPInstanceUID}", 'multipart/related; type="application/dicom"')
    assert alone.status_code == 406 and "cannot" in alone.json()["message"]
    frame = _get(server, f"{series}/instances/{bad.SOPInstanceUID}/frames/1", "application/octet-stream")
    assert frame.status_code == 406 and "JPEG" in frame.json()["message"]
    as_stored = _get(server, series, ANY_DICOM)  # no decoding needed: both sent as stored
    assert as_stored.status_code == 200 and len(_parts(as_stored)) == 2
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _get(server, series, 'multipart/related; type="application/dicom"')

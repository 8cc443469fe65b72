"""Rendered resources, thumbnails and WADO-URI over HTTP, with windowing checked on known pixels."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image

from dicomweb_nb import samples
from dicomweb_nb.dicom.mediatypes import parse_media_type
from dicomweb_nb.dicom.multipart import encode_multipart, iter_parts


def _ramp_dataset(series_uid=None, study_uid=None, frames: int = 1):
    """A 64x32 MONOCHROME2 image whose column x holds stored value 40*x (0..2520), slope 1, intercept -1024."""
    ds = samples.generate_ct_series(1, rows=32, columns=64, study_uid=study_uid, series_uid=series_uid, patient_id="RAMP")[0]
    ramp = (np.arange(64, dtype=np.uint16) * 40)[None, :].repeat(32, axis=0)
    ds.BitsStored, ds.HighBit = 16, 15
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.PixelData = np.stack([ramp + k for k in range(frames)]).tobytes()
    else:
        ds.PixelData = ramp.tobytes()
    return ds


@pytest.fixture(scope="module")
def rendered_server(tmp_path_factory, store_backend):
    from tests.fixtures.ourserver import start_standalone

    server = start_standalone(tmp_path_factory.mktemp("rendered"), backend=store_backend)
    ramp = _ramp_dataset()
    multi = _ramp_dataset(study_uid=ramp.StudyInstanceUID, frames=4)
    mono1 = _ramp_dataset(study_uid=ramp.StudyInstanceUID)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    series = samples.generate_ct_series(5, rows=48, columns=48, patient_id="RENDER-CT")
    body, boundary = encode_multipart([("application/dicom", samples.dataset_bytes(d)) for d in [ramp, multi, mono1, *series]])
    requests.post(f"{server.dicomweb_url}/studies", data=body,
                  headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"}).raise_for_status()
    server.ramp, server.multi, server.mono1, server.series = ramp, multi, mono1, series
    yield server
    server.stop()


def _url(server, ds) -> str:
    return f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _image(answer: requests.Response) -> Image.Image:
    assert answer.status_code == 200, answer.text
    return Image.open(io.BytesIO(answer.content))


def test_window_maps_known_values_linearly(rendered_server):
    # HU at column x is 40*x - 1024; window centre 0, width 1000 (LINEAR, PS3.3 C.11.2.1.2.1).
    png = _image(requests.get(f"{_url(rendered_server, rendered_server.ramp)}/rendered",
                              params={"window": "0,1000,linear"}, headers={"Accept": "image/png"}))
    assert png.size == (64, 32)
    row = np.asarray(png.convert("L"))[10]
    for x in (0, 10, 20, 25, 30, 40, 63):
        hu = 40 * x - 1024
        c, w = 0 - 0.5, 1000 - 1
        expected = 0 if hu <= c - w / 2 else 255 if hu > c + w / 2 else ((hu - c) / w + 0.5) * 255
        assert abs(int(row[x]) - expected) <= 1, (x, row[x], expected)


def test_default_window_comes_from_the_dataset(rendered_server):
    # WindowCenter 40 / WindowWidth 400 from the generated dataset.
    png = _image(requests.get(f"{_url(rendered_server, rendered_server.ramp)}/rendered", headers={"Accept": "image/png"}))
    row = np.asarray(png.convert("L"))[0]
    assert row[20] == 0  # -224 HU, below 40 - 200
    assert row[40] == 255  # 576 HU, above 40 + 200
    assert 0 < row[27] < 255  # 56 HU, inside


def test_monochrome1_is_inverted(rendered_server):
    normal = np.asarray(_image(requests.get(f"{_url(rendered_server, rendered_server.ramp)}/rendered",
                                            params={"window": "0,1000"}, headers={"Accept": "image/png"})).convert("L"))
    inverted = np.asarray(_image(requests.get(f"{_url(rendered_server, rendered_server.mono1)}/rendered",
                                              params={"window": "0,1000"}, headers={"Accept": "image/png"})).convert("L"))
    assert np.abs(normal.astype(int) + inverted.astype(int) - 255).max() <= 1


def test_viewport_keeps_the_aspect_ratio(rendered_server):
    jpeg = _image(requests.get(f"{_url(rendered_server, rendered_server.ramp)}/rendered",
                               params={"viewport": "32,32", "quality": "80"}, headers={"Accept": "image/jpeg"}))
    assert jpeg.format == "JPEG" and jpeg.size == (32, 16)


def test_formats_and_levels(rendered_server):
    ramp, multi, series = rendered_server.ramp, rendered_server.multi, rendered_server.series
    base = rendered_server.dicomweb_url
    gif = _image(requests.get(f"{_url(rendered_server, multi)}/rendered", headers={"Accept": "image/gif"}))
    assert gif.format == "GIF" and getattr(gif, "n_frames", 1) == 4
    frame = _image(requests.get(f"{_url(rendered_server, multi)}/frames/3/rendered", headers={"Accept": "image/png"}))
    assert frame.size == (64, 32)
    several = requests.get(f"{_url(rendered_server, multi)}/frames/1,2/rendered", headers={"Accept": "image/jpeg"})
    ctype = parse_media_type(several.headers["Content-Type"])
    assert ctype.type == "multipart/related" and ctype.params["type"] == "image/jpeg"
    assert len(list(iter_parts([several.content], ctype.params["boundary"]))) == 2
    thumb = _image(requests.get(f"{base}/studies/{series[0].StudyInstanceUID}/thumbnail"))
    assert max(thumb.size) <= 128 and thumb.format == "JPEG"
    series_thumb = _image(
        requests.get(
            f"{base}/studies/{series[0].StudyInstanceUID}/series/{series[0].SeriesInstanceUID}/thumbnail",
            headers={"Accept": "image/png"},
        )
    )
    assert series_thumb.format == "PNG"
    whole = requests.get(f"{base}/studies/{series[0].StudyInstanceUID}/series/{series[0].SeriesInstanceUID}/rendered")
    ctype = parse_media_type(whole.headers["Content-Type"])
    assert len(list(iter_parts([whole.content], ctype.params["boundary"]))) == len(series)
    by_query = _image(requests.get(f"{_url(rendered_server, ramp)}/rendered", params={"accept": "image/png"}))
    assert by_query.format == "PNG"


def test_rendered_errors(rendered_server):
    url = f"{_url(rendered_server, rendered_server.ramp)}/rendered"
    for params, fragment in (({"window": "40"}, "window"), ({"window": "40,0,linear"}, "window"),
                             ({"viewport": "0,10"}, "viewport"), ({"quality": "0"}, "quality"),
                             ({"window": "1,2,cubic"}, "window")):
        answer = requests.get(url, params=params)
        assert answer.status_code == 400, params
        assert fragment in answer.json()["message"]
    assert requests.get(url, headers={"Accept": "image/tiff"}).status_code == 406
    assert requests.get(f"{_url(rendered_server, rendered_server.multi)}/frames/9/rendered").status_code == 404


def test_wado_uri(rendered_server):
    ramp = rendered_server.ramp
    wado = rendered_server.url + "/wado"
    full = {"requestType": "WADO", "studyUID": ramp.StudyInstanceUID, "seriesUID": ramp.SeriesInstanceUID,
            "objectUID": ramp.SOPInstanceUID}
    jpeg = _image(requests.get(wado, params=full))
    assert jpeg.format == "JPEG" and jpeg.size == (64, 32)
    png = _image(requests.get(wado, params={**full, "contentType": "image/png", "windowCenter": "0", "windowWidth": "1000",
                                            "rows": "16", "columns": "16"}))
    assert png.size == (16, 8)
    region = _image(requests.get(wado, params={**full, "contentType": "image/png", "region": "0,0,0.5,1"}))
    assert region.size == (32, 32) or region.size[0] * 2 == 64
    dicom = requests.get(
        wado, params={"requestType": "WADO", "objectUID": ramp.SOPInstanceUID, "contentType": "application/dicom"}
    )
    assert dicom.status_code == 200 and dicom.content == samples.dataset_bytes(ramp)
    assert requests.get(wado, params={**full, "objectUID": "1.2.3"}).status_code == 404
    assert requests.get(wado, params={**full, "seriesUID": "1.2.3"}).status_code == 404
    for bad in ({"objectUID": ramp.SOPInstanceUID}, {**full, "requestType": "WADO-RS"}, {**full, "windowCenter": "1"},
                {**full, "frameNumber": "0"}, {**full, "objectUID": "x.y"}):
        answer = requests.get(wado, params=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["message"]
    assert requests.get(wado, params={**full, "contentType": "text/html"}).status_code == 406


def test_cors_for_browser_viewers(tmp_path):
    from tests.fixtures.ourserver import start_standalone

    server = start_standalone(tmp_path, None, "-c", 'cors_origins=["http://viewer.example"]')
    try:
        url = f"{server.dicomweb_url}/studies"
        preflight = requests.options(url, headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "accept, authorization"})
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
        assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
        simple = requests.get(url, headers={"Origin": "http://viewer.example"})
        assert simple.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
        assert "Warning" in simple.headers["Access-Control-Expose-Headers"]
        other = requests.get(url, headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        server.stop()


def test_ohif_style_requests(rendered_server):
    """The calls OHIF v3 makes when opening a study: QIDO with includefield, metadata, frames."""
    ds = rendered_server.series[0]
    base = rendered_server.dicomweb_url
    studies = requests.get(f"{base}/studies?limit=101&offset=0&fuzzymatching=false"
                           "&includefield=00081030%2C00080060&StudyInstanceUID=" + ds.StudyInstanceUID,
                           headers={"Accept": "application/dicom+json"}).json()
    assert studies[0]["00081030"]["Value"] == [ds.StudyDescription]
    series = requests.get(f"{base}/studies/{ds.StudyInstanceUID}/series?includefield=0008103E",
                          headers={"Accept": "application/dicom+json"}).json()
    assert series[0]["0008103E"]["Value"] == [ds.SeriesDescription]
    meta = requests.get(f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata",
                        headers={"Accept": "application/dicom+json"}).json()
    assert len(meta) == len(rendered_server.series)
    frame = requests.get(
        f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1",
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
    )
    ctype = parse_media_type(frame.headers["Content-Type"])
    (_, body), = iter_parts([frame.content], ctype.params["boundary"])
    assert body == ds.PixelData


# -- WADO-URI and rendering parameters: honoured or refused, never ignored in silence (both mounts) ----

from .conftest import store_bundled, unique_patient  # noqa: E402

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _wado(server, **params) -> requests.Response:
    return requests.get(f"{server.url}/wado", params={"requestType": "WADO", **params}, headers=server.headers, timeout=60)


def _stow(server, datasets) -> None:
    body, boundary = encode_multipart([("application/dicom", samples.dataset_bytes(d)) for d in datasets])
    answer = requests.post(
        f"{server.dicomweb_url}/studies",
        data=body,
        timeout=60,
        headers={**server.headers, "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture
def dark(server):
    """A black 128x128 image with a Latin-1 patient name: any annotation pixel shows."""
    ds = samples.generate_ct_series(1, rows=128, columns=128, patient_id=unique_patient("DARK"))[0]
    ds.PixelData = np.zeros((128, 128), np.uint16).tobytes()
    ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 0, 1000, 100  # every pixel below the window: black
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Hans"
    _stow(server, [ds])
    return ds


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"])
def test_wado_uri_without_transfer_syntax_answers_explicit_vr_little_endian(server, name):
    instance = store_bundled(server)[name]
    ds = instance.ds
    answer = _wado(server, objectUID=ds.SOPInstanceUID, contentType="application/dicom")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    got = pydicom.dcmread(io.BytesIO(answer.content))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE and got.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(got.pixel_array, ds.pixel_array)
    stored = ds.file_meta.TransferSyntaxUID
    as_stored = _wado(server, objectUID=ds.SOPInstanceUID, contentType="application/dicom", transferSyntax=stored)
    assert as_stored.status_code == 200 and as_stored.content == instance.data
    assert as_stored.headers["Content-Type"] == f"application/dicom; transfer-syntax={stored}"


def test_wado_uri_transfer_syntax_is_honoured_or_refused_with_the_reason(server):
    ds = store_bundled(server)["MR_small.dcm"].ds
    lossless = _wado(
        server, objectUID=ds.SOPInstanceUID, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.80"
    )
    assert lossless.status_code == 200, lossless.text
    got = pydicom.dcmread(io.BytesIO(lossless.content))
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80" and np.array_equal(got.pixel_array, ds.pixel_array)
    refused = _wado(server, objectUID=ds.SOPInstanceUID, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50")
    assert refused.status_code == 406 and "8-bit" in refused.json()["message"]
    unknown = _wado(server, objectUID=ds.SOPInstanceUID, contentType="application/dicom", transferSyntax="1.2.3.4")
    assert unknown.status_code == 406 and "1.2.3.4" in unknown.json()["message"]


def test_wado_uri_anonymize_never_sends_the_patient(server, dark):
    for content_type in ("application/dicom", "image/jpeg"):
        answer = _wado(server, objectUID=dark.SOPInstanceUID, contentType=content_type, anonymize="yes")
        assert answer.status_code == 200, answer.text
        assert b"M\xfcller" not in answer.content and "M\u00fcller".encode() not in answer.content
    drawn = _wado(server, objectUID=dark.SOPInstanceUID, contentType="image/png", anonymize="yes", annotation="patient")
    assert drawn.status_code == 400 and "annotation=patient" in drawn.json()["message"]
    assert _wado(server, objectUID=dark.SOPInstanceUID, anonymize="no").status_code == 400  # only "yes" is defined


def test_wado_uri_refuses_presentation_states(server, dark):
    answer = _wado(server, objectUID=dark.SOPInstanceUID, presentationUID="1.2.3", presentationSeriesUID="1.2.4")
    assert answer.status_code == 400 and "presentation state" in answer.json()["message"]


def test_wado_uri_charset_is_the_instances_or_refused(server, dark):
    def get(charset):
        return _wado(server, objectUID=dark.SOPInstanceUID, contentType="application/dicom", charset=charset)

    for accepted in ("ISO-8859-1", "utf-8, ISO-8859-1;q=0.5", "*", "latin1"):
        answer = get(accepted)
        assert answer.status_code == 200, accepted
        assert b"M\xfcller" in answer.content
    refused = get("UTF-8")
    assert refused.status_code == 406 and "iso8859-1" in refused.json()["message"]
    assert get("no-such-charset").status_code == 200  # unknown names are ignored (PS3.18 8.8.4)
    ascii_only = store_bundled(server)["MR_small.dcm"].ds  # no Specific Character Set: ASCII, valid UTF-8
    assert _wado(server, objectUID=ascii_only.SOPInstanceUID, contentType="application/dicom", charset="UTF-8").status_code == 200
    japanese = store_bundled(server)["J2K_pixelrep_mismatch.dcm"].ds  # ISO 2022 IR 13 + IR 87
    assert _wado(server, objectUID=japanese.SOPInstanceUID, contentType="application/dicom", charset="UTF-8").status_code == 406
    assert _wado(server, objectUID=japanese.SOPInstanceUID, contentType="application/dicom",
                 charset="ISO-2022-JP, Shift_JIS").status_code == 200


def test_frame_number_does_not_apply_to_application_dicom(server, dark):
    answer = _wado(server, objectUID=dark.SOPInstanceUID, contentType="application/dicom", frameNumber="1")
    assert answer.status_code == 400 and "frameNumber" in answer.json()["message"]


def _bright(answer: requests.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    return np.asarray(Image.open(io.BytesIO(answer.content)).convert("L")) > 128


def test_annotation_is_burned_in(server, dark):
    plain = _bright(_wado(server, objectUID=dark.SOPInstanceUID, contentType="image/png"))
    assert not plain.any()
    for annotation in ("patient", "technique", "patient,technique"):
        annotated = _bright(_wado(server, objectUID=dark.SOPInstanceUID, contentType="image/png", annotation=annotation))
        assert annotated[:48, :64].sum() > 20, annotation  # text in the top left corner
        assert not annotated[100:, :].any(), annotation  # the rest of the image untouched
    both = _bright(_wado(server, objectUID=dark.SOPInstanceUID, contentType="image/png", annotation="patient,technique"))
    patient = _bright(_wado(server, objectUID=dark.SOPInstanceUID, contentType="image/png", annotation="patient"))
    assert both.sum() > patient.sum()
    url = f"{server.dicomweb_url}/studies/{dark.StudyInstanceUID}/series/{dark.SeriesInstanceUID}/instances/{dark.SOPInstanceUID}"
    rendered = _bright(requests.get(f"{url}/rendered", params={"annotation": "patient"},
                                    headers={**server.headers, "Accept": "image/png"}, timeout=60))
    assert np.array_equal(rendered, patient)
    assert (
        requests.get(f"{url}/rendered", params={"annotation": "everything"}, headers=server.headers, timeout=60).status_code
        == 400
    )


def test_icc_profile_no_is_honoured_and_the_others_refused(server, dark):
    url = f"{server.dicomweb_url}/studies/{dark.StudyInstanceUID}/series/{dark.SeriesInstanceUID}/instances/{dark.SOPInstanceUID}"
    plain = requests.get(
        f"{url}/rendered", params={"iccprofile": "no"}, headers={**server.headers, "Accept": "image/png"}, timeout=60
    )
    assert plain.status_code == 200 and "icc_profile" not in Image.open(io.BytesIO(plain.content)).info
    for value in ("yes", "srgb", "adobergb"):
        answer = requests.get(f"{url}/rendered", params={"iccprofile": value}, headers=server.headers, timeout=60)
        assert answer.status_code == 406 and "ICC profile" in answer.json()["message"], value


def test_unknown_query_parameters_are_ignored_with_a_warning(server, dark):
    url = f"{server.dicomweb_url}/studies/{dark.StudyInstanceUID}/series/{dark.SeriesInstanceUID}/instances/{dark.SOPInstanceUID}"
    typo = requests.get(f"{url}/rendered", params={"windw": "40,400"}, headers=server.headers, timeout=60)
    assert typo.status_code == 200 and "windw" in typo.headers["Warning"] and "ignored" in typo.headers["Warning"]
    known = requests.get(f"{url}/rendered", params={"window": "40,400", "quality": "80"}, headers=server.headers, timeout=60)
    assert known.status_code == 200 and "Warning" not in known.headers
    for path in ("", "/metadata", "/frames/1", "/bulkdata", "/thumbnail"):
        answer = requests.get(f"{url}{path}", params={"nosuch": "1"}, headers=server.headers, timeout=60)
        assert answer.status_code == 200 and "nosuch" in answer.headers.get("Warning", ""), path
    wado = _wado(server, objectUID=dark.SOPInstanceUID, nosuch="1")
    assert wado.status_code == 200 and "nosuch" in wado.headers["Warning"]
    assert "Warning" not in _wado(server, objectUID=dark.SOPInstanceUID, rows="32").headers

"""Shared by the server tests: both mount points, raw STOW requests, QIDO helpers."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

import pytest
import requests

from dicomweb_nb import samples

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
_patients = itertools.count(1)


@pytest.fixture(scope="session")
def slow_remote(tmp_path_factory):
    """Another ``dicomweb-nb serve`` holding a 40-instance study: slowed by the proxy's ``"Debug"``
    (50 ms per instance), a retrieve of it lasts seconds. Returns (server, study)."""
    from .proxy_helpers import make_study, serve_studies

    folder = tmp_path_factory.mktemp("slow-remote")
    study = make_study(folder / "data", slices=40, patient="Debug^Remote")
    remote = serve_studies(folder, study)
    yield remote, study
    remote.stop()


@pytest.fixture(autouse=True)
def _on_every_store_backend(use_store_backend):
    """Every server test runs on each store backend (SQLite+folder, PostgreSQL+folder, PostgreSQL+S3)."""


@pytest.fixture(params=["standalone", "jupyter"])
def server(request):
    """Each test runs against ``dicomweb-nb serve`` and against the jupyter-server extension."""
    return request.getfixturevalue("our_server" if request.param == "standalone" else "jupyter_dicomweb")


def unique_patient(prefix: str = "P") -> str:
    """A PatientID no other test uses, so tests sharing a server find only their own studies."""
    return f"{prefix}-{os.getpid()}-{next(_patients):04d}"


def small_series(n: int = 2, **kwargs):
    kwargs.setdefault("patient_id", unique_patient())
    return samples.generate_ct_series(n, rows=8, columns=8, **kwargs)


def multipart_body(parts: Iterable[bytes | tuple[str | None, bytes]], boundary: str = "dicomweb-nb-test-boundary") -> bytes:
    """A multipart/related body by hand: ``parts`` are contents (sent as application/dicom) or (content type, content)."""
    out = bytearray()
    for part in parts:
        ctype, content = part if isinstance(part, tuple) else ("application/dicom", part)
        out += f"--{boundary}\r\n".encode("latin-1")
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode("latin-1")
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode("latin-1")
    return bytes(out)


def stow(
    server, body, content_type: str | None = None, *, study: str | None = None, headers=None, boundary="dicomweb-nb-test-boundary"
):
    if content_type is None:
        content_type = f"{DICOM_MULTIPART}; boundary={boundary}"
    url = f"{server.dicomweb_url}/studies" + (f"/{study}" if study else "")
    all_headers = {**server.headers, **({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    return requests.post(url, data=body, headers=all_headers, timeout=60)


def stow_datasets(server, datasets, *, study: str | None = None) -> int:
    """STOW-RS of pydicom datasets in one request, asserting success; returns the size of the body sent."""
    from dicomweb_nb.dicom.multipart import encode_multipart

    body, boundary = encode_multipart([("application/dicom", samples.dataset_bytes(ds)) for ds in datasets])
    answer = stow(server, body, boundary=boundary, study=study)
    assert answer.status_code == 200, answer.text
    return len(body)


def qido(server, path: str = "/studies", params=None, headers=None, **kwargs) -> requests.Response:
    return requests.get(
        f"{server.dicomweb_url}{path}", params=params, headers={**server.headers, **(headers or {})}, timeout=60, **kwargs
    )


def value(obj: dict, tag: str):
    elem = obj.get(tag) or {}
    vals = elem.get("Value")
    return vals[0] if vals else None


def referenced_sops(answer: dict) -> list[str]:
    return [value(item, "00081155") for item in answer.get("00081199", {}).get("Value", [])]


def failed_items(answer: dict) -> list[dict]:
    return answer.get("00081198", {}).get("Value", [])


_BUNDLED: dict[str, dict[str, BundledInstance]] = {}


class BundledInstance:
    """A bundled pydicom file as stored on a test server: under new UIDs (pydicom ships one instance
    in many transfer syntaxes under one SOP Instance UID), every other byte of its dataset kept."""

    def __init__(self, name: str, data: bytes):
        import io
        import warnings

        import pydicom

        self.name = name
        self.data = data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.ds = pydicom.dcmread(io.BytesIO(data))

    def url(self, server) -> str:
        ds = self.ds
        return f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def store_bundled(server) -> dict[str, BundledInstance]:
    """Every bundled pydicom file pydicom can write back, stored once per server (by STOW-RS)."""
    key = server.dicomweb_url
    if key in _BUNDLED:
        return _BUNDLED[key]
    import io
    import warnings

    import pydicom
    from pydicom.uid import generate_uid

    from dicomweb_nb.dicom.multipart import encode_multipart

    found: dict[str, BundledInstance] = {}
    for path in samples.pydicom_test_files(distinct_sops=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = generate_uid()
            if "MediaStorageSOPInstanceUID" in ds.file_meta:
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            buffer = io.BytesIO()
            try:
                ds.save_as(buffer, enforce_file_format=True)
            except Exception:  # noqa: BLE001 - a few deliberately broken files cannot be written back
                continue
        found[path.name] = BundledInstance(path.name, buffer.getvalue())
    body, boundary = encode_multipart([("application/dicom", b.data) for b in found.values()])
    answer = requests.post(
        f"{server.dicomweb_url}/studies",
        data=body,
        timeout=300,
        headers={**server.headers, "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
    )
    assert answer.status_code in (200, 202), answer.text
    stored = {value(item, "00081155") for item in answer.json().get("00081199", {}).get("Value", [])}
    _BUNDLED[key] = {name: b for name, b in found.items() if str(b.ds.SOPInstanceUID) in stored}
    return _BUNDLED[key]

"""Shared by the server tests: both mount points, raw STOW requests, QIDO helpers."""

from __future__ import annotations

import itertools
import os
from typing import Iterable

import pytest
import requests

from dicomweb_nb import samples

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
_patients = itertools.count(1)


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


def stow(server, body, content_type: str | None = None, *, study: str | None = None, headers=None, boundary="dicomweb-nb-test-boundary"):
    if content_type is None:
        content_type = f"{DICOM_MULTIPART}; boundary={boundary}"
    url = f"{server.dicomweb_url}/studies" + (f"/{study}" if study else "")
    all_headers = {**server.headers, **({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    return requests.post(url, data=body, headers=all_headers, timeout=60)


def qido(server, path: str = "/studies", params=None, headers=None, **kwargs) -> requests.Response:
    return requests.get(f"{server.dicomweb_url}{path}", params=params, headers={**server.headers, **(headers or {})}, timeout=60, **kwargs)


def value(obj: dict, tag: str):
    elem = obj.get(tag) or {}
    vals = elem.get("Value")
    return vals[0] if vals else None


def referenced_sops(answer: dict) -> list[str]:
    return [value(item, "00081155") for item in answer.get("00081199", {}).get("Value", [])]


def failed_items(answer: dict) -> list[dict]:
    return answer.get("00081198", {}).get("Value", [])

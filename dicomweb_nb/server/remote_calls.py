"""The Orthanc DICOMweb client's ``/servers/{name}/qido`` and ``/servers/{name}/delete`` (plugin 1.0+).

``POST {root}/servers/{name}/qido`` with ``{"Uri", "Arguments"?, "HttpHeaders"?}`` (as ``/get``) runs a
QIDO-RS search on the remote and answers its matches in Orthanc's simplified form: one object per
match, each attribute by tag (``"0010,0010"`` written ``"00100010"`` as in DICOM JSON) as
``{"Group", "Element", "Name", "vr", "Value"}`` where ``Name`` is the keyword and ``Value`` the
first value (a person name's alphabetic group; absent when the attribute is empty).

``POST {root}/servers/{name}/delete`` with ``{"Level": "Study" | "Series" | "Instance",
"StudyInstanceUID", "SeriesInstanceUID"?, "SOPInstanceUID"?}`` sends ``DELETE`` of that resource to
the remote, and answers ``{}``. As in Orthanc the server's definition must say ``"HasDelete": true``
(a 400 otherwise): deleting elsewhere is something its administrator allows per server.

A remote that fails answers 502 (504 for a timeout) with ``RemoteStatus`` / ``RemoteMessage``, as the
other proxy calls (``proxy.py``); one that answers 404 (no such study, series or instance there) is a
404 here too, as from Orthanc.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import keyword_for_tag

from ..dicom.mediatypes import DICOM_JSON
from ..errors import DicomWebError
from .base import ApiError
from .proxy import ProxyError, _ProxyBase, remote_url
from .remotes import ServerDefinitionError, check_header_map
from .transfers import remote_failure

__all__ = ["ServerQidoMixin", "ServerDeleteMixin", "simplified_match"]

_LEVELS = {"study": 1, "series": 2, "instance": 3}
_UID_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def simplified_match(match: Any) -> dict[str, Any]:
    """One QIDO-RS match (DICOM JSON) in the form of Orthanc's ``/qido``."""
    if not isinstance(match, dict):
        raise ValueError("a match is not a JSON object")
    out: dict[str, Any] = {}
    for key, element in match.items():
        try:
            tag = int(key, 16)
        except ValueError:
            continue  # not a tag: Orthanc leaves such members out too
        if len(key) != 8 or not isinstance(element, dict) or not isinstance(element.get("vr"), str):
            raise ValueError(f"attribute {key!r} is not a DICOM JSON element")
        item: dict[str, Any] = {"Group": tag >> 16, "Element": tag & 0xFFFF}
        name = keyword_for_tag(tag)
        if name:
            item["Name"] = name
        item["vr"] = element["vr"]
        values = element.get("Value")
        if isinstance(values, list) and values:
            first = values[0]
            if isinstance(first, dict):
                if isinstance(first.get("Alphabetic"), str):
                    item["Value"] = first["Alphabetic"]
            elif isinstance(first, (str, int, float)) and not isinstance(first, bool):
                item["Value"] = first
        out[key] = item
    return out


def _failure(exc: DicomWebError, name: str, action: str) -> ProxyError:
    failure = remote_failure(exc, name, action=action)
    return ProxyError(404 if exc.status == 404 else failure.http_status, failure.message, **failure.extra)


def _headers(body: dict[str, Any]) -> dict[str, str]:
    try:
        return check_header_map(body.get("HttpHeaders"))
    except ServerDefinitionError as exc:
        raise ProxyError(400, str(exc), Field="HttpHeaders") from None


class ServerQidoMixin(_ProxyBase):
    """``POST {root}/servers/{name}/qido``."""

    async def post(self, name: str) -> None:
        entry = await self.run_blocking(self.entry, name)
        body = self.json_body()
        url = remote_url(entry.url, body.get("Uri"), body.get("Arguments"))
        headers = _headers(body)
        accept = next((v for k, v in headers.items() if k.lower() == "accept"), DICOM_JSON)
        headers = {k: v for k, v in headers.items() if k.lower() != "accept"}
        source = await self.run_blocking(self.servers.source, name, purpose="call")
        try:
            response = await self.in_proxy_pool(source.http.get_content, url, accept=accept, headers=headers)
        except DicomWebError as exc:
            raise _failure(exc, name, "the QIDO-RS search") from None
        if response.status_code == 204 or not response.content.strip():
            self.write_json([], 200, "application/json")
            return
        try:
            matches = response.json()
            if not isinstance(matches, list):
                raise ValueError("the answer is not a JSON array")
            simplified = [simplified_match(m) for m in matches]
        except ValueError as exc:
            raise ProxyError(502, f"remote DICOMweb server {name!r} did not answer the QIDO-RS search with DICOM JSON: {exc}",
                             RemoteServer=name, RemoteStatus=response.status_code) from None
        self.write_json(simplified, 200, "application/json")


class ServerDeleteMixin(_ProxyBase):
    """``POST {root}/servers/{name}/delete``."""

    async def post(self, name: str) -> None:
        entry = await self.run_blocking(self.entry, name)
        if not entry.definition.get("HasDelete", False):
            raise ApiError(400, f'cannot delete on remote DICOMweb server {name!r}: its definition does not say '
                                '"HasDelete": true (set it with PUT /servers/{name} or in c.DicomWeb.servers)')
        body = self.json_body()
        segments = self._resource(body)
        url = entry.url.rstrip("/") + "/" + "/".join(segments)
        headers = _headers(body)
        source = await self.run_blocking(self.servers.source, name, purpose="call")
        try:
            await self.in_proxy_pool(source.http.request, "DELETE", url, headers=headers)
        except DicomWebError as exc:
            raise _failure(exc, name, "the delete") from None
        self.write_json({}, 200, "application/json")

    def _resource(self, body: dict[str, Any]) -> list[str]:
        """The remote path of ``Level`` and the UIDs, each checked."""
        level = body.get("Level")
        if not isinstance(level, str) or level.lower() not in _LEVELS:
            raise ProxyError(400, '"Level" must be "Study", "Series" or "Instance"', Field="Level")
        depth = _LEVELS[level.lower()]
        segments: list[str] = []
        for field, kind in zip(_UID_FIELDS[:depth], ("studies", "series", "instances")):
            uid = body.get(field)
            if not isinstance(uid, str):
                raise ProxyError(400, f'a {level} delete needs "{field}" (a string)', Field=field)
            segments += [kind, self.uid(uid, field)]
        return segments

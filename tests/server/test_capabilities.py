"""The Retrieve Capabilities transaction (PS3.18 8.9): OPTIONS answers a WADL document, parsed here
and checked against the route table (every URL and method there, nothing else), and against the
server itself (each media type it lists for a GET is one the server answers with)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
import requests

from dicomweb_nb.server import standalone_handlers
from dicomweb_nb.server.capabilities import served_methods
from dicomweb_nb.server.routes import build_routes

from .conftest import small_series, stow_datasets

NS = "{http://wadl.dev.java.net/2009/02}"


def options(server, path: str = "", **headers) -> requests.Response:
    url = server.dicomweb_url + (f"/{path}" if path else "")
    return requests.options(url, headers={**server.headers, **headers}, timeout=60)


def walk(element: ET.Element, prefix: str = "") -> dict[tuple[str, str], ET.Element]:
    """(path, method) -> method element, paths joined and every template written ``{}``."""
    found: dict[tuple[str, str], ET.Element] = {}
    for method in element.findall(f"{NS}method"):
        found[(prefix, method.get("name"))] = method
    for resource in element.findall(f"{NS}resource"):
        path = re.sub(r"\{[^}]+\}", "{}", resource.get("path"))
        found.update(walk(resource, f"{prefix}/{path}" if prefix else path))
    return found


def route_table() -> set[tuple[str, str]]:
    """What the route table serves under the root, computed independently of capabilities.py."""
    expected = set()
    for pattern, handler, kwargs in build_routes(standalone_handlers, "", None):
        if handler.__name__ == "NotFoundHandler":
            continue
        path = re.sub(r"\(\[\^/\]\+\)|\(\.\+\)|\(\[A-Za-z0-9_\.-\]\*\)", "{}", pattern).removesuffix("/?")
        variants = [path.replace("(rendered|thumbnail)", kind) for kind in ("rendered", "thumbnail")] \
            if "(rendered|thumbnail)" in path else [path]
        for variant in variants:
            for method in served_methods(handler, kwargs["access"]):
                if method != "OPTIONS":
                    expected.add((variant, method))
    return expected


def test_options_on_the_root_describes_every_route_and_nothing_else(server):
    answer = options(server)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/vnd.sun.wadl+xml")
    document = ET.fromstring(answer.content)
    assert document.tag == f"{NS}application"
    [resources] = document.findall(f"{NS}resources")
    assert resources.get("base") == server.dicomweb_url + "/"
    described = walk(resources)
    assert set(described) == route_table()
    assert options(server, "", Accept="application/xml").status_code == 200
    # Without the trailing slash too.
    assert requests.options(server.dicomweb_url.rstrip("/"), headers=server.headers, timeout=60).status_code == 200

    search = described[("studies", "GET")]
    assert search.get("id") == "SearchForStudies"
    query = {p.get("name") for p in search.iter(f"{NS}param") if p.get("style") == "query"}
    assert {"PatientName", "StudyDate", "ModalitiesInStudy", "includefield", "fuzzymatching", "limit", "offset"} <= query
    assert described[("studies", "POST")].get("id") == "StoreInstances"
    assert described[("studies/{}", "DELETE")].get("id") == "DeleteStudy"
    assert described[("studies/{}/series/{}/instances/{}/frames/{}/rendered", "GET")].get("id") == "RetrieveFramesRendered"
    assert described[("changefeed", "GET")].get("id") == "ChangeFeed"
    retrieve = described[("studies/{}", "GET")]
    syntaxes = [o.get("value") for p in retrieve.iter(f"{NS}param") if p.get("name") == "transfer-syntax"
                for o in p.findall(f"{NS}option")]
    assert {"*", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5"} <= set(syntaxes)
    assert [r.get("status") for r in described[("studies/{}", "DELETE")].findall(f"{NS}response")] == ["204"]


def test_each_media_type_listed_for_a_resource_is_one_the_server_answers_with(server):
    datasets = small_series(2)
    stow_datasets(server, datasets)
    first = datasets[0]
    study, series, sop = (str(x) for x in (first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID))
    described = walk(ET.fromstring(options(server).content).find(f"{NS}resources"))
    checked = 0
    for (path, method), element in described.items():
        if method != "GET" or not path.startswith("studies") or path.startswith("studies/{}/series/{}/instances/{}/bulk"):
            continue
        url = path.replace("{}", study, 1).replace("{}", series, 1).replace("{}", sop, 1).replace("{}", "1", 1)
        for representation in element.find(f"{NS}response").findall(f"{NS}representation"):
            media_type = representation.get("mediaType")
            if "bulkdata" in path and "image/" in media_type:
                continue  # the frames of compressed pixel data only; these are uncompressed
            if path.endswith("frames/{}") and media_type != 'multipart/related; type="application/octet-stream"':
                continue  # the frames' own syntax only: uncompressed here
            answer = requests.get(f"{server.dicomweb_url}/{url}", headers={**server.headers, "Accept": media_type}, timeout=60)
            assert answer.status_code == 200, (url[-40:], media_type, answer.status_code, answer.text[:200])
            answered = answer.headers["Content-Type"].split(";")[0]
            assert answered == media_type.split(";")[0], (url, media_type, answered)
            checked += 1
    assert checked >= 40


def test_options_on_a_resource_describes_it_and_its_children_as_json_too(server):
    answer = options(server, "studies/1.2.3.4", Accept="application/json")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["Allow"] == "GET, HEAD, OPTIONS, POST, DELETE".replace("HEAD, ", "")
    [resources] = answer.json()["application"]["resources"]
    [resource] = resources["resource"]
    assert resource["path"] == "studies/1.2.3.4"
    assert [m["name"] for m in resource["method"]] == ["GET", "POST", "DELETE"]
    assert {r["path"] for r in resource["resource"]} >= {"series", "instances", "metadata", "rendered", "thumbnail", "bulkdata"}
    xml = ET.fromstring(options(server, "studies/1.2.3.4/series/5.6").content)
    [resource] = xml.find(f"{NS}resources").findall(f"{NS}resource")
    assert resource.get("path") == "studies/1.2.3.4/series/5.6"
    assert [m.get("id") for m in resource.findall(f"{NS}method")] == ["RetrieveSeries", "DeleteSeries"]


def test_unknown_paths_and_media_types_and_the_cors_preflight(server):
    assert options(server, "nowhere").status_code == 404
    assert options(server, "studies/1.2/nowhere").status_code == 404
    assert options(server, "", Accept="image/png").status_code == 406
    preflight = options(server, "studies", Origin="http://viewer.example", **{"Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204 and preflight.content == b""
    if server.headers:  # a non-preflight OPTIONS needs read access
        assert requests.options(server.dicomweb_url, timeout=30).status_code in (401, 403)


def test_a_read_only_server_leaves_out_what_it_refuses(tmp_path):
    from tests.fixtures.ourserver import start_standalone

    server = start_standalone(tmp_path, None, "-c", "read_only=true")
    try:
        described = walk(ET.fromstring(options(server).content).find(f"{NS}resources"))
        methods = {method for _path, method in described}
        assert ("studies", "POST") not in described and ("studies/{}", "DELETE") not in described
        assert ("servers/{}", "PUT") not in described and ("servers/{}/retrieve", "POST") not in described
        assert ("servers/{}/stow", "POST") in described and ("jobs/{}/cancel", "POST") in described
        assert "GET" in methods
    finally:
        server.stop()


def test_the_json_form_is_the_same_tree(server):
    xml = walk(ET.fromstring(options(server).content).find(f"{NS}resources"))

    def walk_json(node: dict, prefix: str = "") -> set[tuple[str, str]]:
        found = {(prefix, m["name"]) for m in node.get("method", [])}
        for child in node.get("resource", []):
            path = re.sub(r"\{[^}]+\}", "{}", child["path"])
            found |= walk_json(child, f"{prefix}/{path}" if prefix else path)
        return found

    [resources] = json.loads(options(server, Accept="application/json").content)["application"]["resources"]
    assert walk_json(resources) == set(xml)


@pytest.mark.parametrize("mount", ["standalone", "jupyter"])
def test_a_cors_preflight_gets_the_cors_answer_and_no_capabilities(tmp_path, mount):
    """OPTIONS with Origin and Access-Control-Request-Method is a CORS preflight wherever it goes, the
    DICOMweb root included: 204, no body, the CORS headers for an allowed origin (the methods the URL
    serves), none for another, and no credentials needed; never the WADL of a capabilities answer."""
    from tests.fixtures.ourserver import start_jupyter, start_standalone

    origin = "http://viewer.example"
    if mount == "standalone":
        server = start_standalone(tmp_path, None, "-c", f'cors_origins=["{origin}"]', token="cors-token")
    else:
        server = start_jupyter(tmp_path, f"--DicomWeb.cors_origins={origin}")
    try:
        study = "1.2.3.4"
        expected_methods = {"": None, "studies": "GET, OPTIONS, POST", f"studies/{study}": "GET, OPTIONS, POST, DELETE",
                            f"studies/{study}/series/5.6/instances/7.8": "GET, OPTIONS, DELETE",
                            f"studies/{study}/metadata": "GET, OPTIONS"}
        for path, methods in expected_methods.items():
            url = server.dicomweb_url + (f"/{path}" if path else "")
            asked = {"Origin": origin, "Access-Control-Request-Method": "DELETE",
                     "Access-Control-Request-Headers": "accept, authorization"}
            answer = requests.options(url, headers=asked, timeout=60)
            assert (answer.status_code, answer.content) == (204, b""), (path, answer.status_code, answer.text[:200])
            assert "wadl" not in answer.headers.get("Content-Type", ""), path
            assert answer.headers["Access-Control-Allow-Origin"] == origin, path
            assert answer.headers["Access-Control-Allow-Headers"] == "accept, authorization", path
            assert answer.headers["Access-Control-Max-Age"] == "600", path
            if methods is not None:
                assert answer.headers["Access-Control-Allow-Methods"] == methods, path
            stranger = requests.options(url, headers={**asked, "Origin": "http://elsewhere.example"}, timeout=60)
            assert stranger.status_code == 204 and not any(h.startswith("Access-Control-Allow") for h in stranger.headers), path
    finally:
        server.stop()

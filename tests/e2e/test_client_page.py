"""The web client page in headless Chromium, inside Jupyter (awkward base_url, login, XSRF): pick a
server, search, see series, retrieve a study and send one, watching the jobs reach Success."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from ..fixtures.ourserver import JUPYTER_TOKEN, start_jupyter, start_standalone
from ..fixtures.peers import require_peer
from ..server.proxy_helpers import Api, import_study, make_study

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require_peer(CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK), "Chromium (Debian chromium at /usr/bin/chromium)")
    pytest.importorskip("playwright.sync_api")
    folder = tmp_path_factory.mktemp("page")
    remote_study = make_study(folder / "remote-data", slices=4, patient="Page^Remote", series=2)
    local_study = make_study(folder / "local-data", slices=3, patient="Page^Local")
    import_study(folder / "remote" / "store", remote_study)
    import_study(folder / "jupyter" / "root" / ".dicomweb", local_study)
    remote = start_standalone(folder / "remote")
    jupyter = start_jupyter(folder / "jupyter", "--DicomWeb.servers_in_store=True")
    api = Api(jupyter)
    api.add_server("remote", remote.dicomweb_url)
    yield {"jupyter": jupyter, "remote": remote, "remote_study": remote_study, "local_study": local_study}
    jupyter.stop()
    remote.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def test_search_retrieve_and_send_from_the_page(setup, browser):
    jupyter, remote = setup["jupyter"], setup["remote"]
    remote_study, local_study = setup["remote_study"], setup["local_study"]
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)

    # Not logged in: Jupyter's login page, then back to the client (a cookie session from here on,
    # so the page's POSTs must carry the _xsrf cookie as X-XSRFToken).
    page.goto(f"{jupyter.url}/dicom-web/app/client/")
    assert "/login" in page.url
    page.fill("input[name=password]", JUPYTER_TOKEN)
    page.click("#login_submit, button[type=submit], input[type=submit]")
    page.wait_for_url("**/dicom-web/app/client/**")
    assert page.url.startswith(f"{jupyter.url}/dicom-web/app/client/")

    page.wait_for_selector("#server option[value=remote]", state="attached")
    assert page.input_value("#server") == "remote"
    assert remote.dicomweb_url in page.text_content("#server-info")

    # Search the remote by QIDO through /servers/remote/get.
    page.fill("input[name=PatientName]", "PAGE^REM*")
    page.click("#search")
    row = page.wait_for_selector(f"#studies tbody tr[data-uid='{remote_study.uid}']")
    assert page.locator("#studies tbody tr").count() == 1
    assert "Page^Remote" in row.text_content()

    row.query_selector("button:has-text('Series')").click()
    page.wait_for_selector("#series-panel:not([hidden])")
    page.wait_for_function("document.querySelectorAll('#series tbody tr').length === 2")

    # Retrieve the study as a job; watch it succeed.
    row.query_selector("button:has-text('Retrieve')").click()
    page.wait_for_selector("#jobs tbody tr[data-state=Success]", timeout=30_000)
    assert "Retrieve" in page.text_content("#jobs tbody tr[data-state=Success]")
    assert Api(jupyter).instances_of(remote_study.uid) == remote_study.sops
    page.wait_for_selector(f"#local-studies tbody tr[data-uid='{remote_study.uid}']")

    # Send a local study to the remote by STOW-RS, as a job.
    local_row = page.wait_for_selector(f"#local-studies tbody tr[data-uid='{local_study.uid}']")
    assert "remote" in local_row.query_selector("button.send").text_content()
    local_row.query_selector("button.send").click()
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr[data-state=Success]').length === 2", timeout=30_000)
    assert Api(remote).instances_of(local_study.uid) == local_study.sops
    assert errors == []

    # The page's session is a cookie: a POST needs the _xsrf cookie echoed as X-XSRFToken, as the page does.
    session = requests.Session()
    for cookie in page.context.cookies():
        session.cookies.set(cookie["name"], cookie["value"], domain=cookie["domain"], path=cookie["path"])
    get_url = f"{jupyter.url}/dicom-web/servers/remote/get"
    assert session.post(get_url, json={"Uri": "/studies"}, timeout=30).status_code == 403
    xsrf = session.cookies.get("_xsrf")
    assert session.post(get_url, json={"Uri": "/studies"}, headers={"X-XSRFToken": xsrf}, timeout=30).status_code == 200
    page.close()


def test_page_needs_authentication(setup):
    jupyter = setup["jupyter"]
    anonymous = requests.get(f"{jupyter.url}/dicom-web/app/client/", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    api_call = requests.post(f"{jupyter.url}/dicom-web/servers/remote/get", json={"Uri": "/studies"}, timeout=30)
    assert api_call.status_code == 403
    served = requests.get(f"{jupyter.url}/dicom-web/app/client/app.js", headers=jupyter.headers, timeout=30)
    assert served.status_code == 200 and served.headers["Content-Type"].startswith("text/javascript")
    assert requests.get(f"{jupyter.url}/dicom-web/app/client/../../servers", headers=jupyter.headers,
                        timeout=30).status_code == 200  # the page's relative URLs land on the API
    missing = requests.get(f"{jupyter.url}/dicom-web/app/client/secret.py", headers=jupyter.headers, timeout=30)
    assert missing.status_code == 404

"""Server picker and failures: a stopped server, 401, unknown names, broken configuration, adding servers
(never echoing a password), and the servers file written for the workspace."""

from __future__ import annotations

import json
import stat

import pytest

import dicomweb_nb as dw
from dicomweb_nb.client.config import load_servers, remove_server, save_server, servers_file
from dicomweb_nb.errors import ConfigurationError, UnknownServer
from dicomweb_nb.widgets.servers import redact_url
from tests.fixtures.ourserver import start_standalone

from .helpers import widget_state_text


def test_stopped_server_is_a_readable_message(tmp_path, widget_workspace):
    server = start_standalone(tmp_path)
    url = server.dicomweb_url
    server.stop()
    browser = dw.Browser(url)
    assert browser.wait(60)
    assert browser.status.kind == "error"
    assert browser.message.startswith("Cannot reach http://127.0.0.1:")
    assert "not running" in browser.message and "Traceback" not in browser.status.value
    assert len(browser.studies.data) == 0
    browser.close()


def test_server_dying_while_browsing(tmp_path, widget_workspace, ct_series):
    server = start_standalone(tmp_path)
    try:
        dw.connect(server.dicomweb_url, progress=False).store(ct_series)
        browser = dw.Browser(server.dicomweb_url)
        browser.wait(60)
        assert len(browser.studies.data) == 1
        server.kill()
        browser.open_study(str(ct_series[0].StudyInstanceUID))
        browser.wait(60)
        assert browser.status.kind == "error" and "Cannot reach" in browser.message
        browser.close()
    finally:
        server.stop()


def test_401_then_a_token_added_in_the_form(tmp_path, widget_workspace):
    token = "widget-secret-token"
    server = start_standalone(tmp_path, token=token)
    try:
        browser = dw.Browser(server.dicomweb_url)
        browser.wait(60)
        assert browser.status.kind == "error"
        assert "401 Unauthorized" in browser.message and "credentials" in browser.message

        picker = browser.servers
        picker.add_toggle.value = True
        assert picker.form.layout.display is None
        picker.new_name.value = "secured"
        picker.new_url.value = server.dicomweb_url
        picker.new_token.value = token
        picker.save_button.click()
        browser.wait(60)
        assert picker.value == "name:secured"
        assert browser.status.kind == "info" and "no studies" in browser.message
        assert picker.new_token.value == "" and picker.form.layout.display == "none"
        assert token not in widget_state_text(browser)
        saved = json.loads(servers_file().read_text())
        assert saved["secured"]["HttpHeaders"] == {"Authorization": f"Bearer {token}"}
        assert stat.S_IMODE(servers_file().stat().st_mode) == 0o600
    finally:
        server.stop()


def test_basic_auth_server_added_without_echoing_the_password(tmp_path, widget_workspace, ct_series):
    password = "s3cret-Pw-7"
    server = start_standalone(tmp_path, None, "--basic-auth", f"reader:{password}")
    try:
        dw.connect(server.dicomweb_url, username="reader", password=password, progress=False).store(ct_series)
        browser = dw.Browser()  # the workspace store, empty
        browser.wait(30)
        assert "no studies" in browser.message
        picker = browser.servers
        picker.new_name.value = "with-login"
        picker.new_url.value = server.dicomweb_url
        picker.new_username.value = "reader"
        picker.new_password.value = password
        picker.save_button.click()
        browser.wait(60)
        assert browser.status.kind == "ok", browser.message
        assert len(browser.studies.data) == 1
        assert "with-login" in picker.label and "(login)" in picker.label
        assert picker.new_password.value == ""
        assert password not in widget_state_text(browser)
        assert load_servers()["with-login"].password == password  # kept in the file, for connect("with-login")

        # A wrong password saved over it: a 401 message, not a traceback.
        picker.new_name.value = "with-login"
        picker.new_url.value = server.dicomweb_url
        picker.new_username.value = "reader"
        picker.new_password.value = "wrong"
        picker.save_button.click()
        browser.wait(60)
        assert browser.status.kind == "error" and "401" in browser.message

        # Back to the workspace store, then remove the server.
        picker.choose(None)
        browser.wait(30)
        picker.dropdown.value = "name:with-login"
        browser.wait(30)
        picker.remove_button.click()
        browser.wait(30)
        assert "with-login" not in load_servers() and picker.value == "workspace"
        browser.close()
    finally:
        server.stop()


def test_form_refuses_a_bad_url_and_forgets_the_password(widget_workspace):
    browser = dw.Browser()
    browser.wait(30)
    picker = browser.servers
    picker.new_name.value = "bad"
    picker.new_url.value = "ftp://example.invalid/dicom-web"
    picker.new_password.value = "pw"
    picker.save_button.click()
    assert browser.status.kind == "error" and "cannot save the server" in browser.message
    assert "http:// or https://" in browser.message
    assert picker.new_password.value == ""
    assert not servers_file().exists()
    browser.close()


def test_unknown_server_name_and_broken_configuration(widget_workspace):
    browser = dw.Browser("nowhere")
    browser.wait(30)
    assert browser.status.kind == "error"
    assert "'nowhere'" in browser.message and "configured: none" in browser.message
    browser.close()

    widget_workspace.mkdir(parents=True, exist_ok=True)
    servers_file().write_text("{not json")
    browser = dw.Browser()
    browser.wait(30)
    assert browser.status.kind == "error" and "cannot read the servers file" in browser.message
    browser.close()


def test_picker_lists_configured_servers_and_switches(widget_server, widget_workspace, monkeypatch):
    monkeypatch.setenv("DICOMWEB_NB_SERVERS", json.dumps({"from-env": {"Url": widget_server.url}}))
    save_server("from-file", widget_server.url.replace("127.0.0.1", "user:pw@127.0.0.1"))
    browser = dw.Browser("from-env")
    browser.wait(60)
    assert browser.servers.names == ["from-env", "from-file"]
    assert browser.message.startswith("3 studies on from-env")
    labels = [label for label, _ in browser.servers.dropdown.options]
    assert not any("pw@" in label for label in labels)
    browser.connect(None)
    browser.wait(30)
    assert "no studies" in browser.message
    browser.connect(widget_server.url)
    browser.wait(30)
    assert len(browser.studies.data) == 3
    with pytest.raises(ConfigurationError, match="no server named 'missing'"):
        browser.connect("missing")
    client = dw.connect(widget_server.url, progress=False)
    given = dw.Browser(client)
    given.wait(30)
    assert given.client is client and "(given client)" in given.servers.label
    browser.close()
    given.close()


def test_save_and_remove_server_validate(widget_workspace):
    with pytest.raises(ConfigurationError, match="server name"):
        save_server(" spaced ", "http://127.0.0.1:1/dicom-web")
    with pytest.raises(ConfigurationError, match="Url"):
        save_server("x", "localhost:8042")
    with pytest.raises(ConfigurationError, match="Timeout"):
        save_server("x", "http://127.0.0.1:1/dicom-web", timeout=-1)
    saved = save_server("pacs", "http://127.0.0.1:1/dicom-web", username="u", password="p", timeout=5)
    assert saved.username == "u" and saved.timeout == 5
    assert load_servers()["pacs"].password == "p"
    save_server("other", "https://example.invalid/dicom-web")
    assert sorted(load_servers()) == ["other", "pacs"]
    remove_server("pacs")
    assert sorted(load_servers()) == ["other"]
    with pytest.raises(UnknownServer, match="'pacs'"):
        remove_server("pacs")
    assert redact_url("https://u:p@host:8/dicom-web?x=1") == "https://host:8/dicom-web?x=1"
    assert redact_url("http://host/dicom-web") == "http://host/dicom-web"

"""Which DICOMweb server the browser talks to: the configured ones, the workspace store, or one added here.

Adding a server writes the workspace's ``servers.json`` (``client.config.save_server``), the file
the Jupyter extension's ``/servers`` proxy reads too. The password field is a ``Password`` widget,
emptied once the server is saved, and labels show URLs without any user information: a password
never comes back to the page.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import ipywidgets as widgets

from ..client.config import load_servers, remove_server, save_server, servers_file
from ..errors import ConfigurationError
from ._tasks import UI_LOCK, StatusBar, describe_error

if TYPE_CHECKING:
    from ..client.client import Client

__all__ = ["ServerPicker", "WORKSPACE", "redact_url"]

WORKSPACE = "workspace"  # the value of the workspace store in the picker


def redact_url(url: str) -> str:
    """The URL without ``user:password@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class ServerPicker(widgets.VBox):
    """A dropdown of servers and a form to add one; ``client`` is the connection to the chosen server.

    ``on_change(callback)`` is told ``(client, label)`` each time another server is chosen.
    """

    def __init__(self, status: StatusBar, *, initial: Client | str | None = None,
                 store: str | os.PathLike[str] | None = None, connect_options: dict[str, Any] | None = None):
        self.status = status
        self.store = store
        self.connect_options = {"progress": False, "retries": 1, **(connect_options or {})}
        self._clients: dict[str, Client] = {}
        self._labels: dict[str, str] = {}
        self._extra: dict[str, tuple[str, Client | None]] = {}  # value -> (label, given client)
        self._callbacks: list[Callable[[Client, str], None]] = []
        self.missing: str | None = None  # a server name asked for that is not configured
        self.config_error: Exception | None = None  # why the servers file could not be read
        self.dropdown = widgets.Dropdown(description="Server", layout=widgets.Layout(width="520px"))
        self.dropdown.add_class("dwnb-server")
        self.refresh_button = widgets.Button(icon="refresh", tooltip="reload the configured servers",
                                             layout=widgets.Layout(width="36px"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.add_toggle = widgets.ToggleButton(description="Add server", icon="plus", value=False)
        self.add_toggle.add_class("dwnb-add-server-toggle")

        self.new_name = widgets.Text(description="Name", placeholder="e.g. pacs")
        self.new_url = widgets.Text(description="URL", placeholder="https://host/dicom-web",
                                    layout=widgets.Layout(width="420px"))
        self.new_username = widgets.Text(description="Username", placeholder="(optional)")
        self.new_password = widgets.Password(description="Password", placeholder="(optional)")
        self.new_token = widgets.Password(description="Token", placeholder="bearer token (optional)")
        self.save_button = widgets.Button(description="Save server", icon="save", button_style="primary")
        self.save_button.on_click(lambda _b: self._save_from_form())
        self.remove_button = widgets.Button(description="Remove selected", icon="trash",
                                            tooltip="remove the selected server from servers.json")
        self.remove_button.on_click(lambda _b: self._remove_selected())
        for name in ("new_name", "new_url", "new_username", "new_password", "new_token"):
            getattr(self, name).add_class(f"dwnb-{name.replace('_', '-')}")
        self.form = widgets.VBox([self.new_name, self.new_url, self.new_username, self.new_password, self.new_token,
                                  widgets.HBox([self.save_button, self.remove_button])],
                                 layout=widgets.Layout(display="none", border="1px solid #ddd", padding="4px"))
        self.add_toggle.observe(lambda change: setattr(self.form.layout, "display", None if change["new"] else "none"),
                                "value")
        super().__init__([widgets.HBox([self.dropdown, self.refresh_button, self.add_toggle]), self.form])
        self.add_class("dwnb-servers")
        initial_value = WORKSPACE
        if initial is not None and not isinstance(initial, str):
            url = getattr(initial, "url", None) or repr(initial)
            initial_value = f"client:{id(initial)}"
            self._extra[initial_value] = (f"{redact_url(str(url))} (given client)", initial)
            self._clients[initial_value] = initial
        elif isinstance(initial, str):
            if initial.startswith(("http://", "https://")):
                initial_value = f"url:{initial}"
                self._extra[initial_value] = (redact_url(initial), None)
            else:
                initial_value = f"name:{initial}"
        self.refresh(select=initial_value)
        self.dropdown.observe(self._on_choice, "value")

    def on_change(self, callback: Callable[[Client, str], None]) -> None:
        self._callbacks.append(callback)

    # -- the list -----------------------------------------------------------------------------------
    def refresh(self, select: str | None = None) -> None:
        """Re-read the configured servers (servers.json, $DICOMWEB_NB_SERVERS)."""
        options: list[tuple[str, str]] = [("Workspace store (this notebook's .dicomweb)", WORKSPACE)]
        try:
            servers = load_servers(self.store)
            self.config_error = None
        except ConfigurationError as exc:
            servers = {}
            self.config_error = exc
            self.status.error(exc)
        for name, server in sorted(servers.items()):
            auth = " (login)" if server.username else ""
            options.append((f"{name} \u2014 {redact_url(server.url)}{auth}", f"name:{name}"))
        for value, (label, _) in self._extra.items():
            options.append((label, value))
        values = [v for _, v in options]
        wanted = select or self.dropdown.value or WORKSPACE
        if wanted not in values:
            if wanted.startswith("name:"):
                self.missing = wanted[5:]
                known = ", ".join(sorted(servers)) or "none"
                self.status.error(f"no server named {wanted[5:]!r} is configured in {servers_file(self.store)} "
                                  f"(configured: {known}); add it with 'Add server'")
            wanted = WORKSPACE
        self._labels = {v: label for label, v in options}
        with UI_LOCK:
            self._suppress = True
            try:
                self.dropdown.options = options
                self.dropdown.value = wanted
            finally:
                self._suppress = False

    @property
    def value(self) -> str:
        return self.dropdown.value

    @property
    def label(self) -> str:
        return self._labels.get(self.dropdown.value, self.dropdown.value)

    @property
    def names(self) -> list[str]:
        """The configured server names in the list."""
        return [v[5:] for _, v in self.dropdown.options if v.startswith("name:")]

    def choose(self, name_or_url: str | None) -> None:
        """Pick a server: a configured name, a URL, or None for the workspace store."""
        if name_or_url is None:
            value = WORKSPACE
        elif name_or_url.startswith(("http://", "https://")):
            value = f"url:{name_or_url}"
            if value not in self._extra:
                self._extra[value] = (redact_url(name_or_url), None)
                self.refresh(select=value)
        else:
            value = f"name:{name_or_url}"
            if value not in self._labels:
                self.refresh()
                if value not in self._labels:
                    raise ConfigurationError(f"no server named {name_or_url!r} in {servers_file(self.store)}")
        if self.dropdown.value == value:
            self._announce()
        else:
            self.dropdown.value = value

    def _on_choice(self, change: dict) -> None:
        if getattr(self, "_suppress", False):
            return
        self._announce()

    def _announce(self) -> None:
        try:
            client = self.client
        except Exception as exc:  # noqa: BLE001 - shown in the widget
            self.status.error(exc)
            return
        for callback in self._callbacks:
            callback(client, self.label)

    # -- connections --------------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The Client of the chosen server (made on first use, then kept)."""
        from ..client.connect import connect

        value = self.dropdown.value
        if value not in self._clients:
            if value == WORKSPACE:
                self._clients[value] = connect(store=self.store, **self.connect_options)
            elif value.startswith("name:"):
                self._clients[value] = connect(value[5:], store=self.store, **self.connect_options)
            elif value.startswith("url:"):
                self._clients[value] = connect(value[4:], **self.connect_options)
            else:
                raise ConfigurationError(f"the client behind {self.label!r} is gone")
        return self._clients[value]

    def workspace_client(self) -> Client:
        """A Client of the workspace store (for retrieving into it)."""
        from ..client.connect import connect

        if WORKSPACE not in self._clients:
            self._clients[WORKSPACE] = connect(store=self.store, **self.connect_options)
        return self._clients[WORKSPACE]

    # -- adding and removing ----------------------------------------------------------------------
    def add_server(self, name: str, url: str, *, username: str | None = None, password: str | None = None,
                   token: str | None = None, choose: bool = True) -> None:
        """Save a server in the workspace's servers.json and (by default) switch to it."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        save_server(name.strip(), url.strip(), username=username or None, password=password or None,
                    http_headers=headers, folder=self.store)
        value = f"name:{name.strip()}"
        old = self._clients.pop(value, None)  # credentials may have changed
        if old is not None:
            old.close()
        self.refresh(select=self.dropdown.value)
        self.status.show(f"saved server {name.strip()!r} ({redact_url(url.strip())}) in {servers_file(self.store)}", "ok")
        if choose:
            self.choose(name.strip())

    def _save_from_form(self) -> None:
        try:
            self.add_server(self.new_name.value, self.new_url.value, username=self.new_username.value,
                            password=self.new_password.value, token=self.new_token.value)
        except Exception as exc:  # noqa: BLE001 - shown in the widget
            self.status.show(f"cannot save the server: {describe_error(exc)}", "error")
            return
        finally:
            # Secrets leave the page as soon as they are used, whatever happened.
            self.new_password.value = ""
            self.new_token.value = ""
        self.new_name.value = self.new_url.value = self.new_username.value = ""
        self.add_toggle.value = False

    def _remove_selected(self) -> None:
        value = self.dropdown.value
        if not value.startswith("name:"):
            self.status.show("only servers saved in servers.json can be removed", "error")
            return
        try:
            remove_server(value[5:], self.store)
        except Exception as exc:  # noqa: BLE001 - shown in the widget
            self.status.error(exc)
            return
        client = self._clients.pop(value, None)
        if client is not None:
            client.close()
        self.status.show(f"removed server {value[5:]!r}", "ok")
        self.refresh(select=WORKSPACE)
        self._announce()

    def close_clients(self) -> None:
        for value, client in list(self._clients.items()):
            if not value.startswith("client:"):
                client.close()
        self._clients = {k: v for k, v in self._clients.items() if k.startswith("client:")}

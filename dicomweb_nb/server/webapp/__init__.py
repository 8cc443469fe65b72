"""The web client page, ``{root}/app/client/``: plain HTML + JS shipped as package data.

Served by the same authenticated handler base as the API (Jupyter's login in the extension, the
token / basic auth of ``dicomweb-nb serve``). Every URL in the page is relative, so it works under
any ``base_url`` and behind reverse proxies. In Jupyter an unauthenticated visit is sent to the
login page, and the ``_xsrf`` cookie is set here so the page's POSTs can send it back as
``X-XSRFToken``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from tornado import web

from ..base import ApiError, DicomWebMixin

__all__ = ["ClientPageMixin", "ClientPageRedirectMixin", "PAGE_FILES"]

_CONTENT_TYPES = {
    ".html": "text/html; charset=UTF-8",
    ".js": "text/javascript; charset=UTF-8",
    ".css": "text/css; charset=UTF-8",
    ".svg": "image/svg+xml",
}


def _page_files() -> dict[str, bytes]:
    folder = resources.files(__name__).joinpath("client")
    out = {}
    for entry in folder.iterdir():
        name = entry.name
        if entry.is_file() and any(name.endswith(ext) for ext in _CONTENT_TYPES):
            out[name] = entry.read_bytes()
    return out


# Read once: a handful of small files, and only names found here can ever be served (no path tricks).
PAGE_FILES = _page_files()


async def _jupyter_prepare(handler: Any) -> bool:
    """Jupyter's own prepare, then its login redirect for a visitor without a user (tornado's
    ``@web.authenticated``: GET goes to the login page with ``next=``, anything else gets 403), when
    the base is a JupyterHandler. Jupyter lets handlers decide (``allow_unauthenticated_access``)."""
    for klass in type(handler).__mro__:
        if klass.__name__ == "JupyterHandler" and klass.__module__.startswith("jupyter_server"):
            await klass.prepare(handler)
            if not handler._finished and handler.current_user is None:
                web.authenticated(lambda _handler: None)(handler)
            return True
    return False


class ClientPageMixin(DicomWebMixin):
    """GET of the page's files."""

    async def prepare(self) -> None:
        if not await _jupyter_prepare(self):
            await super().prepare()  # type: ignore[misc]

    def get(self, name: str = "") -> None:
        if getattr(self, "_finished", False):
            return
        name = name or "index.html"
        content = PAGE_FILES.get(name)
        if content is None:
            raise ApiError(404, f"no file {name!r} in the web client (files: {', '.join(sorted(PAGE_FILES))})")
        if name.endswith(".html"):
            # Sets the _xsrf cookie (Jupyter checks it on the page's POSTs); harmless standalone.
            _ = getattr(self, "xsrf_token", None)
        self.set_header("Content-Type", _CONTENT_TYPES[name[name.rfind("."):]])
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(content)


class ClientPageRedirectMixin(DicomWebMixin):
    """``{root}/app/client`` -> ``{root}/app/client/``, so the page's relative URLs resolve."""

    async def prepare(self) -> None:
        if not await _jupyter_prepare(self):
            await super().prepare()  # type: ignore[misc]

    def get(self) -> None:
        if getattr(self, "_finished", False):
            return
        query = f"?{self.request.query}" if self.request.query else ""
        self.redirect(self.request.path + "/" + query)

"""The web client page, ``{root}/app/client/``: plain HTML + JS shipped as package data.

Served by the same authenticated handler bases as the API (Jupyter's login in the extension, the
token / basic auth of ``dicomweb-nb serve``). Every URL in the page is relative, so it works under
any ``base_url`` and behind reverse proxies. In Jupyter an unauthenticated visit is sent to the
login page (``login_redirect``), and the ``_xsrf`` cookie is set here so the page's POSTs can send
it back as ``X-XSRFToken``.
"""

from __future__ import annotations

from importlib import resources

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


class ClientPageMixin(DicomWebMixin):
    """GET of the page's files."""

    # Under Jupyter, a browser without a session is sent to the login page (the API answers 403).
    login_redirect = True

    def get(self, name: str = "") -> None:
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

    login_redirect = True

    def get(self) -> None:
        query = f"?{self.request.query}" if self.request.query else ""
        self.redirect(self.request.path + "/" + query)

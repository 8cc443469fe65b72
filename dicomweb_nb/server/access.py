"""Who may do what: the action each request needs on the resource ``dicomweb``.

Both mount points share this rule. Under Jupyter the server's ``Authorizer`` decides
(``authorizer.is_authorized(handler, user, action, "dicomweb")``), so JupyterHub's RBAC, read-only
collaborators and custom policies are obeyed; ``dicomweb-nb serve`` has one credential (its token or
basic password), which may do everything.

Actions, as jupyter-server names them:

- ``read``: GET, HEAD and OPTIONS (not the CORS preflight, which needs no user): searches, retrievals,
  the list of remote servers, jobs.
- ``write``: changes to this server: STOW-RS, ``PUT``/``DELETE /servers/{name}``, creating and
  cancelling jobs (every proxy transfer is a job), and every change of the worklist (creating,
  updating, claiming, completing or canceling a workitem, asking for its cancellation, subscribing).
  Reading the worklist and opening a notification channel (``{root}subscribers/{aetitle}``) is read.
- ``execute``: making this server call a remote one: ``/servers/{name}/get``, ``/stow``, ``/retrieve``
  (a retrieve also writes into our store, so it needs both).

Each route of ``routes.py`` names its ``Access``; a method it does not list is answered 405.

A read-only server (``c.DicomWeb.read_only``) refuses, with a 403 saying so, every request that needs
``write`` unless its route marks that method as keeping the stored data as it is (``keeps_data``:
cancelling a job, sending instances to a remote server). One rule, so a route added later that
changes data is covered by declaring that it needs ``write``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .base import ApiError, DicomWebMixin

RESOURCE = "dicomweb"
READ, WRITE, EXECUTE = "read", "write", "execute"
_READING_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Access:
    """The actions each HTTP method of a route needs: ``read`` for GET, HEAD and OPTIONS, and what
    ``changes`` says for the others (a method in neither is answered 405)."""

    changes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Methods that need ``write`` (they create a job, for instance) but change no stored data: a
    # read-only server still serves them.
    keeps_data: frozenset[str] = frozenset()

    def changes_data(self, method: str) -> bool:
        """Whether the method changes what the server stores (refused by a read-only server)."""
        return WRITE in (self.actions(method) or ()) and method not in self.keeps_data

    def actions(self, method: str) -> tuple[str, ...] | None:
        if method in _READING_METHODS:
            return (READ,)
        return self.changes.get(method)

    def methods(self) -> list[str]:
        return [*_READING_METHODS, *self.changes]


def access(*, keeps_data: tuple[str, ...] = (), **changes: tuple[str, ...]) -> Access:
    """``access(POST=(WRITE,))``: a route that reads with GET and changes things with POST;
    ``keeps_data=("POST",)``: that POST needs ``write`` but leaves the stored data as it is."""
    return Access(dict(changes), frozenset(keeps_data))


def _allow_unauthenticated(method: Any) -> Any:
    # jupyter-server's marker (``@allow_unauthenticated``) for methods that may run without a user:
    # OPTIONS, for the CORS preflight; the handlers' prepare() still authenticates any other OPTIONS.
    setattr(method, "__allow_unauthenticated", True)
    return method


class OneCredentialAuthorizer:
    """``dicomweb-nb serve``: whoever presents its token (or basic password), or anyone when it runs
    without authentication on the loopback interface, may do every action."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return True


class AccessMixin(DicomWebMixin):
    """Checks ``self.access`` (from the route) with ``self.authorizer`` once the user is known."""

    access: Access = Access()
    authorizer: Any  # jupyter-server's Authorizer interface: Jupyter's (in its settings), or OneCredentialAuthorizer

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        """Takes ``access`` from the route's arguments; the rest goes to the next initialize."""
        access = kwargs.pop("access", None)
        if access is not None:
            self.access = access
        super().initialize(*args, **kwargs)

    def allowed_methods(self) -> list[str]:
        """The methods of this URL: those its route grants that its handler implements."""
        from .capabilities import served_methods

        return served_methods(type(self), self.access)

    def is_cors_preflight(self) -> bool:
        headers = self.request.headers
        return self.request.method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers

    @_allow_unauthenticated
    def options(self, *args: Any, **kwargs: Any) -> None:
        """The CORS preflight (no user needed), or the Retrieve Capabilities transaction (needs read):
        the WADL of a resource under the DICOMweb root (``capabilities.py``) with its ``Allow``; elsewhere
        (WADO-URI, Orthanc's /jobs) only the ``Allow`` header."""
        root = self.ctx.root_path
        if not self.is_cors_preflight() and (self.request.path.startswith(root) or self.request.path == root.rstrip("/")):
            from .capabilities import answer_capabilities

            answer_capabilities(self)
            return
        if self.is_cors_preflight():
            allowed = self.ctx.config.cors_origins
            origin = self.request.headers.get("Origin")
            if origin and allowed and ("*" in allowed or origin in allowed):
                self.set_header("Access-Control-Allow-Methods", ", ".join(self.allowed_methods()))
                self.set_header("Access-Control-Allow-Headers",
                                self.request.headers.get("Access-Control-Request-Headers", "Accept, Content-Type, Authorization"))
                self.set_header("Access-Control-Max-Age", "600")
        else:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.set_status(204)
        self.finish()

    async def authorize(self, user: Any) -> None:
        """405 for a method this URL does not serve; 403 unless the authorizer grants every action
        the request needs."""
        method = self.request.method
        actions = self.access.actions(method)
        allowed_methods = self.allowed_methods()
        if actions is None or method not in allowed_methods:
            raise ApiError(405, f"{method} is not supported at {self.request.path} (allowed: {', '.join(allowed_methods)})",
                           Allow=", ".join(allowed_methods))
        for action in actions:
            allowed = self.authorizer.is_authorized(self, user, action, RESOURCE)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                who = getattr(user, "username", None) or "this user"
                raise ApiError(403, f"{who} is not allowed to {action} {RESOURCE!r}: "
                                    f"{method} {self.request.path} needs {' and '.join(actions)}")
        if self.ctx.config.read_only and self.access.changes_data(method):
            raise ApiError(403, f"this server is read-only (c.DicomWeb.read_only): {method} {self.request.path} "
                                "would change the stored data, and is refused")

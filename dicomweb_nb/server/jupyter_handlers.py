"""The handler classes of the jupyter-server extension: each service's mixin over
``JupyterDicomWebHandler``, which authenticates with Jupyter (its IdentityProvider: token, login
cookie, JupyterHub OAuth) and checks the route's access with Jupyter's Authorizer (resource
``dicomweb``). ``routes.py`` maps URLs to these classes; ``standalone_handlers.py`` has the same
classes over the base of ``dicomweb-nb serve``."""

from __future__ import annotations

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.websocket import WebSocketHandler

from .access import AccessMixin
from .base import ApiError, NotFoundMixin
from .changefeed import ChangeFeedLatestMixin, ChangeFeedMixin
from .delete import DeleteMixin
from .jobs import JobCancelMixin, JobMixin, JobsMixin
from .metrics import RequestMetricsMixin
from .proxy import ServerGetMixin, ServerMixin, ServerRetrieveMixin, ServersMixin, ServerStowMixin
from .qido import QidoMixin
from .remote_calls import ServerDeleteMixin, ServerQidoMixin
from .rendered import RenderedMixin, WadoUriMixin
from .stow import StudiesMixin
from .wado import BulkDataMixin, FramesMixin, InstanceMixin, MetadataMixin, ResourceBulkDataMixin, SeriesMixin, StudyMixin
from .webapp import ClientPageMixin, ClientPageRedirectMixin
from .workitems import (
    EventChannelMixin,
    SubscriptionMixin,
    SuspendMixin,
    WorkitemCancelMixin,
    WorkitemMixin,
    WorkitemsMixin,
    WorkitemStateMixin,
)


class JupyterDicomWebHandler(AccessMixin, RequestMetricsMixin, ExtensionHandlerMixin, JupyterHandler):
    """Jupyter's authentication (no redirect to the login page: API clients get 403, as from
    jupyter-server's APIHandler), then the route's access through ``self.authorizer``."""

    # The web client page sends a browser without a session to the login page instead.
    login_redirect = False

    async def prepare(self) -> None:  # type: ignore[override]
        if self.is_cors_preflight():
            return  # answered by options() without a user, as browsers send no credentials
        await JupyterHandler.prepare(self, _redirect_to_login=self.login_redirect)
        if self._finished:  # sent to the login page by Jupyter
            return
        if self.current_user is None:
            # Jupyter leaves it to handlers while ServerApp.allow_unauthenticated_access is on.
            if self.login_redirect and self.request.method in ("GET", "HEAD"):
                web.authenticated(lambda handler: None)(self)  # to Jupyter's login page, with next=
                return
            raise ApiError(403, "not authenticated: send the Jupyter token ('Authorization: token <token>')")
        await self.authorize(self.current_user)


# -- DICOMweb (PS3.18) --------------------------------------------------------------------------------

@web.stream_request_body
class StudiesHandler(StudiesMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}studies``: QIDO-RS search (GET), STOW-RS (POST)."""


@web.stream_request_body
class StudyHandler(StudyMixin, DeleteMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}studies/{study}``: WADO-RS retrieve (GET), STOW-RS into that study (POST), delete (DELETE)."""


class QidoHandler(QidoMixin, JupyterDicomWebHandler):
    """QIDO-RS searches of series and instances."""


class SeriesHandler(SeriesMixin, DeleteMixin, JupyterDicomWebHandler):
    """WADO-RS retrieve of a series (GET), delete (DELETE)."""


class InstanceHandler(InstanceMixin, DeleteMixin, JupyterDicomWebHandler):
    """WADO-RS retrieve of an instance (GET), delete (DELETE)."""


class MetadataHandler(MetadataMixin, JupyterDicomWebHandler):
    """WADO-RS metadata at every level."""


class FramesHandler(FramesMixin, JupyterDicomWebHandler):
    """WADO-RS frames."""


class RenderedHandler(RenderedMixin, JupyterDicomWebHandler):
    """Rendered images and thumbnails at every level."""


class BulkDataHandler(BulkDataMixin, JupyterDicomWebHandler):
    """A BulkDataURI (``.../bulk/{tag path}``)."""


class ResourceBulkDataHandler(ResourceBulkDataMixin, JupyterDicomWebHandler):
    """Retrieve Bulkdata of a study, series or instance."""


class WadoUriHandler(WadoUriMixin, JupyterDicomWebHandler):
    """WADO-URI (``{wado_root}?requestType=WADO&...``)."""


class ChangeFeedHandler(ChangeFeedMixin, JupyterDicomWebHandler):
    """``{root}changefeed``: the change feed (Azure's)."""


class ChangeFeedLatestHandler(ChangeFeedLatestMixin, JupyterDicomWebHandler):
    """``{root}changefeed/latest``."""


class NotFoundHandler(NotFoundMixin, JupyterDicomWebHandler):
    """Any other path under the root: a JSON 404."""


# -- the worklist (UPS-RS, PS3.18 11) -----------------------------------------------------------------

@web.stream_request_body
class WorkitemsHandler(WorkitemsMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}workitems``: search (GET), create (POST)."""


@web.stream_request_body
class WorkitemHandler(WorkitemMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}workitems/{uid}``: retrieve (GET), update (POST)."""


@web.stream_request_body
class WorkitemStateHandler(WorkitemStateMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}workitems/{uid}/state``: change the state (PUT)."""


@web.stream_request_body
class WorkitemCancelHandler(WorkitemCancelMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}workitems/{uid}/cancelrequest``: request cancellation (POST)."""


@web.stream_request_body
class SubscriptionHandler(SubscriptionMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}workitems/{uid}/subscribers/{aetitle}``: subscribe (POST), unsubscribe (DELETE)."""


@web.stream_request_body
class SuspendHandler(SuspendMixin, JupyterDicomWebHandler):  # type: ignore[misc]  # prepare() takes no _redirect_to_login
    """``{root}workitems/{worklist UID}/subscribers/{aetitle}/suspend``: suspend (POST)."""


class EventChannelHandler(EventChannelMixin, WebSocketHandler, JupyterDicomWebHandler):  # type: ignore[misc]
    """``{root}subscribers/{aetitle}``: the notification channel of an AE title (WebSocket)."""


# -- the client proxy, its jobs, the web client page ----------------------------------------------------

class ServersHandler(ServersMixin, JupyterDicomWebHandler):
    """``{root}servers``."""


class ServerHandler(ServerMixin, JupyterDicomWebHandler):
    """``{root}servers/{name}``: GET, PUT, DELETE."""


class ServerGetHandler(ServerGetMixin, JupyterDicomWebHandler):
    """``{root}servers/{name}/get``."""


class ServerQidoHandler(ServerQidoMixin, JupyterDicomWebHandler):
    """``{root}servers/{name}/qido``."""


class ServerDeleteHandler(ServerDeleteMixin, JupyterDicomWebHandler):
    """``{root}servers/{name}/delete``."""


class ServerStowHandler(ServerStowMixin, JupyterDicomWebHandler):
    """``{root}servers/{name}/stow``."""


class ServerRetrieveHandler(ServerRetrieveMixin, JupyterDicomWebHandler):
    """``{root}servers/{name}/retrieve``."""


class JobsHandler(JobsMixin, JupyterDicomWebHandler):
    """``{root}jobs``."""


class JobHandler(JobMixin, JupyterDicomWebHandler):
    """``{root}jobs/{id}``."""


class JobCancelHandler(JobCancelMixin, JupyterDicomWebHandler):
    """``{root}jobs/{id}/cancel``."""


class ClientPageRedirectHandler(ClientPageRedirectMixin, JupyterDicomWebHandler):
    """``{root}app/client`` -> ``{root}app/client/``."""


class ClientPageHandler(ClientPageMixin, JupyterDicomWebHandler):
    """The web client page's files."""

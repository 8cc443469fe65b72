"""The handler classes of ``dicomweb-nb serve``: each service's mixin over ``StandaloneHandler``,
which authenticates with the server's token or HTTP basic credentials. ``routes.py`` maps URLs to
these classes; ``jupyter_handlers.py`` has the same classes over Jupyter's base."""

from __future__ import annotations

import base64
import hmac

from tornado import web
from tornado.websocket import WebSocketHandler

from .access import AccessMixin, OneCredentialAuthorizer
from .base import ApiError, DicomWebContext, NotFoundMixin
from .changefeed import ChangeFeedLatestMixin, ChangeFeedMixin
from .delete import DeleteMixin
from .jobs import JobCancelMixin, JobMixin, JobsMixin
from .metrics import MetricsMixin, RequestMetricsMixin
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


class StandaloneHandler(AccessMixin, RequestMetricsMixin, web.RequestHandler):
    """Optional token or HTTP basic authentication (``--token``, ``--basic-auth``), then the route's
    access through ``OneCredentialAuthorizer``: the one credential may do everything."""

    authorizer = OneCredentialAuthorizer()

    def check_xsrf_cookie(self) -> None:
        return  # API server: no cookies are used for authentication, so there is nothing to forge

    async def prepare(self) -> None:
        if self.is_cors_preflight():
            return
        self.current_user = self._authenticated_user()
        await self.authorize(self.current_user)

    def _authenticated_user(self) -> str:
        ctx: DicomWebContext = self.ctx
        if ctx.auth_token is None and ctx.basic_auth is None:
            return "anonymous"  # loopback only, unless --allow-unauthenticated (see cli.py)
        header = self.request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if ctx.auth_token is not None:
            supplied = credentials.strip() if scheme in ("bearer", "token") else self.get_query_argument("token", "")
            if supplied and hmac.compare_digest(supplied, ctx.auth_token):
                return "token"
        if ctx.basic_auth is not None and scheme == "basic":
            try:
                user, _, password = base64.b64decode(credentials.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                user = password = ""
            if hmac.compare_digest(user, ctx.basic_auth[0]) and hmac.compare_digest(password, ctx.basic_auth[1]):
                return user
        challenge = 'Basic realm="dicomweb-nb"' if ctx.basic_auth else 'Bearer realm="dicomweb-nb"'
        raise ApiError(401, "authentication required: send 'Authorization: Bearer <token>' (or basic credentials)",
                       WWW_Authenticate=challenge)


# -- DICOMweb (PS3.18) --------------------------------------------------------------------------------

@web.stream_request_body
class StudiesHandler(StudiesMixin, StandaloneHandler):
    """``{root}studies``: QIDO-RS search (GET), STOW-RS (POST)."""


@web.stream_request_body
class StudyHandler(StudyMixin, DeleteMixin, StandaloneHandler):
    """``{root}studies/{study}``: WADO-RS retrieve (GET), STOW-RS into that study (POST), delete (DELETE)."""


class QidoHandler(QidoMixin, StandaloneHandler):
    """QIDO-RS searches of series and instances."""


class SeriesHandler(SeriesMixin, DeleteMixin, StandaloneHandler):
    """WADO-RS retrieve of a series (GET), delete (DELETE)."""


class InstanceHandler(InstanceMixin, DeleteMixin, StandaloneHandler):
    """WADO-RS retrieve of an instance (GET), delete (DELETE)."""


class MetadataHandler(MetadataMixin, StandaloneHandler):
    """WADO-RS metadata at every level."""


class FramesHandler(FramesMixin, StandaloneHandler):
    """WADO-RS frames."""


class RenderedHandler(RenderedMixin, StandaloneHandler):
    """Rendered images and thumbnails at every level."""


class BulkDataHandler(BulkDataMixin, StandaloneHandler):
    """A BulkDataURI (``.../bulk/{tag path}``)."""


class ResourceBulkDataHandler(ResourceBulkDataMixin, StandaloneHandler):
    """Retrieve Bulkdata of a study, series or instance."""


class WadoUriHandler(WadoUriMixin, StandaloneHandler):
    """WADO-URI (``{wado_root}?requestType=WADO&...``)."""


class ChangeFeedHandler(ChangeFeedMixin, StandaloneHandler):
    """``{root}changefeed``: the change feed (Azure's)."""


class ChangeFeedLatestHandler(ChangeFeedLatestMixin, StandaloneHandler):
    """``{root}changefeed/latest``."""


class NotFoundHandler(NotFoundMixin, StandaloneHandler):
    """Any other path under the root: a JSON 404."""


# -- the worklist (UPS-RS, PS3.18 11) -----------------------------------------------------------------

@web.stream_request_body
class WorkitemsHandler(WorkitemsMixin, StandaloneHandler):
    """``{root}workitems``: search (GET), create (POST)."""


@web.stream_request_body
class WorkitemHandler(WorkitemMixin, StandaloneHandler):
    """``{root}workitems/{uid}``: retrieve (GET), update (POST)."""


@web.stream_request_body
class WorkitemStateHandler(WorkitemStateMixin, StandaloneHandler):
    """``{root}workitems/{uid}/state``: change the state (PUT)."""


@web.stream_request_body
class WorkitemCancelHandler(WorkitemCancelMixin, StandaloneHandler):
    """``{root}workitems/{uid}/cancelrequest``: request cancellation (POST)."""


@web.stream_request_body
class SubscriptionHandler(SubscriptionMixin, StandaloneHandler):
    """``{root}workitems/{uid}/subscribers/{aetitle}``: subscribe (POST), unsubscribe (DELETE)."""


@web.stream_request_body
class SuspendHandler(SuspendMixin, StandaloneHandler):
    """``{root}workitems/{worklist UID}/subscribers/{aetitle}/suspend``: suspend (POST)."""


class EventChannelHandler(EventChannelMixin, WebSocketHandler, StandaloneHandler):
    """``{root}subscribers/{aetitle}``: the notification channel of an AE title (WebSocket)."""


# -- the client proxy, its jobs, the web client page ----------------------------------------------------

class ServersHandler(ServersMixin, StandaloneHandler):
    """``{root}servers``."""


class ServerHandler(ServerMixin, StandaloneHandler):
    """``{root}servers/{name}``: GET, PUT, DELETE."""


class ServerGetHandler(ServerGetMixin, StandaloneHandler):
    """``{root}servers/{name}/get``."""


class ServerQidoHandler(ServerQidoMixin, StandaloneHandler):
    """``{root}servers/{name}/qido``."""


class ServerDeleteHandler(ServerDeleteMixin, StandaloneHandler):
    """``{root}servers/{name}/delete``."""


class ServerStowHandler(ServerStowMixin, StandaloneHandler):
    """``{root}servers/{name}/stow``."""


class ServerRetrieveHandler(ServerRetrieveMixin, StandaloneHandler):
    """``{root}servers/{name}/retrieve``."""


class JobsHandler(JobsMixin, StandaloneHandler):
    """``jobs``: under the root, and at the server's root as in Orthanc."""


class JobHandler(JobMixin, StandaloneHandler):
    """``jobs/{id}``."""


class JobCancelHandler(JobCancelMixin, StandaloneHandler):
    """``jobs/{id}/cancel``."""


class ClientPageRedirectHandler(ClientPageRedirectMixin, StandaloneHandler):
    """``{root}app/client`` -> ``{root}app/client/``."""


class ClientPageHandler(ClientPageMixin, StandaloneHandler):
    """The web client page's files."""


class MetricsHandler(MetricsMixin, StandaloneHandler):
    """``/metrics``: Prometheus metrics (under Jupyter, Jupyter's own /metrics has them)."""

"""The URL table of the DICOMweb API and the access each route needs, for both mount points.

``build_routes(handlers, ...)`` takes the module of one mount point's handler classes
(``standalone_handlers`` or ``jupyter_handlers``: the same class names over two bases) and gives
tornado's route list. Each row names its handler class and its ``Access`` (``access.py``): GET, HEAD
and OPTIONS read; the other methods say what they need.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .access import EXECUTE, READ, WRITE, Access, access

_SEG = r"([^/]+)"  # UIDs are validated in the handlers, so a bad one gets a 400 that says why
_NAME = r"([^/]+)"

Route = tuple[str, type, dict[str, Any]]

# -- access of each kind of route ---------------------------------------------------------------
READ_ONLY = access()
STOW = access(POST=(WRITE,))  # the search URL that also takes STOW-RS
STUDY = access(POST=(WRITE,), DELETE=(WRITE,))  # retrieve, STOW-RS into it, delete it
DELETABLE = access(DELETE=(WRITE,))  # a series or instance: retrieve, delete
CHANGE_SERVER = access(PUT=(WRITE,), DELETE=(WRITE,))
# /servers/{name}/get, /qido, /delete: this server calls the remote and answers back (a /delete
# changes the remote's data, not this server's).
CALL_REMOTE = access(POST=(EXECUTE,))
# /servers/{name}/stow and /retrieve: transfers run as jobs (a change of this server); a retrieve
# stores what it gets, a stow only sends (a read-only server still sends).
SEND = access(POST=(EXECUTE, WRITE), keeps_data=("POST",))
RETRIEVE = access(POST=(EXECUTE, WRITE))
CANCEL_JOB = access(POST=(WRITE,), keeps_data=("POST",))
# The worklist (UPS-RS): creating, updating, claiming, completing, canceling and subscribing change it.
WORKLIST_CHANGE = access(POST=(WRITE,))
WORKITEM_STATE = access(PUT=(WRITE,))
WORKITEM_SUBSCRIPTION = access(POST=(WRITE,), DELETE=(WRITE,))
# Any other path under the root: a 404 whatever the method, which reads nothing and changes nothing.
NOWHERE = access(POST=(READ,), PUT=(READ,), DELETE=(READ,), PATCH=(READ,))


def _row(pattern: str, handler: type, route_access: Access, **kwargs: Any) -> Route:
    return (pattern, handler, {"access": route_access, **kwargs})


def build_routes(handlers: ModuleType, root: str, wado: str | None) -> list[Route]:
    """Routes for a DICOMweb root at URL path ``root`` (ending in /) and WADO-URI at ``wado`` (None:
    off), with the handler classes of ``handlers``. Under Jupyter the paths are relative to its
    base_url, which jupyter-server puts in front."""
    h, r = handlers, root
    st, se, inst = f"studies/{_SEG}", f"series/{_SEG}", f"instances/{_SEG}"
    routes: list[Route] = [
        _row(rf"{r}studies/?", h.StudiesHandler, STOW, level="study"),
        _row(rf"{r}series/?", h.QidoHandler, READ_ONLY, level="series"),
        _row(rf"{r}instances/?", h.QidoHandler, READ_ONLY, level="instance"),
        _row(rf"{r}{st}/?", h.StudyHandler, STUDY),
        _row(rf"{r}{st}/series/?", h.QidoHandler, READ_ONLY, level="series"),
        _row(rf"{r}{st}/instances/?", h.QidoHandler, READ_ONLY, level="instance"),
        _row(rf"{r}{st}/{se}/?", h.SeriesHandler, DELETABLE),
        _row(rf"{r}{st}/{se}/instances/?", h.QidoHandler, READ_ONLY, level="instance"),
        _row(rf"{r}{st}/{se}/{inst}/?", h.InstanceHandler, DELETABLE),
        _row(rf"{r}{st}/metadata/?", h.MetadataHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/metadata/?", h.MetadataHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/{inst}/metadata/?", h.MetadataHandler, READ_ONLY),
        _row(rf"{r}{st}/(rendered|thumbnail)/?", h.RenderedHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/(rendered|thumbnail)/?", h.RenderedHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/{inst}/(rendered|thumbnail)/?", h.RenderedHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/{inst}/frames/{_SEG}/?", h.FramesHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/{inst}/frames/{_SEG}/(rendered|thumbnail)/?", h.RenderedHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/{inst}/bulk/(.+)", h.BulkDataHandler, READ_ONLY),
        _row(rf"{r}{st}/bulkdata/?", h.ResourceBulkDataHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/bulkdata/?", h.ResourceBulkDataHandler, READ_ONLY),
        _row(rf"{r}{st}/{se}/{inst}/bulkdata/?", h.ResourceBulkDataHandler, READ_ONLY),
        # The change feed (Azure's): version 2 at changefeed and v2/changefeed, version 1 at v1/changefeed.
        _row(rf"{r}changefeed/?", h.ChangeFeedHandler, READ_ONLY, version=2),
        _row(rf"{r}changefeed/latest/?", h.ChangeFeedLatestHandler, READ_ONLY, version=2),
        _row(rf"{r}v1/changefeed/?", h.ChangeFeedHandler, READ_ONLY, version=1),
        _row(rf"{r}v1/changefeed/latest/?", h.ChangeFeedLatestHandler, READ_ONLY, version=1),
        _row(rf"{r}v2/changefeed/?", h.ChangeFeedHandler, READ_ONLY, version=2),
        _row(rf"{r}v2/changefeed/latest/?", h.ChangeFeedLatestHandler, READ_ONLY, version=2),
        *workitems_routes(h, r),
        # The client proxy (Orthanc's /servers API), its jobs, and the web client page.
        _row(rf"{r}servers/?", h.ServersHandler, READ_ONLY),
        _row(rf"{r}servers/{_NAME}/?", h.ServerHandler, CHANGE_SERVER),
        _row(rf"{r}servers/{_NAME}/get/?", h.ServerGetHandler, CALL_REMOTE),
        _row(rf"{r}servers/{_NAME}/qido/?", h.ServerQidoHandler, CALL_REMOTE),
        _row(rf"{r}servers/{_NAME}/delete/?", h.ServerDeleteHandler, CALL_REMOTE),
        _row(rf"{r}servers/{_NAME}/stow/?", h.ServerStowHandler, SEND),
        _row(rf"{r}servers/{_NAME}/retrieve/?", h.ServerRetrieveHandler, RETRIEVE),
        *jobs_routes(h, r),
        _row(rf"{r}app/client", h.ClientPageRedirectHandler, READ_ONLY),
        _row(rf"{r}app/client/([A-Za-z0-9_.-]*)", h.ClientPageHandler, READ_ONLY),
        # The root itself (OPTIONS there describes everything) and any other path under it: 404.
        _row(rf"{r}?", h.NotFoundHandler, NOWHERE),
        _row(rf"{r}.*", h.NotFoundHandler, NOWHERE),
    ]
    if wado:
        routes.insert(0, _row(rf"{wado}/?", h.WadoUriHandler, READ_ONLY))
    return routes


def workitems_routes(handlers: ModuleType, root: str) -> list[Route]:
    """The Worklist Service (UPS-RS, PS3.18 11; ``workitems.py``) and its notification channels."""
    h, wi = handlers, f"{root}workitems/{_SEG}"
    return [
        _row(rf"{root}workitems/?", h.WorkitemsHandler, WORKLIST_CHANGE),
        _row(rf"{wi}/?", h.WorkitemHandler, WORKLIST_CHANGE),
        _row(rf"{wi}/state/?", h.WorkitemStateHandler, WORKITEM_STATE),
        _row(rf"{wi}/cancelrequest/?", h.WorkitemCancelHandler, WORKLIST_CHANGE),
        _row(rf"{wi}/subscribers/{_NAME}/?", h.SubscriptionHandler, WORKITEM_SUBSCRIPTION),
        _row(rf"{wi}/subscribers/{_NAME}/suspend/?", h.SuspendHandler, WORKLIST_CHANGE),
        _row(rf"{root}subscribers/{_NAME}/?", h.EventChannelHandler, READ_ONLY),
    ]


def jobs_routes(handlers: ModuleType, root: str) -> list[Route]:
    """``{root}jobs``, ``{root}jobs/{id}``, ``{root}jobs/{id}/cancel``. The standalone server also
    mounts them at its own root, where Orthanc keeps them (``{orthanc}/jobs/{id}`` in scripts)."""
    h = handlers
    return [
        _row(rf"{root}jobs/?", h.JobsHandler, READ_ONLY),
        _row(rf"{root}jobs/{_NAME}/?", h.JobHandler, READ_ONLY),
        _row(rf"{root}jobs/{_NAME}/cancel/?", h.JobCancelHandler, CANCEL_JOB),
    ]

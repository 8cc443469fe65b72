"""The URL table of the DICOMweb API, built over either handler base (extension or standalone)."""

from __future__ import annotations

from typing import Any

from tornado.web import stream_request_body

from .base import ApiError, DicomWebMixin
from .qido import QidoMixin
from .stow import StowMixin

_SEG = r"([^/]+)"  # UIDs are validated in the handlers, so a bad one gets a 400 that says why


class StudiesMixin(StowMixin, QidoMixin):
    """``/studies``: GET searches studies (QIDO-RS), POST stores instances (STOW-RS)."""


class NotFoundMixin(DicomWebMixin):
    """Any other path under the DICOMweb root: a JSON 404 naming the path."""

    def _unknown(self, *args: Any, **kwargs: Any) -> None:
        raise ApiError(404, f"no DICOMweb resource at {self.request.path} (see PS3.18 for the URL forms served here)")

    get = post = put = delete = head = patch = _unknown


def _handler(name: str, mixins: tuple[type, ...], base: type, streaming: bool = False) -> type:
    cls = type(name, (*mixins, base), {})
    return stream_request_body(cls) if streaming else cls


def proxy_routes(base: type, r: str) -> list[tuple[str, type, dict[str, Any]]]:
    """The DICOMweb client proxy (Orthanc's ``/servers`` API), its jobs, and the web client page."""
    from .jobs import JobCancelMixin, JobMixin, JobsMixin
    from .proxy import ServerGetMixin, ServerMixin, ServerRetrieveMixin, ServersMixin, ServerStowMixin
    from .webapp import ClientPageMixin, ClientPageRedirectMixin

    name = r"([^/]+)"
    return [
        (rf"{r}servers/?", _handler("ServersHandler", (ServersMixin,), base), {}),
        (rf"{r}servers/{name}/?", _handler("ServerHandler", (ServerMixin,), base), {}),
        (rf"{r}servers/{name}/get/?", _handler("ServerGetHandler", (ServerGetMixin,), base), {}),
        (rf"{r}servers/{name}/stow/?", _handler("ServerStowHandler", (ServerStowMixin,), base), {}),
        (rf"{r}servers/{name}/retrieve/?", _handler("ServerRetrieveHandler", (ServerRetrieveMixin,), base), {}),
        (rf"{r}jobs/?", _handler("JobsHandler", (JobsMixin,), base), {}),
        (rf"{r}jobs/{name}/?", _handler("JobHandler", (JobMixin,), base), {}),
        (rf"{r}jobs/{name}/cancel/?", _handler("JobCancelHandler", (JobCancelMixin,), base), {}),
        (rf"{r}app/client", _handler("ClientPageRedirectHandler", (ClientPageRedirectMixin,), base), {}),
        (rf"{r}app/client/([A-Za-z0-9_.-]*)", _handler("ClientPageHandler", (ClientPageMixin,), base), {}),
    ]


def orthanc_jobs_routes(base: type, base_url: str = "/") -> list[tuple[str, type, dict[str, Any]]]:
    """``/jobs`` at the server's root, where Orthanc keeps them (``{orthanc}/jobs/{id}`` in scripts):
    the same jobs as ``{root}/jobs``. Only for the standalone server, which owns its root."""
    from .jobs import JobCancelMixin, JobMixin, JobsMixin

    r = base_url if base_url.endswith("/") else base_url + "/"
    return [
        (rf"{r}jobs/?", _handler("RootJobsHandler", (JobsMixin,), base), {}),
        (rf"{r}jobs/([^/]+)/?", _handler("RootJobHandler", (JobMixin,), base), {}),
        (rf"{r}jobs/([^/]+)/cancel/?", _handler("RootJobCancelHandler", (JobCancelMixin,), base), {}),
    ]


def build_routes(base: type, root_path: str, wado_path: str | None) -> list[tuple[str, type, dict[str, Any]]]:
    """Routes for a DICOMweb server whose root is ``root_path`` (absolute URL path ending in /).

    ``base`` is the RequestHandler subclass that authenticates (see base.py).
    """
    from .rendered import RenderedMixin, WadoUriMixin
    from .wado import (
        BulkDataMixin,
        FramesMixin,
        InstanceMixin,
        MetadataMixin,
        ResourceBulkDataMixin,
        SeriesMixin,
        StudyMixin,
    )

    r = root_path
    studies = _handler("StudiesHandler", (StudiesMixin,), base, streaming=True)
    study = _handler("StudyHandler", (StudyMixin,), base, streaming=True)
    qido = _handler("QidoHandler", (QidoMixin,), base)
    series = _handler("SeriesHandler", (SeriesMixin,), base)
    instance = _handler("InstanceHandler", (InstanceMixin,), base)
    metadata = _handler("MetadataHandler", (MetadataMixin,), base)
    frames = _handler("FramesHandler", (FramesMixin,), base)
    rendered = _handler("RenderedHandler", (RenderedMixin,), base)
    bulk = _handler("BulkDataHandler", (BulkDataMixin,), base)
    bulkdata = _handler("ResourceBulkDataHandler", (ResourceBulkDataMixin,), base)
    not_found = _handler("DicomWebNotFoundHandler", (NotFoundMixin,), base)
    st, se, inst = f"studies/{_SEG}", f"series/{_SEG}", f"instances/{_SEG}"
    routes: list[tuple[str, type, dict[str, Any]]] = [
        (rf"{r}studies/?", studies, {"level": "study"}),
        (rf"{r}series/?", qido, {"level": "series"}),
        (rf"{r}instances/?", qido, {"level": "instance"}),
        (rf"{r}{st}/?", study, {}),
        (rf"{r}{st}/series/?", qido, {"level": "series"}),
        (rf"{r}{st}/instances/?", qido, {"level": "instance"}),
        (rf"{r}{st}/{se}/?", series, {}),
        (rf"{r}{st}/{se}/instances/?", qido, {"level": "instance"}),
        (rf"{r}{st}/{se}/{inst}/?", instance, {}),
        (rf"{r}{st}/metadata/?", metadata, {}),
        (rf"{r}{st}/{se}/metadata/?", metadata, {}),
        (rf"{r}{st}/{se}/{inst}/metadata/?", metadata, {}),
        (rf"{r}{st}/(rendered|thumbnail)/?", rendered, {}),
        (rf"{r}{st}/{se}/(rendered|thumbnail)/?", rendered, {}),
        (rf"{r}{st}/{se}/{inst}/(rendered|thumbnail)/?", rendered, {}),
        (rf"{r}{st}/{se}/{inst}/frames/{_SEG}/?", frames, {}),
        (rf"{r}{st}/{se}/{inst}/frames/{_SEG}/(rendered|thumbnail)/?", rendered, {}),
        (rf"{r}{st}/{se}/{inst}/bulk/(.+)", bulk, {}),
        (rf"{r}{st}/bulkdata/?", bulkdata, {}),
        (rf"{r}{st}/{se}/bulkdata/?", bulkdata, {}),
        (rf"{r}{st}/{se}/{inst}/bulkdata/?", bulkdata, {}),
    ]
    routes += proxy_routes(base, r)
    routes.append((rf"{r}.*", not_found, {}))
    if wado_path:
        routes.insert(0, (rf"{wado_path}/?", _handler("WadoUriHandler", (WadoUriMixin,), base), {}))
    return routes

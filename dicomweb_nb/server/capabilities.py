"""The Retrieve Capabilities transaction (PS3.18 8.9, Annex H): ``OPTIONS {root}`` and ``OPTIONS`` on
each resource under it answer a WADL document describing the resource and its children: every
method, the transaction it is (``id``, Table H-1's names), the media types it answers and takes,
the transfer syntaxes, the query parameters (QIDO-RS matching keys among them).

Generated from the route table (``routes.build_routes``) and the handler classes in it, so it can
not list a URL or a method the server does not serve, nor leave one out: each (handler, method) of
the table must have its description in ``TRANSACTIONS`` (``describe`` raises otherwise, and the
tests check every route). The same descriptions name the service of each request in the metrics.

``Accept: application/vnd.sun.wadl+xml`` (the default) or ``application/xml`` gives WADL XML;
``application/json`` the same tree as JSON (as PS3.18 2017 allowed): elements are objects, their
attributes keys, repeated children lists under the element's name.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from tornado.web import RequestHandler

from ..dicom import mediatypes as mt
from ..pixels.encode import TARGET_TRANSFER_SYNTAXES
from ..pixels.render import RENDERED_MEDIA_TYPES
from ..store.changefeed import FEED_PARAMETERS
from ..store.schema import INDEXED_COLUMNS
from . import queryparams as qp
from .access import Access

WADL = "application/vnd.sun.wadl+xml"
WADL_NS = "http://wadl.dev.java.net/2009/02"
OFFERS = [WADL, "application/xml", mt.JSON]
_XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'
_DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
_OCTET_MULTIPART = 'multipart/related; type="application/octet-stream"'
# Transfer syntaxes an instance or frame can be asked in: as stored ("*"), or converted to these.
TRANSFER_SYNTAXES = ("*", *sorted(TARGET_TRANSFER_SYNTAXES | {str(ExplicitVRLittleEndian)}))
_FRAME_TYPES = tuple(sorted({_OCTET_MULTIPART,
                             *(f'multipart/related; type="{t}"' for t in mt.TRANSFER_SYNTAX_MEDIA_TYPES.values())}))

# Template names of the URL groups, by the literal segment before them (PS3.18 Table H-1's names).
_TEMPLATES = {"studies": "StudyInstanceUID", "series": "SeriesInstanceUID", "instances": "SOPInstanceUID",
              "frames": "frameList", "bulk": "attributePath", "servers": "name", "jobs": "id", "client": "file",
              "workitems": "workitem", "subscribers": "AETitle"}
_LEVELS = {"studies": "Study", "series": "Series", "instances": "Instance"}

# -- what each handler's methods are --------------------------------------------------------------


@dataclass(frozen=True)
class Transaction:
    """One method of a resource: its transaction name (``{Level}`` / ``{Kind}`` / ``{Search}`` are
    filled from the URL), the service it belongs to, what it answers and takes, its query parameters."""

    name: str
    service: str
    produces: tuple[str, ...] = (mt.JSON,)
    consumes: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    status: int = 200
    transfer_syntaxes: bool = False  # the Accept takes a transfer-syntax parameter


def _qido_keys() -> tuple[str, ...]:
    keys = [c.keyword for c in INDEXED_COLUMNS] + ["ModalitiesInStudy", "SOPClassesInStudy"]
    return ("includefield", "fuzzymatching", "limit", "offset", "emptyvaluematching", "multiplevaluematching", *keys,
            "{attributeID}")


def _worklist_keys() -> tuple[str, ...]:
    return ("includefield", "fuzzymatching", "limit", "offset", "{attributeID}")


_WORKITEM_TYPES = (mt.DICOM_JSON, mt.JSON, _XML_MULTIPART)
_WORKITEM_BODY = (mt.DICOM_JSON, _XML_MULTIPART)
_RETRIEVE: dict[str, Any] = dict(service="WADO-RS", produces=(_DICOM_MULTIPART, mt.ZIP), transfer_syntaxes=True)
_METADATA: dict[str, Any] = dict(service="WADO-RS", produces=(mt.DICOM_JSON, mt.JSON, _XML_MULTIPART),
                                 query=tuple(sorted(qp.METADATA)))
_RENDERED: dict[str, Any] = dict(produces=tuple(RENDERED_MEDIA_TYPES), query=tuple(sorted(qp.RENDERED)))
_DELETE: dict[str, Any] = dict(service="delete", produces=(), status=204)
_PROXY: dict[str, Any] = dict(service="proxy", consumes=(mt.JSON,))

TRANSACTIONS: dict[str, dict[str, Transaction]] = {
    "StudiesHandler": {
        "GET": Transaction("SearchForStudies", "QIDO-RS", (mt.DICOM_JSON, mt.JSON, _XML_MULTIPART), query=_qido_keys()),
        "POST": Transaction("StoreInstances", "STOW-RS", (mt.DICOM_JSON, mt.JSON, mt.DICOM_XML),
                            consumes=(_DICOM_MULTIPART, mt.DICOM)),
    },
    "QidoHandler": {"GET": Transaction("{Search}", "QIDO-RS", (mt.DICOM_JSON, mt.JSON, _XML_MULTIPART), query=_qido_keys())},
    "StudyHandler": {
        "GET": Transaction("RetrieveStudy", **_RETRIEVE),
        "POST": Transaction("StoreStudyInstances", "STOW-RS", (mt.DICOM_JSON, mt.JSON, mt.DICOM_XML),
                            consumes=(_DICOM_MULTIPART, mt.DICOM)),
        "DELETE": Transaction("DeleteStudy", **_DELETE),
    },
    "SeriesHandler": {"GET": Transaction("RetrieveSeries", **_RETRIEVE), "DELETE": Transaction("DeleteSeries", **_DELETE)},
    "InstanceHandler": {"GET": Transaction("RetrieveInstance", **{**_RETRIEVE, "produces": (_DICOM_MULTIPART, mt.DICOM, mt.ZIP)}),
                        "DELETE": Transaction("DeleteInstance", **_DELETE)},
    "MetadataHandler": {"GET": Transaction("Retrieve{Level}Metadata", **_METADATA)},
    "RenderedHandler": {"GET": Transaction("Retrieve{Level}{Kind}", service="{kind}", **_RENDERED)},
    "FramesHandler": {"GET": Transaction("RetrieveFrames", "WADO-RS", _FRAME_TYPES, query=tuple(sorted(qp.FRAMES)),
                                         transfer_syntaxes=True)},
    "BulkDataHandler": {"GET": Transaction("RetrieveBulkdata", "WADO-RS", (mt.OCTET_STREAM, _OCTET_MULTIPART),
                                           query=tuple(sorted(qp.BULKDATA)))},
    "ResourceBulkDataHandler": {"GET": Transaction("Retrieve{Level}Bulkdata", "WADO-RS", (_OCTET_MULTIPART,),
                                                   query=tuple(sorted(qp.BULKDATA)), transfer_syntaxes=True)},
    "WadoUriHandler": {"GET": Transaction("RetrieveWadoUri", "WADO-URI", (mt.DICOM, "image/jpeg", "image/png", "image/gif"),
                                          query=tuple(sorted(qp.WADO_URI)))},
    "ChangeFeedHandler": {"GET": Transaction("ChangeFeed", "changefeed", query=FEED_PARAMETERS)},
    "ChangeFeedLatestHandler": {"GET": Transaction("ChangeFeedLatest", "changefeed", query=("includeMetadata",))},
    "ServersHandler": {"GET": Transaction("ListServers", "proxy", query=("expand",))},
    "ServerHandler": {"GET": Transaction("ServerOperations", "proxy", query=("expand",)),
                      "PUT": Transaction("PutServer", **_PROXY), "DELETE": Transaction("DeleteServer", "proxy")},
    "ServerGetHandler": {"POST": Transaction("ServerGet", "proxy", ("*/*",), consumes=(mt.JSON,))},
    "ServerQidoHandler": {"POST": Transaction("ServerQido", **_PROXY)},
    "ServerDeleteHandler": {"POST": Transaction("ServerDelete", **_PROXY)},
    "ServerStowHandler": {"POST": Transaction("ServerStow", **_PROXY)},
    "ServerRetrieveHandler": {"POST": Transaction("ServerRetrieve", **_PROXY)},
    "JobsHandler": {"GET": Transaction("ListJobs", "jobs", query=("expand",))},
    "JobHandler": {"GET": Transaction("GetJob", "jobs")},
    "JobCancelHandler": {"POST": Transaction("CancelJob", "jobs")},
    "ClientPageRedirectHandler": {"GET": Transaction("WebClient", "web client", ("text/html",), status=301)},
    "ClientPageHandler": {"GET": Transaction("WebClient", "web client", ("text/html", "text/css", "text/javascript"))},
    "MetricsHandler": {"GET": Transaction("Metrics", "metrics", ("text/plain",))},
    # The worklist (UPS-RS, PS3.18 11; Table 11.1-1's transaction names).
    "WorkitemsHandler": {
        "GET": Transaction("SearchForWorkitems", "UPS-RS", _WORKITEM_TYPES, query=_worklist_keys()),
        "POST": Transaction("CreateWorkitem", "UPS-RS", (), consumes=_WORKITEM_BODY, query=("{workitem}",), status=201),
    },
    "WorkitemHandler": {
        "GET": Transaction("RetrieveWorkitem", "UPS-RS", _WORKITEM_TYPES),
        "POST": Transaction("UpdateWorkitem", "UPS-RS", (), consumes=_WORKITEM_BODY, query=("{transaction-uid}",)),
    },
    "WorkitemStateHandler": {"PUT": Transaction("ChangeWorkitemState", "UPS-RS", (), consumes=_WORKITEM_BODY)},
    "WorkitemCancelHandler": {"POST": Transaction("RequestCancellation", "UPS-RS", (), consumes=_WORKITEM_BODY, status=202)},
    "SubscriptionHandler": {
        "POST": Transaction("CreateSubscription", "UPS-RS", (), query=("deletionlock", "filter"), status=201),
        "DELETE": Transaction("DeleteSubscription", "UPS-RS", ()),
    },
    "SuspendHandler": {"POST": Transaction("SuspendGlobalSubscription", "UPS-RS", ())},
    "EventChannelHandler": {"GET": Transaction("OpenNotificationConnection", "UPS-RS", (), status=101)},
}


def served_methods(handler: type, access: Access) -> list[str]:
    """The methods of a route: those its access grants that its handler implements (OPTIONS always)."""
    return [m for m in access.methods()
            if m == "OPTIONS" or getattr(handler, m.lower()) is not RequestHandler._unimplemented_method]


def service_of(handler: type, method: str, path: str = "") -> str:
    """The service a request belongs to, for metrics: ``QIDO-RS``, ``WADO-RS``, ``STOW-RS``, ``rendered``..."""
    if method == "OPTIONS":
        return "capabilities"
    described = TRANSACTIONS.get(handler.__name__, {}).get("GET" if method == "HEAD" else method)
    if described is None:
        return "other"
    if described.service == "{kind}":
        return "thumbnail" if path.rstrip("/").endswith("thumbnail") else "rendered"
    return described.service


# -- the resource tree of the route table ---------------------------------------------------------


@dataclass
class Resource:
    """A resource of the tree: its path segment (a template ``{name}`` or literal) and methods."""

    segment: str
    methods: list[tuple[str, Transaction]] = field(default_factory=list)
    children: dict[str, Resource] = field(default_factory=dict)

    @property
    def template(self) -> str | None:
        return self.segment[1:-1] if self.segment.startswith("{") else None

    def child(self, segment: str) -> Resource:
        if segment not in self.children:
            self.children[segment] = Resource(segment)
        return self.children[segment]


def _segments(pattern: str) -> list[list[str]]:
    """The URL path templates of a route pattern relative to the root (alternatives expanded)."""
    groups: list[str] = []

    def hide(match: re.Match[str]) -> str:  # a group's "/" (in [^/]) is not a separator
        groups.append(match.group(0))
        return f"\0{len(groups) - 1}\0"

    pattern = re.sub(r"\([^()]*\)", hide, pattern.removesuffix("/?"))
    paths: list[list[str]] = [[]]
    for raw in pattern.split("/"):
        part = re.sub("\0(\\d+)\0", lambda m: groups[int(m.group(1))], raw)
        group = re.fullmatch(r"\((.*)\)", part)
        if group and re.fullmatch(r"[A-Za-z|]+", group.group(1)):  # (rendered|thumbnail): one resource each
            paths = [p + [alt] for p in paths for alt in group.group(1).split("|")]
        elif group:
            previous = paths[0][-1] if paths[0] else ""
            paths = [p + ["{" + _TEMPLATES.get(previous, "value") + "}"] for p in paths]
        else:
            paths = [p + [part] for p in paths]
    return paths


def describe(handler: type, method: str, path: list[str]) -> Transaction:
    """The transaction of ``method`` at ``path`` (template segments), names filled in."""
    try:
        described = TRANSACTIONS[handler.__name__]["GET" if method == "HEAD" else method]
    except KeyError:
        raise KeyError(f"capabilities.TRANSACTIONS does not describe {method} of {handler.__name__}") from None
    literals = [s for s in path if not s.startswith("{")]
    scoped = [_LEVELS[path[i - 1]] for i, s in enumerate(path) if s.startswith("{") and path[i - 1] in _LEVELS]
    kind = "Thumbnail" if "thumbnail" in literals else "Rendered"
    target = {"studies": "Studies", "series": "Series", "instances": "Instances"}.get(literals[-1] if literals else "", "")
    level = "Frames" if "frames" in literals else scoped[-1] if scoped else ""
    names = {"Level": level, "Kind": kind, "Search": "SearchFor" + "".join(scoped) + target}
    produces = described.produces
    if handler.__name__ == "RenderedHandler" and kind == "Rendered" and level in ("Study", "Series"):
        produces = tuple(f'multipart/related; type="{t}"' for t in produces)  # one image per instance
    return Transaction(described.name.format(**names), described.service.replace("{kind}", kind.lower()),
                       produces, described.consumes, described.query, described.status, described.transfer_syntaxes)


@lru_cache(maxsize=8)
def resource_tree(handlers: ModuleType, read_only: bool = False) -> Resource:
    """The tree of every resource under the DICOMweb root, built from ``routes.build_routes``.
    On a read-only server the methods it refuses are left out."""
    from .routes import build_routes

    root = Resource("")
    for pattern, handler, kwargs in build_routes(handlers, "", None):
        if handler.__name__ == "NotFoundHandler":
            continue  # the root and the catch-all 404
        access: Access = kwargs["access"]
        for path in _segments(pattern):
            node = root
            for segment in path:
                node = node.child(segment) if segment else node
            for method in served_methods(handler, access):
                if method == "OPTIONS" or (read_only and access.changes_data(method)):
                    continue
                node.methods.append((method, describe(handler, method, path)))
    return root


def find(tree: Resource, path: str) -> tuple[Resource, str] | None:
    """The resource at ``path`` (relative to the root, no leading slash), and that path as asked."""
    node = tree
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in node.children:
            node = node.children[part]
            continue
        templates = [c for c in node.children.values() if c.template]
        if not templates:
            return None
        node = templates[0]
    return node, "/".join(parts)


# -- the WADL document ------------------------------------------------------------------------------


def _method_element(method: str, transaction: Transaction) -> ET.Element:
    element = ET.Element("method", name=method, id=transaction.name)
    request = ET.SubElement(element, "request")
    if transaction.produces:
        accept = ET.SubElement(request, "param", name="Accept", style="header", default=transaction.produces[0])
        for media_type in transaction.produces:
            ET.SubElement(accept, "option", value=media_type)
        if transaction.transfer_syntaxes:
            syntax = ET.SubElement(request, "param", name="transfer-syntax", style="header", default="*")
            ET.SubElement(syntax, "doc").text = "a parameter of the Accept media types: * (as stored) or one of these"
            for uid in TRANSFER_SYNTAXES:
                ET.SubElement(syntax, "option", value=uid)
    for name in transaction.query:
        if name in ("token", "_xsrf"):
            continue
        param = ET.SubElement(request, "param", name=name, style="query")
        if name == "{attributeID}":
            ET.SubElement(param, "doc").text = "any other attribute, by keyword or tag (gggg,eeee), or a sequence path"
    for media_type in transaction.consumes:
        ET.SubElement(request, "representation", mediaType=media_type)
    response = ET.SubElement(element, "response", status=str(transaction.status))
    for media_type in transaction.produces:
        ET.SubElement(response, "representation", mediaType=media_type)
    return element


def _resource_element(node: Resource, path: str) -> ET.Element:
    element = ET.Element("resource", path=path)
    if node.template:
        ET.SubElement(element, "param", name=node.template, style="template", type="xsd:string", required="true")
    for method, transaction in node.methods:
        element.append(_method_element(method, transaction))
    for child in node.children.values():
        element.append(_resource_element(child, child.segment))
    return element


def capabilities_document(tree: Resource, base: str, path: str = "") -> ET.Element | None:
    """The WADL ``application`` for the resource at ``path`` (the root when empty); None if none is there."""
    found = find(tree, path)
    if found is None:
        return None
    node, asked = found
    application = ET.Element("application", xmlns=WADL_NS)
    resources = ET.SubElement(application, "resources", base=base.rstrip("/") + "/")
    if asked:
        resources.append(_resource_element(node, asked))
    else:
        for method, transaction in node.methods:
            resources.append(_method_element(method, transaction))
        for child in node.children.values():
            resources.append(_resource_element(child, child.segment))
    return application


def to_json(element: ET.Element) -> dict[str, Any]:
    """An element as JSON: its attributes, its text as ``doc``, its children by name in lists."""
    out: dict[str, Any] = {k: v for k, v in element.attrib.items() if k != "xmlns"}
    if element.text and element.text.strip():
        out["text"] = element.text.strip()
    for child in element:
        out.setdefault(child.tag, []).append(to_json(child))
    return out


def render(document: ET.Element, media_type: str) -> bytes:
    if media_type == mt.JSON:
        return json.dumps({"application": to_json(document)}, indent=1).encode("utf-8")
    ET.indent(document)
    return ET.tostring(document, encoding="utf-8", xml_declaration=True)


def answer_capabilities(handler: Any) -> None:
    """Answer a (non-preflight) OPTIONS: the WADL of the requested resource, and its ``Allow``."""
    from .base import ApiError

    ctx = handler.ctx
    media_type, _ = handler.choose(OFFERS)
    module = sys.modules[type(handler).__module__]
    tree = resource_tree(module, bool(ctx.config.read_only))
    request_path = handler.request.path
    root = ctx.root_path
    relative = request_path[len(root):] if request_path.startswith(root) else None
    if relative is None and request_path.rstrip("/") + "/" == root:
        relative = ""
    document = capabilities_document(tree, handler.public_root(), relative) if relative is not None else None
    if document is None:
        raise ApiError(404, f"no DICOMweb resource at {request_path} (OPTIONS {root} describes them all)")
    handler.set_header("Allow", ", ".join(handler.allowed_methods()))
    handler.set_header("Content-Type", f"{media_type}; charset=utf-8" if media_type != mt.JSON else mt.JSON)
    handler.finish(render(document, media_type))

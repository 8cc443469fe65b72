"""The Worklist Service (UPS-RS, PS3.18 11): workitems, their states, subscriptions and event reports.

Routes (``routes.py``), under the DICOMweb root:

* ``workitems``: search (GET, QIDO-style, ``dicom.query``'s matching) and create (POST, ``?{uid}``);
* ``workitems/{uid}``: retrieve (GET) and update (POST, ``?{transaction UID}``);
* ``workitems/{uid}/state``: change the state (PUT: claim, complete, cancel);
* ``workitems/{uid}/cancelrequest``: ask the owner to cancel (POST);
* ``workitems/{uid|worklist UID}/subscribers/{aetitle}``: subscribe (POST, ``?deletionlock``, and
  ``?filter`` for the filtered worklist) and unsubscribe (DELETE); ``.../suspend`` (POST);
* ``subscribers/{aetitle}``: the notification channel of an AE title (a WebSocket, PS3.18 8.10), on
  which its event reports arrive as DICOM JSON text frames.

The rules are ``dicom.ups``'s, the shared state the store's (``store.worklist``); handlers parse,
authorize (reads: read; every change: write) and answer with the statuses and Warning headers PS3.18
gives. Event reports are recorded in the store by whichever process made the change; each process
delivers those of the channels open in it (``EventRelay``), so with several processes on one store a
subscriber connected to any of them hears of every change.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl
from xml.etree.ElementTree import ParseError

from tornado.ioloop import PeriodicCallback

from ..dicom import mediatypes as mt
from ..dicom import ups
from ..dicom.dicomjson import json_to_xml, xml_to_json
from ..dicom.multipart import MultipartWriter, iter_parts
from ..dicom.query import QueryError, parse_query
from ..errors import MediaTypeError, MultipartError, WorkitemError
from ..store.index.workitems import StoredEvent
from ..store.worklist import Worklist, event_report, parse_filter
from .base import DRAIN_LIMIT, ApiError, DicomWebMixin, StreamedBodyMixin

log = logging.getLogger("dicomweb_nb.server")
T = TypeVar("T")

_XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'
_ANSWER_TYPES = [mt.DICOM_JSON, mt.JSON, _XML_MULTIPART]
_NON_QUERY_PARAMETERS = frozenset({"accept", "token", "_xsrf"})
# A workitem is a few kilobytes; a body past this is refused (413) before it is parsed.
MAX_WORKITEM_BYTES = 4 << 20
POLL_INTERVAL_MS = 250  # how often a process with open channels looks for new event reports
_WORKITEM_PARAMETERS = ("workitem", "AffectedSOPInstanceUID")
_TRANSACTION_PARAMETERS = ("transaction-uid", "transactionuid", "TransactionUID")


def _warning(text: str) -> str:
    """A Warning header value (RFC 9111 5.5) carrying one of PS3.18's texts."""
    return '299 dicomweb-nb "' + text.replace('"', "'").encode("ascii", "backslashreplace").decode("ascii") + '"'


@contextmanager
def refusals() -> Iterator[None]:
    """A worklist refusal (``errors.WorkitemError``) becomes its answer: status, message, PS3.18 Warning."""
    try:
        yield
    except WorkitemError as exc:
        headers = {"Warning": _warning(exc.warning)} if exc.warning else {}
        raise ApiError(exc.status or 400, str(exc), **headers) from None


class WorklistMixin(StreamedBodyMixin):
    """What the worklist handlers share: the worklist, reading a dataset, mapping refusals to answers.

    Their classes are ``@stream_request_body``: a body is collected up to MAX_WORKITEM_BYTES and a
    larger one refused (413) without being held, whatever the server's upload limit for STOW."""

    get_query_arguments: Callable[..., list[str]]
    _body: bytearray

    async def prepare_body(self) -> None:
        self._body = bytearray()
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_WORKITEM_BYTES:
            raise ApiError(413, f"a worklist request is at most {MAX_WORKITEM_BYTES >> 20} MiB, not {int(length)} bytes")
        self.http_connection.set_max_body_size(MAX_WORKITEM_BYTES + DRAIN_LIMIT)

    def data_received(self, chunk: bytes) -> None:
        if self.refusing():
            return
        if len(self._body) + len(chunk) > MAX_WORKITEM_BYTES:
            self._body = bytearray()
            self.keep_refusal(ApiError(413, f"a worklist request is at most {MAX_WORKITEM_BYTES >> 20} MiB"))
            return
        self._body += chunk

    @property
    def worklist(self) -> Worklist:
        return self.store.worklist

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a worklist operation off the event loop; its refusals become their PS3.18 answers."""
        with refusals():
            return await self.run_blocking(fn, *args, **kwargs)

    def workitem_uid(self, value: str) -> str:
        return self.uid(value, "the workitem UID")

    def query_pairs(self) -> list[tuple[str, str]]:
        try:
            pairs = parse_qsl(self.request.query, keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ApiError(400, "the query string is not valid UTF-8 once percent-decoded") from None
        return [(k, v) for k, v in pairs if k not in _NON_QUERY_PARAMETERS]

    def bare_uid_parameter(self, names: tuple[str, ...], what: str) -> str | None:
        """A UID given as the whole query (``?1.2.3``, as PS3.18 writes ``?{workitem}``) or as one of
        ``names`` (``?workitem=1.2.3``)."""
        found = []
        for key, value in self.query_pairs():
            if value == "" and key and key[0].isdigit():
                found.append(key)
            elif key in names or key.lower() in (n.lower() for n in names):
                found.append(value)
            else:
                raise ApiError(400, f"unknown query parameter {key!r} (give the {what} as ?{{uid}})")
        if len(found) > 1:
            raise ApiError(400, f"more than one {what} in the query")
        return self.uid(found[0], what) if found else None

    def read_dataset(self, *, optional: bool = False) -> dict[str, Any]:
        """The request's one dataset: DICOM JSON (an object, or an array of one) or Native DICOM Model
        XML (``multipart/related; type="application/dicom+xml"`` or a bare ``application/dicom+xml``)."""
        body = bytes(self._body)
        if not body.strip():
            if optional:
                return {}
            raise ApiError(400, "the request has no dataset: send one DICOM JSON object (Content-Type: application/dicom+json)")
        header = self.request.headers.get("Content-Type", mt.DICOM_JSON)
        try:
            media = mt.parse_media_type(header)
        except MediaTypeError as exc:
            raise ApiError(400, f"malformed Content-Type: {exc}") from None
        try:
            if media.type in (mt.DICOM_JSON, mt.JSON):
                data = json.loads(body)
                if isinstance(data, list):
                    if len(data) != 1:
                        raise ApiError(400, f"send one dataset, not {len(data)}")
                    data = data[0]
                if not isinstance(data, dict):
                    raise ApiError(400, "the payload must be a DICOM JSON object (or an array holding one)")
                return data
            if media.type == mt.DICOM_XML:
                return xml_to_json(body)
            if media.type == mt.MULTIPART_RELATED and media.params.get("type", "").lower() == mt.DICOM_XML:
                boundary = media.params.get("boundary")
                if not boundary:
                    raise ApiError(400, "multipart/related without a boundary")
                parts = list(iter_parts([body], boundary))
                if len(parts) != 1:
                    raise ApiError(400, f"send one dataset, not {len(parts)} parts")
                return xml_to_json(bytes(parts[0][1]))
        except ValueError as exc:  # JSON
            raise ApiError(400, f"the payload is not valid JSON: {exc}") from None
        except (ParseError, MultipartError) as exc:
            raise ApiError(400, f"the payload is not a readable DICOM XML dataset: {exc}") from None
        raise ApiError(415, f"Content-Type {media.type} is not accepted here: send application/dicom+json, or "
                            f'{_XML_MULTIPART}', Accept=f"{mt.DICOM_JSON}, {_XML_MULTIPART}")

    def write_datasets(self, items: list[dict[str, Any]], media_type: str, status: int = 200) -> None:
        if media_type == _XML_MULTIPART:
            writer = MultipartWriter()
            self.set_status(status)
            self.set_header("Content-Type", mt.multipart_content_type(mt.DICOM_XML, writer.boundary))
            for item in items:
                self.write(writer.part_head(mt.DICOM_XML))
                self.write(json_to_xml(item))
            self.finish(writer.close())
            return
        self.write_json(items, status, media_type)

    def finish_change(self, status: int, warnings: list[str], **headers: str) -> None:
        self.set_status(status)
        for text in warnings:
            self.add_header("Warning", _warning(text))
        for name, value in headers.items():
            self.set_header(name.replace("_", "-"), value)
        self.finish()

    def workitem_url(self, uid: str) -> str:
        return f"{self.public_root()}/workitems/{uid}"

    def requesting_ae(self) -> str:
        """An AE title for the user behind the request (the Requesting AE of a cancellation request)."""
        user = getattr(self, "current_user", None)
        name = getattr(user, "username", None) or getattr(user, "name", None) or (user if isinstance(user, str) else "")
        cleaned = re.sub(r"[^A-Za-z0-9_.@-]", "", str(name or ""))[:16]
        return cleaned or "UNKNOWN"


class WorkitemsMixin(WorklistMixin):
    """``{root}workitems``: Search (GET, PS3.18 11.9) and Create (POST, 11.4)."""

    async def get(self) -> None:
        media_type, _ = self.choose(_ANSWER_TYPES)
        try:
            query = parse_query(self.query_pairs(), "workitem")
        except QueryError as exc:
            raise ApiError(400, f"bad worklist query: {exc}") from None
        found = await self.call(self.worklist.search, query, max_results=self.ctx.config.qido_max_results or None)
        for text in query.warnings:
            self.add_header("Warning", _warning(text))
        status = 200
        if found.truncated:
            status = 206  # PS3.18 11.9.3.1: some results, the rest by paging
            self.add_header("Warning", _warning("The number of results exceeded the maximum supported by the server. "
                                                "Additional results can be requested."))
        if not found.items:
            self.set_status(204)
            self.finish()
            return
        self.write_datasets(found.items, media_type, status)

    async def post(self) -> None:
        uid = self.bare_uid_parameter(_WORKITEM_PARAMETERS, "workitem UID")
        if uid in (ups.GLOBAL_SUBSCRIPTION, ups.FILTERED_SUBSCRIPTION):
            raise ApiError(400, f"{uid} is the worklist's own UID, not a workitem's")
        dataset = self.read_dataset()
        created = await self.call(self.worklist.create, dataset, uid)
        url = self.workitem_url(created.uid)
        self.finish_change(201, created.warnings, Location=url, Content_Location=url)


class WorkitemMixin(WorklistMixin):
    """``{root}workitems/{uid}``: Retrieve (GET, PS3.18 11.5) and Update (POST, 11.6)."""

    async def get(self, uid: str) -> None:
        uid = self.workitem_uid(uid)
        media_type, _ = self.choose(_ANSWER_TYPES)
        dataset = await self.call(self.worklist.get, uid)
        self.set_header("Content-Location", self.workitem_url(uid))
        self.write_datasets([dataset], media_type)

    async def post(self, uid: str) -> None:
        uid = self.workitem_uid(uid)
        transaction = self.bare_uid_parameter(_TRANSACTION_PARAMETERS, "transaction UID")
        changes = self.read_dataset()
        updated = await self.call(self.worklist.update, uid, changes, transaction)
        self.finish_change(200, updated.warnings, Content_Location=self.workitem_url(uid))


class WorkitemStateMixin(WorklistMixin):
    """``{root}workitems/{uid}/state``: Change Workitem State (PUT, PS3.18 11.7)."""

    async def put(self, uid: str) -> None:
        uid = self.workitem_uid(uid)
        request = self.read_dataset()
        changed = await self.call(self.worklist.change_state, uid, request)
        self.finish_change(200, changed.warnings)


class WorkitemCancelMixin(WorklistMixin):
    """``{root}workitems/{uid}/cancelrequest``: Request Cancellation (POST, PS3.18 11.8)."""

    async def post(self, uid: str) -> None:
        uid = self.workitem_uid(uid)
        info = self.read_dataset(optional=True)
        answer = await self.call(self.worklist.request_cancel, uid, info, self.requesting_ae())
        self.finish_change(202, answer.warnings)


def _aetitle(value: str) -> str:
    title = ups.valid_ae_title(value)
    if title is None:
        raise ApiError(400, f"{value[:40]!r} is not an AE title (1 to 16 characters, no backslash nor control characters)")
    return title


class SubscriptionMixin(WorklistMixin):
    """``{root}workitems/{uid}/subscribers/{aetitle}``: Subscribe (POST, PS3.18 11.10) and Unsubscribe
    (DELETE, 11.11), to one workitem or, with the worklist's well-known UIDs, to the whole worklist."""

    async def post(self, target: str, aetitle: str) -> None:
        target = self.uid(target, "the workitem UID")
        aetitle = _aetitle(aetitle)
        lock, filters = False, []
        for key, value in self.query_pairs():
            if key.lower() == "deletionlock":
                if value.strip().lower() not in ("true", "false"):
                    raise ApiError(400, f"deletionlock={value!r}: expected true or false")
                lock = value.strip().lower() == "true"
            elif key.lower() == "filter":
                filters.append(value)
            else:
                raise ApiError(400, f"unknown query parameter {key!r} (deletionlock and filter are taken here)")
        with refusals():
            pairs = parse_filter(filters) if filters else None
        await self.call(self.worklist.subscribe, aetitle, target, deletion_lock=lock, filter=pairs)
        self.finish_change(201, [], Content_Location=self.channel_url(aetitle))

    async def delete(self, target: str, aetitle: str) -> None:
        target = self.uid(target, "the workitem UID")
        await self.call(self.worklist.unsubscribe, _aetitle(aetitle), target)
        self.finish_change(200, [])

    def channel_url(self, aetitle: str) -> str:
        """The WebSocket URL of ``aetitle``'s notification channel, as this client reaches the server."""
        from urllib.parse import quote

        root = self.public_root()
        scheme, rest = root.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/subscribers/{quote(aetitle, safe='')}"


class SuspendMixin(WorklistMixin):
    """``{root}workitems/{worklist UID}/subscribers/{aetitle}/suspend``: Suspend Global Subscription
    (POST, PS3.18 11.12): no subscription to new workitems, the existing ones stay."""

    async def post(self, target: str, aetitle: str) -> None:
        target = self.uid(target, "the worklist UID")
        await self.call(self.worklist.suspend, _aetitle(aetitle), target)
        self.finish_change(200, [])


# -- the notification channel (PS3.18 8.10) ----------------------------------------------------------

class EventRelay:
    """Delivers the worklist's event reports to the notification channels open in this process.

    While a channel is open, the store is asked every ``POLL_INTERVAL_MS`` for the reports recorded
    after the last one delivered (by any process on the store); a channel hears the reports recorded
    after it opened. Reports are not queued for channels that are closed (PS3.4 CC.2.4.3 asks no retry).
    """

    def __init__(self, worklist: Worklist, run: Callable[..., Any]):
        self.worklist = worklist
        self._run = run  # runs blocking work off the event loop: run(fn, *args) -> awaitable
        self.channels: dict[str, set[Any]] = {}
        self.cursor: int | None = None
        self._callback: PeriodicCallback | None = None
        self._polling = False

    async def add(self, aetitle: str, channel: Any) -> None:
        if self.cursor is None:
            cursor = await self._run(self.worklist.last_event_id)
            if self.cursor is None:
                self.cursor = cursor
        self.channels.setdefault(aetitle, set()).add(channel)
        if self._callback is None:
            self._callback = PeriodicCallback(self.poll, POLL_INTERVAL_MS)
            self._callback.start()

    def remove(self, aetitle: str, channel: Any) -> None:
        listeners = self.channels.get(aetitle)
        if listeners is not None:
            listeners.discard(channel)
            if not listeners:
                del self.channels[aetitle]
        if not self.channels and self._callback is not None:
            self._callback.stop()
            self._callback = None
            self.cursor = None

    async def poll(self) -> None:
        if self._polling or not self.channels or self.cursor is None:
            return
        self._polling = True
        try:
            events: list[StoredEvent] = await self._run(self.worklist.events_after, self.cursor, list(self.channels))
            for event in events:
                self.cursor = max(self.cursor or 0, event.id)
                for channel in list(self.channels.get(event.aetitle, ())):
                    channel.send_report(event)
        except Exception:  # a database hiccup must not end the relay
            log.exception("delivering worklist event reports failed")
        finally:
            self._polling = False

    def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None


def event_message(event: StoredEvent) -> str:
    """The text frame of an event report (PS3.18 8.10.5): its DICOM JSON, with a Message ID."""
    return json.dumps(event_report(event), separators=(",", ":"), ensure_ascii=False)


class EventChannelMixin(DicomWebMixin):
    """``{root}subscribers/{aetitle}``: the Open Notification Connection transaction (PS3.18 8.10.4), a
    WebSocket on which the event reports of ``aetitle``'s subscriptions arrive (mixed into a tornado
    ``WebSocketHandler``). The user agent sends nothing on it; what it sends is ignored."""

    aetitle: str = ""

    @property
    def relay(self) -> EventRelay:
        if self.ctx.worklist_relay is None:
            self.ctx.worklist_relay = EventRelay(self.store.worklist, self.run_blocking)
        return self.ctx.worklist_relay

    async def get(self, aetitle: str, *args: Any, **kwargs: Any) -> None:
        self.aetitle = _aetitle(aetitle)
        await super().get(aetitle, *args, **kwargs)  # type: ignore[misc]  # WebSocketHandler: the upgrade

    async def open(self, *args: Any, **kwargs: Any) -> None:
        await self.relay.add(self.aetitle, self)

    def on_message(self, message: str | bytes) -> None:
        """PS3.18 defines no message from the user agent: ignored."""

    def on_close(self) -> None:
        if self.aetitle:
            self.relay.remove(self.aetitle, self)

    def send_report(self, event: StoredEvent) -> None:
        try:
            self.write_message(event_message(event))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a closed channel: it is removed by on_close
            log.debug("event report to %s not sent: the channel closed", self.aetitle)

    def check_origin(self, origin: str) -> bool:
        """Browsers may connect from this server's own origin or from a configured CORS origin."""
        from urllib.parse import urlsplit

        allowed = self.ctx.config.cors_origins
        if allowed and ("*" in allowed or origin in allowed):
            return True
        return urlsplit(origin).netloc.lower() == (self.request.headers.get("Host") or "").lower()

    def set_default_headers(self) -> None:
        """No CORS or CSP headers: this answers a WebSocket upgrade."""

    @property
    def ping_interval(self) -> float:
        """Keep-alive pings, so proxies do not close a quiet channel (seconds)."""
        return float(self.settings.get("websocket_ping_interval") or 30)


def close_relay(ctx: Any) -> None:
    """Stop a server's event relay (at shutdown)."""
    relay, ctx.worklist_relay = ctx.worklist_relay, None
    if relay is not None:
        relay.close()

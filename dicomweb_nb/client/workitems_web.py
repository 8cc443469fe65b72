"""The worklist (UPS-RS, PS3.18 11) over HTTP, for ``workitems.py``: ``WebWorklist`` (the worklist
transactions of any UPS-RS origin server, their PS3.18 statuses and ``Warning`` texts turned into
``errors.WorkitemError``s) and the notification channel (``EventChannel``: an AE title's WebSocket,
PS3.18 8.10, whose DICOM JSON event reports arrive as ``WorkitemEvent``s)."""

from __future__ import annotations

import base64
import json
import queue
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..dicom import ups
from ..dicom.dicomjson import DicomJson
from ..dicom.mediatypes import DICOM_JSON
from ..dicom.query import search_parameters
from ..errors import (
    DicomWebError,
    DicomWebWarning,
    InvalidResponse,
    InvalidWorkitem,
    NotFound,
    WorkitemStateError,
    error_class_for_status,
    server_message_from_body,
)
from .qido import DEFAULT_PAGE_SIZE, paged_search

if TYPE_CHECKING:
    import requests

    from .http import HttpClient

__all__ = ["WebWorklist", "WorkitemEvent", "EventChannel", "EventReceiver"]

# The Warning texts with which PS3.18 marks a refusal because of the state or the transaction UID.
_STATE_WARNINGS = frozenset({ups.NOT_CLAIMED, ups.UPDATE_INCONSISTENT, ups.TRANSACTION_MISSING, ups.TRANSACTION_INCORRECT,
                             ups.STATE_INCONSISTENT, ups.CANCEL_COMPLETED, ups.PERFORMER_UNREACHABLE})
_EVENT_TYPES = {1: "state", 2: "cancel requested", 3: "progress", 4: "scp status", 5: "assigned"}


# -- event reports ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkitemEvent:
    """One event report (PS3.4 Table CC.2.4-1): ``kind`` is ``state``, ``cancel requested``, ``progress``,
    ``scp status`` or ``assigned``; ``workitem`` its workitem's UID (the worklist's well-known UID for an
    SCP status change); ``state`` the Procedure Step State it reports; ``report`` the DICOM JSON."""

    kind: str
    workitem: str
    state: str | None
    report: DicomJson

    @classmethod
    def from_report(cls, report: DicomJson) -> WorkitemEvent:
        def first(key: str) -> Any:
            values = (report.get(key) or {}).get("Value") or [None]
            return values[0]
        event_type = first("00001002")
        return cls(_EVENT_TYPES.get(int(event_type) if event_type is not None else 0, f"event {event_type}"),
                   str(first("00001000") or ""), first("00741000"), report)


class EventReceiver(Protocol):
    """What a source's ``channel(aetitle)`` returns: the raw event reports of one AE title, in order."""

    def receive(self, timeout: float | None) -> DicomJson | None:
        """The next event report (DICOM JSON), waiting at most ``timeout`` seconds (None: when none came)."""
        ...

    def close(self) -> None: ...


class EventChannel:
    """A notification channel of one AE title: its event reports as ``WorkitemEvent``s, in order.

    ``get(timeout)`` waits for the next one (None when none came in time); iterating waits for each in
    turn until ``close()`` (or the end of a ``with`` block). Reports sent while no channel is open are not
    kept (PS3.4 CC.2.4.3), so open the channel before subscribing.
    """

    def __init__(self, aetitle: str, receiver: EventReceiver):
        self.aetitle = aetitle
        self._receiver = receiver
        self._closed = threading.Event()

    def get(self, timeout: float | None = None) -> WorkitemEvent | None:
        """The next event report, waiting at most ``timeout`` seconds (None: until one comes)."""
        report = self._receiver.receive(timeout)
        if report is None:
            return None
        try:
            return WorkitemEvent.from_report(report)
        except (ValueError, TypeError, AttributeError):
            raise InvalidResponse(f"the notification channel of {self.aetitle} sent a frame that is not an event "
                                  "report") from None

    def __iter__(self) -> Iterator[WorkitemEvent]:
        while not self._closed.is_set():
            event = self.get(timeout=0.5)
            if event is not None:
                yield event

    def close(self) -> None:
        self._closed.set()
        self._receiver.close()

    def __enter__(self) -> EventChannel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WebSocketReceiver:
    """The notification channel over a WebSocket (PS3.18 8.10.4): a thread reads it (answering the
    server's keep-alive pings however long the notebook waits) into a queue."""

    def __init__(self, aetitle: str, url: str, headers: Mapping[str, str], timeout: float | None):
        import websocket  # websocket-client

        self.aetitle = aetitle
        self._queue: queue.Queue[DicomJson | BaseException] = queue.Queue()
        self._closed = threading.Event()
        try:
            self._socket = websocket.create_connection(url, header=[f"{k}: {v}" for k, v in headers.items()],
                                                       timeout=timeout or 30)
        except websocket.WebSocketBadStatusException as exc:
            cls = error_class_for_status(exc.status_code)
            raise cls(f"cannot open the notification channel {url}: answered {exc.status_code}", status=exc.status_code,
                      url=url, server_message=server_message_from_body(getattr(exc, "resp_body", None))) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise DicomWebError(f"cannot open the notification channel {url}: {exc}", url=url) from None
        self._socket.settimeout(0.5)
        self._thread = threading.Thread(target=self._read, name=f"worklist-events-{aetitle}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import websocket

        while not self._closed.is_set():
            try:
                text = self._socket.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException) as exc:
                if not self._closed.is_set():
                    self._queue.put(DicomWebError(f"the notification channel of {self.aetitle} closed: {exc}"))
                return
            try:
                report = json.loads(text)
                if not isinstance(report, dict):
                    raise ValueError("not an object")
                self._queue.put(report)
            except ValueError:
                self._queue.put(InvalidResponse(f"the notification channel of {self.aetitle} sent a frame that is not "
                                                "DICOM JSON"))

    def receive(self, timeout: float | None) -> DicomJson | None:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._closed.set()
        try:
            self._socket.close()
        except Exception:  # noqa: BLE001 - closing a broken socket
            pass
        self._thread.join(timeout=2)


# -- over HTTP --------------------------------------------------------------------------------------

def _warning_texts(header: str) -> list[str]:
    from .web import _warnings

    return _warnings(header)


class WebWorklist:
    """The worklist transactions over HTTP (PS3.18 11), for any UPS-RS origin server."""

    def __init__(self, http: HttpClient, *, page_size: int = DEFAULT_PAGE_SIZE):
        self.http = http
        self.page_size = page_size

    def _send(self, method: str, url: str, body: DicomJson | None = None, *, accept: str | None = None) -> requests.Response:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": DICOM_JSON} if data is not None else {}
        response = self.http.request(method, url, data=data, headers=headers, accept=accept,
                                     accept_statuses=(400, 404, 409, 410))
        if response.status_code >= 400:
            raise self._refusal(response, method)
        return response

    @staticmethod
    def _refusal(response: requests.Response, method: str) -> DicomWebError:
        """The error of a refused worklist request: its state refusals (a PS3.18 Warning, or a 409) as
        WorkitemStateError, other 400s as InvalidWorkitem, so both sources raise alike."""
        status = response.status_code
        message = server_message_from_body(response.content[:65536], response.headers.get("Content-Type"))
        texts = _warning_texts(response.headers.get("Warning", ""))
        warning = next((t for t in texts if t in _STATE_WARNINGS), texts[0] if texts else None)
        what = f"{method} {response.url} answered {status} {response.reason or ''}".rstrip()
        if status in (404, 410):
            return NotFound(what, status=status, url=response.url, server_message=message, method=method)
        if status == 409 or warning in _STATE_WARNINGS:
            return WorkitemStateError(what, status=status, warning=warning, url=response.url, server_message=message,
                                      method=method)
        return InvalidWorkitem(what, status=status, warning=warning, url=response.url, server_message=message, method=method)

    def create(self, dataset: DicomJson, uid: str | None = None) -> tuple[str, list[str]]:
        url = self.http.url("workitems") + (f"?{uid}" if uid else "")
        response = self._send("POST", url, dataset, accept=DICOM_JSON)
        location = response.headers.get("Location") or response.headers.get("Content-Location") or ""
        made = location.rstrip("/").rsplit("/", 1)[-1] if location else uid
        if not made:
            raise InvalidResponse(f"POST {url}: the server created a workitem without saying where (no Location)", url=url)
        return made, _warning_texts(response.headers.get("Warning", ""))

    def retrieve(self, uid: str) -> DicomJson:
        url = self.http.url("workitems", uid)
        response = self._send("GET", url, accept=DICOM_JSON)
        try:
            data = response.json()
        except ValueError:
            raise InvalidResponse(f"GET {url}: the workitem is not JSON", status=response.status_code, url=url) from None
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        if not isinstance(data, dict):
            raise InvalidResponse(f"GET {url}: expected one DICOM JSON dataset", status=response.status_code, url=url)
        return data

    def update(self, uid: str, changes: DicomJson, transaction: str | None = None) -> list[str]:
        url = self.http.url("workitems", uid) + (f"?{transaction}" if transaction else "")
        return _warning_texts(self._send("POST", url, changes).headers.get("Warning", ""))

    def change_state(self, uid: str, state: str, transaction: str) -> list[str]:
        url = self.http.url("workitems", uid, "state")
        return _warning_texts(self._send("PUT", url, ups.state_request(state, transaction)).headers.get("Warning", ""))

    def request_cancellation(self, uid: str, info: DicomJson) -> list[str]:
        url = self.http.url("workitems", uid, "cancelrequest")
        return _warning_texts(self._send("POST", url, info).headers.get("Warning", ""))

    def search(self, filters: Sequence[tuple[str, str]], *, fields: Sequence[str] = (), fuzzy: bool = False,
               limit: int | None = None, offset: int = 0) -> list[DicomJson]:
        base = search_parameters(filters, fields=fields, fuzzy=fuzzy)

        def fetch_page(page_offset: int, count: int) -> tuple[list[DicomJson], bool]:
            params = base + [("limit", str(count))] + ([("offset", str(page_offset))] if page_offset else [])
            url = self.http.url("workitems", query=params)
            response = self.http.get_content(url, accept=DICOM_JSON)
            texts = _warning_texts(response.headers.get("Warning", ""))
            more = response.status_code == 206 or any("additional results" in t.lower() for t in texts)
            for text in texts:
                if "additional results" not in text.lower():
                    warnings.warn(f"{self.http.base_url}: {text}", DicomWebWarning, stacklevel=6)
            if response.status_code == 204 or not response.content.strip():
                return [], more
            try:
                page = response.json()
            except ValueError:
                raise InvalidResponse(f"GET {url}: the answer is not JSON", status=response.status_code, url=url) from None
            if not isinstance(page, list):
                raise InvalidResponse(f"GET {url}: expected a JSON array of workitems", status=response.status_code, url=url)
            return page, more

        return paged_search(fetch_page, limit=limit, offset=offset, page_size=self.page_size)

    def subscribe(self, aetitle: str, target: str, *, deletion_lock: bool = False,
                  filters: Sequence[tuple[str, str]] | None = None) -> str | None:
        query = [("deletionlock", "true" if deletion_lock else "false")]
        if filters:
            query.append(("filter", ",".join(f"{k}={v}" for k, v in filters)))
        url = self.http.url("workitems", target, "subscribers", aetitle, query=query)
        return self._send("POST", url).headers.get("Content-Location")

    def unsubscribe(self, aetitle: str, target: str) -> None:
        self._send("DELETE", self.http.url("workitems", target, "subscribers", aetitle))

    def suspend(self, aetitle: str, target: str) -> None:
        self._send("POST", self.http.url("workitems", target, "subscribers", aetitle, "suspend"))

    def channel(self, aetitle: str) -> EventReceiver:
        url = self.http.url("subscribers", aetitle)
        scheme, rest = url.split("://", 1)
        headers = {k: v for k, v in self.http.session.headers.items()
                   if k.lower() == "authorization" or k.lower().startswith("x-")}
        auth = self.http.session.auth
        if isinstance(auth, tuple) and len(auth) == 2:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        timeout = self.http.timeout[0] if isinstance(self.http.timeout, tuple) else self.http.timeout
        return WebSocketReceiver(aetitle, f"{'wss' if scheme == 'https' else 'ws'}://{rest}", headers, timeout)

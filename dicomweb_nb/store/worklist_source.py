"""The workspace store's worklist in-process: the worklist transactions of the notebook client
(``client/workitems.py``'s ``WorklistSource``) without HTTP, with the same answers and errors as the
server gives (both call ``store.worklist``)."""

from __future__ import annotations

import os
import re
import time
from typing import Any, Sequence

from ..dicom import ups
from ..dicom.dicomjson import DicomJson
from ..dicom.query import QueryError, parse_query, search_parameters
from ..errors import BadRequest, NotFound
from .store import NotFoundError, Store
from .worklist import event_report

POLL_INTERVAL = 0.2  # seconds between two looks for new event reports of an open channel


def local_ae_title() -> str:
    """An AE title for this notebook's user (the Requesting AE of its cancellation requests)."""
    try:
        name = os.getlogin()
    except OSError:
        name = os.environ.get("USER", "")
    return re.sub(r"[^A-Za-z0-9_.@-]", "", name)[:16] or "NOTEBOOK"


class StoreWorklist:
    """The worklist of a store, as the notebook client's worklist source."""

    def __init__(self, store: Store, base_url: str):
        self.store = store
        self.base_url = base_url

    def _worklist_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotFoundError as exc:
            raise NotFound(str(exc), status=404, url=self.base_url) from None

    def create(self, dataset: DicomJson, uid: str | None = None) -> tuple[str, list[str]]:
        answer = self._worklist_call(self.store.worklist.create, dataset, uid)
        return answer.uid, answer.warnings

    def retrieve(self, uid: str) -> DicomJson:
        return self._worklist_call(self.store.worklist.get, uid)

    def update(self, uid: str, changes: DicomJson, transaction: str | None = None) -> list[str]:
        return self._worklist_call(self.store.worklist.update, uid, changes, transaction).warnings

    def change_state(self, uid: str, state: str, transaction: str) -> list[str]:
        return self._worklist_call(self.store.worklist.change_state, uid, ups.state_request(state, transaction)).warnings

    def request_cancellation(self, uid: str, info: DicomJson) -> list[str]:
        return self._worklist_call(self.store.worklist.request_cancel, uid, info, local_ae_title()).warnings

    def search(self, filters: Sequence[tuple[str, str]], *, fields: Sequence[str] = (), fuzzy: bool = False,
               limit: int | None = None, offset: int = 0) -> list[DicomJson]:
        params = search_parameters(filters, fields=fields, fuzzy=fuzzy, limit=limit, offset=offset)
        try:
            query = parse_query(params, "workitem", max_limit=None)
        except QueryError as exc:
            raise BadRequest(f"bad worklist query: {exc}", status=400, url=self.base_url) from None
        return self.store.worklist.search(query).items

    def subscribe(self, aetitle: str, target: str, *, deletion_lock: bool = False,
                  filters: Sequence[tuple[str, str]] | None = None) -> str | None:
        self._worklist_call(self.store.worklist.subscribe, aetitle, target, deletion_lock=deletion_lock, filter=filters)
        return None

    def unsubscribe(self, aetitle: str, target: str) -> None:
        self._worklist_call(self.store.worklist.unsubscribe, aetitle, target)

    def suspend(self, aetitle: str, target: str) -> None:
        self._worklist_call(self.store.worklist.suspend, aetitle, target)

    def channel(self, aetitle: str) -> "StoreEventReceiver":
        return StoreEventReceiver(self.store, aetitle)


class StoreEventReceiver:
    """An AE title's event reports read from the store itself (every process on the store records its
    reports there), from when the channel opened."""

    def __init__(self, store: Store, aetitle: str):
        self.store = store
        self.aetitle = aetitle
        self.cursor = store.worklist.last_event_id()
        self._pending: list[DicomJson] = []
        self._closed = False

    def receive(self, timeout: float | None) -> DicomJson | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pending and not self._closed:
            events = self.store.worklist.events_after(self.cursor, [self.aetitle])
            if events:
                self.cursor = events[-1].id
                self._pending = [event_report(e) for e in events]
                break
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - time.monotonic())))
        return self._pending.pop(0) if self._pending else None

    def close(self) -> None:
        self._closed = True

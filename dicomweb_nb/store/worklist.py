"""The store's worklist (UPS-RS, PS3.18 11): workitems, their states, subscriptions and event reports.

Every process on a store shares it: workitems live in the index, and each change is one index
transaction holding the worklist's lock (``index/workitems.py``), in which the rules of ``dicom.ups``
decide and the event reports due to subscribers are recorded. Those reports reach their subscribers
through whichever process has the subscriber's notification channel open (``server/workitems.py``
polls ``events_after``). Knows no HTTP: refusals are ``errors.WorkitemError``s carrying the status and
Warning PS3.18 gives them, unknown workitems ``NotFoundError``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import generate_uid

from ..dicom import ups
from ..dicom.dicomjson import DicomJson
from ..dicom.query import Query, QueryError, parse_query
from ..errors import InvalidWorkitem, WorkitemStateError
from .index import Index
from .index.workitems import StoredEvent, Subscription, WorklistWrites
from .store import NotFoundError


class WorkitemNotFound(NotFoundError):
    """No workitem (or no subscription) with that UID: a 404."""


@dataclass
class WorklistAnswer:
    """What a worklist change returns besides its effect: the PS3.18 ``warnings`` of the answer."""

    uid: str
    warnings: list[str] = field(default_factory=list)
    state: str | None = None
    dataset: DicomJson | None = None


@dataclass
class WorkitemSearch:
    items: list[DicomJson]
    truncated: bool


def _now() -> str:
    return ups.dicom_datetime(_dt.datetime.now().astimezone())


def event_report(event: StoredEvent) -> DicomJson:
    """An event report as it is sent (PS3.18 8.10.5): its DICOM JSON, with a Message ID (0000,0110)."""
    report = dict(event.report)
    report["00000110"] = {"vr": "US", "Value": [event.id % 65536]}
    return {k: report[k] for k in sorted(report)}


def parse_filter(values: Iterable[str]) -> list[tuple[str, str]]:
    """The ``filter`` query parameter of a Filtered Worklist Subscription (PS3.18 11.10.1.2): a
    comma-separated list of ``attribute=value`` matching keys; a piece without ``=`` continues the value
    before it (a UID list)."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        for piece in value.split(","):
            if "=" in piece:
                name, _, text = piece.partition("=")
                pairs.append((name.strip(), text))
            elif pairs:
                pairs[-1] = (pairs[-1][0], pairs[-1][1] + "," + piece)
            elif piece.strip():
                raise InvalidWorkitem(f"filter={value!r}: {piece!r} is not attribute=value", status=400)
    if not pairs:
        raise InvalidWorkitem("a Filtered Worklist Subscription needs filter=attribute=value[,...]", status=400)
    return pairs


class Worklist:
    """The worklist of one store. Thread-safe; every process on the store sees the same workitems."""

    def __init__(self, index: Index, *, pn_case_insensitive: bool = True, default_label: str = ups.DEFAULT_WORKLIST):
        self.index = index
        self.pn_case_insensitive = pn_case_insensitive
        self.default_label = default_label

    # -- the workitems ----------------------------------------------------------------------------
    def create(self, dataset: Mapping[str, Any], uid: str | None = None) -> WorklistAnswer:
        """Create a workitem (PS3.18 11.4): SCHEDULED, with the subscriptions and event reports of the
        AE titles subscribed to the whole worklist. 409 (WorkitemStateError) when the UID exists."""
        created = ups.prepare_create(dataset, uid, now=_now(), default_label=self.default_label,
                                     new_uid=lambda: str(generate_uid()))

        def work(tx: WorklistWrites) -> None:
            if not tx.insert(created.uid, ups.SCHEDULED, created.dataset):
                raise WorkitemStateError(f"workitem {created.uid} already exists", status=409)
            for subscription in tx.subscriptions_of([ups.GLOBAL_SUBSCRIPTION, ups.FILTERED_SUBSCRIPTION]):
                if subscription.filter is not None and not self._filter_query(subscription.filter).match(
                        created.dataset, pn_case_insensitive=self.pn_case_insensitive):
                    continue
                if tx.subscription(subscription.aetitle, created.uid) is None:
                    tx.subscribe(subscription.aetitle, created.uid, subscription.deletion_lock)
                # CC.2.4.3: a new workitem is reported (as a change to SCHEDULED) to global subscribers.
                tx.emit(subscription.aetitle, created.uid, ups.state_report(created.uid, created.dataset))
                if ups.is_assigned(created.dataset):
                    tx.emit(subscription.aetitle, created.uid, ups.assigned(created.uid, created.dataset))

        self.index.worklist_transaction(work)
        return WorklistAnswer(created.uid, [created.warning] if created.warning else [], ups.SCHEDULED, created.dataset)

    def get(self, uid: str) -> DicomJson:
        """A workitem's dataset (without its Transaction UID)."""
        row = self.index.get_workitem(uid)
        if row is None:
            raise WorkitemNotFound(f"workitem {uid} is not in this worklist")
        return row.dataset

    def update(self, uid: str, changes: Mapping[str, Any], transaction: str | None = None) -> WorklistAnswer:
        """Update a workitem (PS3.18 11.6); IN PROGRESS ones need the transaction UID of their claim."""
        def work(tx: WorklistWrites) -> WorklistAnswer:
            row = self._row(tx, uid)
            updated = ups.prepare_update(row.dataset, row.transaction_uid, changes, transaction, now=_now())
            tx.update(uid, row.state, updated.dataset, row.transaction_uid)
            self._emit(tx, uid, ups.update_events(uid, row.dataset, updated.dataset))
            return WorklistAnswer(uid, [updated.warning] if updated.warning else [], row.state, updated.dataset)
        return self.index.worklist_transaction(work)

    def change_state(self, uid: str, request: Mapping[str, Any]) -> WorklistAnswer:
        """Change a workitem's state (PS3.18 11.7): claim it (IN PROGRESS, recording the request's
        Transaction UID), complete or cancel it (with that UID). Atomic: of two claims, one wins."""
        def work(tx: WorklistWrites) -> WorklistAnswer:
            row = self._row(tx, uid)
            transition = ups.change_state(row.dataset, row.transaction_uid, request, now=_now())
            if transition.changed:
                tx.update(uid, transition.state, transition.dataset, transition.transaction)
                self._emit(tx, uid, [ups.state_report(uid, transition.dataset)])
            return WorklistAnswer(uid, [transition.warning] if transition.warning else [], transition.state,
                                  transition.dataset)
        return self.index.worklist_transaction(work)

    def request_cancel(self, uid: str, info: Mapping[str, Any], requesting_ae: str) -> WorklistAnswer:
        """Request the cancellation of a workitem one does not own (PS3.18 11.8): a SCHEDULED one is
        canceled at once (through IN PROGRESS, as CC.2.2.3 says); an IN PROGRESS one's subscribers get a
        UPS Cancel Requested event, and its performer decides (409 when nobody is subscribed to tell)."""
        def work(tx: WorklistWrites) -> WorklistAnswer:
            row = self._row(tx, uid)
            subscribers = tx.subscribers(uid)
            decision = ups.request_cancel(row.dataset, info, now=_now(), performer_reachable=bool(subscribers))
            if decision.action == "notify":
                self._emit(tx, uid, [ups.cancel_requested(uid, requesting_ae, info)], subscribers)
            elif decision.action == "cancel":
                assert decision.dataset is not None
                claimed = dict(row.dataset)
                claimed["00741000"] = {"vr": "CS", "Value": [ups.IN_PROGRESS]}
                # The origin server claims it under a Transaction UID of its own, which nobody else holds.
                tx.update(uid, ups.CANCELED, decision.dataset, str(generate_uid()))
                self._emit(tx, uid, [ups.state_report(uid, claimed), ups.state_report(uid, decision.dataset)], subscribers)
            state = ups.CANCELED if decision.action != "notify" else row.state
            return WorklistAnswer(uid, [decision.warning] if decision.warning else [], state)
        return self.index.worklist_transaction(work)

    def search(self, query: Query, *, max_results: int | None = None) -> WorkitemSearch:
        """Search the worklist (PS3.18 11.9) with the QIDO-RS matching of ``dicom.query``."""
        ups.check_search(query)
        limit = query.limit if query.limit is not None else max_results
        items, truncated = self.index.search_workitems(query, limit=limit, pn_case_insensitive=self.pn_case_insensitive)
        return WorkitemSearch(items, truncated)

    # -- subscriptions (PS3.18 11.10-11.12, PS3.4 Table CC.2.3-2) -------------------------------------
    def subscribe(self, aetitle: str, target: str, *, deletion_lock: bool = False,
                  filter: Sequence[tuple[str, str]] | None = None) -> WorklistAnswer:
        """Subscribe ``aetitle`` to a workitem, to the whole worklist (``ups.GLOBAL_SUBSCRIPTION``) or to
        the workitems a filter matches (``ups.FILTERED_SUBSCRIPTION``). Deletion locks are always granted:
        this worklist keeps every workitem."""
        pairs = list(filter) if filter is not None else None
        if target == ups.FILTERED_SUBSCRIPTION:
            if not pairs:
                raise InvalidWorkitem("a Filtered Worklist Subscription needs a filter", status=400)
            query = self._filter_query(pairs)
            ups.check_search(query)
        elif pairs:
            raise InvalidWorkitem("filter is only for the Filtered Worklist Subscription "
                                  f"(/workitems/{ups.FILTERED_SUBSCRIPTION}/subscribers/...)", status=400)

        def work(tx: WorklistWrites) -> None:
            if target in (ups.GLOBAL_SUBSCRIPTION, ups.FILTERED_SUBSCRIPTION):
                tx.subscribe(aetitle, target, deletion_lock, pairs)
                uids = tx.uids() if target == ups.GLOBAL_SUBSCRIPTION else tx.matching(query, self.pn_case_insensitive)
                for uid in uids:
                    if tx.subscription(aetitle, uid) is not None:
                        continue  # Table CC.2.3-2: already subscribed, no change
                    tx.subscribe(aetitle, uid, deletion_lock)
                    if deletion_lock:  # "Subscribes Globally with Lock": all send initial event
                        row = tx.get(uid)
                        assert row is not None
                        tx.emit(aetitle, uid, ups.state_report(uid, row.dataset))
                return
            row = self._row(tx, target)
            tx.subscribe(aetitle, target, deletion_lock)
            tx.emit(aetitle, target, ups.state_report(target, row.dataset))

        self.index.worklist_transaction(work)
        return WorklistAnswer(target)

    def unsubscribe(self, aetitle: str, target: str) -> WorklistAnswer:
        """Remove a subscription; unsubscribing from the (filtered) worklist removes every subscription
        of ``aetitle`` (Table CC.2.3-2, "Unsubscribes Globally"). WorkitemNotFound when there is none."""
        def work(tx: WorklistWrites) -> int:
            if target in (ups.GLOBAL_SUBSCRIPTION, ups.FILTERED_SUBSCRIPTION):
                return tx.unsubscribe(aetitle)
            return tx.unsubscribe(aetitle, target)
        if not self.index.worklist_transaction(work):
            raise WorkitemNotFound(f"{aetitle} has no subscription to {self._target_name(target)}")
        return WorklistAnswer(target)

    def suspend(self, aetitle: str, target: str) -> WorklistAnswer:
        """Suspend a global subscription: no subscription to new workitems, the existing ones stay."""
        if target not in (ups.GLOBAL_SUBSCRIPTION, ups.FILTERED_SUBSCRIPTION):
            raise InvalidWorkitem("only a subscription to the worklist can be suspended (C314): "
                                  f"/workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/{{aetitle}}/suspend", status=400)
        if not self.index.worklist_transaction(lambda tx: tx.unsubscribe(aetitle, target)):
            raise WorkitemNotFound(f"{aetitle} has no subscription to {self._target_name(target)}")
        return WorklistAnswer(target)

    def subscriptions(self, aetitle: str) -> list[Subscription]:
        """Every subscription of ``aetitle``."""
        return self.index.worklist_transaction(lambda tx: tx.subscriptions_by(aetitle))

    def announce_restart(self) -> None:
        """SCP Status Change (RESTARTED, warm start) to every subscriber (CC.2.4.3): a server started."""
        def work(tx: WorklistWrites) -> None:
            for name in tx.subscribed_aetitles():
                tx.emit(name, ups.GLOBAL_SUBSCRIPTION, ups.scp_status("RESTARTED"))
        self.index.worklist_transaction(work)

    # -- event reports -----------------------------------------------------------------------------
    def events_after(self, last_id: int, aetitles: Iterable[str]) -> list[StoredEvent]:
        """Event reports recorded for ``aetitles`` after ``last_id``, oldest first."""
        return self.index.events_after(last_id, aetitles)

    def last_event_id(self) -> int:
        return self.index.last_event_id()

    # -- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _row(tx: WorklistWrites, uid: str) -> Any:
        row = tx.get(uid)
        if row is None:
            raise WorkitemNotFound(f"workitem {uid} is not in this worklist")
        return row

    @staticmethod
    def _emit(tx: WorklistWrites, uid: str, reports: list[DicomJson], subscribers: list[str] | None = None) -> None:
        if not reports:
            return
        for aetitle in (subscribers if subscribers is not None else tx.subscribers(uid)):
            for report in reports:
                tx.emit(aetitle, uid, report)

    @staticmethod
    def _filter_query(pairs: Sequence[tuple[str, str]]) -> Query:
        try:
            return parse_query(list(pairs), "workitem", max_limit=None)
        except QueryError as exc:
            raise InvalidWorkitem(f"bad filter: {exc}", status=400) from None

    @staticmethod
    def _target_name(target: str) -> str:
        if target == ups.GLOBAL_SUBSCRIPTION:
            return "the worklist"
        if target == ups.FILTERED_SUBSCRIPTION:
            return "the filtered worklist"
        return f"workitem {target}"

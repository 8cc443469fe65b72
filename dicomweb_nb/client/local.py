"""The in-process source: the workspace store as a ``DicomWebSource``, what ``dw.connect()`` uses in a notebook.

It sits beside the HTTP source (``web.py``) the way an HTTP library keeps an in-process transport
beside the network one. Same transactions and the same answers as the DICOMweb server gives over
HTTP (both call the store, ``transcode`` and ``dicom.stow``'s STOW-RS response), without
an HTTP round trip or a token.

The client's one dependency on the store: no other module of ``client/`` imports ``store/``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..dicom import mediatypes, ups
from ..dicom.dicomjson import DicomJson, absolutize_bulk_uris
from ..dicom.query import QueryError, parse_query, search_parameters
from ..dicom.resources import resource_url
from ..dicom.stow import response_dataset
from ..errors import BadRequest, NotAcceptable, NotFound
from ..fileio import open_private
from ..pixels import render as rd
from ..pixels.renderparams import RENDERED_PARAMETERS, parse_rendered_params
from ..protocol import BulkPart, BulkRoom, EncodedFrame, Level, RenderedImage, StowItem
from ..store import changefeed, reader, transcode
from ..store.index import open_index
from ..store.store import InstanceRow, NotFoundError, Store, workspace_store_options
from ..store.worklist import event_report
from ..workspace import LOCAL_URL_ENV


class StoreSource:
    """In-process access to a store folder with the DICOMweb client's interface.

    ``base_url`` is the DICOMweb root written into RetrieveURL and BulkDataURI (the served
    address when a server runs on this store; a ``file:`` URL of the folder otherwise).
    """

    def __init__(self, root: str | os.PathLike[str], *, base_url: str | None = None):
        self.store = Store(root, **workspace_store_options(root))
        self.base_url = (base_url or Path(root).resolve().as_uri() + "/dicom-web").rstrip("/")

    def __repr__(self) -> str:
        return f"StoreSource({self.store.location!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Lazy arrays computed in other processes (dask) open the same store folder there.
        return (functools.partial(StoreSource, base_url=self.base_url), (str(self.store.root),))

    @property
    def url(self) -> str:
        return self.base_url

    def _url(self, study: str, series: str | None = None, instance: str | None = None) -> str:
        return resource_url(self.base_url, study, series, instance)

    def _instances(self, study: str | None, series: str | None = None, instance: str | None = None) -> list[InstanceRow]:
        try:
            return self.store.instances(study, series, instance)
        except NotFoundError as exc:
            raise NotFound(str(exc), status=404, url=self._url(study or "-", series, instance)) from None

    # -- QIDO-RS ----------------------------------------------------------------------------------
    def search(self, level: Level, filters: Sequence[tuple[str, str]], *, study: str | None = None,
               series: str | None = None, fields: Sequence[str] = (), fuzzy: bool = False,
               limit: int | None = None, offset: int = 0) -> list[DicomJson]:
        params = search_parameters(filters, fields=fields, fuzzy=fuzzy, limit=limit, offset=offset)
        try:
            query = parse_query(params, level, max_limit=None)
        except QueryError as exc:
            raise BadRequest(f"bad QIDO-RS query: {exc}", status=400, url=self.base_url) from None
        return self.store.search(query, study_uid=study, series_uid=series, retrieve_url=self._url).items

    # -- WADO-RS ----------------------------------------------------------------------------------
    def retrieve_metadata(self, study: str, series: str | None = None, instance: str | None = None) -> list[DicomJson]:
        rows = self._instances(study, series, instance)
        return [json.loads(absolutize_bulk_uris(r.metadata_text, self._url(r.study_uid, r.series_uid, r.sop_uid))) for r in rows]

    def iter_instances(self, study: str, series: str | None = None, instance: str | None = None) -> Iterator[bytes]:
        for row in self._instances(study, series, instance):
            yield row.blob.read()

    def iter_bulkdata(self, study: str, series: str | None = None, instance: str | None = None, *,
                      into: BulkRoom | None = None) -> Iterator[BulkPart]:
        for row in self._instances(study, series, instance):
            for value in transcode.bulk_values(row, self._url(row.study_uid, row.series_uid, row.sop_uid), as_stored=True):
                data = value.read()
                room = into(value.location, value.transfer_syntax) if into is not None else None
                if room is not None and len(room) == len(data):
                    room[:] = data
                    yield BulkPart(value.location, room, value.transfer_syntax, value.media_type, filled=True)
                else:
                    yield BulkPart(value.location, data, value.transfer_syntax, value.media_type)

    def retrieve_frames(self, study: str, series: str, instance: str, frames: Sequence[int]) -> list[EncodedFrame]:
        row = self._instances(study, series, instance)[0]
        count = reader.frame_count(row)
        out = []
        for number in frames:
            if not 1 <= number <= count:
                raise NotFound(f"frame {number} is out of range: instance {instance} has {count} frame(s)", status=404,
                               url=self._url(study, series, instance))
            as_stored = bool(row.layout.frames) and row.transfer_syntax not in (transcode.DEFLATED, transcode.BIG_ENDIAN)
            target = row.transfer_syntax if as_stored else transcode.EXPLICIT_LE
            try:
                data = transcode.frame_bytes(row, number - 1, target)
            except transcode.TranscodeError as exc:
                raise NotAcceptable(str(exc), status=406, url=self._url(study, series, instance)) from None
            out.append(EncodedFrame(data, target, mediatypes.TRANSFER_SYNTAX_MEDIA_TYPES.get(target, mediatypes.OCTET_STREAM)))
        return out

    def retrieve_rendered(self, study: str, series: str | None = None, instance: str | None = None,
                          frame: int | None = None, *, media_type: str = "image/png",
                          params: Mapping[str, str] | None = None) -> RenderedImage:
        options = self._options(params)
        return self._image(study, series, instance, frame, media_type, options, thumbnail=False)

    def retrieve_thumbnail(self, study: str, series: str | None = None, instance: str | None = None,
                           frame: int | None = None, *, media_type: str = "image/png", size: int | None = None) -> RenderedImage:
        options = self._options({"viewport": f"{size},{size}"} if size else None)
        return self._image(study, series, instance, frame, media_type, options, thumbnail=True)

    def _options(self, params: Mapping[str, str] | None) -> rd.RenderOptions:
        unknown = sorted(set(params or {}) - RENDERED_PARAMETERS)
        if unknown:  # what the server's Warning header says over HTTP (PS3.18 8.3: ignored)
            warnings.warn(f"unknown rendering parameter(s) {', '.join(unknown)} ignored", stacklevel=3)
        try:
            return parse_rendered_params({k: [str(v)] for k, v in (params or {}).items()})
        except rd.RenderParameterError as exc:
            raise BadRequest(f"bad rendering parameter {exc}", status=400, url=self.base_url) from None
        except mediatypes.NotAcceptable as exc:
            raise NotAcceptable(str(exc), status=406, url=self.base_url) from None

    def _image(self, study: str, series: str | None, instance: str | None, frame: int | None, media_type: str,
               options: rd.RenderOptions, *, thumbnail: bool) -> RenderedImage:
        rows = self._instances(study, series, instance)
        if instance is None:
            chosen = transcode.representative(rows)
            if chosen is None:
                raise NotFound("nothing to render: no instance here has pixel data", status=404, url=self._url(study, series))
            row, index = chosen
        else:
            row, index = rows[0], (frame or 1) - 1
            if not 0 <= index < reader.frame_count(row):
                raise NotFound(f"frame {index + 1} is out of range", status=404, url=self._url(study, series, instance))
        try:
            data = transcode.render(row, index, media_type, options, thumbnail=thumbnail)
        except (transcode.TranscodeError, rd.RenderParameterError, ValueError) as exc:
            raise NotAcceptable(str(exc), status=406, url=self._url(study, series, instance)) from None
        return RenderedImage(data, media_type)

    # -- delete and the change feed (client.workflow) --------------------------------------------
    def delete_resource(self, study: str, series: str | None = None, instance: str | None = None) -> None:
        try:
            self.store.delete(study, series, instance)
        except NotFoundError as exc:
            raise NotFound(str(exc), status=404, url=self._url(study, series, instance)) from None

    def change_feed(self, *, offset: int = 0, limit: int = 100, start: str | None = None, end: str | None = None,
                    include_metadata: bool = False) -> list[DicomJson]:
        params = {"offset": [str(offset)], "limit": [str(limit)], "includeMetadata": [str(include_metadata)]}
        params.update({name: [value] for name, value in (("startTime", start), ("endTime", end)) if value})
        try:
            request = changefeed.parse_feed_request(params)
        except changefeed.ChangeFeedError as exc:
            raise BadRequest(str(exc), status=400, url=self.base_url) from None
        return [changefeed.feed_entry(e, self._url, include_metadata=include_metadata)
                for e in changefeed.read_feed(self.store, request)]

    def latest_change(self) -> DicomJson | None:
        entry = self.store.latest_change(include_metadata=False)
        return changefeed.feed_entry(entry, include_metadata=False) if entry is not None else None

    # -- STOW-RS ----------------------------------------------------------------------------------
    def store_instances(self, items: Sequence[StowItem], *, study: str | None = None,
                        on_sent: Callable[[StowItem], None] | None = None) -> DicomJson:
        paths = []
        try:
            for item in items:
                path = self.store.tmp_dir / f"local-{os.getpid()}-{secrets.token_hex(6)}.part"
                with open_private(path, "wb") as fp:
                    fp.write(item.read())
                    fp.flush()
                    os.fsync(fp.fileno())
                paths.append(path)
                if on_sent is not None:
                    on_sent(item)
            outcomes = self.store.store_files(paths, expected_study=study, sources=[item.label for item in items])
        finally:
            for path in paths:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
        return response_dataset(outcomes, self._url, study)

    @property
    def worklist(self) -> Any:
        """The worklist transactions (UPS-RS) on this store, in-process (``StoreWorklist``)."""
        return StoreWorklist(self.store, self.base_url)

    def close(self) -> None:
        self.store.close()


def local_source(folder: Path) -> StoreSource:
    """The factory ``dw.connect()`` uses for the workspace store folder."""
    return StoreSource(folder, base_url=os.environ.get(LOCAL_URL_ENV) or None)


def workspace_servers(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Servers added with PUT /servers to the team store a workspace folder stands for (its index
    holds them, shared by every server and notebook on it); empty for a folder store."""
    options = workspace_store_options(folder)
    if not options.get("database"):
        return {}
    index = open_index(options["database"])
    try:
        return index.load_servers()
    finally:
        index.close()


# -- the worklist (UPS-RS) in-process: client/workitems.py's WorklistSource without HTTP, with the same
# answers and errors as the server gives (both call store.worklist) ------------------------------------

T = TypeVar("T")
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

    def _worklist_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
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

    def channel(self, aetitle: str) -> StoreEventReceiver:
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

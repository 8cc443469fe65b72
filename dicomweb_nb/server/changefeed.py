"""The change feed, as Azure's DICOM service has it: ``GET {root}/changefeed`` and
``GET {root}/changefeed/latest`` (``store.changefeed`` describes the parameters and versions).

An entry per instance created (a re-STOW is a create; the entries it replaces become ``replaced``)
or deleted (earlier entries of the instance become ``deleted``), read in one order by every process
on the store. ``Metadata`` is the instance's current DICOM JSON, with absolute BulkDataURIs.
"""

from __future__ import annotations

from typing import Any

from ..store.changefeed import ChangeFeedError, feed_entry, parse_feed_request, read_feed
from .base import ApiError, DicomWebMixin


class _FeedBase(DicomWebMixin):
    version = 2

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        self.version = kwargs.pop("version", 2)
        super().initialize(*args, **kwargs)

    def _request(self) -> Any:
        arguments = {name: [v.decode("utf-8", "replace") for v in values]
                     for name, values in self.request.query_arguments.items()}
        try:
            return parse_feed_request(arguments, version=self.version)
        except ChangeFeedError as exc:
            raise ApiError(400, str(exc)) from None


class ChangeFeedMixin(_FeedBase):
    """``GET {root}/changefeed``: a JSON array of entries."""

    async def get(self) -> None:
        request = self._request()
        entries = await self.run_blocking(read_feed, self.store, request)
        url = self.url_builder()
        self.write_json([feed_entry(e, url, include_metadata=request.include_metadata) for e in entries],
                        200, "application/json")


class ChangeFeedLatestMixin(_FeedBase):
    """``GET {root}/changefeed/latest``: the newest entry (204 when there is none yet)."""

    async def get(self) -> None:
        request = self._request()
        entry = await self.run_blocking(self.store.latest_change, include_metadata=request.include_metadata)
        if entry is None:
            self.set_status(204)
            self.finish()
            return
        self.write_json(feed_entry(entry, self.url_builder(), include_metadata=request.include_metadata),
                        200, "application/json")

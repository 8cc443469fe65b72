"""QIDO-RS (PS3.18 10.6): search studies, series and instances of the store."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from ..dicom import mediatypes as mt
from ..dicom.dicomjson import json_to_xml
from ..dicom.multipart import MultipartWriter
from ..dicom.query import Query, QueryError, parse_query
from ..dicom.resources import UrlBuilder
from ..store import SearchResult
from .base import ApiError, DicomWebMixin

_XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'
_NON_QUERY_PARAMETERS = frozenset({"accept", "token"})


class QidoMixin(DicomWebMixin):
    """GET handler of the search URLs; ``level`` comes from the route."""

    level: str = "study"

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        self.level = kwargs.pop("level", "study")
        super().initialize(*args, **kwargs)

    def query_pairs(self) -> list[tuple[str, str]]:
        """Query parameters, percent-decoded (UTF-8) before anything else looks at them."""
        try:
            return parse_qsl(self.request.query, keep_blank_values=True, strict_parsing=False, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ApiError(400, "the query string is not valid UTF-8 once percent-decoded") from None

    async def get(self, study: str | None = None, series: str | None = None) -> None:
        if study is not None:
            study = self.uid(study, "StudyInstanceUID")
        if series is not None:
            series = self.uid(series, "SeriesInstanceUID")
        media_type, _ = self.choose([mt.DICOM_JSON, mt.JSON, _XML_MULTIPART])
        # "accept" is PS3.18's media type parameter; "token" authenticates (jupyter-server and
        # `dicomweb-nb serve --token` both take it in the URL): neither is a matching key.
        pairs = [(k, v) for k, v in self.query_pairs() if k not in _NON_QUERY_PARAMETERS]
        try:
            query = parse_query(pairs, self.level)
        except QueryError as exc:
            raise ApiError(400, f"bad QIDO-RS query: {exc}") from None
        max_results = self.ctx.config.qido_max_results or None
        result = await self.run_blocking(self._search, query, study, series, max_results, self.url_builder())
        if result.truncated:
            self.add_header(
                "Warning",
                '299 dicomweb-nb "The number of results exceeded the maximum supported by the server. '
                'Additional results can be requested."',
            )
        for text in query.warnings:
            # A header value is Latin-1 text without quotes of its own: the query's words are escaped.
            quoted = text.replace('"', "'").encode("ascii", "backslashreplace").decode("ascii")
            self.add_header("Warning", f'299 dicomweb-nb "{quoted}"')
        if media_type == _XML_MULTIPART:
            writer = MultipartWriter()
            self.set_header("Content-Type", mt.multipart_content_type(mt.DICOM_XML, writer.boundary))
            for item in result.items:
                self.write(writer.part_head(mt.DICOM_XML))
                self.write(json_to_xml(item))
            self.finish(writer.close())
            return
        self.write_json(result.items, 200, media_type)

    def _search(self, query: Query, study: str | None, series: str | None, max_results: int | None,
                url: UrlBuilder) -> SearchResult:
        # A scope in the URL is one more matching key: an unknown study or series matches nothing
        # (an empty answer, as Orthanc and dcm4chee give), so clients can probe for what is there.
        return self.store.search(query, study_uid=study, series_uid=series, retrieve_url=url,
                                 max_results=max_results)

"""HTTP for the DICOMweb client: session, authentication, retries, error mapping, streamed multipart.

Retries: idempotent requests (GET, HEAD) go through urllib3's ``Retry`` on the session's adapter,
which backs off exponentially, honours ``Retry-After`` and retries 429/502/503/504 answers and
connection failures. A STOW-RS POST streams its body from a generator of files, which urllib3
cannot rewind, so ``HttpClient.post`` retries itself, asking the caller for a fresh body each time.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Literal, TypeVar, overload
from urllib.parse import quote

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..dicom.mediatypes import MediaTypeError, parse_media_type
from ..dicom.multipart import MultipartError, MultipartReader, ReadableInto, iter_parts
from ..errors import (
    ConnectionFailed,
    DicomWebError,
    InvalidResponse,
    error_class_for_status,
    server_message_from_body,
)

__all__ = ["HttpClient", "encode_query", "RETRY_STATUSES", "QUERY_SAFE"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# What RFC 3986 lets stand unescaped in a query value, minus the characters that delimit parameters
# ("&", "=", "+" read as space by form decoders, "#"). Servers that do not percent-decode query
# values (Debian's Orthanc 1.10 + DICOMweb 1.7) then still see "*", "?", ",", "-" and "." as sent.
QUERY_SAFE = "-._~!$'()*,;:@/?"
CHUNK_SIZE = 1 << 20
# What reading an answer's body can raise below requests: the socket's errors, http.client's
# (IncompleteRead), urllib3's (ProtocolError, ReadTimeoutError) and requests' own.
_BODY_ERRORS = (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError, requests.exceptions.RequestException)
_T = TypeVar("_T")


def encode_query(params: Sequence[tuple[str, str]]) -> str:
    """A query string with every value escaped only where RFC 3986 requires it."""
    return "&".join(f"{quote(name, safe=QUERY_SAFE)}={quote(value, safe=QUERY_SAFE)}" for name, value in params)


class HttpClient:
    """A requests session bound to one DICOMweb root, raising ``DicomWebError`` for failures.

    Either give ``session`` (used as is: its adapters and auth are the caller's) or let this make
    one with ``retries`` retries and a connection pool of ``pool_size``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        jupyter_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = 60.0,
        retries: int = 3,
        backoff_factor: float = 0.5,
        pool_size: int = 16,
        verify: bool | str = True,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise DicomWebError(f"a DICOMweb URL must start with http:// or https://, not {base_url!r}")
        if token and jupyter_token:
            raise DicomWebError("give either token= (Bearer) or jupyter_token=, not both")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_factor = backoff_factor
        self.owns_session = session is None
        if session is None:
            session = requests.Session()
            retry = Retry(
                total=retries, connect=retries, read=retries, status=retries, other=0,
                backoff_factor=backoff_factor, status_forcelist=sorted(RETRY_STATUSES),
                allowed_methods=Retry.DEFAULT_ALLOWED_METHODS, raise_on_status=False,
                respect_retry_after_header=True,
            )
            adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.verify = verify
        self.session = session
        if username is not None or password is not None:
            session.auth = (username or "", password or "")
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        if jupyter_token:
            session.headers["Authorization"] = f"token {jupyter_token}"
        if headers:
            session.headers.update(headers)

    # -- URLs -----------------------------------------------------------------------------------
    def url(self, *segments: str, query: Sequence[tuple[str, str]] | None = None) -> str:
        path = "/".join(quote(str(s), safe="") for s in segments if s is not None and s != "")
        url = f"{self.base_url}/{path}" if path else self.base_url
        if query:
            url += "?" + encode_query(query)
        return url

    # -- requests -------------------------------------------------------------------------------
    def request(self, method: str, url: str, *, accept: str | None = None, stream: bool = False,
                headers: Mapping[str, str] | None = None, accept_statuses: Collection[int] = (),
                **kwargs: Any) -> requests.Response:
        """Send one request; raise the DicomWebError subclass of its status when it is not 2xx.

        ``accept_statuses`` are error statuses whose answer the caller reads itself (a STOW-RS 409
        lists the refused instances).
        """
        all_headers = dict(headers or {})
        if accept:
            all_headers["Accept"] = accept
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, headers=all_headers, stream=stream, **kwargs)
        except requests.exceptions.RetryError as exc:
            raise ConnectionFailed(f"{method} {url} failed after {self.retries} retries: {exc}", url=url, method=method) from exc
        except requests.exceptions.Timeout as exc:
            raise ConnectionFailed(f"{method} {url} timed out ({self.timeout} s)", url=url, method=method) from exc
        except requests.exceptions.RequestException as exc:
            raise ConnectionFailed(f"{method} {url} failed: {exc}", url=url, method=method) from exc
        if response.status_code >= 400 and response.status_code not in accept_statuses:
            raise self.error_from(response)
        return response

    def get(self, url: str, *, accept: str | None = None, stream: bool = False, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, accept=accept, stream=stream, **kwargs)

    def get_content(self, url: str, *, accept: str | None = None, **kwargs: Any) -> requests.Response:
        """GET and read the whole body, retrying when the connection breaks mid-body.

        urllib3 retries failures before the answer starts; a reset while the body is read (a
        server restarting, a proxy timing out) surfaces later, so it is retried here.
        """
        attempt = 0
        while True:
            response = self.get(url, accept=accept, stream=True, **kwargs)
            try:
                _ = response.content
                return response
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
                response.close()
                attempt += 1
                if attempt > self.retries:
                    raise ConnectionFailed(f"GET {url}: connection broken while reading the answer: {exc}",
                                           url=url, method="GET") from exc
                time.sleep(self.backoff_factor * (2 ** (attempt - 1)))

    def post(self, url: str, body_factory: Callable[[], Any], *, content_type: str, accept: str | None = None,
             headers: Mapping[str, str] | None = None, accept_statuses: Collection[int] = ()) -> requests.Response:
        """POST a body made by ``body_factory()`` (called again for each retry)."""
        attempt = 0
        while True:
            all_headers = {"Content-Type": content_type, **(headers or {})}
            try:
                response = self.request("POST", url, data=body_factory(), accept=accept, headers=all_headers,
                                        accept_statuses=accept_statuses)
                return response
            except DicomWebError as exc:
                retryable = exc.status in RETRY_STATUSES or (exc.status is None and isinstance(exc, ConnectionFailed))
                attempt += 1
                if not retryable or attempt > self.retries:
                    raise
                time.sleep(self._retry_delay(exc, attempt))

    def _retry_delay(self, exc: DicomWebError, attempt: int) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), 60.0)
        return self.backoff_factor * 2.0 ** (attempt - 1)

    @staticmethod
    def error_from(response: requests.Response) -> DicomWebError:
        """The DicomWebError for a failed answer, with the server's explanation."""
        try:
            body = response.content[:65536]
        except requests.exceptions.RequestException:
            body = b""
        message = server_message_from_body(body, response.headers.get("Content-Type"))
        method = response.request.method if response.request is not None else None
        reason = response.reason or ""
        cls = error_class_for_status(response.status_code)
        exc = cls(f"{method} {response.url} answered {response.status_code} {reason}".rstrip(),
                  status=response.status_code, url=response.url, server_message=message, method=method)
        retry_after = response.headers.get("Retry-After")
        if retry_after and retry_after.strip().isdigit():
            exc.retry_after = int(retry_after)  # type: ignore[attr-defined]
        return exc

    # -- multipart answers -------------------------------------------------------------------------
    @overload
    @staticmethod
    def iter_multipart(response: requests.Response, *, chunk_size: int = CHUNK_SIZE,
                       views: Literal[False] = False) -> Iterator[tuple[dict[str, str], bytes]]: ...

    @overload
    @staticmethod
    def iter_multipart(response: requests.Response, *, chunk_size: int = CHUNK_SIZE,
                       views: bool) -> Iterator[tuple[dict[str, str], bytes | memoryview]]: ...

    @staticmethod
    def iter_multipart(response: requests.Response, *, chunk_size: int = CHUNK_SIZE,
                       views: bool = False) -> Iterator[tuple[dict[str, str], bytes | memoryview]]:
        """Each ``(headers, content)`` part of a multipart/related answer, read as a stream.

        A single-part answer that is not multipart (some servers send a lone frame so) is one part.
        """
        boundary = _multipart_boundary(response)
        try:
            if boundary is None:
                yield {"content-type": response.headers.get("Content-Type", "")}, response.content
                return
            yield from iter_parts(response.iter_content(chunk_size=chunk_size), boundary, views=views)
        except MultipartError as exc:
            raise InvalidResponse(f"GET {response.url}: malformed multipart answer: {exc}",
                                  status=response.status_code, url=response.url) from exc
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
            raise ConnectionFailed(f"GET {response.url}: connection broken while reading the answer: {exc}",
                                   url=response.url, method="GET") from exc
        finally:
            response.close()

    @staticmethod
    def iter_multipart_into(response: requests.Response, room_for: Callable[[dict[str, str], bytes], memoryview | None],
                            *, head_size: Callable[[], int] | None = None
                            ) -> Iterator[tuple[dict[str, str], bytes, bytes | memoryview, bool]]:
        """Each part of a multipart/related answer as ``(headers, head, rest, filled)``, read as a stream.

        ``head`` is the first ``head_size()`` bytes of the part's content (none without ``head_size``),
        ``rest`` the others. Where ``room_for(headers, head)`` gives a writable byte view of the
        rest's size, the rest is read from the connection straight into it: ``rest`` is then that
        view and ``filled`` True (the bytes are copied once, by the kernel, instead of through
        chunks, joins and a final copy). Otherwise, or when the size differs, ``rest`` is bytes.
        """
        url = response.url

        def guarded(step: Callable[[], _T]) -> _T:
            try:
                return step()
            except MultipartError as exc:
                raise InvalidResponse(f"GET {url}: malformed multipart answer: {exc}",
                                      status=response.status_code, url=url) from exc
            except _BODY_ERRORS as exc:
                raise ConnectionFailed(f"GET {url}: connection broken while reading the answer: {exc}",
                                       url=url, method="GET") from exc

        try:
            boundary = _multipart_boundary(response)
            if boundary is None:
                yield {"content-type": response.headers.get("Content-Type", "")}, b"", guarded(lambda: response.content), False
                return
            reader = MultipartReader(_body_stream(response), boundary)
            while (headers := guarded(reader.next_part)) is not None:
                head = guarded(partial(reader.read_head, head_size())) if head_size is not None else b""
                if not reader.in_content:  # the whole part fitted in the head
                    yield headers, head, b"", False
                    continue
                room = room_for(headers, head)
                if room is not None and guarded(partial(reader.read_into, room)):
                    yield headers, head, room, True
                else:
                    yield headers, head, guarded(reader.read), False
        finally:
            response.close()

    def close(self) -> None:
        if self.owns_session:
            self.session.close()


def _multipart_boundary(response: requests.Response) -> str | None:
    """The boundary of a multipart answer, None for an answer that is not multipart (some servers
    send a lone frame so); InvalidResponse when its Content-Type cannot be read or has no boundary."""
    content_type = response.headers.get("Content-Type", "")
    try:
        media = parse_media_type(content_type) if content_type else None
    except MediaTypeError as exc:
        raise InvalidResponse(f"GET {response.url}: unreadable Content-Type {content_type!r}",
                              status=response.status_code, url=response.url) from exc
    if media is None or media.main != "multipart":
        return None
    boundary = media.params.get("boundary")
    if not boundary:
        raise InvalidResponse(f"GET {response.url}: multipart answer without a boundary",
                              status=response.status_code, url=response.url)
    return boundary


class _DecodedBody:
    """``readinto`` over urllib3's decoding reads: for answers whose bytes are not the content
    (gzip) or whose connection urllib3 has already read from."""

    def __init__(self, raw: Any):
        self._raw = raw

    def readinto(self, buffer: memoryview) -> int:
        data = self._raw.read(len(buffer), decode_content=True)
        buffer[:len(data)] = data
        return len(data)


def _body_stream(response: requests.Response) -> ReadableInto:
    """The answer's body as a stream to ``readinto``: the ``http.client`` response under urllib3
    where nothing stands between it and the content (no content coding, nothing read yet), so a
    part can be received straight into its destination; urllib3's decoding reads otherwise.

    urllib3 has no public way to this: its own ``readinto`` reads into a new bytes object and copies
    (http.client's ``read(n)`` copies once more), which for a 157 MB volume cost as much as the
    transfer itself. ``_fp`` is the attribute urllib3 1.x and 2.x keep it in.
    """
    raw = response.raw
    fp = getattr(raw, "_fp", None)
    coded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
    if isinstance(fp, http.client.HTTPResponse) and not coded and getattr(raw, "tell", lambda: -1)() == 0:
        return fp
    return _DecodedBody(raw)

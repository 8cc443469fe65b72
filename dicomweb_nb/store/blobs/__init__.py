"""Blob storage: where the store keeps the bytes of each instance, behind one small interface.

A blob is written once under a new key and never modified; replacing an instance writes a new
blob and the index switches to it. Two implementations:

- ``LocalBlobs``: a folder on local disk (the workspace store's ``files/``); reads of whole
  instances go out with sendfile(2).
- ``FsspecBlobs``: any fsspec filesystem (``s3://bucket/prefix`` through s3fs, and by the same
  code ``gs://`` and ``az://``); frames are read as byte ranges, never whole objects.

``open_blob_storage`` picks one from a URL or a folder path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from ...fileio import StoreModes

CHUNK = 1 << 20


class BlobStorage(ABC):
    """Write-once byte objects by key (``study/series/sop.token.dcm``)."""

    #: Where the blobs are, for messages and logs (never with credentials).
    url: str
    #: Seconds a replaced or deleted blob stays readable, for reads already under way in other
    #: processes (a local file stays readable through an open descriptor, an object does not).
    grace: float = 0.0

    @abstractmethod
    def put(self, key: str, source: Path, *, move: bool, synced: bool = False) -> int:
        """Store the local file ``source`` under ``key`` (moved when ``move`` and possible); returns
        its size. When this returns the blob is complete, though maybe not yet durable (``sync``).
        ``synced``: the caller made ``source``'s bytes durable already (no second fsync)."""

    def sync(self, keys: Iterable[str]) -> None:  # noqa: B027 - optional: nothing to do where a put is durable
        """Make the blobs ``put`` under ``keys`` durable (before the index refers to them)."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A seekable binary file object reading the blob."""

    @abstractmethod
    def read(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the blob, with one ranged read."""

    def iter_range(self, key: str, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """Bytes ``[start, end)`` in pieces of at most ``chunk`` bytes."""
        position = start
        while position < end:
            data = self.read(key, position, min(end, position + chunk))
            if not data:
                raise ConnectionError(f"blob {key} of {self.url} is shorter than the index says")
            position += len(data)
            yield data

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob; a missing one is not an error."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def keys(self) -> Iterator[str]:
        """Every blob key (for reconciling the index with the storage)."""

    def local_path(self, key: str) -> Path | None:
        """The blob's file on local disk, when it is one (sendfile, pydicom by path)."""
        return None

    def staging_dir(self) -> Path | None:
        """A local folder on the same filesystem as the blobs, for uploads that ``put`` can move
        into place by rename; None when blobs are not local files."""
        return None

    def close(self) -> None:  # noqa: B027 - optional: most storages hold nothing to release
        pass


@dataclass(frozen=True)
class Blob:
    """One stored instance's bytes: what the read paths hold instead of a file path."""

    storage: BlobStorage
    key: str
    size: int

    @property
    def local_path(self) -> Path | None:
        return self.storage.local_path(self.key)

    def open(self) -> BinaryIO:
        return self.storage.open(self.key)

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        return self.storage.read(self.key, start, self.size if end is None else end)

    def chunks(self, start: int = 0, end: int | None = None, chunk: int = CHUNK) -> Iterator[bytes]:
        return self.storage.iter_range(self.key, start, self.size if end is None else end, chunk)

    @contextlib.contextmanager
    def local_file(self) -> Iterator[Path]:
        """A path to the blob's bytes on local disk: the file itself, or a temporary copy."""
        path = self.local_path
        if path is not None:
            yield path
            return
        fd, temp = tempfile.mkstemp(prefix="dicomweb-nb-blob-", suffix=".dcm")
        try:
            with os.fdopen(fd, "wb") as out:
                for data in self.chunks():
                    out.write(data)
            yield Path(temp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def __str__(self) -> str:
        return f"{self.storage.url}/{self.key}"


def redact_url(url: str, *, drop_password: bool = False) -> str:
    """``url`` without a password (``scheme://user:***@host/...``, or ``user@host`` when
    ``drop_password``), for logs, messages and files."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = parts.username or ""
    if parts.password is not None and not drop_password:  # noqa: SIM108 - clearer than a nested conditional
        netloc = f"{user}:***@{host}"
    else:
        netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@")


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def is_remote_url(location: str) -> bool:
    """Whether a storage location names an fsspec filesystem rather than a local folder."""
    scheme = urlsplit(location).scheme
    return len(scheme) > 1 and scheme != "file"


def open_blob_storage(location: str | os.PathLike[str], *, modes: StoreModes | None = None,
                      options: dict | None = None) -> BlobStorage:
    """Blob storage for a folder path (or ``file://`` URL) or an fsspec URL (``s3://bucket/prefix``).

    Credentials and endpoints come from the usual places of each filesystem (for S3:
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, profiles), or from
    ``options`` (fsspec storage options); never put them in the URL.
    """
    text = os.fspath(location)
    if is_remote_url(text):
        from .fsspec import FsspecBlobs

        return FsspecBlobs(text, options=options)
    if text.startswith("file://"):
        text = urlsplit(text).path
    from .local import LocalBlobs

    return LocalBlobs(Path(text), modes=modes or StoreModes())


def remove_path(path: Path) -> None:
    """Remove a file or folder tree; already gone is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


__all__ = ["BlobStorage", "Blob", "open_blob_storage", "redact_url", "redact_text", "is_remote_url", "remove_path", "CHUNK"]

"""Blobs in any fsspec filesystem: ``s3://bucket/prefix`` (s3fs), ``gs://`` (gcsfs), ``az://`` (adlfs).

An object store makes a write visible only once it is complete (a single PUT, or a multipart
upload completed at the end), so ``put`` is atomic and durable when it returns. Reads are ranged
GETs (``cat_file(path, start, end)``): a frame costs one request for its bytes, never the object.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from fsspec.core import url_to_fs

from . import BlobStorage, redact_url

GRACE_SECONDS = 120.0  # how long a replaced object stays readable for reads under way elsewhere


class FsspecBlobs(BlobStorage):
    grace = GRACE_SECONDS

    def __init__(self, url: str, *, options: dict[str, Any] | None = None):
        self.url = redact_url(url.rstrip("/"))
        # No listing cache: other processes add and remove objects, and a stale listing would
        # answer exists() wrongly (reads by key need no listing).
        options = {"use_listings_cache": False, **(options or {})}
        try:
            self.fs, root = url_to_fs(url.rstrip("/"), **options)
        except ImportError as exc:
            scheme = url.split("://", 1)[0]
            package = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(
                scheme, "its fsspec driver"
            )
            raise ValueError(f"blob storage {self.url} needs the package {package}: pip install {package}") from exc
        self.root = root.rstrip("/")
        if not self.root:
            raise ValueError(f"blob storage URL {self.url} names no bucket")
        self._check_reachable()

    def _check_reachable(self) -> None:
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.ls(bucket, detail=False, refresh=True)
        except FileNotFoundError:
            raise ValueError(f"blob storage {self.url}: the bucket {bucket!r} does not exist") from None
        except PermissionError as exc:
            raise ValueError(f"blob storage {self.url}: access to the bucket {bucket!r} is denied ({exc}); "
                             "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)") from None
        except Exception as exc:  # noqa: BLE001 - each driver has its own errors (botocore's NoCredentialsError, ...)
            raise ValueError(f"blob storage {self.url}: cannot reach the bucket {bucket!r}: "
                             f"{type(exc).__name__}: {exc}") from None

    def _path(self, key: str) -> str:
        if key.startswith(("/", ".")) or ".." in key.split("/"):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self.root}/{key}"

    def put(self, key: str, source: Path, *, move: bool, synced: bool = False) -> int:
        path = self._path(key)
        self.fs.put_file(str(source), path)
        size = Path(source).stat().st_size
        if move:
            Path(source).unlink(missing_ok=True)
        return size

    def open(self, key: str) -> BinaryIO:
        # Read-ahead cache of 1 MiB blocks: pydicom's many small reads become few ranged GETs.
        return self.fs.open(self._path(key), "rb", block_size=1 << 20, cache_type="readahead")

    def read(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        return self.fs.cat_file(self._path(key), start=start, end=end)

    def iter_range(self, key: str, start: int, end: int, chunk: int = 8 << 20) -> Iterator[bytes]:
        # Larger pieces than local reads: each one is a request.
        return super().iter_range(key, start, end, max(chunk, 8 << 20))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def keys(self) -> Iterator[str]:
        prefix = self.root + "/"
        try:
            found = self.fs.find(self.root, withdirs=False, detail=False)
        except FileNotFoundError:
            return
        for path in found:
            path = path.split("://", 1)[-1]
            if path.startswith(prefix):
                yield path[len(prefix):]

    def close(self) -> None:
        # s3fs keeps one event-loop thread per process; nothing to release per store.
        pass

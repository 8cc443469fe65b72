"""Sending large answers: multipart bodies made of blob slices and computed parts.

A body is planned as ``Piece``s: a part head (multipart framing) followed either by a slice of
a stored blob or by bytes computed on demand (a transcoded instance, a decoded frame). When
every piece is a slice the length is known, so the answer carries a Content-Length; when every
blob is a local file the slices go out with sendfile(2): the kernel copies file to socket and
Python touches no byte. Blobs in object storage are read in ranged pieces.
Otherwise blocks are read or computed in a worker while the previous block is being sent, so
memory stays bounded by a couple of blocks whatever the size of the study.
"""

from __future__ import annotations

import os
import select
import socket
from dataclasses import dataclass
from typing import Callable, Iterator

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream

from ..store.blobs import Blob
from .base import DicomWebMixin

BLOCK = 2 << 20  # bytes handed to the socket at a time on the buffered path


@dataclass
class Piece:
    """One part of a body: ``head`` bytes, then a blob slice or computed bytes."""

    head: bytes
    blob: Blob | None = None
    offset: int = 0
    length: int = 0
    compute: Callable[[], bytes] | None = None

    @property
    def sized(self) -> bool:
        return self.compute is None

    @property
    def size(self) -> int:
        return len(self.head) + (self.length if self.blob is not None else 0)


class StreamingMixin(DicomWebMixin):
    """``send_pieces``: the body of an answer whose headers are set, then finish()."""

    async def send_pieces(self, pieces: list[Piece], tail: bytes = b"") -> None:
        if all(p.sized for p in pieces):
            self.set_header("Content-Length", str(sum(p.size for p in pieces) + len(tail)))
            if all(p.blob is None or p.blob.local_path is not None for p in pieces) and await self._sendfile(pieces, tail):
                return
        await self.stream_blocks(_blocks(pieces, tail))
        self.finish()

    async def stream_blocks(self, blocks: Iterator[bytes]) -> None:
        """Send what a blocking generator yields, computing the next block while the last one is sent."""
        loop = IOLoop.current()
        pending = loop.run_in_executor(self.ctx.executor, next, blocks, None)
        while True:
            data = await pending
            if data is None:
                return
            pending = loop.run_in_executor(self.ctx.executor, next, blocks, None)
            self.write(data)
            await self.flush()

    async def _sendfile(self, pieces: list[Piece], tail: bytes) -> bool:
        """Only for plain (not TLS) HTTP/1.1 connections with a fixed body length; False otherwise."""
        conn = self.request.connection
        stream = getattr(conn, "stream", None)
        if (not hasattr(os, "sendfile") or not isinstance(stream, IOStream) or isinstance(stream, SSLIOStream)
                or not hasattr(conn, "_expected_content_remaining") or self._write_buffer):  # type: ignore[attr-defined]
            return False
        await self.flush()  # the status line and headers go out through tornado
        if conn._expected_content_remaining is None:  # type: ignore[attr-defined]
            raise RuntimeError("unexpected HTTP framing")
        try:
            # A larger send buffer means fewer wake-ups of the sending thread per megabyte.
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            pass
        try:
            sent = await self.run_blocking(_send_pieces, stream.socket.fileno(), pieces, tail)
        except (BrokenPipeError, ConnectionResetError):
            stream.close()  # the client went away mid-answer; nothing more to say to it
            return True
        conn._expected_content_remaining -= sent  # type: ignore[attr-defined]  # bytes tornado did not write itself
        self.finish()
        return True


def _send_pieces(fd: int, pieces: list[Piece], tail: bytes) -> int:
    """Write heads and sendfile() each file slice to the (non-blocking) socket; runs in a worker."""
    sent = 0
    for piece in pieces:
        sent += _write_all(fd, piece.head)
        if piece.blob is None:
            continue
        path = piece.blob.local_path
        assert path is not None
        with open(path, "rb") as fp:
            offset, remaining = piece.offset, piece.length
            while remaining > 0:
                try:
                    n = os.sendfile(fd, fp.fileno(), offset, min(remaining, 1 << 30))
                except BlockingIOError:
                    select.select([], [fd], [], 30)
                    continue
                if n == 0:
                    raise ConnectionError(f"{path} is shorter than the index says")
                offset += n
                remaining -= n
                sent += n
    return sent + _write_all(fd, tail)


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 30)
            continue
        view = view[n:]
    return len(data)


def _blocks(pieces: list[Piece], tail: bytes) -> Iterator[bytes]:
    """The body in blocks of about BLOCK bytes: heads, file slices read, computed parts."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece.head
        if piece.compute is not None:
            buffer += piece.compute()
        elif piece.blob is not None:
            for data in piece.blob.chunks(piece.offset, piece.offset + piece.length, BLOCK):
                buffer += data
                if len(buffer) >= BLOCK:
                    yield bytes(buffer)
                    buffer.clear()
        if len(buffer) >= BLOCK:
            yield bytes(buffer)
            buffer.clear()
    buffer += tail
    if buffer:
        yield bytes(buffer)

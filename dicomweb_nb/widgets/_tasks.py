"""Background work for the widgets, and how its failures are told to the user.

Network calls and decoding run on a small thread pool so the notebook stays responsive. Widget
traits are set from those threads: ipykernel sends comm messages through its IOPub thread, which
accepts messages from any thread, and ``UI_LOCK`` keeps two workers from interleaving the updates
of one widget tree. Stale answers (a thumbnail for a study no longer shown) are dropped by
comparing a generation number taken when the work was asked for.

Failures never reach the cell as a traceback: ``describe_error`` turns them into one readable
sentence for a ``StatusBar``; the traceback goes to the ``dicomweb_nb.widgets`` logger.
"""

from __future__ import annotations

import functools
import html
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import ipywidgets as widgets

from .. import errors

__all__ = ["UI_LOCK", "TaskRunner", "StatusBar", "describe_error", "guarded", "Generation"]

log = logging.getLogger("dicomweb_nb.widgets")

UI_LOCK = threading.RLock()
T = TypeVar("T")


def describe_error(exc: BaseException, *, server: str | None = None) -> str:
    """One readable sentence for a failure, naming the server and what to do about it."""
    where = f" {server}" if server else ""
    if isinstance(exc, errors.Unauthorized):
        return (f"The server{where} refused the request (401 Unauthorized): the credentials are missing or wrong. "
                "Add the server again with a username and password, or connect with a token.")
    if isinstance(exc, errors.Forbidden):
        # The server's reason when it gave one: a read-only server refuses every user alike.
        reason = f": {exc.server_message}" if exc.server_message else " with these credentials."
        return f"The server{where} does not allow this (403 Forbidden){reason}"
    if isinstance(exc, errors.ConnectionFailed):
        url = exc.url or server or "the server"
        return f"Cannot reach {url}: the server is not running, or the address is wrong."
    if isinstance(exc, errors.ServiceUnavailable):
        return f"The server{where} is unavailable ({exc.status}); try again later."
    if isinstance(exc, errors.InvalidFilter):
        return f"Bad search: {exc}"
    if isinstance(exc, errors.NotFound):
        return f"Not found on the server{where}: {exc}"
    if isinstance(exc, errors.UnknownServer):
        return str(exc)
    if isinstance(exc, errors.DicomWebError):
        return str(exc)
    if isinstance(exc, (ValueError, OSError, KeyError)):
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return f"{type(exc).__name__}: {text}"
    return f"Unexpected {type(exc).__name__}: {exc}"


class StatusBar(widgets.HTML):
    """One line telling what the widget is doing, or what went wrong (``kind`` is info, busy, ok or error)."""

    _COLOURS: ClassVar[dict[str, str]] = {"info": "#555", "busy": "#1565c0", "ok": "#2e7d32", "error": "#b71c1c"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_class("dwnb-status")
        self.kind = "info"
        self.text = ""

    def show(self, text: str, kind: str = "info") -> None:
        if kind not in self._COLOURS:
            raise ValueError(f"kind must be one of {', '.join(self._COLOURS)}, not {kind!r}")
        colour = self._COLOURS[kind]
        icon = {"error": "&#9888; ", "busy": "&#8987; ", "ok": "&#10003; "}.get(kind, "")
        with UI_LOCK:
            self.kind = kind
            self.text = text
            self.value = (f'<div class="dwnb-status-{kind}" style="color:{colour};white-space:pre-wrap">'
                          f"{icon}{html.escape(text)}</div>")

    def error(self, exc: BaseException | str, *, server: str | None = None) -> None:
        self.show(exc if isinstance(exc, str) else describe_error(exc, server=server), "error")

    def clear(self) -> None:
        self.show("", "info")


class Generation:
    """A counter to tell whether an answer still matters: ``token = gen.next()`` when asking,
    ``gen.is_current(token)`` when the answer comes back."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._value += 1
            return self._value

    def is_current(self, token: int) -> bool:
        return token == self._value


class TaskRunner:
    """A thread pool whose tasks report failures to a StatusBar instead of raising.

    ``wait()`` blocks until no task is running, including tasks that tasks started; notebooks
    and tests call it to use results synchronously.
    """

    def __init__(self, status: StatusBar | None = None, *, max_workers: int = 4, name: str = "dicomweb-nb"):
        self.status = status
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._pending: set[Future] = set()
        self._lock = threading.Condition()
        self.errors: list[BaseException] = []

    def submit(self, fn: Callable[..., T], *args: Any, on_error: Callable[[BaseException], None] | None = None,
               server: str | None = None, **kwargs: Any) -> Future:
        def run() -> T | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                log.debug("background task failed", exc_info=True)
                self.errors.append(exc)
                if on_error is not None:
                    on_error(exc)
                elif self.status is not None:
                    self.status.error(exc, server=server)
                return None

        future = self._pool.submit(run)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)
            self._lock.notify_all()

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Wait until every task has finished; False if ``timeout`` seconds passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout=timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def guarded(status_of: Callable[[Any], StatusBar | None]) -> Callable[[Callable[..., T]], Callable[..., T | None]]:
    """Decorate a widget callback so that an exception shows in the status bar instead of the cell's log."""

    def decorate(method: Callable[..., T]) -> Callable[..., T | None]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> T | None:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                log.debug("widget callback failed", exc_info=True)
                status = status_of(self)
                if status is None:
                    raise
                status.error(exc)
                return None

        return wrapper

    return decorate

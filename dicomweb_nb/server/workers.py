"""``dicomweb-nb serve --workers N``: N server processes on one port, one store, one supervisor.

The supervisor binds the listening socket, then forks the workers (a pre-fork accept loop, as
gunicorn and tornado's ``fork_processes`` do). Each worker opens its own store (its own index
connections, its own store session) after the fork, so nothing that holds a connection or a thread
crosses it. The supervisor restarts a worker that dies, stops them all on SIGTERM or SIGINT, and
logs which worker did what; a worker whose supervisor is killed (``kill -9``) is killed with it.

Which worker accepts a connection: the one with the fewest open connections (a count per worker
in shared memory). With the kernel alone, every idle worker is woken by a new connection and the
first to call accept() wins it; two uploaders on two keep-alive connections then often land on one
worker while the other idles. Here a worker that has more connections than another steps back
(looking again every ``DEFER_SECONDS``) while the less busy one takes the connection, and takes it
itself if it is still waiting after ``MAX_DEFER_SECONDS``, so a stuck sibling never holds a client up.
SO_REUSEPORT was the other choice: the kernel spreads connections by a hash of their addresses,
which leaves half of the two-uploader runs on one worker, and a restarted worker's socket drops the
connections queued on the old one.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets

log = logging.getLogger("dicomweb_nb.server.workers")

DEFER_SECONDS = 0.002  # a busier worker looks again at a pending connection after this long...
MAX_DEFER_SECONDS = 0.05  # ...and takes it itself once it has waited this long (the less busy one is stuck)
STOP_SECONDS = 20.0  # how long a stop waits for the workers (they give running jobs 10 s) before SIGKILL
BIND_ATTEMPTS = 10  # a port held by a server killed a moment ago is free again within seconds (gunicorn: 5)
NOT_SERVING = 1 << 30  # the connection count of a worker that is not accepting (starting, dead)


def default_workers() -> int:
    """The number of cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def workers_supported() -> bool:
    """Worker processes need fork(2) (POSIX)."""
    return hasattr(os, "fork")


class ConnectionCounts:
    """Open connections per worker, in memory shared by the supervisor and the workers it forks."""

    def __init__(self, workers: int):
        self._memory = mmap.mmap(-1, 8 * workers)  # anonymous and shared: children see the same pages
        self.values = (ctypes.c_int64 * workers).from_buffer(self._memory)
        for index in range(workers):
            self.values[index] = NOT_SERVING

    def fewest(self, index: int) -> bool:
        """Whether worker ``index`` has no more open connections than any other serving worker."""
        mine = self.values[index]
        return all(mine <= other for i, other in enumerate(self.values) if i != index)


class BalancedHTTPServer(HTTPServer):
    """The HTTP server of ``dicomweb-nb serve``. With ``accept_balanced`` it shares listening sockets
    with sibling workers and takes a new connection only when it has the fewest open ones (see the
    module's docstring); ``listen`` works as usual for a single process."""

    _counts: ConnectionCounts | None = None
    _index = 0
    _balanced: dict[socket.socket, bool] | None = None  # shared socket -> its acceptor is registered

    def accept_balanced(self, sockets: list[socket.socket], counts: ConnectionCounts, index: int) -> None:
        self._counts, self._index = counts, index
        self._balanced = {}
        loop = IOLoop.current()
        for sock in sockets:
            sock.setblocking(False)
            loop.add_handler(sock, self._make_acceptor(sock), IOLoop.READ)
            self._balanced[sock] = True
        counts.values[index] = 0

    def stop(self) -> None:
        if self._balanced:
            loop = IOLoop.current()
            for sock, registered in self._balanced.items():
                if registered:
                    loop.remove_handler(sock)
                sock.close()  # this worker's copy; the supervisor keeps its own
            self._balanced = {}
            if self._counts is not None:
                self._counts.values[self._index] = NOT_SERVING
        super().stop()

    def _make_acceptor(self, sock: socket.socket) -> Callable[[Any, int], None]:
        loop = IOLoop.current()
        deferred_since: list[float | None] = [None]  # while this worker leaves a pending connection to others

        def resume() -> None:
            if not self._balanced or sock not in self._balanced:
                return  # stopped meanwhile
            if not select.select([sock], [], [], 0)[0]:
                deferred_since[0] = None  # a sibling took it
            loop.add_handler(sock, acceptor, IOLoop.READ)
            self._balanced[sock] = True

        def acceptor(_fd: Any, _events: int) -> None:
            assert self._counts is not None and self._balanced is not None
            now = time.monotonic()
            if not self._counts.fewest(self._index):
                since = deferred_since[0]
                if since is None:
                    since = deferred_since[0] = now
                if now - since < MAX_DEFER_SECONDS:
                    loop.remove_handler(sock)
                    self._balanced[sock] = False
                    loop.call_later(DEFER_SECONDS, resume)
                    return
            deferred_since[0] = None
            try:
                connection, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # a sibling took it
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    return
                raise
            stream = IOStream(connection, max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size)
            self.handle_stream(stream, address)
        return acceptor

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        if self._counts is not None:
            self._counts.values[self._index] += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        if self._counts is not None:
            self._counts.values[self._index] -= 1
        super().on_close(server_conn)


def bind_listening(port: int, address: str) -> list[socket.socket]:
    """The listening sockets of ``address:port``; a port still held (a server killed a moment ago,
    whose workers are exiting) is tried again for a few seconds before giving up."""
    for attempt in range(BIND_ATTEMPTS):
        try:
            return bind_sockets(port, address=address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                raise
            log.warning("port %d is in use; trying again in 1 s", port)
            time.sleep(1.0)
    raise AssertionError("unreachable")


@dataclass
class _Worker:
    index: int
    pid: int
    started: float
    ready: bool = False


WorkerMain = Callable[[int, ConnectionCounts, Callable[[], None]], int]


class Supervisor:
    """Forks ``count`` workers running ``main(index, counts, ready)`` (which returns an exit status
    once its server stopped; ``ready()`` says it accepts connections), restarts those that die, and
    stops them all when asked (SIGTERM, SIGINT)."""

    def __init__(self, count: int, main: WorkerMain, *, on_worker_exit: Callable[[int], None] | None = None):
        self.count = count
        self.main = main
        self.counts = ConnectionCounts(count)
        self.on_worker_exit = on_worker_exit
        self.workers: dict[int, _Worker] = {}  # by pid
        self._stopping = False
        self._stop_asked = False
        self._restarts: dict[int, list[float]] = {i: [] for i in range(count)}
        self._wake_read, self._wake_write = os.pipe()
        self._ready_read, self._ready_write = os.pipe()
        for fd in (self._wake_read, self._wake_write, self._ready_read):
            os.set_blocking(fd, False)

    # -- the supervisor's side --------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> bool:
        """Fork every worker and wait until each accepts connections; False (all stopped) if one
        fails to start or a stop is asked meanwhile."""
        self._install_signals()
        for index in range(self.count):
            self._spawn(index)
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self.workers.values()) or len(self.workers) < self.count:
            if self._stopping or time.monotonic() > deadline:
                self.stop()
                return False
            self._wait(0.5)
            if self._reap(starting=True):
                self.stop()
                return False
        return True

    @property
    def stop_asked(self) -> bool:
        """A stop was asked by a signal (SIGTERM, SIGINT), not decided after a failure."""
        return self._stop_asked

    def run(self) -> int:
        """Supervise until asked to stop; returns the exit status of ``dicomweb-nb serve``."""
        while not self._stopping:
            self._wait(1.0)
            self._reap(starting=False)
            for index in range(self.count):
                if not self._stopping and index not in {w.index for w in self.workers.values()}:
                    self._respawn(index)
        self.stop()
        return 0

    def stop(self) -> None:
        """SIGTERM to every worker (each stops its server and jobs), SIGKILL to those still running
        after STOP_SECONDS."""
        self._stopping = True
        for worker in self.workers.values():
            _signal(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while self.workers and time.monotonic() < deadline:
            self._wait(0.2)
            self._reap(starting=False)
        for worker in list(self.workers.values()):
            log.warning("worker %d (pid %d) did not stop in %.0f s: killing it", worker.index, worker.pid, STOP_SECONDS)
            _signal(worker.pid, signal.SIGKILL)
            os.waitpid(worker.pid, 0)
            self._forget(worker)

    def _install_signals(self) -> None:
        def ask_stop(signum: int, _frame: Any) -> None:
            self._stopping = self._stop_asked = True

        signal.signal(signal.SIGTERM, ask_stop)
        signal.signal(signal.SIGINT, ask_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select() below through the wakeup fd
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)

    def _wait(self, seconds: float) -> None:
        """Sleep until a signal, a worker's readiness, or ``seconds``."""
        try:
            readable, _, _ = select.select([self._wake_read, self._ready_read], [], [], seconds)
        except InterruptedError:
            return
        if self._wake_read in readable:
            _drain(self._wake_read)
        if self._ready_read in readable:
            data = _drain(self._ready_read)
            for pid in (int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - 3, 4)):
                if pid in self.workers:
                    self.workers[pid].ready = True
                    log.info("worker %d (pid %d) is serving", self.workers[pid].index, pid)

    def _reap(self, *, starting: bool) -> bool:
        """Collect exited workers; True if one exited before it was ready (start-up failed)."""
        failed = False
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            worker = self.workers.get(pid)
            if worker is None:
                continue
            self._forget(worker)
            if self._stopping:
                log.info("worker %d (pid %d) stopped", worker.index, pid)
                continue
            how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exited with status {os.waitstatus_to_exitcode(status)}")
            if not worker.ready:
                log.error("worker %d (pid %d) %s before it could serve; stopping", worker.index, pid, how)
                failed = True
            else:
                log.error("worker %d (pid %d) %s; starting another", worker.index, pid, how)
        return failed

    def _forget(self, worker: _Worker) -> None:
        self.workers.pop(worker.pid, None)
        self.counts.values[worker.index] = NOT_SERVING
        if self.on_worker_exit is not None:
            try:
                self.on_worker_exit(worker.pid)
            except Exception:
                log.exception("cleaning up after worker %d failed", worker.index)

    def _respawn(self, index: int) -> None:
        """A replacement for a dead worker; after several quick deaths in a row, with a growing pause
        (at most 30 s) so that a worker crashing at once does not spin."""
        now = time.monotonic()
        recent = [t for t in self._restarts[index] if now - t < 60.0]
        self._restarts[index] = recent
        if recent:
            pause = min(30.0, 0.5 * 2 ** (len(recent) - 1))
            if now - recent[-1] < pause:
                return  # run() comes back within a second
        self._restarts[index].append(now)
        self._spawn(index)

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid:
            self.workers[pid] = _Worker(index, pid, time.monotonic())
            return
        status = 1
        try:
            status = self._child(index)
        except BaseException:
            logging.getLogger("dicomweb_nb.server").exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(status)

    # -- the worker's side ------------------------------------------------------------------------
    def _child(self, index: int) -> int:
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        for fd in (self._wake_read, self._wake_write, self._ready_read):
            os.close(fd)
        label_logs(f"worker {index}")
        ready_fd = self._ready_write

        def ready() -> None:
            os.write(ready_fd, os.getpid().to_bytes(4, "little"))

        return self.main(index, self.counts, ready)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _die_with_parent() -> None:
    """A worker dies with its supervisor (``kill -9`` of the server stops the whole server): Linux's
    parent-death signal; elsewhere the worker notices its parent is gone (``watch_parent``)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """Where there is no parent-death signal: stop when the supervisor is gone (checked every second)."""
    if sys.platform.startswith("linux"):
        return
    from tornado.ioloop import PeriodicCallback

    def check() -> None:
        if os.getppid() != parent:
            stop()

    PeriodicCallback(check, 1000).start()


def label_logs(label: str) -> None:
    """Every log line of this process names it (``[worker 1 pid 1234]``)."""
    tag = f"[{label} pid {os.getpid()}]"
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter or logging.Formatter()
        fmt = getattr(formatter, "_fmt", None) or "%(message)s"
        if "[worker" not in fmt:
            handler.setFormatter(logging.Formatter(fmt.replace("%(name)s", f"{tag} %(name)s", 1) if "%(name)s" in fmt
                                                   else f"{tag} {fmt}", getattr(formatter, "datefmt", None)))


__all__ = ["Supervisor", "BalancedHTTPServer", "ConnectionCounts", "bind_listening", "default_workers",
           "workers_supported", "watch_parent", "label_logs", "DEFER_SECONDS"]

"""Pre-forked worker processes and the supervisor (arbiter) that keeps them, as gunicorn's.

The supervisor binds the listening sockets, forks ``workers`` processes that inherit them,
and then only watches: it never imports the application (a probe process imports it once
at start so a broken module fails fast with its message), so a worker forked after SIGHUP
loads the code as it is on disk now.  Every worker makes its own runtime -- epoll and
threads -- after the fork, and accepts on the shared sockets; connections never queue behind
a closed listener, so replacing workers refuses no request.

Signals to the supervisor, as gunicorn's:

- SIGTERM: every worker drains (stops accepting, finishes within the grace period) and the
  supervisor exits 0 once they are gone.
- SIGINT: the workers stop fast; exit 0.
- SIGHUP: start a new generation of workers; once they are accepting, drain the old ones.
- SIGTTIN / SIGTTOU: one worker more / one fewer.
- A worker that dies unexpectedly is replaced after a back-off (100 ms doubling to 10 s,
  reset when a worker has lived a minute), and the supervisor logs its exit status.

A worker whose supervisor disappears stops itself.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("fibernet.workers")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
STABLE_AFTER = 60.0


@dataclass
class _Worker:
    pid: int
    generation: int
    ready_fd: int
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    stopping: bool = False


# ``serve_worker(sockets, notify_ready)`` runs in the child: it builds the handler (importing
# the app) and serves on ``sockets`` until a signal; ``notify_ready()`` once accepting.
WorkerMain = Callable[[list[socket.socket], Callable[[], None]], None]


class Arbiter:
    def __init__(self, sockets: list[socket.socket], workers: int, worker_main: WorkerMain,
                 graceful_timeout: float = 30.0) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.sockets = sockets
        self.target = workers
        self.worker_main = worker_main
        self.graceful_timeout = graceful_timeout
        self.workers: dict[int, _Worker] = {}
        self.generation = 0
        self._backoff = 0.0
        self._respawn_at = 0.0
        self._stopping: int | None = None  # the signal that is stopping us
        self._deadline = float("inf")  # when stopping: kill workers still alive after this
        self._sig_r, self._sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- the supervisor's loop ------------------------------------------------------------

    def run(self) -> int:
        old_wakeup = signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        old = {sig: signal.signal(sig, _noop) for sig in _SIGNALS}
        try:
            log.info("supervisor %d starting %d worker(s)", os.getpid(), self.target)
            self._spawn_missing()
            while True:
                if self._stopping is not None and not self.workers:
                    log.info("supervisor %d: all workers stopped", os.getpid())
                    return 0
                self._wait_and_dispatch()
                if self._stopping is None:
                    self._spawn_missing()
                    self._retire_old_generation()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            os.close(self._sig_r)
            os.close(self._sig_w)

    def _wait_and_dispatch(self) -> None:
        fds = [self._sig_r] + [w.ready_fd for w in self.workers.values() if not w.ready]
        timeout = 1.0
        if self._respawn_at:
            timeout = max(0.0, min(timeout, self._respawn_at - time.monotonic()))
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475
            readable = []
        for fd in readable:
            if fd == self._sig_r:
                self._signals()
            else:
                self._worker_ready(fd)
        self._reap()
        if self._stopping is not None:
            self._kill_laggards()

    def _signals(self) -> None:
        try:
            data = os.read(self._sig_r, 128)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGCHLD:
                continue  # _reap runs after every wake-up
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self._stopping is None:
                    log.info("supervisor: %s, stopping %d worker(s)", name, len(self.workers))
                    self._stopping = signum
                    self._deadline = time.monotonic() + (self.graceful_timeout if signum == signal.SIGTERM else 2.0) + 5
                    self._signal_all(signum)
                else:
                    log.warning("supervisor: %s again, stopping workers now", name)
                    self._signal_all(signal.SIGINT)
            elif self._stopping is not None:
                continue
            elif signum == signal.SIGHUP:
                self.generation += 1
                log.info("supervisor: SIGHUP, starting generation %d", self.generation)
            elif signum == signal.SIGTTIN:
                self.target += 1
                log.info("supervisor: SIGTTIN, %d worker(s)", self.target)
            elif signum == signal.SIGTTOU:
                if self.target > 1:
                    self.target -= 1
                    log.info("supervisor: SIGTTOU, %d worker(s)", self.target)
                    current = sorted((w for w in self.workers.values() if not w.stopping), key=lambda w: w.started)
                    if len(current) > self.target:
                        self._stop_worker(current[-1])

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers.values():
            worker.stopping = True
            _kill(worker.pid, signum)

    def _kill_laggards(self) -> None:
        if time.monotonic() > self._deadline:
            for worker in self.workers.values():
                log.warning("worker %d did not stop in time; killing it", worker.pid)
                _kill(worker.pid, signal.SIGKILL)
            self._deadline = float("inf")

    def _stop_worker(self, worker: _Worker) -> None:
        worker.stopping = True
        _kill(worker.pid, signal.SIGTERM)

    def _worker_ready(self, fd: int) -> None:
        for worker in self.workers.values():
            if worker.ready_fd == fd:
                try:
                    data = os.read(fd, 1)
                except OSError:
                    data = b""
                worker.ready = bool(data)
                if worker.ready:
                    log.info("worker %d ready (generation %d)", worker.pid, worker.generation)
                return

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            os.close(worker.ready_fd)
            how = _describe(status)
            if worker.stopping:
                log.info("worker %d stopped (%s)", pid, how)
                continue
            lived = time.monotonic() - worker.started
            if lived > STABLE_AFTER:
                self._backoff = 0.0
            self._backoff = min(BACKOFF_MAX, self._backoff * 2) if self._backoff else BACKOFF_FIRST
            self._respawn_at = time.monotonic() + self._backoff
            log.error("worker %d died (%s) after %.1fs; replacing it in %.1fs", pid, how, lived, self._backoff)

    def _spawn_missing(self) -> None:
        current = [w for w in self.workers.values() if w.generation == self.generation and not w.stopping]
        if len(current) >= self.target:
            return
        if self._respawn_at and time.monotonic() < self._respawn_at:
            return
        self._respawn_at = 0.0
        for _ in range(self.target - len(current)):
            self._spawn()

    def _retire_old_generation(self) -> None:
        current = [w for w in self.workers.values() if w.generation == self.generation and not w.stopping]
        old = [w for w in self.workers.values() if w.generation != self.generation and not w.stopping]
        if old and len(current) >= self.target and all(w.ready for w in current):
            for worker in old:
                log.info("retiring worker %d of generation %d", worker.pid, worker.generation)
                self._stop_worker(worker)

    def _spawn(self) -> None:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_r)
            code = 0
            try:
                self._become_worker(ready_w)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported, then the process ends
                traceback.print_exc()
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(ready_w)
        self.workers[pid] = _Worker(pid, self.generation, ready_r)
        log.info("started worker %d (generation %d)", pid, self.generation)

    def _become_worker(self, ready_w: int) -> None:
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self._sig_r)
        os.close(self._sig_w)
        for worker in self.workers.values():
            os.close(worker.ready_fd)
        supervisor = os.getppid()

        def notify_ready() -> None:
            try:
                os.write(ready_w, b"R")
            finally:
                os.close(ready_w)

        os.environ["FIBERNET_SUPERVISOR_PID"] = str(supervisor)
        self.worker_main(self.sockets, notify_ready)


def _noop(signum: int, frame: object) -> None:
    """Signals reach the loop through the wake-up descriptor."""


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except OSError as exc:  # pragma: no cover
        if exc.errno != errno.ESRCH:
            raise


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"

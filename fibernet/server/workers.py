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
- A worker that dies unexpectedly (or exits 0 unasked) is replaced after a back-off (100 ms
  doubling to 10 s, reset when a worker has lived a minute), and the supervisor logs its exit
  status.

A worker whose supervisor disappears stops itself.  The supervisor serves the admin port
(``--admin-port``) in its own loop, after its signals and workers, without ever blocking on
it (:class:`~fibernet.server.admin.AdminPort`); its /metrics adds worker restarts by cause.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from fibernet.server import systemd

log = logging.getLogger("fibernet.workers")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
STABLE_AFTER = 60.0
PIPE_SIZE = 1 << 20  # a worker's reporting pipe (Linux's default limit for a user)


@dataclass
class _Worker:
    pid: int
    generation: int
    ready_fd: int  # the worker writes b"R" once accepting, then a JSON snapshot line a second
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    stopping: bool = False
    buffer: bytes = b""
    snapshot: dict | None = None


# ``worker_main(sockets, notify_ready, report)`` runs in the child: it builds the handler
# (importing the app) and serves on ``sockets`` until a signal; ``notify_ready()`` once
# accepting; ``report(line)`` sends the supervisor a snapshot line (dropped if it lags).
WorkerMain = Callable[[list[socket.socket], Callable[[], None], Callable[[bytes], None]], None]


class Arbiter:
    def __init__(
        self,
        sockets: list[socket.socket],
        workers: int,
        worker_main: WorkerMain,
        graceful_timeout: float = 30.0,
        admin: socket.socket | None = None,
    ) -> None:
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
        self._announced = -1  # the generation systemd was last told is ready (sd_notify)
        self._stopping: int | None = None  # the signal that is stopping us
        self._deadline = float("inf")  # when stopping: kill workers still alive after this
        self._sig_r, self._sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.restarts: collections.Counter[str] = collections.Counter()  # by cause (metrics.RESTART_CAUSES)
        self.admin = None
        self._admin_ready: list[int] = []  # its descriptors found ready in this turn of the loop
        if admin is not None:
            from fibernet.server.admin import AdminPort, admin_app

            self.admin = AdminPort(admin, admin_app(self.snapshots, self._accepting, lambda: self.restarts))

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
                self._serve_admin()
        finally:
            if self.admin is not None:
                self.admin.close()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            os.close(self._sig_r)
            os.close(self._sig_w)

    def _wait_and_dispatch(self) -> None:
        poller = select.poll()
        poller.register(self._sig_r, select.POLLIN)
        workers = {w.ready_fd for w in self.workers.values()}
        for fd in workers:
            poller.register(fd, select.POLLIN)
        timeout = 1.0
        if self._respawn_at:
            timeout = max(0.0, min(timeout, self._respawn_at - time.monotonic()))
        if self.admin is not None:
            for fd, events in self.admin.interest():
                poller.register(fd, events)
            left = self.admin.timeout()
            if left is not None:
                timeout = min(timeout, left)
        try:
            ready = [fd for fd, _ in poller.poll(timeout * 1000)]
        except InterruptedError:  # pragma: no cover - PEP 475
            ready = []
        self._admin_ready = []
        for fd in ready:
            if fd == self._sig_r:
                self._signals()
            elif fd in workers:
                self._worker_says(fd)
            else:
                self._admin_ready.append(fd)
        self._reap()
        if self._stopping is not None:
            self._kill_laggards()

    def _serve_admin(self) -> None:
        """The admin port's turn, last in each turn of the loop (after the signals, the
        workers and their replacement); it never blocks (non-blocking sockets, deadlines)."""
        if self.admin is not None:
            for fd in self._admin_ready:
                self.admin.handle(fd)
            self.admin.expire()

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
                    systemd.stopping()
                    log.info("supervisor: %s, stopping %d worker(s)", name, len(self.workers))
                    self._stopping = signum
                    self._close_listeners()
                    self._deadline = (
                        time.monotonic() + (self.graceful_timeout if signum == signal.SIGTERM else 2.0) + 5
                    )
                    self._signal_all(signum)
                else:
                    log.warning("supervisor: %s again, stopping workers now", name)
                    self._signal_all(signal.SIGINT)
            elif self._stopping is not None:
                continue
            elif signum == signal.SIGHUP:
                self.generation += 1
                log.info("supervisor: SIGHUP, starting generation %d", self.generation)
                systemd.reloading()
            elif signum == signal.SIGTTIN:
                self.target += 1
                log.info("supervisor: SIGTTIN, %d worker(s)", self.target)
            elif signum == signal.SIGTTOU:
                if self.target > 1:
                    self.target -= 1
                    log.info("supervisor: SIGTTOU, %d worker(s)", self.target)
                    current = sorted(
                        (w for w in self.workers.values() if not w.stopping), key=lambda w: w.started
                    )
                    if len(current) > self.target:
                        self._stop_worker(current[-1])

    def _close_listeners(self) -> None:
        """Stopping: no new connection is to be queued where no one will accept it.  The
        workers close their copies as they begin to drain; once this one is closed too, the
        kernel refuses new connections at once instead of completing their handshakes and
        resetting them at the end of the grace period."""
        for sock in self.sockets:
            sock.close()

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

    def _worker_says(self, fd: int) -> None:
        worker = next((w for w in self.workers.values() if w.ready_fd == fd), None)
        if worker is None:
            return
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            return  # the worker is ending; _reap will see it
        data = worker.buffer + data
        if not worker.ready and data.startswith(b"R"):
            worker.ready = True
            data = data[1:]
            log.info("worker %d ready (generation %d)", worker.pid, worker.generation)
            self._announce_if_ready()
        *lines, worker.buffer = data.split(b"\n")
        if len(worker.buffer) > 1 << 22:  # a runaway line: drop it
            worker.buffer = b""
        for line in lines[-1:]:
            try:
                worker.snapshot = json.loads(line)
            except ValueError:
                pass

    def _announce_if_ready(self) -> None:
        """Tell systemd once every worker of the current generation accepts (at start, and
        after each SIGHUP's new generation)."""
        if self._announced == self.generation or self._stopping is not None:
            return
        if self._generation_ready():
            self._announced = self.generation
            systemd.ready(f"{self.target} worker(s) of generation {self.generation} serving")

    def _accepting(self) -> bool:
        """Ready (/readyz): not stopping, and a worker accepts."""
        return self._stopping is None and any(w.ready for w in self.workers.values())

    def snapshots(self) -> list[dict]:
        return [w.snapshot for w in self.workers.values() if w.snapshot is not None and not w.stopping]

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
            # Exit 0 without being asked (a SIGTERM sent to the worker itself, say) is no
            # crash, but the worker is still missing: replaced all the same.
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            self.restarts["killed" if os.WIFSIGNALED(status) else "exited" if clean else "failed"] += 1
            log.log(
                logging.WARNING if clean else logging.ERROR,
                "worker %d %s (%s) after %.1fs; replacing it in %.1fs",
                pid,
                "exited on its own" if clean else "died",
                how,
                lived,
                self._backoff,
            )

    def _current(self) -> list[_Worker]:
        """The workers of the current generation not being stopped."""
        return [w for w in self.workers.values() if w.generation == self.generation and not w.stopping]

    def _generation_ready(self) -> bool:
        """Every worker the current generation should have is there and accepts."""
        current = self._current()
        return len(current) >= self.target and all(w.ready for w in current)

    def _spawn_missing(self) -> None:
        current = self._current()
        if len(current) >= self.target:
            return
        if self._respawn_at and time.monotonic() < self._respawn_at:
            return
        self._respawn_at = 0.0
        for _ in range(self.target - len(current)):
            self._spawn()

    def _retire_old_generation(self) -> None:
        old = [w for w in self.workers.values() if w.generation != self.generation and not w.stopping]
        if old and self._generation_ready():
            for worker in old:
                log.info("retiring worker %d of generation %d", worker.pid, worker.generation)
                self.restarts["reload"] += 1
                self._stop_worker(worker)

    def _spawn(self) -> None:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux: room for a whole snapshot in one write
            try:
                fcntl.fcntl(ready_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # above the limit for this user: the default size, snapshots sent in parts
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
        # These are the supervisor's to act on.  A worker gets them too when they are sent to
        # the process group or by name (pkill -f matches the workers' command line), and by
        # default SIGTTIN/SIGTTOU would stop (suspend) it and SIGHUP end it.
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        os.close(self._sig_r)
        os.close(self._sig_w)
        for worker in self.workers.values():
            os.close(worker.ready_fd)
        if self.admin is not None:
            self.admin.close()
        supervisor = os.getppid()

        def notify_ready() -> None:
            os.write(ready_w, b"R")
            os.set_blocking(ready_w, False)

        # Whole lines only: a snapshot larger than the pipe's free space is written in part,
        # and the rest must follow before another line starts (or the supervisor would never
        # see a line end).  Until it has, newer snapshots are dropped.
        unsent = bytearray()

        def report(line: bytes) -> None:
            if not unsent:
                unsent[:] = line
            try:
                while unsent:
                    del unsent[: os.write(ready_w, unsent)]
            except BlockingIOError:
                pass  # the supervisor lags: the rest goes with the next report
            except BrokenPipeError:
                unsent.clear()  # the supervisor is gone

        os.environ["FIBERNET_SUPERVISOR_PID"] = str(supervisor)
        systemd.forget()  # only the supervisor speaks to systemd (NotifyAccess=main)
        self.worker_main(self.sockets, notify_ready, report)


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

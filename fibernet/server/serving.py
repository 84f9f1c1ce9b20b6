"""Running a server in the foreground until a signal: ``fibernet.serve``.

Signals reach the runtime without running Python code at an awkward moment: the handlers
are no-ops and ``signal.set_wakeup_fd`` makes the interpreter write the signal's number to a
socket pair, which a fiber reads like any other socket.  SIGTERM drains (stop accepting,
finish within the grace period); SIGINT stops fast (a one-second grace); a second one of
either stops at once -- except in a worker of ``--workers``, which a group signal reaches twice
(directly and from its supervisor): there only a faster signal (SIGINT after SIGTERM) counts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from fibernet.errors import Cancelled
from fibernet.net.sockets import Socket
from fibernet.ops.timers import sleep
from fibernet.runtime.runtime import Runtime
from fibernet.runtime.scheduler import spawn
from fibernet.server import systemd
from fibernet.server.monitor import Monitor
from fibernet.server.tcp import Handler, Server

log = logging.getLogger("fibernet.server")

FAST_GRACE = 1.0
REPORT_INTERVAL = 1.0


def serve(
    handler: Handler, host: str = "127.0.0.1", port: int = 8000, *, threads: int = 1, **options: Any
) -> None:
    """Serve ``handler`` (one fiber per TCP connection) until SIGTERM or SIGINT."""
    run_server(Server(handler, host, port, threads=threads, **options))


def serve_http(
    app: Any, host: str = "127.0.0.1", port: int = 8000, *, threads: int = 1, **options: Any
) -> None:
    """Serve the HTTP app ``app(request) -> Response`` until SIGTERM or SIGINT."""
    from fibernet.server.http import http_server

    run_server(http_server(app, host, port, threads=threads, **options))


def run_server(
    server: Server,
    on_ready: Callable[[], None] | None = None,
    parent: int | None = None,
    admin: tuple[str, int] | socket.socket | None = None,
    report: Callable[[bytes], None] | None = None,
    block_warning: float = 0.1,
    worker_timeout: float | None = None,
) -> None:
    """Bind ``server``, run it on a runtime of ``server.threads`` schedulers in this (the
    main) thread, and stop it on SIGTERM (graceful) or SIGINT (fast).

    ``on_ready()`` is called once it accepts; with ``parent``, it stops itself when that
    process (its supervisor) is gone.  ``admin`` serves the admin endpoint (healthz, readyz,
    metrics, fibers) at that address, or on that listening socket (which it then owns);
    ``report(line)`` is given a snapshot a second (how a worker keeps its supervisor informed).
    A :class:`~fibernet.server.monitor.Monitor` logs a scheduler blocked longer than
    ``block_warning`` seconds (0: no warning) and, with ``worker_timeout``, ends the process
    when all are blocked longer than that.
    """
    from fibernet.server.admin import WaitClock, admin_app, refresh, snapshot
    from fibernet.server.http import http_server

    server.bind()
    monitor = Monitor(block_warning, worker_timeout) if block_warning > 0 or worker_timeout else None
    admin_server = None
    if admin is not None:
        # The snapshot a second that feeds "how long" also answers /metrics and /fibers.
        latest: list[bytes] = []
        clock = WaitClock()

        def current() -> list[dict]:
            return [refresh(json.loads(latest[-1]))] if latest else [snapshot(server, clock)]

        def keep(line: bytes, forward: Callable[[bytes], None] | None = report) -> None:
            latest[:] = [line]
            if forward is not None:
                forward(line)

        report = keep
        app = admin_app(current, lambda: server.ready.signalled and not server.draining)
        if isinstance(admin, socket.socket):
            admin_server = http_server(app, threads=1, name="admin", sockets=[admin])
        else:
            admin_server = http_server(app, admin[0], admin[1], threads=1, name="admin")
        admin_server.bind()
    if report is not None:
        report = _Reporter(report)
        if monitor is not None:
            monitor.on_change = report.resend  # the report fiber may be the one blocked
    if monitor is not None:
        monitor.start()
    if admin_server is not None:
        admin_server.start()  # on a runtime of its own: it answers while the server's block
    try:
        Runtime(server.threads).run(_main, server, on_ready, parent, report)
    finally:
        if admin_server is not None:
            admin_server.stop(0)
            admin_server.wait()
        if monitor is not None:
            monitor.stop()


class _Reporter:
    """``report`` made safe to call from the monitor's thread too, which sends the last
    snapshot again with what is blocked now."""

    def __init__(self, report: Callable[[bytes], None]) -> None:
        self._report = report
        self._lock = threading.Lock()
        self._last = b""

    def __call__(self, line: bytes) -> None:
        with self._lock:
            self._last = line
            self._report(line)

    def resend(self) -> None:
        from fibernet.server.admin import encode, refresh

        with self._lock:
            if self._last:
                self._report(encode(refresh(json.loads(self._last))))


def _main(
    server: Server,
    on_ready: Callable[[], None] | None,
    parent: int | None,
    report: Callable[[bytes], None] | None,
) -> None:
    watcher = _SignalWatcher(server, in_worker=parent is not None)
    helpers = []
    if on_ready is not None:
        helpers.append(spawn(_when_ready, server, on_ready, name="ready"))
    if parent is None and os.environ.get(systemd.ENV):
        helpers.append(spawn(_when_ready, server, partial(_tell_systemd, server), name="sd-notify"))
    if parent is not None:
        helpers.append(spawn(_watch_parent, server, parent, name="parent-watch"))
    if report is not None:
        helpers.append(spawn(_report, server, report, name="report"))
    try:
        server.run()
    finally:
        for fiber in helpers:
            fiber.cancel()
        watcher.close()


def _report(server: Server, report: Callable[[bytes], None]) -> None:
    from fibernet.server.admin import WaitClock, encode, snapshot

    clock = WaitClock()
    while True:
        report(encode(snapshot(server, clock)))
        sleep(REPORT_INTERVAL)


def _when_ready(server: Server, on_ready: Callable[[], None]) -> None:
    server.ready.wait()
    on_ready()


def _tell_systemd(server: Server) -> None:
    host, port = server.address[:2] if server.address else ("?", "?")
    systemd.ready(f"serving {server.name} on {host}:{port} with {server.threads} thread(s)")


def _watch_parent(server: Server, parent: int) -> None:
    while os.getppid() == parent:
        sleep(1.0)
    log.warning("supervisor %d is gone; stopping", parent)
    server.stop()


class _SignalWatcher:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    # Without workers there is nothing to reload or resize: say so, go on.  (By default
    # SIGTTIN/SIGTTOU would stop -- suspend -- the process, and SIGHUP end it.)
    IGNORED = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
    # Said once, then ignored by the kernel (SIG_IGN): a background process that writes its
    # log to a terminal set to ``tostop`` gets a SIGTTOU per write, and a handler would make
    # every write a new signal and a new log line.
    ONCE = (signal.SIGTTIN, signal.SIGTTOU)

    def __init__(self, server: Server, in_worker: bool = False) -> None:
        self.server = server
        self.in_worker = in_worker  # a supervisor's worker: SIGHUP is the supervisor's to act on
        self._rsock, self._wsock = socket.socketpair()
        self._wsock.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
        self._old = {sig: signal.signal(sig, _ignore) for sig in self.SIGNALS + self.IGNORED}
        for sig in self.ONCE:
            signal.signal(sig, _ignore_from_now_on)
        self._reader = Socket(self._rsock)
        self._fiber = spawn(self._watch, name="signals")
        self._count = 0

    def _watch(self) -> None:
        try:
            while data := self._reader.recv(64):
                for signum in data:
                    self._on_signal(signum)
        except (Cancelled, OSError):
            pass

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP and not self.in_worker and _reload_tls(self.server):
            return
        if signum in self.IGNORED:
            if not self.in_worker:
                why = "reloading" if signum == signal.SIGHUP else "changing the number of workers"
                later = " (and from now on)" if signum in self.ONCE else ""
                log.info("%s ignored%s: %s needs --workers", signal.Signals(signum).name, later, why)
            return
        if signum not in self.SIGNALS:
            return  # another handler's signal (the wake-up descriptor carries them all)
        name = signal.Signals(signum).name
        if self.in_worker:
            # A signal sent to the whole process group (a terminal's Ctrl-C, ``kill -TERM
            # -PGID``) reaches a worker twice: directly, and forwarded by its supervisor.  So
            # a worker only ever moves to a faster stop: SIGTERM drains, SIGINT stops fast,
            # and the same signal again changes nothing (the supervisor kills a worker that
            # outlives its deadline).
            level = 2 if signum == signal.SIGINT else 1
            if level <= self._count:
                log.debug("%s again: already stopping", name)
                return
            self._count = level
            if level == 1:
                log.info("SIGTERM: draining (up to %.1fs)", self.server.limits.graceful_timeout)
                self.server.stop()
            else:
                log.info("SIGINT: stopping")
                self.server.stop(FAST_GRACE)
            return
        self._count += 1
        if self._count == 1:
            systemd.stopping()
        if self._count > 1:
            log.warning("%s again: stopping now", name)
            self.server.stop(0)
        elif signum == signal.SIGTERM:
            log.info("SIGTERM: draining (up to %.1fs)", self.server.limits.graceful_timeout)
            self.server.stop()
        elif signum == signal.SIGINT:
            log.info("SIGINT: stopping")
            self.server.stop(FAST_GRACE)

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for sig, old in self._old.items():
            # A worker is about to exit: the copy of a group signal its supervisor forwards
            # may still be on its way, and must not kill it now (exit 0, not "killed").
            signal.signal(sig, signal.SIG_IGN if self.in_worker and sig in self.SIGNALS else old)
        self._fiber.cancel()
        self._reader.close()
        self._wsock.close()


def _reload_tls(server: Server) -> bool:
    """SIGHUP without workers: load the TLS certificate files again for new connections
    (True), or False if the server has none to reload."""
    try:
        if not server.reload_tls():
            return False
    except (OSError, ValueError) as exc:  # (ssl.SSLError is an OSError)
        log.error("SIGHUP: the TLS certificates did not load (%s); keeping those in use", exc)
        return True
    log.info("SIGHUP: TLS certificates reloaded")
    return True


def _ignore(signum: int, frame: Any) -> None:
    """The Python-level handler: nothing; the wake-up descriptor carries the signal."""


def _ignore_from_now_on(signum: int, frame: Any) -> None:
    """The first one is carried to the log by the wake-up descriptor; the kernel drops the rest."""
    signal.signal(signum, signal.SIG_IGN)

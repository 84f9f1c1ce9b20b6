"""The admin endpoint: ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus text, see
:mod:`fibernet.server.metrics`) and ``/fibers`` (what ``fibernet inspect`` shows), for one
process or a supervisor's workers.  A health condition is one more function in
:data:`HEALTH_CHECKS`; a metric, one more series in :mod:`fibernet.server.metrics`.

A worker describes itself with :func:`snapshot`: its counters, its schedulers, and its fibers
with what each waits on and for how long.  "How long" costs the hot path nothing: a
:class:`WaitClock` remembers when it first saw each fiber in its current wait, so it is
exact to the snapshot interval.  The supervisor keeps the latest snapshot of each worker
(they send one a second) and serves the same app over them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fibernet.http import Request, Response
from fibernet.runtime import runtime as _runtime
from fibernet.server import monitor as _monitor
from fibernet.server.metrics import CONTENT_TYPE, SnapshotCollector, exposition

log = logging.getLogger("fibernet.admin")

MAX_FIBERS = 2000
ADMIN_TIMEOUT = 1.0  # a supervisor's admin connection: from its accept to its answer sent
MAX_ADMIN_CONNECTIONS = 64  # a supervisor's admin connections at once (a new one displaces the oldest)
ADMIN_PAUSE = 0.1  # out of descriptors: a supervisor tries to accept again after this

# Parts of a process that can make it not ready (a lost bus): each returns its reasons.
_readiness_checks: list[Callable[[], list[str]]] = []


def add_readiness_check(check: Callable[[], list[str]]) -> None:
    """``check()`` returns why this process is not ready (empty: ready); /readyz answers 503
    with the reasons while any check gives one (it reaches a supervisor in the snapshots)."""
    _readiness_checks.append(check)


def unready_reasons() -> list[str]:
    return [reason for check in _readiness_checks for reason in check()]


class WaitClock:
    """Remembers since when each fiber has waited in its current operation."""

    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def since(self, fiber: Any, now: float) -> float:
        state = fiber._op_state
        seen = self._seen.get(fiber)
        if seen is None or seen[0] is not state:
            self._seen[fiber] = (state, now)
            return now
        return seen[1]


def snapshot(server: Any, clock: WaitClock, max_fibers: int = MAX_FIBERS) -> dict[str, Any]:
    """A JSON-able description of this process: counters, schedulers and fibers."""
    now = time.monotonic()
    # The server's own schedulers (not those of an admin endpoint served beside it).
    scheds = (server.schedulers() if server is not None else None) or _runtime.schedulers()
    fibers = []
    total = 0
    for sched in scheds:
        for fiber in sched.fibers():
            total += 1
            if len(fibers) >= max_fibers:
                continue
            waiting = fiber.waiting_on()
            fibers.append(
                {
                    "name": fiber.name,
                    "state": fiber.state,
                    "scheduler": sched.name,
                    "waiting_on": waiting,
                    "waiting_s": round(now - clock.since(fiber, now), 3) if waiting else 0.0,
                }
            )
    stats = server.stats() if server is not None else {}
    snap = {
        "pid": os.getpid(),
        "time": time.time(),
        "draining": bool(getattr(server, "draining", False)),
        "unready": unready_reasons(),
        "stats": stats,
        "schedulers": [
            {
                "name": s.name,
                "fibers": len(s.fibers()),
                "runnable": len(s._runq),
                "timers": s.pending_timers(),
                "fds": s.watched_fds(),
                "turns": s.turns,
            }
            for s in scheds
        ],
        "fibers_total": total,
        "fibers": fibers,
    }
    return refresh(snap)


def refresh(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` with what the scheduler monitor sees now: the schedulers blocked at this
    moment and the blocks counted (a snapshot taken before a block began is still served
    while it lasts: the fiber that takes them may be the one blocked)."""
    monitor = _monitor.current()
    snap["blocked"] = monitor.blocked() if monitor is not None else []
    snap["scheduler_blocks"] = monitor.blocks if monitor is not None else 0
    return snap


#: Health conditions: each is given a worker's snapshot and returns why the worker is not
#: healthy (a short text), or None.  /healthz answers 503 with the reasons while any holds.
HealthCheck = Callable[[dict[str, Any]], str | None]


def blocked_check(snap: dict[str, Any]) -> str | None:
    """A worker with a scheduler held by one fiber past ``--block-warning`` is not healthy."""
    return "; ".join(
        f"scheduler {b['scheduler']} blocked for {b['seconds']:.1f}s by fiber {b['fiber']}"
        for b in snap.get("blocked", [])
    ) or None


HEALTH_CHECKS: list[HealthCheck] = [blocked_check]


def problems(snapshots: Iterable[dict[str, Any]], checks: Iterable[HealthCheck] | None = None) -> list[str]:
    """What the health checks find wrong with these workers ("worker PID: reason" each)."""
    checks = list(HEALTH_CHECKS if checks is None else checks)
    found = []
    for snap in snapshots:
        for check in checks:
            reason = check(snap)
            if reason:
                found.append(f"worker {snap.get('pid')}: {reason}")
    return found


def admin_app(
    snapshots: Callable[[], list[dict[str, Any]]],
    ready: Callable[[], bool],
    restarts: Callable[[], Mapping[str, int]] | None = None,
) -> Callable[[Request], Response]:
    """The admin HTTP app over a source of worker snapshots (and, in a supervisor, of its
    worker restart counts by cause)."""
    collector = SnapshotCollector(snapshots, restarts)

    def app(request: Request) -> Response:
        if request.path == "/healthz":
            wrong = problems(snapshots()) if HEALTH_CHECKS else []
            return Response.text("".join(f"{w}\n" for w in wrong), 503) if wrong else Response.text("ok\n")
        if request.path == "/readyz":
            if not ready():
                return Response.text("draining\n", 503)
            wrong = problems(snapshots(), [blocked_check])
            wrong += [f"not ready: {r}" for snap in snapshots() for r in snap.get("unready", ())]
            if wrong:
                return Response.text("".join(f"{w}\n" for w in wrong), 503)
            return Response.text("ready\n")
        if request.path == "/metrics":
            return Response(200, exposition(collector), content_type=CONTENT_TYPE)
        if request.path == "/fibers":
            return Response.json(snapshots())
        return Response(404, b"try /healthz, /readyz, /metrics or /fibers\n", content_type="text/plain")

    return app


class _Pending:
    __slots__ = ("sock", "deadline", "proto", "out")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        from fibernet.server.http_protocol import ServerProtocol

        self.sock = sock
        self.deadline = deadline
        self.proto = ServerProtocol()
        self.out = b""  # the answer, once there is one: what is left to send


class AdminPort:
    """The admin endpoint of a supervisor, served in its own loop without ever blocking it:
    every socket is non-blocking, the loop polls them with its own descriptors, and each
    connection has :data:`ADMIN_TIMEOUT` from its accept to its answer sent (a client that
    idles or trickles is dropped then), :data:`MAX_ADMIN_CONNECTIONS` at a time.  So idle
    connections neither queue a probe behind them nor hold up the signals and the workers.

    The loop registers :meth:`interest`, passes each ready descriptor to :meth:`handle`
    (after its own: signals and workers first), and calls :meth:`expire` after each wake-up;
    :meth:`timeout` bounds its wait."""

    def __init__(self, sock: socket.socket, app: Callable[[Request], Response]) -> None:
        import prometheus_client  # noqa: F401 - now, not in the loop at the first scrape

        sock.setblocking(False)
        self.sock = sock
        self.app = app
        self._conns: dict[int, _Pending] = {}  # by descriptor, oldest first
        self._paused_until = 0.0  # out of descriptors: the listener is left alone until then

    def interest(self) -> list[tuple[int, int]]:
        """(descriptor, poll events) to wait on."""
        wanted = []
        if time.monotonic() >= self._paused_until:
            self._paused_until = 0.0
            wanted.append((self.sock.fileno(), select.POLLIN))
        for fd, conn in self._conns.items():
            wanted.append((fd, select.POLLOUT if conn.out else select.POLLIN))
        return wanted

    def timeout(self) -> float | None:
        """Seconds until the next deadline (a connection's, or the end of a pause), or None."""
        deadlines = [c.deadline for c in self._conns.values()]
        if self._paused_until:
            deadlines.append(self._paused_until)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def handle(self, fd: int) -> None:
        if fd == self.sock.fileno():
            self._accept()
            return
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            if conn.out:
                self._send(conn)
            else:
                self._read(conn)
        except OSError:
            self._drop(conn)

    def expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self._drop(conn)

    def close(self) -> None:
        """Close every connection and the listening socket (a forked worker does, at once)."""
        for conn in list(self._conns.values()):
            self._drop(conn)
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(MAX_ADMIN_CONNECTIONS):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The connection stays queued and the listener readable: polling it
                    # again now would spin.  Look again in a while.
                    self._paused_until = time.monotonic() + ADMIN_PAUSE
                return  # (or a connection reset while queued: the next one next time)
            sock.setblocking(False)
            if len(self._conns) >= MAX_ADMIN_CONNECTIONS:
                self._drop(next(iter(self._conns.values())))
            self._conns[sock.fileno()] = _Pending(sock, time.monotonic() + ADMIN_TIMEOUT)

    def _read(self, conn: _Pending) -> None:
        from fibernet.server.http_protocol import END

        try:
            data = conn.sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return
        conn.proto.feed(data)
        event = conn.proto.next_event()
        if event is None or event is END:
            if not data:
                self._drop(conn)  # the client closed before its request was whole
            return
        if not hasattr(event, "target"):  # an HttpError: a request that is not one
            self._drop(conn)
            return
        conn.out = self._answer(event)
        self._send(conn)

    def _answer(self, head: Any) -> bytes:
        from fibernet.server.http_protocol import response_head

        try:
            response = self.app(Request(head.method, head.target, head.headers, head.version))
            body = bytes(response.body)  # type: ignore[arg-type]
        except Exception:  # a fault here must not end the supervisor
            log.exception("admin request %s %s failed", head.method, head.target)
            response = Response(500, b"internal server error\n", content_type="text/plain")
            body = bytes(response.body)  # type: ignore[arg-type]
        return response_head(response.status, response.headers, "1.1", False, len(body), False) + body

    def _send(self, conn: _Pending) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._drop(conn)  # answered (Connection: close)

    def _drop(self, conn: _Pending) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()


def render_fibers(snapshots: list[dict[str, Any]]) -> str:
    """The table ``fibernet inspect`` prints."""
    out = []
    for snap in snapshots:
        out.append(
            f"worker {snap['pid']}: {snap.get('fibers_total', 0)} fibers"
            f"{' (draining)' if snap.get('draining') else ''}"
        )
        for s in snap.get("schedulers", []):
            out.append(
                f"  scheduler {s['name']}: {s['fibers']} fibers, {s['runnable']} runnable, "
                f"{s['timers']} timers, {s['fds']} descriptors"
            )
        for b in snap.get("blocked", []):
            out.append(
                f"  BLOCKED scheduler {b['scheduler']}: fiber {b['fiber']} held it {b['seconds']:.1f}s"
            )
            out.extend(f"    {line}" for line in b.get("stack", [])[-12:])
        rows = [("FIBER", "STATE", "SCHEDULER", "WAITING ON", "FOR")]
        for f in snap.get("fibers", []):
            rows.append(
                (
                    f["name"],
                    f["state"],
                    f["scheduler"],
                    f["waiting_on"] or "-",
                    f"{f['waiting_s']:.1f}s" if f["waiting_on"] else "-",
                )
            )
        widths = [min(48, max(len(r[i]) for r in rows)) for i in range(5)]
        for r in rows:
            out.append("  " + "  ".join(c[:48].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if snap.get("fibers_total", 0) > len(snap.get("fibers", [])):
            out.append(f"  ... {snap['fibers_total'] - len(snap['fibers'])} more")
    return "\n".join(out) + "\n"


def encode(snap: dict[str, Any]) -> bytes:
    return json.dumps(snap, separators=(",", ":")).encode() + b"\n"

"""The generator of one load process: ``run_local(cfg, ...)`` runs ``fibernet.run(main,
threads=1)`` and returns the process's record as data.

Every request takes a token ``(seq, intended)`` (``count`` of them, or as many as fit in
``duration``).  Open loop: token k is due at t0 + k/R and latency runs from then.  The closed
loop at depth 1 on kept connections runs from readiness callbacks, as wrk's event loop does
(docs/pages/benchmarks.md, "The load generator"); the other shapes run a fiber per connection.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from _load_stats import Recorder
from _load_workloads import BadResponse, ClosedEarly, classify, make_workload

import fibernet as fn
from fibernet.errors import ChannelClosed
from fibernet.net.sockets import Socket, connect
from fibernet.runtime.poller import EPOLLIN

# Failures of one exchange (a socket timeout is an OSError, a short read an EOFError, a too
# long line a ValueError); anything else is a bug and ends the run with its traceback.
EXCHANGE_ERRORS = (OSError, EOFError, ValueError, BadResponse, ClosedEarly)
CONNECT_BACKOFF = 0.01  # closed loop: pause after a failed connect, so a dead server is not spun on
CHUNK = 64 * 1024

_now = time.monotonic


class Conn:
    """A connection: a fibernet :class:`Socket` and the workload's reader of its answers."""

    __slots__ = ("sock", "reader", "eof")

    def __init__(self, sock: Socket, reader: Any) -> None:
        self.sock = sock
        self.reader = reader
        self.eof = False

    def read_response(self, seq: int) -> None:
        """Read until answer ``seq`` is whole (in a fiber: waits suspend it)."""
        take = self.reader.take
        data = b""
        while not take(data, seq, self.eof):
            if self.eof:
                raise ClosedEarly("closed before the whole answer came")
            data = self.sock.recv(CHUNK)
            self.eof = not data

    def write(self, data: Any) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


# the states of a connection driven by callbacks (``Link``): its answer is awaited (the
# readiness callback and the timer act only then); a fiber is sending its request; a fiber
# is closing it and connecting again; no tokens are left for it
WAITING, SENDING, RECONNECTING, RETIRED = 1, 2, 3, 4


class Link:
    """A connection of the callback-driven closed loop."""

    __slots__ = ("index", "sock", "raw", "fd", "reader", "eof", "seq", "start", "deadline", "state")
    __slots__ += ("timer", "on_readable", "on_timer")

    def __init__(self, index: int) -> None:
        self.index = index
        self.sock: Socket | None = None
        self.raw: Any = None  # the socket module's socket inside ``sock``
        self.fd = -1
        self.reader: Any = None
        self.eof = False
        self.seq = 0
        self.start = 0.0
        self.deadline = 0.0  # (scheduler clock) when the wait for the answer times out
        self.state = RECONNECTING
        self.timer: Callable[[], None] | None = None  # cancels the armed timer
        self.on_readable: Callable[[int], None] | None = None
        self.on_timer: Callable[[], None] | None = None

    def attach(self, conn: Conn) -> None:
        self.sock = sock = conn.sock
        self.raw = sock.sock
        self.fd = sock.fileno()
        self.reader = conn.reader
        self.eof = False


class Engine:
    def __init__(self, cfg: Any, rec: Recorder, emit: Callable[[dict], None] | None = None) -> None:
        self.cfg = cfg
        self.rec = rec
        self.emit = emit
        self.workload = make_workload(cfg)
        self.issued = 0
        self.count = cfg.count
        self.rate = cfg.rate
        self.t0 = 0.0
        self.end: float | None = None
        self.done = fn.Condition()

    # -- tokens ---------------------------------------------------------------------------

    def next_token(self) -> tuple[int, float | None] | None:
        k = self.issued
        if self.count is not None and k >= self.count:
            return None
        if self.rate:
            due: float | None = self.t0 + k / self.rate
            if self.end is not None and due >= self.end:  # type: ignore[operator]
                return None
        else:
            due = None
            if self.end is not None and _now() >= self.end:
                return None
        self.issued = k + 1
        return k, due

    @staticmethod
    def wait_until(due: float | None) -> None:
        if due is not None and due > _now():
            fn.perform(fn.timer_op(due))

    def try_connect(self, count: bool = True) -> Conn | None:
        """A new connection, or None after counting the failure and backing off (``count``
        False: a connect before the run, whose failure the first token meets again)."""
        try:
            conn = Conn(connect(self.cfg.host, self.cfg.port, self.cfg.timeout), self.workload.reader())
        except EXCHANGE_ERRORS as exc:
            if count:
                self.rec.error(_now(), exc, classify(exc))
                if not self.rate:
                    fn.sleep(CONNECT_BACKOFF)
            return None
        self.rec.connects += 1
        return conn

    # -- the connection loops ---------------------------------------------------------------

    def fiber_loop(self, stream: Conn | None) -> None:
        """One request at a time in a fiber: the open loop on kept connections (the closed loop
        is ``run_callbacks``), and a connection per request (churn, HTTP without keep-alive)."""
        request, rec = self.workload.request, self.rec
        per_request = self.workload.per_request_connection
        try:
            while (token := self.next_token()) is not None:
                seq, due = token
                self.wait_until(due)
                start = _now() if due is None else due
                if stream is None and (stream := self.try_connect()) is None:
                    continue
                try:
                    stream.write(request(seq))
                    stream.read_response(seq)
                except EXCHANGE_ERRORS as exc:
                    rec.error(_now(), exc, classify(exc))
                    stream.close()
                    stream = None
                    continue
                now = _now()
                rec.success(now, now - start)
                if per_request:
                    stream.close()
                    stream = None
        finally:
            if stream is not None:
                stream.close()

    def pipelined_loop(self, stream: Conn | None) -> None:
        """Up to ``pipeline`` requests in flight on a kept connection: a sender (this fiber)
        and a receiver fiber, a window channel between them."""
        while (token := self.next_token()) is not None:
            if stream is None:
                self.wait_until(token[1])
                if (stream := self.try_connect()) is None:
                    continue
            try:
                self._pipelined_pair(stream, token)
            finally:
                stream.close()
                stream = None
        if stream is not None:
            stream.close()

    def _pipelined_pair(self, stream: Conn, token: tuple[int, float | None] | None) -> None:
        wl, rec = self.workload, self.rec
        window: fn.Channel = fn.Channel(self.cfg.pipeline - 1)
        inflight: deque = deque()  # [seq, start] sent (or being sent) and not yet answered
        failure: list[BaseException] = []

        def fail(exc: BaseException) -> None:
            if failure:
                return
            failure.append(exc)
            lost = len(inflight)
            inflight.clear()
            if lost:
                rec.error(_now(), exc, classify(exc), lost)
            window.close()
            stream.close()  # a fiber waiting on the socket wakes with EBADF

        def receiver() -> None:
            while True:
                try:
                    if (item := window.get()) is None:
                        return
                except ChannelClosed:
                    return
                try:
                    stream.read_response(item[0])
                except EXCHANGE_ERRORS as exc:
                    fail(exc)
                    return
                if failure:
                    return
                inflight.popleft()
                now = _now()
                rec.success(now, now - item[1])

        reader = fn.spawn(receiver, name="load-receiver")
        try:
            while token is not None:
                seq, due = token
                self.wait_until(due)
                item = [seq, due]
                try:
                    window.put(item)
                except ChannelClosed:
                    if failure:  # this token's request is lost with the connection
                        rec.error(_now(), failure[0], classify(failure[0]))
                    break
                if due is None:
                    item[1] = _now()
                inflight.append(item)
                try:
                    stream.write(wl.request(seq))
                except EXCHANGE_ERRORS as exc:
                    fail(exc)
                    break
                token = self.next_token()
            else:
                try:
                    window.put(None)
                except ChannelClosed:
                    pass
        finally:
            reader.join()

    # -- the closed loop at depth 1: connections driven by readiness callbacks --------------

    def run_callbacks(self, conns: list[Conn | None]) -> None:
        """Drive each connection from readiness callbacks until the tokens run out (in the
        main fiber, which waits meanwhile)."""
        self.sched = fn.current_scheduler()
        self.live = len(conns)
        self.all_retired = fn.Condition()
        self.crash: list[BaseException] = []
        self.on_readable = on_readable = self._make_on_readable()
        links = []
        for i in range(len(conns)):
            link = Link(i)
            link.on_readable = partial(on_readable, link)
            link.on_timer = partial(self._on_timer, link)
            links.append(link)
        try:
            for link, conn in zip(links, conns, strict=True):
                if conn is None:
                    fn.spawn(self._reconnect, link, name=f"load-{link.index}")
                else:
                    link.attach(conn)
                    if (token := self.next_token()) is None:
                        self._retire(link)
                    else:
                        self._send(link, token[0])
                    if self.crash:
                        break
            self.all_retired.wait()
        finally:
            # Sockets are closed here, not in the callbacks: a descriptor closed inside its
            # own readiness callback is more than the poller promises to handle.
            for link in links:
                link.state = RETIRED
                if link.timer is not None:
                    link.timer()
                    link.timer = None
                if link.sock is not None:
                    link.sock.close()
                    link.sock = None
            for conn in conns:
                if conn is not None:
                    conn.close()
        if self.crash:
            raise self.crash[0]

    def _make_on_readable(self) -> Callable[[Link, int], None]:
        """The readiness callback of every connection: read the answer, parse, check and
        record it, take the next token, send its request and wait again; anything unusual
        (an error, a partial send, no tokens left) goes to the methods below.  It runs once
        per request, so its names are bound here once, and the steps are written out in it
        rather than called (each call would cost more than the step)."""
        sched = self.sched
        watch = sched.watch_fd
        add_timer = sched.add_timer
        request = self.workload.request
        success = self.rec.success
        timeout = self.cfg.timeout
        count = self.count
        end = self.end
        lost = self._lost
        now_ = _now

        def on_readable(link: Link, err: int) -> None:
            if link.state != WAITING:
                return  # timed out, or closed, meanwhile
            try:
                if err:
                    lost(link, OSError(err, os.strerror(err)))
                    return
                raw = link.raw
                try:
                    data = raw.recv(CHUNK)
                    if not data:
                        link.eof = True
                    elif len(data) == CHUNK:  # more may be there: read it all (edge-triggered)
                        data = bytearray(data)
                        try:
                            while more := raw.recv(CHUNK):
                                data += more
                            link.eof = True
                        except BlockingIOError:
                            pass
                except BlockingIOError:
                    data = b""  # a readiness without bytes
                except OSError as exc:
                    lost(link, exc)
                    return
                eof = link.eof
                try:
                    whole = link.reader.take(data, link.seq, eof)
                    if not whole and eof:
                        raise ClosedEarly("closed before the whole answer came")
                except EXCHANGE_ERRORS as exc:
                    lost(link, exc)
                    return
                now = now_()
                if not whole:  # part of the answer: wait for the rest
                    link.deadline = now + timeout
                    watch(link.fd, EPOLLIN, link.on_readable)
                    return
                success(now, now - link.start)
                # the next token (as next_token takes it in the closed loop)
                seq = self.issued
                if (count is not None and seq >= count) or (end is not None and now >= end):
                    self._retire(link)
                    return
                self.issued = seq + 1
                data = request(seq)
                link.seq = seq
                link.start = now = now_()
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    lost(link, exc)
                    return
                if sent < len(data):  # the socket buffer is full: a fiber sends the rest
                    link.state = SENDING
                    fn.spawn(self._send_rest, link, data, sent, name=f"load-send-{link.index}")
                    return
                link.deadline = now + timeout
                watch(link.fd, EPOLLIN, link.on_readable)
                if link.timer is None:  # one timer per connection, moved on when it fires early
                    link.timer = add_timer(link.deadline, link.on_timer)
            except Exception as exc:  # a bug: the run ends with it
                self._crashed(exc)

        return on_readable

    def _send(self, link: Link, seq: int) -> None:
        """Send request ``seq`` (the first on a connection) and wait (at most ``timeout`` from
        now) for its answer, which comes to the readiness callback.  Deadlines are on
        ``time.monotonic``, the clock of the scheduler fibernet.run makes."""
        data = self.workload.request(seq)
        link.seq = seq
        link.start = _now()
        try:
            sent = link.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(link, exc)
            return
        if sent < len(data):
            link.state = SENDING
            fn.spawn(self._send_rest, link, data, sent, name=f"load-send-{link.index}")
            return
        link.state = WAITING
        link.deadline = _now() + self.cfg.timeout
        self.sched.watch_fd(link.fd, EPOLLIN, link.on_readable)
        if link.timer is None:
            link.timer = self.sched.add_timer(link.deadline, link.on_timer)

    def _on_timer(self, link: Link) -> None:
        link.timer = None
        if link.state != WAITING:
            return  # the next wait arms a timer again
        if _now() >= link.deadline:
            self._lost(link, TimeoutError(f"no answer within {self.cfg.timeout}s"))
        else:
            link.timer = self.sched.add_timer(link.deadline, link.on_timer)

    def _lost(self, link: Link, exc: BaseException) -> None:
        """The exchange failed: count it; a fiber closes the connection and opens another."""
        link.state = RECONNECTING
        self.rec.error(_now(), exc, classify(exc))
        fn.spawn(self._reconnect, link, name=f"load-{link.index}")

    def _reconnect(self, link: Link) -> None:
        try:
            if link.sock is not None:
                link.sock.close()
                link.sock = None
            while (token := self.next_token()) is not None:
                if (conn := self.try_connect()) is None:
                    continue
                link.attach(conn)
                self._send(link, token[0])
                return
            self._retire(link)
        except Exception as exc:
            self._crashed(exc)

    def _send_rest(self, link: Link, data: Any, sent: int) -> None:
        try:
            try:
                link.sock.sendall(memoryview(data)[sent:])
            except EXCHANGE_ERRORS as exc:
                self._lost(link, exc)
                return
            link.state = WAITING
            link.deadline = _now() + self.cfg.timeout
            if link.timer is None:
                link.timer = self.sched.add_timer(link.deadline, link.on_timer)
            # the answer may have come while the request went out, its readiness seen by nobody:
            # read first (the callback waits again if nothing, or not all, is there)
            self.on_readable(link, 0)
        except Exception as exc:
            self._crashed(exc)

    def _retire(self, link: Link) -> None:
        link.state = RETIRED
        if link.timer is not None:
            link.timer()
            link.timer = None
        self.live -= 1
        if self.live == 0:
            self.all_retired.signal()

    def _crashed(self, exc: BaseException) -> None:
        self.crash.append(exc)
        self.all_retired.signal()

    # -- the run ----------------------------------------------------------------------------

    def progress_loop(self) -> None:
        """The counts so far to ``emit`` every ``progress_interval`` from the start, until done."""
        rec, ticks, interval = self.rec, 0, self.cfg.progress_interval
        while fn.perform(fn.choice(fn.wrap(fn.timer_op(self.t0 + (ticks + 1) * interval), lambda: True),
                                   fn.wrap(self.done.wait_op(), lambda: False))):
            ticks += 1
            self.emit({"tick": ticks, "elapsed": _now() - self.t0, "ok": rec.ok, "errors": rec.error_total(),
                       "issued": self.issued})

    def main(self, before_start: Callable[[], None] | None = None) -> None:
        cfg = self.cfg
        wl = self.workload
        connections = cfg.connections
        streams: list[Conn | None] = [None] * connections
        if not wl.per_request_connection:
            fibers = [fn.spawn(self.try_connect, False, name=f"load-connect-{i}") for i in range(connections)]
            streams = [f.join() for f in fibers]
        try:
            if before_start is not None:
                before_start()
        except BaseException:
            for s in streams:
                if s is not None:
                    s.close()
            raise
        self.t0 = _now()
        self.rec.start(self.t0)
        if cfg.duration is not None:
            self.end = self.t0 + cfg.duration
        loops = None  # the closed loop at depth 1 on kept connections: run_callbacks, in this fiber
        if wl.per_request_connection or self.rate or cfg.pipeline > 1:
            loop = self.pipelined_loop if cfg.pipeline > 1 else self.fiber_loop
            loops = [fn.spawn(loop, s, name=f"load-{i}") for i, s in enumerate(streams)]
        progress = fn.spawn(self.progress_loop, name="load-progress") if self.emit else None
        try:
            if loops is None:
                self.run_callbacks(streams)
            else:
                for f in loops:
                    f.join()
        finally:
            self.done.signal()
            if progress is not None:
                progress.join()
        if isinstance(getattr(wl, "statuses", None), dict):
            self.rec.statuses = dict(wl.statuses)


def wait_for_go() -> None:
    """A child load process: wait for the parent's "go" line on stdin without blocking the
    scheduler (the other fibers are idle by then, but the rule is the rule)."""
    data = b""
    while not data.endswith(b"\n"):
        fn.perform(fn.readable_op(0))
        chunk = os.read(0, 64)
        if not chunk:
            raise SystemExit("the parent went away before the start")
        data += chunk


def run_local(
    cfg: Any, emit: Callable[[dict], None] | None = None, before_start: Callable[[], None] | None = None
) -> dict:
    """Run one load process in this process; its record as data (see Recorder.to_part)."""
    rec = Recorder()
    engine = Engine(cfg, rec, emit)
    fn.run(engine.main, before_start, threads=1)
    return rec.to_part()

"""The generator of one load process: ``run_local(cfg, ...)`` runs ``fibernet.run(main,
threads=1)`` with one fiber per connection and returns the process's record as data.

Tokens.  Every request starts by taking a token: ``(seq, intended)``.  The run is bounded by
the tokens: ``count`` of them, or as many as fit in ``duration``.

* Closed loop (no rate): a connection takes a token when its previous answer has come (with
  a pipeline depth D, while fewer than D answers are missing); latency runs from the send.
* Open loop (``rate`` R): token k is due at t0 + k / R, whoever takes it.  A free connection
  takes the next token and sleeps until it is due; latency runs from the intended time.  When
  the server stalls, every connection waits for an answer, the due tokens pile up, and when
  it resumes the late requests go out at once and carry their wait in their latency: the
  stall shows in the percentiles as wrk2 shows it (no coordinated omission).

Every attempt consumes its token, a failed connect included, so a refused or dead server
ends a ``count`` run too.  After an error the connection is closed and the next token opens
a new one.  Each socket wait is bounded by ``timeout``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from _load_stats import Recorder
from _load_workloads import BadResponse, ClosedEarly, classify, make_workload

import fibernet as fn
from fibernet.errors import ChannelClosed
from fibernet.net.sockets import connect
from fibernet.net.streams import Stream

# Failures of one exchange (a socket timeout is an OSError, a short read an EOFError, a too
# long line a ValueError); anything else is a bug and ends the run with its traceback.
EXCHANGE_ERRORS = (OSError, EOFError, ValueError, BadResponse, ClosedEarly)
CONNECT_BACKOFF = 0.01  # closed loop: pause after a failed connect, so a dead server is not spun on

_now = time.monotonic


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

    def connect(self) -> Stream:
        stream = Stream(connect(self.cfg.host, self.cfg.port, self.cfg.timeout))
        self.rec.connects += 1
        return stream

    def failed_connect(self, exc: BaseException) -> None:
        self.rec.error(_now(), exc, classify(exc))
        if not self.rate:
            fn.sleep(CONNECT_BACKOFF)

    def preconnect(self) -> Stream | None:
        try:
            return self.connect()
        except EXCHANGE_ERRORS:
            return None  # the first token tries again and counts the error

    # -- the connection loops ---------------------------------------------------------------

    def keepalive_loop(self, stream: Stream | None) -> None:
        """One request at a time on a kept connection (pipeline depth 1)."""
        wl, rec = self.workload, self.rec
        request, read_response = wl.request, wl.read_response
        try:
            while (token := self.next_token()) is not None:
                seq, due = token
                self.wait_until(due)
                if stream is None:
                    try:
                        stream = self.connect()
                    except EXCHANGE_ERRORS as exc:
                        self.failed_connect(exc)
                        continue
                start = _now() if due is None else due
                try:
                    stream.write(request(seq))
                    read_response(stream, seq)
                except EXCHANGE_ERRORS as exc:
                    rec.error(_now(), exc, classify(exc))
                    stream.close()
                    stream = None
                    continue
                now = _now()
                rec.success(now, now - start)
        finally:
            if stream is not None:
                stream.close()

    def per_request_loop(self) -> None:
        """Connect, one exchange, close: churn, and HTTP without keep-alive."""
        wl, rec = self.workload, self.rec
        while (token := self.next_token()) is not None:
            seq, due = token
            self.wait_until(due)
            start = _now() if due is None else due
            try:
                stream = self.connect()
            except EXCHANGE_ERRORS as exc:
                self.failed_connect(exc)
                continue
            try:
                stream.write(wl.request(seq))
                wl.read_response(stream, seq)
            except EXCHANGE_ERRORS as exc:
                rec.error(_now(), exc, classify(exc))
                continue
            finally:
                stream.close()
            now = _now()
            rec.success(now, now - start)

    def pipelined_loop(self, stream: Stream | None) -> None:
        """Up to ``pipeline`` requests in flight on a kept connection: a sender (this fiber)
        and a receiver fiber, a window channel between them."""
        while (token := self.next_token()) is not None:
            if stream is None:
                self.wait_until(token[1])
                try:
                    stream = self.connect()
                except EXCHANGE_ERRORS as exc:
                    self.failed_connect(exc)
                    continue
            try:
                self._pipelined_pair(stream, token)
            finally:
                stream.close()
                stream = None
        if stream is not None:
            stream.close()

    def _pipelined_pair(self, stream: Stream, token: tuple[int, float | None] | None) -> None:
        wl, rec = self.workload, self.rec
        window: fn.Channel = fn.Channel(self.cfg.pipeline - 1)
        inflight: deque = deque()  # [seq, start] sent (or being sent) and not yet answered
        failure: list[BaseException] = []

        def fail(exc: BaseException, held: int = 0) -> None:
            if failure:
                return
            failure.append(exc)
            lost = len(inflight) + held
            inflight.clear()
            if lost:
                rec.error(_now(), exc, classify(exc), lost)
            window.close()
            stream.close()  # a fiber waiting on the socket wakes with EBADF

        def receiver() -> None:
            while True:
                try:
                    item = window.get()
                except ChannelClosed:
                    return
                if item is None:
                    return
                try:
                    wl.read_response(stream, item[0])
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

    # -- the run ----------------------------------------------------------------------------

    def progress_loop(self) -> None:
        interval = self.cfg.progress_interval
        rec = self.rec
        tick = lambda: True  # noqa: E731
        over = lambda: False  # noqa: E731
        ticks = 0
        while fn.perform(
            fn.choice(
                fn.wrap(fn.timer_op(self.t0 + (ticks + 1) * interval), tick),
                fn.wrap(self.done.wait_op(), over),
            )
        ):
            ticks += 1
            self.emit(
                {
                    "tick": ticks,
                    "elapsed": _now() - self.t0,
                    "ok": rec.ok,
                    "errors": rec.error_total(),
                    "issued": self.issued,
                }
            )

    def main(self, before_start: Callable[[], None] | None = None) -> None:
        cfg = self.cfg
        wl = self.workload
        connections = cfg.connections
        streams: list[Stream | None] = [None] * connections
        if not wl.per_request_connection:
            fibers = [fn.spawn(self.preconnect, name=f"load-connect-{i}") for i in range(connections)]
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
        if wl.per_request_connection:
            loops = [fn.spawn(self.per_request_loop, name=f"load-{i}") for i in range(connections)]
        elif cfg.pipeline > 1:
            loops = [fn.spawn(self.pipelined_loop, s, name=f"load-{i}") for i, s in enumerate(streams)]
        else:
            loops = [fn.spawn(self.keepalive_loop, s, name=f"load-{i}") for i, s in enumerate(streams)]
        progress = fn.spawn(self.progress_loop, name="load-progress") if self.emit else None
        try:
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

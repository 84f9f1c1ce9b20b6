"""Readiness operations on descriptors: the seed's resume-on-readable-fd / writable-fd as
operations, so a read can sit in a choice with a timer.

The scheduler's poller arms the descriptor with EPOLLONESHOT when the operation blocks.
If the descriptor is closed under a waiting fiber (through ``notify_closing``, as fibernet's
sockets do), the operation raises ``OSError(EBADF)`` instead of hanging (Guile Fibers
issue #80).
"""

from __future__ import annotations

import os
import select
from functools import partial
from typing import Any

from fibernet.errors import Cancelled
from fibernet.ops.operation import NOT_READY, NOTHING, BaseOp, OpState, Raise
from fibernet.runtime.fiber import LOCK, RUNNING, SUSPENDED
from fibernet.runtime.poller import EPOLLIN, EPOLLOUT
from fibernet.runtime.scheduler import _tls


def fileno_of(f: Any) -> int:
    fd = f if isinstance(f, int) else f.fileno()
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"not an open descriptor: {f!r}")
    return fd


def _ready_value(err: int) -> Any:
    """What a readiness wait completes with: nothing, or the error of a close under it."""
    if err:
        return Raise(OSError(err, f"descriptor closed while waiting: {os.strerror(err)}"))
    return NOTHING


def _on_ready(state: OpState, index: int, err: int) -> None:
    state.complete(index, _ready_value(err))


class FdWait(OpState):
    """One fiber's plain wait on one descriptor (branch 0): its OpState, and also the
    poller's callback, called with an errno (0: ready) -- no partial, no second call."""

    __slots__ = ()

    def __call__(self, err: int) -> None:
        self.complete(0, _ready_value(err))


def _not_ready() -> Any:
    return NOT_READY


class _FdOp(BaseOp):
    __slots__ = ("fd", "events")

    def __init__(self, fd: int, events: int) -> None:
        self.fd = fd
        self.events = events
        super().__init__(_not_ready, self._block, None, self._what)

    def _block(self, state: OpState, index: int):
        return state.ctx.watch_fd(self.fd, self.events, partial(_on_ready, state, index))

    def _what(self) -> str:
        return f"{'readable' if self.events == EPOLLIN else 'writable'} fd {self.fd}"


def readable_op(f: Any) -> BaseOp:
    """An operation that completes when ``f`` (a descriptor or an object with ``fileno()``)
    is readable, or has an error or hang-up to report."""
    return _FdOp(fileno_of(f), EPOLLIN)


def writable_op(f: Any) -> BaseOp:
    """An operation that completes when ``f`` is writable (or has an error to report)."""
    return _FdOp(fileno_of(f), EPOLLOUT)


def notify_closing(f: Any) -> None:
    """Call before closing a descriptor that fibers of this scheduler may wait on."""
    sched = getattr(_tls, "scheduler", None)
    if sched is not None:
        sched.notify_closing(fileno_of(f))


def wait_fd(fd: int, events: int, timeout: float | None = None) -> None:
    """Suspend the calling fiber until ``fd`` is ready for ``events`` (EPOLLIN / EPOLLOUT).

    The hot path of every socket call: the readiness operation with its try phase skipped
    (the caller has just seen EAGAIN) and, with ``timeout``, a timer in the same wait.
    Raises ``TimeoutError`` when the timer wins, ``OSError(EBADF)`` when the descriptor is
    closed under the wait, ``Cancelled`` when the fiber is cancelled.  A plain thread
    blocks in ``select.poll``.
    """
    sched = getattr(_tls, "scheduler", None)
    fiber = sched.current if sched is not None else None
    if fiber is None:
        _wait_fd_blocking(fd, events, timeout)
        return
    state = FdWait(fiber, sched, (fd, events))
    with LOCK:
        if fiber._cancel_pending:
            fiber._cancel_pending = False
            raise Cancelled()
        fiber._op_state = state
        fiber.state = SUSPENDED
    callback = state
    poller = sched._poller
    poller.watch(fd, events, callback)
    cancel_timer = None
    if timeout is not None:
        cancel_timer = sched.add_timer(sched.clock.now() + timeout, partial(state.complete, 1, NOTHING))
    sched._park()
    fiber._op_state = None
    fiber.state = RUNNING
    index = state.index
    if index != 0:
        poller.unwatch(fd, events, callback)
        if index == -1:
            if cancel_timer is not None:
                cancel_timer()
            with LOCK:
                fiber._cancel_pending = False
            raise Cancelled()
        raise TimeoutError(f"fd {fd} not {'readable' if events == EPOLLIN else 'writable'} within {timeout}s")
    if cancel_timer is not None:
        cancel_timer()
    value = state.value
    if type(value) is Raise:
        raise value.exc


def _wait_fd_blocking(fd: int, events: int, timeout: float | None) -> None:
    p = select.poll()
    p.register(fd, select.POLLIN if events == EPOLLIN else select.POLLOUT)
    if not p.poll(None if timeout is None else max(0, int(timeout * 1000))):
        raise TimeoutError(f"fd {fd} not ready within {timeout}s")

"""Readiness operations on descriptors: Guile Fibers' resume-on-readable-fd / writable-fd as
operations, so a read can sit in a choice with a timer.

The scheduler's poller arms the descriptor with EPOLLONESHOT when the operation blocks; a
descriptor a fibernet socket registered edge-triggered is looked at first, in the try phase,
for an edge that came while nobody waited.  From a plain thread the thread blocks in poll().
If the descriptor is closed under a waiting fiber (through ``notify_closing``, as fibernet's
sockets do), the operation raises ``OSError(EBADF)`` instead of hanging (Guile Fibers
issue #80).
"""

from __future__ import annotations

import os
import select
from functools import partial
from typing import Any

from fibernet.ops.operation import NOT_READY, NOTHING, BaseOp, OpState, Raise
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


# gevent's way of naming a compiled base class: the compiled module cimports OpState's type
# under this name (_c_readiness.pxd), which no import statement may assign.
locals()["_OpState"] = OpState


class FdWait(_OpState):  # noqa: F821
    """One fiber's plain wait on one descriptor (branch 0): its OpState, and also the
    poller's callback, called with an errno (0: ready) -- no partial, no second call."""

    __slots__ = ()

    def __call__(self, err: int) -> None:
        self.complete(0, _ready_value(err) if err else NOTHING)  # (ready: no call to make a value)


class _FdOp(BaseOp):
    __slots__ = ("fd", "events")

    def __init__(self, fd: int, events: int) -> None:
        self.fd = fd
        self.events = events
        super().__init__(self._try, self._block, None, self._what)

    def _try(self) -> Any:
        # A descriptor registered edge-triggered (a fibernet socket's) signals readiness
        # once: if that edge came while nobody waited, the poller kept it, and blocking now
        # would wait for an edge that never comes.  (One-shot watches are level-triggered.)
        sched = getattr(_tls, "scheduler", None)
        if sched is not None and sched._poller.stored_edge(self.fd, self.events):
            return NOTHING
        return NOT_READY

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


def wait_fd_blocking(fd: int, events: int, timeout: float | None) -> None:
    """Block the calling plain thread (not a fiber) until ``fd`` is ready for ``events``;
    raises ``TimeoutError`` after ``timeout`` seconds.  (Fibers wait through their sockets.)"""
    p = select.poll()
    p.register(fd, select.POLLIN if events == EPOLLIN else select.POLLOUT)
    if not p.poll(None if timeout is None else max(0, int(timeout * 1000))):
        raise TimeoutError(f"fd {fd} not ready within {timeout}s")


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.net._c_readiness")

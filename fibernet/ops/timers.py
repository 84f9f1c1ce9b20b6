"""Timer operations (Guile Fibers' ``fibers/timers.scm``): ``wait_op``, ``timer_op`` and ``sleep``.

Deadlines are on the performer's clock (``time.monotonic`` unless a test injected a
:class:`~fibernet.runtime.clock.MockClock`).  ``wait_op(s)`` counts from the moment it is
performed, as CML's ``timeOutEvt`` does, so one op object can serve as an idle timeout in a
loop.  A timer completes when the clock reads its deadline or later: never early.
"""

from __future__ import annotations

from functools import partial

from fibernet.ops.operation import NOT_READY, NOTHING, BaseOp, OpState, perform
from fibernet.runtime.clock import REAL_CLOCK
from fibernet.runtime.scheduler import _tls


def _now() -> float:
    sched = getattr(_tls, "scheduler", None)
    return (sched.clock if sched is not None else REAL_CLOCK).now()


def _check_seconds(seconds: float) -> float:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    if seconds != seconds:
        raise ValueError("seconds must not be NaN")
    return seconds


class _TimerOp(BaseOp):
    __slots__ = ("deadline",)

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        super().__init__(self._try, self._block, None, self._what)

    def _what(self) -> str:
        return f"timer at {self.deadline:.3f} (in {self.deadline - _now():.3f}s)"

    def _try(self):
        return NOTHING if _now() >= self.deadline else NOT_READY

    def _block(self, state: OpState, index: int):
        return state.ctx.add_timer(self.deadline, partial(state.complete, index, NOTHING))


class _WaitOp(BaseOp):
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(self._try, self._block, None, self._what)

    def _what(self) -> str:
        return f"wait {self.seconds}s"

    def _try(self):
        return NOTHING if self.seconds <= 0 else NOT_READY

    def _block(self, state: OpState, index: int):
        ctx = state.ctx
        return ctx.add_timer(ctx.now() + self.seconds, partial(state.complete, index, NOTHING))


def timer_op(deadline: float) -> BaseOp:
    """An operation that completes when the clock reaches ``deadline`` (monotonic seconds)."""
    return _TimerOp(_check_seconds(deadline))


def wait_op(seconds: float) -> BaseOp:
    """An operation that completes ``seconds`` after it is performed."""
    return _WaitOp(_check_seconds(seconds))


def sleep(seconds: float) -> None:
    """Suspend the calling fiber for ``seconds`` (a plain thread blocks)."""
    perform(_WaitOp(_check_seconds(seconds)))


def now() -> float:
    """The current time on this scheduler's clock."""
    return _now()

"""Clocks: where a scheduler reads the time and how long it may sleep.

A scheduler never calls ``time.monotonic`` itself; it asks its clock, so tests can inject
:class:`MockClock` (as trio's ``MockClock``) and timer tests never sleep for real.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """The real clock: ``time.monotonic``."""

    __slots__ = ()

    now = staticmethod(time.monotonic)

    def sleep_time(self, deadline: float) -> float:
        """Seconds of real time to block when the earliest timer is due at ``deadline``."""
        return max(0.0, deadline - time.monotonic())


class MockClock(Clock):
    """A virtual clock that moves only when told to, or by itself when the scheduler is idle.

    With ``autojump=True`` (the default), a scheduler that has nothing to run and would sleep
    until its next timer jumps the clock straight to that timer instead.  Use it with
    ``threads=1``: with several schedulers one idle thread would jump time under a busy one.
    """

    __slots__ = ("_now", "_lock", "autojump")

    def __init__(self, start: float = 0.0, autojump: bool = True) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.autojump = autojump

    def now(self) -> float:  # type: ignore[override]
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds

    def sleep_time(self, deadline: float) -> float:
        if self.autojump:
            with self._lock:
                if deadline > self._now:
                    self._now = deadline
            return 0.0
        # Without autojump: wake up now and then to see whether the test advanced the clock.
        return 0.0 if deadline <= self._now else 0.01


REAL_CLOCK = Clock()

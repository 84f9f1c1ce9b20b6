"""Locks that fibers and plain threads can share: what ``patch_all`` puts in ``threading``.

A :class:`Lock` is a real ``_thread`` lock plus a queue of waiting fibers.  A plain thread
acquires the real lock and blocks in it as before.  A fiber that finds the lock taken
publishes a one-shot :class:`~fibernet.ops.condition.Condition` in the queue, tries the lock
once more (it may have been released between the try and the publish, as in the seed's
``conditions.scm``), and suspends; ``release`` wakes the first fiber in the queue, which tries
again.  So a fiber waiting on a lock held by another fiber of the same thread suspends instead
of blocking the thread that the holder needs to get on (the deadlock a real lock makes).

A fiber that gives up (timeout, cancellation) after it was woken passes the wake-up on, so
no release is lost.  Like a real lock, any thread or fiber may release it.

:class:`RLock` is owned by the fiber that took it (by the thread outside fibers): two fibers
of one thread are two owners, which is what code written for threads expects of them.
It has the private methods ``threading.Condition`` uses (``_is_owned``, ``_release_save``,
``_acquire_restore``), so Condition, Event, Semaphore, Barrier and ``queue.Queue`` built
while patched cooperate as well.
"""

from __future__ import annotations

import _thread
from collections import deque
from typing import Any

from fibernet.ops.condition import Condition
from fibernet.ops.operation import choice, perform, wrap
from fibernet.ops.timers import now, timer_op
from fibernet.runtime.scheduler import _tls

_allocate = _thread.allocate_lock
_get_ident = _thread.get_ident
_TIMED_OUT = object()


def _current_fiber() -> Any:
    sched = getattr(_tls, "scheduler", None)
    return sched.current if sched is not None else None


def _timed_out() -> object:
    return _TIMED_OUT


class Lock:
    """A mutual-exclusion lock with ``threading.Lock``'s interface (see the module doc)."""

    __slots__ = ("_lock", "_fibers", "__weakref__")

    def __init__(self) -> None:
        self._lock = _allocate()
        self._fibers: deque[Condition] = deque()  # fibers waiting, oldest first

    def __repr__(self) -> str:
        state = "locked" if self._lock.locked() else "unlocked"
        return f"<fibernet Lock {state} fibers-waiting={len(self._fibers)}>"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        if not blocking:
            if timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            return False
        if timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number")
        if _current_fiber() is None:
            return self._lock.acquire(True, timeout)
        return self._acquire_in_fiber(None if timeout == -1 else timeout)

    def _acquire_in_fiber(self, timeout: float | None) -> bool:
        waiting = timer_op(now() + timeout) if timeout is not None else None  # one deadline
        fibers = self._fibers
        while True:
            woken = Condition()
            fibers.append(woken)
            if self._lock.acquire(False):  # released between the first try and the publish
                self._forget(woken)
                return True
            try:
                if waiting is None:
                    woken.wait()
                    continue
                if perform(choice(woken.wait_op(), wrap(waiting, _timed_out))) is _TIMED_OUT:
                    self._forget(woken)
                    return False
            except BaseException:
                self._forget(woken)
                raise

    def _forget(self, woken: Condition) -> None:
        """Leave the queue; a wake-up this waiter got and will not use goes to the next."""
        try:
            self._fibers.remove(woken)
        except ValueError:  # already taken off by a release: pass its wake-up on
            if woken.signalled:
                self._wake_one()

    def _wake_one(self) -> None:
        try:
            woken = self._fibers.popleft()
        except IndexError:
            return
        woken.signal()

    def release(self) -> None:
        self._lock.release()
        if self._fibers:
            self._wake_one()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        self._lock = _allocate()
        self._fibers = deque()

    # The old names ``_thread.LockType`` still answers to.
    acquire_lock = acquire
    release_lock = release
    locked_lock = locked


def _owner() -> Any:
    fiber = _current_fiber()
    return fiber if fiber is not None else _get_ident()


class RLock:
    """A re-entrant lock owned by a fiber (or, outside fibers, a thread)."""

    __slots__ = ("_block", "_owner", "_count", "__weakref__")

    def __init__(self) -> None:
        self._block = Lock()
        self._owner: Any = None
        self._count = 0

    def __repr__(self) -> str:
        return f"<fibernet RLock owner={self._owner!r} count={self._count}>"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = _owner()
        if self._count and self._owner == me:
            self._count += 1
            return True
        if not self._block.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    __enter__ = acquire

    def release(self) -> None:
        if not self._count or self._owner != _owner():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._block.release()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self._block.locked()

    # -- what threading.Condition uses -------------------------------------------------

    def _is_owned(self) -> bool:
        return bool(self._count) and self._owner == _owner()

    def _release_save(self) -> tuple[int, Any]:
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._block.release()
        return state

    def _acquire_restore(self, state: tuple[int, Any]) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def _recursion_count(self) -> int:
        return self._count if self._owner == _owner() else 0

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0

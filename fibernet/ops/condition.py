"""Conditions: one-shot events (Guile Fibers' ``fibers/conditions.scm``).

``signal()`` wakes every waiter, and every wait after it completes at once.  The tricky
interleaving is the one Guile Fibers handles: the condition may be signalled between a waiter's try and its
block, so block re-checks, holding the condition's own lock, before it publishes the waiter.
Waiters are completed after that lock is released (each under its state's lock).
"""

from __future__ import annotations

import threading
from functools import partial

from fibernet.ops.operation import NOT_READY, NOTHING, BaseOp, OpState, perform


class Condition:
    __slots__ = ("_signalled", "_waiters", "_lock", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _signalled's change and _waiters
        self._signalled = False
        self._waiters: list[tuple[OpState, int]] = []

    def __repr__(self) -> str:
        return f"<Condition {'signalled' if self._signalled else 'waiting'} waiters={len(self._waiters)}>"

    @property
    def signalled(self) -> bool:
        return self._signalled

    def signal(self) -> bool:
        """Signal the condition; returns False if it was signalled already.  Thread-safe."""
        with self._lock:
            if self._signalled:
                return False
            self._signalled = True
            waiters, self._waiters = self._waiters, []
        for state, index in waiters:
            state.complete(index, NOTHING)
        return True

    def wait_op(self) -> BaseOp[None]:
        return BaseOp(self._try, self._block, None, self._what)

    def wait(self) -> None:
        if self._signalled:
            return
        perform(self.wait_op())

    def waiting(self) -> int:
        return len(self._waiters)

    def _what(self) -> str:
        return f"condition {id(self):#x}"

    def _try(self):
        return NOTHING if self._signalled else NOT_READY

    def _block(self, state: OpState, index: int):
        with self._lock:
            if state.done:
                return None
            if self._signalled:
                state.finish_self(index, NOTHING)
                return None
            entry = (state, index)
            self._waiters.append(entry)
        return partial(self._drop, entry)

    def _drop(self, entry: tuple) -> None:
        with self._lock:
            try:
                self._waiters.remove(entry)
            except ValueError:
                pass

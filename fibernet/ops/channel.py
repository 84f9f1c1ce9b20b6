"""Channels: share memory by communicating (Guile Fibers' ``fibers/channels.scm``).

``Channel()`` is an unbuffered rendezvous: a put completes when a get takes its message, and
the other way round.  ``Channel(capacity=N)`` holds up to N messages.  Channels are
thread-safe: fibers on different schedulers and plain threads may use one channel at once.

Invariants, under ``LOCK``: blocked getters exist only while the buffer is empty; blocked
putters only while it is full (always, for a rendezvous channel).  An entry in a wait queue
whose state was completed by another branch is dead: whoever meets it drops it, and the
owner's cancel function removes it if nobody has, so no waiter outlives its operation.

``close()`` ends the channel: blocked putters and getters raise :class:`ChannelClosed`, later
puts raise it, gets drain what is buffered and then raise it, and iteration stops.

``put`` and ``get`` are Guile Fibers' one-liners over ``put_op`` / ``get_op`` with the try and
block phases fused under one lock acquisition, since they are the hot path of every server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from functools import partial
from typing import Any, Generic, TypeVar

from fibernet.errors import Cancelled, ChannelClosed
from fibernet.ops.operation import NOT_READY, NOTHING, BaseOp, OpState, Raise, perform
from fibernet.runtime.fiber import LOCK, RUNNING, SUSPENDED
from fibernet.runtime.scheduler import _tls

T = TypeVar("T")


def _closed() -> Raise:
    return Raise(ChannelClosed("channel is closed"))


class Channel(Generic[T]):
    __slots__ = ("capacity", "_buf", "_getters", "_putters", "_closed", "__weakref__")

    def __init__(self, capacity: int = 0) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"capacity must be an integer >= 0, not {capacity!r}")
        self.capacity = capacity
        self._buf: deque = deque()
        self._getters: deque[tuple[OpState, int]] = deque()
        self._putters: deque[tuple[OpState, int, Any]] = deque()
        self._closed = False

    def __repr__(self) -> str:
        g, p = self.waiting()
        state = "closed" if self._closed else "open"
        return (
            f"<Channel {id(self):#x} {state} capacity={self.capacity} buffered={len(self._buf)} "
            f"getters={g} putters={p}>"
        )

    # -- the public interface ---------------------------------------------------------------

    def put(self, message: T) -> None:
        """Send ``message``; suspend until a getter takes it (or buffer space frees)."""
        sched = getattr(_tls, "scheduler", None)
        fiber = sched.current if sched is not None else None
        state = None
        with LOCK:
            result = self._give_locked(message)
            if result is NOT_READY and fiber is not None and not fiber._cancel_pending:
                state = OpState(fiber, sched, self._what_put)
                entry = (state, 0, message)
                self._putters.append(entry)
                fiber._op_state = state
                fiber.state = SUSPENDED
        if result is NOT_READY:
            if state is None:
                perform(self.put_op(message))
                return
            result = self._suspend(sched, fiber, state, self._putters, entry)
        if type(result) is Raise:
            raise result.exc

    def get(self) -> T:
        """Receive a message; suspend until a putter offers one."""
        sched = getattr(_tls, "scheduler", None)
        fiber = sched.current if sched is not None else None
        state = None
        with LOCK:
            result = self._take_locked()
            if result is NOT_READY and fiber is not None and not fiber._cancel_pending:
                state = OpState(fiber, sched, self._what_get)
                entry = (state, 0)
                self._getters.append(entry)
                fiber._op_state = state
                fiber.state = SUSPENDED
        if result is NOT_READY:
            if state is None:
                return perform(self.get_op())
            result = self._suspend(sched, fiber, state, self._getters, entry)
        if type(result) is Raise:
            raise result.exc
        return result

    def put_op(self, message: T) -> BaseOp[None]:
        """An operation that sends ``message`` (completes with no value)."""
        return BaseOp(
            partial(self._try_put, message), partial(self._block_put, message), None, self._what_put
        )

    def get_op(self) -> BaseOp[T]:
        """An operation that receives a message."""
        return BaseOp(self._try_get, self._block_get, None, self._what_get)

    def try_get(self, default: Any = None) -> Any:
        """A message if one is ready now, else ``default``; never blocks."""
        v = self._try_get()
        if v is NOT_READY:
            return default
        if type(v) is Raise:
            raise v.exc
        return v

    def try_put(self, message: T) -> bool:
        """Send ``message`` if a getter or buffer space is ready now; False otherwise.

        (A choice with ``always`` is no substitute: a choice may pick any ready branch.)
        Raises :class:`ChannelClosed` on a closed channel.
        """
        with LOCK:
            v = self._give_locked(message)
        if type(v) is Raise:
            raise v.exc
        return v is not NOT_READY

    def close(self) -> None:
        """Close the channel (thread-safe, idempotent); see the module doc."""
        with LOCK:
            if self._closed:
                return
            self._closed = True
            getters, self._getters = self._getters, deque()
            putters, self._putters = self._putters, deque()
            for state, index in getters:
                state.complete_locked(index, _closed())
            for state, index, _message in putters:
                state.complete_locked(index, _closed())

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[T]:
        """Yield messages until the channel is closed and drained."""
        while True:
            try:
                yield self.get()
            except ChannelClosed:
                return

    def __len__(self) -> int:
        """Messages buffered now."""
        return len(self._buf)

    def waiting(self) -> tuple[int, int]:
        """(blocked getters, blocked putters), for introspection and leak checks."""
        return len(self._getters), len(self._putters)

    # -- the two phases, LOCK held ---------------------------------------------------------
    #
    # ``me`` is the state of a performer in its block phase: a choice may both put and get on
    # one channel, and it must not rendezvous with itself, so its own entries are skipped.

    def _take_locked(self, me: OpState | None = None) -> Any:
        buf = self._buf
        putters = self._putters
        if buf:
            message = buf.popleft()
            if putters:  # a blocked putter's message moves into the freed slot
                entry = self._claim_first(putters, me, NOTHING)
                if entry is not None:
                    buf.append(entry[2])
            return message
        if putters:
            entry = self._claim_first(putters, me, NOTHING)
            if entry is not None:
                return entry[2]
        return _closed() if self._closed else NOT_READY

    def _give_locked(self, message: Any, me: OpState | None = None) -> Any:
        if self._closed:
            return _closed()
        getters = self._getters
        if getters:
            if me is None:  # the common case (no choice of ours in the queue): first live one
                while getters:
                    state, index = getters.popleft()
                    if state.complete_locked(index, message):
                        return NOTHING
            elif self._claim_first(getters, me, message) is not None:
                return NOTHING
        if len(self._buf) < self.capacity:
            self._buf.append(message)
            return NOTHING
        return NOT_READY

    @staticmethod
    def _claim_first(queue: deque, me: OpState | None, value: Any) -> tuple | None:
        """Pop and complete the first live waiter that is not ``me``'s; dead ones are dropped."""
        own = None
        found = None
        while queue:
            entry = queue.popleft()
            state = entry[0]
            if state is me:
                own = own or []
                own.append(entry)
            elif state.complete_locked(entry[1], value):
                found = entry
                break
        if own:
            queue.extendleft(reversed(own))
        return found

    def _try_get(self) -> Any:
        with LOCK:
            return self._take_locked()

    def _try_put(self, message: Any) -> Any:
        with LOCK:
            return self._give_locked(message)

    def _block_get(self, state: OpState, index: int):
        with LOCK:
            if state.done:
                return None
            result = self._take_locked(state)
            if result is not NOT_READY:
                state.finish_self(index, result)
                return None
            entry = (state, index)
            self._getters.append(entry)
        return partial(self._drop, self._getters, entry)

    def _block_put(self, message: Any, state: OpState, index: int):
        with LOCK:
            if state.done:
                return None
            result = self._give_locked(message, state)
            if result is not NOT_READY:
                state.finish_self(index, result)
                return None
            entry = (state, index, message)
            self._putters.append(entry)
        return partial(self._drop, self._putters, entry)

    @staticmethod
    def _drop(queue: deque, entry: tuple) -> None:
        with LOCK:
            try:
                queue.remove(entry)
            except ValueError:
                pass  # already taken by whoever completed it

    def _suspend(self, sched, fiber, state: OpState, queue: deque, entry: tuple) -> Any:
        """Suspend in a fused put/get until completed; handle cancellation."""
        try:
            sched._park()
        except BaseException:  # killed at shutdown (GreenletExit): leave no waiter behind
            self._drop(queue, entry)
            raise
        fiber._op_state = None
        fiber.state = RUNNING
        if state.index == -1:
            self._drop(queue, entry)
            with LOCK:
                fiber._cancel_pending = False
            raise Cancelled()
        return state.value

    # -- introspection -------------------------------------------------------------------

    def _what_get(self) -> str:
        return f"get on channel {id(self):#x}"

    def _what_put(self) -> str:
        return f"put on channel {id(self):#x}"


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.ops._c_channel")

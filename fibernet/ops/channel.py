"""Channels: share memory by communicating (Guile Fibers' ``fibers/channels.scm``).

``Channel()`` is an unbuffered rendezvous: a put completes when a get takes its message, and
the other way round.  ``Channel(capacity=N)`` holds up to N messages.  Channels are
thread-safe: fibers on different schedulers and plain threads may use one channel at once.

Each channel has its own lock, which guards its buffer, its two wait queues and ``closed``;
a waiter's state is completed under that state's lock, taken inside the channel's (see
``fibernet.ops.operation`` for the order), so traffic on one channel never waits for another.
Invariants, under the channel's lock: blocked getters exist only while the buffer is empty;
blocked putters only while it is full (always, for a rendezvous channel).  An entry in a wait
queue whose state was completed by another branch is dead: whoever meets it drops it, and the
owner's cancel function removes it if nobody has, so no waiter outlives its operation.  A
choice in its block phase that meets a waiter commits both states together
(``commit_pair``): a message is never taken by a choice that another branch has won.

``close()`` ends the channel: blocked putters and getters raise :class:`ChannelClosed`, later
puts raise it, gets drain what is buffered and then raise it, and iteration stops.

``put`` and ``get`` are Guile Fibers' one-liners over ``put_op`` / ``get_op`` with the try and
block phases fused under one acquisition of the channel's lock, since they are the hot path of
every server.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from functools import partial
from typing import Any, Generic, TypeVar

from greenlet import getcurrent

from fibernet.errors import Cancelled, ChannelClosed
from fibernet.ops.operation import (
    NOT_READY,
    NOTHING,
    OTHER_DONE,
    SELF_DONE,
    BaseOp,
    OpState,
    Raise,
    _Marker,
    commit_pair,
    perform,
)
from fibernet.runtime.fiber import RUNNING
from fibernet.runtime.scheduler import _tls

T = TypeVar("T")


class _TAKE(metaclass=_Marker):
    """(``_meet``: the performer takes a putter's message)"""


def _closed() -> Raise:
    return Raise(ChannelClosed("channel is closed"))


class Channel(Generic[T]):
    __slots__ = ("capacity", "_buf", "_getters", "_putters", "_closed", "_lock", "__weakref__")

    def __init__(self, capacity: int = 0) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"capacity must be an integer >= 0, not {capacity!r}")
        self.capacity = capacity
        self._buf: deque = deque()
        self._getters: deque[tuple[OpState, int]] = deque()
        self._putters: deque[tuple[OpState, int, Any]] = deque()
        self._closed = False
        self._lock = threading.Lock()

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
        try:  # a runner greenlet knows its scheduler (see fibernet.runtime.scheduler._Runner)
            sched = getcurrent()._fibernet_scheduler
        except AttributeError:  # the loop's, a plain thread's or a user's greenlet
            sched = getattr(_tls, "scheduler", None)
        fiber = sched.current if sched is not None else None
        if fiber is None:
            perform(self.put_op(message))
            return
        lock = self._lock
        lock.acquire()  # (acquire and release: half the cost of ``with`` on the hot path)
        try:
            result = self._give(message)
            if result is NOT_READY:
                state = OpState(fiber, sched, self._what_put)
                state.lock = lock  # (a fused wait: only this channel and a cancel complete it)
                fiber._block_on(state)  # (raises Cancelled if a cancel is pending)
                entry = (state, 0, message)
                self._putters.append(entry)
        finally:
            lock.release()
        if result is NOT_READY:
            result = self._suspend(sched, fiber, state, self._putters, entry)
        if type(result) is Raise:
            raise result.exc

    def get(self) -> T:
        """Receive a message; suspend until a putter offers one."""
        # (put's fused fast path mirrored, written out: it is the hot path of both)
        try:  # a runner greenlet knows its scheduler (see fibernet.runtime.scheduler._Runner)
            sched = getcurrent()._fibernet_scheduler
        except AttributeError:  # the loop's, a plain thread's or a user's greenlet
            sched = getattr(_tls, "scheduler", None)
        fiber = sched.current if sched is not None else None
        if fiber is None:
            return perform(self.get_op())
        lock = self._lock
        lock.acquire()
        try:
            result = self._take()
            if result is NOT_READY:
                state = OpState(fiber, sched, self._what_get)
                state.lock = lock
                fiber._block_on(state)
                entry = (state, 0)
                self._getters.append(entry)
        finally:
            lock.release()
        if result is NOT_READY:
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
        v = self._try_put(message)
        if type(v) is Raise:
            raise v.exc
        return v is not NOT_READY

    def close(self) -> None:
        """Close the channel (thread-safe, idempotent); see the module doc."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            getters, self._getters = self._getters, deque()
            putters, self._putters = self._putters, deque()
        for entry in getters:
            entry[0].complete(entry[1], _closed())
        for entry in putters:
            entry[0].complete(entry[1], _closed())

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

    # -- the try phase (the channel's lock held) -----------------------------------------
    #
    # The performer has no state in any queue yet: completing a waiter is one claim, under
    # the waiter's state lock -- or none more, for a fused wait, whose lock is the channel's.

    def _take(self) -> Any:
        buf = self._buf
        putters = self._putters
        if buf:
            message = buf.popleft()
            if putters:  # a blocked putter's message moves into the freed slot
                self._refill()
            return message
        while putters:
            state, index, message = putters.popleft()
            if state.complete(index, NOTHING, self._lock):
                return message
        return _closed() if self._closed else NOT_READY

    def _give(self, message: Any) -> Any:
        if self._closed:
            return _closed()
        getters = self._getters
        while getters:
            state, index = getters.popleft()
            if state.complete(index, message, self._lock):
                return NOTHING
        if len(self._buf) < self.capacity:
            self._buf.append(message)
            return NOTHING
        return NOT_READY

    def _refill(self) -> None:
        """Move the first live blocked putter's message into the buffer (a slot is free)."""
        putters = self._putters
        while putters:
            state, index, message = putters.popleft()
            if state.complete(index, NOTHING, self._lock):
                self._buf.append(message)
                return

    def _try_get(self) -> Any:
        with self._lock:
            return self._take()

    def _try_put(self, message: Any) -> Any:
        with self._lock:
            return self._give(message)

    # -- the block phase (the channel's lock held) ---------------------------------------
    #
    # ``state`` is the performer's, already in the queues of the branches before this one,
    # where another thread may complete it at any moment: completing it here is a claim
    # that may fail, and a rendezvous claims both parties at once (``commit_pair``).  A
    # choice may both put and get on one channel, and must not meet itself, so its own
    # entries are skipped.

    def _block_get(self, state: OpState, index: int):
        with self._lock:
            if state.done:
                return None
            buf = self._buf
            if buf:
                if state.finish_self(index, buf[0]):
                    buf.popleft()
                    self._refill()
                return None
            if self._meet(self._putters, state, index, _TAKE, self._lock):
                return None
            if self._closed:
                state.finish_self(index, _closed())
                return None
            entry = (state, index)
            self._getters.append(entry)
        return partial(self._drop, self._getters, entry)

    def _block_put(self, message: Any, state: OpState, index: int):
        with self._lock:
            if state.done:
                return None
            if self._closed:
                state.finish_self(index, _closed())
                return None
            if self._meet(self._getters, state, index, message, self._lock):
                return None
            if len(self._buf) < self.capacity:
                if state.finish_self(index, NOTHING):
                    self._buf.append(message)
                return None
            entry = (state, index, message)
            self._putters.append(entry)
        return partial(self._drop, self._putters, entry)

    @staticmethod
    def _meet(queue: deque, me: OpState, index: int, message: Any, held: Any) -> bool:
        """Commit ``me`` (branch ``index``) with the first live waiter of ``queue`` that is not
        its own: a putter's if ``message`` is ``_TAKE``, else a getter's, given ``message``.
        True if ``me`` is done now (committed here, or by another branch first)."""
        own = None
        done = False
        while queue:
            entry = queue.popleft()
            other = entry[0]
            if other is me:
                if own is None:
                    own = []
                own.append(entry)
                continue
            if message is _TAKE:
                outcome = commit_pair(held, me, index, entry[2], other, entry[1], NOTHING)
            else:
                outcome = commit_pair(held, me, index, NOTHING, other, entry[1], message)
            if outcome != OTHER_DONE:  # (a dead entry is dropped)
                if outcome == SELF_DONE:
                    queue.appendleft(entry)  # still live: leave it for the next party
                done = True
                break
        if own:
            queue.extendleft(reversed(own))
        return done

    def _drop(self, queue: deque, entry: tuple) -> None:
        with self._lock:
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
            with fiber._state_lock:
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

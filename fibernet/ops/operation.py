"""Concurrent ML operations: the whole protocol (Guile Fibers' ``fibers/operations.scm``).

An operation is a description of something that may block.  ``perform(op)`` makes it happen,
in two phases:

1. *try*: ask each base operation of the choice, starting at a random one, whether it can
   complete now without blocking.  The first that can, wins.
2. *block*: if none can, register with every one of them under one shared :class:`OpState`,
   suspend, and let whoever completes the state first (under its lock) choose the winner.
   Exactly one base operation of a choice completes, once, however many threads race.  Then
   every losing branch releases what it registered (its cancel function), so a timer that
   lost a choice does not linger (Guile Fibers issue #109).

A base operation is three functions (Guile's make-base-operation):

- ``try_fn() -> value | NOT_READY``;
- ``block_fn(state, index) -> cancel | None``: arrange for ``state.complete(index, value)`` to
  be called (from any thread) when it can complete; return a function that undoes the
  arrangement.  ``state.ctx`` is the performer's scheduler (``now``, ``add_timer``,
  ``watch_fd``).  A block function that finds it can complete at once calls
  ``state.finish_self(index, value)`` instead, and does nothing if that returns False;
- ``wrap_fn(value)`` (optional): turns the raw value into the operation's result.

An operation with no result completes with ``NOTHING``; wrap functions over it take no
argument (``wrap(wait_op(1), lambda: "timeout")``) and ``perform`` returns None.

Locking (there is no process-wide lock; Guile Fibers swaps an atomic box per state from
W(aiting) to C(laimed) to S(ynced), and a lock per state plays that box here):

- ``OpState.lock`` guards the state's one change from waiting to done.  It is its owner's
  state lock: a fiber's (striped by fiber id, ``fibernet.runtime.fiber``, and also guarding
  its ``_op_state`` and ``_cancel_pending``, so a cancel never misses a fiber about to block),
  or a plain thread's own.  ``complete`` takes it, so does ``finish_self``.
- An object waiters queue on has a lock of its own (a channel's, a condition's, a fiber's
  join lock), which guards its queues and is taken *before* any state lock, never the other
  way round; nobody holds two such object locks at once.
- A performer in its block phase is in the queues of its earlier branches, so another
  thread may complete it at any moment.  When a later branch meets a waiter (a choice's
  ``get_op`` finding a blocked putter), both states must complete or neither:
  ``commit_pair`` holds both state locks, taken in a fixed order (by ``id``; one lock taken
  once if they share it), so it never deadlocks with the commit of the same two in the
  other direction.  It completes neither if either is done already: a dead waiter is dropped,
  a performer found done stops.  The waiter is woken only after both are committed.
- Wake-ups (``owner._wake``) happen after the state's lock is released.

Beyond Guile Fibers, from Concurrent ML: ``guard`` (build the operation at perform time), ``with_nack``
(learn that a choice chose another branch), ``always`` and ``never``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from greenlet import getcurrent

from fibernet.errors import Cancelled
from fibernet.ops.plain_thread import ThreadOwner
from fibernet.runtime.fiber import RUNNING, Fiber, StateLock
from fibernet.runtime.scheduler import _tls

T = TypeVar("T")  # what an operation's perform returns
U = TypeVar("U")


class _Marker(type):
    """The type of the markers below, which are classes: on a free-threaded CPython 3.13 a
    class is immortal (no reference count), while every thread that loads a shared mortal
    object writes its count, and two schedulers bounce that cache line between them."""

    def __repr__(cls) -> str:
        return cls.__name__


class NOT_READY(metaclass=_Marker):
    """What a try function returns when its operation cannot complete now."""


class NOTHING(metaclass=_Marker):
    """The value of an operation that completes with no result."""

_CANCELLED = -1
_COMPILED = __name__.endswith("._c_operation")  # (a C constant there: see fibernet.runtime.fiber)


class Raise:
    """A completion value that makes ``perform`` raise ``exc`` (a closed channel, say)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class OpState:
    """The shared state of one ``perform``: waiting, then done with one (index, value).

    ``lock`` is its owner's state lock (a fiber's ``_state_lock``, a plain thread's own):
    ``done``, ``index``, ``value`` and ``woken`` change only under it, once.
    """

    __slots__ = ("done", "woken", "index", "value", "owner", "ctx", "op", "lock")

    def __init__(self, owner: Any, ctx: Any, op: Any) -> None:
        self.done = False
        self.woken = False
        self.index = 0
        self.value = None
        self.owner = owner
        self.ctx = ctx
        self.op = op
        self.lock = owner._state_lock

    def complete(self, index: int, value: Any, held: Any = None) -> bool:
        """Complete branch ``index`` with ``value`` and wake the performer (any thread).

        Returns False if the operation was already completed (by another branch).  A caller
        that holds a lock passes it as ``held``: if it is this state's own (a fused channel
        wait's state lock is its channel's), it is not taken again.
        """
        lock = self.lock
        fast = None
        if lock is held:
            lock = None
        elif _COMPILED and type(lock) is StateLock:  # (C calls)
            fast = lock
            fast._take()
        else:
            lock.acquire()  # (acquire and release: half the cost of ``with`` on this hot path)
        try:
            if self.done:
                return False
            self.index = index
            self.value = value
            self.woken = True
            self.done = True
        finally:
            if fast is not None:
                fast._drop()
            elif lock is not None:
                lock.release()
        owner = self.owner
        if type(owner) is Fiber:  # (fiber._wake(), as C calls in the compiled copy)
            fiber = owner
            sched = fiber.scheduler
            sched._resume(fiber)
        else:  # a plain thread's ThreadOwner
            owner._wake()
        return True

    def finish_self(self, index: int, value: Any) -> bool:
        """Complete from the performer's own block phase: no wake-up.  False if another
        branch completed it first (the caller must then undo nothing: it changed nothing)."""
        with self.lock:
            if self.done:
                return False
            self.index = index
            self.value = value
            self.done = True
        return True

    def describe(self) -> str:
        return describe(self.op)


# What ``commit_pair`` returns.
COMMITTED = 0
SELF_DONE = 1  # the performer's own state was completed first (by another of its branches)
OTHER_DONE = 2  # the other party's was: its queue entry is dead


def commit_pair(
    held: Any, me: OpState, my_index: int, my_value: Any, other: OpState, index: int, value: Any
) -> int:
    """Complete two states together or neither: the performer's own ``me`` (in its block
    phase, no wake-up) and a waiting ``other`` (woken).  The caller holds the lock ``held``
    (its object's, which may be ``other``'s own); the states' other locks are taken in a
    fixed order (by ``id``), so two such commits never wait for each other in a cycle."""
    a = me.lock
    b = other.lock
    if b is held or b is a:
        b = None
    elif id(a) > id(b):
        a, b = b, a
    a.acquire()
    if b is not None:
        b.acquire()
    try:  # (complete's change of state, for two states under both their locks)
        if me.done:
            return SELF_DONE
        if other.done:
            return OTHER_DONE
        me.index = my_index
        me.value = my_value
        me.done = True
        other.index = index
        other.value = value
        other.woken = True
        other.done = True
    finally:
        if b is not None:
            b.release()
        a.release()
    other.owner._wake()
    return COMMITTED


# -- operations --------------------------------------------------------------------------


class Operation(Generic[T]):
    """Something that can be performed, wrapped, and put in a choice."""

    __slots__ = ()

    def _flatten(self, entries: list, wraps: tuple, nacks: list) -> None:
        raise NotImplementedError

    def wrap(self, fn: Callable[..., U]) -> Operation[U]:
        return _Wrap(self, fn)

    def perform(self) -> T:
        return perform(self)


class BaseOp(Operation[T]):
    """A primitive operation made of try, block and wrap functions (see the module doc)."""

    __slots__ = ("try_fn", "block_fn", "wrap_fn", "what")

    def __init__(
        self: BaseOp[Any],  # what it completes with is the try or block side's to say
        try_fn: Callable[[], Any],
        block_fn: Callable[[OpState, int], Callable[[], object] | None],
        wrap_fn: Callable[[Any], Any] | None = None,
        what: Any = None,
    ) -> None:
        self.try_fn = try_fn
        self.block_fn = block_fn
        self.wrap_fn = wrap_fn
        self.what = what

    def _flatten(self, entries: list, wraps: tuple, nacks: list) -> None:
        entries.append((self, wraps))

    def __repr__(self) -> str:
        return f"<op {describe(self)}>"


class _Wrap(Operation):
    __slots__ = ("op", "fn")

    def __init__(self, op: Operation, fn: Callable[..., Any]) -> None:
        self.op = op
        self.fn = fn

    def _flatten(self, entries: list, wraps: tuple, nacks: list) -> None:
        # Inner wraps run first: wraps are applied left to right.
        self.op._flatten(entries, (self.fn,) + wraps, nacks)


class _Choice(Operation):
    __slots__ = ("ops",)

    def __init__(self, ops: tuple) -> None:
        self.ops = ops

    def _flatten(self, entries: list, wraps: tuple, nacks: list) -> None:
        for op in self.ops:
            op._flatten(entries, wraps, nacks)


class _Guard(Operation):
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Operation]) -> None:
        self.make = make

    def _flatten(self, entries: list, wraps: tuple, nacks: list) -> None:
        _check_op(self.make(), "guard's function")._flatten(entries, wraps, nacks)


class _WithNack(Operation):
    __slots__ = ("make",)

    def __init__(self, make: Callable[[Operation], Operation]) -> None:
        self.make = make

    def _flatten(self, entries: list, wraps: tuple, nacks: list) -> None:
        from fibernet.ops.condition import Condition

        nack = Condition()
        lo = len(entries)
        try:
            _check_op(self.make(nack.wait_op()), "with_nack's function")._flatten(entries, wraps, nacks)
        except BaseException:  # the function may have handed the nack on before it raised
            nack.signal()
            raise
        nacks.append((nack, lo, len(entries)))


def _check_op(op: Any, who: str) -> Operation:
    if not isinstance(op, Operation):
        raise TypeError(f"{who} must return an operation, not {type(op).__name__}")
    return op


def wrap(op: Operation[Any], fn: Callable[..., U]) -> Operation[U]:
    """An operation that performs ``op`` and returns ``fn`` applied to its result."""
    _check_op(op, "wrap's first argument")
    if not callable(fn):
        raise TypeError("wrap's second argument must be callable")
    return _Wrap(op, fn)


def choice(*ops: Operation[T]) -> Operation[T]:
    """An operation that completes exactly one of ``ops``."""
    for op in ops:
        _check_op(op, "every argument of choice")
    if len(ops) == 1:
        return ops[0]
    return _Choice(ops)


def guard(make_op: Callable[[], Operation[T]]) -> Operation[T]:
    """An operation made by calling ``make_op()`` each time it is performed (CML guard)."""
    return _Guard(make_op)


def with_nack(make_op: Callable[[Operation[None]], Operation[T]]) -> Operation[T]:
    """CML withNack: ``make_op(nack)`` builds the operation at perform time; ``nack`` is an
    operation that completes if the perform does not complete this operation: another
    branch of the choice wins, or control leaves the perform by an exception (a guard or a
    try function that raises, a cancel, the fiber killed at shutdown) -- so a server can
    stop work nobody waits for."""
    return _WithNack(make_op)


def _no_block(state: OpState, index: int) -> None:
    return None


def always(value: Any = None) -> Operation[Any]:
    """An operation that completes at once with ``value``."""
    return BaseOp(lambda: value, _no_block, what="always")


def never() -> Operation[Any]:
    """An operation that never completes."""
    return BaseOp(lambda: NOT_READY, _no_block, what="never")


def describe(op: Any) -> str:
    """A short text for what an operation waits on (for introspection)."""
    if isinstance(op, BaseOp):
        what = op.what
        return what() if callable(what) else str(what or "operation")
    if isinstance(op, _Wrap):
        return describe(op.op)
    if isinstance(op, _Choice):
        return " | ".join(describe(o) for o in op.ops)
    if isinstance(op, (_Guard, _WithNack)):
        return "guarded operation"
    if callable(op):  # fused fast paths record a describing function
        return op()
    if isinstance(op, tuple) and len(op) == 2:  # a socket wait records (fd, events)
        return f"{'readable' if op[1] & 1 else 'writable'} fd {op[0]}"
    return str(op)


# -- perform -----------------------------------------------------------------------------


def _deliver(base: BaseOp, value: Any, wraps: tuple) -> Any:
    if type(value) is Raise:
        raise value.exc
    fn = base.wrap_fn
    if fn is not None:
        value = fn(value)
    for fn in wraps:
        value = fn() if value is NOTHING else fn(value)
    return None if value is NOTHING else value


def _signal_nacks(nacks: list, winner: int) -> None:
    for cond, lo, hi in nacks:
        if not lo <= winner < hi:
            cond.signal()


def _signal_all(nacks: list) -> None:
    for cond, _lo, _hi in nacks:
        cond.signal()


def perform(op: Operation[T]) -> T:
    """Perform ``op``: complete it, blocking (suspending the fiber) until it can."""
    try:  # a runner greenlet knows its scheduler (see fibernet.runtime.scheduler._Runner)
        sched = getcurrent()._fibernet_scheduler
    except AttributeError:  # the loop's, a plain thread's or a user's greenlet
        sched = getattr(_tls, "scheduler", None)
    fiber = sched.current if sched is not None else None
    if fiber is not None and fiber._cancel_pending:
        with fiber._state_lock:
            fiber._cancel_pending = False
        raise Cancelled()

    # -- phase 1: try ----------------------------------------------------------------------
    if type(op) is BaseOp:
        value = op.try_fn()
        if value is not NOT_READY:
            return _deliver(op, value, ())
        entries = [(op, ())]
        nacks: list = []
    else:
        entries = []
        nacks = []
        found = -1
        try:  # (a guard or a try function that raises still fires the nacks made so far)
            op._flatten(entries, (), nacks)
            n = len(entries)
            if n > 1:  # (its scheduler's own generator, if any: see Scheduler)
                start = int((random.random if sched is None else sched._random)() * n)
            else:
                start = 0
            for k in range(n):
                i = (start + k) % n
                value = entries[i][0].try_fn()
                if value is not NOT_READY:
                    found = i
                    break
        except BaseException:
            _signal_all(nacks)
            raise
        if found >= 0:
            if nacks:
                _signal_nacks(nacks, found)
            base, wraps = entries[found]
            return _deliver(base, value, wraps)

    # -- phase 2: block --------------------------------------------------------------------
    if fiber is None:
        owner = ThreadOwner()
        state = OpState(owner, owner, op)
    else:
        state = OpState(fiber, sched, op)
    cancels: list = []
    parked = False
    try:
        if fiber is not None:
            fiber._block_on(state)  # raises Cancelled if a cancel is pending
        for i, (base, _wraps) in enumerate(entries):
            cancels.append(base.block_fn(state, i))
            if state.done:
                break
        if not state.done or state.woken:
            parked = True
            if fiber is None:
                owner.wait(state)
            else:
                sched._park()
    except BaseException:
        # A block function raised, a cancel came first, or the fiber is being killed (the
        # runtime's shutdown throws GreenletExit into a fiber that ignored Cancelled).
        _abandon(state, cancels, nacks, fiber, sched, parked)
        raise
    if fiber is not None:
        fiber._op_state = None
        fiber.state = RUNNING

    # -- the winner is known: release the losers -----------------------------------------
    index = state.index
    for j, cancel in enumerate(cancels):
        if j != index and cancel is not None:
            cancel()
    if index == _CANCELLED:
        with fiber._state_lock:
            fiber._cancel_pending = False
        _signal_all(nacks)
        raise Cancelled()
    if nacks:
        _signal_nacks(nacks, index)
    base, wraps = entries[index]
    return _deliver(base, state.value, wraps)


def _abandon(state: OpState, cancels: list, nacks: list, fiber: Any, sched: Any, parked: bool) -> None:
    """The perform ends by an exception: take the state out of play (nobody may complete it
    now) and release every branch it registered; every nack fires."""
    with state.lock:
        pending_wake = state.woken
        state.done = True
    if pending_wake and not parked:  # someone completed us meanwhile: consume its wake-up
        if fiber is None:
            state.owner.wait(state)
        else:
            sched._park()
    if fiber is not None:
        fiber._op_state = None
        fiber.state = RUNNING
    for cancel in cancels:
        if cancel is not None:
            cancel()
    _signal_all(nacks)


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.ops._c_operation")

"""Fibers: a function, the greenlet that runs it, and its outcome (Crow's future).

A greenlet is bound to the thread that creates it, so a Fiber holds only its function until a
scheduler first runs it; the scheduler then lends it a greenlet on its own thread (reusing a
runner greenlet left over by a fiber that finished, so a fiber that never suspends costs no
greenlet of its own).  Until then the fiber may be stolen by another scheduler.

Each fiber runs in its own ``contextvars`` context, copied from its spawner's when it is
spawned: runner greenlets are reused, and nothing one fiber sets is seen by another.

The outcome comes back at ``join``: the value, or the exception raised again in the joiner.
An exception that nobody retrieves (by a join, ``result``, ``exception``, or a done callback
that does) is logged with the fiber's name by its scheduler, at the end of the turn in which
the last reference to the fiber went away -- nobody can join it then -- or when the runtime
ends, if something still holds the fiber.  A weak reference's callback only queues the
report: nothing is logged from a finalizer, so nothing runs inside the garbage collector.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fibernet.errors import Cancelled

if TYPE_CHECKING:
    from typing import Generic as _Generic

    from fibernet.ops.operation import Operation
    from fibernet.runtime.scheduler import Scheduler
else:

    class _Generic:
        """What stands for ``typing.Generic`` at run time: ``Fiber[int]`` is a
        ``types.GenericAlias``.  (The compiled Fiber is an extension type, which may not
        derive from ``Generic``; type checkers see ``Generic`` itself.)"""

        __slots__ = ()

        def __class_getitem__(cls, params):
            return cls if cls is _Generic else types.GenericAlias(cls, params)


T = TypeVar("T")  # what the fiber's function returns

log = logging.getLogger("fibernet.fiber")

# States.  A fiber is NEW until first run, then RUNNING / RUNNABLE / SUSPENDED, then DONE.
NEW = "new"
RUNNABLE = "runnable"
RUNNING = "running"
SUSPENDED = "suspended"
DONE = "done"

_ids = itertools.count(1)

# No process-wide lock: two tables of striped locks, indexed by fiber id (a fiber's lock costs
# no allocation, and fibers with ids less than _STRIPES apart never share one).
#
# - A fiber's *state lock* (``Fiber._state_lock``) guards its ``_op_state`` and
#   ``_cancel_pending`` (a cancel never misses a fiber about to block), and the completion of
#   the OpStates it performs (``OpState.lock``: its owner's state lock, or for a fused channel
#   wait the channel's).  See ``fibernet.ops.operation`` for the order in which they nest.
#   It is a stripe until the fiber starts; then its scheduler's own (``Scheduler._start``), made
#   on the scheduler's thread: a free-threaded CPython counts references to an object made by
#   another thread with atomic operations, and two schedulers' fibers that hashed to one stripe
#   would bounce it between them.  ``cancel`` takes the lock the fiber has after it took it.
# - A fiber's *join lock* (``join_lock(fiber)``) guards its ``_joiners``, ``_callbacks`` and its
#   move to DONE, so a joiner either registers before the fiber ends or sees it DONE.
_STRIPES = 256


class StateLock:
    """A state lock in the compiled copy: ``threading.Lock``'s interface (``acquire``,
    ``release``, ``locked``, ``with``), and C-level ``_take`` and ``_drop`` that the hot path
    calls directly -- ``threading.Lock.acquire`` parses its arguments on every call, which cost
    more than the rest of a wait's locking.  Only the compiled copy makes them (see
    ``new_state_lock``; the names it calls are declared in ``_c_fiber.pxd``): the pure-Python
    modules use ``threading.Lock`` itself."""

    __slots__ = ()

    def __cinit__(self) -> None:
        self._lock = PyThread_allocate_lock()  # noqa: F821
        if not self._lock:
            raise MemoryError()

    def __dealloc__(self) -> None:
        if self._lock:
            PyThread_free_lock(self._lock)  # noqa: F821

    def _take(self) -> None:
        if not PyThread_acquire_lock(self._lock, 0):  # noqa: F821 - (free: no system call)
            _wait_lock(self._lock, -1)  # noqa: F821 - (the GIL released meanwhile)
        self._locked = True

    def _drop(self) -> None:
        self._locked = False
        PyThread_release_lock(self._lock)  # noqa: F821

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not PyThread_acquire_lock(self._lock, 0):  # noqa: F821
            if not blocking or timeout == 0:
                return False
            if not _wait_lock(self._lock, -1 if timeout < 0 else int(timeout * 1e6)):  # noqa: F821
                return False
        self._locked = True
        return True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("release unlocked lock")
        self._drop()

    def locked(self) -> bool:
        return self._locked

    def __enter__(self) -> bool:
        self._take()
        return True

    def __exit__(self, *exc: object) -> None:
        self.release()


# Running as the compiled copy (a C constant there: the pure module skips its fast paths).
_COMPILED = __name__.endswith("._c_fiber")
# A new state lock: a StateLock in the compiled copy, a threading.Lock in the pure module.
new_state_lock: Callable[[], Any] = StateLock if _COMPILED else threading.Lock
_STATE_LOCKS = tuple(new_state_lock() for _ in range(_STRIPES))
_JOIN_LOCKS = tuple(threading.Lock() for _ in range(_STRIPES))


def join_lock(fiber: Fiber) -> threading.Lock:
    """The lock that guards ``fiber``'s joiners, done callbacks and end (see above)."""
    return _JOIN_LOCKS[fiber.id % _STRIPES]


# Waiting for a fiber is an operation, so it belongs to the layer above: ``fibernet.ops.join``
# registers its two functions here when it is imported (``import fibernet`` does), and the
# runtime never imports that layer.
_join_functions: dict[str, Callable[..., Any]] = {}


def register_join(join: Callable[..., Any], join_op: Callable[..., Any]) -> None:
    """Called by ``fibernet.ops.join``: ``join(fiber, timeout)`` and ``join_op(fiber)``
    implement :meth:`Fiber.join` and :meth:`Fiber.join_op`."""
    _join_functions["join"] = join
    _join_functions["join_op"] = join_op


def _joining(what: str) -> Callable[..., Any]:
    try:
        return _join_functions[what]
    except KeyError:
        raise RuntimeError("joining a fiber needs fibernet.ops (import fibernet)") from None


class _Unretrieved:
    """A fiber's exception that nobody has retrieved yet (``exc`` is cleared when someone
    does).  The fiber's scheduler reports it if it is still set when the fiber can no longer
    be joined: see ``Scheduler._report_unjoined``.  It never logs from a finalizer."""

    __slots__ = ("name", "exc")

    def __init__(self, name: str, exc: BaseException) -> None:
        self.name = name
        self.exc = exc


class _FiberBase:
    """Fiber's first base: in the compiled copy an extension type (the first base of one must
    be), which leaves room for ``_Generic`` beside it."""

    __slots__ = ()


class Fiber(_FiberBase, _Generic[T]):
    """A lightweight thread of control run by a scheduler.  Made by :func:`fibernet.spawn`."""

    __slots__ = (
        "_fn",
        "_args",
        "_name",
        "id",
        "state",
        "scheduler",
        "parallel",
        "_greenlet",
        "_value",
        "_exc",
        "_joiners",
        "_op_state",
        "_cancel_pending",
        "_state_lock",
        "_unretrieved",
        "_callbacks",
        "_context",
        "__weakref__",
    )

    def __init__(
        self,
        fn: Callable[..., T],
        args: tuple = (),
        name: str | None = None,
        parallel: bool = False,
    ) -> None:
        self._fn = fn
        self._args = args
        self._name = name
        self.id = fid = next(_ids)
        self._state_lock = _STATE_LOCKS[fid % _STRIPES]
        self.state = NEW
        self.scheduler: Scheduler | None = None
        self.parallel = parallel
        self._greenlet = None
        self._value: Any = None
        self._exc: BaseException | None = None
        self._joiners: list | None = None
        self._op_state = None  # the operation this fiber is suspended in, if any
        self._cancel_pending = False
        self._unretrieved: _Unretrieved | None = None
        self._callbacks: list[Callable[[Fiber], object]] | None = None
        # Its own contextvars context, a copy of its spawner's now (as asyncio and trio do);
        # the scheduler hands it to the runner greenlet that starts the fiber.  An empty copy
        # is not kept: started with None, the fiber gets a fresh context if it sets a variable.
        context = contextvars.copy_context()
        self._context: contextvars.Context | None = context if context else None

    # -- identity and introspection ----------------------------------------------------

    @property
    def name(self) -> str:
        name = self._name
        if name is None:
            fn = self._fn
            label = getattr(fn, "__qualname__", None) or "fiber"
            name = self._name = f"{label}#{self.id}"
        return name

    def __repr__(self) -> str:
        return f"<Fiber {self.name} {self.state}>"

    def done(self) -> bool:
        return self.state is DONE

    def waiting_on(self) -> str | None:
        """What the fiber is suspended on (for introspection), or None if it is not."""
        st = self._op_state
        if self.state is not SUSPENDED or st is None:
            return None
        return st.describe()

    # -- outcome (Crow's future) ---------------------------------------------------------

    def result(self) -> T:
        """The value of a finished fiber, or its exception raised again here."""
        if self.state is not DONE:
            raise RuntimeError(f"fiber {self.name} has not finished")
        exc = self._exc
        if exc is not None:
            u = self._unretrieved
            if u is not None:
                u.exc = None
                self._unretrieved = None
            raise exc
        return self._value

    def exception(self) -> BaseException | None:
        if self.state is not DONE:
            raise RuntimeError(f"fiber {self.name} has not finished")
        u = self._unretrieved
        if u is not None:
            u.exc = None
            self._unretrieved = None
        return self._exc

    def join(self, timeout: float | None = None) -> T:
        """Wait for the fiber to finish; return its value or raise its exception.

        Works from a fiber on any scheduler and from a plain thread.  With ``timeout``,
        raises :class:`fibernet.Timeout` if the fiber has not finished in time.
        """
        if self.state is DONE:
            return self.result()
        return _joining("join")(self, timeout)

    def join_op(self) -> Operation[T]:
        """An operation that completes when the fiber finishes, with its value (or raises)."""
        return _joining("join_op")(self)

    def add_done_callback(self, fn: Callable[[Fiber], object]) -> None:
        """Call ``fn(fiber)`` when the fiber finishes, however it finishes (also if it is
        cancelled before it starts), on the thread of its scheduler.  If it has finished
        already, call it now."""
        with join_lock(self):
            if self.state is not DONE:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def cancel(self) -> None:
        """Raise :class:`Cancelled` inside the fiber at its next suspension.

        Thread-safe.  A suspended fiber is woken at once and releases what its operation
        registered; a fiber that has not started finishes as cancelled without running.
        """
        lock = self._state_lock
        lock.acquire()
        while self._state_lock is not lock:  # it started meanwhile: its scheduler's lock now
            lock.release()
            lock = self._state_lock
            lock.acquire()
        try:
            if self.state is DONE:
                return
            self._cancel_pending = True
            st = self._op_state
        finally:
            lock.release()
        if st is not None:
            # (Under the state's own lock, after the fiber's: it may be a channel's.)  The
            # performer may still be in its block phase; the completion sets ``woken``, which
            # tells it that a wake-up is on its way, so it suspends to consume it instead of
            # being resumed again later.
            st.complete(-1, None)

    def _block_on(self, state: Any) -> None:
        """Make ``state`` (an OpState) what the fiber waits on, just before it suspends, so
        ``cancel`` can complete it; raises ``Cancelled`` instead if a cancel is pending."""
        lock = self._state_lock
        fast = lock if _COMPILED and type(lock) is StateLock else None  # (C calls; every wait comes here)
        if fast is not None:
            fast._take()
        else:
            lock.acquire()  # (acquire and release: half the cost of ``with``)
        try:
            if self._cancel_pending:
                self._cancel_pending = False
                raise Cancelled()
            self._op_state = state
            self.state = SUSPENDED
        finally:
            if fast is not None:
                fast._drop()
            else:
                lock.release()

    # -- called by the scheduler ---------------------------------------------------------

    def _wake(self) -> None:
        """Put the fiber back on its scheduler's run queue (thread-safe)."""
        self.scheduler._resume(self)

    def _execute(self) -> None:
        """Run the fiber's function to the end and record its outcome (in its greenlet)."""
        try:
            if self._cancel_pending:
                raise Cancelled()
            # Calls with a fixed number of arguments, not fn(*args): CPython 3.11 runs those
            # in the same C-level interpreter loop, while a call through *args nests a new
            # one, which every suspended fiber would keep on its saved C stack (about 0.5 KiB
            # each of an idle connection's memory).
            fn, args = self._fn, self._args
            n = len(args)
            if n == 0:
                value = fn()
            elif n == 1:
                value = fn(args[0])
            elif n == 2:
                value = fn(args[0], args[1])
            elif n == 3:
                value = fn(args[0], args[1], args[2])
            else:
                value = fn(*args)
            fn = args = None
        except BaseException as exc:  # noqa: BLE001 - the outcome is handed to the joiner
            self._finish(None, exc)
        else:
            self._finish(value, None)
        # A traceback's frames keep this one (their f_back) with its last locals: drop them,
        # or the fiber and its exception would be a cycle that only the collector frees.
        self = fn = args = value = None

    def _finish(self, value: Any, exc: BaseException | None) -> None:
        if self._name is None:
            self.name  # noqa: B018 - fix the name before the function is dropped
        self._fn = None
        self._args = ()
        self._value = value
        self._exc = exc
        self._op_state = None
        lock = _JOIN_LOCKS[self.id % _STRIPES]  # (join_lock(self), on every fiber's way out)
        lock.acquire()
        try:
            self.state = DONE
            joiners = self._joiners
            self._joiners = None
            callbacks = self._callbacks
            self._callbacks = None
        finally:
            lock.release()
        unretrieved = None
        if not joiners and exc is not None and not isinstance(exc, Cancelled):
            # (Made before the done callbacks run: one that takes the exception retrieves it.)
            unretrieved = self._unretrieved = _Unretrieved(self.name, exc)
        if callbacks:
            for fn in callbacks:
                try:
                    fn(self)
                except Exception:
                    log.exception("done callback of fiber %s failed", self.name)
        if joiners:
            for st, index in joiners:
                st.complete(index, None)
        sched = self.scheduler
        if sched is not None:
            sched._fiber_ended(self, exc, unretrieved)


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.runtime._c_fiber")

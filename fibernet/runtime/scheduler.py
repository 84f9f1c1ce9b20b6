"""The scheduler: one per OS thread, and THE loop.

A turn (as in the Design section of Guile Fibers' manual, https://github.com/wingo/fibers):

1. I/O: poll the descriptors, without waiting if anything is runnable, else until the next
   timer (or forever).  Fibers on other threads wake this one through its eventfd.
2. Timers: fire every timer that is due.
3. Run: start the stealable fibers still here, then run once each fiber that was runnable
   when the turn began -- and, within a budget of 64 more, those woken meanwhile.

A fiber that suspends gives the thread straight to the next fiber in the run queue (one
greenlet switch, not two through the loop), spending the same budget; a runner greenlet whose
fiber finished starts the next new fiber in place.  The queue stays FIFO, so the order is the
same as through the loop, and the budget bounds how long I/O and timers wait.

Fibers spawned with ``parallel=True`` wait in a separate "stealable" queue: they have not
started, so no greenlet binds them to this thread yet, and an idle scheduler of the same
runtime may take them (work stealing, which Guile Fibers 0.3 left unfinished).

The run queue is a ``collections.deque``: ``append`` and ``popleft`` are atomic under the GIL,
so it is also the thread-safe inbox for resumes from other threads.  The ``_sleeping`` flag
is set before the scheduler re-checks its queue and blocks in epoll, and a waker reads it
after appending, so a wake-up is never lost (see ``Fiber._wake``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

from fibernet.errors import Cancelled, NoScheduler
from fibernet.runtime._accel import in_python_frame
from fibernet.runtime.clock import REAL_CLOCK, Clock
from fibernet.runtime.fiber import NEW, RUNNABLE, RUNNING, Fiber, new_state_lock
from fibernet.runtime.poller import Poller
from fibernet.runtime.timers import TimerQueue
from fibernet.runtime.wakeup import WakeupFd

if TYPE_CHECKING:
    from fibernet.runtime.runtime import Runtime

log = logging.getLogger("fibernet.scheduler")
fiber_log = logging.getLogger("fibernet.fiber")  # fibers' unjoined exceptions
T = TypeVar("T")  # what a spawned function returns

_tls = threading.local()
_MAX_FREE_RUNNERS = 16
# Fibers a turn may run beyond those runnable when it began (woken during the turn and
# handed the thread directly): bounds how long I/O and timers wait behind a ping-pong.
_EXTRA_PER_TURN = 64
# How many scheduler loops run in this process, on any thread.  While there is one, nothing
# else of fibernet's waits for the GIL, and the compiled sockets keep it through a
# non-blocking system call instead of giving it up and taking it back (see _c_sockets.pxd).
_loops = 0
_loops_lock = threading.Lock()


def loops_running() -> int:
    """How many scheduler loops run in this process now."""
    return _loops


class _Runner(greenlet):
    """A runner greenlet, which knows its scheduler: the hot paths find the scheduler as
    ``getcurrent()._fibernet_scheduler`` (and ``_tls`` where that raises AttributeError: in
    the loop, in a plain thread, in a greenlet of the user's).  On a free-threaded CPython
    3.13 every thread that loads the one shared ``threading.local`` object writes its
    reference count, and the schedulers' lookups then bounce its cache line between them; a
    runner belongs to its own thread."""

    __slots__ = ("_fibernet_scheduler",)


def current_scheduler() -> Scheduler | None:
    """The scheduler running on this thread, or None."""
    return getattr(_tls, "scheduler", None)


def current_fiber() -> Fiber | None:
    """The fiber running now, or None outside any fiber."""
    sched = getattr(_tls, "scheduler", None)
    return sched.current if sched is not None else None


class Scheduler:
    """One OS thread's run queue, epoll set, timer heap and wake-up descriptor."""

    def __init__(self, name: str, runtime: Runtime | None = None, clock: Clock = REAL_CLOCK) -> None:
        self.name = name
        self.runtime = runtime
        self.clock = clock
        self.current: Fiber | None = None
        self.thread: threading.Thread | None = None
        self._ident = 0  # threading.get_ident() of the thread running it now (0: none)
        self._runq: deque[Fiber] = deque()
        self._stealable: deque[Fiber] = deque()
        self._timers = TimerQueue()
        self._poller = Poller()
        self._wakeup = WakeupFd()
        self._poller.add_internal(self._wakeup.fd, self._wakeup.drain)
        self._sleeping = False
        self._stopping = False
        self._hub: greenlet | None = None
        self._free_runners: list[greenlet] = []
        self._budget = 0  # fiber runs left in this turn (0 outside step 3 of a turn)
        self._state_lock = new_state_lock()  # its started fibers' (made again by _enter)
        # Where its choices start: a generator of its own (the random module's one is behind a
        # lock on a free-threaded CPython, which two schedulers' choices would bounce).
        self._random = random.Random().random
        self._fibers: set[Fiber] = set()  # started and not finished
        # Fibers that ended with an exception nobody has retrieved (weakly held), and those
        # of them whose last reference has gone since (queued by the weak reference callback).
        self._unjoined: dict[weakref.ref, Any] = {}
        self._dropped: deque[weakref.ref] = deque()
        self.turns = 0

    def __repr__(self) -> str:
        return f"<Scheduler {self.name} fibers={len(self._fibers)} runnable={len(self._runq)}>"

    # -- spawning and waking (thread-safe) ---------------------------------------------

    def spawn(self, fiber: Fiber) -> Fiber:
        """Queue a new fiber here; callable from any thread."""
        if fiber.parallel:
            fiber.scheduler = self
            self._stealable.append(fiber)
            if self._sleeping:
                self._wakeup.wake()
            elif self.runtime is not None:
                self.runtime._offer_work(self)
        else:
            fiber.scheduler = self
            self._runq.append(fiber)
            if self._sleeping:
                self._wakeup.wake()
        return fiber

    def wake(self) -> None:
        """Get this scheduler out of epoll (thread-safe)."""
        self._wakeup.wake()

    def _resume(self, fiber: Fiber) -> None:
        """Put a suspended ``fiber`` of this scheduler back on its run queue (thread-safe):
        ``Fiber._wake``, which ``OpState.complete`` calls here directly."""
        fiber.state = RUNNABLE
        self._runq.append(fiber)
        if self._sleeping:
            self._wakeup.wake()

    # -- what operations use (scheduler thread only) -------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def add_timer(self, deadline: float, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` at ``deadline``; returns a function that cancels it."""
        return partial(self._timers.cancel, self._timers.add(deadline, callback))

    def watch_fd(self, fd: int, events: int, callback: Callable[[int], object]) -> Callable[[], None]:
        self._poller.watch(fd, events, callback)
        return partial(self._poller.unwatch, fd, events, callback)

    def notify_closing(self, fd: int, owner: object = None) -> None:
        self._poller.notify_closing(fd, owner=owner)

    def suspend(self) -> None:
        """Suspend the current fiber (registered with whatever will wake it); returns when
        it is resumed."""
        self._park()

    def _park(self) -> None:
        """Give the thread away from the current fiber, which has arranged its wake-up.

        Within a turn's budget the next runnable fiber gets it directly (one greenlet switch,
        not two through the loop); otherwise the loop does.
        """
        runq = self._runq
        if self._budget > 0 and runq:
            self._budget -= 1
            fiber = runq.popleft()
            if fiber is self.current:  # it was woken meanwhile (or yielded)
                if not self._stealable:
                    fiber.state = RUNNING  # nobody else to run: go on
                    return
                runq.appendleft(fiber)  # let the loop start the stealable ones first
                self._budget = 0
                fiber = None
                self._hub.switch()
                return
            if fiber.state is NEW and not self._free_runners:
                # A greenlet starts at the recursion depth of whoever first switches to it:
                # new runners are made by the loop, or chains of them would add up.
                runq.appendleft(fiber)
                self._budget += 1
                fiber = None
                self._hub.switch()
                return
            if fiber.state is NEW:
                target = self._greenlet_for(fiber)
            else:  # what _greenlet_for does for a started fiber: this is every hand-off
                self.current = fiber
                fiber.state = RUNNING
                target = fiber._greenlet
            fiber = None  # a suspended frame must not keep another fiber alive
            target.switch()
        else:
            self._hub.switch()

    def _greenlet_for(self, fiber: Fiber) -> greenlet:
        """Make ``fiber`` the running one; the greenlet to switch to for it (a free or new
        runner if it has not started)."""
        if fiber.state is NEW:
            runners = self._free_runners
            if runners:
                runner = runners.pop()
            else:
                runner = _Runner(partial(in_python_frame, self._runner_main), self._hub)
                runner._fibernet_scheduler = self
            self._start(fiber, runner)
            return runner  # the runner takes its fiber from self.current
        self.current = fiber
        fiber.state = RUNNING
        return fiber._greenlet

    def _start(self, fiber: Fiber, runner: greenlet) -> None:
        """Make the new ``fiber`` the running one, on ``runner``.  Its state lock becomes this
        scheduler's (see ``fibernet.runtime.fiber``), under the stripe it had, which a cancel
        may hold."""
        stripe = fiber._state_lock
        stripe.acquire()
        fiber._state_lock = self._state_lock
        stripe.release()
        self.current = fiber
        fiber.scheduler = self
        fiber.state = RUNNING
        self._fibers.add(fiber)
        fiber._greenlet = runner
        runner.gr_context = fiber._context  # the fiber's own context (the runner's is stale)
        fiber._context = None

    # -- introspection --------------------------------------------------------------------

    def fibers(self) -> list[Fiber]:
        """The live fibers of this scheduler: started ones, then those not yet started.

        Safe from any thread, while this scheduler (and those waking its fibers) change the
        sets it copies: see ``_snapshot``."""
        started = _snapshot(self._fibers)
        queued = _snapshot(self._runq)
        return started + [f for f in queued if f.state is NEW] + _snapshot(self._stealable)

    def fiber_count(self) -> int:
        """How many fibers have started and not finished (cheap: no list is made)."""
        return len(self._fibers)

    def pending_timers(self) -> int:
        return len(self._timers)

    def watched_fds(self) -> int:
        return self._poller.watching

    # -- the loop ---------------------------------------------------------------------------

    def _awake(self) -> None:
        """epoll returned: resumes made from here on need no wake-up write."""
        self._sleeping = False

    def _enter(self) -> None:
        if getattr(_tls, "scheduler", None) is not None:
            raise RuntimeError("a fibernet scheduler is already running on this thread")
        _tls.scheduler = self
        self.thread = threading.current_thread()
        self._ident = threading.get_ident()
        self._hub = getcurrent()
        # Made on this thread, which owns it: on a free-threaded CPython it then counts its
        # references without atomic operations.  (Fibers started before keep the old one.)
        self._state_lock = new_state_lock()

    def _leave(self) -> None:
        _tls.scheduler = None
        self._ident = 0
        self._hub = None

    def run(self) -> None:
        """Run turns until stopped (on the calling thread)."""
        global _loops
        self._enter()
        with _loops_lock:
            _loops += 1
        try:
            while not self._stopping:
                self._turn(True)
        finally:
            with _loops_lock:
                _loops -= 1
            self._leave()

    def _turn(self, may_block: bool) -> None:
        runq = self._runq
        timers = self._timers
        self.turns += 1

        # -- 1. I/O: wait only if nothing is runnable -----------------------------------
        if runq or self._stealable or not may_block:
            if self._poller.watching:
                self._poller.poll(0)
        elif self.runtime is not None and self.runtime._steal_into(self):
            if self._poller.watching:
                self._poller.poll(0)
        else:
            self._sleeping = True
            # A wake-up, a spawn or a sibling's stealable fiber raced with going to sleep (a
            # spawner appends, then reads ``_sleeping``; we set it, then look again).
            if (
                runq
                or self._stealable
                or self._stopping
                or (self.runtime is not None and self.runtime._steal_into(self))
            ):
                self._sleeping = False
                if self._poller.watching:
                    self._poller.poll(0)
            else:
                deadline = timers.next_deadline()
                timeout = -1.0 if deadline is None else self.clock.sleep_time(deadline)
                self._poller.poll(timeout, self._awake)
                self._sleeping = False

        # -- 2. timers ------------------------------------------------------------------
        if len(timers._heap):
            timers.fire_due(self.clock.now())

        # -- 3. start the stealable fibers still here, then run each fiber that is runnable
        # now, once, and a bounded number of those woken meanwhile (fibers giving the thread
        # away spend the same budget) ------------------------------------------------------
        stealable = self._stealable
        m = len(stealable)
        while m:
            m -= 1
            try:
                fiber = stealable.popleft()
            except IndexError:  # another scheduler stole the rest
                break
            self._run_fiber(fiber)
            fiber = None
        if runq:
            self._budget = len(runq) + _EXTRA_PER_TURN
            while self._budget > 0 and runq:
                self._budget -= 1
                fiber = runq.popleft()
                target = self._greenlet_for(fiber)
                fiber = None  # (a suspended loop must not keep a fiber alive)
                target.switch()
                target = None
            self._budget = 0
            self.current = None
        if self._dropped:
            self._report_unjoined()

    def _run_fiber(self, fiber: Fiber) -> None:
        self._greenlet_for(fiber).switch()
        self.current = None

    def _runner_main(self) -> None:
        """The body of a runner greenlet: run fibers until the scheduler drops it.

        When its fiber finishes, a runner runs the next runnable fiber itself if that one
        is new (no switch at all), else parks in the free list and hands the thread to it
        (or to the loop).  A runner the full free list has no room for ends (its parent,
        the loop, goes on).

        Nothing passes through ``switch`` and no local outlives a fiber: arguments of a
        switch stay on the suspended greenlet's stack, so a runner handed itself (or its
        fiber) that way would keep it alive -- a greenlet referring to itself is never
        collected, and a finished fiber kept alive never logs the exception nobody joined.
        """
        hub = self._hub
        runq = self._runq
        runners = self._free_runners
        while True:
            fiber = self.current
            fiber._execute()
            fiber._greenlet = None
            fiber = None
            if self._budget > 0 and runq:
                self._budget -= 1
                fiber = runq.popleft()
                if fiber.state is NEW:
                    self._start(fiber, getcurrent())
                    fiber = None
                    continue
                if len(runners) >= _MAX_FREE_RUNNERS:
                    runq.appendleft(fiber)  # give it back: the loop runs it after this ends
                    self._budget += 1
                    return
                me = getcurrent()
                me.gr_context = None  # an idle runner keeps nothing of its last fiber alive
                runners.append(me)
                me = None
                target = self._greenlet_for(fiber)
                fiber = None
                target.switch()  # back here when the runner is reused: self.current is set
                target = None
                continue
            self.current = None
            if len(runners) >= _MAX_FREE_RUNNERS:
                return
            me = getcurrent()
            me.gr_context = None  # an idle runner keeps nothing of its last fiber alive
            runners.append(me)
            me = None
            hub.switch()

    def _fiber_ended(self, fiber: Fiber, exc: BaseException | None, unretrieved: Any) -> None:
        self._fibers.discard(fiber)
        if exc is not None and self.runtime is not None:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                fiber.exception()  # run() raises it: retrieved, not "never joined"
                self.runtime._fatal(exc)
        if unretrieved is not None and unretrieved.exc is not None:
            # Report it once nobody can join the fiber any more: when its last reference goes.
            self._unjoined[weakref.ref(fiber, self._unjoined_dropped)] = unretrieved

    def _unjoined_dropped(self, ref: weakref.ref) -> None:
        """A weak reference's callback (any thread, perhaps inside the garbage collector):
        only queue the report for the loop, and wake it."""
        self._dropped.append(ref)
        if self._sleeping:
            self._wakeup.wake()

    def _report_unjoined(self, runtime_ended: bool = False) -> None:
        """Log the exceptions of fibers that ended unjoined and that nobody can join now
        (and, when the runtime ends, of those still held: no turn will come after)."""
        unjoined = self._unjoined
        dropped = self._dropped
        while dropped:
            record = unjoined.pop(dropped.popleft(), None)
            if record is not None and record.exc is not None:
                fiber_log.error("fiber %s raised and was never joined", record.name, exc_info=record.exc)
        if runtime_ended:
            records = list(unjoined.values())
            unjoined.clear()  # (its weak references die with it: no callback comes later)
            for record in records:
                if record.exc is not None:
                    fiber_log.error(
                        "fiber %s raised and was never joined (still held when its runtime ended)",
                        record.name,
                        exc_info=record.exc,
                    )

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self, grace: float) -> None:
        """Cancel what is left, give it ``grace`` seconds to finish, then close everything.

        Runs on the scheduler's own thread (greenlets must die where they were born).
        """
        _tls.scheduler = self
        self._ident = threading.get_ident()
        self._hub = getcurrent()
        try:
            for fiber in self.fibers():
                fiber.cancel()
            deadline = REAL_CLOCK.now() + grace
            while self._fibers or self._runq or self._stealable:
                self._turn(False)
                if self._fibers and not self._runq:
                    if REAL_CLOCK.now() >= deadline:
                        break
                    # Let the cancelled fibers' operations complete (timers, descriptors).
                    self._poller.poll(0.001)
            for fiber in list(self._fibers):
                log.warning("fiber %s ignored cancellation; killing it", fiber.name)
                st = fiber._op_state
                if st is not None:  # what it waits on may complete no more (a put into a dead fiber)
                    with st.lock:
                        if not st.done:
                            st.index = -1
                            st.value = None
                            st.done = True
                g = fiber._greenlet
                if g is not None and not g.dead:
                    # GreenletExit comes out of its wait, which releases what it registered.
                    self.current = fiber
                    try:
                        g.throw(GreenletExit)
                    finally:
                        self.current = None
                if fiber.done():
                    fiber.exception()  # the warning above said it: not "never joined" too
                self._fibers.discard(fiber)
            self._free_runners.clear()
            self.current = None
            self._report_unjoined(runtime_ended=True)
        finally:
            self._timers.clear()
            self._poller.close()
            self._wakeup.close()
            self._leave()


def _snapshot(container: Any) -> list:
    """A list copy of a set or deque that other threads may be changing meanwhile.

    ``copy()`` is one C call (atomic under the GIL) that on a free-threaded CPython holds the
    container's own lock (a deque's since CPython gh-144809); where it still iterates, a concurrent change
    makes it raise RuntimeError ("mutated during iteration") and we copy again.  Nothing on
    the paths that change these containers pays for it.
    """
    for _ in range(1000):
        try:
            return list(container.copy())
        except RuntimeError:
            continue
    raise RuntimeError("could not copy a container that other threads keep changing")


# -- the fiber-level calls of the public API -------------------------------------------------


def spawn(
    fn: Callable[..., T],
    *args: Any,
    name: str | None = None,
    parallel: bool = False,
    scheduler: Scheduler | None = None,
) -> Fiber[T]:
    """Start ``fn(*args)`` in a new fiber and return it (a future: ``join`` it for the value).

    The fiber runs on the current scheduler, or on ``scheduler`` (from any thread).  With
    ``parallel=True`` any scheduler of the runtime may run it (idle ones steal it).

    The fiber runs in its own ``contextvars`` context, a copy of the caller's taken now (as
    asyncio's ``create_task`` and trio's ``start_soon`` do): it sees the context variables
    set before the spawn, and what either side sets afterwards the other never sees.
    """
    if not callable(fn):
        raise TypeError(f"spawn() needs a callable, not {type(fn).__name__}")
    sched = scheduler if scheduler is not None else getattr(_tls, "scheduler", None)
    if sched is None:
        raise NoScheduler("spawn() outside a fibernet runtime: start one with fibernet.run()")
    if sched._stopping:
        raise NoScheduler(f"scheduler {sched.name} is stopping")
    return sched.spawn(Fiber(fn, args, name, parallel))


def yield_now() -> None:
    """Let every other runnable fiber of this scheduler run once, then continue."""
    sched = getattr(_tls, "scheduler", None)
    fiber = sched.current if sched is not None else None
    if fiber is None:
        time.sleep(0)
        return
    if fiber._cancel_pending:
        fiber._cancel_pending = False
        raise Cancelled()
    sched._resume(fiber)
    sched._park()
    fiber.state = RUNNING


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.runtime._c_scheduler")

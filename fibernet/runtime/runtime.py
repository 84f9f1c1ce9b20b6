"""The runtime: a group of schedulers, one per OS thread, and ``run``.

``run(main, threads=N)`` makes N schedulers; the first runs on the calling thread and the
others on threads of their own.  ``main`` runs in a fiber on the first.  When it finishes the
runtime stops: every fiber still alive is cancelled and given a short grace to unwind, the
threads end, and every descriptor the runtime opened is closed.  Then ``run`` returns main's
value or raises main's exception -- it never waits on fibers main left behind (Guile Fibers
issue #37 hangs there).

Work stealing: a fiber spawned with ``parallel=True`` has not started, so any scheduler of the
runtime may run it.  A scheduler about to sleep first takes one from a busier sibling, and
spawning a parallel fiber wakes a sleeping sibling so it can do that.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from fibernet.runtime.clock import REAL_CLOCK, Clock
from fibernet.runtime.fiber import Fiber
from fibernet.runtime.scheduler import Scheduler, current_scheduler

_runtime_ids = itertools.count(1)
_live_lock = threading.Lock()
_live: list[Runtime] = []

SHUTDOWN_GRACE = 1.0


class Runtime:
    """A group of schedulers.  Use :func:`run`; this class is for embedding and tests."""

    def __init__(self, threads: int = 1, clock: Clock = REAL_CLOCK, name: str | None = None) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, not {threads!r}")
        self.name = name or f"rt{next(_runtime_ids)}"
        self.clock = clock
        self.schedulers = [Scheduler(f"{self.name}/sched-{i}", self, clock) for i in range(threads)]
        self._threads: list[threading.Thread] = []
        self._fatal_exc: BaseException | None = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"<Runtime {self.name} threads={len(self.schedulers)}>"

    # -- running ------------------------------------------------------------------------

    def run(self, main: Callable[..., Any], *args: Any) -> Any:
        if current_scheduler() is not None:
            self._discard()
            raise RuntimeError("fibernet.run() called inside a running fibernet scheduler")
        if self._stopped:
            raise RuntimeError("a Runtime runs once")
        first = self.schedulers[0]
        main_fiber = Fiber(self._main, (main, args), name="main")
        main_fiber.add_done_callback(Fiber.exception)  # run() raises it: it is retrieved
        first.spawn(main_fiber)
        with _live_lock:
            _live.append(self)
        try:
            for sched in self.schedulers[1:]:
                t = threading.Thread(target=self._thread_main, args=(sched,), name=sched.name, daemon=True)
                self._threads.append(t)
                t.start()
            try:
                first.run()
            finally:
                self.stop()
                first._shutdown(SHUTDOWN_GRACE)
                for t in self._threads:
                    t.join()
        finally:
            with _live_lock:
                _live.remove(self)
        if self._fatal_exc is not None:
            raise self._fatal_exc
        return main_fiber.result()

    def _discard(self) -> None:
        """Close the descriptors of schedulers that never ran (each holds an epoll and an eventfd)."""
        self._stopped = True
        for sched in self.schedulers:
            sched._poller.close()
            sched._wakeup.close()

    def _main(self, main: Callable[..., Any], args: tuple) -> Any:
        try:
            return main(*args)
        finally:
            self.stop()

    def _thread_main(self, sched: Scheduler) -> None:
        try:
            sched.run()
        except BaseException as exc:  # noqa: BLE001 - carried to run()'s caller
            self._fatal(exc)
        finally:
            sched._shutdown(SHUTDOWN_GRACE)

    def stop(self) -> None:
        """Ask every scheduler to end its loop (thread-safe)."""
        self._stopped = True
        for sched in self.schedulers:
            sched._stopping = True
            sched._budget = 0  # no more direct hand-offs: the loop sees the stop at once
            sched.wake()

    def _fatal(self, exc: BaseException) -> None:
        if self._fatal_exc is None:
            self._fatal_exc = exc
        self.stop()

    # -- work stealing -----------------------------------------------------------------

    def _offer_work(self, origin: Scheduler) -> None:
        # Wake one sleeper that is not being woken already: a burst of parallel spawns wakes
        # one sibling per fiber (up to all of them), not the same sibling again and again.
        for sched in self.schedulers:
            if sched is not origin and sched._sleeping and not sched._wakeup._armed:
                sched.wake()
                return

    def _steal_into(self, thief: Scheduler) -> bool:
        for victim in self.schedulers:
            if victim is thief or not victim._stealable:
                continue
            try:
                fiber = victim._stealable.popleft()
            except IndexError:
                continue
            fiber.scheduler = thief
            thief._runq.append(fiber)
            if victim._stealable:  # more left: pass the word on to another sleeper
                self._offer_work(victim)
            return True
        return False


def run(main: Callable[..., Any], *args: Any, threads: int = 1, clock: Clock = REAL_CLOCK) -> Any:
    """Run ``main(*args)`` in a fiber on a fresh runtime of ``threads`` schedulers.

    Returns main's value or raises main's exception.  Fibers still alive when main returns
    are cancelled.
    """
    return Runtime(threads, clock).run(main, *args)


def runtimes() -> list[Runtime]:
    with _live_lock:
        return list(_live)


def schedulers() -> list[Scheduler]:
    """Every scheduler of every running runtime in this process."""
    return [s for rt in runtimes() for s in rt.schedulers]


def scheduler_by_name(name: str) -> Scheduler | None:
    return next((s for s in schedulers() if s.name == name), None)


def fibers() -> list[Fiber]:
    """Every live fiber of every running runtime, with its state and what it waits on."""
    return [f for s in schedulers() for f in s.fibers()]


def fiber_by_name(name: str) -> Fiber | None:
    return next((f for f in fibers() if f.name == name), None)

"""The scheduler monitor: one thread per process that sees a scheduler stuck in one turn.

A fiber that calls something blocking (``time.sleep``, a C library's read) holds its
scheduler's thread, and every other fiber of that scheduler waits.  The monitor notices and
says so, as gevent's monitor thread does, at no cost to the hot path: a scheduler already
counts its turns (``Scheduler.turns``), and the monitor only reads that counter every quarter
of the threshold.  A scheduler whose count has not moved for longer than ``block_warning``
seconds, and that is not asleep in epoll (``_sleeping``), is blocked: the monitor logs the
fiber that holds it, how long, and that thread's stack (``sys._current_frames``), counts it,
and keeps it in :meth:`Monitor.blocked` for the admin endpoint (which does not run on the
blocked scheduler) until the turn ends, when it logs how long the block lasted in all.

With ``worker_timeout`` (a worker of ``--workers N``), a process whose schedulers are all
blocked for longer than that logs every stack and kills itself with SIGKILL, as gunicorn's
arbiter kills a worker that missed its timeout; the supervisor replaces it.  ``on_change`` is
called (on the monitor's thread) when a block is first seen, once a second while it lasts,
and when it ends: a worker sends its supervisor a fresh snapshot then, since the fiber that
sends them a second may be the one blocked.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from fibernet.runtime import runtime as _runtime

log = logging.getLogger("fibernet.monitor")

MIN_INTERVAL = 0.005  # the monitor never polls more often than this
STACK_LINES = 40  # the deepest lines of a blocked thread's stack kept for the log and inspect
CHANGE_EVERY = 1.0  # while blocked, on_change is called this often

_current: Monitor | None = None


def current() -> Monitor | None:
    """The monitor of this process, if one runs."""
    return _current


def thread_stack(sched: Any) -> list[str]:
    """The current stack of ``sched``'s thread, innermost last, as formatted lines."""
    thread = sched.thread
    frame = sys._current_frames().get(thread.ident) if thread is not None else None
    if frame is None:
        return []
    lines = "".join(traceback.format_stack(frame)).rstrip("\n").split("\n")
    return lines[-STACK_LINES:]


class _Watch:
    __slots__ = ("turns", "since", "reported", "fiber", "stack")

    def __init__(self, turns: int, now: float) -> None:
        self.turns = turns
        self.since = now  # when this turn count was first seen: the block's start, to a poll
        self.reported = False
        self.fiber = ""
        self.stack: list[str] = []


class Monitor:
    """Watches every scheduler of the process from a thread of its own (see the module doc)."""

    def __init__(
        self,
        block_warning: float = 0.1,
        worker_timeout: float | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if block_warning <= 0 and not worker_timeout:
            raise ValueError("a monitor needs a block warning or a worker timeout")
        self.block_warning = block_warning if block_warning > 0 else float("inf")
        self.worker_timeout = worker_timeout
        self.on_change = on_change
        shortest = min(self.block_warning, worker_timeout or float("inf"))
        self.interval = max(MIN_INTERVAL, shortest / 4)
        self.blocks = 0  # blocks seen since the start (the /metrics counter)
        self._watches: dict[Any, _Watch] = {}
        self._blocked: list[dict[str, Any]] = []
        self._last_change = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------

    def start(self) -> Monitor:
        global _current
        self._thread = threading.Thread(target=self._run, name="fibernet-monitor", daemon=True)
        self._thread.start()
        _current = self
        return self

    def stop(self) -> None:
        global _current
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if _current is self:
            _current = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check(time.monotonic())
            except Exception:  # noqa: BLE001 - the monitor must outlive a bad look
                log.exception("the scheduler monitor failed to look")

    # -- looking ------------------------------------------------------------------------

    def blocked(self) -> list[dict[str, Any]]:
        """The schedulers blocked now: scheduler, fiber, seconds, stack (thread-safe)."""
        return list(self._blocked)

    def check(self, now: float) -> None:
        """One look at every scheduler (the monitor thread calls it every ``interval``)."""
        scheds = _runtime.schedulers()
        watches = self._watches
        blocked = []
        changed = False
        for sched in scheds:
            if sched.thread is None:
                continue  # not started yet
            turns = sched.turns
            w = watches.get(sched)
            if w is None or w.turns != turns or sched._sleeping:
                changed |= self._ended(sched, w, now)
                watches[sched] = _Watch(turns, now)
                continue
            held = now - w.since
            if held <= self.block_warning and not (self.worker_timeout and held > self.worker_timeout):
                continue
            if not w.reported:
                w.reported = True
                fiber = sched.current
                w.fiber = fiber.name if fiber is not None else "(the scheduler itself)"
                w.stack = thread_stack(sched)
                self.blocks += 1
                changed = True
                log.warning(
                    "scheduler %s blocked for %.3fs by fiber %s (nothing else runs on it); its stack:\n%s",
                    sched.name,
                    held,
                    w.fiber,
                    "\n".join(w.stack),
                )
            seconds = round(held, 3)
            blocked.append({"scheduler": sched.name, "fiber": w.fiber, "seconds": seconds, "stack": w.stack})
        for gone in [s for s in watches if s not in scheds]:
            changed |= self._ended(gone, watches.pop(gone), now)
        self._blocked = blocked
        if self.worker_timeout and scheds and len(blocked) == len(scheds):
            if min(b["seconds"] for b in blocked) > self.worker_timeout:
                self._timed_out(blocked)
        if self.on_change is not None and (changed or (blocked and now - self._last_change >= CHANGE_EVERY)):
            self._last_change = now
            self.on_change()

    def _ended(self, sched: Any, w: _Watch | None, now: float) -> bool:
        """Say how long a block that was reported lasted; True if there was one."""
        if w is None or not w.reported:
            return False
        log.warning("scheduler %s was blocked for %.3fs by fiber %s", sched.name, now - w.since, w.fiber)
        return True

    def _timed_out(self, blocked: list[dict[str, Any]]) -> None:
        for b in blocked:
            stack = "\n".join(thread_stack_by_name(b["scheduler"]) or b["stack"])
            log.critical(
                "worker timeout: scheduler %s blocked for %.3fs by fiber %s; its stack:\n%s",
                b["scheduler"],
                b["seconds"],
                b["fiber"],
                stack,
            )
        log.critical(
            "worker %d: all schedulers blocked past --worker-timeout %gs; killing it (to be replaced)",
            os.getpid(),
            self.worker_timeout,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def thread_stack_by_name(name: str) -> list[str]:
    """The stack of the scheduler called ``name`` now (empty if it is gone)."""
    sched = next((s for s in _runtime.schedulers() if s.name == name), None)
    return thread_stack(sched) if sched is not None else []

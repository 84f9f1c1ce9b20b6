"""Performing an operation on a plain thread that runs no scheduler: the thread blocks.

A :class:`ThreadOwner` is both the owner (``_wake``) and the context (``now``, ``add_timer``,
``watch_fd``) of one ``perform``'s state.  It blocks on a lock that ``_wake`` releases, with a
timeout for the nearest timer.  If the operation waits on descriptors too, it blocks in
``poll()`` on them and on an eventfd that ``_wake`` writes before it releases the lock, so a
completion from another thread (a channel put) ends the poll.  A ``_wake`` that comes before
the eventfd exists only releases the lock, and ``wait`` tries the lock before each poll.
"""

from __future__ import annotations

import errno
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

_EPOLLIN = select.EPOLLIN
_NOT_OPEN = select.POLLNVAL
_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL


class ThreadOwner:
    __slots__ = ("_lock", "_state_lock", "_timers", "_fds", "_efd")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # released by _wake
        self._lock.acquire()
        self._state_lock = threading.Lock()  # the OpState's (see fibernet.ops.operation)
        self._timers: list[list] = []
        self._fds: list[list] = []  # [fd, events, callback(err)]
        self._efd = -1

    now = staticmethod(time.monotonic)

    def _wake(self) -> None:
        # Write before releasing: once the waiter holds the lock, nobody touches the eventfd.
        efd = self._efd
        if efd >= 0:
            os.eventfd_write(efd, 1)
        self._lock.release()

    def add_timer(self, deadline: float, callback: Callable[[], object]) -> Callable[[], None]:
        entry = [deadline, callback]
        self._timers.append(entry)
        return lambda: self._timers.remove(entry) if entry in self._timers else None

    def watch_fd(self, fd: int, events: int, callback: Callable[[int], object]) -> Callable[[], None]:
        entry = [fd, events, callback]
        self._fds.append(entry)
        return lambda: self._fds.remove(entry) if entry in self._fds else None

    def wait(self, state: Any) -> None:
        """Block until the state is completed and its wake-up is taken (timers and
        descriptors are served on this thread meanwhile)."""
        if self._fds:  # (made here, not in watch_fd: a choice may complete without waiting)
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            while True:
                timers = self._timers
                timeout = None
                if timers:
                    timeout = max(0.0, min(e[0] for e in timers) - time.monotonic())
                if self._fds:
                    if self._lock.acquire(False):
                        return
                    if self._poll(timeout):  # _wake is on its way: it releases next
                        self._lock.acquire()
                        return
                elif self._lock.acquire(timeout=-1 if timeout is None else timeout):
                    return
                now = time.monotonic()
                for entry in [e for e in timers if e[0] <= now]:
                    timers.remove(entry)
                    entry[1]()
        except BaseException:
            # Interrupted (KeyboardInterrupt): nobody may complete the state now, and a
            # completion under way must finish with the eventfd before it is closed.
            with state.lock:
                woken = state.woken
                state.done = True
            if woken:
                self._lock.acquire()
            raise
        finally:
            if self._efd >= 0:
                os.close(self._efd)
                self._efd = -1

    def _poll(self, timeout: float | None) -> bool:
        """One poll() on the watched descriptors and the eventfd; calls the callbacks of the
        ready ones; True if the eventfd was written (a completion is under way)."""
        masks: dict[int, int] = {}
        for fd, events, _cb in self._fds:
            masks[fd] = masks.get(fd, 0) | (select.POLLIN if events == _EPOLLIN else select.POLLOUT)
        p = select.poll()
        for fd, mask in masks.items():
            p.register(fd, mask)
        p.register(self._efd, select.POLLIN)
        ready = p.poll(None if timeout is None else math.ceil(timeout * 1000))
        woken = False
        for fd, revents in ready:
            if fd == self._efd:
                woken = True
                continue
            for entry in [e for e in self._fds if e[0] == fd]:
                if revents & (_READABLE if entry[1] == _EPOLLIN else _WRITABLE):
                    self._fds.remove(entry)
                    entry[2](errno.EBADF if revents & _NOT_OPEN else 0)
        return woken

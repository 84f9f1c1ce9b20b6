"""The wake-up descriptor: how another thread gets a sleeping scheduler out of epoll.

An eventfd (Linux), as Guile Fibers' schedulers use.  ``wake`` is cheap to call often: only the
first call after a drain writes.
"""

from __future__ import annotations

import os


class WakeupFd:
    __slots__ = ("fd", "_armed")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._armed = False

    def wake(self) -> None:
        if self._armed:
            return
        self._armed = True
        try:
            os.eventfd_write(self.fd, 1)
        except (BlockingIOError, OSError):
            pass  # counter full (cannot happen with one write per drain) or closing

    def drain(self) -> None:
        # Read first, then disarm: a wake() that saw the flag still set was made before the
        # disarm, so its run-queue append is seen by the turn that follows this drain.
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        self._armed = False

    def close(self) -> None:
        self._armed = True  # later wake() calls become no-ops
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

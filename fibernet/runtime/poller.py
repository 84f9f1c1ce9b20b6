"""The poller of one scheduler: the only user of ``select.epoll`` in fibernet.

Every wait is registered with EPOLLONESHOT, as trio's epoll backend does: a descriptor that
fires is disarmed by the kernel until someone waits on it again, so a registration nobody
wants any more can fire at most once and never spins a loop at 100 % CPU.  The kernel keys
its interest list by (descriptor number, open file); when a socket is closed while another
descriptor still refers to its file, the entry survives under the old number.  So:

- ``notify_closing(fd)`` must be called before a watched descriptor is closed (fibernet's
  sockets do it).  Its waiters are woken with an error and the registration is removed.
- Re-arming tolerates the kernel having forgotten the descriptor (ENOENT: closed and its
  number reused) and having kept it (EEXIST).

Descriptors that fibernet owns (its sockets, which always call ``notify_closing`` before
they close) are registered once, edge-triggered, with ``register_edge``: a wait on them is
then a list append and costs no system call, as Go's netpoller does.  A wakeup with nothing
to read is harmless (the reader tries again and waits again), and an edge that comes while
nobody waits is not needed (a reader always tries the descriptor before it waits).

Only its scheduler's thread calls it; it takes no lock.
"""

from __future__ import annotations

import errno
import select
from collections.abc import Callable

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
_READ_EVENTS = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP
_WRITE_EVENTS = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
_ONESHOT = select.EPOLLONESHOT
_EDGE_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_END_EVENTS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_IN = EPOLLIN  # (C ints in the compiled copy, as the ones above: see _c_poller.pxd)
_OUT = EPOLLOUT

Callback = Callable[[int], object]  # called with 0 when ready, or an errno when closed


class _Watch:
    __slots__ = ("readers", "writers", "armed", "edge", "owner", "pending")

    def __init__(self, edge: bool = False, owner: object = None) -> None:
        self.readers: list[Callback] = []
        self.writers: list[Callback] = []
        self.armed = 0  # the event mask the kernel holds for us now (0: disarmed)
        self.edge = edge  # registered once, edge-triggered, until notify_closing
        self.owner = owner  # the object that registered it edge-triggered (a socket)
        self.pending = 0  # edge-triggered: events that came while nobody waited for them

    def wanted(self) -> int:
        return (EPOLLIN if self.readers else 0) | (EPOLLOUT if self.writers else 0)


class Poller:
    __slots__ = ("_epoll", "_watches", "_internal", "_known")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watches: dict[int, _Watch] = {}
        self._internal: dict[int, Callable[[], object]] = {}
        self._known: set[int] = set()  # descriptors the kernel's interest list holds for us

    # -- registration ------------------------------------------------------------------

    def add_internal(self, fd: int, on_readable: Callable[[], object]) -> None:
        """Watch ``fd`` for the scheduler itself (its wake-up descriptor), level-triggered."""
        self._epoll.register(fd, select.EPOLLIN)
        self._internal[fd] = on_readable

    def register_edge(self, fd: int, owner: object) -> None:
        """Register a descriptor fibernet owns, edge-triggered, for its whole life.

        ``owner`` tells a live registration from a stale one left by an earlier owner of the
        same descriptor number that was closed from another thread.
        """
        old = self._watches.get(fd)
        if old is not None and old.edge and old.owner is owner:
            return
        self._watches[fd] = w = _Watch(True, owner)
        if old is not None:  # a one-shot watch of the same number: keep its waiters
            w.readers, w.writers = old.readers, old.writers
        self._set_mask(fd, _EDGE_MASK)

    def watch(self, fd: int, events: int, callback: Callback) -> None:
        """Call ``callback(0)`` once when ``fd`` is ready for ``events`` (EPOLLIN or EPOLLOUT)."""
        w = self._watches.get(fd)
        if w is None:
            w = self._watches[fd] = _Watch()
        (w.readers if events == EPOLLIN else w.writers).append(callback)
        if not w.edge:
            self._arm(fd, w)

    def take_pending(self, fd: int, events: int) -> bool:
        """Did an edge for ``events`` come while nobody waited?  (Then the descriptor may be
        ready now and a waiter must try it before it waits: the edge will not come again.)"""
        w = self._watches.get(fd)
        if w is None or not w.pending & events:
            return False
        w.pending &= ~events
        return True

    def stored_edge(self, fd: int, events: int) -> bool:
        """For the try phase of a readiness operation: did an edge for ``events`` come while
        nobody waited, and is the descriptor still ready?  A stale edge (its data was read
        since) is forgotten; a live one is left for the socket's own next wait."""
        w = self._watches.get(fd)
        if w is None or not w.pending & events:
            return False
        p = select.poll()
        p.register(fd, select.POLLIN if events == EPOLLIN else select.POLLOUT)
        if p.poll(0):
            return True
        w.pending &= ~events
        return False

    def unwatch(self, fd: int, events: int, callback: Callback) -> None:
        """Forget a callback that lost a choice or whose fiber was cancelled."""
        w = self._watches.get(fd)
        if w is None:
            return
        waiters = w.readers if events == EPOLLIN else w.writers
        try:
            waiters.remove(callback)
        except ValueError:
            return
        # The kernel registration stays armed (EPOLLONESHOT): it fires at most once more and
        # is then disarmed; re-arming it now would cost a system call for nothing.  But forget
        # a one-shot watch nobody waits on: the descriptor may now be closed without
        # notify_closing and its number reused, and a stale ``armed`` mask would make the next
        # watch() skip registering the new file (its waiter would never wake).
        if not w.edge and not w.readers and not w.writers:
            del self._watches[fd]

    def notify_closing(self, fd: int, err: int = errno.EBADF, owner: object = None) -> None:
        """``fd`` is about to be closed: wake its waiters with ``err`` and drop it.

        With ``owner``, act only if that object still owns the registration.
        """
        if owner is not None:
            w = self._watches.get(fd)
            if w is None or w.owner is not owner:
                return
        w = self._watches.pop(fd, None)
        if fd in self._known:
            self._known.discard(fd)
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
        if w is None:
            return
        for callback in w.readers + w.writers:
            callback(err)

    def _arm(self, fd: int, w: _Watch) -> None:
        wanted = w.wanted()
        if wanted & ~w.armed == 0:
            return
        self._set_mask(fd, wanted | _ONESHOT)
        w.armed = wanted

    def _set_mask(self, fd: int, mask: int) -> None:
        """Ask epoll for ``mask`` on ``fd``: modify a descriptor it knows, register a new one."""
        if fd in self._known:
            try:
                self._epoll.modify(fd, mask)
            except FileNotFoundError:
                # Closed without notify_closing() and the number reused for another file.
                self._epoll.register(fd, mask)
        else:
            try:
                self._epoll.register(fd, mask)
            except FileExistsError:
                self._epoll.modify(fd, mask)
            self._known.add(fd)

    # -- waiting -----------------------------------------------------------------------

    @property
    def watching(self) -> int:
        """How many descriptors have waiters (the wake-up descriptor not counted)."""
        return len(self._watches)

    def poll(self, timeout: float, awake: Callable[[], object] | None = None) -> None:
        """Wait up to ``timeout`` seconds (-1: forever) and run the callbacks of ready fds
        (after ``awake()``, which tells the scheduler it is no longer asleep)."""
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            return
        if awake is not None:
            awake()
        watches = self._watches
        for fd, ev in events:
            w = watches.get(fd)
            if w is None:
                internal = self._internal.get(fd)
                if internal is not None:
                    internal()
                continue
            if ev & _READ_EVENTS:
                if w.readers:
                    ready, w.readers = w.readers, []
                    for callback in ready:
                        callback(0)
                elif w.edge:
                    w.pending |= _IN
                if w.edge and ev & _END_EVENTS:
                    # End of stream (or an error) is readable for ever but signalled once: a
                    # reader that takes the last data in a short read must still find it.
                    w.pending |= _IN
            if ev & _WRITE_EVENTS:
                if w.writers:
                    ready, w.writers = w.writers, []
                    for callback in ready:
                        callback(0)
                elif w.edge:
                    w.pending |= _OUT
            if w.edge:
                continue
            w.armed = 0  # EPOLLONESHOT: the kernel disarmed it
            if w.readers or w.writers:
                self._arm(fd, w)
            else:
                # Keep the disarmed kernel entry: the next watch() re-arms it with modify().
                del watches[fd]

    def close(self) -> None:
        for fd in list(self._watches):
            self.notify_closing(fd)
        self._known.clear()
        self._epoll.close()


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.runtime._c_poller")

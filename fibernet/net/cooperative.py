"""The standard library's socket, ssl and select, made to suspend a fiber instead of its thread.

``patch_all`` (``fibernet/patch.py``) puts these in place of ``socket.socket``, ``ssl``'s socket
class, ``select.select``/``poll``, the ``selectors`` classes and the name resolvers.  Each
one decides per call: in a fiber it waits through the scheduler's poller (the readiness
operations of ``readiness.py``) or the thread pool; in a plain thread it blocks as before.

:class:`CooperativeSocket` keeps the descriptor non-blocking for its whole life and keeps
the timeout the user set (``settimeout``, ``setblocking``) itself, as gevent's socket does:
every blocking call tries the system call and waits for readiness on EAGAIN, with the user's
timeout over the whole call (``TimeoutError("timed out")``, as the standard library).  A
socket the user made non-blocking is left to the standard library's code entirely.

:func:`cooperative_ssl_socket` makes an ``ssl.SSLSocket`` subclass over it: OpenSSL reports
"want read" / "want write" on a non-blocking descriptor, and the fiber waits for that.

What is not made cooperative: ``select.epoll`` objects (a C type that cannot be subclassed;
``selectors.EpollSelector`` is), the exceptional-condition list of ``select`` (not waited
on in a fiber, only reported), and ``os.read``/``os.write`` on pipes and files.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket as _socket
import ssl
from collections.abc import Callable
from functools import partial, wraps
from time import monotonic
from typing import Any, TypeVar

from fibernet.net.readiness import fileno_of, readable_op, writable_op
from fibernet.net.sockets import _is_ip_literal
from fibernet.net.threadpool import run_in_thread
from fibernet.ops.operation import choice, never, perform, wrap
from fibernet.ops.timers import wait_op
from fibernet.runtime.poller import EPOLLIN, EPOLLOUT
from fibernet.runtime.scheduler import _tls

R = TypeVar("R")

# The originals, taken when fibernet is imported (before anything can be patched).
StdSocket = _socket.socket
_CSocket = StdSocket.__base__  # _socket.socket, the C type
StdSSLSocket = ssl.SSLSocket
std_select = select.select
std_poll = select.poll
_TIMED_OUT = object()
_INPROGRESS = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)


def in_fiber() -> bool:
    sched = getattr(_tls, "scheduler", None)
    return sched is not None and sched.current is not None


def _timed_out() -> object:
    return _TIMED_OUT


def wait_fds(fds: list[tuple[int, int]], timeout: float | None) -> bool:
    """Suspend the calling fiber until one of ``fds`` ((descriptor, EPOLLIN or EPOLLOUT)
    pairs) is ready, or an error or hang-up is; False if ``timeout`` seconds passed first."""
    ops = [readable_op(fd) if events == EPOLLIN else writable_op(fd) for fd, events in fds]
    ops.append(never() if timeout is None else wrap(wait_op(max(0.0, timeout)), _timed_out))
    return perform(choice(*ops)) is not _TIMED_OUT


def _wait_one(fd: int, events: int, deadline: float | None) -> None:
    """Wait until ``fd`` is ready for ``events``, in a fiber or a plain thread; raise
    ``TimeoutError`` when ``deadline`` (monotonic) passes."""
    if fd < 0:
        raise OSError(errno.EBADF, "Bad file descriptor")
    left = None if deadline is None else deadline - monotonic()
    if left is not None and left <= 0:
        raise TimeoutError("timed out")
    if in_fiber():
        ready = wait_fds([(fd, events)], left)
    else:
        p = std_poll()
        p.register(fd, select.POLLIN if events == EPOLLIN else select.POLLOUT)
        ready = bool(p.poll(None if left is None else left * 1000))
    if not ready:
        raise TimeoutError("timed out")


def poll_until(try_now: Callable[[], R], fds: Callable[[], list], timeout: float | None) -> R:
    """What a patched select/poll does in a fiber: ``try_now()`` without waiting; while it
    finds nothing, wait for any of ``fds()`` at most until ``timeout`` seconds have passed."""
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        ready = try_now()
        if ready:
            return ready
        left = None if deadline is None else deadline - monotonic()
        if left is not None and left <= 0:
            return ready
        wait_fds(fds(), left)


# -- sockets ------------------------------------------------------------------------------


def _io(events: int, call: Callable[..., Any]) -> Callable[..., Any]:
    """A socket method that retries ``call`` after waiting for ``events`` on EAGAIN."""

    @wraps(call)
    def method(self: CooperativeSocket, *args: Any, **kwargs: Any) -> Any:
        timeout = self._timeout
        if timeout == 0.0:
            return call(self, *args, **kwargs)
        deadline = None
        while True:
            try:
                return call(self, *args, **kwargs)
            except BlockingIOError:
                pass
            if deadline is None and timeout is not None:
                deadline = monotonic() + timeout
            _wait_one(self.fileno(), events, deadline)

    return method


def _check_timeout(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError("Timeout value must be int, float or None")
    if value < 0 or value != value:
        raise ValueError("Timeout value out of range")
    return float(value)


class CooperativeSocket(StdSocket):
    """``socket.socket`` whose blocking calls suspend only the calling fiber."""

    __slots__ = ("_timeout",)

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
        super().__init__(family, type, proto, fileno)
        self._timeout = StdSocket.gettimeout(self)  # the default timeout, as the stdlib's
        StdSocket.settimeout(self, 0.0)

    # -- the user's timeout (the descriptor itself stays non-blocking) ---------------------

    def settimeout(self, value: float | None) -> None:
        self._timeout = _check_timeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        return self._timeout

    # -- calls that wait -------------------------------------------------------------------

    recv = _io(EPOLLIN, StdSocket.recv)
    recv_into = _io(EPOLLIN, StdSocket.recv_into)
    recvfrom = _io(EPOLLIN, StdSocket.recvfrom)
    recvfrom_into = _io(EPOLLIN, StdSocket.recvfrom_into)
    recvmsg = _io(EPOLLIN, StdSocket.recvmsg)
    recvmsg_into = _io(EPOLLIN, StdSocket.recvmsg_into)
    send = _io(EPOLLOUT, StdSocket.send)
    sendto = _io(EPOLLOUT, StdSocket.sendto)
    sendmsg = _io(EPOLLOUT, StdSocket.sendmsg)
    _accept = _io(EPOLLIN, StdSocket._accept)

    def sendall(self, data: Any, flags: int = 0) -> None:
        timeout = self._timeout
        if timeout == 0.0:
            return StdSocket.sendall(self, data, flags)
        deadline = None if timeout is None else monotonic() + timeout  # for the whole call
        with memoryview(data) as view, view.cast("B") as octets:
            sent, total = 0, len(octets)
            while sent < total:
                try:
                    sent += StdSocket.send(self, octets[sent:], flags)
                except BlockingIOError:
                    _wait_one(self.fileno(), EPOLLOUT, deadline)
        return None

    def accept(self) -> tuple[CooperativeSocket, Any]:
        fd, address = self._accept()
        sock = CooperativeSocket(self.family, self.type, self.proto, fileno=fd)
        if _socket.getdefaulttimeout() is None and self._timeout:
            sock.setblocking(True)  # as the stdlib's accept (bpo-7995)
        return sock, address

    def connect(self, address: Any) -> None:
        err = self.connect_ex(address)
        if err == errno.EWOULDBLOCK and self._timeout:
            raise TimeoutError("timed out")
        if err:
            raise OSError(err, os.strerror(err))

    def connect_ex(self, address: Any) -> int:
        timeout = self._timeout
        if timeout == 0.0:
            return StdSocket.connect_ex(self, address)
        deadline = None if timeout is None else monotonic() + timeout
        address = self._resolved(address)
        err = StdSocket.connect_ex(self, address)
        if err not in _INPROGRESS:
            return err
        try:
            _wait_one(self.fileno(), EPOLLOUT, deadline)
        except TimeoutError:
            return errno.EWOULDBLOCK
        return self.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)

    def _resolved(self, address: Any) -> Any:
        """An (host, port, ...) address with a host name resolved on the thread pool."""
        if self.family not in (_socket.AF_INET, _socket.AF_INET6) or not isinstance(address, tuple):
            return address
        host = address[0]
        if not isinstance(host, str) or not host or _is_ip_literal(host) or not in_fiber():
            return address
        infos = run_in_thread(_socket.getaddrinfo, host, address[1], self.family, self.type)
        return infos[0][4][:2] + address[2:]

    def _real_close(self, _ss: Any = _CSocket) -> None:
        fd = _ss.fileno(self)
        sched = getattr(_tls, "scheduler", None)
        if fd >= 0 and sched is not None:
            sched.notify_closing(fd)  # fibers waiting on it wake with EBADF; no stale watch
        _ss.close(self)


def _ssl_io(call: Callable[..., Any]) -> Callable[..., Any]:
    """An SSLSocket method that waits for what OpenSSL wants and tries again."""

    @wraps(call)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        timeout = self._timeout
        if timeout == 0.0:
            return call(self, *args, **kwargs)
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            try:
                return call(self, *args, **kwargs)
            except ssl.SSLWantReadError:
                _wait_one(self.fileno(), EPOLLIN, deadline)
            except ssl.SSLWantWriteError:
                _wait_one(self.fileno(), EPOLLOUT, deadline)

    return method


class CooperativeSSLSocket(StdSSLSocket, CooperativeSocket):
    """``ssl.SSLSocket`` over :class:`CooperativeSocket` (which its plain-socket calls,
    ``connect`` and ``accept`` reach through ``super()``)."""

    read = _ssl_io(StdSSLSocket.read)
    write = _ssl_io(StdSSLSocket.write)
    send = _ssl_io(StdSSLSocket.send)
    unwrap = _ssl_io(StdSSLSocket.unwrap)
    _handshake = _ssl_io(StdSSLSocket.do_handshake)

    def do_handshake(self, block: bool = False) -> None:
        if block and self._timeout == 0.0:
            self._timeout = None
            try:
                return self._handshake()
            finally:
                self._timeout = 0.0
        return self._handshake()


# -- name resolution ----------------------------------------------------------------------


def resolver(fn: Callable[..., R]) -> Callable[..., R]:
    """``fn`` (a blocking resolver) run on the thread pool when called in a fiber."""

    @wraps(fn)
    def resolve(*args: Any, **kwargs: Any) -> R:
        if in_fiber():
            return run_in_thread(partial(fn, *args, **kwargs))
        return fn(*args, **kwargs)

    return resolve


def getaddrinfo_of(std: Callable[..., list]) -> Callable[..., list]:
    """``socket.getaddrinfo``: an address (or None) resolves in place, a name on the pool."""
    pooled = resolver(std)

    @wraps(std)
    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list:
        literal = host is None or (isinstance(host, str) and _is_ip_literal(host))
        return (std if literal else pooled)(host, port, *args, **kwargs)

    return getaddrinfo


# -- select, poll, selectors --------------------------------------------------------------


def _waits(fd: int, read: bool, write: bool) -> list[tuple[int, int]]:
    return ([(fd, EPOLLIN)] if read else []) + ([(fd, EPOLLOUT)] if write else [])


def cooperative_select(rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> tuple:
    if not in_fiber() or (timeout is not None and timeout <= 0):
        return std_select(rlist, wlist, xlist, timeout)
    rlist, wlist, xlist = list(rlist), list(wlist), list(xlist)

    def now() -> tuple | None:
        ready = std_select(rlist, wlist, xlist, 0)
        return ready if any(ready) else None

    def fds() -> list[tuple[int, int]]:
        return [(fileno_of(f), EPOLLIN) for f in rlist] + [(fileno_of(f), EPOLLOUT) for f in wlist]

    return poll_until(now, fds, timeout) or ([], [], [])


class CooperativePoll:
    """What ``select.poll()`` returns when patched: a real poll object, waited on in fibers."""

    __slots__ = ("_poll", "_masks")

    def __init__(self) -> None:
        self._poll = std_poll()
        self._masks: dict[int, int] = {}

    def register(self, fd: Any, eventmask: int = select.POLLIN | select.POLLPRI | select.POLLOUT) -> None:
        self._poll.register(fd, eventmask)
        self._masks[fileno_of(fd)] = eventmask

    def modify(self, fd: Any, eventmask: int) -> None:
        self._poll.modify(fd, eventmask)
        self._masks[fileno_of(fd)] = eventmask

    def unregister(self, fd: Any) -> None:
        self._poll.unregister(fd)
        del self._masks[fileno_of(fd)]

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        seconds = None if timeout is None or timeout < 0 else timeout / 1000
        if seconds == 0 or not in_fiber():
            return self._poll.poll(timeout)
        readable, writable = select.POLLIN | select.POLLPRI, select.POLLOUT
        return (
            poll_until(
                partial(self._poll.poll, 0),
                lambda: [
                    w
                    for fd, m in self._masks.items()
                    for w in _waits(fd, bool(m & readable), bool(m & writable))
                ],
                seconds,
            )
            or []
        )


def cooperative_selector(base: type[selectors.BaseSelector]) -> type[selectors.BaseSelector]:
    """A subclass of a ``selectors`` class whose ``select`` suspends only a fiber."""

    def select(self: Any, timeout: float | None = None) -> list:
        if not in_fiber() or (timeout is not None and timeout <= 0):
            return base.select(self, timeout)
        return (
            poll_until(
                partial(base.select, self, 0),
                lambda: [
                    w
                    for key in self.get_map().values()
                    for w in _waits(
                        key.fd,
                        bool(key.events & selectors.EVENT_READ),
                        bool(key.events & selectors.EVENT_WRITE),
                    )
                ],
                timeout,
            )
            or []
        )

    return type(base.__name__, (base,), {"select": select, "__module__": __name__, "__doc__": base.__doc__})

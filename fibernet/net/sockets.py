"""Fiber-aware sockets: blocking-style calls that suspend only the calling fiber.

``Socket`` wraps a non-blocking, close-on-exec ``socket.socket``.  Each call tries the
system call first and waits for readiness only on EAGAIN, so a call that can complete
costs one system call.  The descriptor is registered edge-triggered with the poller of the
first scheduler that waits on it (see ``runtime/poller.py``), and ``close`` tells that
poller first, so fibers waiting on it wake with ``OSError(EBADF)`` (Guile Fibers issue #80)
and no stale registration survives.

``timeout`` (seconds or None) bounds each wait; when it passes the call raises
``TimeoutError``, as the standard library's socket timeouts do.

Counters ``bytes_in`` / ``bytes_out`` and the ``active`` flag (set by any transfer, cleared
by the server's idle sweeper) are plain attributes: a socket belongs to one fiber.
"""

from __future__ import annotations

import errno
import ipaddress
import socket as _socket
import ssl as _ssl
import time
from functools import partial
from threading import get_ident
from typing import Any, NoReturn

from fibernet.errors import Cancelled
from fibernet.net.readiness import FdWait, wait_fd_blocking
from fibernet.net.threadpool import run_in_thread, run_in_thread_op
from fibernet.ops.operation import NOTHING, OpState, Raise, choice, perform, wrap
from fibernet.ops.timers import wait_op
from fibernet.runtime.fiber import RUNNING
from fibernet.runtime.poller import EPOLLIN, EPOLLOUT
from fibernet.runtime.scheduler import _tls, current_fiber, spawn

_CLOSED_FD = -1
# The socket class as fibernet found it: its own sockets stay plain ones after patch_all()
# (which replaces ``socket.socket`` with a cooperative subclass for blocking-style code).
_StdSocket = _socket.socket


def _recv_or_none(sock: _socket.socket, fd: int, bufsize: int) -> bytes | None:
    """``sock.recv(bufsize)``, or None where it would block."""
    try:
        return sock.recv(bufsize)
    except BlockingIOError:
        return None


def _send_or_minus_one(sock: _socket.socket, fd: int, data: bytes) -> int:
    """``sock.send(data)``, or -1 where it would block."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return -1


# The system calls on the per-request path.  The compiled copy has C functions of these names
# (``_c_sockets.pxd``), which call recv(2) and send(2) on the descriptor themselves: no method
# lookup, argument parsing or exception per would-block, and a read into a per-thread buffer
# instead of a new 64 KiB bytes object that is shrunk to fit.  Cython does not see these
# assignments (gevent's way), so they name the pure functions only where the module is pure
# (and linters, which do not see them either, are told so where they are used: F821).
locals()["_sys_recv"] = _recv_or_none
locals()["_sys_send"] = _send_or_minus_one


class Socket:
    """A socket for fibers.  Make one with :func:`connect`, :func:`listen` or ``Socket(sock)``."""

    __slots__ = (
        "_sock",
        "_fd",
        "_pollers",
        "_home",
        "timeout",
        "bytes_in",
        "bytes_out",
        "active",
        "_drained",
        "_waiting",
        "_expires",
        "_timer",
        "peer",
        "__weakref__",
    )

    def __init__(self, sock: _socket.socket, timeout: float | None = None) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._pollers: list = []  # schedulers whose poller has this descriptor registered
        self._home = None  # the scheduler of the last wait
        self.timeout = timeout
        self.bytes_in = 0
        self.bytes_out = 0
        self.active = False
        # A read that came back short has emptied the kernel's buffer: the next read waits
        # for the edge first instead of paying for an EAGAIN (safe with edge-triggered
        # registration: data that arrives after the read raises a new edge).
        self._drained = False
        # The timeout of a wait is one lazy timer per socket: a wait only moves ``_expires``;
        # the timer, when it fires, either times the wait out or re-arms for the new expiry.
        self._waiting: OpState | None = None
        self._expires = 0.0
        self._timer: list | None = None
        # The client's address when a proxy in front told it (the PROXY protocol); else None.
        self.peer: Any = None

    def __repr__(self) -> str:
        return f"<fibernet Socket fd={self._fd} {self._sock!r}>"

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    @property
    def sock(self) -> _socket.socket:
        """The underlying standard-library socket (non-blocking)."""
        return self._sock

    @property
    def closed(self) -> bool:
        return self._fd == _CLOSED_FD

    def _wait(self, events: int) -> None:
        """Suspend until the descriptor is ready for ``events``, at most ``timeout`` seconds."""
        fd = self._fd
        if fd == _CLOSED_FD:
            raise OSError(errno.EBADF, "socket is closed")
        sched = self._home
        ident = get_ident()
        if sched is None or sched._ident != ident:  # not waited on from this thread yet
            sched = getattr(_tls, "scheduler", None)
            if sched is None or sched.current is None:
                wait_fd_blocking(fd, events, self.timeout)  # a plain thread blocks in poll()
                return
            self._move_to(sched)
        fiber = sched.current
        if fiber is None:  # the scheduler's own loop (a callback), not a fiber
            wait_fd_blocking(fd, events, self.timeout)
            return
        poller = sched._poller
        if poller.take_pending(fd, events):
            return  # an edge came while nobody waited: try the descriptor again first
        state = FdWait(fiber, sched, (fd, events))
        fiber._block_on(state)
        poller.watch(fd, events, state)  # the state is the callback
        timeout = self.timeout
        if timeout is not None:
            self._waiting = state
            self._expires = expires = sched.clock.now() + timeout
            timer = self._timer
            if timer is None or timer[2] is None or timer[0] > expires:
                if timer is not None:
                    sched._timers.cancel(timer)
                self._timer = sched._timers.add(expires, self._on_deadline)
        try:
            sched._park()
        except BaseException:  # killed at shutdown (GreenletExit): leave no watch behind
            self._waiting = None
            poller.unwatch(fd, events, state)
            raise
        fiber._op_state = None
        fiber.state = RUNNING
        self._waiting = None
        index = state.index
        if index != 0:
            poller.unwatch(fd, events, state)
            if index == -1:
                with fiber._state_lock:
                    fiber._cancel_pending = False
                raise Cancelled()
            raise TimeoutError(f"socket fd {fd}: no progress within {timeout}s")
        value = state.value
        if type(value) is Raise:
            raise value.exc

    def _move_to(self, sched: Any) -> Any:
        """The socket is used from ``sched`` now (a fiber moved, or its first wait): its
        descriptor's edges reach that scheduler's poller, which is returned."""
        if sched not in self._pollers:
            sched._poller.register_edge(self._fd, self)
            self._pollers.append(sched)
        self._home = sched
        return sched._poller

    def when_readable(self, callback: Any) -> bool:
        """Call ``callback(0)`` once bytes (or the end of the stream) may be read, with no
        fiber waiting: on this scheduler's loop, so the callback must not suspend (it may
        spawn a fiber).  ``callback(errno)`` instead if the socket is closed first.

        False, with nothing registered, if the socket may be readable already (its last
        read was not short, or an edge came since): read it now instead.  The next read
        after the callback tries the descriptor before it waits.
        """
        fd = self._fd
        if fd == _CLOSED_FD:
            raise OSError(errno.EBADF, "socket is closed")
        if not self._drained:
            return False
        sched = _tls.scheduler
        poller = sched._poller if sched is self._home else self._move_to(sched)
        if poller.take_pending(fd, EPOLLIN):
            self._drained = False
            return False
        poller.watch(fd, EPOLLIN, callback)
        self._drained = False  # the callback comes when there is something to read
        return True

    def cancel_readable(self, callback: Any) -> None:
        """Forget a callback given to :meth:`when_readable` (on the same scheduler)."""
        home = self._home
        if home is not None and self._fd != _CLOSED_FD:
            home._poller.unwatch(self._fd, EPOLLIN, callback)

    def interrupt_wait(self) -> bool:
        """End a wait in progress as if its timeout had passed (thread-safe); False if no
        wait with a timeout is in progress, or it has just completed anyway."""
        state = self._waiting
        return state is not None and state.complete(1, NOTHING)

    def _on_deadline(self) -> None:
        """The socket's timer fired (on its scheduler): time the wait out, or re-arm."""
        self._timer = None
        state = self._waiting
        home = self._home
        if state is None or home is None or self._fd == _CLOSED_FD:
            return  # not waiting: the next wait arms a timer again
        if home.clock.now() >= self._expires:
            state.complete(1, NOTHING)
        else:
            self._timer = home._timers.add(self._expires, self._on_deadline)

    # -- data ---------------------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes; b"" at end of stream."""
        sock = self._sock
        if self._drained:
            self._wait(EPOLLIN)
        while True:
            data = _sys_recv(sock, self._fd, bufsize)  # noqa: F821 (see above)
            if data is None:
                self._wait(EPOLLIN)
                continue
            n = len(data)
            self._drained = 0 < n < bufsize
            self.bytes_in += n
            self.active = True
            return data

    def recv_nowait(self, bufsize: int) -> bytes | None:
        """What has arrived, up to ``bufsize`` bytes, without waiting: None if nothing has,
        b"" at end of stream."""
        data = _sys_recv(self._sock, self._fd, bufsize)  # noqa: F821
        if data is None:
            self._drained = True
            return None
        n = len(data)
        self._drained = 0 < n < bufsize
        self.bytes_in += n
        self.active = True
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        sock = self._sock
        while True:
            try:
                n = sock.recv_into(buffer, nbytes)
            except BlockingIOError:
                self._wait(EPOLLIN)
                continue
            self.bytes_in += n
            self.active = True
            return n

    def send(self, data: Any) -> int:
        sock = self._sock
        while True:
            try:
                n = sock.send(data)
            except BlockingIOError:
                self._wait(EPOLLOUT)
                continue
            self.bytes_out += n
            self.active = True
            return n

    def send_nowait(self, data: Any) -> int:
        """Send what the kernel takes now, without waiting: how many bytes (0 if none)."""
        try:
            n = self._sock.send(data)
        except BlockingIOError:
            return 0
        self.bytes_out += n
        self.active = True
        return n

    def sendall(self, data: Any) -> None:
        """Send every byte; suspends while the peer does not read (backpressure)."""
        sock = self._sock
        if type(data) is bytes:  # the common case: all of it in one send
            n = _sys_send(sock, self._fd, data)  # noqa: F821
            if n < 0:  # (EAGAIN)
                n = 0
            self.bytes_out += n
            self.active = True
            if n == len(data):
                return
            view = memoryview(data)
            sent = n
        else:
            view = memoryview(data).cast("B")
            sent = 0
        total = len(view)
        while sent < total:
            try:
                n = sock.send(view[sent:])
            except BlockingIOError:
                self._wait(EPOLLOUT)
                continue
            sent += n
            # Counted as the bytes go: a long send to a slow reader is not idle.
            self.bytes_out += n
            self.active = True
        self.active = True

    # -- connections --------------------------------------------------------------------

    def accept(self) -> tuple[Socket, Any]:
        """Wait for a connection; returns (Socket, address) with TCP_NODELAY set."""
        sock = self._sock
        while True:
            try:
                fd, addr = sock._accept()
            except BlockingIOError:
                self._wait(EPOLLIN)
                continue
            return Socket(configure(_StdSocket(sock.family, sock.type, sock.proto, fd))), addr

    def shutdown(self, how: int = _socket.SHUT_WR) -> None:
        """Half-close: by default stop sending (the peer reads end of stream) and keep reading."""
        try:
            self._sock.shutdown(how)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise

    def close(self) -> None:
        """Close; fibers waiting on this socket wake with ``OSError(EBADF)``.  Idempotent."""
        fd = self._fd
        if fd == _CLOSED_FD:
            return
        self._fd = _CLOSED_FD
        here = getattr(_tls, "scheduler", None)
        timer = self._timer
        if timer is not None and self._home is here:
            here._timers.cancel(timer)  # (on another thread it fires once and finds nothing)
        self._timer = None
        for sched in self._pollers:
            if sched is here:
                sched._poller.notify_closing(fd, owner=self)
            elif not sched._stopping:
                spawn(sched._poller.notify_closing, fd, errno.EBADF, self, scheduler=sched)
        self._pollers = []
        self._sock.close()

    # -- delegation -------------------------------------------------------------------------

    def getpeername(self) -> Any:
        """The peer's address: the client's, when a proxy in front told it (``peer``)."""
        peer = self.peer
        return self._sock.getpeername() if peer is None else peer

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    @property
    def family(self) -> int:
        return self._sock.family


def configure(sock: _socket.socket) -> _socket.socket:
    """The options a server wants on a stream socket: non-blocking, TCP_NODELAY.

    (Python makes every socket close-on-exec already, PEP 446.)
    """
    sock.setblocking(False)
    if sock.family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass
    return sock


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def connect(
    host: str,
    port: int,
    timeout: float | None = None,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Any:
    """Open a TCP connection; ``timeout`` bounds the whole connect (resolution included).

    Names are resolved on the thread pool, never on a scheduler thread.  With ``ssl`` (a
    client context, e.g. ``ssl.create_default_context()``) the connection is TLS: a
    :class:`~fibernet.net.tls.TLSSocket`, its handshake done (within ``timeout``), the
    certificate checked against ``server_hostname`` (default: ``host``).
    """
    sock = _connect_tcp(host, port, timeout)
    if ssl is None:
        return sock
    from fibernet.net.tls import client_socket

    try:
        return client_socket(sock, ssl, server_hostname or host)
    except BaseException:
        sock.close()
        raise


def _connect_tcp(host: str, port: int, timeout: float | None) -> Socket:
    deadline = None if timeout is None else time.monotonic() + timeout
    if _is_ip_literal(host):
        infos = _socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM, flags=_socket.AI_NUMERICHOST)
    elif timeout is None or current_fiber() is None:
        infos = run_in_thread(_socket.getaddrinfo, host, port, 0, _socket.SOCK_STREAM)
    else:
        infos = perform(
            choice(
                run_in_thread_op(_socket.getaddrinfo, host, port, 0, _socket.SOCK_STREAM),
                wrap(wait_op(timeout), partial(_resolve_timeout, host, timeout)),
            )
        )
    error: OSError | None = None
    for family, type_, proto, _name, address in infos:
        # The connect gets what is left of the timeout; the socket keeps the whole one.
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        sock = Socket(configure(_StdSocket(family, type_, proto)), left)
        try:
            _connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sock.timeout = timeout
        return sock
    raise error or OSError(f"could not resolve {host!r}")


def _resolve_timeout(host: str, timeout: float) -> NoReturn:
    raise TimeoutError(f"resolving {host!r} took longer than {timeout}s")


def _connect(sock: Socket, address: Any) -> None:
    err = sock.sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
        sock._wait(EPOLLOUT)
        err = sock.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
    if err:
        raise OSError(err, f"connect to {address}: {errno.errorcode.get(err, err)}")


def listen(
    host: str = "127.0.0.1",
    port: int = 0,
    backlog: int = 1024,
    reuse_port: bool = False,
) -> Socket:
    """A listening TCP socket (SO_REUSEADDR, and SO_REUSEPORT if asked).

    A host name (not an address) is resolved on the thread pool when called in a fiber.
    """
    if not host or _is_ip_literal(host):
        infos = _socket.getaddrinfo(host or None, port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE)
    else:
        infos = run_in_thread(_socket.getaddrinfo, host, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE)
    family, type_, proto, _name, address = infos[0]
    sock = _StdSocket(family, type_, proto)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return Socket(configure(sock))


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.net._c_sockets")

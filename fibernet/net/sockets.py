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
from typing import Any

from fibernet.net.readiness import wait_fd
from fibernet.net.threadpool import run_in_thread
from fibernet.runtime.poller import EPOLLIN, EPOLLOUT
from fibernet.runtime.scheduler import _tls, spawn

_CLOSED_FD = -1


class Socket:
    """A socket for fibers.  Make one with :func:`connect`, :func:`listen` or ``Socket(sock)``."""

    __slots__ = ("_sock", "_fd", "_pollers", "timeout", "bytes_in", "bytes_out", "active", "__weakref__")

    def __init__(self, sock: _socket.socket, timeout: float | None = None) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._pollers: list = []  # schedulers whose poller has this descriptor registered
        self.timeout = timeout
        self.bytes_in = 0
        self.bytes_out = 0
        self.active = False

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
        fd = self._fd
        if fd == _CLOSED_FD:
            raise OSError(errno.EBADF, "socket is closed")
        sched = getattr(_tls, "scheduler", None)
        if sched is not None and sched not in self._pollers:
            sched._poller.register_edge(fd, self)
            self._pollers.append(sched)
        wait_fd(fd, events, self.timeout)

    # -- data ---------------------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes; b"" at end of stream."""
        sock = self._sock
        while True:
            try:
                data = sock.recv(bufsize)
            except BlockingIOError:
                self._wait(EPOLLIN)
                continue
            self.bytes_in += len(data)
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

    def sendall(self, data: Any) -> None:
        """Send every byte; suspends while the peer does not read (backpressure)."""
        sock = self._sock
        view = memoryview(data)
        total = len(view)
        sent = 0
        while sent < total:
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                self._wait(EPOLLOUT)
        self.bytes_out += total
        self.active = True

    # -- connections --------------------------------------------------------------------

    def accept(self) -> tuple[Socket, Any]:
        """Wait for a connection; returns (Socket, address) with TCP_NODELAY set."""
        sock = self._sock
        while True:
            try:
                conn, addr = sock.accept()
            except BlockingIOError:
                self._wait(EPOLLIN)
                continue
            return Socket(configure(conn)), addr

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
        for sched in self._pollers:
            if sched is here:
                sched._poller.notify_closing(fd, owner=self)
            elif not sched._stopping:
                spawn(sched._poller.notify_closing, fd, errno.EBADF, self, scheduler=sched)
        self._pollers = []
        self._sock.close()

    # -- delegation -------------------------------------------------------------------------

    def getpeername(self) -> Any:
        return self._sock.getpeername()

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


def connect(host: str, port: int, timeout: float | None = None) -> Socket:
    """Open a TCP connection; ``timeout`` bounds the whole connect (resolution included).

    Names are resolved on the thread pool, never on a scheduler thread.
    """
    if _is_ip_literal(host):
        infos = _socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM, flags=_socket.AI_NUMERICHOST)
    else:
        infos = run_in_thread(_socket.getaddrinfo, host, port, 0, _socket.SOCK_STREAM)
    error: OSError | None = None
    for family, type_, proto, _name, address in infos:
        sock = Socket(configure(_socket.socket(family, type_, proto)), timeout)
        try:
            _connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"could not resolve {host!r}")


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
    """A listening TCP socket (SO_REUSEADDR, and SO_REUSEPORT if asked)."""
    infos = _socket.getaddrinfo(host or None, port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE)
    family, type_, proto, _name, address = infos[0]
    sock = _socket.socket(family, type_, proto)
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

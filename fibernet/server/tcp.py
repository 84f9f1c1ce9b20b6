"""The TCP server: listeners, a fiber per connection on every scheduler thread, limits, drain.

Composed, not inherited (gevent's behaviour without its class chains): a ``Server`` is given
a handler, ``handler(conn)`` with a fiber-aware :class:`~fibernet.net.sockets.Socket`; the HTTP
layer is just such a handler.

- Every scheduler accepts: one SO_REUSEPORT listener per scheduler thread when the server
  binds, or the given (inherited) sockets shared by all of them.
- Limits: ``max_connections`` (the acceptors stop accepting while full and resume when one
  closes), ``idle_timeout`` (a per-scheduler sweeper cancels connections that moved no byte
  for that long), ``backlog``, ``accepts_per_wake`` (then the acceptor yields so the
  connections it made get to run).
- After EMFILE/ENFILE on accept the acceptor backs off, 10 ms doubling to 1 s, as gevent and
  Go do, instead of spinning, and accepts again when descriptors free up.
- A handler's exception is logged with the peer address and closes that connection only.
  The socket is closed in ``finally``, whatever way the handler ends.
- Graceful stop: stop accepting, let connections finish for ``grace`` seconds, then cancel
  the rest (and close the parked ones).
- Parking: a handler may return a :class:`Parked` to wait for its connection's next bytes
  with no fiber; the server watches the socket and resumes it in a new fiber (the HTTP
  layer parks its idle keep-alive connections so: an idle one costs no greenlet).
- Before the handler, in the connection's fiber and within ``handshake_timeout``: the PROXY
  protocol header (``proxy_protocol=True``; see ``server/proxy.py``), then the TLS handshake
  (``ssl=``, a context or a :class:`~fibernet.net.tls.TLSConfig`; see ``net/tls.py``).  The
  handler gets the TLS socket; a failed or late handshake costs that connection only, and is
  one log line.  :meth:`Server.reload_tls` makes the context again from a ``TLSConfig``'s files.
"""

from __future__ import annotations

import errno
import logging
import ssl as _ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fibernet.errors import Cancelled
from fibernet.net.sockets import Socket, listen
from fibernet.net.threadpool import run_in_thread
from fibernet.net.tls import TLSConfig, server_handshake
from fibernet.ops.condition import Condition
from fibernet.ops.operation import choice, perform, wrap
from fibernet.ops.timers import sleep, wait_op
from fibernet.runtime.fiber import Fiber
from fibernet.runtime.runtime import Runtime
from fibernet.runtime.scheduler import Scheduler, current_scheduler, spawn, yield_now
from fibernet.server.proxy import read_proxy_header

log = logging.getLogger("fibernet.server")

Handler = Callable[[Socket], Any]

_BACKOFF_FIRST = 0.01
_BACKOFF_MAX = 1.0
_NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 10_000
    idle_timeout: float | None = 300.0
    backlog: int = 1024
    accepts_per_wake: int = 64
    graceful_timeout: float = 30.0
    handshake_timeout: float = 10.0  # the PROXY header and the TLS handshake, together

    def __post_init__(self) -> None:
        for name in ("max_connections", "backlog", "accepts_per_wake"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive or None, not {self.idle_timeout!r}")
        if not self.graceful_timeout >= 0:
            raise ValueError(f"graceful_timeout must be >= 0, not {self.graceful_timeout!r}")
        if not self.handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be positive, not {self.handshake_timeout!r}")


class Parked:
    """What a handler may return to wait for its connection's next bytes with no fiber.

    The connection stays open and counted, but its fiber ends (its greenlet and stack go
    back to the scheduler): the server watches the socket, and when bytes come it calls
    ``resume(sock)`` in a new fiber -- the handler again, in effect, which may return a
    ``Parked`` again.  If none come within ``park_timeout`` seconds (None: no limit), or
    the server closes it meanwhile (idle sweep, the end of a drain, shutdown), the server
    calls ``parked_closed()`` and closes the socket.  A handler that never returns one is
    served as always.  (The HTTP layer parks its idle keep-alive connections this way.)
    """

    __slots__ = ()

    park_timeout: float | None = None

    def resume(self, sock: Socket) -> Any:
        raise NotImplementedError

    def parked_closed(self) -> None:
        """The server closed the connection while it was parked."""


class _Place:
    """A scheduler's share of the server: its connections and counters (its thread only)."""

    __slots__ = ("sched", "conns", "parked", "accepted", "bytes_in", "bytes_out", "acceptors")

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.conns: dict[Fiber, Socket] = {}
        self.parked: dict[Socket, _Parking] = {}  # connections with no fiber now
        self.accepted = 0
        self.bytes_in = 0  # of closed connections; live ones are summed from their sockets
        self.bytes_out = 0
        self.acceptors: list[Fiber] = []


class Server:
    """A TCP server.  ``Server(handler, host, port, threads=N).start()`` in a program or a
    test; :func:`serve` to run one in the foreground until a signal."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threads: int = 1,
        sockets: list[Any] | None = None,
        limits: Limits | None = None,
        name: str | None = None,
        ssl: _ssl.SSLContext | TLSConfig | None = None,
        proxy_protocol: bool = False,
        **limit_overrides: Any,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        self.handler = handler
        self.host = host
        self.port = port
        self.threads = threads
        self.limits = limits or Limits(**limit_overrides)
        self.name = name or getattr(handler, "__qualname__", "server")
        if ssl is not None and not isinstance(ssl, (_ssl.SSLContext, TLSConfig)):
            raise TypeError(f"ssl must be an ssl.SSLContext or a TLSConfig, not {type(ssl).__name__}")
        self.tls = ssl
        self._context = ssl.context() if isinstance(ssl, TLSConfig) else ssl  # (bad files fail here)
        self.proxy_protocol = proxy_protocol
        self._given = sockets
        self._listeners: list[Socket] = []
        self._places: dict[Scheduler, _Place] = {}
        self._lock = threading.Lock()
        self._open = 0
        self._slot_waiters: list[Condition] = []
        self._stop = Condition()
        self._drained = Condition()
        self._draining = False
        self._grace: float | None = None
        self._deadline: float | None = None  # time.monotonic() when the drain cancels the rest
        self._hurry = Condition()  # signalled when a later stop() shortens the drain
        self._started = threading.Event()
        self.ready = Condition()  # signalled once every scheduler accepts (for fibers to wait on)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.address: tuple | None = None

    def __repr__(self) -> str:
        return f"<Server {self.name} {self.address} open={self._open}>"

    # -- binding ------------------------------------------------------------------------

    def bind(self) -> None:
        """Open the listeners now (so a port in use fails here, in the caller's thread)."""
        if self._listeners:
            return
        if self._given:
            self._listeners = [s if isinstance(s, Socket) else Socket(s) for s in self._given]
        else:
            if self.port:
                _check_port_free(self.host, self.port)
            first = listen(self.host, self.port, self.limits.backlog, reuse_port=True)
            self._listeners = [first]
            port = first.getsockname()[1]
            try:
                for _ in range(self.threads - 1):
                    self._listeners.append(listen(self.host, port, self.limits.backlog, reuse_port=True))
            except BaseException:
                self._close_listeners()
                raise
        self.address = self._listeners[0].getsockname()

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            sock.close()

    # -- running ------------------------------------------------------------------------

    def run(self) -> None:
        """Serve inside a fiber of a running runtime, on all its schedulers, until stopped."""
        here = current_scheduler()
        if here is None or here.current is None:
            raise RuntimeError("Server.run() must be called in a fiber; use start() or serve()")
        self.bind()
        scheds = here.runtime.schedulers if here.runtime is not None else [here]
        try:
            for i, sched in enumerate(scheds):
                place = self._places[sched] = _Place(sched)
                listener = self._listeners[i % len(self._listeners)]
                place.acceptors.append(
                    spawn(
                        self._accept_loop,
                        place,
                        listener,
                        name=f"{self.name}:accept@{sched.name}",
                        scheduler=sched,
                    )
                )
                if self.limits.idle_timeout is not None:
                    place.acceptors.append(
                        spawn(self._sweep_idle, place, name=f"{self.name}:idle@{sched.name}", scheduler=sched)
                    )
            self._started.set()
            self.ready.signal()
            log.info("serving %s on %s with %d scheduler(s)", self.name, _fmt(self.address), len(scheds))
            self._stop.wait()
        finally:
            self._drain()

    def start(self) -> Server:
        """Serve on a runtime of its own in background threads; returns once listening."""
        self.bind()
        self._thread = threading.Thread(target=self._run_runtime, name=f"fibernet:{self.name}", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run_runtime(self) -> None:
        try:
            Runtime(self.threads).run(self.run)
        except BaseException as exc:  # noqa: BLE001 - handed to start()/wait()
            self._error = exc
            log.exception("server %s failed", self.name)
        finally:
            self._started.set()

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, give connections ``grace`` seconds (default: the limit), then
        cancel the rest.  Thread-safe; returns at once (see :meth:`wait`).

        A later call with a shorter grace (a second signal) shortens a drain under way.
        """
        grace = self.limits.graceful_timeout if grace is None else grace
        deadline = time.monotonic() + grace
        hurry = None
        with self._lock:
            if self._deadline is None or deadline < self._deadline:
                if self._deadline is not None:
                    hurry, self._hurry = self._hurry, Condition()
                self._deadline = deadline
                self._grace = grace
        self._stop.signal()
        if hurry is not None:
            hurry.signal()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a server made with :meth:`start` has stopped; True if it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(0 if exc[0] is not None else None)
        self.wait()

    # -- counters -----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """True once a stop was asked for (readiness probes should fail from then on)."""
        return self._stop.signalled

    def schedulers(self) -> list[Scheduler]:
        """The schedulers the server runs on (none before it runs)."""
        return list(self._places)

    def stats(self) -> dict[str, Any]:
        places = list(self._places.values())
        live = [sock for p in places for sock in list(p.conns.values()) + list(p.parked)]
        stats = {
            "connections_open": self._open,
            "connections_parked": sum(len(p.parked) for p in places),
            "connections_accepted": sum(p.accepted for p in places),
            "bytes_in": sum(p.bytes_in for p in places) + sum(s.bytes_in for s in live),
            "bytes_out": sum(p.bytes_out for p in places) + sum(s.bytes_out for s in live),
        }
        counted = getattr(self.handler, "stats", None)  # the HTTP layer counts requests
        if counted is not None:
            stats.update(counted())
        return stats

    # -- accepting ------------------------------------------------------------------------

    def _accept_loop(self, place: _Place, listener: Socket) -> None:
        lsock = listener.sock
        backoff = 0.0
        per_wake = self.limits.accepts_per_wake
        in_a_row = 0
        while True:
            # Take the slot before accepting: the acceptors of the other scheduler threads
            # race for the last one.  Nothing suspends until the accept has succeeded or the
            # slot is given back.
            with self._lock:
                full = self._open >= self.limits.max_connections
                if not full:
                    self._open += 1
            if full:
                self._wait_for_slot()
                continue
            try:
                raw, addr = lsock.accept()
            except BlockingIOError:
                self._release_slot()
                in_a_row = 0
                listener._wait(0x001)  # EPOLLIN
                continue
            except OSError as exc:
                self._release_slot()
                if exc.errno in _NO_DESCRIPTORS:
                    backoff = min(_BACKOFF_MAX, backoff * 2) if backoff else _BACKOFF_FIRST
                    log.warning("accept: %s; retrying in %.0f ms", exc.strerror, backoff * 1000)
                    sleep(backoff)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            backoff = 0.0
            conn = Socket(raw)
            raw.setblocking(False)
            _nodelay(raw)
            place.accepted += 1
            self._spawn_serve(place, conn, addr, addr)
            in_a_row += 1
            if in_a_row >= per_wake:
                in_a_row = 0
                yield_now()

    def _spawn_serve(self, place: _Place, conn: Socket, how: Any, addr: Any) -> None:
        """Serve ``conn`` in a new fiber: the handler (``how`` the peer's address) or
        ``how.parked.resume`` (``how`` the _Parking of a parked connection; nothing more is
        kept per parked connection, whose bytes count against the idle-connection bar)."""
        fiber = spawn(self._serve, place, conn, how, name=f"{self.name}:conn {_fmt(addr)}")
        place.conns[fiber] = conn
        if how.__class__ is _Parking:
            fiber.add_done_callback(how.fiber_done)
        else:
            fiber.add_done_callback(partial(self._closed_one, place, conn))

    def _release_slot(self) -> None:
        with self._lock:
            self._open -= 1
            waiters, self._slot_waiters = self._slot_waiters, []
        for cond in waiters:
            cond.signal()

    def _wait_for_slot(self) -> None:
        cond = Condition()
        with self._lock:
            if self._open < self.limits.max_connections:
                return
            self._slot_waiters.append(cond)
        cond.wait()

    def _serve(self, place: _Place, conn: Any, how: Any) -> None:
        # (Three arguments: see Fiber._execute.)
        if how.__class__ is _Parking:
            parking, addr, parked = how, how.addr, how.parked
        else:
            parking, addr, parked = None, how, None
        try:
            if parked is not None:
                result = parked.resume(conn)
            else:
                if self.proxy_protocol or self._context is not None:
                    ready = self._before_handler(conn, addr)
                    if ready is None:
                        return
                    conn = ready  # (a TLSSocket: closing it sends close_notify)
                result = self.handler(conn)
            while isinstance(result, Parked):
                if parking is None:
                    if type(conn) is not Socket:  # (a TLS socket may hold decrypted bytes already)
                        raise TypeError(f"only a plain Socket can be parked, not a {type(conn).__name__}")
                    parking = _Parking(self, place, conn, addr)
                if parking.park(result):
                    conn = None  # (not closed: it waits in place.parked)
                    return
                result = result.resume(conn)  # bytes may have come already: read them
        except Cancelled:
            pass
        except _PEER_GONE as exc:
            log.debug("connection %s: %s", _fmt(addr), exc)
        except Exception:
            log.exception("handler %s failed for %s", self.name, _fmt(addr))
        finally:
            if conn is not None:
                conn.close()
                if parking is not None:
                    parking.drop_timer()

    def _before_handler(self, conn: Socket, addr: Any) -> Any:
        """The PROXY header, then the TLS handshake, within the handshake deadline: the
        socket for the handler, or None if the client failed (logged; the caller closes)."""
        timeout = self.limits.handshake_timeout
        deadline = time.monotonic() + timeout
        stage = "PROXY header"
        try:
            if self.proxy_protocol:
                conn.peer = read_proxy_header(conn, timeout)
            context = self._context
            if context is not None:
                stage = "TLS handshake"
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no TLS handshake within {timeout}s")
                return server_handshake(conn, context, left)
        except (ValueError, OSError) as exc:  # a bad PROXY header, an SSLError, a timeout, a reset
            log.info("%s from %s failed: %s", stage, _fmt(conn.peer or addr), _reason(exc))
            return None
        return conn

    def reload_tls(self) -> bool:
        """Load the certificate files again (a :class:`TLSConfig`'s) for the connections
        accepted from now on; False if there is nothing to reload.  A file that does not load
        raises, and the context in use stays."""
        if not isinstance(self.tls, TLSConfig):
            return False
        here = current_scheduler()
        make = self.tls.context
        self._context = run_in_thread(make) if here is not None and here.current is not None else make()
        return True

    def _closed_one(self, place: _Place, conn: Socket, fiber: Fiber) -> None:
        """The connection's fiber ended, however it ended (even cancelled before it ran)."""
        place.conns.pop(fiber, None)
        if conn in place.parked:
            return  # it waits for bytes with no fiber
        self._close_conn(place, conn)

    def _close_conn(self, place: _Place, conn: Socket) -> None:
        conn.close()
        place.bytes_in += conn.bytes_in
        place.bytes_out += conn.bytes_out
        with self._lock:
            self._open -= 1
            waiters, self._slot_waiters = self._slot_waiters, []
            drained = self._draining and self._open == 0
        for cond in waiters:
            cond.signal()
        if drained:
            self._drained.signal()

    def _sweep_idle(self, place: _Place) -> None:
        timeout = self.limits.idle_timeout
        tick = min(1.0, max(0.01, timeout / 4))
        idle: dict[Any, float] = {}  # a connection's fiber, or a parked connection's socket

        def sweep(key: Any, sock: Any, close: Callable[[], None], what: str, who: Any) -> None:
            if sock.active:
                sock.active = False
                idle.pop(key, None)
                return
            waited = idle.get(key, 0.0) + tick
            if waited >= timeout:
                log.debug("closing idle %s %s", what, who)
                idle.pop(key, None)
                close()
            else:
                idle[key] = waited

        while True:
            sleep(tick)
            for fiber, sock in list(place.conns.items()):
                sweep(fiber, sock, fiber.cancel, "connection", fiber.name)
            for sock, parking in list(place.parked.items()):
                sweep(sock, sock, parking.close, "parked connection", parking.addr)
            for key in [k for k in idle if k not in place.conns and k not in place.parked]:
                del idle[key]

    # -- stopping -------------------------------------------------------------------------

    def _drain(self) -> None:
        places = list(self._places.values())
        for place in places:
            for fiber in place.acceptors:
                fiber.cancel()
        for place in places:
            for fiber in place.acceptors:
                try:
                    fiber.join()
                except BaseException:  # noqa: BLE001, S110 - cancelled on purpose
                    pass
        self._close_listeners()
        drain = getattr(self.handler, "drain", None)  # a protocol ends its idle connections
        if drain is not None:
            drain()
        with self._lock:
            self._draining = True
            busy = self._open > 0
            if self._deadline is None:  # not stopped by stop(): the runtime is ending
                self._deadline = time.monotonic() + self.limits.graceful_timeout
        if busy:
            log.info(
                "draining %d connection(s) for up to %.1fs",
                self._open,
                max(0.0, self._deadline - time.monotonic()),
            )
            while True:
                with self._lock:
                    hurry, left = self._hurry, self._deadline - time.monotonic()
                outcome = perform(
                    choice(
                        self._drained.wait_op(),
                        wrap(wait_op(max(0.0, left)), lambda: None),
                        wrap(hurry.wait_op(), lambda: "hurry"),
                    )
                )
                if outcome != "hurry":
                    break
        self._close_parked(places)
        left = [f for place in places for f in list(place.conns)]
        if left:
            log.warning("cancelling %d connection(s) still open after the grace period", len(left))
            for fiber in left:
                fiber.cancel()
            for fiber in left:
                try:
                    fiber.join(timeout=5.0)
                except BaseException:  # noqa: BLE001, S110 - cancelled on purpose
                    pass
        log.info("server %s stopped", self.name)

    def _close_parked(self, places: list[_Place]) -> None:
        """The grace period is over: close the parked connections, each on its own thread."""
        closers = [
            spawn(
                _close_all_parked,
                place,
                name=f"{self.name}:close parked@{place.sched.name}",
                scheduler=place.sched,
            )
            for place in places
            if place.parked and not place.sched._stopping
        ]
        for fiber in closers:
            try:
                fiber.join(timeout=5.0)
            except BaseException:  # noqa: BLE001 - logged by the fiber's own report
                log.exception("closing parked connections failed")


def _close_all_parked(place: _Place) -> None:
    parked = list(place.parked.values())
    if parked:
        log.warning("closing %d parked connection(s) still open after the grace period", len(parked))
    for parking in parked:
        parking.close()


class _Parking:
    """A connection that parks: the poller's callback when it is readable (``self(0)``; an
    errno if it is closed) and its timer's (``self()``).  One per connection, made when it
    first parks; its park timeout is one lazy timer, as a socket's wait timeout is: parking
    again only moves ``expires``, and the timer, when it fires, closes the connection if it
    is parked and due, else re-arms (or goes, if it is not parked)."""

    __slots__ = ("server", "place", "sock", "addr", "parked", "timer", "expires")

    def __init__(self, server: Server, place: _Place, sock: Socket, addr: Any) -> None:
        self.server = server
        self.place = place
        self.sock = sock
        self.addr = addr
        self.parked: Parked | None = None
        self.timer: list | None = None
        self.expires = 0.0

    def park(self, parked: Parked) -> bool:
        """Wait for bytes with no fiber; False if they may be there already (read them)."""
        sock = self.sock
        if not sock.when_readable(self):
            return False
        self.parked = parked
        place = self.place
        place.parked[sock] = self
        timeout = parked.park_timeout
        if timeout is not None:
            sched = place.sched
            self.expires = expires = sched.clock.now() + timeout
            timer = self.timer
            if timer is None or timer[2] is None or timer[0] > expires:
                if timer is not None:
                    sched._timers.cancel(timer)
                self.timer = sched._timers.add(expires, self)
        return True

    def __call__(self, err: int | None = None) -> None:
        """On the scheduler's loop, not in a fiber: readable (0), closed (an errno), or the
        timer fired (None)."""
        place = self.place
        if err is None:
            self.timer = None
            if place.parked.get(self.sock) is not self:
                return  # it was resumed: its next park arms a timer again
            sched = place.sched
            if sched.clock.now() >= self.expires:
                self.close()
            else:
                self.timer = sched._timers.add(self.expires, self)
            return
        if place.parked.pop(self.sock, None) is None:
            return
        if err or place.sched._stopping:
            self.drop_timer()
            self._closed()
            return
        self.server._spawn_serve(place, self.sock, self, self.addr)

    def fiber_done(self, fiber: Fiber) -> None:
        """A fiber that served the connection (resumed) ended."""
        self.server._closed_one(self.place, self.sock, fiber)

    def close(self) -> None:
        """Close the parked connection (its timeout, an idle sweep, the end of a drain)."""
        if self.place.parked.pop(self.sock, None) is None:
            return
        self.drop_timer()
        self.sock.cancel_readable(self)
        self._closed()

    def drop_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            self.place.sched._timers.cancel(timer)

    def _closed(self) -> None:
        try:
            self.parked.parked_closed()  # type: ignore[union-attr]
        except Exception:
            log.exception("handler %s failed closing a parked connection", self.server.name)
        finally:
            self.server._close_conn(self.place, self.sock)


def _check_port_free(host: str, port: int) -> None:
    """Raise EADDRINUSE if something listens on host:port.

    The listeners bind with SO_REUSEPORT, which would let them share a port that another
    server (another process of this user) listens on; a probe bound without it fails instead.
    """
    import socket as _socket

    family, type_, proto, _name, address = _socket.getaddrinfo(
        host or None, port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE
    )[0]
    with _socket.socket(family, type_, proto) as probe:
        probe.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        probe.bind(address)


def _nodelay(raw: Any) -> None:
    import socket as _socket

    if raw.family in (_socket.AF_INET, _socket.AF_INET6):
        raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__


def _fmt(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr) or "unix"

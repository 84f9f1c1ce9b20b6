"""The HTTP/1.1 connection loop: one fiber moves bytes between a socket and the protocol.

``http_handler(app)`` turns ``app(request) -> Response`` into a TCP handler for
:class:`~fibernet.server.tcp.Server`.  Per connection: read a head (keep-alive idle timeout
before its first byte, an absolute deadline after it, empty lines included: 408), call the
app with a request whose body is pulled from the socket on demand (``Expect: 100-continue``
answered on the first read; 408 if no byte comes for ``body_timeout``, or if the body comes
slower than ``min_body_rate`` once ``body_rate_grace`` is over), send the response (chunked
for an iterable body on HTTP/1.1), drain what the app did not read of the body (up to
``max_drain``, else close), and go on while keep-alive holds.
Pipelined requests are answered in order because one fiber answers them one at a time.
Between requests an idle connection parks (``Parked``, see ``server/tcp.py``): its fiber
ends once idle for ``park_after`` (at once while its scheduler runs over ``park_over``
fibers), and a new one takes it on when bytes come, under the same keep-alive timeout.

A handler's exception gives a 500 and is logged; a bad request gives its status and a close.
An offer to upgrade the protocol (``Upgrade: h2c``) is ignored: the request is answered as
HTTP/1.1 (the app sees the Upgrade field); CONNECT gets 501.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fibernet.errors import Cancelled
from fibernet.http import BadWebSocketUpgrade, BodyTooLarge, Request, Response
from fibernet.net.sockets import Socket
from fibernet.runtime.scheduler import current_scheduler
from fibernet.server.http_protocol import (
    _BLANK,
    _DATE,
    _DEAD,
    _HEAD,
    _IDLE,
    END,
    HttpError,
    HttpLimits,
    RequestHead,
    ServerProtocol,
    _next_date,
    encode_head,
    error_response,
    fields_block,
    http_date,
)
from fibernet.server.metrics import BUCKETS, LATENCY, SUM, add, http_stats, new_counts
from fibernet.server.tcp import Parked
from fibernet.server.websocket import WebSocketLimits
from fibernet.server.websocket_upgrade import serve_upgrade

log = logging.getLogger("fibernet.http")
access_log = logging.getLogger("fibernet.access")

App = Callable[[Request], Response]
_RECV = 65536
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class HttpConfig:
    limits: HttpLimits = field(default_factory=HttpLimits)
    access_log: bool = False
    limit_concurrency: int | None = None  # connections served at once; beyond: 503 and close
    forwarded: Any = None  # a server.proxy.ForwardedPolicy: trusted proxies name the client
    websocket: WebSocketLimits = field(default_factory=WebSocketLimits)


class _Close(Exception):
    """End the connection quietly (the client went away or idled out)."""


class _Body:
    """The body source of one request: ``source()`` gives the next piece, b"" at the end
    (``Expect: 100-continue`` answered on the first call)."""

    __slots__ = ("conn", "expect", "done", "received", "waited")

    def __init__(self, conn: _Connection, expect: bool) -> None:
        self.conn = conn
        self.expect = expect  # the client waits for 100 Continue, not answered yet
        self.done = False
        self.received = 0  # body bytes so far
        self.waited = 0.0  # seconds spent waiting for them (the data rate's clock)

    def __call__(self) -> bytes:
        if self.done:
            return b""
        if self.expect:
            self.expect = False
            self.conn._send(_CONTINUE)
        event = self.conn._body_event(self)
        if event is END:
            self.done = True
            return b""
        self.received += len(event)
        return event


class _Connection(Parked):
    __slots__ = (
        "app",
        "config",
        "limits",
        "sock",
        "proto",
        "client",
        "_deadline",
        "answered",
        "counts",
        "_draining",
        "websocket",
        "_done",
        "_spare",
        "_forwarded",
        "park_timeout",
    )

    def __init__(
        self,
        app: App,
        config: HttpConfig,
        sock: Socket,
        draining: list[bool] | None = None,
        done: Callable[[_Connection], None] | None = None,
        spare: list[ServerProtocol] | None = None,
        counts: list[Any] | None = None,
    ) -> None:
        self.answered = 0  # requests answered (the server's request counter sums these)
        # By status class, and latency (fibernet.server.metrics): its own, or those of the
        # connections of its thread (which only that thread writes).
        self.counts = new_counts() if counts is None else counts
        self._draining = draining or [False]
        self.app = app
        self.config = config
        self.limits = config.limits
        self.sock = sock
        # With ``done``, the connection parks between requests (see Parked): ``done(self)``
        # when it ends, however it ends.  ``spare``: idle parsers, shared (and thread-safe:
        # a list's append and pop are atomic), one of which a resumed connection takes.
        self._done = done
        self._spare = spare
        self.proto: ServerProtocol | None = ServerProtocol(config.limits)
        try:
            client = sock.getpeername()
        except OSError:
            client = None
        if client.__class__ is tuple and client[0].__class__ is str:
            client = (sys.intern(client[0]), *client[1:])  # (one string for a client's connections)
        self.client = client
        # The proxy policy, if its peer is a trusted proxy (decided once: the peer stays)
        forwarded = config.forwarded
        self._forwarded = forwarded if forwarded is not None and forwarded.trusts(client) else None
        self._deadline: float | None = None
        self.park_timeout = config.limits.keepalive_timeout  # (see _park)
        self.websocket: Any = None  # the WebSocket that took the connection, if one did

    # -- reading ----------------------------------------------------------------------

    def _receive(self, timeout: float, on_timeout: HttpError | None) -> None:
        """Read once into the protocol, waiting at most ``timeout``."""
        self.sock.timeout = max(timeout, 0.0)
        try:
            data = self.sock.recv(_RECV)
        except TimeoutError:
            if on_timeout is None:
                raise _Close() from None
            raise on_timeout from None
        except OSError:
            raise _Close() from None
        self.proto.feed(data)
        if not data and not self.proto._events:
            raise _Close()

    def _next_head(self) -> RequestHead:
        """The next request head: what the loop's fast path does not handle (a head that
        comes in pieces, under its deadline; a dead parser; the wait before a head)."""
        proto = self.proto
        limits = self.limits
        events = proto._events
        while True:
            if events:
                event = events.popleft()
                if event.__class__ is HttpError:
                    raise event
                if event is END:
                    continue  # (not expected: a body's END is its reader's, or the drain's)
                return event
            if proto._state == _DEAD:
                raise _Close()
            if proto.in_head:
                if self._deadline is None:
                    self._deadline = time.monotonic() + limits.head_timeout
                self._receive(
                    self._deadline - time.monotonic(),
                    HttpError(408, f"request head not complete within {limits.head_timeout}s"),
                )
            else:
                # Between requests: the keep-alive wait, draining or not (see drain()).
                self._receive(limits.keepalive_timeout, None)
                if proto.in_head and self._deadline is None:
                    self._deadline = time.monotonic() + limits.head_timeout

    def _body_event(self, source: _Body) -> Any:
        """The next piece of a request body (bytes) or END, under the body's timeout and
        data rate (its clock runs only while the server waits for body bytes)."""
        # (the head loop's shape, written out: each loop is on the per-request path)
        events = self.proto._events
        limits = self.limits
        while True:
            if events:
                event = events.popleft()
                if event.__class__ is HttpError:
                    raise event
                return event
            if self.proto._state == _DEAD:
                raise _Close()
            timeout = limits.body_timeout
            on_timeout = HttpError(408, f"no request body bytes for {timeout}s")
            rate = limits.min_body_rate
            if rate:
                left = limits.body_rate_grace + source.received / rate - source.waited
                if left < timeout:
                    timeout = left
                    on_timeout = HttpError(408, f"request body slower than {rate:g} bytes/s")
                    if left <= 0:
                        raise on_timeout
            started = time.monotonic()
            try:
                self._receive(timeout, on_timeout)
            finally:
                source.waited += time.monotonic() - started

    def _drain(self, source: _Body) -> bool:
        """Read and drop what the app left of the body; False if the connection must close."""
        if source.done:
            return True
        if source.expect:
            return False  # the client waits for our go-ahead: it has sent no body; close
        left = self.limits.max_drain
        while left > 0:
            chunk = source()
            if not chunk:
                return True
            left -= len(chunk)
        return False

    # -- writing ----------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self.sock.timeout = self.limits.send_timeout
        try:
            self.sock.sendall(data)
        except TimeoutError:
            log.debug("client %s did not read for %ss; closing", self.client, self.limits.send_timeout)
            raise _Close() from None
        except OSError:
            raise _Close() from None

    def _prepare(
        self, head: RequestHead, response: Response, keep_alive: bool
    ) -> tuple[bytes, Any, bool, bool]:
        """The response head (validated: no header can split the response) and how to send
        the body: (bytes to send, an iterable body to stream or None, keep-alive, chunked)."""
        status = response.status
        headers = response.headers
        block, closes = fields_block(headers._items)
        if closes:
            keep_alive = False  # the app asks to close
        version = head.http_version
        body = response.body
        date = http_date()
        if status in (204, 304) or status < 200:
            # No content, so no Content-Length or Transfer-Encoding (RFC 9110 8.6, 9112 6.1).
            return encode_head(status, block, version, keep_alive, None, False, date), None, keep_alive, False
        with_body = head.method != "HEAD"
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = encode_head(status, block, version, keep_alive, len(body), False, date)
            if not with_body:
                return data, None, keep_alive, False
            data += body
            if keep_alive and version == "1.1" and body.__class__ is bytes:
                # Kept for the next time this Response is returned (a constant): then only
                # the date can differ.
                response._fast = (status, headers, len(headers._items), body, date, data)
            return data, None, keep_alive, False
        body = iter(body)  # (not iterable: a TypeError, so a 500 before any head is sent)
        chunked = version == "1.1"
        length = _declared_length(headers)
        if length is not None:  # the app knows the length (a WSGI file download, say)
            chunked = False
            body = _exactly(body, length)
        elif not chunked:
            keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        data = encode_head(status, block, version, keep_alive, length, chunked, date)
        return data, (body if with_body else None), keep_alive, chunked

    def _send_stream(self, body: Iterable[Any], chunked: bool) -> int:
        sent = 0
        for chunk in _chunks(body):
            if chunk:
                sent += len(chunk)
                self._send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            self._send(b"0\r\n\r\n")
        return sent

    # -- the upgrade hand-off ---------------------------------------------------------------

    def _upgrade(self, head: RequestHead) -> Response:
        """An upgrade request (not CONNECT): the app may take the connection with
        ``request.accept_websocket()``; then the WebSocket ends the connection (and a drain
        closes it with 1001).  If it does not, the offer is ignored (RFC 9110 7.8): its
        response is sent as for any request and the connection goes on as HTTP/1.1."""
        proto = self.proto
        try:
            response = serve_upgrade(self.app, self.sock, head, self.config.websocket, self, proto.take_held)
        finally:
            proto.release_held()  # (not taken: the bytes after the offer are HTTP/1.1's)
        if response is None:
            raise _Close()
        return response

    # -- the loop -------------------------------------------------------------------------

    def _serve(self, ready: bool = False) -> Parked | None:
        """Answer requests until the connection ends or parks (see :func:`_serve_conn`)."""
        return _serve_conn(self, ready)

    # -- parking (see tcp.Parked) -----------------------------------------------------------

    def resume(self, sock: Socket) -> Parked | None:
        """Bytes came on the parked connection: serve on (in a new fiber)."""
        return self.run(True)

    def parked_closed(self) -> None:
        """Closed while parked: its keep-alive timeout, or the end of a drain."""
        self._ended()

    def _park(self, waited: float = 0.0) -> _Connection:
        """Wait for the next request with no fiber, for what is left of the keep-alive
        timeout after ``waited`` seconds in the fiber (``park_timeout``): give the parser
        back to the spare ones (it is between requests, with nothing left of the last one)."""
        self.park_timeout = max(0.0, self.limits.keepalive_timeout - waited)
        proto = self.proto
        spare = self._spare
        if proto is not None and spare is not None and len(spare) < _MAX_SPARE and proto.clean():
            spare.append(proto)
        self.proto = None
        return self

    def _ended(self) -> None:
        done = self._done
        if done is not None:
            self._done = None
            done(self)

    def run(self, ready: bool = False) -> Parked | None:
        """Serve until the connection ends (None) or parks (self: the server resumes it).
        ``ready``: bytes came (a resume): read them before parking again."""
        try:
            if self.proto is None:
                spare = self._spare
                try:
                    self.proto = spare.pop()  # type: ignore[union-attr]
                except (IndexError, AttributeError):
                    self.proto = ServerProtocol(self.limits)
            parked = _serve_conn(self, ready)
            if parked is not None:
                return parked
        except _Close:
            pass
        except HttpError as error:
            log.debug("bad request from %s: %s", self.client, error)
            self.counts[error.status // 100] += 1
            try:
                self.sock.timeout = self.limits.send_timeout
                self.sock.sendall(error_response(error))
            except OSError:
                pass
        except BaseException:
            self._ended()
            raise
        self._ended()
        return None


def _serve_conn(conn: _Connection, ready: bool = False) -> Parked | None:
    """Answer requests one at a time until the connection ends (raises _Close or
    HttpError), or parks between requests (returns conn).  The common case -- a whole
    bodiless request in one read, a bytes response the app returned before -- runs
    inline, in this one frame."""
    proto = conn.proto
    assert proto is not None
    events = proto._events
    sock = conn.sock
    recv = sock.recv
    sendall = sock.sendall
    # A plain socket (not TLS) is called directly in the compiled copy (typed there).
    plain = sock if sock.__class__ is Socket else None
    limits = conn.limits
    keepalive_timeout = limits.keepalive_timeout
    send_timeout = limits.send_timeout
    app = conn.app
    client = conn.client
    # (a TLSSocket's is "https"; a plain one has none: no getattr, whose miss raises inside)
    scheme = "http" if plain is not None else getattr(sock, "scheme", "http")
    forwarded = conn._forwarded  # (None for an untrusted peer: its X-Forwarded-* are ignored)
    draining = conn._draining
    access = conn.config.access_log
    date = _DATE
    clock = time.time
    monotonic = time.monotonic
    counts = conn.counts
    latency, total, fastest = LATENCY, SUM, BUCKETS[0]
    # Park between requests (once idle for park_after) if the server can: not a TLS socket.
    sched = current_scheduler()
    parks = (
        conn._done is not None
        and plain is not None
        and sched is not None
        and limits.park_after < keepalive_timeout
    )
    park_after = limits.park_after
    park_over = limits.park_over
    while True:
        # -- the next request head
        if events:
            event = events.popleft()
            if event is END:
                continue  # (not expected: a body's END is its reader's, or the drain's)
            if event.__class__ is HttpError:
                raise event
            head = event
        elif proto._state == _IDLE:
            # Between requests: wait for the next one, for the keep-alive timeout,
            # draining or not (see drain() in http_handler).  Parked, with no fiber,
            # if the server can; else in this fiber.
            if ready:  # resumed: bytes came
                ready = False
                try:
                    data = sock.recv_nowait(_RECV)
                except OSError:
                    raise _Close() from None
                if data is None:
                    return conn._park()
            elif parks:
                if not park_after or sched.fiber_count() > park_over:
                    return conn._park()
                plain.timeout = park_after
                try:
                    data = plain.recv(_RECV)
                except TimeoutError:
                    return conn._park(park_after)  # idle: wait on with no fiber
                except OSError:
                    raise _Close() from None
            else:
                sock.timeout = keepalive_timeout
                try:
                    data = recv(_RECV)
                except OSError:  # (a timeout too: an idle keep-alive connection ends quietly)
                    raise _Close() from None
            if not data:
                raise _Close()
            proto.feed(data)
            if not events and _BLANK <= proto._state <= _HEAD:  # (a head begun, or empty lines)
                conn._deadline = time.monotonic() + limits.head_timeout  # from the first byte
            continue
        else:
            head = conn._next_head()
            conn._deadline = None  # (only a head that came in pieces had one)
        if head.upgrade and head.method == "CONNECT":  # (another upgrade offer is ignored)
            raise HttpError(501, "CONNECT not supported")
        head.client = client
        head.scheme = scheme
        if forwarded is not None and head._proxied:  # (a field the policy reads came)
            forwarded.apply(head)
        if head._body is None:  # a body to read on demand
            source = head._body_source = _Body(conn, head.expect_continue)
        else:
            source = None
        started = monotonic()
        # -- the app
        try:
            answer = app(head) if not head.upgrade else conn._upgrade(head)
            if answer.__class__ is not Response and not isinstance(answer, Response):
                raise TypeError(f"the app returned {type(answer).__name__}, not a Response")
            response = answer
            # A client still waiting for 100 Continue may send the body or not: close after it.
            keep_alive = (
                head.keep_alive
                and not draining[0]  # while draining: answer with Connection: close
                and (source is None or not source.expect)
            )
            fast = response._fast
            if (
                fast is not None
                and keep_alive
                and fast[3] is response.body
                and fast[1] is response.headers
                and fast[0] == response.status
                and fast[2] == len(fast[1]._items)
                and head.http_version == "1.1"
                and head.method != "HEAD"
            ):
                # The same keep-alive response as last time: the same bytes, unless
                # the date has moved on.
                now = clock()
                date_from = date[0]
                date_until = date[2]
                if not date_from <= now < date_until:
                    _next_date()
                if fast[4] is date[1]:
                    data = fast[5]
                    stream = None
                else:
                    data, stream, keep_alive, chunked = conn._prepare(head, response, keep_alive)
            else:
                data, stream, keep_alive, chunked = conn._prepare(head, response, keep_alive)
        except (Cancelled, HttpError, _Close):
            raise
        except BodyTooLarge:
            raise HttpError(413, "request body too large") from None
        except BadWebSocketUpgrade as error:
            raise HttpError(400, str(error)) from None
        except Exception:
            log.exception("app failed on %s %s from %s", head.method, head.target, _fmt(client))
            response = _INTERNAL_ERROR
            keep_alive = head.keep_alive and (source is None or not source.expect)
            data, stream, keep_alive, chunked = conn._prepare(head, response, keep_alive)
        # -- the response
        try:
            if plain is not None:
                plain.timeout = send_timeout
                plain.sendall(data)
            else:
                sock.timeout = send_timeout
                sendall(data)
        except TimeoutError:
            log.debug("client %s did not read for %ss; closing", client, send_timeout)
            raise _Close() from None
        except OSError:
            raise _Close() from None
        if stream is not None:
            try:
                sent = conn._send_stream(stream, chunked)
            except _Close:
                raise
            except Exception:
                # Too late for a 500: the head is out.  Cut the connection so the client
                # sees a truncated response, not a complete one.
                log.exception(
                    "response body of %s %s failed after its head was sent; connection cut",
                    head.method,
                    head.target,
                )
                raise _Close() from None
        conn.answered += 1
        elapsed = monotonic() - started
        counts[response.status // 100] += 1
        if elapsed < fastest:  # (most requests: no bisect)
            counts[latency] += 1
        else:
            counts[latency + bisect_left(BUCKETS, elapsed)] += 1
        counts[total] += elapsed
        if access:
            if stream is None:
                body = response.body
                sent = len(body) if isinstance(body, (bytes, bytearray)) else 0
            access_log.info(
                '%s - "%s %s HTTP/%s" %d %d %.1fms',
                _fmt(client),
                head.method,
                head.target,
                head.http_version,
                response.status,
                sent,
                elapsed * 1000,
            )
        if not keep_alive:
            return None
        if source is not None:
            try:
                if not conn._drain(source):
                    return None
            except HttpError as error:  # the response is out: no second one for the same request
                log.debug("bad request body from %s after the response: %s", client, error)
                raise _Close() from None


def _chunks(body: Iterable[Any]) -> Iterable[bytes]:
    for chunk in body:
        if chunk.__class__ is bytes:
            yield chunk
        elif isinstance(chunk, str):
            yield chunk.encode()
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            yield bytes(chunk)
        else:
            raise TypeError(f"the response body gave a {type(chunk).__name__}, not bytes or str")


def _declared_length(headers: Any) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def _exactly(body: Iterable[Any], length: int) -> Iterable[bytes]:
    """An iterable body held to the Content-Length its app declared: cut at it, and an
    error (the connection is cut, so the client sees a truncated response) if it is short."""
    left = length
    for chunk in _chunks(body):
        if len(chunk) >= left:
            if len(chunk) > left:
                log.warning("response body longer than its Content-Length of %d; cut", length)
            yield chunk[:left]
            return
        left -= len(chunk)
        yield chunk
    if left:
        raise ValueError(f"response body {length - left} bytes, shorter than its Content-Length of {length}")


def _fmt(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


_MAX_SPARE = 64  # idle parsers kept for parked connections that resume
_INTERNAL_ERROR = Response(500, b"internal server error\n", content_type="text/plain")
_OVERLOADED = error_response(HttpError(503, "server overloaded, try again"))


def http_handler(app: App, config: HttpConfig | None = None, *, park: bool = True) -> Callable[[Socket], Any]:
    """A TCP connection handler that serves the HTTP app ``app``.

    With ``park`` (for a :class:`~fibernet.server.tcp.Server`), a connection idle between
    requests is returned as a :class:`~fibernet.server.tcp.Parked` that the server resumes
    when bytes come: an idle keep-alive connection holds no fiber.  Without, each
    connection's fiber waits in the handler until the connection ends."""
    if not callable(app):
        raise TypeError(f"app must be callable, not {type(app).__name__}")
    config = config or HttpConfig()
    limit = config.limit_concurrency
    lock = threading.Lock()
    active = [0]

    draining = [False]
    conns: set[_Connection] = set()

    def drain() -> None:
        """The server drains: each connection's next response says ``Connection: close``
        and ends it.  An idle keep-alive connection is not closed early (as Go's Shutdown
        does): its client may be sending a request on it at this very moment, and would
        see the connection end with no answer -- a request lost, each time a rolling
        restart retires a worker.  It keeps waiting for the keep-alive timeout, the one
        moment a client knows the server may close it; a request that comes meanwhile is
        answered, with ``Connection: close``.  (The server cancels what is left at the
        end of the grace period.)  A WebSocket is closed with 1001, going away."""
        draining[0] = True
        with lock:
            websockets = [c.websocket for c in conns if c.websocket is not None]
        for ws in websockets:
            ws.going_away()

    def handle(sock: Socket) -> None:
        if limit is not None:
            with lock:
                over = active[0] >= limit
                if not over:
                    active[0] += 1
            if over:
                sock.timeout = config.limits.send_timeout
                try:
                    sock.sendall(_OVERLOADED)
                except OSError:
                    pass
                with lock:
                    closed_counts[5] += 1
                return
        counts = per_thread.get(threading.get_ident())
        if counts is None:
            with lock:
                counts = per_thread.setdefault(threading.get_ident(), new_counts())
        if park:
            conn = _Connection(app, config, sock, draining, ended, spare, counts)
            with lock:
                conns.add(conn)
            return conn.run()  # (it calls ended() when it ends, now or once parked)
        conn = _Connection(app, config, sock, draining, counts=counts)
        with lock:
            conns.add(conn)
        try:
            conn.run()
        finally:
            ended(conn)
        return None

    def ended(conn: _Connection) -> None:
        with lock:
            conns.discard(conn)
            closed[0] += conn.answered
            if limit is not None:
                active[0] -= 1

    spare: list[ServerProtocol] = []  # parsers of parked connections (see _Connection._park)

    # Requests answered: those of the connections that ended, and those of the open ones
    # so far (each connection counts its own, with no lock on the way).  The status and
    # latency counts of each thread's connections: only that thread writes its list (no
    # lock, and no list per connection: an idle one costs less).
    closed = [0]
    closed_counts = new_counts()  # (503s for connections over limit_concurrency)
    per_thread: dict[int, list[Any]] = {}

    def stats() -> dict[str, Any]:
        with lock:
            counts = list(closed_counts)
            for thread_counts in per_thread.values():
                add(counts, thread_counts)
            return {"requests": closed[0] + sum(c.answered for c in conns), "http": http_stats(counts)}

    handle.app = app  # type: ignore[attr-defined]
    handle.config = config  # type: ignore[attr-defined]
    handle.stats = stats  # type: ignore[attr-defined]
    handle.drain = drain  # type: ignore[attr-defined]
    return handle


def http_server(
    app: App,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    threads: int = 1,
    access_log: bool = False,
    limit_concurrency: int | None = None,
    forwarded: Any = None,
    **options: Any,
) -> Any:
    """A :class:`~fibernet.server.tcp.Server` that serves the HTTP app ``app``.

    ``options`` may name any field of :class:`HttpLimits` (``max_body_size=...``,
    ``keepalive_timeout=...``), any of :class:`WebSocketLimits` with ``ws_`` before it
    (``ws_max_size=...``) and any option of the TCP server (``max_connections=...``,
    ``ssl=...``, ``proxy_protocol=True``); ``forwarded`` a
    :class:`~fibernet.server.proxy.ForwardedPolicy` (trusted proxies' X-Forwarded-*).
    """
    from fibernet.server.tcp import Server

    http_fields = set(HttpLimits.__dataclass_fields__)
    limits = HttpLimits(**{k: v for k, v in options.items() if k in http_fields})
    ws_fields = {"ws_" + name for name in WebSocketLimits.__dataclass_fields__}
    ws_options = {k[3:]: v for k, v in options.items() if k in ws_fields}
    ws_options.setdefault("send_timeout", limits.send_timeout)  # (one send timeout for both)
    websocket = WebSocketLimits(**ws_options)
    tcp_options = {k: v for k, v in options.items() if k not in http_fields and k not in ws_fields}
    tcp_options.setdefault("idle_timeout", None)  # HTTP keeps its own, finer timeouts
    config = HttpConfig(limits, access_log, limit_concurrency, forwarded, websocket)
    name = tcp_options.pop("name", None) or getattr(app, "__qualname__", "http")
    return Server(http_handler(app, config), host, port, threads=threads, name=name, **tcp_options)


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.server._c_http")

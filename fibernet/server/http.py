"""The HTTP/1.1 connection loop: one fiber moves bytes between a socket and the protocol.

``http_handler(app)`` turns ``app(request) -> Response`` into a TCP handler for
:class:`~fibernet.server.tcp.Server`.  Per connection: read a head (keep-alive idle timeout
before its first byte, an absolute deadline after it: 408), call the app with a request whose
body is pulled from the socket on demand (``Expect: 100-continue`` answered on the first
read), send the response (chunked for an iterable body on HTTP/1.1), drain what the app did
not read of the body (up to ``max_drain``, else close), and go on while keep-alive holds.
Pipelined requests are answered in order because one fiber answers them one at a time.

A handler's exception gives a 500 and is logged; a bad request gives its status and a close.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fibernet.errors import Cancelled
from fibernet.http import BodyTooLarge, Headers, Request, Response
from fibernet.net.sockets import Socket
from fibernet.server.http_protocol import (
    END,
    HttpError,
    HttpLimits,
    RequestHead,
    ServerProtocol,
    error_response,
    head_of,
)

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


class _Close(Exception):
    """End the connection quietly (the client went away or idled out)."""


class _Connection:
    __slots__ = (
        "app",
        "config",
        "limits",
        "sock",
        "proto",
        "client",
        "_deadline",
        "answered",
        "idle",
        "_draining",
        "_counted",
    )

    def __init__(
        self,
        app: App,
        config: HttpConfig,
        sock: Socket,
        draining: list[bool] | None = None,
        counted: Callable[[], None] | None = None,
    ) -> None:
        self._counted = counted or _nothing
        self.answered = 0
        self.idle = False  # waiting for the first byte of a next request
        self._draining = draining or [False]
        self.app = app
        self.config = config
        self.limits = config.limits
        self.sock = sock
        self.proto = ServerProtocol(config.limits)
        try:
            self.client = sock.getpeername()
        except OSError:
            self.client = None
        self._deadline: float | None = None

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
        except (ConnectionError, OSError):
            raise _Close() from None
        self.proto.feed(data)
        if not data and not self.proto._events:
            raise _Close()

    def _event(self, waiting_for_head: bool) -> Any:
        proto = self.proto
        limits = self.limits
        events = proto._events
        while True:
            if events:
                event = events.popleft()
                if event.__class__ is HttpError:
                    raise event
                if event is END and waiting_for_head:
                    continue  # the end of a request that had no body to read
                return event
            if proto.dead:
                raise _Close()
            if waiting_for_head:
                if proto.in_head:
                    if self._deadline is None:
                        self._deadline = time.monotonic() + limits.head_timeout
                    self._receive(
                        self._deadline - time.monotonic(),
                        HttpError(408, f"request head not complete within {limits.head_timeout}s"),
                    )
                else:
                    # Between requests: a server that drains ends the connection here.
                    self.idle = True
                    try:
                        # (a connection that has had no request yet is given its first one)
                        if self._draining[0] and self.answered:
                            raise _Close()
                        self._receive(limits.keepalive_timeout, None)
                    finally:
                        self.idle = False
                    if proto.in_head and self._deadline is None:
                        self._deadline = time.monotonic() + limits.head_timeout
            else:
                self._receive(
                    limits.body_timeout, HttpError(408, f"no request body bytes for {limits.body_timeout}s")
                )

    def _body_source(self, head: RequestHead) -> Callable[[], bytes]:
        if not head.chunked and not head.content_length:
            return _NO_BODY
        state = {"continue": head.expect_continue, "done": False}

        def next_chunk() -> bytes:
            if state["done"]:
                return b""
            if state["continue"]:
                state["continue"] = False
                self._send(_CONTINUE)
            event = self._event(False)
            if event is END:
                state["done"] = True
                return b""
            return event

        next_chunk.state = state  # type: ignore[attr-defined]
        return next_chunk

    def _drain(self, source: Callable[[], bytes]) -> bool:
        """Read and drop what the app left of the body; False if the connection must close."""
        state = source.state  # type: ignore[attr-defined]
        if state["done"]:
            return True
        if state["continue"]:
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
        except (ConnectionError, OSError):
            raise _Close() from None

    def _prepare(
        self, head: RequestHead, response: Response, keep_alive: bool
    ) -> tuple[bytes, Any, bool, bool]:
        """The response head (validated: no header can split the response) and how to send the body."""
        body = response.body
        if response.status in (204, 304) or response.status < 200:
            # No content, so no Content-Length or Transfer-Encoding (RFC 9110 8.6, 9112 6.1).
            return head_of(response, head.version, keep_alive, None, False), None, keep_alive, False
        with_body = head.method != "HEAD"
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = head_of(response, head.version, keep_alive, len(body), False)
            return (data + body if with_body and body else data), None, keep_alive, False
        chunked = head.version == "1.1"
        if not chunked:
            keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        data = head_of(response, head.version, keep_alive, None, chunked)
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

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while self._serve_one():
                pass
        except _Close:
            pass
        except HttpError as error:
            log.debug("bad request from %s: %s", self.client, error)
            try:
                self.sock.timeout = self.limits.send_timeout
                self.sock.sendall(error_response(error))
            except OSError:
                pass

    def _serve_one(self) -> bool:
        self._deadline = None
        head = self._event(True)
        self._deadline = None
        if head.upgrade:
            raise HttpError(
                501, f"{'CONNECT' if head.method == 'CONNECT' else 'protocol upgrade'} not supported"
            )
        source = self._body_source(head)
        request = Request(head.method, head.target, head.headers, head.version, self.client, source)
        started = time.monotonic() if self.config.access_log else 0.0
        try:
            response = self.app(request)
            if not isinstance(response, Response):
                raise TypeError(f"the app returned {type(response).__name__}, not a Response")
            # A client still waiting for 100 Continue may send the body or not: close after this.
            keep_alive = (
                head.keep_alive
                and not _asks_close(response.headers)
                and not source.state["continue"]
                and not self._draining[0]  # while draining: answer with Connection: close
            )
            data, stream, keep_alive, chunked = self._prepare(head, response, keep_alive)
        except (Cancelled, HttpError, _Close):
            raise
        except BodyTooLarge:
            raise HttpError(413, "request body too large") from None
        except Exception:
            log.exception("app failed on %s %s from %s", head.method, head.target, _fmt(self.client))
            response = _INTERNAL_ERROR
            keep_alive = head.keep_alive and not source.state["continue"]
            data, stream, keep_alive, chunked = self._prepare(head, response, keep_alive)
        self._send(data)
        sent = len(response.body) if stream is None and isinstance(response.body, (bytes, bytearray)) else 0
        if stream is not None:
            try:
                sent = self._send_stream(stream, chunked)
            except _Close:
                raise
            except Exception:
                # Too late for a 500: the head is out.  Cut the connection so the client
                # sees a truncated response, not a complete one.
                log.exception("response body of %s %s failed", head.method, head.target)
                raise _Close() from None
        self.answered += 1
        self._counted()
        if self.config.access_log:
            access_log.info(
                '%s - "%s %s HTTP/%s" %d %d %.1fms',
                _fmt(self.client),
                head.method,
                head.target,
                head.version,
                response.status,
                sent,
                (time.monotonic() - started) * 1000,
            )
        try:
            return keep_alive and self._drain(source)
        except HttpError as error:  # the response is out: no second one for the same request
            log.debug("bad request body from %s after the response: %s", self.client, error)
            raise _Close() from None


def _asks_close(headers: Headers) -> bool:
    value = headers.get("connection")
    return value is not None and "close" in value.lower()


def _chunks(body: Iterable[Any]) -> Iterable[bytes]:
    for chunk in body:
        yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)


def _fmt(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def _nothing() -> None:
    pass


def _no_body() -> bytes:
    return b""


_no_body.state = {"continue": False, "done": True}  # type: ignore[attr-defined]
_NO_BODY = _no_body
_INTERNAL_ERROR = Response(500, b"internal server error\n", content_type="text/plain")
_OVERLOADED = error_response(HttpError(503, "server overloaded, try again"))


def http_handler(app: App, config: HttpConfig | None = None) -> Callable[[Socket], None]:
    """A TCP connection handler that serves the HTTP app ``app``."""
    if not callable(app):
        raise TypeError(f"app must be callable, not {type(app).__name__}")
    config = config or HttpConfig()
    limit = config.limit_concurrency
    lock = threading.Lock()
    active = [0]

    draining = [False]
    conns: set[_Connection] = set()

    def drain() -> None:
        """The server drains: end idle keep-alive connections now, the others after the
        response in flight (with ``Connection: close``), as Go's Shutdown does."""
        draining[0] = True
        with lock:
            idle = [c for c in conns if c.idle and c.answered]
        for conn in idle:
            conn.sock.interrupt_wait()  # its keep-alive wait ends now, as if timed out

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
                return
        conn = _Connection(app, config, sock, draining, count)
        with lock:
            conns.add(conn)
        try:
            conn.run()
        finally:
            with lock:
                conns.discard(conn)
                if limit is not None:
                    active[0] -= 1

    requests = [0]

    def count() -> None:
        with lock:
            requests[0] += 1

    def stats() -> dict[str, int]:
        return {"requests": requests[0]}

    handle.app = app  # type: ignore[attr-defined]
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
    **options: Any,
) -> Any:
    """A :class:`~fibernet.server.tcp.Server` that serves the HTTP app ``app``.

    ``options`` may name any field of :class:`HttpLimits` (``max_body_size=...``,
    ``keepalive_timeout=...``) and any TCP limit (``max_connections=...``).
    """
    from fibernet.server.tcp import Server

    http_fields = set(HttpLimits.__dataclass_fields__)
    limits = HttpLimits(**{k: v for k, v in options.items() if k in http_fields})
    tcp_options = {k: v for k, v in options.items() if k not in http_fields}
    tcp_options.setdefault("idle_timeout", None)  # HTTP keeps its own, finer timeouts
    config = HttpConfig(limits, access_log, limit_concurrency)
    name = tcp_options.pop("name", None) or getattr(app, "__qualname__", "http")
    return Server(http_handler(app, config), host, port, threads=threads, name=name, **tcp_options)

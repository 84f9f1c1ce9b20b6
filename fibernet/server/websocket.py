"""WebSocket (RFC 6455) on an HTTP connection: wsproto (sans-IO) driven by fibers.

An HTTP app takes a WebSocket from its request, ``ws = request.accept_websocket()``, and
talks on it in the connection's own fiber: ``recv()``, ``send()``, ``close()``, iteration, and
``recv_op()`` for a choice.  When the app returns, the connection is closed with the close
handshake.  wsproto does the handshake (``initiate_upgrade_connection`` over the head that
httptools parsed), framing, UTF-8 checks and permessage-deflate; this module moves bytes.

Why a reader fiber and a channel (not an operation over socket readiness): every WebSocket
has a reader fiber that reads the stream, feeds wsproto, answers pings and the peer's close,
and puts each whole message into a bounded channel.  ``recv_op()`` is then that channel's
``get_op`` (with the end of the stream as a second branch), so it sits in any choice, and a
choice that picks another branch loses nothing: a message stays in the channel until a get
takes it.  A readiness operation would have to parse inside the poller's callback, could not
answer a ping when the app is not receiving (a push-only app would never see the peer's
close), and would be wrong over TLS, where decrypted bytes wait in the TLS object and not in
the kernel.  The cost is one fiber per WebSocket and a channel hand-off per message.  The
stream is only ever read by the reader; writes (the app's sends, the reader's pongs and close
replies, keep-alive pings) are serialised by a one-slot channel used as a lock, since wsproto
must turn events into bytes in the order the bytes go out.  Nothing here touches the raw
socket: the connection's stream (``recv``, ``sendall``, ``shutdown``, ``close``) may be TLS.

Limits (:class:`WebSocketLimits`): the message size (1009 beyond it), the messages queued for
``recv`` (reading pauses beyond it: backpressure), the ping interval and timeout (a peer
that sends nothing for an interval is pinged; one that still sends nothing within the timeout
is dropped with 1011), the close handshake deadline, a send deadline, permessage-deflate.
A bad frame (wsproto's ``ParseFailed``) closes that connection with its code (1002, 1007).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from fibernet.errors import Cancelled, ChannelClosed
from fibernet.http import WebSocketClosed
from fibernet.ops.channel import Channel
from fibernet.ops.condition import Condition
from fibernet.ops.operation import Operation, choice, guard, perform, wrap
from fibernet.ops.timers import wait_op
from fibernet.runtime.scheduler import current_fiber, current_scheduler, spawn

log = logging.getLogger("fibernet.websocket")

_RECV = 65536
# With permessage-deflate, wsproto inflates what it is fed with no bound (deflate reaches
# ~1000:1), before the message size can be checked: feed it less at a time.
_RECV_DEFLATE = 4096
_NO_STATUS = 1005
_ABNORMAL = 1006
_INTERNAL = 1011


@dataclass(frozen=True)
class WebSocketLimits:
    max_size: int = 1024 * 1024  # bytes (characters for text) in one message; beyond: 1009
    max_queue: int = 16  # whole messages waiting for recv(); beyond: reading pauses
    ping_interval: float | None = 20.0  # ping a peer silent this long (None: never)
    ping_timeout: float = 20.0  # then drop it (1011) if it stays silent this long
    close_timeout: float = 5.0  # wait this long for the peer's close reply, then cut
    send_timeout: float = 30.0  # a send the peer does not read for this long cuts the connection
    per_message_deflate: bool = True  # accept permessage-deflate when the client offers it

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if name == "per_message_deflate" or (name == "ping_interval" and value is None):
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")


class WebSocket:
    """One accepted WebSocket.  Use it from the fiber that accepted it (the connection's)."""

    def __init__(
        self,
        stream: Any,
        proto: WSConnection,
        limits: WebSocketLimits,
        name: str,
        deflate: bool = False,
        held: bytes = b"",
    ) -> None:
        self.stream = stream
        self._held = held  # bytes the client sent before the 101 came: the reader's first
        self._recv_size = _RECV_DEFLATE if deflate else _RECV
        self.limits = limits
        self.subprotocol: str | None = None
        self.close_code: int | None = None  # set once the WebSocket is closed
        self.close_reason = ""
        self._proto = proto
        self._incoming: Channel = Channel(limits.max_queue)
        self._ended = Condition()  # the reader is done: no message will come
        self._closing = Condition()  # we sent a close (or gave up): the reader drops messages
        self._lock: Channel = Channel(1)  # holding it = a slot filled: writes go in order
        self._sending_since: float | None = None
        self._received = 0  # bytes read, for the keep-alive
        self._home = current_scheduler()
        self._reader = spawn(self._read_loop, name=f"ws-reader {name}")
        spawn(self._keepalive, name=f"ws-keepalive {name}")

    def __repr__(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<WebSocket {state}>"

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    # -- receiving ------------------------------------------------------------------------

    def recv(self) -> str | bytes:
        """The next message (str for text, bytes for binary); raises :class:`WebSocketClosed`
        (with the close code) once the WebSocket is closed and no message is left."""
        try:
            return self._incoming.get()  # (closed by the reader when it ends: drained first)
        except ChannelClosed:
            raise self._closed_error() from None

    def recv_op(self) -> Operation:
        """An operation that completes with the next message, or raises
        :class:`WebSocketClosed`: ``choice(ws.recv_op(), wait_op(30))`` is an idle timeout."""
        return guard(self._make_recv_op)

    def _make_recv_op(self) -> Operation:
        # The reader signals _ended, then closes the channel, with no switch between (both its
        # fibers and this one run on the connection's scheduler).  So a perform that blocked
        # before the end is completed by the _ended branch; one that starts after it meets a
        # closed channel, whose get would raise ChannelClosed: it is given the end here.
        if self._incoming.closed:
            return wrap(self._ended.wait_op(), self._after_end)
        return choice(self._incoming.get_op(), wrap(self._ended.wait_op(), self._after_end))

    def _after_end(self) -> str | bytes:
        # Both branches may be ready at once: messages that came before the close go first.
        incoming = self._incoming
        if len(incoming) or not incoming.closed:  # (a closed, empty channel raises on get)
            message = incoming.try_get(_EMPTY)
            if message is not _EMPTY:
                return message
        raise self._closed_error()

    def _closed_error(self) -> WebSocketClosed:
        return WebSocketClosed(self.close_code or _ABNORMAL, self.close_reason)

    def __iter__(self) -> Iterator[str | bytes]:
        """The messages until the WebSocket closes (then the iteration ends quietly)."""
        while True:
            try:
                yield self.recv()
            except WebSocketClosed:
                return

    # -- sending ----------------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Send a text (str) or binary (bytes-like) message; raises :class:`WebSocketClosed`
        if the WebSocket is closed or closing."""
        if isinstance(message, str):
            event: Any = TextMessage(data=message)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            event = BytesMessage(data=bytes(message))
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
        if not self._write(event):
            raise WebSocketClosed(self.close_code or _ABNORMAL, self.close_reason)

    def ping(self, payload: bytes = b"") -> None:
        self._write(Ping(payload=payload))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake and wait (up to the close deadline) for the peer's reply;
        then the connection ends.  Does nothing if already closed.  ``code`` is one a
        peer may send (RFC 6455 7.4): 1000-1003, 1007-1014, or 3000-4999 for applications."""
        if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
            raise ValueError(f"{code} is not a close code an endpoint may send")
        if self.close_code is not None or self._closing.signalled:
            return
        self._closing.signal()
        sent = self._write(CloseConnection(code=code, reason=reason or None))
        if sent and self._wait(self._ended, self.limits.close_timeout):
            return
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._abort()

    def going_away(self) -> None:
        """Close with 1001 (the server is shutting down), from a fiber of the WebSocket's own
        scheduler; callable from any thread.  The app's ``recv`` then raises WebSocketClosed."""
        if self.close_code is None and not self._closing.signalled:
            try:
                spawn(self.close, 1001, "server shutting down", name="ws-going-away", scheduler=self._home)
            except Exception:  # noqa: BLE001 - the scheduler is stopping: the cancel will do
                pass

    def _write(self, event: Any, wait: bool = True) -> bool:
        """Turn ``event`` into bytes and send them, in turn; False if it cannot go out (the
        WebSocket is closed, the stream broke, or ``wait`` is False and a send is going on)."""
        lock = self._lock
        if not lock.try_put(True):
            if not wait:
                return False
            lock.put(True)
        try:
            try:
                data = self._proto.send(event)
            except LocalProtocolError:  # closed, or closing: nothing more goes out
                return False
            self._sending_since = time.monotonic()
            self.stream.timeout = self.limits.send_timeout
            self.stream.sendall(data)
            return True
        except OSError:  # (TimeoutError too: the peer did not read)
            self._abort()
            return False
        finally:
            self._sending_since = None
            lock.try_get()

    # -- the reader and the keep-alive ----------------------------------------------------

    def _read_loop(self) -> None:
        proto = self._proto
        stream = self.stream
        max_size = self.limits.max_size
        recv_size = self._recv_size
        parts: list = []
        size = 0
        try:
            data, self._held = self._held, b""
            while True:
                if not data:
                    stream.timeout = None  # (the keep-alive fiber bounds silence)
                    try:
                        data = stream.recv(recv_size)
                    except TimeoutError:  # a writer's timeout, set while this read waited again
                        continue
                    except OSError:
                        data = b""
                if not data:
                    self._end(_ABNORMAL, "the connection ended without a close frame")
                    return
                self._received += len(data)
                proto.receive_data(data)
                data = b""
                for event in proto.events():
                    if isinstance(event, Message):
                        size += len(event.data)
                        if size > max_size:
                            self._fail(1009, f"message over {max_size} bytes")
                            return
                        parts.append(event.data)
                        if event.message_finished:
                            message = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                            parts = []
                            size = 0
                            self._deliver(message)
                    elif isinstance(event, Ping):
                        self._write(event.response())
                    elif isinstance(event, CloseConnection):
                        self._on_close(event)
                        return
                    # (a Pong needs nothing: any byte that comes counts as life)
        except Cancelled:
            self._end(_ABNORMAL, "cancelled")
        except Exception:  # a bug, here or in wsproto: this connection only
            log.exception("WebSocket reader failed; closing the connection")
            self.close_code, self.close_reason = _INTERNAL, "server error"
            self._abort()
        finally:
            if not self._ended.signalled:
                self._end(_ABNORMAL, "the reader stopped")

    def _deliver(self, message: str | bytes) -> None:
        # Blocks while max_queue messages wait (backpressure), unless we close meanwhile.
        if not self._incoming.try_put(message):
            perform(choice(self._incoming.put_op(message), self._closing.wait_op()))

    def _on_close(self, event: CloseConnection) -> None:
        proto = self._proto
        if proto.state is ConnectionState.REMOTE_CLOSING:  # the peer's close: reply in kind
            self._write(event.response())
        elif proto.state is ConnectionState.OPEN:  # wsproto found a bad frame: fail with its code
            self._fail(event.code, event.reason or "")
            return
        code = event.code if event.code != _NO_STATUS else 1005
        self._end(int(code), event.reason or "")
        self._shutdown()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the WebSocket (RFC 6455 7.1.7): send a close with ``code`` and end."""
        log.debug("closing WebSocket with %d: %s", code, reason)
        self._closing.signal()
        self._write(CloseConnection(code=code, reason=reason[:120] or None))
        self._end(code, reason)
        self._shutdown()

    def _end(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._closing.signal()
        self._ended.signal()
        self._incoming.close()  # (after _ended: see _make_recv_op)

    def _shutdown(self) -> None:
        """The close handshake is over: the server closes the TCP connection first (RFC 6455
        7.1.1); the descriptor itself is the connection's to close."""
        try:
            self.stream.shutdown()
        except OSError:
            pass

    def _abort(self) -> None:
        """Give up on the peer: end the reader and cut the stream (waking any fiber in it)."""
        if self.close_code is None:
            self.close_code, self.close_reason = _ABNORMAL, "connection cut"
        self._closing.signal()
        self._ended.signal()
        self._incoming.close()
        if current_fiber() is not self._reader:
            self._reader.cancel()
        self.stream.close()

    def _keepalive(self) -> None:
        """Pings a silent peer, and bounds a send the peer does not read.  (A send's own
        socket timeout is not enough: the stream has one wait deadline, and the reader's
        wait ending clears it.)"""
        limits = self.limits
        interval = limits.ping_interval
        ended = self._ended
        seen = -1
        while not self._wait(ended, interval or limits.send_timeout / 2):
            since = self._sending_since
            if since is not None and time.monotonic() - since > limits.send_timeout:
                log.debug("WebSocket peer did not read for %ss; cutting", limits.send_timeout)
                self._abort()
                return
            if interval is None:
                continue
            if self._received != seen:  # the peer said something: alive
                seen = self._received
                continue
            # (if a send is going on, it waits on the peer already: the check above bounds it)
            if self._write(Ping(payload=b"fibernet"), wait=False):
                if self._wait(ended, limits.ping_timeout):
                    return
                if self._received == seen:
                    log.debug("WebSocket peer silent for %ss after a ping; dropping", limits.ping_timeout)
                    self.close_code, self.close_reason = _INTERNAL, "keepalive ping timeout"
                    self._closing.signal()
                    self._write(CloseConnection(code=_INTERNAL, reason="keepalive ping timeout"), wait=False)
                    self._abort()
                    return

    @staticmethod
    def _wait(cond: Condition, seconds: float) -> bool:
        """Wait for ``cond`` at most ``seconds``; True if it came."""
        return perform(choice(wrap(cond.wait_op(), lambda: True), wrap(wait_op(seconds), lambda: False)))

    def _finish(self, error: BaseException | None) -> None:
        """The app returned (or raised): close cleanly (1000, or 1011 after an error)."""
        if isinstance(error, Cancelled):
            self._abort()
        elif self.close_code is None:
            self.close(1000 if error is None else _INTERNAL, "" if error is None else "server error")
        else:
            self._closing.signal()
            self._wait(self._ended, self.limits.close_timeout)
        if not self._reader.done():
            self._reader.cancel()


_EMPTY: Any = object()

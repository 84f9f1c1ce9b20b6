"""RESP over fibernet's own sockets: the broker's address, and one kept-open connection.

A :class:`Link` is one connection to Redis run by one fiber: it connects (with a timeout),
says its greeting (AUTH, SELECT, SUBSCRIBE ...), then loops on a choice of two operations --
bytes from the broker (``Stream.read_op``) or frames to send (``outbox.get_op``).  A sender
(:meth:`Link.send`) writes its frame itself when that fiber waits with an empty outbox, so
a frame is on the wire at once, not when the sender's fiber next yields (a publisher that
does not yield would otherwise hold it back); only what cannot go at once (the connection
busy, down, or taking part of a frame) waits in the outbox for the link's fiber, and
frames go out in the order sent either way.  Replies are parsed by ``hiredis.Reader``
(sans-IO: bytes in, replies out).  When the connection drops, the fiber reconnects with
jittered exponential back-off (50 ms doubling to 2 s by default); frames still in the outbox
wait there and go out after the reconnect.

An *ordered* link is a command connection: every frame gets exactly one reply, handed to the
frame's sink (a callable, or None) in order; a frame in flight when the connection drops gets
a :class:`BusUnavailable` instead, so its sender knows it may not have reached the broker.
An unordered link is a subscriber connection: every reply (pushed messages included) goes to
``on_push``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from fibernet.errors import ChannelClosed, FibernetError, Timeout
from fibernet.net.sockets import connect
from fibernet.net.streams import Stream
from fibernet.ops.channel import Channel
from fibernet.ops.condition import Condition
from fibernet.ops.operation import choice, perform, wrap
from fibernet.ops.timers import wait_op
from fibernet.runtime.scheduler import yield_now

log = logging.getLogger("fibernet.bus")

BATCH = 256  # frames written in one send at most
_CONTINUED = object()  # the sink of the rest of a frame written in part (already pending)

Sink = Callable[[Any], Any] | None


class BusError(FibernetError):
    """A bus operation failed (a bad URL, an error reply from the broker, a closed bus)."""


class BusUnavailable(BusError):
    """The broker cannot be reached now (the bus is reconnecting)."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def parse_url(url: str) -> Address:
    """``redis://[[user]:password@]host[:port][/db]`` (port 6379, db 0 by default)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"bus URL {url!r}: expected redis://host:port/db")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bus URL {url!r}: the port is not a number from 1 to 65535") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"bus URL {url!r}: the database is a number, not {path!r}")
    if not parts.hostname:
        raise ValueError(f"bus URL {url!r}: no host")
    return Address(
        parts.hostname,
        port,
        int(path or 0),
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def pack(*args: Any) -> bytes:
    """One command as RESP bytes (arguments: bytes, str, int or float)."""
    return hiredis.pack_command(args)


def _data(value: bytes) -> tuple[str, Any]:
    return ("data", value)


def _frame(value: Any) -> tuple[str, Any]:
    return ("frame", value)


class Link:
    """One connection to the broker, kept open by the fiber that runs :meth:`run`.

    ``outbox`` carries ``(frame, sink)`` pairs; ``greet()`` returns the pairs to send first
    on each new connection; ``on_up()`` / ``on_down()`` are told of each change of state.
    """

    def __init__(
        self,
        name: str,
        address: Address,
        outbox: Channel,
        *,
        greet: Callable[[], list[tuple[bytes, Sink]]],
        on_push: Callable[[Any], None] | None = None,
        on_up: Callable[[], None] = lambda: None,
        on_down: Callable[[], None] = lambda: None,
        closing: Condition | None = None,
        connect_timeout: float = 2.0,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.name = name
        self.address = address
        self.outbox = outbox
        self.ordered = on_push is None
        self._greet = greet
        self._on_push = on_push
        self._on_up = on_up
        self._on_down = on_down
        self.closing = closing or Condition()
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.connected = False
        # While the link's fiber waits with an empty outbox, a sender writes its frame itself
        # (send()): on the wire at once, without waiting for this fiber's turn.
        self._lock = threading.Lock()
        self._idle = False
        self._stream: Stream | None = None
        self._pending: deque = deque()  # the sinks of the frames sent, in order (ordered link)
        self.connects = 0  # successful connections (so reconnects = connects - 1)
        self.failures = 0  # failed attempts to connect

    def send(self, frame: bytes, sink: Sink) -> bool:
        """Send ``frame`` (its reply goes to ``sink``), in order with every other: written now
        by the caller if the connection is idle, else queued in the outbox.  False if the
        outbox is full; ChannelClosed once it is closed.  Never blocks."""
        with self._lock:
            stream = self._stream
            if self._idle and stream is not None and not self.outbox.closed:
                if self.ordered:
                    self._pending.append(sink)  # before the write: its reply may come at once
                try:
                    n = stream.sock.send_nowait(frame)
                except OSError:
                    n = 0  # the connection's fiber finds out when it reads, and reconnects
                if n == len(frame):
                    return True
                if n:  # the rest goes first, by the connection's fiber; the sink is pending
                    frame, sink = frame[n:], _CONTINUED
                elif self.ordered:
                    self._pending.pop()
                self._idle = False
            return self.outbox.try_put((frame, sink))

    def call(self, *args: Any, timeout: float) -> Any:
        """Send one command (on an ordered link) and return its reply: BusUnavailable at once
        while disconnected, :class:`fibernet.Timeout` after ``timeout``, BusError for an
        error reply."""
        if not self.connected:
            raise BusUnavailable(f"the bus {self.address} is disconnected")
        box: Channel = Channel(1)
        try:
            if not self.send(pack(*args), box.try_put):
                raise BusUnavailable(f"the bus {self.address} is backed up")
        except ChannelClosed:
            raise BusError("the bus is closed") from None
        late = partial(_raise, Timeout(f"{args[0]}: no reply within {timeout}s"))
        reply = perform(choice(box.get_op(), wrap(wait_op(timeout), late)))
        if isinstance(reply, BusError):
            raise reply
        if isinstance(reply, Exception):
            raise BusError(f"{args[0]}: {reply}")
        return reply

    def run(self) -> None:
        """Connect, serve, reconnect with back-off; ends once the outbox is closed and
        drained, or when ``closing`` is signalled while it waits to reconnect."""
        first, most = self.backoff
        delay = first
        while True:
            try:
                stream = Stream(connect(self.address.host, self.address.port, self.connect_timeout))
            except OSError as exc:
                self.failures += 1
                (log.warning if self.failures == 1 else log.debug)(
                    "bus %s: cannot connect to %s (%s); retrying with back-off", self.name, self.address, exc
                )
                pause = wait_op(delay * random.uniform(0.5, 1.0))
                if perform(choice(wrap(self.closing.wait_op(), lambda: True), wrap(pause, lambda: False))):
                    return
                delay = min(delay * 2, most)
                continue
            delay = first
            pending = self._pending = deque()
            self._stream = stream
            try:
                stream.sock.timeout = None
                self._session(stream, pending)
                return  # the outbox was closed: the bus is closing
            except (OSError, EOFError, hiredis.HiredisError, BusError) as exc:
                log.warning("bus %s: connection to %s lost (%s); reconnecting", self.name, self.address, exc)
            finally:
                with self._lock:
                    self._idle, self._stream = False, None
                stream.close()
                was_up, self.connected = self.connected, False
                lost = BusUnavailable(f"the connection to {self.address} dropped")
                for sink in pending:  # in flight: maybe sent, never answered
                    if sink is not None:
                        sink(lost)
                if was_up:
                    self._on_down()
            self.failures = 0

    def _session(self, stream: Stream, pending: deque) -> None:
        reader = hiredis.Reader()
        hello = self._greet()
        if self.ordered:
            pending.extend(sink for _, sink in hello)
        if hello:
            stream.write(b"".join(frame for frame, _ in hello))
        self.connected = True
        self.connects += 1
        if self.connects > 1:
            log.info("bus %s: reconnected to %s", self.name, self.address)
        self._on_up()
        self._pump(stream, reader, pending)

    def _pump(self, stream: Stream, reader: Any, pending: deque) -> None:
        """Move frames out and replies in until the outbox is closed and drained (and, on
        a command connection, every frame sent is answered)."""
        outbox = self.outbox
        closed = False
        while True:
            if closed:
                if not pending:
                    return
                kind, value = "data", perform(stream.read_op())
            else:
                with self._lock:
                    self._idle = self.connected and not len(outbox) and not outbox.closed
                try:
                    kind, value = perform(
                        choice(wrap(stream.read_op(), _data), wrap(outbox.get_op(), _frame))
                    )
                except ChannelClosed:
                    closed = True
                    continue
            if kind == "data":
                if not value:
                    raise EOFError("the broker closed the connection")
                reader.feed(value)
                while (reply := reader.gets()) is not False:
                    if not self.ordered:
                        self._on_push(reply)  # type: ignore[misc]
                        continue
                    sink = pending.popleft()
                    if sink is not None:
                        sink(reply)
                yield_now()  # the fibers just handed a message or reply run before this one reads on
                continue
            batch = [value]
            try:
                while len(batch) < BATCH and (more := outbox.try_get()) is not None:
                    batch.append(more)
            except ChannelClosed:
                closed = True
            if self.ordered:
                # Before the write: a drop fails them.
                pending.extend(sink for _, sink in batch if sink is not _CONTINUED)
            stream.write(b"".join(frame for frame, _ in batch))


def _raise(exc: BaseException) -> Any:
    raise exc


def check_ok(reply: Any) -> None:
    """The sink of a greeting command: an error reply ends the connection (and is logged)."""
    if isinstance(reply, Exception) and not isinstance(reply, BusUnavailable):
        raise BusError(f"the broker refused the greeting: {reply}")

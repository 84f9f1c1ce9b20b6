"""The bus: topics and commands over two kept-open connections to Redis.

A :class:`Bus` runs two :class:`~fibernet.bus.resp.Link` fibers: a command connection
(PUBLISH and the few keys named actors use; replies matched in order) and a subscriber
connection (SUBSCRIBE; pushed messages).  Every name on the broker is under
``fibernet:<db>:`` -- Redis pub/sub ignores the database number, so the prefix is what keeps
two databases apart.

Topics are Redis pub/sub, at most once.  Each message carries its publisher's id and a
sequence number per topic, so a subscriber that misses messages (its connection dropped, or
the broker restarted) counts exactly how many when the next one from that publisher arrives
(``stats["lost"]``, ``Subscription.lost``).  What a process publishes while its command
connection is down waits in a bounded outbox (``publish_buffer``) and goes out after the
reconnect; beyond the bound a publish is dropped and counted (``stats["publish_dropped"]``),
never blocking the publisher.

A subscription is a bounded channel.  The subscriber fiber never waits for it: a subscriber
that falls ``capacity`` messages behind (and is still behind after one turn of its
scheduler) is cut off (its channel closes after what it holds;
``dropped`` is set; ``stats["subscribers_dropped"]``), as the pubsub example's topics and the
chat room drop a member whose outbox is full -- a slow reader never stalls the publisher or
the other subscribers.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import Counter
from typing import Any

from fibernet.actors import ActorRef
from fibernet.bus.codec import JSON, Codec
from fibernet.bus.names import Names, RemoteRef
from fibernet.bus.resp import Address, BusError, BusUnavailable, Link, Sink, check_ok, pack, parse_url
from fibernet.bus.streams import StreamReader
from fibernet.errors import ChannelClosed, Timeout
from fibernet.ops.channel import Channel
from fibernet.ops.condition import Condition
from fibernet.ops.operation import Operation, choice, perform, wrap
from fibernet.ops.timers import wait_op
from fibernet.runtime.scheduler import spawn, yield_now

log = logging.getLogger("fibernet.bus")

PUBLISH_BUFFER = 10_000
STREAM_MAXLEN = 10_000  # entries a durable topic keeps (about: MAXLEN ~)
SUBSCRIPTION_CAPACITY = 256  # the chat room's and the pubsub example's outbox size


class Subscription:
    """The local end of a topic: a bounded channel of decoded messages.

    ``get()``, ``get_op()`` (one more branch in a ``choice``), iteration (ends when the
    subscription is closed or dropped), ``close()``.  ``dropped`` is True once the bus cut it
    off for falling behind; ``lost`` counts messages the broker never delivered to it.
    """

    def __init__(self, bus: Bus, topic: str, channel: bytes, capacity: int) -> None:
        self.bus = bus
        self.topic = topic
        self._key = channel
        self.channel: Channel = Channel(capacity)
        self.dropped = False
        self.lost = 0
        self.reader: StreamReader | None = None  # a durable subscription's fiber

    def __repr__(self) -> str:
        state = "dropped" if self.dropped else "closed" if self.channel._closed else "open"
        return f"<Subscription {self.topic!r} {state} lost={self.lost}>"

    def get(self) -> Any:
        return self.channel.get()

    def get_op(self) -> Operation:
        return self.channel.get_op()

    def __iter__(self):
        return iter(self.channel)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving; what is buffered can still be read."""
        self.bus._unsubscribe(self)
        self.channel.close()

    def _offer(self, message: Any) -> None:
        try:
            if self.channel.try_put(message):
                return
            yield_now()  # a reader busy on this scheduler gets one turn to catch up
            if self.channel.try_put(message):
                return
        except ChannelClosed:
            return
        self.dropped = True
        self.bus._count("subscribers_dropped")
        log.warning(
            "bus: a subscriber of %r fell %d messages behind: dropped", self.topic, self.channel.capacity
        )
        self.close()


class Bus:
    """A connection to the broker for this runtime's fibers (and plain threads).

    Make one with :func:`fibernet.bus.connect` (in a fiber).  ``stats`` counts what was
    published, received, lost and dropped; ``connected`` tells whether both connections are up.
    """

    def __init__(
        self,
        url: str,
        *,
        codec: Codec = JSON,
        publish_buffer: int = PUBLISH_BUFFER,
        subscription_capacity: int = SUBSCRIPTION_CAPACITY,
        stream_maxlen: int = STREAM_MAXLEN,
        connect_timeout: float = 2.0,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.url = url
        self.address: Address = parse_url(url)
        self.codec = codec
        self.subscription_capacity = subscription_capacity
        self.stream_maxlen = stream_maxlen
        self._backoff = backoff
        self._readers: list[StreamReader] = []
        self.timeout = connect_timeout
        self.id = f"{os.getpid():x}-{secrets.token_hex(4)}"
        self.prefix = f"fibernet:{self.address.db}:".encode()
        self.stats: Counter[str] = Counter()
        self.closed = False
        self._lock = threading.Lock()
        self._topics: dict[bytes, list[Subscription]] = {}
        self._seq: dict[bytes, int] = {}
        self._seen: dict[tuple[bytes, bytes], int] = {}  # (channel, publisher) -> last sequence
        self._confirm: dict[bytes, Condition] = {}
        self._up = Condition()
        self._cmd_out: Channel = Channel(publish_buffer)
        self._sub_out: Channel = Channel(1024)
        self._closing = Condition()
        options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "backoff": backoff,
            "closing": self._closing,
        }
        self._cmd = Link("commands", self.address, self._cmd_out, greet=self._greet_cmd, **options)
        self._sub = Link(
            "subscriber",
            self.address,
            self._sub_out,
            greet=self._greet_sub,
            on_push=self._on_push,
            on_up=self._on_up,
            **options,
        )
        self.names = Names(self)
        self._fibers = [
            spawn(self._cmd.run, name="bus commands"),
            spawn(self._sub.run, name="bus subscriber"),
        ]
        self._fibers.append(spawn(self.names.keep, name="bus names"))

    def __repr__(self) -> str:
        return f"<Bus {self.address} {'connected' if self.connected else 'disconnected'}>"

    @property
    def connected(self) -> bool:
        return self._cmd.connected and self._sub.connected

    @property
    def reconnects(self) -> int:
        """How many times a connection came back after it was lost."""
        return max(0, self._cmd.connects - 1) + max(0, self._sub.connects - 1)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until both connections are up (at most ``timeout`` seconds)."""
        while not self.connected:
            up = self._up
            if not perform(choice(wrap(up.wait_op(), lambda: True), wrap(wait_op(timeout), lambda: False))):
                return self.connected
        return True

    def _on_up(self) -> None:
        up, self._up = self._up, Condition()
        up.signal()
        self.names.kick()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _channel(self, kind: bytes, name: str | bytes) -> bytes:
        return self.prefix + kind + (name.encode() if isinstance(name, str) else name)

    # -- topics -----------------------------------------------------------------------------

    def publish(self, topic: str, message: Any, durable: bool = False) -> bool:
        """Send ``message`` to every subscriber of ``topic`` in every process; never blocks.
        ``durable``: to the durable topic of that name (a stream, see streams.py).

        Returns False if the message was dropped because the outbox is full (the broker has
        been unreachable for a while); that is counted in ``stats["publish_dropped"]``."""
        payload = self.codec.encode(message)
        channel = self._channel(b"s:" if durable else b"t:", topic)
        with self._lock:
            seq = self._seq.get(channel, 0) + 1
            envelope = b"%s:%d:%s" % (self.id.encode(), seq, payload)
            if durable:
                frame = pack("XADD", channel, "MAXLEN", "~", self.stream_maxlen, "*", "m", envelope)
            else:
                frame = pack("PUBLISH", channel, envelope)
            try:
                queued = self._cmd.send(frame, self._published)
            except ChannelClosed:
                raise BusError("the bus is closed") from None
            if not queued:
                self.stats["publish_dropped"] += 1
                return False
            self._seq[channel] = seq
            self.stats["published"] += 1
        return True

    def _published(self, reply: Any) -> None:
        if isinstance(reply, BusUnavailable):
            self._count("publish_unconfirmed")  # written, then the connection dropped
        elif isinstance(reply, Exception):
            self._count("publish_errors")
            log.error("bus: PUBLISH failed: %s", reply)

    def subscribe(self, topic: str, capacity: int | None = None, durable: bool = False) -> Subscription:
        """A subscription to ``topic``.  When the bus is connected, returns once the broker
        has confirmed it (so a message published after this returns is delivered).
        ``durable``: to the durable topic of that name, from its next entry (streams.py)."""
        channel = self._channel(b"s:" if durable else b"t:", topic)
        sub = Subscription(self, topic, channel, capacity or self.subscription_capacity)
        if durable:
            start = None
            if self._cmd.connected:  # start after the newest entry now, as pub/sub starts now
                try:
                    newest = self.command("XREVRANGE", channel, "+", "-", "COUNT", 1)
                    start = newest[0][0] if newest else b"0-0"
                except BusError:
                    pass  # the reader finds its start after the reconnect
            sub.reader = StreamReader(self, sub, start)
            with self._lock:
                self._readers.append(sub.reader)
            return sub
        with self._lock:
            subs = self._topics.setdefault(channel, [])
            subs.append(sub)
            first = len(subs) == 1
        if first:
            self._listen(channel)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub.reader is not None:
            sub.reader.close()
            return
        with self._lock:
            subs = self._topics.get(sub._key)
            if subs is None or sub not in subs:
                return
            subs.remove(sub)
            if subs:
                return
            del self._topics[sub._key]
            for key in [k for k in self._seen if k[0] == sub._key]:
                del self._seen[key]
        self._send_sub(pack("UNSUBSCRIBE", sub._key))

    def _listen(self, channel: bytes) -> None:
        """SUBSCRIBE ``channel``, and wait (bounded) for the broker's confirmation."""
        confirmed = self._confirm[channel] = Condition()
        self._send_sub(pack("SUBSCRIBE", channel))
        if self._sub.connected:
            perform(choice(confirmed.wait_op(), wait_op(self.timeout)))

    def _send_sub(self, frame: bytes) -> None:
        try:
            self._sub.send(frame, None)  # if full, the next reconnect subscribes anyway
        except ChannelClosed:
            raise BusError("the bus is closed") from None

    # -- the links' callbacks ---------------------------------------------------------------

    def _greet_cmd(self) -> list[tuple[bytes, Sink]]:
        frames = self._auth()
        if self.address.db:
            frames.append((pack("SELECT", self.address.db), check_ok))
        return frames

    def _auth(self) -> list[tuple[bytes, Sink]]:
        a = self.address
        if a.password is None:
            return []
        args = ("AUTH", a.username, a.password) if a.username else ("AUTH", a.password)
        return [(pack(*args), check_ok)]

    def _greet_sub(self) -> list[tuple[bytes, Sink]]:
        with self._lock:
            channels = [*self._topics, *self.names.channels()]
        return [*self._auth(), (pack("SUBSCRIBE", *channels), None)]

    def _on_push(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            check_ok(reply)  # an AUTH refused: the link reconnects with back-off
        if type(reply) is not list or len(reply) < 3:
            return
        kind, channel = reply[0], reply[1]
        if kind == b"message":
            try:
                self._dispatch(channel, reply[2])
            except Exception:  # noqa: BLE001 - one bad message never takes the connection down
                self._count("malformed")
                log.exception("bus: a message on %r could not be handled", channel)
        elif kind == b"subscribe":
            confirmed = self._confirm.pop(channel, None)
            if confirmed is not None:
                confirmed.signal()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        kind = channel[len(self.prefix) : len(self.prefix) + 2]
        if kind == b"t:":
            self._deliver(channel, data)
        else:
            self.names.on_message(kind, channel, data)

    def _deliver(self, channel: bytes, data: bytes) -> None:
        opened = self._open(self._seen, channel, data)
        if opened is None:
            return
        gap, message = opened
        with self._lock:
            subs = list(self._topics.get(channel, ()))
        for sub in subs:
            sub.lost += gap
            sub._offer(message)

    def _open(self, seen: dict, channel: bytes, data: bytes) -> tuple[int, Any] | None:
        """The message in an envelope, and how many of its publisher's messages on this
        topic were missed just before it (by ``seen``'s count); None for a malformed,
        repeated or undecodable one (counted)."""
        try:
            publisher, seq_text, payload = data.split(b":", 2)
            seq = int(seq_text)
        except ValueError:
            self._count("malformed")
            return None
        key = (channel, publisher)
        last = seen.get(key)
        if last is not None and seq <= last:
            self._count("duplicates")
            return None
        seen[key] = seq
        gap = 0 if last is None else seq - last - 1
        try:
            message = self.codec.decode(payload)
        except ValueError:
            self._count("undecodable")
            return None
        with self._lock:
            self.stats["received"] += 1
            self.stats["lost"] += gap
        return gap, message

    # -- named actors (see names.py) ----------------------------------------------------------

    def register(self, ref: ActorRef, name: str | None = None) -> None:
        """Serve the local actor ``ref`` to every process on the bus, as ``name`` (default:
        its own name), until it ends.  ValueError if another process holds the name."""
        self.names.register(ref, name)

    def whereis(self, name: str) -> RemoteRef | None:
        """A reference to the actor some process registered as ``name``, or None."""
        return self.names.whereis(name)

    def ref(self, name: str) -> RemoteRef:
        """A reference to ``name`` without asking whether anybody serves it (calls fail with
        ActorDead if nobody does)."""
        return RemoteRef(self.names, name)

    # -- commands ---------------------------------------------------------------------------

    def command(self, *args: Any, timeout: float | None = None) -> Any:
        """Send one command on the command connection and return its reply.

        Raises :class:`BusUnavailable` at once when disconnected, :class:`fibernet.Timeout`
        after ``timeout`` (default: the connect timeout), :class:`BusError` on an error reply."""
        return self._cmd.call(*args, timeout=self.timeout if timeout is None else timeout)

    # -- lifecycle --------------------------------------------------------------------------

    def unready(self) -> str | None:
        """Why this bus makes its process not ready (None: it is fine)."""
        if self.closed or self.connected or all(f.done() for f in self._fibers):
            return None  # (all fibers done: its runtime has ended)
        return f"bus {self.address} disconnected (reconnecting)"

    def close(self) -> None:
        """Give up the names this process holds, and close both connections."""
        if self.closed:
            return
        self.names.release_all()
        self.closed = True
        self._closing.signal()
        self._cmd_out.close()  # the links send what is queued, then end
        self._sub_out.close()
        for reader in self._readers:
            reader.close()
        for fiber in self._fibers + [f for reader in self._readers for f in reader._fibers]:
            try:
                fiber.join(self.timeout)
            except Timeout:  # a broker that does not read: give up on the rest
                fiber.cancel()
        for subs in list(self._topics.values()):
            for sub in subs:
                sub.channel.close()


def _raise(exc: BaseException) -> Any:
    raise exc

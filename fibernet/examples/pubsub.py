"""Publish and subscribe over TCP: ``fibernet serve fibernet.examples.pubsub:handle``.

Each topic is an actor under one supervisor (topics are started on first use with
``start_child``, and restarted if they fail).  A connection is a fiber that reads commands,
plus a writer fiber that drains the connection's bounded outbox; a topic never blocks on a
subscriber: one whose outbox is full is dropped from the topic.

Commands, one per line::

    SUB <topic>            -> "OK SUB <topic>"
    UNSUB <topic>          -> "OK UNSUB <topic>"
    PUB <topic> <message>  -> "OK PUB <topic> <n>" (n: subscribers reached); subscribers get
                              "MSG <topic> <message>"

Anything else gets "ERR ...".

With a bus (``fibernet serve ... --bus redis://host:port/db``, or ``FIBERNET_BUS``), a PUB
goes to the bus topic ``pubsub:<topic>``, and each process's topic actor hands what comes
from the bus to its own subscribers, so all workers and instances share the topics; the
reply is then "OK PUB <topic> *", since no process knows how many subscribers the others reach.
"""

from __future__ import annotations

import threading

import fibernet as fn
import fibernet.bus
from fibernet.actors import Actor, ActorRef, ChildSpec, Supervisor, start, whereis
from fibernet.examples._lines import write_lines
from fibernet.net.streams import LimitOverrun, Stream

OUTBOX = 256
MAX_LINE = 4096


class Topic(Actor):
    def __init__(self, name: str) -> None:
        self.topic = name
        self.subscribers: dict[object, fn.Channel] = {}
        self.bus = fibernet.bus.default() if fibernet.bus.configured() else None
        self.remote: fibernet.bus.Subscription | None = None

    def started(self) -> None:
        if self.bus is not None:  # what any process publishes comes to this actor as "deliver"
            self.bus.wait_connected(self.bus.timeout)  # so SUB is confirmed when it answers OK
            self.remote = self.bus.subscribe(f"pubsub:{self.topic}")
            fn.spawn(self._forward, self.remote, self.ref, name=f"pubsub-bus {self.topic}")

    @staticmethod
    def _forward(remote: fibernet.bus.Subscription, ref: ActorRef) -> None:
        try:
            for message in remote:
                ref.cast(("deliver", None, message))
        except fn.FibernetError:  # the topic actor ended
            remote.close()

    def stopped(self, reason) -> None:
        if self.remote is not None:
            self.remote.close()

    def handle_call(self, body):
        kind, key, arg = body
        if kind == "sub":
            self.subscribers[key] = arg
            return True
        if kind == "unsub":
            return self.subscribers.pop(key, None) is not None
        if kind == "pub" and self.bus is not None:
            self.bus.publish(f"pubsub:{self.topic}", arg)
            return "*"
        if kind in ("pub", "deliver"):
            line = f"MSG {self.topic} {arg}\n".encode()
            reached = 0
            for k, outbox in list(self.subscribers.items()):
                try:
                    delivered = outbox.try_put(line)
                except fn.ChannelClosed:
                    delivered = False
                if delivered:
                    reached += 1
                else:
                    del self.subscribers[k]  # gone, or too slow to keep up
            return reached
        raise ValueError(f"unknown topic command {kind!r}")

    def handle_cast(self, body):
        self.handle_call(body)


class _Root:
    """The topics' supervisor, started on first use in each runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sup: ActorRef | None = None

    def supervisor(self) -> ActorRef:
        with self._lock:
            if self._sup is None or not self._sup.alive:
                self._sup = start(Supervisor([], intensity=10, period=1.0), name="pubsub-topics")
            return self._sup

    def topic(self, name: str) -> ActorRef:
        ref = whereis(f"topic:{name}")
        if ref is None:
            spec = ChildSpec(f"topic:{name}", lambda: Topic(name))
            ref = self.supervisor().call(("start_child", spec))
        return ref


ROOT = _Root()


def _command(line: str, key: object, outbox: fn.Channel, subscribed: set[str]) -> str:
    parts = line.split(" ", 2)
    verb = parts[0].upper()
    if verb in ("SUB", "UNSUB") and len(parts) == 2 and parts[1]:
        topic = parts[1]
        if verb == "SUB":
            ROOT.topic(topic).call(("sub", key, outbox))
            subscribed.add(topic)
        else:
            ROOT.topic(topic).call(("unsub", key, None))
            subscribed.discard(topic)
        return f"OK {verb} {topic}"
    if verb == "PUB" and len(parts) == 3 and parts[1]:
        reached = ROOT.topic(parts[1]).call(("pub", key, parts[2]))
        return f"OK PUB {parts[1]} {reached}"
    return "ERR expected SUB <topic>, UNSUB <topic> or PUB <topic> <message>"


def handle(conn) -> None:
    key = object()
    outbox: fn.Channel = fn.Channel(capacity=OUTBOX)
    writer = fn.spawn(write_lines, conn, outbox, name="pubsub-writer")
    stream = Stream(conn)
    subscribed: set[str] = set()
    try:
        while line := stream.readline(MAX_LINE):
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            try:
                reply = _command(text, key, outbox, subscribed)
            except Exception as exc:  # noqa: BLE001 - one bad command does not end the session
                reply = f"ERR {type(exc).__name__}: {exc}"
            outbox.put(f"{reply}\n".encode())
    except LimitOverrun:
        pass
    finally:
        for topic in subscribed:
            ref = whereis(f"topic:{topic}")
            if ref is not None:
                try:
                    ref.cast(("unsub", key, None))
                except fn.FibernetError:
                    pass
        outbox.close()
        writer.join()

"""Durable topics on Redis streams: ``publish(topic, msg, durable=True)`` and
``subscribe(topic, durable=True)``.

A durable topic is a stream (``fibernet:<db>:s:<topic>``) capped at about ``maxlen`` entries
(``XADD ... MAXLEN ~``); the publisher's side is the same as for pub/sub (the bounded outbox,
the envelope with a sequence number).  A durable subscription is a fiber with a connection of
its own that loops on ``XREAD BLOCK`` from the id of the last entry it delivered, so:

- a dropped connection loses nothing: after the reconnect it reads on from that id;
- a slow reader only lags: the fiber waits for room in the subscription's channel (the stream
  keeps the entries), so a durable subscriber is never dropped and never stalls anybody;
- what it can lose -- entries trimmed before it read them (more than ``maxlen`` behind), and
  the whole stream when a broker without persistence restarts -- shows as gaps in the
  publishers' sequence numbers, counted in ``lost`` as for pub/sub.  A restart is recognised by
  the broker's ``run_id`` after a reconnect; the subscription then reads the new stream from
  its start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fibernet.bus.resp import BusError, Link
from fibernet.errors import ChannelClosed, Timeout
from fibernet.ops.channel import Channel
from fibernet.ops.condition import Condition
from fibernet.ops.operation import choice, perform, wrap
from fibernet.ops.timers import wait_op
from fibernet.runtime.scheduler import spawn

if TYPE_CHECKING:
    from fibernet.bus.client import Bus, Subscription

BLOCK_MS = 1000  # each XREAD waits this long at most, so a closed subscription ends soon
COUNT = 256  # entries per XREAD


class StreamReader:
    """The fiber behind one durable subscription."""

    def __init__(self, bus: Bus, sub: Subscription, start: bytes | None) -> None:
        self.bus = bus
        self.sub = sub
        self.last = start  # the id of the last entry delivered (None: the newest, when connected)
        self.closing = Condition()
        self._fresh = True  # a new connection: check the broker's run_id
        self._run_id: bytes | None = None
        self._up = Condition()
        self._seen: dict = {}
        self.link = Link(
            f"stream {sub.topic}",
            bus.address,
            Channel(16),
            greet=bus._greet_cmd,
            on_up=self._on_up,
            closing=self.closing,
            connect_timeout=bus.timeout,
            backoff=bus._backoff,
        )
        self._fibers = [
            spawn(self.link.run, name=f"bus stream {sub.topic}"),
            spawn(self._read, name=f"bus stream reader {sub.topic}"),
        ]

    def _on_up(self) -> None:
        self._fresh = True
        up, self._up = self._up, Condition()
        up.signal()

    def _read(self) -> None:
        while not self.closing.signalled:
            try:
                self._read_some()
            except (BusError, Timeout):  # disconnected: wait for the reconnect (or the end)
                if not self.link.connected:
                    perform(choice(self._up.wait_op(), self.closing.wait_op(), wait_op(self.bus.timeout)))
            except ChannelClosed:
                return  # the subscription was closed

    def _call(self, *args: Any) -> Any:
        return self.link.call(*args, timeout=BLOCK_MS / 1000 + self.bus.timeout)

    def _read_some(self) -> None:
        key = self.sub._key
        if self._fresh:
            self._fresh = False
            run_id = _run_id(self._call("INFO", "server"))
            if self._run_id is not None and run_id != self._run_id:
                self.last = b"0-0"  # a restarted broker: its stream starts anew
            self._run_id = run_id
        if self.last is None:  # subscribed while disconnected: start after the newest entry
            newest = self._call("XREVRANGE", key, "+", "-", "COUNT", 1)
            self.last = newest[0][0] if newest else b"0-0"
        reply = self._call("XREAD", "COUNT", COUNT, "BLOCK", BLOCK_MS, "STREAMS", key, self.last)
        for entry_id, fields in reply[0][1] if reply else ():
            data = dict(zip(fields[::2], fields[1::2], strict=True)).get(b"m", b"")
            opened = self.bus._open(self._seen, key, data)
            if opened is not None:
                gap, message = opened
                self.sub.lost += gap
                put = wrap(self.sub.channel.put_op(message), lambda: True)
                if not perform(choice(put, wrap(self.closing.wait_op(), lambda: False))):
                    return
            self.last = entry_id

    def close(self) -> None:
        """Stop reading (from any fiber); the connection closes."""
        self.closing.signal()
        self.link.outbox.close()


def _run_id(info: bytes) -> bytes | None:
    for line in info.splitlines():
        if line.startswith(b"run_id:"):
            return line[len(b"run_id:") :].strip()
    return None

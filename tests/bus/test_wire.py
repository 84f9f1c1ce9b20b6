"""When a publish goes on the wire: at once, by the publisher, not when its fiber next yields.

The publisher writes the frame itself when the command connection is idle (nothing queued,
nothing being written); only what cannot go at once waits in the outbox for the connection's
fiber.  These tests watch the broker's side with a plain socket in a thread, which needs no
turn of the publisher's scheduler.
"""

from __future__ import annotations

import socket
import threading

import hiredis
import pytest

import fibernet as fn
import fibernet.bus as fb
from fibernet.net.threadpool import run_in_thread

pytestmark = pytest.mark.timeout(30)


class RawSubscriber:
    """SUBSCRIBE over a plain socket, in a thread: ``subscribed`` is set once the broker
    confirmed; ``seen`` once the first message arrived (``messages`` holds them all)."""

    def __init__(self, port: int, channel: bytes, count: int = 1) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.channel = channel
        self.count = count
        self.subscribed = threading.Event()
        self.seen = threading.Event()
        self.messages: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        reader = hiredis.Reader()
        self.sock.sendall(hiredis.pack_command((b"SUBSCRIBE", self.channel)))
        try:
            while len(self.messages) < self.count:
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    if reply[0] == b"subscribe":
                        self.subscribed.set()
                    elif reply[0] == b"message":
                        self.messages.append(reply[2])
                        self.seen.set()
        except OSError:
            return

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.sock.close()


def test_a_publish_is_on_the_wire_before_the_publisher_yields(redis):
    """A fiber that publishes and then keeps its thread busy (here: blocks it until the
    message is seen) has still put the message on the wire.  Before, the frame waited in
    the outbox for the connection's fiber, which cannot run until the publisher yields:
    the wait below timed out."""
    raw = RawSubscriber(redis.port, b"fibernet:0:t:wire")

    def main():
        bus = fb.connect(redis.url, wait=10)
        run_in_thread(raw.subscribed.wait, 10)
        bus.publish("wire", "hi")
        seen = raw.seen.wait(10)  # blocks the scheduler: no other fiber runs meanwhile
        bus.close()
        return seen

    try:
        assert fn.run(main) is True
    finally:
        raw.close()
    assert raw.messages[0].endswith(b':1:"hi"')


def test_a_frame_larger_than_the_socket_buffer_keeps_its_place(redis):
    """A frame the kernel takes only part of at once: the rest goes before anything
    published after it, whole."""
    big = "x" * (8 << 20)

    def main():
        pub, sub_bus = fb.connect(redis.url, wait=10), fb.connect(redis.url, wait=10)
        sub = sub_bus.subscribe("t")
        for message in ("before", big, "after", "last"):
            assert pub.publish("t", message)
        got = [sub.get() for _ in range(4)]
        pub.close()
        sub_bus.close()
        return got

    got = fn.run(main)
    assert got[0] == "before" and got[1] == big and got[2:] == ["after", "last"]


def test_fibers_and_a_plain_thread_publish_together_in_order_per_sender(redis):
    n = 2000

    def main():
        pub, sub_bus = fb.connect(redis.url, wait=10), fb.connect(redis.url, wait=10)
        sub = sub_bus.subscribe("t", capacity=2 * n + 1)

        def from_thread():
            for i in range(n):
                while not pub.publish("t", ["thread", i]):
                    pass  # the outbox is full: the connection's fiber drains it

        done = fn.spawn(run_in_thread, from_thread)
        for i in range(n):
            pub.publish("t", ["fiber", i])
            if i % 100 == 0:
                fn.yield_now()
        done.join()
        got = [sub.get() for _ in range(2 * n)]
        pub.close()
        sub_bus.close()
        return got

    got = fn.run(main)
    for sender in ("thread", "fiber"):
        assert [i for who, i in got if who == sender] == list(range(n))

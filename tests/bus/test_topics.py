"""Topics over a real redis-server: publish / subscribe between two buses (two connections
pairs, as two processes would have), order per sender, a slow subscriber, the codec."""

from __future__ import annotations

import pytest

import fibernet as fn
import fibernet.bus as fb
from fibernet.net.threadpool import run_in_thread

pytestmark = pytest.mark.timeout(30)


def test_a_message_reaches_every_subscriber_of_every_bus_in_order_per_sender(redis):
    def main():
        a, b, c = (fb.connect(redis.url, wait=10) for _ in range(3))
        subs = [b.subscribe("room", 512), c.subscribe("room", 512), c.subscribe("room", 512)]
        other = b.subscribe("elsewhere")
        for i in range(200):
            a.publish("room", {"from": "a", "n": i})
            b.publish("room", {"from": "b", "n": i})
        got = [[sub.get() for _ in range(400)] for sub in subs]
        a.publish("elsewhere", "x")
        elsewhere = other.get()
        for bus in (a, b, c):
            bus.close()
        return got, elsewhere, a.stats, b.stats

    got, elsewhere, a_stats, b_stats = fn.run(main)
    for messages in got:
        for sender in ("a", "b"):
            assert [m["n"] for m in messages if m["from"] == sender] == list(range(200))
    assert elsewhere == "x"  # topics are separate: "room" subscribers got only room messages
    assert a_stats["published"] == 201 and a_stats["publish_dropped"] == 0
    assert b_stats["received"] == 400 + 1 and b_stats["lost"] == 0


def test_a_subscription_is_one_more_branch_in_a_choice(redis):
    def main():
        bus = fb.connect(redis.url, wait=10)
        sub = bus.subscribe("t")
        local: fn.Channel = fn.Channel()
        fn.spawn(bus.publish, "t", [1, "two"])
        first = fn.perform(fn.choice(fn.wrap(sub.get_op(), lambda m: ("bus", m)), local.get_op()))
        timed_out = fn.perform(fn.choice(sub.get_op(), fn.wrap(fn.wait_op(0.05), lambda: "timeout")))
        bus.close()
        return first, timed_out

    assert fn.run(main) == (("bus", [1, "two"]), "timeout")


def test_a_slow_subscriber_is_dropped_and_never_stalls_the_publisher(redis):
    """The local policy (the chat room, the pubsub example): a reader that falls a whole
    bounded queue behind is cut off; the publisher and the other subscribers go on."""
    n = 2000

    def main():
        pub, sub_bus = fb.connect(redis.url, wait=10), fb.connect(redis.url, wait=10)
        slow = sub_bus.subscribe("firehose", capacity=16)  # never read until the end
        fast = sub_bus.subscribe("firehose")
        queued = [pub.publish("firehose", i) for i in range(n)]
        received = [fast.get() for _ in range(n)]
        held = list(slow)  # what it had when dropped, then the end of the iteration
        stats = dict(sub_bus.stats)
        pub.close()
        sub_bus.close()
        return queued, received, held, slow.dropped, stats

    queued, received, held, dropped, stats = fn.run(main)
    assert all(queued)
    assert received == list(range(n))
    assert dropped and held == list(range(16))
    assert stats["subscribers_dropped"] == 1 and stats["lost"] == 0


def test_what_is_published_while_disconnected_is_buffered_then_delivered_or_counted(redis, forwarder):
    """The publisher loses the broker (its forwarder is cut) while the subscriber keeps it:
    what fits the outbox is delivered after the reconnect, in order; the rest is counted."""

    def main():
        sub_bus = fb.connect(redis.url, wait=10)
        sub = sub_bus.subscribe("t")
        pub = fb.connect(forwarder.url, wait=10, publish_buffer=10, backoff=(0.01, 0.05))
        run_in_thread(forwarder.stop)
        while pub._cmd.connected or pub._sub.connected:
            fn.sleep(0.01)  # observing both links notice the cut (a write on a cut one is lost)
        queued = [pub.publish("t", i) for i in range(15)]
        run_in_thread(forwarder.start)
        got = [sub.get() for _ in range(10)]
        stats, sub_stats = dict(pub.stats), dict(sub_bus.stats)
        pub.close()
        sub_bus.close()
        return queued, got, stats, sub_stats

    queued, got, stats, sub_stats = fn.run(main)
    assert queued == [True] * 10 + [False] * 5
    assert got == list(range(10))
    assert stats["publish_dropped"] == 5 and sub_stats.get("lost", 0) == 0


def test_bad_input_gets_a_clear_error_and_loses_nothing(redis):
    with pytest.raises(ValueError, match="expected redis://"):
        fb.parse_url("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="database is a number"):
        fb.parse_url("redis://127.0.0.1:6379/zero")

    def main():
        bus = fb.connect(redis.url, wait=10)
        sub = bus.subscribe("t")
        with pytest.raises(TypeError, match="JSON codec cannot encode set"):
            bus.publish("t", {1, 2})
        bus.publish("t", "after")
        # Bytes no codec can read, published by something else, are counted and skipped.
        bus.command("PUBLISH", bus._channel(b"t:", "t"), b"intruder:1:{not json")
        bus.publish("t", "last")
        got = [sub.get(), sub.get()]
        stats = dict(bus.stats)
        bus.close()
        return got, stats

    got, stats = fn.run(main)
    assert got == ["after", "last"]
    assert stats["undecodable"] == 1


def test_close_sends_what_is_queued_first(redis):
    def main():
        pub, sub_bus = fb.connect(redis.url, wait=10), fb.connect(redis.url, wait=10)
        sub = sub_bus.subscribe("t", capacity=3000)
        for i in range(2000):
            pub.publish("t", i)
        pub.close()  # at once: the outbox is still full
        got = [sub.get() for _ in range(2000)]
        sub_bus.close()
        return got, dict(pub.stats)

    got, stats = fn.run(main)
    assert got == list(range(2000))
    assert stats.get("publish_unconfirmed", 0) == 0

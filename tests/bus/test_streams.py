"""Durable topics (Redis streams): a subscriber cut off reads on where it stopped, a slow one
lags instead of being dropped, and a broker restart is counted as pub/sub's is."""

from __future__ import annotations

import pytest

import fibernet as fn
import fibernet.bus as fb
from fibernet.net.threadpool import run_in_thread

pytestmark = pytest.mark.timeout(60)


def test_a_durable_subscriber_cut_off_misses_nothing(redis, forwarder):
    def main():
        pub = fb.connect(redis.url, wait=10)
        sub_bus = fb.connect(forwarder.url, wait=10, backoff=(0.01, 0.05))
        sub = sub_bus.subscribe("orders", durable=True)
        for i in range(50):
            pub.publish("orders", i, durable=True)
        first = [sub.get() for _ in range(50)]
        run_in_thread(forwarder.stop)
        for i in range(50, 100):  # while the subscriber is cut off
            pub.publish("orders", i, durable=True)
        run_in_thread(forwarder.start)
        second = [sub.get() for _ in range(50)]
        result = first + second, sub.lost, sub.reader.link.connects - 1
        pub.close()
        sub_bus.close()
        return result

    got, lost, reconnects = fn.run(main)
    assert got == list(range(100))
    assert lost == 0 and reconnects >= 1


def test_a_slow_durable_subscriber_lags_and_is_never_dropped(redis):
    def main():
        pub, sub_bus = fb.connect(redis.url, wait=10), fb.connect(redis.url, wait=10)
        sub = sub_bus.subscribe("log", capacity=8, durable=True)
        live = sub_bus.subscribe("log-live")  # pub/sub beside it goes on meanwhile
        queued = []
        for i in range(500):
            queued.append(pub.publish("log", i, durable=True))
            pub.publish("log-live", i)
        live_got = [live.get() for _ in range(500)]
        got = [sub.get() for _ in range(500)]  # read only now: 500 entries behind, 8 buffered
        result = queued, got, live_got, sub.dropped
        pub.close()
        sub_bus.close()
        return result

    queued, got, live_got, dropped = fn.run(main)
    assert all(queued)
    assert got == list(range(500)) and live_got == list(range(500))
    assert not dropped


def test_a_broker_restart_under_a_durable_topic_is_delivered_or_counted(redis):
    def main():
        options = {"wait": 10, "backoff": (0.01, 0.2)}
        pub, sub_bus = fb.connect(redis.url, **options), fb.connect(redis.url, **options)
        sub = sub_bus.subscribe("events", capacity=100_000, durable=True)
        stop = fn.Condition()

        def produce() -> int:
            n = 0
            while not stop.signalled:
                pub.publish("events", n, durable=True)
                n += 1
                fn.sleep(0.001)
            return n

        producer = fn.spawn(produce, name="producer")
        got = [sub.get() for _ in range(100)]
        run_in_thread(redis.stop)
        run_in_thread(redis.start)
        while pub.reconnects < 2:
            fn.sleep(0.01)
        got += [sub.get() for _ in range(100)]  # delivery resumed
        stop.signal()
        n = producer.join()
        pub.publish("events", "end", durable=True)
        while (message := sub.get()) != "end":
            got.append(message)
        result = got, n, sub.lost
        pub.close()
        sub_bus.close()
        return result

    got, n, lost = fn.run(main)
    assert got == sorted(set(got)) and got[0] == 0
    assert len(got) + lost == n

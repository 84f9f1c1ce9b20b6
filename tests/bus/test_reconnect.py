"""The broker killed (SIGKILL) and restarted mid-stream: both connections come back with
back-off, delivery resumes, and every message is either delivered or counted as lost."""

from __future__ import annotations

import pytest

import fibernet as fn
import fibernet.bus as fb
from fibernet.net.threadpool import run_in_thread

pytestmark = pytest.mark.timeout(60)


def test_broker_restarted_mid_stream_delivery_resumes_and_losses_are_counted(redis):
    def main():
        options = {"wait": 10, "backoff": (0.01, 0.2)}
        pub, sub_bus = fb.connect(redis.url, **options), fb.connect(redis.url, **options)
        sub = sub_bus.subscribe("stream", capacity=100_000)
        stop = fn.Condition()

        def produce() -> int:
            n = 0
            while not stop.signalled:
                pub.publish("stream", n)
                n += 1
                fn.sleep(0.001)  # a steady stream, not a synchronisation
            return n

        producer = fn.spawn(produce, name="producer")
        got = [sub.get() for _ in range(100)]
        run_in_thread(redis.stop)
        run_in_thread(redis.start)
        while pub.reconnects < 2 or sub_bus.reconnects < 2:
            got.append(sub.get())  # (nothing may come until both links are back)
        after = [sub.get() for _ in range(100)]  # delivery resumed
        stop.signal()
        n = producer.join()
        pub.publish("stream", "end")  # its sequence number reveals a lost tail, if any
        while (message := sub.get()) != "end":
            after.append(message)
        result = got + after, n, sub.lost, dict(sub_bus.stats), dict(pub.stats)
        pub.close()
        sub_bus.close()
        return result

    received, n, lost, sub_stats, pub_stats = fn.run(main)
    assert received == sorted(set(received)), "out of order or duplicated"
    assert received[0] == 0 and len(received) >= 200
    assert len(received) + lost == n  # each message delivered, or counted lost
    assert sub_stats["lost"] == lost
    assert pub_stats.get("publish_dropped", 0) == 0

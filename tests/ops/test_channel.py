"""Channels: rendezvous, FIFO order, fan-in and fan-out, buffering, close, and use from plain
threads."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

import fibernet as fn

pytestmark = pytest.mark.timeout(20)


# -- rendezvous ---------------------------------------------------------------------------------


def test_put_on_an_unbuffered_channel_blocks_until_a_get():
    def main():
        ch = fn.Channel()
        trace = []

        def putter():
            ch.put("hello")
            trace.append("put returned")

        p = fn.spawn(putter)
        for _ in range(3):
            fn.yield_now()
        # Three turns later the put is still waiting for a getter.
        assert trace == []
        assert p.state == "suspended"
        assert ch.waiting() == (0, 1)
        assert len(ch) == 0  # the message is not buffered anywhere
        got = ch.get()
        p.join()
        return got, trace, ch.waiting()

    assert fn.run(main) == ("hello", ["put returned"], (0, 0))


def test_get_blocks_until_a_put():
    def main():
        ch = fn.Channel()
        g = fn.spawn(ch.get)
        fn.yield_now()
        assert g.state == "suspended"
        assert ch.waiting() == (1, 0)
        ch.put(7)
        return g.join()

    assert fn.run(main) == 7


def test_a_plain_threads_put_blocks_until_a_fiber_gets(start_thread, spin_until):
    returned = threading.Event()

    def main():
        ch = fn.Channel()

        def in_thread():
            ch.put("from thread")
            returned.set()

        ended = start_thread(in_thread)
        spin_until(lambda: ch.waiting() == (0, 1), "the thread to block in put")
        assert not returned.is_set()
        got = ch.get()
        ended.wait()
        return got

    assert fn.run(main) == "from thread"
    assert returned.is_set()


def test_plain_threads_rendezvous_without_any_runtime():
    ch = fn.Channel()
    got = []
    t = threading.Thread(target=lambda: got.extend(ch.get() for _ in range(100)))
    t.start()
    for i in range(100):
        ch.put(i)
    t.join(10)
    assert got == list(range(100))
    assert ch.waiting() == (0, 0)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("capacity", [0, 1, 16])
def test_messages_from_one_sender_arrive_in_order(threads, capacity):
    def main():
        ch = fn.Channel(capacity)
        fn.spawn(lambda: [ch.put(i) for i in range(300)], parallel=True)
        return [ch.get() for _ in range(300)]

    assert fn.run(main, threads=threads) == list(range(300))


# -- fan-in and fan-out ---------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 4])
def test_fan_in_every_message_exactly_once(capacity):
    producers, each = 8, 100

    def main():
        ch = fn.Channel(capacity)
        for p in range(producers):
            fn.spawn(lambda p=p: [ch.put((p, i)) for i in range(each)], parallel=True)
        got = [ch.get() for _ in range(producers * each)]
        return got

    got = fn.run(main, threads=4)
    assert Counter(got) == Counter((p, i) for p in range(producers) for i in range(each))
    # From each producer, in its order.
    for p in range(producers):
        assert [i for q, i in got if q == p] == list(range(each))


@pytest.mark.parametrize("capacity", [0, 4])
def test_fan_out_every_message_exactly_once(capacity):
    consumers, total = 8, 800
    stop = object()

    def consumer(ch):
        got = []
        while (m := ch.get()) is not stop:
            got.append(m)
        return got

    def main():
        ch = fn.Channel(capacity)
        fs = [fn.spawn(consumer, ch, parallel=True) for _ in range(consumers)]
        for i in range(total):
            ch.put(i)
        for _ in fs:
            ch.put(stop)
        return [f.join() for f in fs]

    per_consumer = fn.run(main, threads=4)
    assert Counter(m for got in per_consumer for m in got) == Counter(range(total))
    for got in per_consumer:  # each consumer saw its share in the order sent
        assert got == sorted(got)


# -- buffering -------------------------------------------------------------------------------------


def test_a_buffered_channel_holds_capacity_messages_then_blocks():
    def main():
        ch = fn.Channel(capacity=3)
        for i in range(3):
            ch.put(i)  # never suspends
        assert len(ch) == 3
        assert ch.waiting() == (0, 0)
        p = fn.spawn(ch.put, 3)
        fn.yield_now()
        assert p.state == "suspended"
        assert ch.waiting() == (0, 1)
        assert ch.get() == 0  # frees a slot: the blocked put moves in
        p.join()
        assert len(ch) == 3
        return [ch.get() for _ in range(3)]

    assert fn.run(main) == [1, 2, 3]


def test_try_get_and_try_put_never_block():
    ch = fn.Channel(capacity=1)
    assert ch.try_get("empty") == "empty"
    assert ch.try_put("a") is True
    assert ch.try_put("b") is False
    assert ch.try_get() == "a"
    assert ch.try_get() is None
    rendezvous = fn.Channel()
    assert rendezvous.try_put(1) is False  # nobody waits to get


@pytest.mark.parametrize("capacity", [-1, 1.5, True, "2"])
def test_bad_capacities_are_refused(capacity):
    with pytest.raises(ValueError):
        fn.Channel(capacity)


# -- close -----------------------------------------------------------------------------------------


def test_close_wakes_blocked_getters_and_putters_with_channel_closed():
    def main():
        gets, puts = fn.Channel(), fn.Channel()
        getters = [fn.spawn(gets.get) for _ in range(3)]
        putters = [fn.spawn(puts.put, i) for i in range(3)]
        in_choice = fn.spawn(lambda: fn.perform(fn.choice(gets.get_op(), fn.wait_op(100))))
        fn.yield_now()
        gets.close()
        puts.close()
        for f in getters + putters + [in_choice]:
            with pytest.raises(fn.ChannelClosed):
                f.join()
        return gets.waiting(), puts.waiting(), fn.current_scheduler().pending_timers()

    assert fn.run(main) == ((0, 0), (0, 0), 0)


def test_after_close_puts_raise_and_gets_drain_then_raise():
    ch = fn.Channel(capacity=3)
    ch.put(1)
    ch.put(2)
    ch.close()
    ch.close()  # idempotent
    assert ch.closed
    with pytest.raises(fn.ChannelClosed):
        ch.put(3)
    with pytest.raises(fn.ChannelClosed):
        fn.perform(ch.put_op(3))
    with pytest.raises(fn.ChannelClosed):
        ch.try_put(3)
    assert ch.get() == 1
    assert fn.perform(ch.get_op()) == 2
    with pytest.raises(fn.ChannelClosed):
        ch.get()
    with pytest.raises(fn.ChannelClosed):
        ch.try_get()


def test_iteration_stops_when_the_channel_is_closed_and_drained():
    def main():
        ch = fn.Channel(capacity=2)

        def producer():
            for i in range(5):
                ch.put(i)
            ch.close()

        fn.spawn(producer)
        return list(ch)

    assert fn.run(main) == [0, 1, 2, 3, 4]


def test_channel_closed_is_a_fibernet_error():
    assert issubclass(fn.ChannelClosed, fn.FibernetError)


def test_close_from_a_plain_thread_wakes_a_fiber(start_thread):
    def main():
        ch = fn.Channel()
        g = fn.spawn(ch.get)
        fn.yield_now()
        start_thread(ch.close).wait()
        with pytest.raises(fn.ChannelClosed):
            g.join()
        return "ok"

    assert fn.run(main) == "ok"


# -- one perform does not meet itself ---------------------------------------------------------------


def test_a_choice_of_put_and_get_on_one_channel_does_not_rendezvous_with_itself():
    def main():
        ch = fn.Channel()
        op = fn.choice(fn.wrap(ch.put_op("mine"), lambda: "put"), fn.wrap(ch.get_op(), lambda v: ("got", v)))
        both = fn.spawn(fn.perform, op)
        fn.yield_now()
        assert both.state == "suspended"  # it did not complete with itself
        assert ch.waiting() == (1, 1)
        assert ch.get() == "mine"  # another fiber completes its put branch
        return both.join(), ch.waiting()

    assert fn.run(main) == ("put", (0, 0))

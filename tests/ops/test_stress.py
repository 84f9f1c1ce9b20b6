"""Bounded cross-thread stress: several schedulers and plain threads racing puts, gets,
choices, timeouts and cancels on shared channels, with the interpreter switching threads as
often as it can.  Each test checks exactly-once delivery by multiset equality; a lost
wake-up shows as a hang, which the timeout turns into a failure."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

import fibernet as fn

pytestmark = [pytest.mark.stress, pytest.mark.timeout(60)]

STOP = "stop"
TICK = "tick"


def put_either(a, b, message):
    """Put ``message`` on whichever of two channels takes it first; returns which one."""
    return fn.perform(
        fn.choice(fn.wrap(a.put_op(message), lambda: "a"), fn.wrap(b.put_op(message), lambda: "b"))
    )


def get_either(a, b, timeout=None):
    ops = [fn.wrap(a.get_op(), lambda m: ("a", m)), fn.wrap(b.get_op(), lambda m: ("b", m))]
    if timeout is not None:
        ops.append(fn.wrap(fn.wait_op(timeout), lambda: (None, TICK)))
    return fn.perform(fn.choice(*ops))


def test_schedulers_and_plain_threads_race_on_shared_channels(switchinterval, start_thread):
    fiber_producers, thread_producers, each = 4, 2, 500
    fiber_consumers, thread_consumers = 4, 2
    a, b = fn.Channel(), fn.Channel(capacity=2)
    sent = {}  # message -> the channel its put-choice committed to
    received = []  # (channel, message) as seen by the consumers, decoys included
    lock = threading.Lock()

    def producer(pid):
        rng = random.Random(pid)
        for i in range(each):
            message = (pid, i)
            if rng.random() < 0.2:  # a plain put now and then
                ch = rng.choice("ab")
                (a if ch == "a" else b).put(message)
            else:
                ch = put_either(a, b, message)
            with lock:
                assert message not in sent
                sent[message] = ch

    def consumer(cid):
        rng = random.Random(1000 + cid)
        stops = 0
        while True:
            if rng.random() < 0.3:
                ch, message = get_either(a, b, timeout=rng.choice([0, 0.0005, 0.002]))
                if message == TICK:
                    continue
            else:
                ch, message = get_either(a, b)
            if message == STOP:
                stops += 1
                return stops
            with lock:
                received.append((ch, message))

    def decoy():
        """Gets until cancelled: a cancel must never lose a message it raced with."""
        while True:
            ch = random.choice("ab")
            message = (a if ch == "a" else b).get()
            with lock:
                received.append((ch, message))

    def main():
        fibers = [fn.spawn(producer, p, parallel=True) for p in range(fiber_producers)]
        ended = [start_thread(producer, fiber_producers + p) for p in range(thread_producers)]
        consumers = [fn.spawn(consumer, c, parallel=True) for c in range(fiber_consumers)]
        consumers_ended = [start_thread(consumer, fiber_consumers + c) for c in range(thread_consumers)]
        decoys = [fn.spawn(decoy, parallel=True) for _ in range(4)]
        for _ in range(20):
            fn.yield_now()
        for d in decoys:  # cancel them mid-stream, in whatever state they are
            d.cancel()
        for d in decoys:
            with pytest.raises(fn.Cancelled):
                d.join()
        for f in fibers:
            f.join()
        for e in ended:
            e.wait()
        # Every producer is done: one stop for each consumer.
        for _ in range(fiber_consumers + thread_consumers):
            put_either(a, b, STOP)
        stops = [f.join() for f in consumers]
        for e in consumers_ended:
            e.wait()
        return stops

    stops = fn.run(main, threads=4)
    assert stops == [1] * fiber_consumers
    expected = {(p, i) for p in range(fiber_producers + thread_producers) for i in range(each)}
    assert set(sent) == expected
    # Every message delivered exactly once ...
    assert Counter(m for _, m in received) == Counter(expected)
    # ... on the one channel its put committed to: no choice completed two branches.
    assert all(sent[m] == ch for ch, m in received)
    assert a.waiting() == (0, 0) and b.waiting() == (0, 0)
    assert len(a) == len(b) == 0


def test_ping_pong_between_fibers_and_plain_threads_loses_no_wake_up(switchinterval, start_thread):
    rounds = 4000

    def bouncer(inbox, outbox):
        for _ in range(rounds):
            outbox.put(inbox.get() + 1)

    def main():
        sched0, sched1 = fn.current_scheduler().runtime.schedulers
        ping, pong, ping2, pong2 = fn.Channel(), fn.Channel(), fn.Channel(), fn.Channel()
        # A fiber on the other scheduler and a plain thread each bounce messages back.
        fn.spawn(bouncer, ping, pong, scheduler=sched1)
        start_thread(bouncer, ping2, pong2)
        n = m = 0
        for _ in range(rounds):
            ping.put(n)
            ping2.put(m)
            n = pong.get()
            m = pong2.get()
        return n, m

    assert fn.run(main, threads=2) == (rounds, rounds)


def test_cancel_races_with_completion_and_loses_nothing(switchinterval, start_thread):
    """A getter is cancelled from one thread while a putter completes it from another: either
    the put went to the getter (which received it) or it did not happen at all."""
    rounds = 600

    def getter(ch, got):
        got.append(ch.get())

    def putter(ch, i, put_result):
        put = fn.wrap(ch.put_op(i), lambda: "put")
        put_result.append(fn.perform(fn.choice(put, fn.wrap(fn.wait_op(0.002), lambda: "timeout"))))

    def main():
        other = fn.current_scheduler().runtime.schedulers[1]
        outcomes = Counter()
        for i in range(rounds):
            ch = fn.Channel()
            got, put_result = [], []
            g = fn.spawn(getter, ch, got, scheduler=other)
            ended = start_thread(putter, ch, i, put_result)
            if i % 2:
                fn.yield_now()
            g.cancel()
            try:
                g.join()
                outcome = "got"
            except fn.Cancelled:
                outcome = "cancelled"
            ended.wait()
            assert (put_result == ["put"]) == (got == [i]), (put_result, got, outcome)
            assert ch.waiting() == (0, 0)
            outcomes[outcome, put_result[0]] += 1
        return outcomes

    outcomes = fn.run(main, threads=2)
    assert sum(outcomes.values()) == rounds


def test_many_choices_with_timers_across_schedulers_release_every_timer(switchinterval):
    def worker(ch, n):
        got = 0
        while got < n:
            r = fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(0.0005), lambda: TICK)))
            if r != TICK:
                got += 1
        return got

    def main():
        schedulers = fn.current_scheduler().runtime.schedulers
        ch = fn.Channel()
        fs = [fn.spawn(worker, ch, 400, scheduler=s) for s in schedulers]
        for i in range(400 * len(fs)):
            ch.put(i)
        counts = [f.join() for f in fs]
        return counts, [s.pending_timers() for s in schedulers], ch.waiting()

    counts, timers, waiting = fn.run(main, threads=4)
    assert counts == [400] * 4
    assert timers == [0] * 4
    assert waiting == (0, 0)


def test_burst_of_parallel_fibers_from_plain_threads(switchinterval, start_thread):
    """Plain threads spawn parallel fibers onto the schedulers (racing with them going to
    sleep); every fiber runs exactly once."""
    per_thread = 1000

    def main():
        schedulers = fn.current_scheduler().runtime.schedulers
        done = fn.Channel(capacity=64)

        def spawner(k):
            for i in range(per_thread):
                fn.spawn(done.put, (k, i), scheduler=schedulers[i % len(schedulers)], parallel=bool(i % 2))

        ended = [start_thread(spawner, k) for k in range(3)]
        got = [done.get() for _ in range(3 * per_thread)]
        for e in ended:
            e.wait()
        return got

    got = fn.run(main, threads=3)
    assert Counter(got) == Counter((k, i) for k in range(3) for i in range(per_thread))

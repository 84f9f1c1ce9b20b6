"""Direct hand-offs: a fiber that suspends gives the thread to the next runnable fiber itself
(within a turn's budget), not through the loop.  What must still hold: I/O and timers are not
starved by fibers that keep each other busy, a fiber does not keep alive the one it handed
the thread to, and chains of new fibers do not pile up recursion depth."""

from __future__ import annotations

import gc
import socket
import sys
import weakref

import pytest

import fibernet as fn
from fibernet.net import readable_op

pytestmark = pytest.mark.timeout(20)


def _ping_pong_until(stop: list) -> tuple[fn.Fiber, fn.Fiber]:
    """Two fibers bouncing a token over rendezvous channels until ``stop`` is non-empty."""
    a, b = fn.Channel(), fn.Channel()

    def pinger():
        n = 0
        while not stop:
            a.put(n)
            n = b.get() + 1
        a.put(None)
        return n

    def ponger():
        while (n := a.get()) is not None:
            b.put(n)

    return fn.spawn(pinger), fn.spawn(ponger)


def test_a_ping_pong_does_not_starve_a_timer():
    def main():
        stop: list = []
        ping, pong = _ping_pong_until(stop)
        fn.sleep(0.01)  # due while the pair runs; it fires only if turns keep coming
        stop.append(True)
        rounds = ping.join()
        pong.join()
        return rounds

    assert fn.run(main) > 0


def test_a_ping_pong_does_not_starve_a_readable_socket():
    left, right = socket.socketpair()
    try:

        def main():
            stop: list = []
            ping, pong = _ping_pong_until(stop)

            def reader():
                fn.perform(readable_op(left))
                stop.append(True)
                return left.recv(16)

            r = fn.spawn(reader)
            fn.yield_now()  # the pair and the reader are all running now
            right.send(b"wake")
            got = r.join()
            ping.join()
            pong.join()
            return got

        assert fn.run(main) == b"wake"
    finally:
        left.close()
        right.close()


def test_a_suspended_fiber_does_not_keep_alive_the_fiber_it_handed_the_thread_to():
    def main():
        gate, go = fn.Channel(), fn.Channel()
        ended = fn.Condition()

        def short():
            go.get()  # started, then suspended here
            ended.signal()

        def waiter():
            go.put(None)  # `short` is runnable now...
            gate.get()  # ...and gets the thread straight from this suspension

        s = fn.spawn(short)
        ref = weakref.ref(s)
        del s
        fn.yield_now()  # `short` waits in go.get()
        w = fn.spawn(waiter)
        ended.wait()
        fn.yield_now()  # let `short` finish
        gc.collect()
        alive = ref() is not None  # `waiter` is still suspended in gate.get()
        gate.put(None)
        w.join()
        return alive

    assert fn.run(main) is False


def test_many_new_fibers_blocking_in_turn_all_start_at_the_same_stack_depth():
    """300 new fibers each block on a full channel, so each hands the thread to the next new
    one: its runner greenlet must come from the loop (a greenlet started from inside another
    fiber would start deeper, and a chain of them overflows the stack)."""
    count = 300

    def main():
        ch = fn.Channel(capacity=8)
        depths: list = []

        def put(i):
            frame, depth = sys._getframe(), 0
            while frame is not None:
                frame, depth = frame.f_back, depth + 1
            depths.append(depth)
            ch.put(i)

        for i in range(count):
            fn.spawn(put, i)
        got = sorted(ch.get() for _ in range(count))
        return got, set(depths)

    got, depths = fn.run(main)
    assert got == list(range(count))
    assert len(depths) == 1


def test_fibers_woken_in_order_run_in_that_order():
    def main():
        gates = [fn.Channel() for _ in range(5)]
        order: list = []

        def wait(i):
            gates[i].get()
            order.append(i)

        fibers = [fn.spawn(wait, i) for i in range(5)]
        fn.yield_now()
        for i in (3, 0, 4, 1, 2):
            gates[i].put(None)  # completes at once: the getter is waiting
        for f in fibers:
            f.join()
        return order

    assert fn.run(main) == [3, 0, 4, 1, 2]

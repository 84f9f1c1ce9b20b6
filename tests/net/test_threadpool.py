"""run_in_thread: a blocking call on the pool suspends only the calling fiber."""

from __future__ import annotations

import logging
import threading

import pytest

import fibernet as fn
from fibernet.net.threadpool import MAX_WORKERS, run_in_thread, run_in_thread_op

pytestmark = pytest.mark.timeout(20)


def test_a_blocking_pool_call_suspends_only_the_calling_fiber():
    released = threading.Event()

    def blocking():
        # Returns True only if a fiber of the (single) scheduler sets the event meanwhile.
        return released.wait(10), threading.current_thread().name

    def main():
        caller = fn.spawn(run_in_thread, blocking, name="caller")
        ch = fn.Channel()
        other = fn.spawn(lambda: [ch.put(i) for i in range(100)], name="other")
        got = [ch.get() for _ in range(100)]
        other.join()
        still_waiting = not caller.done() and "thread pool" in (caller.waiting_on() or "")
        released.set()
        return got, still_waiting, caller.join(timeout=10), threading.current_thread().name

    got, still_waiting, (ok, pool_thread), sched_thread = fn.run(main)
    assert got == list(range(100))
    assert still_waiting
    assert ok, "the pool call blocked the scheduler"
    assert pool_thread.startswith("fibernet-pool") and pool_thread != sched_thread


def test_many_pool_calls_from_many_fibers_return_their_own_results():
    def main():
        fibers = [fn.spawn(run_in_thread, pow, i, 2, parallel=True) for i in range(200)]
        return [f.join(timeout=10) for f in fibers]

    assert fn.run(main, threads=2) == [i * i for i in range(200)]


class Boom(Exception):
    pass


def test_the_exception_of_a_pool_call_is_raised_in_the_calling_fiber():
    error = Boom("from the pool")

    def fail():
        raise error

    def main():
        with pytest.raises(Boom) as info:
            run_in_thread(fail)
        # The fiber goes on and the pool still works.
        return info.value, run_in_thread(sum, [1, 2, 3])

    raised, after = fn.run(main)
    assert raised is error
    assert after == 6


def test_run_in_thread_op_in_a_choice_with_a_timer():
    released = threading.Event()

    def main():
        timeout = fn.wrap(fn.wait_op(0.05), lambda: "timeout")
        slow = fn.perform(fn.choice(run_in_thread_op(released.wait, 10), timeout))
        released.set()
        fast = fn.perform(fn.choice(run_in_thread_op(len, "abc"), fn.wrap(fn.wait_op(10), lambda: "timeout")))
        return slow, fast

    assert fn.run(main) == ("timeout", 3)


def test_a_fiber_cancelled_during_a_pool_call_raises_cancelled_at_once(spin_until):
    started = threading.Event()
    released = threading.Event()
    finished = threading.Event()

    def blocking():
        started.set()
        try:
            return released.wait(10)
        finally:
            finished.set()

    def main():
        caller = fn.spawn(run_in_thread, blocking)
        spin_until(started.is_set, "the pool call to start")
        caller.cancel()
        with pytest.raises(fn.Cancelled):
            caller.join(timeout=5)
        cancelled_while_the_call_ran = not finished.is_set()
        released.set()
        return cancelled_while_the_call_ran

    assert fn.run(main)
    assert finished.wait(10), "the call itself runs on to its end"


def test_a_pool_call_that_lost_its_choice_before_starting_is_dropped_quietly(spin_until, caplog):
    gate = threading.Event()
    busy = []
    ran = []

    def occupy():
        busy.append(1)
        gate.wait(10)

    def main():
        # Occupy every pool thread, so the next call waits in the pool's queue.
        blockers = [fn.spawn(run_in_thread, occupy) for _ in range(MAX_WORKERS)]
        spin_until(lambda: len(busy) == MAX_WORKERS, "every pool thread to be busy")
        lost = fn.perform(fn.choice(run_in_thread_op(ran.append, "dropped"),
                                    fn.wrap(fn.wait_op(0.05), lambda: "timeout")))
        gate.set()
        for b in blockers:
            b.join(timeout=10)
        # The pool's queue is first in, first out: a call made now runs after the dropped
        # one would have.
        run_in_thread(ran.append, "later")
        return lost

    assert fn.run(main) == "timeout"
    assert ran == ["later"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


def test_outside_a_fiber_run_in_thread_just_calls():
    assert run_in_thread(threading.current_thread) is threading.current_thread()

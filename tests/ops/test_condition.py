"""Conditions: one-shot events."""

from __future__ import annotations

import threading

import pytest

import fibernet as fn

pytestmark = pytest.mark.timeout(20)


def test_signal_wakes_every_waiter_on_every_thread(start_thread, spin_until):
    woken = []

    def main():
        cond = fn.Condition()
        rt = fn.current_scheduler().runtime
        fibers = [
            fn.spawn(lambda: (cond.wait(), woken.append("fiber"))[0], scheduler=s) for s in rt.schedulers * 3
        ]
        choosers = [
            fn.spawn(
                lambda: woken.append(
                    fn.perform(fn.choice(fn.wrap(cond.wait_op(), lambda: "choice"), fn.never()))
                )
            )
            for _ in range(2)
        ]
        ended = [start_thread(lambda: (cond.wait(), woken.append("thread"))) for _ in range(2)]
        spin_until(lambda: cond.waiting() == 9 + 2 + 2, "every waiter to block")
        assert woken == []
        assert cond.signal() is True
        for f in fibers + choosers:
            f.join()
        for e in ended:
            e.wait()
        return cond.waiting()

    assert fn.run(main, threads=3) == 0
    assert sorted(woken) == sorted(["fiber"] * 9 + ["choice"] * 2 + ["thread"] * 2)


def test_wait_after_signal_is_immediate():
    def main():
        cond = fn.Condition()
        assert not cond.signalled
        assert cond.signal() is True
        assert cond.signal() is False  # one-shot: signalling again changes nothing
        assert cond.signalled
        t0 = fn.current_scheduler().now()
        cond.wait()
        r = fn.perform(
            fn.choice(fn.wrap(cond.wait_op(), lambda: "signalled"), fn.wrap(fn.wait_op(1), lambda: "timeout"))
        )
        return r, fn.current_scheduler().now() - t0, fn.current_fiber().state

    assert fn.run(main, clock=fn.MockClock()) == ("signalled", 0, "running")


def test_wait_op_in_a_choice_with_a_timer():
    def main():
        sched = fn.current_scheduler()
        cond = fn.Condition()
        wait = fn.choice(
            fn.wrap(cond.wait_op(), lambda: "signalled"), fn.wrap(fn.wait_op(10), lambda: "timeout")
        )
        first = fn.perform(wait)  # nobody signals: the timer wins
        assert cond.waiting() == 0

        def signaller():
            fn.sleep(4)
            cond.signal()

        fn.spawn(signaller)
        t0 = sched.now()
        second = fn.perform(wait)  # signalled at 4 s, before the timer
        return first, second, sched.now() - t0, sched.pending_timers(), cond.waiting()

    assert fn.run(main, clock=fn.MockClock()) == ("timeout", "signalled", 4, 0, 0)


def test_signal_from_a_plain_thread_wakes_a_fiber_on_a_sleeping_scheduler(start_thread):
    def main():
        cond = fn.Condition()
        go = threading.Event()

        def in_thread():
            go.wait(10)
            cond.signal()

        start_thread(in_thread)
        waiter = fn.spawn(cond.wait)
        fn.yield_now()
        go.set()
        waiter.join()  # the scheduler sleeps in epoll until the thread's signal wakes it
        return cond.signalled

    assert fn.run(main) is True


def test_a_plain_thread_waits_for_a_fibers_signal():
    cond = fn.Condition()
    seen = []

    def waiter():
        cond.wait()
        seen.append("woken")

    t = threading.Thread(target=waiter)
    t.start()
    fn.run(lambda: fn.spawn(cond.signal).join())
    t.join(10)
    assert seen == ["woken"]

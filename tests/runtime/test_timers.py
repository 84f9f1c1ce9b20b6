"""Timers: never early (on the real clock and the virtual one), released as soon as they lose a
choice, and the timer queue itself."""

from __future__ import annotations

import time

import pytest

import fibernet as fn
from fibernet.ops import now
from fibernet.runtime.timers import TimerQueue

pytestmark = pytest.mark.timeout(20)


# -- never early, real clock ------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_sleep_is_never_early_on_the_real_clock(threads):
    def main():
        elapsed = []
        for seconds in (0.05, 0.011, 0.02):
            t0 = time.monotonic()
            fn.sleep(seconds)
            elapsed.append((time.monotonic() - t0, seconds))
        return elapsed

    for took, asked in fn.run(main, threads=threads):
        assert took >= asked


def test_a_timer_in_a_choice_is_never_early_on_the_real_clock():
    def main():
        ch = fn.Channel()
        t0 = time.monotonic()
        r = fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(0.05), lambda: "timeout")))
        return r, time.monotonic() - t0

    r, took = fn.run(main)
    assert r == "timeout"
    assert took >= 0.05


def test_sleep_and_timeouts_from_a_plain_thread_are_never_early():
    t0 = time.monotonic()
    fn.sleep(0.03)
    assert time.monotonic() - t0 >= 0.03
    ch = fn.Channel()
    t0 = time.monotonic()
    assert fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(0.03), lambda: "t"))) == "t"
    assert time.monotonic() - t0 >= 0.03
    assert ch.waiting() == (0, 0)


def test_timer_op_takes_an_absolute_monotonic_deadline():
    def main():
        deadline = time.monotonic() + 0.03
        fn.perform(fn.timer_op(deadline))
        return time.monotonic() >= deadline

    assert fn.run(main)


# -- never early, virtual clock -------------------------------------------------------------------


def test_timers_fire_at_their_deadline_on_the_virtual_clock_in_order():
    clock = fn.MockClock(start=100.0)
    fired = []

    def sleeper(seconds):
        start = now()
        fn.sleep(seconds)
        fired.append((seconds, start + seconds, now()))

    def main():
        fs = [fn.spawn(sleeper, s) for s in (30, 10, 20, 10.5, 0.001)]
        for f in fs:
            f.join()

    fn.run(main, clock=clock)
    assert [s for s, _, _ in fired] == [0.001, 10, 10.5, 20, 30]
    for _, deadline, woke in fired:
        # Autojump moves the clock straight to the next deadline: exactly, never before.
        assert woke == deadline
    assert clock.now() == 130.0


def test_without_autojump_a_timer_waits_until_the_clock_is_advanced():
    clock = fn.MockClock(autojump=False)

    def main():
        sleeper = fn.spawn(fn.sleep, 10)
        fn.yield_now()
        clock.advance(9.5)
        for _ in range(5):  # five turns: the timer is checked every turn and is not due
            fn.yield_now()
        assert not sleeper.done()
        clock.advance(0.5)
        sleeper.join()
        return now()

    assert fn.run(main, clock=clock) == 10.0


def test_mock_clock_cannot_go_backwards():
    with pytest.raises(ValueError):
        fn.MockClock().advance(-1)


def test_wait_op_counts_from_each_perform():
    """As CML's timeOutEvt: one op object serves as an idle timeout again and again."""

    def main():
        idle = fn.wrap(fn.wait_op(5), lambda: "idle")
        ch = fn.Channel()
        stamps = []
        for _ in range(3):
            fn.sleep(2)
            t0 = now()
            assert fn.perform(fn.choice(ch.get_op(), idle)) == "idle"
            stamps.append(now() - t0)
        return stamps

    assert fn.run(main, clock=fn.MockClock()) == [5, 5, 5]


def test_zero_and_negative_waits_complete_at_once():
    def main():
        t0 = now()
        fn.sleep(0)
        fn.sleep(-1)
        fn.perform(fn.wait_op(0))
        fn.perform(fn.timer_op(t0 - 1))
        return now() - t0

    assert fn.run(main, clock=fn.MockClock()) == 0


@pytest.mark.parametrize("bad", [float("nan"), "1", None, True])
def test_bad_durations_are_refused(bad):
    error = ValueError if bad != bad else TypeError
    with pytest.raises(error):
        fn.wait_op(bad)
    with pytest.raises(error):
        fn.timer_op(bad)


# -- released when they lose --------------------------------------------------------------------


def test_a_timer_that_lost_a_choice_is_released_at_once():
    """Guile Fibers issue #109: not at its expiry, but as soon as the choice completes."""

    def main():
        sched = fn.current_scheduler()
        ch = fn.Channel()
        seen = []

        def sender():
            seen.append(sched.pending_timers())  # the receiver's timeout is armed now
            ch.put("message")

        fn.spawn(sender)
        r = fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(3600), lambda: "timeout")))
        return r, seen, sched.pending_timers(), now()

    r, seen, after, virtual_now = fn.run(main, clock=fn.MockClock())
    assert r == "message"
    assert seen == [1]
    assert after == 0
    assert virtual_now == 0  # nobody waited for the hour to pass


def test_many_lost_timers_do_not_pile_up():
    """A loop of choices whose timeout always loses, beside one long-lived timer: the heap is
    compacted instead of holding every dead timeout until it would have expired."""
    rounds = 2000

    def main():
        sched = fn.current_scheduler()
        fn.spawn(fn.sleep, 30)  # due before every timeout: at the top of the heap, below which
        fn.yield_now()  # a cancelled timeout can only be marked dead, not popped
        ch = fn.Channel()
        armed = []

        def sender():
            for i in range(rounds):
                armed.append(sched.pending_timers())  # the receiver is blocked with its timeout
                ch.put(i)
                fn.yield_now()  # let the receiver block again before the next put

        fn.spawn(sender)
        got = [fn.perform(fn.choice(ch.get_op(), fn.wait_op(60))) for _ in range(rounds)]
        assert got == list(range(rounds))
        assert armed == [2] * rounds
        return sched.pending_timers(), len(sched._timers._heap)

    live, heap = fn.run(main, clock=fn.MockClock())
    assert live == 1
    assert heap < 200


# -- the timer queue ---------------------------------------------------------------------------


def test_timer_queue_fires_due_timers_in_deadline_order():
    q = TimerQueue()
    fired = []
    for d in (5, 1, 3, 2, 4, 3):
        q.add(d, lambda d=d: fired.append(d))
    assert len(q) == 6
    assert q.next_deadline() == 1
    q.fire_due(2.5)
    assert fired == [1, 2]
    assert len(q) == 4
    q.fire_due(10)
    assert fired == [1, 2, 3, 3, 4, 5]
    assert len(q) == 0
    assert q.next_deadline() is None


def test_timer_queue_cancel_is_immediate_and_idempotent():
    q = TimerQueue()
    fired = []
    entries = [q.add(d, lambda d=d: fired.append(d)) for d in range(1, 201)]
    for e in entries[::2]:
        q.cancel(e)
        q.cancel(e)
    assert len(q) == 100
    q.fire_due(1000)
    assert fired == list(range(2, 201, 2))
    q.cancel(entries[1])  # already fired: nothing happens
    assert len(q) == 0


def test_timer_queue_compacts_when_most_entries_are_dead():
    q = TimerQueue()
    q.add(0, lambda: None)  # stays at the top, so cancels below it only mark entries dead
    entries = [q.add(1000 + i, lambda: None) for i in range(1000)]
    for e in entries:
        q.cancel(e)
    assert len(q) == 1
    assert len(q._heap) < 200


def test_timer_queue_callbacks_may_cancel_other_timers():
    q = TimerQueue()
    fired = []
    later = q.add(2, lambda: fired.append("later"))
    q.add(1, lambda: (fired.append("first"), q.cancel(later)))
    q.fire_due(5)
    assert fired == ["first"]
    assert len(q) == 0


def test_plain_thread_timers_run_beside_a_runtime(start_thread):
    """A plain thread's timeout does not depend on any scheduler turning."""
    out = []

    def in_thread():
        ch = fn.Channel()
        out.append(fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(0.02), lambda: "t"))))

    fn.run(lambda: start_thread(in_thread).wait())
    assert out == ["t"]

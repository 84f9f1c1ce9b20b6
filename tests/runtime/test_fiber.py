"""Fibers: futures (join, join_op), cancellation, and exceptions nobody retrieved."""

from __future__ import annotations

import gc
import logging
import threading

import pytest

import fibernet as fn
from fibernet.ops.operation import NOT_READY

pytestmark = pytest.mark.timeout(20)


class Boom(Exception):
    pass


def raise_boom(msg="boom"):
    raise Boom(msg)


# -- join and join_op (Crow's futures) --------------------------------------------------------


def test_join_returns_the_value():
    def main():
        f = fn.spawn(lambda a, b: a + b, 2, 3)
        return f.join(), f.join(), f.done()

    assert fn.run(main) == (5, 5, True)


def test_join_raises_the_fibers_exception_again():
    def main():
        f = fn.spawn(raise_boom, "inner")
        with pytest.raises(Boom, match="inner") as first:
            f.join()
        with pytest.raises(Boom) as second:  # a future: every join sees the same outcome
            f.join()
        assert first.value is second.value
        return "ok"

    assert fn.run(main) == "ok"


@pytest.mark.parametrize("threads", [1, 2])
def test_join_waits_for_a_fiber_that_blocks(threads):
    def main():
        ch = fn.Channel()
        f = fn.spawn(lambda: ch.get() * 2, parallel=True)
        ch.put(21)
        return f.join()

    assert fn.run(main, threads=threads) == 42


def test_join_with_timeout_raises_timeout_and_releases_everything():
    def main():
        sched = fn.current_scheduler()
        ch = fn.Channel()
        f = fn.spawn(ch.get)
        with pytest.raises(fn.Timeout):
            f.join(timeout=5)
        assert not f.done()
        assert sched.pending_timers() == 0
        assert f._joiners in (None, [])  # the losing join branch left nothing on the fiber
        # A join whose fiber finishes in time returns its value, and the timer goes.
        g = fn.spawn(fn.sleep, 1)
        assert g.join(timeout=5) is None
        assert sched.pending_timers() == 0
        f.cancel()
        return "ok"

    assert fn.run(main, clock=fn.MockClock()) == "ok"


def test_timeout_is_a_fibernet_error_and_a_timeout_error():
    assert issubclass(fn.Timeout, fn.FibernetError)
    assert issubclass(fn.Timeout, TimeoutError)


def test_join_op_in_a_choice():
    def main():
        slow = fn.spawn(fn.sleep, 10)
        fast = fn.spawn(lambda: "fast")
        first = fn.perform(
            fn.choice(
                fn.wrap(slow.join_op(), lambda v: ("slow", v)),
                fn.wrap(fast.join_op(), lambda v: ("fast", v)),
            )
        )
        timed_out = fn.perform(fn.choice(slow.join_op(), fn.wrap(fn.wait_op(1), lambda: "timeout")))
        failing = fn.spawn(raise_boom)
        with pytest.raises(Boom):
            fn.perform(fn.choice(failing.join_op(), fn.never()))
        return first, timed_out, slow.join()

    assert fn.run(main, clock=fn.MockClock()) == (("fast", "fast"), "timeout", None)


@pytest.mark.parametrize("outcome", ["value", "exception"])
def test_join_from_a_plain_thread(outcome, start_thread, spin_until):
    results = []

    def main():
        gate = fn.Channel()
        f = fn.spawn(lambda: raise_boom("late") if gate.get() == "fail" else "late")

        def in_thread():
            try:
                results.append(("value", f.join()))
            except Boom as exc:
                results.append(("exception", str(exc)))

        ended = start_thread(in_thread)
        spin_until(lambda: f._joiners, "the thread to block in join")
        assert results == []
        gate.put("fail" if outcome == "exception" else "ok")
        ended.wait()

    fn.run(main, threads=2)
    assert results == [(outcome, "late")]


def test_join_from_a_plain_thread_with_timeout(start_thread):
    result = []

    def main():
        ch = fn.Channel()
        f = fn.spawn(ch.get)
        start_thread(lambda: result.append(pytest.raises(fn.Timeout, f.join, timeout=0.05))).wait()
        assert not f.done()
        f.cancel()

    fn.run(main)
    assert len(result) == 1 and isinstance(result[0].value, fn.Timeout)


def test_a_fiber_cannot_join_itself():
    def main():
        with pytest.raises(RuntimeError):
            fn.current_fiber().join()
        return "ok"

    assert fn.run(main) == "ok"


def test_done_callbacks_run_however_the_fiber_ends():
    calls = []

    def main():
        ok = fn.spawn(lambda: 1)
        bad = fn.spawn(raise_boom)
        never_started = fn.spawn(lambda: 3)
        for f in (ok, bad, never_started):
            f.add_done_callback(lambda f: calls.append((f.name, f.done())))
        never_started.cancel()
        ok.join()
        pytest.raises(Boom, bad.join)
        pytest.raises(fn.Cancelled, never_started.join)
        ok.add_done_callback(lambda f: calls.append(("late", f.done())))  # finished: called now
        return [ok.name, bad.name, never_started.name]

    names = fn.run(main)
    assert sorted(calls) == sorted([(n, True) for n in names] + [("late", True)])


# -- cancellation ------------------------------------------------------------------------------


def test_cancelled_is_a_base_exception_not_caught_by_except_exception():
    assert issubclass(fn.Cancelled, BaseException)
    assert not issubclass(fn.Cancelled, Exception)
    caught = []

    def victim(ch):
        try:
            ch.get()
        except Exception:  # a handler's catch-all must not swallow a cancellation
            caught.append("swallowed")

    def main():
        ch = fn.Channel()
        f = fn.spawn(victim, ch)
        fn.yield_now()
        f.cancel()
        with pytest.raises(fn.Cancelled):
            f.join()
        return "ok"

    assert fn.run(main) == "ok"
    assert caught == []


def _cancel_a_blocked_fiber(block, check_released):
    """Spawn ``block`` here, let it suspend, cancel it; it must raise Cancelled, release what it
    registered (``check_released``), and its join must raise Cancelled."""
    seen = []

    def victim():
        try:
            block()
        except fn.Cancelled:
            seen.append("cancelled")
            raise
        seen.append("completed")

    def main():
        f = fn.spawn(victim)
        fn.yield_now()  # one turn: the victim runs until it suspends
        assert f.state == "suspended"
        assert not check_released()
        f.cancel()
        with pytest.raises(fn.Cancelled):
            f.join()
        assert check_released()
        return seen

    return fn.run(main, clock=fn.MockClock())


def test_cancel_a_fiber_suspended_in_get():
    ch = fn.Channel()
    assert _cancel_a_blocked_fiber(ch.get, lambda: ch.waiting() == (0, 0)) == ["cancelled"]


def test_cancel_a_fiber_suspended_in_put():
    ch = fn.Channel()
    assert _cancel_a_blocked_fiber(lambda: ch.put(1), lambda: ch.waiting() == (0, 0)) == ["cancelled"]


def test_cancel_a_fiber_suspended_in_a_get_operation():
    ch = fn.Channel()
    assert _cancel_a_blocked_fiber(lambda: fn.perform(ch.get_op()), lambda: ch.waiting() == (0, 0)) == [
        "cancelled"
    ]


def test_cancel_a_fiber_suspended_in_sleep():
    released = lambda: fn.current_scheduler().pending_timers() == 0  # noqa: E731
    assert _cancel_a_blocked_fiber(lambda: fn.sleep(100), released) == ["cancelled"]


def test_cancel_a_fiber_suspended_in_a_choice_releases_every_branch():
    ch = fn.Channel()
    out = fn.Channel()
    cond = fn.Condition()

    def block():
        fn.perform(fn.choice(ch.get_op(), out.put_op("x"), cond.wait_op(), fn.wait_op(100)))

    def released():
        return (
            ch.waiting() == (0, 0)
            and out.waiting() == (0, 0)
            and cond.waiting() == 0
            and fn.current_scheduler().pending_timers() == 0
        )

    assert _cancel_a_blocked_fiber(block, released) == ["cancelled"]


def test_cancel_a_fiber_that_has_not_started():
    ran = []

    def main():
        local = fn.spawn(ran.append, "local")
        stealable = fn.spawn(ran.append, "parallel", parallel=True)
        assert local.state == stealable.state == "new"
        local.cancel()
        stealable.cancel()
        for f in (local, stealable):
            with pytest.raises(fn.Cancelled):
                f.join()
            assert f.state == "done"
        return "ok"

    # One thread: with two, the other one may steal the parallel fiber and run it before
    # the cancel (seen under load); a cancel racing a steal is the stress tests' part.
    assert fn.run(main, threads=1) == "ok"
    assert ran == []


def test_cancel_a_finished_fiber_changes_nothing():
    def main():
        f = fn.spawn(lambda: 7)
        assert f.join() == 7
        f.cancel()
        return f.join()

    assert fn.run(main) == 7


def test_cancel_is_raised_at_the_next_suspension_not_before():
    steps = []

    def victim():
        me = fn.current_fiber()
        me.cancel()  # pending: nothing happens until the fiber suspends
        steps.append("still running")
        try:
            fn.yield_now()
        except fn.Cancelled:
            steps.append("cancelled at yield")
            raise

    def main():
        f = fn.spawn(victim)
        pytest.raises(fn.Cancelled, f.join)
        return steps

    assert fn.run(main) == ["still running", "cancelled at yield"]


@pytest.mark.parametrize("canceller", ["fiber on another scheduler", "plain thread"])
def test_cancel_across_threads(canceller, spin_until):
    ch = fn.Channel()
    seen = []

    def victim():
        try:
            ch.get()
        except fn.Cancelled:
            seen.append(threading.get_ident())
            raise

    def main():
        sched0, sched1 = fn.current_scheduler().runtime.schedulers
        f = fn.spawn(victim, scheduler=sched1)
        spin_until(lambda: ch.waiting() == (1, 0), "the victim to block in get")
        assert f.state == "suspended"
        if canceller == "plain thread":
            t = threading.Thread(target=f.cancel)
            t.start()
            t.join()
        else:
            f.cancel()
        with pytest.raises(fn.Cancelled):
            f.join()
        assert ch.waiting() == (0, 0)
        return sched1.thread.ident

    assert seen == [fn.run(main, threads=2)]


def test_cancel_during_the_block_phase_from_another_thread():
    """A cancel that lands while the fiber is still registering its operation (block phase)
    must wake it exactly once: no second, stray resumption after it finished."""
    entered = threading.Event()
    cancelled = threading.Event()

    def block(state, index):
        entered.set()
        assert cancelled.wait(5)  # hold the fiber in its block phase until the cancel is in
        return None

    slow_to_block = fn.base_op(lambda: NOT_READY, block)

    def victim():
        fn.perform(slow_to_block)

    def main():
        f = fn.spawn(victim)

        def killer():
            assert entered.wait(5)
            f.cancel()
            cancelled.set()

        t = threading.Thread(target=killer)
        t.start()
        with pytest.raises(fn.Cancelled):
            f.join()
        t.join()
        for _ in range(3):  # the scheduler goes on turning without a stray resume
            fn.yield_now()
        after = [fn.spawn(lambda i=i: i) for i in range(3)]
        return [g.join() for g in after]

    assert fn.run(main) == [0, 1, 2]


def test_a_fiber_may_catch_cancelled_clean_up_and_block_again():
    def victim(ch):
        try:
            ch.get()
        except fn.Cancelled:
            return ch.get()  # the cancellation was delivered once; this get blocks normally

    def main():
        ch = fn.Channel()
        f = fn.spawn(victim, ch)
        fn.yield_now()
        f.cancel()
        fn.yield_now()
        assert f.state == "suspended"
        ch.put("after")
        return f.join()

    assert fn.run(main) == "after"


# -- exceptions nobody retrieved ---------------------------------------------------------------


def _records(caplog, name):
    return [r for r in caplog.records if r.name == "fibernet.fiber" and name in r.getMessage()]


def test_an_exception_nobody_joins_is_logged_with_the_fibers_name(caplog):
    caplog.set_level(logging.ERROR, logger="fibernet.fiber")

    def main():
        f = fn.spawn(raise_boom, "nobody listens", name="lonely-fiber")
        fn.yield_now()
        assert f.done()

    fn.run(main)
    gc.collect()
    records = _records(caplog, "lonely-fiber")
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert isinstance(records[0].exc_info[1], Boom)


def test_an_exception_that_was_joined_or_a_cancellation_is_not_logged(caplog):
    caplog.set_level(logging.ERROR, logger="fibernet.fiber")

    def main():
        joined = fn.spawn(raise_boom, name="joined-fiber")
        asked = fn.spawn(raise_boom, name="asked-fiber")
        cancelled = fn.spawn(fn.sleep, 10, name="cancelled-fiber")
        fn.yield_now()
        cancelled.cancel()
        pytest.raises(Boom, joined.join)
        assert isinstance(asked.exception(), Boom)
        fn.yield_now()
        assert cancelled.done()

    fn.run(main)
    gc.collect()
    assert _records(caplog, "-fiber") == []

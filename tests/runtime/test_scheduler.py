"""The scheduler: one turn runs each runnable fiber once, fibers stay on their thread, work
stealing of parallel fibers, and wake-ups that race with a scheduler going to sleep."""

from __future__ import annotations

import gc
import threading

import pytest
from greenlet import greenlet

import fibernet as fn

pytestmark = pytest.mark.timeout(20)


def test_fibers_start_in_spawn_order_and_take_turns():
    trace = []

    def worker(name):
        for i in range(3):
            trace.append((name, i))
            fn.yield_now()

    def main():
        fs = [fn.spawn(worker, n) for n in "abc"]
        for f in fs:
            f.join()

    fn.run(main)
    # Each runnable fiber runs once per turn: a round-robin, in spawn order.
    assert trace == [(n, i) for i in range(3) for n in "abc"]


def test_a_fiber_woken_during_a_turn_runs_in_the_next_one():
    trace = []

    def main():
        ch = fn.Channel()

        def getter():
            trace.append(("got", ch.get()))

        def putter():
            ch.put("x")  # wakes the getter, which runs in the next turn, after this fiber goes on
            trace.append("put returned")
            fn.yield_now()
            trace.append("putter second turn")

        g = fn.spawn(getter)
        p = fn.spawn(putter)
        g.join()
        p.join()

    fn.run(main)
    assert trace == ["put returned", ("got", "x"), "putter second turn"]


def test_yield_now_outside_a_fiber_just_returns():
    fn.yield_now()


def test_a_fiber_runs_on_its_schedulers_thread_all_its_life():
    def worker(ch):
        idents = {threading.get_ident()}
        for _ in range(20):
            ch.get()
            idents.add(threading.get_ident())
        return idents, fn.current_scheduler().thread.ident

    def main():
        ch = fn.Channel()
        schedulers = fn.current_scheduler().runtime.schedulers
        fs = [fn.spawn(worker, ch, scheduler=s) for s in schedulers]
        for _ in range(20 * len(fs)):
            ch.put(None)
        return [f.join() for f in fs], [s.thread.ident for s in schedulers]

    outcomes, threads = fn.run(main, threads=3)
    assert len(set(threads)) == 3
    for (idents, own), expected in zip(outcomes, threads, strict=True):
        assert idents == {own} == {expected}


def test_spawn_onto_a_scheduler_from_a_plain_thread(start_thread):
    seen = []

    def main():
        sched = fn.current_scheduler()
        got = fn.Channel()
        start_thread(lambda: fn.spawn(lambda: got.put(threading.get_ident()), scheduler=sched)).wait()
        seen.append(got.get())
        return threading.get_ident()

    assert seen == [fn.run(main)]


def test_spawn_onto_a_stopping_scheduler_is_refused():
    def main():
        sched = fn.current_scheduler()
        sched.runtime.stop()
        with pytest.raises(fn.NoScheduler):
            fn.spawn(lambda: None)
        return "ok"

    assert fn.run(main) == "ok"


# -- work stealing ---------------------------------------------------------------------------


def test_parallel_fibers_of_a_busy_scheduler_are_stolen_by_an_idle_one():
    """The spawner's scheduler is blocked (it cannot run anything itself) until every parallel
    fiber has run; so they can only have run on the other scheduler."""
    n = 8

    def main():
        home, other = fn.current_scheduler().runtime.schedulers
        ran = []
        all_ran = threading.Event()

        def work(i):
            ran.append((i, threading.get_ident(), fn.current_fiber().scheduler))
            if len(ran) == n:
                all_ran.set()

        for i in range(n):
            fn.spawn(work, i, parallel=True)
        assert all_ran.wait(10), f"only {len(ran)} of {n} parallel fibers ran while their spawner was busy"
        return ran, home, other

    ran, home, other = fn.run(main, threads=2)
    assert sorted(i for i, _, _ in ran) == list(range(n))
    assert {ident for _, ident, _ in ran} == {other.thread.ident}
    assert {s for _, _, s in ran} == {other}


def test_fibers_spawned_without_parallel_are_not_stolen():
    def main():
        home, other = fn.current_scheduler().runtime.schedulers
        trace = []
        stolen_ran = threading.Event()

        def local():
            trace.append(("local", threading.get_ident()))

        def stealable():
            trace.append(("stealable", threading.get_ident()))
            stolen_ran.set()

        f = fn.spawn(local)
        g = fn.spawn(stealable, parallel=True)
        assert stolen_ran.wait(10)
        # The local fiber waited for its own scheduler, which was busy until now.
        assert trace == [("stealable", other.thread.ident)]
        f.join()
        g.join()
        return trace, home.thread.ident

    trace, home_ident = fn.run(main, threads=2)
    assert trace[1] == ("local", home_ident)


def test_parallel_fibers_run_at_home_when_nobody_steals_them():
    def main():
        fs = [fn.spawn(threading.get_ident, parallel=True) for _ in range(5)]
        return {f.join() for f in fs}, threading.get_ident()

    idents, home = fn.run(main)
    assert idents == {home}


def _hold_the_thief_between_its_last_look_and_sleep(monkeypatch, rt):
    """Patch ``rt`` so that the next time an idle scheduler has looked for work to steal and
    found none, it stops just there -- before it goes to sleep -- until the test says so.
    Returns (at_gap, resume): events for the test to wait on and to set."""
    at_gap = threading.Event()
    resume = threading.Event()
    armed = []
    real = rt._steal_into
    watched = rt.schedulers[-1]  # the idle one: the only one, or the one main does not run on

    def steal_into(thief):
        found = real(thief)
        if armed and thief is watched and not found:
            armed.clear()
            at_gap.set()
            assert resume.wait(10)
        return found

    monkeypatch.setattr(rt, "_steal_into", steal_into)
    return armed, at_gap, resume


def test_no_lost_wake_up_when_work_appears_as_a_thief_goes_to_sleep(monkeypatch):
    """A sibling spawns a parallel fiber just after an idle scheduler last looked for work and
    just before it sleeps: the sleeper must still see it (it looks again after announcing
    that it sleeps)."""
    rt = fn.Runtime(threads=2)
    armed, at_gap, resume = _hold_the_thief_between_its_last_look_and_sleep(monkeypatch, rt)

    def main():
        home, thief = rt.schedulers
        armed.append(True)
        thief.wake()  # one more idle turn, in which it stops at the gap
        assert at_gap.wait(10)
        ran = threading.Event()
        fn.spawn(ran.set, parallel=True)  # the thief is not sleeping yet: nobody is woken
        resume.set()
        return ran.wait(5)  # this scheduler is blocked: only the thief can run it

    assert rt.run(main) is True


def test_no_lost_wake_up_for_a_parallel_fiber_spawned_from_another_thread(monkeypatch, start_thread):
    """The same race on one scheduler: a plain thread spawns a parallel fiber onto it between
    its last look at its queues and its sleep."""
    rt = fn.Runtime(threads=1)
    armed, at_gap, resume = _hold_the_thief_between_its_last_look_and_sleep(monkeypatch, rt)
    outcome = []

    def main():
        sched = fn.current_scheduler()
        done = fn.Condition()

        def other_thread():
            assert at_gap.wait(10)
            fn.spawn(done.signal, scheduler=sched, parallel=True)
            resume.set()

        armed.append(True)
        start_thread(other_thread)
        # Block in a choice with a generous timer, so that a lost wake-up shows as a failure
        # rather than a hang.
        outcome.append(
            fn.perform(
                fn.choice(fn.wrap(done.wait_op(), lambda: "woken"), fn.wrap(fn.wait_op(5), lambda: "lost"))
            )
        )

    rt.run(main)
    assert outcome == ["woken"]


def _live_greenlets():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet))


def test_greenlets_of_finished_fibers_are_freed():
    """A fiber that suspends needs a greenlet of its own; once it finishes, that greenlet is
    kept for reuse (a few) or freed -- not leaked, during a run or after it."""
    before = _live_greenlets()

    def main():
        cond = fn.Condition()
        fs = [fn.spawn(cond.wait) for _ in range(300)]
        fn.yield_now()  # all 300 are suspended at once: 300 greenlets
        cond.signal()
        for f in fs:
            f.join()
        fn.yield_now()
        return _live_greenlets()

    during = fn.run(main)
    for _ in range(3):
        fn.run(main, threads=2)
    assert during - before < 50
    assert _live_greenlets() - before <= 1  # at most this thread's own main greenlet

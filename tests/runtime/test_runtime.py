"""run() and the Runtime: values and exceptions out of main, shutdown of what main left behind,
and the resources a runtime holds (threads, epoll sets, eventfds) given back."""

from __future__ import annotations

import gc
import logging
import threading
import time

import pytest

import fibernet as fn

pytestmark = pytest.mark.timeout(20)


class Boom(Exception):
    pass


def readme_example(wait: float = 1.0):
    """The example of the issue (and the README), as it is written there."""
    ch = fn.Channel()
    worker = fn.spawn(lambda: [ch.put(i) for i in range(3)], parallel=True)
    got = [fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(wait), lambda: "timeout"))) for _ in range(4)]
    worker.join()
    return got


# -- the issue's example ---------------------------------------------------------------------


def test_issue_example_one_thread_mock_clock():
    clock = fn.MockClock()
    assert fn.run(readme_example, threads=1, clock=clock) == [0, 1, 2, "timeout"]
    # The timeout really was a one-second timer, jumped over by the virtual clock.
    assert clock.now() == 1.0


def test_issue_example_four_threads_real_clock():
    t0 = time.monotonic()
    assert fn.run(readme_example, threads=4) == [0, 1, 2, "timeout"]
    assert time.monotonic() - t0 >= 1.0


# -- values and exceptions ----------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_run_returns_main_value_and_passes_args(threads):
    def main(a, b):
        return (a, b, fn.current_fiber().name)

    assert fn.run(main, 1, "two", threads=threads) == (1, "two", "main")


@pytest.mark.parametrize("threads", [1, 4])
def test_run_raises_mains_exception_itself(threads):
    raised = []

    def main():
        exc = Boom("from main")
        raised.append(exc)
        raise exc

    with pytest.raises(Boom) as info:
        fn.run(main, threads=threads)
    assert info.value is raised[0]


@pytest.mark.parametrize("threads", [1, 4])
def test_run_raises_exception_of_a_fiber_main_joined(threads):
    def main():
        f = fn.spawn(lambda: 1 / 0, parallel=True)
        return f.join()

    with pytest.raises(ZeroDivisionError):
        fn.run(main, threads=threads)


def test_run_propagates_system_exit_from_main(caplog):
    caplog.set_level(logging.WARNING, logger="fibernet.fiber")

    def main():
        raise SystemExit(3)

    with pytest.raises(SystemExit) as info:
        fn.run(main)
    assert info.value.code == 3
    del info  # its traceback holds the main fiber
    gc.collect()
    assert caplog.records == []  # run raised it: not also logged as "never joined"


def test_keyboard_interrupt_in_any_fiber_stops_the_runtime(caplog):
    caplog.set_level(logging.WARNING, logger="fibernet.fiber")
    unwound = []

    def main():
        other = fn.current_scheduler().runtime.schedulers[1]
        fn.spawn(lambda: (_ for _ in ()).throw(KeyboardInterrupt()), scheduler=other)
        try:
            fn.sleep(3600)
        except fn.Cancelled:
            unwound.append("main cancelled")
            raise

    with pytest.raises(KeyboardInterrupt):
        fn.run(main, threads=2)
    assert unwound == ["main cancelled"]
    gc.collect()
    assert caplog.records == []


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_run_rejects_bad_thread_counts(threads):
    with pytest.raises(ValueError):
        fn.run(lambda: None, threads=threads)


def test_a_runtime_runs_once():
    rt = fn.Runtime(threads=2)
    assert rt.run(lambda: 5) == 5
    with pytest.raises(RuntimeError):
        rt.run(lambda: 6)


def test_run_inside_a_fiber_is_refused_and_leaks_no_descriptor(open_fds):
    def main():
        before = open_fds()
        with pytest.raises(RuntimeError):
            fn.run(lambda: None, threads=3)
        return open_fds().leaked_since(before)

    assert fn.run(main) == []


def test_spawn_outside_a_runtime_raises_no_scheduler():
    with pytest.raises(fn.NoScheduler):
        fn.spawn(lambda: None)
    with pytest.raises(TypeError):
        fn.run(lambda: fn.spawn(42))


def test_current_fiber_and_scheduler_outside_any_runtime_are_none():
    assert fn.current_fiber() is None
    assert fn.current_scheduler() is None


# -- shutdown -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_run_returns_without_waiting_for_fibers_main_left_behind(threads):
    """Guile Fibers issue #37: run must not hang on fibers blocked forever; they are cancelled."""
    ch = fn.Channel()
    cond = fn.Condition()
    outcomes = []

    def stuck(what):
        try:
            if what == "get":
                ch.get()
            elif what == "wait":
                cond.wait()
            else:
                fn.sleep(3600)
        except fn.Cancelled:
            outcomes.append(what)
            raise

    def main():
        sched = fn.current_scheduler()
        others = sched.runtime.schedulers
        for i, what in enumerate(["get", "wait", "sleep"] * 2):
            fn.spawn(stuck, what, scheduler=others[i % len(others)])
        fn.yield_now()
        return "done"

    assert fn.run(main, threads=threads) == "done"
    assert sorted(outcomes) == sorted(["get", "wait", "sleep"] * 2)
    # Their registrations went with them.
    assert ch.waiting() == (0, 0)
    assert cond.waiting() == 0


def test_fibers_never_started_are_cancelled_at_shutdown_without_running():
    ran = []

    def main():
        for _ in range(3):
            fn.spawn(ran.append, 1)
            fn.spawn(ran.append, 2, parallel=True)
        return "main done first"

    assert fn.run(main) == "main done first"
    assert ran == []


# -- resources ------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_run_gives_back_threads_and_descriptors(threads, open_fds):
    threads_before = threading.active_count()
    before = open_fds()
    seen = {}

    def main():
        seen["threads"] = threading.active_count()
        seen["fds"] = len(open_fds())
        fs = [fn.spawn(fn.sleep, 0.001, parallel=True) for _ in range(8)]
        for f in fs:
            f.join()

    fn.run(main, threads=threads)
    # While running: one more thread per extra scheduler, an epoll and an eventfd per scheduler.
    assert seen["threads"] == threads_before + threads - 1
    assert seen["fds"] >= len(before) + 2 * threads
    assert threading.active_count() == threads_before
    assert open_fds().leaked_since(before) == []


def test_resources_released_after_cancels_timeouts_and_return(open_fds):
    """No timer, channel waiter, condition waiter, thread or descriptor outlives its use."""
    threads_before = threading.active_count()
    before = open_fds()
    ch = fn.Channel()  # nobody puts on it
    sink = fn.Channel()  # nobody gets from it
    cond = fn.Condition()
    left_behind = fn.Channel()

    def blocked(kind):
        if kind == "get":
            ch.get()
        elif kind == "put":
            sink.put("never taken")
        elif kind == "wait":
            cond.wait()
        elif kind == "sleep":
            fn.sleep(3600)
        else:
            fn.perform(fn.choice(ch.get_op(), sink.put_op(0), cond.wait_op(), fn.wait_op(3600)))

    def main():
        sched = fn.current_scheduler()
        # Timeouts: the timer wins; the channel and condition branches are released.
        for _ in range(20):
            r = fn.perform(fn.choice(ch.get_op(), cond.wait_op(), fn.wrap(fn.wait_op(0.001), lambda: "t")))
            assert r == "t"
            assert ch.waiting() == (0, 0)
            assert cond.waiting() == 0
            assert sched.pending_timers() == 0
        # Cancels: on this scheduler and on others.
        kinds = ["get", "put", "wait", "sleep", "choice"]
        victims = [fn.spawn(blocked, k, parallel=True) for k in kinds * 2]
        victims += [fn.spawn(blocked, k) for k in kinds]
        fn.yield_now()  # the local ones block now
        for f in victims:
            f.cancel()
        for f in victims:
            with pytest.raises(fn.Cancelled):
                f.join()
        assert ch.waiting() == (0, 0)
        assert sink.waiting() == (0, 0)
        assert cond.waiting() == 0
        assert all(s.pending_timers() == 0 for s in sched.runtime.schedulers)
        # Return: what is still blocked when main returns is cancelled and released.
        for k in kinds:
            fn.spawn(blocked, k, parallel=True)
            fn.spawn(left_behind.get)
        fn.yield_now()
        return sched.runtime

    rt = fn.run(main, threads=4)
    assert ch.waiting() == (0, 0)
    assert sink.waiting() == (0, 0)
    assert left_behind.waiting() == (0, 0)
    assert cond.waiting() == 0
    assert all(s.pending_timers() == 0 for s in rt.schedulers)
    assert all(s.watched_fds() == 0 for s in rt.schedulers)
    assert threading.active_count() == threads_before
    assert open_fds().leaked_since(before) == []


# -- an idle scheduler sleeps ------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_an_idle_runtime_uses_almost_no_cpu(threads):
    """A functional check that the loop blocks in epoll instead of spinning."""
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    fn.run(fn.sleep, 0.3, threads=threads)
    assert time.monotonic() - wall0 >= 0.3
    assert time.process_time() - cpu0 < 0.1


def test_a_fiber_that_ignores_cancellation_is_killed_after_the_grace(monkeypatch, caplog):
    import fibernet.runtime.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "SHUTDOWN_GRACE", 0.05)
    caplog.set_level(logging.WARNING, logger="fibernet.scheduler")
    unwound = []

    def stubborn():
        try:
            while True:
                try:
                    fn.sleep(3600)
                except fn.Cancelled:
                    pass  # wrong, but it must not hang run()
        finally:
            unwound.append("finally ran")

    def main():
        fn.spawn(stubborn, name="stubborn-fiber")
        fn.yield_now()
        return "returned"

    caplog.set_level(logging.WARNING, logger="fibernet.fiber")
    assert fn.run(main) == "returned"
    assert unwound == ["finally ran"]
    gc.collect()  # an unjoined exception would be logged now
    mine = [r for r in caplog.records if "stubborn-fiber" in r.getMessage()]
    assert [r.levelno for r in mine] == [logging.WARNING]  # logged once, as killed


def test_loops_running_counts_the_scheduler_loops_of_the_process():
    # The compiled sockets keep the GIL through a system call while one loop runs (see
    # fibernet/net/_c_sockets.pxd): the count must be right, and back to what it was after.
    from fibernet.runtime.scheduler import loops_running

    before = loops_running()

    def main():
        other = fn.current_scheduler().runtime.schedulers[1]
        return fn.spawn(loops_running, scheduler=other).join()  # (both loops are running)

    assert fn.run(loops_running) == before + 1
    assert fn.run(main, threads=2) == before + 2
    assert loops_running() == before

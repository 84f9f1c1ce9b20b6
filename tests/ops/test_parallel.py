"""From Crow: parallel_map (a parallel for-loop) and shared functions."""

from __future__ import annotations

import threading

import pytest

import fibernet as fn

pytestmark = pytest.mark.timeout(20)


class Boom(Exception):
    pass


# -- parallel_map ------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 3])
def test_parallel_map_returns_results_in_the_items_order(threads):
    def work(x):
        fn.sleep(0.001 * (x % 4))  # finish out of order
        return x * x

    assert fn.run(lambda: fn.parallel_map(work, range(40)), threads=threads) == [x * x for x in range(40)]


def test_parallel_map_of_nothing_is_empty():
    assert fn.run(lambda: fn.parallel_map(lambda x: x, [])) == []


def test_parallel_map_spreads_over_schedulers_while_the_caller_waits():
    """Each call runs in a stealable fiber: while the caller blocks, the idle schedulers take
    some."""

    def main():
        started = threading.Barrier(3, timeout=10)

        def work(_):
            # Three calls that meet at a barrier can only all get through if they run on three
            # different threads at once.
            started.wait()
            return threading.get_ident()

        idents = fn.parallel_map(work, range(3))
        return set(idents), {s.thread.ident for s in fn.current_scheduler().runtime.schedulers}

    idents, threads = fn.run(main, threads=3)
    assert idents == threads


def test_parallel_map_raises_the_first_exception_and_cancels_the_rest():
    cancelled = []

    def main():
        gate = fn.Channel()
        started = fn.Channel(capacity=8)

        def work(i):
            if i == 3:  # fails once every other call is waiting (a fiber cancelled before it
                for _ in range(7):  # starts never runs: it could not say it was cancelled)
                    started.get()
                raise Boom(f"item {i}")
            try:
                started.put(i)
                gate.get()  # nobody ever puts: only a cancel ends this
            except fn.Cancelled:
                cancelled.append(i)
                raise

        with pytest.raises(Boom, match="item 3"):
            fn.parallel_map(work, range(8))
        # Every other call was cancelled and finished before parallel_map returned.
        return sorted(cancelled), gate.waiting(), [f for f in fn.fibers() if "parallel_map" in f.name]

    assert fn.run(main, threads=2) == ([0, 1, 2, 4, 5, 6, 7], (0, 0), [])


def test_parallel_map_raises_the_first_failure_in_time():
    def work(i):
        fn.sleep(10 - i)  # the last item fails first
        raise Boom(str(i))

    def main():
        with pytest.raises(Boom) as info:
            fn.parallel_map(work, range(5))
        return str(info.value)

    assert fn.run(main, clock=fn.MockClock()) == "4"


def test_parallel_map_cancelled_cancels_its_calls():
    cancelled = []

    def main():
        def work(i):
            try:
                fn.sleep(100)
            except fn.Cancelled:
                cancelled.append(i)
                raise

        f = fn.spawn(fn.parallel_map, work, range(4))
        fn.yield_now()
        fn.yield_now()
        f.cancel()
        pytest.raises(fn.Cancelled, f.join)
        return sorted(cancelled), fn.current_scheduler().pending_timers()

    assert fn.run(main, clock=fn.MockClock()) == ([0, 1, 2, 3], 0)


def test_parallel_map_needs_a_runtime():
    with pytest.raises(fn.NoScheduler):
        fn.parallel_map(lambda x: x, [1])


# -- shared -------------------------------------------------------------------------------------


def test_shared_calls_on_the_home_scheduler_are_direct():
    def main():
        f = fn.shared(lambda: (threading.get_ident(), fn.current_fiber()))
        ident, fiber = f()
        return (
            ident == threading.get_ident(),
            fiber is fn.current_fiber(),
            f.scheduler is fn.current_scheduler(),
        )

    assert fn.run(main) == (True, True, True)


def test_shared_calls_from_other_schedulers_run_on_the_home_thread():
    def main():
        home, other = fn.current_scheduler().runtime.schedulers

        def where():
            return threading.get_ident(), fn.current_fiber().name

        f = fn.shared(where)

        def caller():
            return threading.get_ident(), f()

        caller_ident, (ran_on, ran_in) = fn.spawn(caller, scheduler=other).join()
        return caller_ident, ran_on, ran_in, home.thread.ident, other.thread.ident

    caller_ident, ran_on, ran_in, home_ident, other_ident = fn.run(main, threads=2)
    assert caller_ident == other_ident != home_ident
    assert ran_on == home_ident
    assert ran_in.startswith("shared:")


def test_shared_calls_from_a_plain_thread_run_on_the_home_thread(start_thread):
    def main():
        f = fn.shared(threading.get_ident)
        out = []
        start_thread(lambda: out.append((threading.get_ident(), f()))).wait()
        return out[0], threading.get_ident()

    (thread_ident, ran_on), home_ident = fn.run(main)
    assert ran_on == home_ident != thread_ident


def test_shared_calls_from_many_schedulers_never_overlap(switchinterval):
    """Crow's exclusion: calls from fibers on three other schedulers all run on the home
    thread, one at a time, so an unguarded read-modify-write loses no update."""

    def main():
        state = {"n": 0, "inside": False, "overlaps": 0, "idents": set()}

        def bump():
            if state["inside"]:
                state["overlaps"] += 1
            state["inside"] = True
            state["idents"].add(threading.get_ident())
            n = state["n"]
            for _ in range(50):  # room for the interpreter to switch threads
                pass
            state["n"] = n + 1
            state["inside"] = False

        f = fn.shared(bump)

        def caller():
            for _ in range(50):
                f()

        fs = [fn.spawn(caller, scheduler=s) for s in fn.current_scheduler().runtime.schedulers[1:]]
        for g in fs:
            g.join()
        return state, threading.get_ident()

    state, home_ident = fn.run(main, threads=4)
    assert state["n"] == 150
    assert state["overlaps"] == 0
    assert state["idents"] == {home_ident}


def test_shared_reraises_the_exception_in_the_caller():
    def main():
        f = fn.shared(lambda: 1 / 0)
        other = fn.current_scheduler().runtime.schedulers[1]

        def caller():
            try:
                f()
            except ZeroDivisionError:
                return "raised here"

        return fn.spawn(caller, scheduler=other).join()

    assert fn.run(main, threads=2) == "raised here"


def test_shared_needs_a_runtime():
    with pytest.raises(fn.NoScheduler):
        fn.shared(lambda: None)


def test_shared_keeps_the_functions_name():
    def named_function():
        pass

    assert fn.run(lambda: fn.shared(named_function).__name__) == "named_function"

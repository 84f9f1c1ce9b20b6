"""Introspection (the seed's internals interface): schedulers and fibers by name, what a fiber
waits on, and its state."""

from __future__ import annotations

import collections

import pytest

import fibernet as fn

pytestmark = pytest.mark.timeout(20)


def test_schedulers_of_a_running_runtime_and_by_name():
    def main():
        rt = fn.current_scheduler().runtime
        listed = fn.schedulers()
        found = [fn.scheduler_by_name(s.name) for s in rt.schedulers]
        return rt, listed, found

    rt, listed, found = fn.run(main, threads=3)
    assert listed == rt.schedulers
    assert found == rt.schedulers
    assert len({s.name for s in listed}) == 3
    assert fn.current_scheduler() is None
    # Once the runtime has stopped, it is gone from the listing.
    assert fn.schedulers() == []
    assert fn.scheduler_by_name(rt.schedulers[0].name) is None


def test_scheduler_by_name_of_an_unknown_name_is_none():
    assert fn.run(lambda: fn.scheduler_by_name("no such scheduler")) is None


def test_fibers_lists_live_fibers_of_every_scheduler_by_name(spin_until):
    def main():
        rt = fn.current_scheduler().runtime
        ch = fn.Channel()
        here = fn.spawn(ch.get, name="blocked-here")
        there = fn.spawn(ch.get, name="blocked-there", scheduler=rt.schedulers[1])
        spin_until(lambda: ch.waiting() == (2, 0), "both fibers to block")
        names = {f.name for f in fn.fibers()}
        found = {n: fn.fiber_by_name(n) for n in ("blocked-here", "blocked-there", "main")}
        for f in (here, there):
            f.cancel()
            pytest.raises(fn.Cancelled, f.join)
        gone = fn.fiber_by_name("blocked-here")
        return names, found, (here, there), gone

    names, found, (here, there), gone = fn.run(main, threads=2)
    assert {"main", "blocked-here", "blocked-there"} <= names
    assert found["blocked-here"] is here
    assert found["blocked-there"] is there
    assert found["main"].name == "main"
    assert gone is None
    assert fn.fibers() == []


def test_a_fiber_not_started_is_listed():
    def main():
        f = fn.spawn(lambda: None, name="queued")
        g = fn.spawn(lambda: None, name="queued-parallel", parallel=True)
        listed = fn.fibers()
        return f in listed and g in listed

    assert fn.run(main)


def test_default_names_are_unique_and_say_what_runs():
    def task():
        pass

    def main():
        fs = [fn.spawn(task) for _ in range(3)]
        for f in fs:
            f.join()
        return [f.name for f in fs]

    names = fn.run(main)
    assert len(set(names)) == 3
    assert all("task" in n for n in names)


def test_state_strings_through_a_fibers_life():
    def main():
        ch = fn.Channel()
        states = {}

        def body():
            states["inside"] = fn.current_fiber().state
            return ch.get()

        f = fn.spawn(body)
        states["spawned"] = f.state
        fn.yield_now()
        states["blocked"] = f.state
        ch.put(1)
        states["woken"] = f.state
        f.join()
        states["finished"] = f.state
        return states, repr(f)

    states, text = fn.run(main)
    assert states == {
        "spawned": "new",
        "inside": "running",
        "blocked": "suspended",
        "woken": "runnable",
        "finished": "done",
    }
    assert "done" in text


@pytest.mark.parametrize(
    "how, expected",
    [
        ("get", ["get on channel"]),
        ("get_op", ["get on channel"]),
        ("put", ["put on channel"]),
        ("sleep", ["wait 5"]),
        ("condition", ["condition"]),
        ("choice", ["get on channel", "|", "wait 5"]),
        ("join", ["join blocker"]),
    ],
)
def test_waiting_on_describes_what_a_fiber_is_blocked_in(how, expected):
    def main():
        ch = fn.Channel()
        cond = fn.Condition()
        blocker = fn.spawn(ch.get, name="blocker")
        actions = {
            "get": ch.get,
            "get_op": lambda: fn.perform(ch.get_op()),
            "put": lambda: fn.Channel().put(1),
            "sleep": lambda: fn.sleep(5),
            "condition": cond.wait,
            "choice": lambda: fn.perform(fn.choice(ch.get_op(), fn.wait_op(5))),
            "join": blocker.join,
        }
        f = fn.spawn(actions[how])
        fn.yield_now()
        text = f.waiting_on()
        f.cancel()
        blocker.cancel()
        pytest.raises(fn.Cancelled, f.join)
        return text, f.waiting_on(), hex(id(ch))

    text, after, ch_id = fn.run(main, clock=fn.MockClock())
    for part in expected:
        assert part in text
    if how in ("get", "get_op"):
        assert ch_id in text  # which channel
    assert after is None


def test_a_running_fiber_waits_on_nothing():
    assert fn.run(lambda: fn.current_fiber().waiting_on()) is None


class _MutatedWhileCopied(collections.deque):
    """A run queue whose first copy meets a concurrent mutation, as iterating a deque that
    another thread appends to does on a free-threaded CPython ("deque mutated during
    iteration"); later copies succeed."""

    met = 0

    def _meet(self):
        if not self.met:
            self.met += 1
            raise RuntimeError("deque mutated during iteration")

    def __iter__(self):
        self._meet()
        return super().__iter__()

    def copy(self):
        self._meet()
        return collections.deque(super().__iter__())


def test_fibers_copes_with_a_run_queue_mutated_while_it_is_copied():
    def main():
        sched = fn.current_scheduler()
        queued = [fn.spawn(fn.sleep, 0, name=f"queued-{i}") for i in range(3)]
        runq = sched._runq  # (nothing runs until it is put back: no suspension between)
        sched._runq = _MutatedWhileCopied(runq)
        try:
            listed = fn.fibers()
        finally:
            sched._runq = runq
        return [f.name for f in listed if f in queued]

    assert fn.run(main) == ["queued-0", "queued-1", "queued-2"]


def test_fibers_from_another_thread_while_the_schedulers_are_busy(start_thread, switchinterval):
    """A plain thread lists the fibers over and over while two schedulers hand messages
    back and forth (each wake appends to the other's run queue)."""
    failures = []
    done = fn.Condition()

    def lister():
        while not done.signalled:
            try:
                fn.fibers()
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                failures.append(exc)
                return

    def main():
        other = next(s for s in fn.current_scheduler().runtime.schedulers if s is not fn.current_scheduler())
        ping, pong = fn.Channel(), fn.Channel()

        def echo():
            for message in ping:
                pong.put(message)

        fn.spawn(echo, scheduler=other)
        ended = start_thread(lister)
        for i in range(3000):
            ping.put(i)
            assert pong.get() == i
        ping.close()
        done.signal()
        ended.wait()

    fn.run(main, threads=2)
    assert failures == []

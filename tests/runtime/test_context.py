"""Each fiber runs in its own ``contextvars`` context, copied from its spawner's at spawn (as
asyncio's tasks and trio's tasks do): nothing one fiber sets is seen by another, even though
fibers reuse runner greenlets."""

from __future__ import annotations

import contextvars

import pytest

import fibernet as fn

pytestmark = pytest.mark.timeout(20)

var: contextvars.ContextVar = contextvars.ContextVar("var", default="unset")


other: contextvars.ContextVar = contextvars.ContextVar("other")


@pytest.mark.parametrize("spawners_context", ["empty", "not empty"])
def test_a_fiber_does_not_start_in_the_previous_fibers_context(spawners_context):
    def main():
        if spawners_context == "not empty":
            other.set("something")
        fn.spawn(var.set, 42).join()  # its runner greenlet is reused by the next fiber
        return fn.spawn(var.get).join()

    assert contextvars.Context().run(fn.run, main) == "unset"


def test_a_fiber_inherits_its_spawners_context_as_it_was_at_spawn():
    def main():
        var.set("spawner's")
        child = fn.spawn(lambda: (var.get(), var.set("child's"), var.get()))
        var.set("changed after spawn")
        seen_by_child = child.join()
        return seen_by_child[0], seen_by_child[2], var.get()

    assert fn.run(main) == ("spawner's", "child's", "changed after spawn")


def test_fibers_that_interleave_keep_their_own_values():
    def worker(k, ch_in, ch_out):
        var.set(k)
        ch_out.put(ch_in.get())  # suspends: the other worker runs and sets its own value
        return var.get()

    def main():
        a_in, b_in, out = fn.Channel(), fn.Channel(), fn.Channel()
        a = fn.spawn(worker, "a", a_in, out)
        b = fn.spawn(worker, "b", b_in, out)
        fn.yield_now()
        a_in.put(1)
        b_in.put(2)
        assert {out.get(), out.get()} == {1, 2}
        return a.join(), b.join(), var.get()

    assert fn.run(main) == ("a", "b", "unset")


def test_run_copies_the_callers_context_and_leaks_nothing_back():
    token = var.set("caller's")
    try:

        def main():
            seen = var.get()
            var.set("main's")
            return seen

        assert fn.run(main) == "caller's"
        assert var.get() == "caller's"
    finally:
        var.reset(token)


def test_a_fiber_spawned_onto_another_scheduler_takes_its_spawners_context():
    def main():
        var.set("spawner's")
        here = fn.current_scheduler()
        other = next(s for s in here.runtime.schedulers if s is not here)
        f = fn.spawn(lambda: (var.get(), fn.current_scheduler() is other), scheduler=other)
        return f.join()

    assert fn.run(main, threads=2) == ("spawner's", True)

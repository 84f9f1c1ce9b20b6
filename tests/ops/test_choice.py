"""The CML core: choice, wrap, guard, with_nack, always, never, and operations of one's own
made from try/block/wrap functions (base_op)."""

from __future__ import annotations

import threading
from functools import partial

import pytest

import fibernet as fn
from fibernet.ops.operation import NOT_READY, NOTHING

pytestmark = pytest.mark.timeout(20)


# -- choice -----------------------------------------------------------------------------------


def test_choice_over_a_put_and_a_get_completes_only_the_get_that_can():
    def main():
        out, inbox = fn.Channel(), fn.Channel()
        fn.spawn(inbox.put, "incoming")
        fn.yield_now()  # the putter waits on inbox
        r = fn.perform(fn.choice(fn.wrap(out.put_op("outgoing"), lambda: "put"), inbox.get_op()))
        assert out.waiting() == (0, 0)  # the put branch left no registration behind ...
        late = fn.spawn(out.get)  # ... and no message: a getter now finds nothing
        fn.yield_now()
        leftover = out.waiting()
        late.cancel()
        return r, leftover, inbox.waiting()

    assert fn.run(main) == ("incoming", (1, 0), (0, 0))


def test_choice_over_a_put_and_a_get_completes_only_the_put_that_can():
    def main():
        out, inbox = fn.Channel(), fn.Channel()
        receiver = fn.spawn(out.get)
        fn.yield_now()
        r = fn.perform(fn.choice(fn.wrap(out.put_op("outgoing"), lambda: "put"), inbox.get_op()))
        # The get branch left nothing behind: a later put finds no getter.
        assert inbox.try_put("stray") is False
        return r, receiver.join(), out.waiting(), inbox.waiting()

    assert fn.run(main) == ("put", "outgoing", (0, 0), (0, 0))


def test_choice_that_blocks_completes_one_branch_and_unregisters_the_others():
    def main():
        a, b = fn.Channel(), fn.Channel()
        chooser = fn.spawn(
            lambda: fn.perform(
                fn.choice(fn.wrap(a.put_op("to a"), lambda: "a"), fn.wrap(b.get_op(), lambda v: ("b", v)))
            )
        )
        fn.yield_now()
        assert (a.waiting(), b.waiting()) == ((0, 1), (1, 0))
        b.put("to b")
        result = chooser.join()
        return result, a.waiting(), b.waiting(), a.try_get("nothing")

    assert fn.run(main) == (("b", "to b"), (0, 0), (0, 0), "nothing")


def test_a_choice_picks_among_ready_branches_at_random():
    """Every ready branch gets chosen sometimes (the seed starts the try phase at a random
    branch, so no branch starves)."""
    seen = set()
    for _ in range(200):
        seen.add(fn.perform(fn.choice(fn.always("a"), fn.always("b"), fn.always("c"))))
    assert seen == {"a", "b", "c"}


def test_choice_of_one_is_that_operation_and_choice_nests():
    op = fn.always(1)
    assert fn.choice(op) is op
    nested = fn.choice(fn.never(), fn.choice(fn.never(), fn.always("deep")))
    assert fn.perform(nested) == "deep"


def test_choice_and_wrap_refuse_what_is_not_an_operation():
    with pytest.raises(TypeError):
        fn.choice(fn.always(1), 2)
    with pytest.raises(TypeError):
        fn.wrap(3, lambda v: v)
    with pytest.raises(TypeError):
        fn.wrap(fn.always(1), "not callable")


# -- wrap -----------------------------------------------------------------------------------------


def test_wrap_applies_to_the_value_inner_first():
    op = fn.wrap(fn.wrap(fn.always(2), lambda v: v * 10), lambda v: v + 1)
    assert fn.perform(op) == 21
    assert op.perform() == 21  # the method form
    assert fn.perform(fn.always(2).wrap(str)) == "2"


def test_wrap_of_an_operation_without_value_takes_no_argument():
    def main():
        ch = fn.Channel(capacity=1)
        timed = fn.perform(fn.wrap(fn.wait_op(0), lambda: "t"))
        put = fn.perform(fn.wrap(ch.put_op(1), lambda: "sent"))
        bare = fn.perform(fn.wait_op(0))
        cond = fn.Condition()
        cond.signal()
        signalled = fn.perform(fn.wrap(cond.wait_op(), lambda: "signalled"))
        nested = fn.perform(fn.wrap(fn.wrap(fn.wait_op(0), lambda: "inner"), lambda v: v + "+outer"))
        return timed, put, bare, signalled, nested

    assert fn.run(main) == ("t", "sent", None, "signalled", "inner+outer")


def test_an_exception_in_a_wrap_function_is_raised_by_perform():
    def main():
        ch = fn.Channel(capacity=1)
        ch.put(0)
        with pytest.raises(ZeroDivisionError):
            fn.perform(fn.wrap(ch.get_op(), lambda v: 1 / v))
        return len(ch), ch.waiting()  # the message was taken all the same

    assert fn.run(main) == (0, (0, 0))


# -- guard ----------------------------------------------------------------------------------------


def test_guard_makes_the_operation_at_each_perform():
    calls = []

    def make():
        calls.append(len(calls))
        return fn.always(len(calls))

    op = fn.guard(make)
    assert calls == []  # nothing at construction
    assert [fn.perform(op) for _ in range(3)] == [1, 2, 3]
    assert calls == [0, 1, 2]
    assert fn.perform(fn.choice(fn.never(), op)) == 4


def test_guard_with_a_timer_made_fresh_each_time():
    def main():
        deadline_op = fn.guard(lambda: fn.timer_op(fn.current_scheduler().now() + 3))
        stamps = []
        for _ in range(2):
            fn.perform(deadline_op)
            stamps.append(fn.current_scheduler().now())
        return stamps

    assert fn.run(main, clock=fn.MockClock()) == [3, 6]


def test_guard_that_does_not_return_an_operation_raises():
    with pytest.raises(TypeError):
        fn.perform(fn.guard(lambda: 42))


# -- with_nack ------------------------------------------------------------------------------------


def test_with_nack_signals_the_nack_when_another_branch_wins():
    def main():
        nacks = []
        ch = fn.Channel()

        def make(nack):
            nacks.append(nack)
            return fn.wrap(ch.get_op(), lambda v: ("request", v))

        fn.spawn(lambda: fn.sleep(1))
        r = fn.perform(fn.choice(fn.with_nack(make), fn.wrap(fn.wait_op(1), lambda: "timeout")))
        (nack,) = nacks
        # The nack is an operation that is complete now: performing it does not block.
        return r, fn.perform(
            fn.choice(fn.wrap(nack, lambda: "nacked"), fn.wrap(fn.wait_op(5), lambda: "not nacked"))
        )

    assert fn.run(main, clock=fn.MockClock()) == ("timeout", "nacked")


def test_with_nack_does_not_signal_the_nack_when_its_own_branch_wins():
    def main():
        nacks = []
        ch = fn.Channel()

        def make(nack):
            nacks.append(nack)
            return ch.get_op()

        fn.spawn(ch.put, "reply")
        r = fn.perform(fn.choice(fn.with_nack(make), fn.wrap(fn.wait_op(10), lambda: "timeout")))
        (nack,) = nacks
        return r, fn.perform(
            fn.choice(fn.wrap(nack, lambda: "nacked"), fn.wrap(fn.wait_op(5), lambda: "not nacked"))
        )

    assert fn.run(main, clock=fn.MockClock()) == ("reply", "not nacked")


def test_with_nack_when_another_branch_is_ready_at_once():
    nacks = []
    r = fn.perform(
        fn.choice(fn.with_nack(lambda nack: (nacks.append(nack), fn.never())[1]), fn.always("now"))
    )
    assert r == "now"
    assert fn.perform(nacks[0]) is None  # complete: does not block


def test_with_nack_signals_the_nack_when_the_perform_is_cancelled():
    def main():
        nacks = []

        def server(nack):
            nacks.append(nack)
            return fn.never()

        f = fn.spawn(fn.perform, fn.with_nack(server))
        fn.yield_now()
        f.cancel()
        pytest.raises(fn.Cancelled, f.join)
        return fn.perform(
            fn.choice(fn.wrap(nacks[0], lambda: "nacked"), fn.wrap(fn.wait_op(5), lambda: "not nacked"))
        )

    assert fn.run(main, clock=fn.MockClock()) == "nacked"


def _fired(nack) -> bool:
    """Has the nack fired?  (Its operation is then complete at once.)"""
    return fn.perform(fn.choice(fn.wrap(nack, lambda: True), fn.wrap(fn.wait_op(5), lambda: False)))


def _remember(nacks, then=fn.never):
    def make(nack):
        nacks.append(nack)
        return then()

    return make


def test_with_nack_fires_when_a_guard_in_the_same_choice_raises():
    def boom():
        raise KeyError("guard")

    def main():
        nacks = []
        with pytest.raises(KeyError):
            fn.perform(fn.choice(fn.with_nack(_remember(nacks)), fn.guard(boom)))
        return [_fired(n) for n in nacks]

    assert fn.run(main, clock=fn.MockClock()) == [True]


def test_with_nack_fires_when_its_own_function_raises_after_handing_the_nack_on():
    def main():
        nacks = []

        def make(nack):
            nacks.append(nack)
            raise KeyError("make")

        with pytest.raises(KeyError):
            fn.perform(fn.choice(fn.with_nack(make), fn.never()))
        inner = []
        with pytest.raises(KeyError):  # an inner with_nack raises: the outer one fires too
            fn.perform(fn.with_nack(lambda outer: (inner.append(outer), fn.with_nack(make))[1]))
        return [_fired(n) for n in nacks + inner]

    assert fn.run(main, clock=fn.MockClock()) == [True, True, True]


def test_with_nack_fires_when_a_try_function_raises():
    def bad_try():
        raise KeyError("try")

    def main():
        nacks = []
        bad = fn.BaseOp(bad_try, lambda state, index: None)
        with pytest.raises(KeyError):
            fn.perform(fn.choice(fn.with_nack(_remember(nacks)), bad))
        return [_fired(n) for n in nacks]

    # The choice tries its branches from a random one: whichever comes first, the nack fires.
    for _ in range(8):
        assert fn.run(main, clock=fn.MockClock()) == [True]


def test_with_nack_fires_when_the_cancel_comes_before_the_perform_blocks():
    def main():
        nacks = []

        def make(nack):  # the cancel lands between the try phase and the block phase
            nacks.append(nack)
            fn.current_fiber().cancel()
            return fn.never()

        f = fn.spawn(fn.perform, fn.with_nack(make))
        with pytest.raises(fn.Cancelled):
            f.join()
        return [_fired(n) for n in nacks]

    assert fn.run(main, clock=fn.MockClock()) == [True]


def test_with_nack_lets_a_server_stop_work_nobody_waits_for():
    """The CML idiom: a client's request carries the nack; the server abandons the reply
    when the client took its timeout instead."""

    def main():
        requests = fn.Channel()
        abandoned = []

        def server():
            reply, nack = requests.get()
            fn.sleep(5)  # slow work: the client gives up meanwhile
            r = fn.perform(
                fn.choice(
                    fn.wrap(reply.put_op("answer"), lambda: "replied"), fn.wrap(nack, lambda: "abandoned")
                )
            )
            abandoned.append(r)

        def ask(nack):
            reply = fn.Channel()
            requests.put((reply, nack))
            return reply.get_op()

        s = fn.spawn(server)
        r = fn.perform(fn.choice(fn.with_nack(ask), fn.wrap(fn.wait_op(1), lambda: "gave up")))
        s.join()
        return r, abandoned

    assert fn.run(main, clock=fn.MockClock()) == ("gave up", ["abandoned"])


# -- always and never ---------------------------------------------------------------------------


def test_always_completes_at_once_with_its_value():
    assert fn.perform(fn.always("v")) == "v"
    assert fn.perform(fn.always()) is None


def test_never_never_completes():
    def main():
        never = fn.spawn(fn.perform, fn.never())
        r = fn.perform(fn.choice(fn.never(), fn.wrap(fn.wait_op(1000), lambda: "timeout")))
        fn.yield_now()
        state = never.state
        never.cancel()
        return r, state

    assert fn.run(main, clock=fn.MockClock()) == ("timeout", "suspended")


# -- operations of one's own ------------------------------------------------------------------------


class Latch:
    """A user-defined operation built from try, block and wrap functions: completes once the
    latch is opened, with the value it was opened with."""

    def __init__(self):
        self.lock = threading.Lock()
        self.value = NOT_READY
        self.waiters = []

    def open(self, value):
        with self.lock:
            self.value = value
            waiters, self.waiters = self.waiters, []
        for state, index in waiters:
            state.complete(index, value)

    def _try(self):
        return self.value

    def _block(self, state, index):
        with self.lock:
            if state.done:
                return None
            if self.value is not NOT_READY:
                state.finish_self(index, self.value)
                return None
            entry = (state, index)
            self.waiters.append(entry)
        return partial(self._unblock, entry)

    def _unblock(self, entry):
        with self.lock:
            if entry in self.waiters:
                self.waiters.remove(entry)

    def op(self):
        return fn.base_op(self._try, self._block, lambda v: ("latched", v))


def test_a_user_defined_operation_blocks_completes_and_wraps():
    def main():
        latch = Latch()
        waiters = [fn.spawn(fn.perform, latch.op()) for _ in range(3)]
        fn.yield_now()
        assert len(latch.waiters) == 3
        latch.open(5)
        results = [f.join() for f in waiters]
        immediate = fn.perform(fn.wrap(latch.op(), lambda v: v + ("again",)))
        return results, immediate

    assert fn.run(main) == ([("latched", 5)] * 3, ("latched", 5, "again"))


def test_a_user_defined_operation_that_loses_a_choice_is_unblocked():
    def main():
        latch = Latch()
        r = fn.perform(fn.choice(latch.op(), fn.wrap(fn.wait_op(1), lambda: "timeout")))
        return r, latch.waiters

    assert fn.run(main, clock=fn.MockClock()) == ("timeout", [])


def test_a_user_defined_operation_without_value():
    op = fn.base_op(lambda: NOTHING, lambda state, index: None)
    assert fn.perform(op) is None
    assert fn.perform(fn.wrap(op, lambda: "no argument")) == "no argument"


def test_a_block_function_that_raises_leaves_nothing_behind():
    def main():
        ch = fn.Channel()

        def failing_block(state, index):
            raise OSError("cannot wait")

        broken = fn.base_op(lambda: NOT_READY, failing_block)
        with pytest.raises(OSError):
            fn.perform(fn.choice(ch.get_op(), fn.wait_op(5), broken))
        me = fn.current_fiber()
        return ch.waiting(), fn.current_scheduler().pending_timers(), me.state, me.waiting_on()

    assert fn.run(main) == ((0, 0), 0, "running", None)

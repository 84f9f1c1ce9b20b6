"""Calls and casts on one scheduler: replies, order, timeouts (on a virtual clock), dead actors,
bounded mailboxes, ``call_op`` in a choice, and the receive-loop style."""

from __future__ import annotations

import pytest

import fibernet as fn
from fibernet import actors
from fibernet.actors import ActorDead, MailboxFull, start
from fibernet.ops import now

from .behaviours import Boom, Echo

pytestmark = pytest.mark.timeout(20)


def _recorder(mailbox, log):
    """Receive loop: records every body; answers calls with the body."""
    for message in mailbox:
        log.append(message.body)
        message.reply(message.body)


def _hold(mailbox, gate, log=None):
    """Receive loop that takes one message, then waits for ``gate`` before the next."""
    while True:
        message = mailbox.receive()
        if log is not None:
            log.append(message.body)
        reply = gate.get()
        message.reply(reply)


# -- call and cast ----------------------------------------------------------------------------


def test_call_returns_the_reply_and_a_cast_is_handled(run_mock):
    def main():
        actor = Echo()
        ref = start(actor)
        assert ref.call(41) == 41
        assert ref.call(("x", [1])) == ("x", [1])
        assert ref.cast("hello") is None
        assert ref.call("sync") == "sync"  # the cast, sent first, was handled first
        assert actor.casts == ["hello"]
        assert ref.alive

    run_mock(main)


def test_messages_from_one_sender_arrive_in_the_order_sent(run_mock):
    def main():
        log: list = []
        ref = start(_recorder, log, mailbox=8)  # small: the sender blocks on it now and then
        for i in range(2000):
            if i % 7 == 0:
                assert ref.call(i) == i
            else:
                ref.cast(i)
        ref.call("end")
        assert log == [*range(2000), "end"]

    run_mock(main)


def test_each_of_several_senders_is_delivered_in_order(run_mock):
    def main():
        log: list = []
        ref = start(_recorder, log, mailbox=4)

        def sender(k):
            for i in range(300):
                if i % 5 == 0:
                    ref.call((k, i))
                else:
                    ref.cast((k, i))
                if i % 3 == 0:
                    fn.yield_now()

        senders = [fn.spawn(sender, k) for k in range(5)]
        for s in senders:
            s.join()
        ref.call("end")
        assert log[-1] == "end" and len(log) == 5 * 300 + 1
        for k in range(5):
            assert [i for (kk, i) in log[:-1] if kk == k] == list(range(300))
        # and they really were interleaved (otherwise this test proves little)
        assert len({kk for kk, _ in log[:50]}) > 1

    run_mock(main)


def test_a_plain_thread_can_call_and_cast(start_thread):
    def main():
        ref = start(Echo())
        out: list = []

        def client():
            out.append(ref.call("from a thread", timeout=10))
            ref.cast("cast from a thread")
            out.append(ref.call("sync", timeout=10))

        start_thread(client).wait()
        assert out == ["from a thread", "sync"]

    fn.run(main)


# -- timeouts -----------------------------------------------------------------------------------


def test_call_timeout_raises_Timeout_after_exactly_the_timeout(run_mock):
    def main():
        gate = fn.Channel()
        ref = start(_hold, gate)
        t0 = now()
        with pytest.raises(fn.Timeout) as info:
            ref.call("no answer yet", timeout=3.0)
        assert now() - t0 == 3.0
        assert isinstance(info.value, TimeoutError)
        assert fn.current_scheduler().pending_timers() == 0  # the timer went with the call
        # The late reply goes into a reply channel nobody reads: the actor does not block.
        gate.put("late")
        caller = fn.spawn(ref.call, "next", None)
        gate.put("second")
        assert caller.join() == "second"

    run_mock(main)


def test_call_default_timeout_is_five_seconds_and_none_waits_for_ever(run_mock):
    def slow(mailbox):
        for message in mailbox:
            fn.sleep(message.body)
            message.reply(message.body)

    def main():
        ref = start(slow)
        t0 = now()
        with pytest.raises(fn.Timeout):
            ref.call(60.0)
        assert now() - t0 == 5.0
        t0 = now()
        assert ref.call(1000.0, timeout=None) == 1000.0  # the first request still ran: 55 s more
        assert now() - t0 == 1055.0

    run_mock(main)


def test_call_timeout_also_bounds_the_wait_for_room_in_a_full_mailbox(run_mock):
    """Regression: the send (in the call's guard) waited for room with no deadline, so
    ``call(x, timeout=2)`` to a stuck actor with a full mailbox never returned."""

    def main():
        gate = fn.Channel()
        ref = start(_hold, gate, mailbox=1)
        ref.cast("taken: the actor waits at the gate")
        fn.sleep(1)
        ref.cast("fills the mailbox")
        t0 = now()
        with pytest.raises(fn.Timeout):
            ref.call("no room", timeout=2.0)
        assert now() - t0 == 2.0
        assert ref._mailbox.waiting() == (0, 0) and len(ref._mailbox) == 1  # withdrawn, not sent
        assert fn.current_scheduler().pending_timers() == 0

    run_mock(main)


def test_a_call_that_gets_its_reply_leaves_no_timer(run_mock):
    def main():
        ref = start(Echo())
        sched = fn.current_scheduler()
        for i in range(200):
            assert ref.call(i, timeout=5.0) == i
        assert sched.pending_timers() == 0
        assert ref._exit.waiting() == 0  # nor a waiter on the actor's exit

    run_mock(main)


# -- dead actors --------------------------------------------------------------------------------


@pytest.mark.parametrize("full", ["block", "fail"])
@pytest.mark.parametrize("how", ["normal", "failed", "stopped"])
def test_call_and_cast_to_an_ended_actor_fail_at_once(run_mock, full, how):
    def main():
        ref = start(Echo(), full=full)
        if how == "normal":
            ref.cast("stop")
        elif how == "failed":
            ref.cast(("fail", Boom()))
        else:
            ref.stop()
        reason = ref.join()
        assert not ref.alive
        assert (reason is None) == (how == "normal")
        t0 = now()
        with pytest.raises(ActorDead):
            ref.cast("x")
        with pytest.raises(ActorDead):
            ref.call("x", timeout=None)
        with pytest.raises(ActorDead):
            fn.perform(ref.call_op("x"))
        assert now() == t0  # nothing waited

    run_mock(main)


def _returns_without_reply(mailbox, inside):
    mailbox.receive()
    inside.signal()


def _raises_without_reply(mailbox, inside):
    mailbox.receive()
    inside.signal()
    raise Boom("died holding a call")


class _Stuck(actors.Actor):
    def __init__(self, inside):
        self.inside = inside

    def handle_call(self, body):
        self.inside.signal()
        fn.Channel().get()  # never answered: only a stop ends this


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("how", ["returns", "raises", "stopped", "queued"])
def test_a_call_to_an_actor_that_dies_during_it_raises_ActorDead(how, threads, spin_until):
    """The caller waits with no timeout: only the actor's end can release it (pytest-timeout
    would report a hang)."""

    def main():
        inside = fn.Condition()
        gate = fn.Channel()
        if how == "returns":
            ref = start(_returns_without_reply, inside, parallel=True)
        elif how == "raises":
            ref = start(_raises_without_reply, inside, parallel=True)
        elif how == "stopped":
            ref = start(_Stuck(inside), parallel=True)
        else:  # the call is still in the mailbox when the actor dies
            ref = start(_hold, gate, parallel=True)
            ref.cast("first: holds the actor at the gate")
        caller = fn.spawn(lambda: ref.call("doomed", timeout=None), parallel=True)
        if how == "stopped":
            inside.wait()
            ref.stop()
        elif how == "queued":
            spin_until(lambda: len(ref._mailbox) == 1, "the call to be queued")
            ref.stop()  # the actor dies at the gate, the call still in its mailbox
        with pytest.raises(ActorDead):
            caller.join()
        assert not ref.alive

    fn.run(main, threads=threads)


def test_a_reply_sent_just_before_the_actor_ends_is_not_lost(run_mock):
    """Regression: the reply and the actor's end were both ready when the caller looked, and
    the choice picked the end (ActorDead) about one time in three."""

    def answer_then_end(mailbox):
        mailbox.receive()  # the filler
        mailbox.receive().reply("answer")

    def main():
        for _ in range(60):
            ref = start(answer_then_end, mailbox=1)
            ref.cast("filler")  # fills the mailbox: the call below waits, and the actor runs
            assert ref.call("q", timeout=None) == "answer"
            assert ref.join() is None

    run_mock(main)


def test_handle_call_exception_is_raised_in_the_caller_and_ends_the_actor(run_mock):
    def main():
        ref = start(Echo())
        boom = Boom("bad request")
        with pytest.raises(Boom) as info:
            ref.call(("fail", boom))
        assert info.value is boom
        assert ref.join() is boom
        assert ref.exit_reason is boom
        with pytest.raises(ActorDead):
            ref.call("after")

    run_mock(main)


# -- bounded mailboxes -----------------------------------------------------------------------


def test_full_fail_raises_MailboxFull_and_takes_messages_again_once_drained(run_mock):
    def main():
        gate = fn.Channel()
        log: list = []
        ref = start(_hold, gate, log, mailbox=2, full="fail")
        ref.cast(0)
        fn.sleep(1)  # settle: the actor took message 0 and waits at the gate
        assert log == [0]
        ref.cast(1)
        ref.cast(2)  # the mailbox (2) is full now
        t0 = now()
        with pytest.raises(MailboxFull):
            ref.cast(3)
        with pytest.raises(MailboxFull):
            ref.call(4, timeout=None)
        with pytest.raises(MailboxFull):
            fn.perform(ref.call_op(5))
        assert now() == t0  # failed at once
        gate.put(None)  # the actor takes message 1: one slot free
        fn.sleep(1)
        ref.cast(6)
        with pytest.raises(MailboxFull):
            ref.cast(7)
        for _ in range(3):
            gate.put(None)
        fn.sleep(1)
        assert log == [0, 1, 2, 6]
        assert ref.alive

    run_mock(main)


def test_full_block_blocks_the_sender_until_there_is_space(run_mock):
    def main():
        gate = fn.Channel()
        log: list = []
        ref = start(_hold, gate, log, mailbox=2)
        sent: list = []
        done = fn.Condition()

        def sender():
            for i in range(5):
                ref.cast(i)
                sent.append(i)
            done.signal()

        fn.spawn(sender)
        # 0 is taken by the actor, 1 and 2 fill the mailbox, the cast of 3 blocks: for as long
        # as we care to wait (100 virtual seconds).
        assert fn.perform(fn.choice(done.wait_op(), fn.wrap(fn.wait_op(100), lambda: "blocked"))) == "blocked"
        assert sent == [0, 1, 2] and log == [0]
        assert ref._mailbox.waiting() == (0, 1)
        gate.put(None)  # one message out, one slot: 3 goes in, 4 blocks
        fn.sleep(1)
        assert sent == [0, 1, 2, 3] and log == [0, 1]
        for _ in range(3):
            gate.put(None)
        done.wait()
        assert sent == [0, 1, 2, 3, 4]
        fn.sleep(1)
        assert log == [0, 1, 2, 3, 4]

    run_mock(main)


def test_a_sender_blocked_on_a_full_mailbox_gets_ActorDead_when_the_actor_ends(run_mock):
    def main():
        gate = fn.Channel()
        ref = start(_hold, gate, mailbox=1)
        ref.cast("taken")
        ref.cast("fills the mailbox")
        blocked = fn.spawn(ref.cast, "blocked")
        blocked_call = fn.spawn(ref.call, "blocked call", None)
        fn.sleep(1)
        assert ref._mailbox.waiting() == (0, 2)
        ref.stop()
        with pytest.raises(ActorDead):
            blocked.join()
        with pytest.raises(ActorDead):
            blocked_call.join()
        assert ref._mailbox.waiting() == (0, 0)

    run_mock(main)


def test_start_checks_its_arguments(run_mock):
    def main():
        with pytest.raises(ValueError):
            start(Echo(), full="drop")
        with pytest.raises(TypeError):
            start(42)

    run_mock(main)


# -- call_op in a choice ---------------------------------------------------------------------


def test_call_op_loses_to_a_ready_operation_and_the_late_reply_blocks_nobody(run_mock):
    def main():
        gate = fn.Channel()
        ref = start(_hold, gate, mailbox=4)
        other = fn.Channel()
        fn.spawn(other.put, "other")
        got = fn.perform(
            fn.choice(
                fn.wrap(ref.call_op("req"), lambda v: ("call", v)),
                fn.wrap(other.get_op(), lambda v: ("other", v)),
            )
        )
        assert got == ("other", "other")
        gate.put("late reply")  # answers the abandoned call: must not block the actor
        caller = fn.spawn(ref.call, "next", None)
        gate.put("second")
        assert caller.join() == "second"

    run_mock(main)


def test_call_op_wins_a_choice_against_a_timer(run_mock):
    def main():
        ref = start(Echo())
        t0 = now()
        op = fn.choice(
            fn.wrap(ref.call_op(7), lambda v: ("call", v)), fn.wrap(fn.wait_op(10), lambda: "timeout")
        )
        assert fn.perform(op) == ("call", 7)
        assert now() == t0
        assert fn.current_scheduler().pending_timers() == 0

    run_mock(main)


def test_call_op_loses_to_a_timer_when_the_actor_is_slow(run_mock):
    def main():
        gate = fn.Channel()
        ref = start(_hold, gate)
        op = fn.choice(ref.call_op("x"), fn.wrap(fn.wait_op(2), lambda: "timeout"))
        assert fn.perform(op) == "timeout"

    run_mock(main)


def test_call_op_sends_its_request_each_time_it_is_performed(run_mock):
    def main():
        log: list = []
        ref = start(_recorder, log)
        op = ref.call_op("req")  # a guard: nothing is sent yet
        fn.sleep(1)
        assert log == [] and len(ref._mailbox) == 0
        assert fn.perform(op) == "req"
        assert fn.perform(op) == "req"
        assert log == ["req", "req"]

    run_mock(main)


def test_call_op_in_a_choice_raises_ActorDead_when_the_actor_dies(run_mock):
    def main():
        inside = fn.Condition()
        ref = start(_Stuck(inside))
        never = fn.Channel()
        caller = fn.spawn(lambda: fn.perform(fn.choice(ref.call_op("x"), never.get_op())))
        inside.wait()
        ref.stop()
        with pytest.raises(ActorDead):
            caller.join()
        assert never.waiting() == (0, 0)  # the losing branch was withdrawn

    run_mock(main)


def test_a_choice_between_two_actors_calls_returns_the_first_answer(run_mock):
    def main():
        gate = fn.Channel()
        busy = start(_hold, gate)
        quick = start(Echo())
        op = fn.choice(
            fn.wrap(busy.call_op("a"), lambda v: ("busy", v)),
            fn.wrap(quick.call_op("b"), lambda v: ("quick", v)),
        )
        assert fn.perform(op) == ("quick", "b")

    run_mock(main)


# -- the receive-loop style --------------------------------------------------------------------


def _counter(mailbox, total):
    while True:
        message = mailbox.receive()
        kind, arg = message.body
        if kind == "add":
            assert not message.is_call
            total += arg
        elif kind == "get":
            assert message.is_call
            message.reply(total)
        elif kind == "bad":
            message.fail(ValueError(f"bad {arg}"))  # the caller gets it; the loop goes on
        elif kind == "quit":
            message.reply("bye")
            return


def test_a_receive_loop_answers_calls_with_message_reply(run_mock):
    def main():
        ref = start(_counter, 10)
        ref.cast(("add", 5))
        ref.cast(("add", 2))
        assert ref.call(("get", None)) == 17
        with pytest.raises(ValueError, match="bad 3"):
            ref.call(("bad", 3))
        assert ref.alive
        ref.cast(("add", 1))
        assert ref.call(("get", None)) == 18
        assert ref.call(("quit", None)) == "bye"
        assert ref.join() is None

    run_mock(main)


def test_a_receive_loop_can_wait_on_its_mailbox_in_a_choice(run_mock):
    def idle_out(mailbox, seen):
        while True:
            got = fn.perform(fn.choice(mailbox.receive_op(), fn.wrap(fn.wait_op(30), lambda: None)))
            if got is None:
                return "idle"
            seen.append(got.body)
            got.reply(len(seen))

    def main():
        seen: list = []
        ref = start(idle_out, seen)
        t0 = now()
        assert ref.call("a") == 1
        fn.sleep(20)
        assert ref.call("b") == 2  # 20 s idle: still there
        assert ref.alive
        assert ref.join() is None
        assert now() - t0 == 50.0  # ended 30 s after the last message
        assert seen == ["a", "b"]

    run_mock(main)


def test_actor_lifecycle_hooks(run_mock):
    class Life(actors.Actor):
        def __init__(self, events):
            self.events = events

        def started(self):
            self.events.append("started")

        def handle_call(self, body):
            self.events.append(body)
            if body == "stop":
                self.stop()  # ends after this message; the reply still goes out
            return body

        def stopped(self, reason):
            self.events.append(("stopped", type(reason).__name__ if reason else None))

    def main():
        events: list = []
        ref = start(Life(events))
        assert ref.call("one") == "one"
        assert ref.call("stop") == "stop"
        assert ref.join() is None
        assert events == ["started", "one", "stop", ("stopped", None)]

        events = []
        ref = start(Life(events))
        ref.call("one")
        ref.stop()
        reason = ref.join()
        assert isinstance(reason, fn.Cancelled)
        assert events == ["started", "one", ("stopped", "Cancelled")]

    run_mock(main)


def test_an_actor_knows_its_ref_and_its_name(run_mock, uniq):
    class Self(actors.Actor):
        def handle_call(self, body):
            return self.ref

    def main():
        name = uniq()
        ref = start(Self(), name=name)
        assert ref.call(None) is ref
        assert ref.name == name
        assert repr(ref) == f"<ActorRef {name} alive>"

    run_mock(main)


def test_a_caller_cancelled_while_waiting_drops_the_late_reply_and_the_actor_goes_on(run_mock):
    def main():
        gate = fn.Channel()
        ref = start(_hold, gate)
        caller = fn.spawn(ref.call, "first", None)
        fn.yield_now()  # the call is in the actor's hands, waiting for the gate
        caller.cancel()
        with pytest.raises(fn.Cancelled):
            caller.join()
        gate.put("late answer")  # the reply to a caller that left: dropped, nobody blocks
        waiter = fn.spawn(ref.call, "second", None)
        gate.put("second answer")
        assert waiter.join() == "second answer"
        assert ref.alive
        assert fn.current_scheduler().pending_timers() == 0

    run_mock(main)


def test_a_cancel_that_arrives_before_the_call_suspends_abandons_the_call(run_mock):
    def main():
        log: list = []
        ref = start(_recorder, log)

        def caller():
            fn.current_fiber().cancel()  # pending: raised at the first suspension
            return ref.call("x", timeout=None)

        f = fn.spawn(caller)
        with pytest.raises(fn.Cancelled):
            f.join()
        assert ref.call("y") == "y"  # the actor took "x", answered nobody, and goes on
        assert log == ["x", "y"]

    run_mock(main)


def test_call_op_on_a_full_mailbox_does_not_hold_up_its_choice(run_mock):
    def main():
        gate = fn.Channel()
        ref = start(_hold, gate, mailbox=1)
        ref.cast("busy")  # taken: the actor now waits on the gate
        ref.cast("queued")  # fills the one-slot mailbox
        # The call cannot even be sent: the timer branch must still win at 1 s.
        t0 = now()
        got = fn.perform(fn.choice(ref.call_op("late"), fn.wrap(fn.wait_op(1), lambda: "timer")))
        assert (got, now() - t0) == ("timer", 1)
        gate.put(None)  # answers "busy"; the actor takes "queued"
        gate.put(None)  # answers "queued"
        # The withdrawn request never reached the mailbox: the next call is answered first.
        waiter = fn.spawn(ref.call, "next", None)
        fn.yield_now()
        gate.put("answer")
        assert waiter.join() == "answer"
        assert len(ref._mailbox) == 0

    run_mock(main)


def test_call_op_waiting_for_room_fails_with_ActorDead_when_the_actor_ends(run_mock):
    def main():
        gate = fn.Channel()
        ref = start(_hold, gate, mailbox=1)
        ref.cast("busy")
        ref.cast("queued")
        caller = fn.spawn(fn.perform, ref.call_op("never sent"))
        fn.yield_now()
        ref.stop()
        with pytest.raises(ActorDead):
            caller.join()

    run_mock(main)

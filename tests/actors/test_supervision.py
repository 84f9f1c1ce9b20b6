"""The registry, monitors (``exit_op``), links and supervisors.

Everything runs on one scheduler with a virtual clock: ``fn.sleep(1)`` returns once every
other fiber is blocked, so "the supervisor has handled the exit" is a fact after it, not a
guess.
"""

from __future__ import annotations

import functools

import pytest

import fibernet as fn
from fibernet import actors
from fibernet.actors import ActorDead, ChildSpec, Supervisor, SupervisorGaveUp, link, start, whereis

from .behaviours import Boom, Echo

pytestmark = pytest.mark.timeout(20)


def _settle():
    fn.sleep(1)  # MockClock: returns when nothing else can run


def _children(sup):
    return sup.call("children")  # any call that is not start_child answers with the children


# -- registry ------------------------------------------------------------------------------


def test_register_and_whereis(run_mock, uniq):
    def main():
        name = uniq()
        assert whereis(name) is None
        ref = start(Echo(), name=name, register=True)
        assert whereis(name) is ref
        with pytest.raises(ValueError, match="already registered"):
            start(Echo(), name=name, register=True)
        assert whereis(name) is ref
        unregistered = start(Echo(), name=uniq())
        assert whereis(unregistered.name) is None
        ref.cast("stop")
        ref.join()
        assert whereis(name) is None
        again = start(Echo(), name=name, register=True)  # the name is free once the actor ended
        assert whereis(name) is again and again is not ref

    run_mock(main)


def test_a_failed_start_does_not_keep_the_name(uniq):
    """Regression: start() outside a runtime registered the name, then failed to spawn, and
    the name stayed taken by an actor that never ran (alive for ever, for whereis)."""
    name = uniq()
    with pytest.raises(fn.NoScheduler):
        start(Echo(), name=name, register=True)
    assert whereis(name) is None
    assert name not in actors._registry


# -- monitors -------------------------------------------------------------------------------


def test_exit_op_gives_the_exit_reason(run_mock):
    def main():
        normal, failed, stopped = start(Echo()), start(Echo()), start(Echo())
        waits = [fn.spawn(fn.perform, ref.exit_op()) for ref in (normal, failed, stopped)]
        _settle()
        assert all(not w.done() for w in waits)  # nobody ended yet: the monitors wait
        boom = Boom()
        normal.cast("stop")
        failed.cast(("fail", boom))
        stopped.stop()
        assert waits[0].join() is None
        assert waits[1].join() is boom
        assert isinstance(waits[2].join(), fn.Cancelled)
        # and on an actor that ended already it completes at once
        assert fn.perform(failed.exit_op()) is boom
        assert failed.join() is boom

    run_mock(main)


def test_exit_op_in_a_choice_with_a_timeout(run_mock):
    def main():
        ref = start(Echo())
        op = fn.choice(ref.exit_op(), fn.wrap(fn.wait_op(5), lambda: "still running"))
        assert fn.perform(op) == "still running"
        with pytest.raises(fn.Timeout):
            ref.join(timeout=2)
        ref.cast("stop")
        assert fn.perform(op) is None

    run_mock(main)


# -- links --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["first", "second"])
def test_a_failing_actor_stops_its_linked_peer(run_mock, which):
    def main():
        a, b = start(Echo()), start(Echo())
        bystander = start(Echo())
        link(a, b)
        failing, peer = (a, b) if which == "first" else (b, a)
        boom = Boom()
        failing.cast(("fail", boom))
        assert failing.join() is boom
        assert isinstance(peer.join(), fn.Cancelled)
        with pytest.raises(ActorDead):
            peer.call("x")
        _settle()
        assert bystander.alive

    run_mock(main)


def test_a_normal_end_does_not_stop_the_linked_peer(run_mock):
    def main():
        a, b = start(Echo()), start(Echo())
        link(a, b)
        a.cast("stop")
        assert a.join() is None
        _settle()
        assert b.alive
        assert b.call("still here") == "still here"

    run_mock(main)


def test_links_chain(run_mock):
    def main():
        a, b, c = start(Echo()), start(Echo()), start(Echo())
        link(a, b)
        link(b, c)
        a.cast(("fail", Boom()))
        # b is stopped (a failure: Cancelled), which stops c in turn
        assert isinstance(c.join(), fn.Cancelled)
        assert not b.alive

    run_mock(main)


# -- supervisors --------------------------------------------------------------------------


def test_a_crashing_child_is_restarted_and_whereis_finds_the_new_one(run_mock, uniq):
    def main():
        name = uniq("worker")
        sup = start(Supervisor([ChildSpec(name, Echo)]))
        _settle()
        first = whereis(name)
        assert first is not None and first.call(1) == 1
        boom = Boom()
        first.cast(("fail", boom))
        assert first.join() is boom
        _settle()
        second = whereis(name)
        assert second is not None and second is not first
        assert second.alive and not first.alive
        assert second.call(2) == 2
        assert _children(sup) == {name: second}
        # a stop from outside is a failure too (not a normal end): restarted again
        second.stop()
        second.join()
        _settle()
        third = whereis(name)
        assert third not in (None, first, second) and third.call(3) == 3
        assert sup.alive

    run_mock(main)


def test_a_failing_call_restarts_the_child_and_the_caller_gets_the_error(run_mock, uniq):
    def main():
        name = uniq()
        start(Supervisor([ChildSpec(name, Echo)]))
        _settle()
        first = whereis(name)
        with pytest.raises(Boom):
            first.call(("fail", Boom()))
        _settle()
        assert whereis(name) not in (None, first)

    run_mock(main)


def test_beyond_the_intensity_the_supervisor_gives_up_and_stops_its_children(run_mock, uniq):
    def main():
        flaky, steady = uniq("flaky"), uniq("steady")
        sup = start(Supervisor([ChildSpec(flaky, Echo), ChildSpec(steady, Echo)], intensity=2, period=10))
        _settle()
        steady_ref = whereis(steady)
        for restart in range(2):  # two restarts are allowed...
            ref = whereis(flaky)
            ref.cast(("fail", Boom(restart)))
            ref.join()
            _settle()
            assert sup.alive
            assert whereis(flaky) not in (None, ref)
        assert whereis(steady) is steady_ref  # one_for_one: the other child was left alone
        last = whereis(flaky)
        last.cast(("fail", Boom("third")))  # ...the third failure in 10 s is one too many
        reason = sup.join()
        assert isinstance(reason, SupervisorGaveUp)
        assert "Boom('third')" in str(reason)
        assert not steady_ref.alive and isinstance(steady_ref.exit_reason, fn.Cancelled)
        assert whereis(flaky) is None and whereis(steady) is None
        with pytest.raises(ActorDead):
            sup.call("children")

    run_mock(main)


def test_restarts_older_than_the_period_do_not_count(run_mock, uniq):
    """The period is measured on the scheduler's clock (a MockClock here): the regression was
    time.monotonic(), which a test cannot move."""

    def main():
        name = uniq()
        sup = start(Supervisor([ChildSpec(name, Echo)], intensity=1, period=5))
        _settle()
        for i in range(4):  # one failure every 6 s: never two within 5 s
            ref = whereis(name)
            ref.cast(("fail", Boom(i)))
            ref.join()
            fn.sleep(6)
            assert sup.alive, f"gave up after failure {i}"
        ref = whereis(name)
        ref.cast(("fail", Boom("quick 1")))
        ref.join()
        fn.sleep(1)
        whereis(name).cast(("fail", Boom("quick 2")))  # two within 5 s: beyond intensity 1
        assert isinstance(sup.join(), SupervisorGaveUp)

    run_mock(main)


def test_one_for_all_restarts_every_child(run_mock, uniq):
    def main():
        names = [uniq(c) for c in "abc"]
        sup = start(Supervisor([ChildSpec(n, Echo) for n in names], strategy="one_for_all"))
        _settle()
        old = {n: whereis(n) for n in names}
        assert all(ref is not None and ref.alive for ref in old.values())
        boom = Boom()
        old[names[1]].cast(("fail", boom))
        _settle()
        new = {n: whereis(n) for n in names}
        for n in names:
            assert new[n] is not None and new[n] is not old[n], n
            assert new[n].alive and not old[n].alive
            assert new[n].call(n) == n
        assert old[names[1]].exit_reason is boom
        assert isinstance(old[names[0]].exit_reason, fn.Cancelled)
        assert isinstance(old[names[2]].exit_reason, fn.Cancelled)
        assert _children(sup) == new

    run_mock(main)


def test_one_for_all_does_not_restart_a_child_that_had_ended_normally(run_mock, uniq):
    def main():
        names = [uniq(c) for c in "abc"]
        sup = start(Supervisor([ChildSpec(n, Echo) for n in names], strategy="one_for_all"))
        _settle()
        quitter = whereis(names[0])
        quitter.cast("stop")  # a normal end: the supervisor lets it go
        _settle()
        assert not quitter.alive and quitter.exit_reason is None
        whereis(names[1]).cast(("fail", Boom()))
        _settle()
        assert whereis(names[0]) is None  # still ended: not brought back by the sibling's failure
        assert set(_children(sup)) == {names[1], names[2]}
        assert all(whereis(n).call(n) == n for n in names[1:])

    run_mock(main)


def test_one_for_one_leaves_the_siblings_alone(run_mock, uniq):
    def main():
        names = [uniq(c) for c in "abc"]
        start(Supervisor([ChildSpec(n, Echo) for n in names]))
        _settle()
        old = {n: whereis(n) for n in names}
        old[names[0]].cast(("fail", Boom()))
        _settle()
        assert whereis(names[0]) not in (None, old[names[0]])
        assert whereis(names[1]) is old[names[1]] and whereis(names[2]) is old[names[2]]

    run_mock(main)


def test_a_child_that_ends_normally_is_not_restarted(run_mock, uniq):
    def main():
        name, other = uniq("quits"), uniq("other")
        sup = start(Supervisor([ChildSpec(name, Echo), ChildSpec(other, Echo)]))
        _settle()
        ref = whereis(name)
        ref.cast("stop")
        assert ref.join() is None
        fn.sleep(60)
        assert whereis(name) is None
        assert set(_children(sup)) == {other}
        # and the supervisor still restarts the others
        whereis(other).cast(("fail", Boom()))
        _settle()
        assert whereis(other) is not None and whereis(name) is None

    run_mock(main)


def test_a_receive_loop_child_with_arguments(run_mock, uniq):
    def looper(mailbox, base):
        for message in mailbox:
            if message.body == "crash":
                raise Boom()
            message.reply(base + message.body)

    def main():
        name = uniq()
        start(Supervisor([ChildSpec(name, lambda: functools.partial(looper, base=100))]))
        _settle()
        assert whereis(name).call(1) == 101
        whereis(name).cast("crash")
        _settle()
        assert whereis(name).call(2) == 102

    run_mock(main)


def test_start_child_adds_a_supervised_child(run_mock, uniq):
    def main():
        sup = start(Supervisor([]))
        name = uniq()
        spec = ChildSpec(name, Echo)
        ref = sup.call(("start_child", spec))
        assert whereis(name) is ref and ref.call("hi") == "hi"
        assert sup.call(("start_child", ChildSpec(name, Echo))) is ref  # a live child is kept
        ref.cast(("fail", Boom()))
        _settle()
        assert whereis(name) not in (None, ref)  # supervised: restarted
        bad = ChildSpec(uniq("bad"), lambda: 42)
        with pytest.raises(TypeError):
            sup.call(("start_child", bad))
        assert sup.alive  # a bad spec fails the caller, not the supervisor

    run_mock(main)


def test_stopping_a_supervisor_stops_its_children(run_mock, uniq):
    def main():
        names = [uniq(c) for c in "ab"]
        sup = start(Supervisor([ChildSpec(n, Echo) for n in names]))
        _settle()
        refs = [whereis(n) for n in names]
        sup.stop()
        assert isinstance(sup.join(), fn.Cancelled)
        assert all(not r.alive for r in refs)
        assert all(whereis(n) is None for n in names)

    run_mock(main)


def test_nested_supervisors(run_mock, uniq):
    def main():
        inner_name, leaf = uniq("inner"), uniq("leaf")
        start(Supervisor([ChildSpec(inner_name, lambda: Supervisor([ChildSpec(leaf, Echo)], intensity=0))]))
        _settle()
        inner, first_leaf = whereis(inner_name), whereis(leaf)
        first_leaf.cast(("fail", Boom()))  # the inner one gives up at once (intensity 0)...
        assert isinstance(inner.join(), SupervisorGaveUp)
        _settle()
        assert whereis(inner_name) not in (None, inner)  # ...and the outer one restarts it
        assert whereis(leaf) not in (None, first_leaf)
        assert whereis(leaf).call("ok") == "ok"

    run_mock(main)


def test_supervisor_checks_its_arguments():
    with pytest.raises(ValueError):
        Supervisor([], strategy="rest_for_one")

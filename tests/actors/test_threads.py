"""Actors on several schedulers (OS threads): calls, casts and order across threads, a reply
that races the actor's end, supervision of parallel children, and a bounded stress run."""

from __future__ import annotations

import random
import threading
import time

import pytest

import fibernet as fn
from fibernet import actors
from fibernet.actors import ActorDead, ChildSpec, Supervisor, start, whereis

from .behaviours import Boom, Echo, Placed, start_elsewhere

pytestmark = pytest.mark.timeout(30)


class Proxy(actors.Actor):
    """Answers a call by calling ``target`` and adding one: an actor that calls an actor."""

    def __init__(self, target):
        self.target = target

    def handle_call(self, body):
        if body == "where":
            return fn.current_scheduler(), threading.get_ident()
        return self.target.call(body, timeout=10) + 1


def test_calls_between_actors_on_different_schedulers(switchinterval):
    def main():
        here = fn.current_scheduler()
        far = start_elsewhere(Placed())
        near = start(Proxy(far))  # on this scheduler
        near_sched, near_thread = near.call("where")
        far_sched, far_thread = far.call("where")
        assert near_sched is here and far_sched is not here and near_thread != far_thread
        assert far._fiber.scheduler is far_sched

        results: dict = {}

        def client(k, n=300):
            results[k] = [near.call(k * 1000 + i, timeout=10) for i in range(n)]

        other = here.runtime.schedulers[1]
        clients = [
            fn.spawn(client, 0),
            fn.spawn(client, 1, scheduler=other),
            fn.spawn(client, 2, scheduler=other),
        ]
        for c in clients:
            c.join()
        for k in range(3):
            assert results[k] == [k * 1000 + i + 1 for i in range(300)]

    fn.run(main, threads=2)


def test_casts_back_and_forth_across_threads(on_scheduler):
    def bouncer(mailbox, peer_box, done, rounds):
        peer = peer_box.get()
        for message in mailbox:
            n = message.body
            if n >= rounds:
                done.put(n)
                return
            peer.cast(n + 1)

    def main():
        box_a, box_b = fn.Channel(1), fn.Channel(1)
        done = fn.Channel(2)
        a = start(bouncer, box_a, done, 2000)
        b = on_scheduler(1, start, bouncer, box_b, done, 2000)
        assert b._fiber.scheduler is not fn.current_scheduler()
        box_a.put(b)
        box_b.put(a)
        a.cast(0)  # a handles the even numbers, b the odd ones
        assert done.get() == 2000
        assert a.join(timeout=10) is None  # a got 2000 and ended...
        assert b.alive  # ...b waits for a message that never comes
        assert done.try_get() is None

    fn.run(main, threads=2)


def test_order_is_kept_per_sender_across_threads(switchinterval, start_thread):
    def record(mailbox, log):
        for message in mailbox:
            log.append(message.body)
            message.reply(None)

    def main():
        log: list = []
        ref = start(record, log, mailbox=8)  # small: senders on the other thread block on it
        other = fn.current_scheduler().runtime.schedulers[1]

        def sender(k, n=1500):
            for i in range(n):
                if i % 11 == 0:
                    ref.call((k, i), timeout=10)
                else:
                    ref.cast((k, i))

        remote = [fn.spawn(sender, k, scheduler=other) for k in range(3)]
        local = fn.spawn(sender, 3)
        thread_done = start_thread(sender, 4)
        for f in [*remote, local]:
            f.join()
        thread_done.wait()
        ref.call("end", timeout=10)
        assert log[-1] == "end"
        for k in range(5):
            assert [i for (kk, i) in log[:-1] if kk == k] == list(range(1500)), k

    fn.run(main, threads=2)


def test_call_timeout_across_threads(on_scheduler):
    def silent(mailbox, got):
        for message in mailbox:
            got.put(message.body)  # takes the call, never answers

    def main():
        got = fn.Channel(4)
        ref = on_scheduler(1, start, silent, got)
        t0 = time.monotonic()
        with pytest.raises(fn.Timeout):
            ref.call("hello?", timeout=0.05)
        assert time.monotonic() - t0 >= 0.05
        assert got.get() == "hello?"
        assert ref.alive

    fn.run(main, threads=2)


def test_a_reply_just_before_the_end_is_not_lost_across_threads(switchinterval):
    def answer_then_end(mailbox):
        mailbox.receive().reply("answer")

    def main():
        lost = 0
        for _ in range(300):
            ref = start(answer_then_end, parallel=True)
            try:
                assert ref.call("q", timeout=10) == "answer"
            except ActorDead:
                lost += 1
            ref.join()
        assert lost == 0

    fn.run(main, threads=2)


def test_a_supervisor_restarts_parallel_children(switchinterval, spin_until, uniq):
    def main():
        names = [uniq(c) for c in "abcd"]
        sup = start(Supervisor([ChildSpec(n, Echo, parallel=True) for n in names], intensity=100, period=60))
        spin_until(lambda: all(whereis(n) for n in names), "the children to start")
        crashed = []
        for round_ in range(12):
            for n in names:
                assert whereis(n).call((round_, n), timeout=10) == (round_, n)
            victim = whereis(names[round_ % 4])
            boom = Boom(round_)
            victim.cast(("fail", boom))
            assert victim.join() is boom
            crashed.append(victim)
            spin_until(lambda v=victim: whereis(v.name) not in (None, v), "the restart")
        children = sup.call("children", timeout=10)
        assert set(children) == set(names)
        assert not any(ref in crashed for ref in children.values())
        assert all(ref.alive for ref in children.values())
        places = {ref.call("where", timeout=10)[0] for ref in children.values()}
        assert places <= set(fn.current_scheduler().runtime.schedulers)
        assert sup.alive

    fn.run(main, threads=2)


@pytest.mark.stress
def test_stress_many_callers_many_actors(switchinterval):
    """8 parallel clients, 6 parallel actors with small mailboxes, random calls and casts:
    every call gets its own answer and every cast is handled exactly once."""

    def main():
        actors_ = [Echo() for _ in range(6)]
        refs = [start(a, parallel=True, mailbox=4) for a in actors_]

        def client(k):
            r = random.Random(k)
            casts = []
            for i in range(400):
                j = r.randrange(len(refs))
                if r.random() < 0.3:
                    refs[j].cast((k, i))
                    casts.append((j, (k, i)))
                else:
                    assert refs[j].call((k, i), timeout=10) == (k, i)
                    if r.random() < 0.1:
                        fn.yield_now()
            return casts

        clients = [fn.spawn(client, k, parallel=True) for k in range(8)]
        sent = sorted(c for f in clients for c in f.join())
        for ref in refs:
            ref.call("sync", timeout=10)  # after every client's casts (one FIFO mailbox each)
        handled = sorted((j, body) for j, a in enumerate(actors_) for body in a.casts)
        assert handled == sent and len(sent) > 500
        assert all(ref.alive for ref in refs)

    fn.run(main, threads=2)


def _hold(mailbox, gate):
    """Receive loop that takes one message, then waits for ``gate`` before answering it."""
    for message in mailbox:
        message.reply(gate.get())


def test_call_op_on_a_full_mailbox_from_a_plain_thread(start_thread):
    """The thread blocks until the request has room and is answered (no NoScheduler)."""
    out = []

    def main():
        gate = fn.Channel()
        ref = start(_hold, gate, mailbox=1)
        first = fn.spawn(ref.call, "first", None)
        fn.yield_now()  # the actor holds "first" and waits at the gate
        ref.cast("filler")  # the mailbox is full now
        asked = fn.Condition()

        def thread():
            asked.signal()
            out.append(fn.perform(fn.choice(ref.call_op("from thread"), fn.wrap(fn.wait_op(20), lambda: "timeout"))))

        ended = start_thread(thread)
        asked.wait()
        gate.put("reply 1")  # answers "first"; "filler" (a cast) takes the gate's next put
        gate.put("filler's")
        gate.put("reply 3")  # the thread's request, sent once there was room
        ended.wait()
        assert first.join() == "reply 1"

    fn.run(main)
    assert out == ["reply 3"]

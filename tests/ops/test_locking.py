"""Stress on the locking that replaced the process-wide lock: a lock per channel, and the
performers' state locks, two of them held at once (in a fixed order) when a choice in its
block phase meets a waiter on another thread.  Every worker waits for one start signal, so
they race; each test accounts for every message exactly (nothing lost, nothing twice, no
choice that committed two branches).  A deadlock or a lost wake-up shows as a hang, which the
timeout turns into a failure."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

import fibernet as fn
from fibernet.ops.operation import COMMITTED, NOT_READY, NOTHING, OTHER_DONE, SELF_DONE, OpState, commit_pair
from fibernet.runtime.fiber import Fiber

pytestmark = [pytest.mark.stress, pytest.mark.timeout(60)]


def _let_others_run(state, index):
    time.sleep(0)  # (releases the GIL: another thread may complete the branch before)


# A branch that never completes, and whose block function lets the other threads run: in a
# choice between two channel branches, the first is registered (completable by any thread)
# while the second, in its block phase, may find a partner -- the race that committing both
# states together settles.
LET_OTHERS_RUN = fn.base_op(lambda: NOT_READY, _let_others_run)


def swap(out, into, message):
    """Either put ``message`` on ``out`` or get from ``into``, whichever meets a partner."""
    put = fn.wrap(out.put_op(message), lambda: ("put", message))
    get = fn.wrap(into.get_op(), lambda m: ("got", m))
    first, last = (put, get) if message[2] % 2 else (get, put)
    return fn.perform(fn.choice(first, LET_OTHERS_RUN, last))


def test_mirrored_choices_on_many_threads_pair_up_exactly_once(switchinterval, start_thread):
    """Group X chooses (put a, get b), group Y (put b, get a): only an X and a Y can meet,
    and a meeting of two choices both blocked commits both states at once, whichever of the
    two threads finds the other.  With as many X as Y performs, every one completes."""
    rounds, per_group_fibers, per_group_threads = 250, 6, 2
    a, b = fn.Channel(), fn.Channel()
    go = fn.Condition()
    outcomes = []  # (group, "put"/"got", message), from every worker
    lock = threading.Lock()

    def worker(group, wid):
        out, into = (a, b) if group == "X" else (b, a)
        go.wait()
        mine = []
        for i in range(rounds):
            kind, message = swap(out, into, (group, wid, i))
            mine.append((group, kind, message))
        with lock:
            outcomes.extend(mine)

    def main():
        scheds = fn.current_scheduler().runtime.schedulers
        fibers, ended = [], []
        for group in "XY":
            for w in range(per_group_fibers):
                fibers.append(fn.spawn(worker, group, w, scheduler=scheds[w % len(scheds)]))
            for w in range(per_group_threads):
                ended.append(start_thread(worker, group, per_group_fibers + w))
        go.signal()
        for f in fibers:
            f.join()
        for e in ended:
            e.wait()

    fn.run(main, threads=4)
    workers = per_group_fibers + per_group_threads
    assert len(outcomes) == 2 * workers * rounds  # every perform completed once
    sent = [m for _g, kind, m in outcomes if kind == "put"]
    got = [m for _g, kind, m in outcomes if kind == "got"]
    # Every committed put was received exactly once, and nothing else was received ...
    assert Counter(got) == Counter(sent)
    assert len(set(sent)) == len(sent)
    # ... and always by the other group: X puts on a, which only Y gets from.
    assert all(m[0] != g for g, kind, m in outcomes if kind == "got")
    assert a.waiting() == (0, 0) and b.waiting() == (0, 0)


def test_a_choice_over_channels_fed_from_many_threads_takes_one_message_each_time(
    switchinterval, start_thread
):
    """A getter's choice blocks on four channels; a putter on each of four threads puts into
    its own at once.  Each perform of the choice takes exactly one message; the others stay
    with their putters for the next one, so the totals balance exactly."""
    each, putters = 400, 4
    chans = [fn.Channel() for _ in range(putters)]
    go = fn.Condition()

    def putter(k):
        go.wait()
        for i in range(each):
            chans[k].put((k, i))

    def getter(n):
        got = []
        op = fn.choice(*[c.get_op() for c in chans])
        for _ in range(n):
            got.append(fn.perform(op))
        return got

    def main():
        scheds = fn.current_scheduler().runtime.schedulers
        # Two getters, on two other schedulers, share the work; plain threads put too.
        getters = [fn.spawn(getter, each * putters // 2, scheduler=scheds[1 + g]) for g in range(2)]
        fibers = [fn.spawn(putter, k, scheduler=scheds[k % len(scheds)]) for k in range(putters - 1)]
        ended = start_thread(putter, putters - 1)
        go.signal()
        got = [m for g in getters for m in g.join()]
        for f in fibers:
            f.join()
        ended.wait()
        return got

    got = fn.run(main, threads=3)
    assert Counter(got) == Counter((k, i) for k in range(putters) for i in range(each))
    # (Each putter's messages arrive in order: a channel is FIFO per putter.)
    for k in range(putters):
        seen = [i for kk, i in got if kk == k]
        assert sorted(seen) == list(range(each))
    assert all(c.waiting() == (0, 0) for c in chans)


def test_close_races_with_puts_gets_and_choices_and_loses_nothing(switchinterval, start_thread):
    """Producers on three schedulers and a plain thread put into a buffered and an unbuffered
    channel (plainly or by a choice) while consumers drain both; a closer closes both once the
    producers are done.  Each message is either delivered once or its put raised
    ChannelClosed -- never both, never neither -- and the consumers all end."""
    each, producers, consumers = 300, 4, 4
    a, b = fn.Channel(), fn.Channel(capacity=3)
    go = fn.Condition()
    sent, refused, received = [], [], []
    lock = threading.Lock()

    def producer(p):
        go.wait()
        ok, no = [], []
        for i in range(each):
            message = (p, i)
            try:
                if i % 3 == 0:
                    fn.perform(fn.choice(a.put_op(message), b.put_op(message)))
                else:
                    (a if i % 2 else b).put(message)
                ok.append(message)
            except fn.ChannelClosed:
                no.append(message)
        with lock:
            sent.extend(ok)
            refused.extend(no)

    def consumer(c):
        go.wait()
        mine = []
        while True:
            try:
                if c % 2:
                    mine.append(fn.perform(fn.choice(a.get_op(), b.get_op())))
                else:
                    mine.append((a if len(mine) % 2 else b).get())
            except fn.ChannelClosed:
                # One closed channel may still hold (b) or offer (a) messages: drain both.
                for ch in (a, b):
                    for m in ch:
                        mine.append(m)
                break
        with lock:
            received.extend(mine)

    def main():
        scheds = fn.current_scheduler().runtime.schedulers
        prods = [fn.spawn(producer, p, scheduler=scheds[p % 3]) for p in range(producers - 1)]
        prod_thread = start_thread(producer, producers - 1)
        cons = [fn.spawn(consumer, c, scheduler=scheds[(c + 1) % 3]) for c in range(consumers)]
        go.signal()
        # Close while the last producer still runs, so puts, gets and the close interleave.
        prods[0].join()
        a.close()
        b.close()
        for f in prods + cons:
            f.join()
        prod_thread.wait()

    fn.run(main, threads=3)
    everything = Counter((p, i) for p in range(producers) for i in range(each))
    assert Counter(sent) + Counter(refused) == everything
    assert Counter(received) == Counter(sent)
    assert a.waiting() == (0, 0) and b.waiting() == (0, 0) and len(b) == 0


def test_traffic_on_one_channel_never_waits_for_another_channels_lock():
    """Channels share no lock: with one channel's lock held throughout (as if a thread were
    stuck inside its critical section), fibers on two schedulers still talk over another."""
    busy, free = fn.Channel(), fn.Channel()

    def main():
        other = fn.current_scheduler().runtime.schedulers[1]
        fn.spawn(lambda: [free.put(i) for i in range(100)], scheduler=other)
        return [free.get() for _ in range(100)]

    with busy._lock:
        assert fn.run(main, threads=2) == list(range(100))
    assert busy.try_put("x") is False  # (and it is usable again afterwards)


def test_a_cancel_racing_with_the_start_of_a_fiber_on_another_scheduler_is_never_lost(switchinterval):
    """Until it starts, a fiber's state lock is a stripe; its scheduler then gives it its own.
    A cancel made as the fiber starts on another thread takes whichever lock the fiber has
    once it holds one, so the fiber, blocked for good on a channel, is still cancelled."""
    rounds = 300

    def main():
        other = fn.current_scheduler().runtime.schedulers[1]
        never = fn.Channel()
        outcomes = Counter()
        for i in range(rounds):
            f = fn.spawn(never.get, scheduler=other)
            for _ in range(i % 4):  # cancel at a spread of moments around its start
                fn.yield_now()
            f.cancel()
            try:
                f.join(timeout=10)  # a lost cancel leaves it blocked: Timeout
            except fn.Cancelled:
                outcomes["cancelled"] += 1
        return outcomes, never.waiting()

    assert fn.run(main, threads=2) == (Counter(cancelled=rounds), (0, 0))


class _Stripe:
    """A fiber's stripe lock that tells when a cancel waits on it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waited = threading.Event()

    def acquire(self):
        self.waited.set()
        self.lock.acquire()

    def release(self):
        self.lock.release()


class _Taken:
    """A scheduler's state lock that counts who took it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.taken = 0

    def acquire(self):
        self.lock.acquire()
        self.taken += 1

    def release(self):
        self.lock.release()


def test_a_cancel_that_waited_on_the_stripe_of_a_fiber_that_started_takes_its_new_lock():
    # Deterministic: the scheduler's _start holds the stripe while it gives the fiber its own
    # lock; a cancel waiting on the stripe meanwhile must then take the new lock, not mark the
    # fiber under the stripe (which the running fiber no longer looks at).
    fiber = Fiber(lambda: None)
    stripe, own = _Stripe(), _Taken()
    fiber._state_lock = stripe
    stripe.lock.acquire()  # (as _start does)
    canceller = threading.Thread(target=fiber.cancel)
    canceller.start()
    assert stripe.waited.wait(10)
    fiber._state_lock = own
    stripe.release()
    canceller.join(10)
    assert not canceller.is_alive()
    assert own.taken == 1 and fiber._cancel_pending


# -- committing two states together ----------------------------------------------------------


class Owner:
    """The least an OpState's owner is (a fiber or a plain thread is one): its state lock,
    and a wake-up, counted here."""

    def __init__(self):
        self._state_lock = threading.Lock()
        self.wakes = 0

    def _wake(self):
        self.wakes += 1


def snapshot(state):
    return state.done, state.index, state.value, state.woken, state.owner.wakes


def test_commit_pair_completes_both_states_or_neither():
    me, other = OpState(Owner(), None, None), OpState(Owner(), None, None)
    assert commit_pair(None, me, 1, "m", other, 0, NOTHING) == COMMITTED
    assert snapshot(me) == (True, 1, "m", False, 0)  # the performer is running: no wake-up
    assert snapshot(other) == (True, 0, NOTHING, True, 1)

    # The performer's state was completed first (by its other branch): the waiter it met
    # keeps waiting, untouched, for somebody else.
    me, other = OpState(Owner(), None, None), OpState(Owner(), None, None)
    assert me.complete(2, "timer")
    assert commit_pair(None, me, 1, "m", other, 0, NOTHING) == SELF_DONE
    assert snapshot(me)[:3] == (True, 2, "timer")
    assert snapshot(other) == (False, 0, None, False, 0)

    # The waiter's was: the performer's stays free for its next candidate.
    me, other = OpState(Owner(), None, None), OpState(Owner(), None, None)
    assert other.complete(3, "elsewhere")
    assert commit_pair(None, me, 1, "m", other, 0, NOTHING) == OTHER_DONE
    assert snapshot(me) == (False, 0, None, False, 0)
    assert snapshot(other)[:3] == (True, 3, "elsewhere")


def test_commit_pair_commits_the_performer_before_anyone_sees_the_waiter_completed():
    """Between its two halves no other party may complete the performer's state: here the
    waiter's wake-up itself tries to (as a third thread might, once the waiter is completed),
    and finds it committed already -- the message went to the performer, not to nobody."""
    me = OpState(Owner(), None, None)
    rival = []

    class Waker(Owner):
        def _wake(self):
            super()._wake()
            rival.append(me.complete(9, "rival"))

    other = OpState(Waker(), None, None)
    assert commit_pair(None, me, 1, "m", other, 0, NOTHING) == COMMITTED
    assert rival == [False]
    assert snapshot(me)[:3] == (True, 1, "m") and snapshot(other)[:2] == (True, 0)


def test_commit_pair_of_two_states_under_one_lock_takes_it_once():
    owner = Owner()  # (two fibers whose ids share a stripe share a state lock)
    me, other = OpState(owner, None, None), OpState(owner, None, None)
    assert commit_pair(None, me, 0, "m", other, 1, NOTHING) == COMMITTED
    assert me.done and other.done and not owner._state_lock.locked()


@pytest.mark.timeout(10)
def test_commit_pair_does_not_take_again_the_lock_its_caller_holds():
    """A fused put or get waits under its channel's lock: a choice that meets it there (the
    channel's lock held) commits without taking that lock again, and leaves it held."""
    channel_lock = threading.Lock()
    me, other = OpState(Owner(), None, None), OpState(Owner(), None, None)
    other.lock = channel_lock
    with channel_lock:
        assert commit_pair(channel_lock, me, 1, "m", other, 0, NOTHING) == COMMITTED
        assert channel_lock.locked()
    assert snapshot(me)[:3] == (True, 1, "m") and snapshot(other) == (True, 0, NOTHING, True, 1)
    assert not me.lock.locked()


def test_commit_pairs_in_opposite_directions_never_deadlock(switchinterval):
    """Two threads commit pairs whose locks they meet in opposite roles (A's performer with
    B's waiter, and B's performer with A's waiter): the locks are taken in one order."""
    a, b, n = Owner(), Owner(), 20_000
    results = {}

    def commit_many(first, second):
        outcomes = Counter()
        for i in range(n):
            me, other = OpState(first, None, None), OpState(second, None, None)
            outcomes[commit_pair(None, me, 0, i, other, 0, i)] += 1
        results[first] = outcomes

    threads = [threading.Thread(target=commit_many, args=p, daemon=True) for p in ((a, b), (b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "the two threads deadlocked"
    assert results == {a: Counter({COMMITTED: n}), b: Counter({COMMITTED: n})}
    assert a.wakes == b.wakes == n

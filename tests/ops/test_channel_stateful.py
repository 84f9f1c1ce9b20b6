"""A channel against a model, driven by hypothesis.

The model is a deque with a capacity, plus the queues of plain threads blocked in ``put``
and in ``get``.  The test thread itself only uses operations that cannot block: try_put /
try_get, a put or get in a choice with ``always``, plain put and get where the model says
they complete at once, and close.  Blocked waiters are plain threads (perform blocks a plain
thread), so the rendezvous paths -- a try_put handing its message to a blocked getter, a
try_get freeing a slot that a blocked putter's message moves into -- are checked too.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fibernet as fn

FULL = "full"
EMPTY = "empty"
PUT = "put"


class Waiter:
    """A plain thread blocked in put or get; its outcome once it returns."""

    def __init__(self, action):
        self.outcome = None
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(action,), daemon=True)
        self.thread.start()

    def _run(self, action):
        try:
            self.outcome = ("ok", action())
        except fn.ChannelClosed:
            self.outcome = ("closed", None)
        finally:
            self.finished.set()

    def result(self):
        assert self.finished.wait(5), "a waiter that should have completed is still blocked"
        self.thread.join(5)
        return self.outcome


def until(predicate, what):
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0)  # let the waiter thread run; the predicate is what we wait for


class ChannelModel(RuleBasedStateMachine):
    @initialize(capacity=st.integers(min_value=0, max_value=3))
    def make(self, capacity):
        self.channel = fn.Channel(capacity)
        self.capacity = capacity
        self.buffer: deque = deque()
        self.putters: deque = deque()  # (message, Waiter) in arrival order
        self.getters: deque = deque()  # Waiter in arrival order
        self.closed = False
        self.count = 0

    def teardown(self):
        self.channel.close()
        for _, w in self.putters:
            assert w.result() == ("closed", None)
        for w in self.getters:
            assert w.result() == ("closed", None)

    def fresh(self):
        self.count += 1
        return self.count

    def has_room(self):
        return len(self.buffer) < self.capacity

    # -- what the model says a put and a get do ------------------------------------------

    def model_put(self, m):
        """A put that completes now: to the first blocked getter, else into the buffer."""
        if self.getters:
            assert self.getters.popleft().result() == ("ok", m)
        else:
            self.buffer.append(m)

    def model_get(self):
        """A get that completes now: from the buffer (whose freed slot the first blocked
        putter's message takes), else straight from the first blocked putter."""
        if self.buffer:
            m = self.buffer.popleft()
            if self.putters:
                pm, w = self.putters.popleft()
                self.buffer.append(pm)
                assert w.result() == ("ok", None)
            return m
        pm, w = self.putters.popleft()
        assert w.result() == ("ok", None)
        return pm

    def can_put(self):
        return bool(self.getters) or self.has_room()

    def can_get(self):
        return bool(self.buffer) or bool(self.putters)

    # -- non-blocking puts -------------------------------------------------------------------

    @rule()
    def try_put(self):
        m = self.fresh()
        if self.closed:
            with pytest.raises(fn.ChannelClosed):
                self.channel.try_put(m)
            return
        expected = self.can_put()
        assert self.channel.try_put(m) is expected
        if expected:
            self.model_put(m)

    @rule()
    def put_or_full(self):
        """perform(choice(put_op(x), always(FULL))): if the put can complete, both branches
        are ready and the choice may take either; if not, only ``always`` can."""
        m = self.fresh()
        op = fn.choice(fn.wrap(self.channel.put_op(m), lambda: PUT), fn.always(FULL))
        if self.closed:
            try:
                assert fn.perform(op) == FULL
            except fn.ChannelClosed:
                pass
            return
        could = self.can_put()
        r = fn.perform(op)
        if r == PUT:
            assert could
            self.model_put(m)
        else:
            assert r == FULL  # and nothing was put: the invariants check it

    @precondition(lambda self: not self.closed and self.can_put())
    @rule()
    def put_that_cannot_block(self):
        m = self.fresh()
        self.channel.put(m)
        self.model_put(m)

    @precondition(lambda self: self.closed)
    @rule()
    def put_after_close(self):
        with pytest.raises(fn.ChannelClosed):
            self.channel.put(self.fresh())

    # -- non-blocking gets -------------------------------------------------------------------

    @rule()
    def try_get(self):
        if self.can_get():
            assert self.channel.try_get(EMPTY) == self.model_get()
        elif self.closed:
            with pytest.raises(fn.ChannelClosed):
                self.channel.try_get(EMPTY)
        else:
            assert self.channel.try_get(EMPTY) == EMPTY

    @rule()
    def get_or_empty(self):
        op = fn.choice(self.channel.get_op(), fn.always(EMPTY))
        if self.closed and not self.can_get():
            try:
                assert fn.perform(op) == EMPTY
            except fn.ChannelClosed:
                pass
            return
        could = self.can_get()
        r = fn.perform(op)
        if r != EMPTY:
            assert could
            assert r == self.model_get()

    @precondition(lambda self: self.can_get() or self.closed)
    @rule()
    def get_that_cannot_block(self):
        if self.can_get():
            assert self.channel.get() == self.model_get()
        else:
            with pytest.raises(fn.ChannelClosed):
                self.channel.get()

    # -- blocked waiters (plain threads) -------------------------------------------------------

    @precondition(lambda self: not self.closed and not self.can_put() and len(self.putters) < 3)
    @rule()
    def block_a_putter(self):
        m = self.fresh()
        n = len(self.putters) + 1
        w = Waiter(lambda: self.channel.put(m))
        until(lambda: self.channel.waiting()[1] == n, "the putter to block")
        self.putters.append((m, w))

    @precondition(lambda self: not self.closed and not self.can_get() and len(self.getters) < 3)
    @rule()
    def block_a_getter(self):
        n = len(self.getters) + 1
        w = Waiter(self.channel.get)
        until(lambda: self.channel.waiting()[0] == n, "the getter to block")
        self.getters.append(w)

    # -- close -----------------------------------------------------------------------------------

    @rule()
    def close(self):
        self.channel.close()
        self.closed = True
        # Blocked putters and getters raise ChannelClosed; buffered messages stay to be drained.
        while self.putters:
            assert self.putters.popleft()[1].result() == ("closed", None)
        while self.getters:
            assert self.getters.popleft().result() == ("closed", None)

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def same_buffer(self):
        assert len(self.channel) == len(self.buffer)
        assert self.channel.closed == self.closed

    @invariant()
    def same_waiters(self):
        assert self.channel.waiting() == (len(self.getters), len(self.putters))

    @invariant()
    def blocked_waiters_stay_blocked(self):
        assert not any(w.finished.is_set() for _, w in self.putters)
        assert not any(w.finished.is_set() for w in self.getters)


ChannelModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestChannelModel = pytest.mark.timeout(60)(ChannelModel.TestCase)

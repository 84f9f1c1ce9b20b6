"""Every registration a fiber made is released however it ends -- also when it swallowed
``Cancelled`` and the runtime kills it at shutdown (GreenletExit thrown into its wait): no
channel waiter, condition waiter or joiner outlives it, and nothing completes into it later."""

from __future__ import annotations

import logging

import pytest

import fibernet as fn
import fibernet.runtime.runtime as runtime_module
from fibernet.runtime.fiber import Fiber

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch, caplog):
    monkeypatch.setattr(runtime_module, "SHUTDOWN_GRACE", 0.05)
    caplog.set_level(logging.ERROR, logger="fibernet.scheduler")  # "killing it" is expected


def _stubborn(wait):
    """A fiber body that swallows Cancelled and waits again (wrong, but it happens)."""

    def body():
        while True:
            try:
                wait()
            except fn.Cancelled:
                pass

    return body


def _run_and_kill(wait):
    def main():
        f = fn.spawn(_stubborn(wait), name="stubborn")
        fn.yield_now()
        assert f.waiting_on() is not None
        return "returned"

    assert fn.run(main) == "returned"


def test_a_killed_fiber_leaves_no_waiter_in_a_channel_get():
    ch = fn.Channel()
    _run_and_kill(ch.get)
    assert ch.waiting() == (0, 0)
    assert ch.try_put("lost?") is False  # nobody takes it: no dead getter to swallow it


def test_a_killed_fiber_leaves_no_waiter_in_a_channel_put():
    ch = fn.Channel()
    _run_and_kill(lambda: ch.put("from a dead fiber"))
    assert ch.waiting() == (0, 0)
    assert ch.try_get("nothing") == "nothing"


def test_a_killed_fiber_releases_every_branch_of_its_choice_and_fires_its_nack():
    ch, cond = fn.Channel(), fn.Condition()
    nacks = []

    def make(nack):
        nacks.append(nack)
        return fn.never()

    _run_and_kill(lambda: fn.perform(fn.choice(ch.get_op(), cond.wait_op(), fn.with_nack(make))))
    assert ch.waiting() == (0, 0)
    assert cond.waiting() == 0
    assert ch.try_put("lost?") is False
    assert fn.perform(nacks[-1]) is None  # complete: performing it does not block


def test_a_killed_fiber_leaves_no_joiner_behind():
    never_started = Fiber(lambda: None, name="never started")  # it cannot end under the joiner
    _run_and_kill(never_started.join)
    assert not never_started._joiners

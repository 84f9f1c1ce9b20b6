"""Fixtures for the actor tests.

- every test ends with no runtime alive, no thread left behind (``no_runtime_leaks``) and no
  actor left in the name registry (a runtime that ends cancels its actors, and an actor that
  ends leaves the registry);
- ``run_mock(main, *args)``: ``fibernet.run`` on one scheduler with a ``MockClock`` (autojump).
  With it, ``fibernet.sleep(t)`` in the test's fiber returns only once every other fiber of the
  scheduler is blocked (the clock jumps only when nothing can run), so a short virtual sleep
  is a deterministic "let everything else settle" -- never a real wait;
- ``uniq``: a name unique to the test, for registered actors;
- ``on_scheduler(i, fn, *args)``: run ``fn`` in a fiber on scheduler ``i`` of the current
  runtime and return its value (placement without luck, for cross-thread tests).

The behaviours the modules share are in ``behaviours.py``.
"""

from __future__ import annotations

import itertools

import pytest

import fibernet as fn
from fibernet import actors

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _no_runtime_leaks(no_runtime_leaks):
    before = dict(actors._registry)
    yield
    with actors._registry_lock:
        left = {k: v for k, v in actors._registry.items() if before.get(k) is not v}
    assert not left, f"actors left in the registry: {left}"


@pytest.fixture
def run_mock():
    def run(main, *args):
        clock = fn.MockClock()
        return fn.run(main, *args, threads=1, clock=clock)

    return run


@pytest.fixture
def uniq(request):
    def make(label: str = "a") -> str:
        return f"{request.node.name}-{label}-{next(_names)}"

    return make


@pytest.fixture
def on_scheduler():
    def place(index: int, function, *args):
        sched = fn.current_scheduler().runtime.schedulers[index]
        return fn.spawn(function, *args, scheduler=sched).join()

    return place

"""From the Crow language: parallel maps and ``shared`` functions.

``parallel_map(fn, items)`` is Crow's parallel for-loop: a stealable fiber per item, results
in the items' order.  The first failure (in time) cancels the rest, which are joined before
the failure is raised, so no fiber outlives the call.

``shared(fn)`` is Crow's ``shared`` lambda.  Crow's exclusion is fibernet's scheduler: one
thread runs one fiber at a time, so a call made through ``shared`` runs on the scheduler of
the fiber that made it and never overlaps another fiber of that scheduler between two of its
suspension points.  Called from that scheduler it is a plain call; from elsewhere the call
runs in a fiber there and the caller waits for its value (or exception).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fibernet.errors import Cancelled, NoScheduler
from fibernet.ops.channel import Channel
from fibernet.runtime.fiber import Fiber
from fibernet.runtime.scheduler import current_scheduler, spawn

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` with each call in its own parallel fiber."""
    items = list(items)
    n = len(items)
    if n == 0:
        return []
    results: list[Any] = [None] * n
    done: Channel[tuple[int, BaseException | None]] = Channel(capacity=n)

    def work(i: int, item: T) -> None:
        try:
            results[i] = fn(item)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            done.put((i, exc))
        else:
            done.put((i, None))

    name = getattr(fn, "__qualname__", "fn")
    fibers = [
        spawn(work, i, item, name=f"parallel_map:{name}[{i}]", parallel=True) for i, item in enumerate(items)
    ]
    failure: BaseException | None = None
    try:
        for _ in range(n):
            _i, exc = done.get()
            if exc is not None:
                failure = exc
                break
    except Cancelled:
        _cancel_all(fibers)
        raise
    if failure is not None:
        _cancel_all(fibers)
        raise failure
    return results


def _cancel_all(fibers: list[Fiber]) -> None:
    for f in fibers:
        f.cancel()
    for f in fibers:
        try:
            f.join()
        except BaseException:  # noqa: BLE001, S110 - their outcomes were reported already
            pass


def shared(fn: Callable[..., R]) -> Callable[..., R]:
    """Bind ``fn`` to the current scheduler: every call runs there (Crow's ``shared``)."""
    home = current_scheduler()
    if home is None:
        raise NoScheduler("shared() must be called inside a fibernet runtime")

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> R:
        if current_scheduler() is home:
            return fn(*args, **kwargs)
        if home._stopping:
            raise NoScheduler(f"the scheduler {home.name} that made {fn.__qualname__} has stopped")
        fiber = Fiber(
            functools.partial(fn, *args, **kwargs), (), f"shared:{getattr(fn, '__qualname__', 'fn')}"
        )
        home.spawn(fiber)
        return fiber.join()

    call.scheduler = home  # type: ignore[attr-defined]
    return call

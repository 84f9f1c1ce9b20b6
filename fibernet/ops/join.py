"""Joining a fiber as an operation: Crow's ``await`` on a future, usable in a choice.

The runtime's ``Fiber.join`` and ``Fiber.join_op`` call the functions this module registers
with ``fibernet.runtime.fiber`` when it is imported: the runtime never imports the layer above.
"""

from __future__ import annotations

from functools import partial
from typing import Any, TypeVar

from fibernet.errors import Timeout
from fibernet.ops.operation import NOT_READY, NOTHING, BaseOp, OpState, choice, perform, wrap
from fibernet.ops.timers import wait_op
from fibernet.runtime import fiber as _fiber
from fibernet.runtime.fiber import DONE, Fiber, join_lock
from fibernet.runtime.scheduler import current_fiber

T = TypeVar("T")


def join_op(fiber: Fiber[T]) -> BaseOp[T]:
    def try_join():
        return NOTHING if fiber.state is DONE else NOT_READY

    def block_join(state: OpState, index: int):
        with join_lock(fiber):
            if state.done:
                return None
            if fiber.state is DONE:
                state.finish_self(index, NOTHING)
                return None
            entry = (state, index)
            if fiber._joiners is None:
                fiber._joiners = []
            fiber._joiners.append(entry)
        return partial(_drop, fiber, entry)

    return BaseOp(try_join, block_join, lambda _: fiber.result(), lambda: f"join {fiber.name}")


def _drop(fiber: Fiber, entry: tuple) -> None:
    with join_lock(fiber):
        joiners = fiber._joiners
        if joiners is not None and entry in joiners:
            joiners.remove(entry)


def _timed_out(fiber: Fiber, timeout: float):
    def fail() -> Any:
        raise Timeout(f"fiber {fiber.name} did not finish within {timeout}s")

    return fail


def join(fiber: Fiber[T], timeout: float | None) -> T:
    if fiber is current_fiber():
        raise RuntimeError(f"fiber {fiber.name} cannot join itself")
    op = join_op(fiber)
    if timeout is not None:
        op = choice(op, wrap(wait_op(timeout), _timed_out(fiber, timeout)))
    return perform(op)


_fiber.register_join(join, join_op)  # what Fiber.join and Fiber.join_op call

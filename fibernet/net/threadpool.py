"""The thread pool for calls that block: name resolution, file I/O, user code.

Guile Fibers' manual (its Pitfalls chapter) names them: ``getaddrinfo`` and local file I/O block a scheduler
thread whatever epoll says.  ``run_in_thread(fn, *args)`` runs the call on a pool thread
and suspends only the calling fiber; the pool thread completes the fiber's operation through
the scheduler's thread-safe wake-up.  The pool is the standard library's
``ThreadPoolExecutor``, made on first use.

A fiber cancelled while it waits raises ``Cancelled`` at once; the call itself runs on (a
thread cannot be interrupted) and its result is dropped.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from fibernet.ops.operation import NOT_READY, BaseOp, OpState, Raise, perform
from fibernet.runtime.scheduler import current_fiber

R = TypeVar("R")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="fibernet-pool")
    return _pool


def _deliver(state: OpState, index: int, future: Future) -> None:
    if future.cancelled():  # dropped before it started: its branch lost, nobody waits
        return
    exc = future.exception()
    state.complete(index, Raise(exc) if exc is not None else future.result())


def run_in_thread_op(fn: Callable[..., R], *args: Any) -> BaseOp:
    """An operation that runs ``fn(*args)`` on a pool thread when performed."""

    def try_fn() -> Any:
        return NOT_READY  # the call starts in the block phase, once no other branch won

    def block_fn(state: OpState, index: int):
        future = _executor().submit(fn, *args)
        future.add_done_callback(partial(_deliver, state, index))
        return future.cancel  # a call not yet started is dropped if this branch loses

    name = getattr(fn, "__qualname__", repr(fn))
    return BaseOp(try_fn, block_fn, None, f"thread pool call {name}")


def run_in_thread(fn: Callable[..., R], *args: Any) -> R:
    """Run ``fn(*args)`` on a pool thread; suspend only the calling fiber until it returns.

    Returns its value or raises its exception.  Outside a fiber it simply calls ``fn``.
    """
    if current_fiber() is None:
        return fn(*args)
    return perform(run_in_thread_op(fn, *args))


def shutdown() -> None:
    """Stop the pool's threads (waits for running calls); a later call makes a new pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)

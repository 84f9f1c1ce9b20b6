"""fibernet: Guile Fibers for Python on greenlet, and a server framework on top.

The public names live here (the table atop docs/pages/reference/core.md lists them).  A
fiber is a greenlet run by a scheduler (one OS thread with an epoll loop); fibers talk over
thread-safe channels, and everything that can block is a Concurrent-ML operation that can be
wrapped, put in a choice, and performed.
"""

from fibernet.errors import (
    Cancelled,
    ChannelClosed,
    FibernetError,
    NoScheduler,
    Timeout,
)
from fibernet.net.readiness import readable_op, writable_op
from fibernet.net.threadpool import run_in_thread
from fibernet.ops import (
    NOT_READY,
    BaseOp,
    Channel,
    Condition,
    Operation,
    always,
    choice,
    guard,
    never,
    perform,
    sleep,
    timer_op,
    wait_op,
    with_nack,
    wrap,
)
from fibernet.parallel import parallel_map, shared
from fibernet.patch import patch_all, patched, unpatch_all
from fibernet.runtime import (
    Fiber,
    MockClock,
    Runtime,
    Scheduler,
    current_fiber,
    current_scheduler,
    fiber_by_name,
    fibers,
    run,
    scheduler_by_name,
    schedulers,
)
from fibernet.runtime.scheduler import spawn, yield_now
from fibernet.server import Server, serve, serve_http

base_op = BaseOp

__version__ = "0.1.0"

__all__ = [
    "NOT_READY",
    "BaseOp",
    "Cancelled",
    "Channel",
    "ChannelClosed",
    "Condition",
    "Fiber",
    "FibernetError",
    "MockClock",
    "NoScheduler",
    "Operation",
    "Runtime",
    "Scheduler",
    "Server",
    "Timeout",
    "always",
    "base_op",
    "choice",
    "current_fiber",
    "current_scheduler",
    "fiber_by_name",
    "fibers",
    "guard",
    "never",
    "parallel_map",
    "patch_all",
    "patched",
    "perform",
    "readable_op",
    "run",
    "run_in_thread",
    "scheduler_by_name",
    "schedulers",
    "serve",
    "serve_http",
    "shared",
    "sleep",
    "spawn",
    "timer_op",
    "unpatch_all",
    "wait_op",
    "with_nack",
    "wrap",
    "writable_op",
    "yield_now",
]

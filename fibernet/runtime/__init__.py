"""The runtime layer: fibers, schedulers (one per OS thread), the runtime, and what a scheduler
is made of (poller, timer queue, wake-up descriptor, clock).  It knows nothing of operations
beyond the small protocol in ``fibernet.ops.operation``."""

from fibernet.runtime._accel import compiled
from fibernet.runtime.clock import Clock, MockClock
from fibernet.runtime.fiber import Fiber
from fibernet.runtime.runtime import (
    Runtime,
    fiber_by_name,
    fibers,
    run,
    scheduler_by_name,
    schedulers,
)
from fibernet.runtime.scheduler import Scheduler, current_fiber, current_scheduler

__all__ = [
    "Clock",
    "Fiber",
    "MockClock",
    "Runtime",
    "Scheduler",
    "compiled",
    "current_fiber",
    "current_scheduler",
    "fiber_by_name",
    "fibers",
    "run",
    "scheduler_by_name",
    "schedulers",
]

"""The CML layer: operations (try/block/wrap, choice, perform), channels, timers, conditions.

It knows nothing of sockets; descriptor readiness lives in ``fibernet.net``.
"""

from fibernet.ops.channel import Channel
from fibernet.ops.condition import Condition
from fibernet.ops.join import join_op
from fibernet.ops.operation import (
    NOT_READY,
    NOTHING,
    BaseOp,
    Operation,
    OpState,
    Raise,
    always,
    choice,
    guard,
    never,
    perform,
    with_nack,
    wrap,
)
from fibernet.ops.timers import now, sleep, timer_op, wait_op

__all__ = [
    "NOTHING",
    "NOT_READY",
    "BaseOp",
    "Channel",
    "Condition",
    "OpState",
    "Operation",
    "Raise",
    "always",
    "choice",
    "guard",
    "join_op",
    "never",
    "now",
    "perform",
    "sleep",
    "timer_op",
    "wait_op",
    "with_nack",
    "wrap",
]

"""Every exception fibernet raises, in one hierarchy.

``FibernetError`` is the root of the ordinary errors.  ``Cancelled`` derives from
``BaseException`` (as trio's ``Cancelled`` and asyncio's ``CancelledError`` do) so that a
handler's ``except Exception`` does not swallow a cancellation.
"""

from __future__ import annotations


class FibernetError(Exception):
    """Base class of fibernet's errors."""


class NoScheduler(FibernetError, RuntimeError):
    """A call that needs a running fiber or scheduler was made outside one."""


class ChannelClosed(FibernetError):
    """A put on a closed channel, or a get on a closed and drained one."""


class Timeout(FibernetError, TimeoutError):
    """A blocking call did not complete within its timeout."""


class FiberFailed(FibernetError):
    """Raised by helpers that report a fiber's failure without re-raising it as is."""


class Cancelled(BaseException):
    """Raised inside a fiber at its next suspension after ``Fiber.cancel()``.

    Let it propagate: a fiber that catches it should clean up and re-raise.
    """

"""The net layer: readiness operations on descriptors; fiber-aware sockets (sockets.py),
buffered streams (streams.py) and the thread pool for calls that block (threadpool.py)."""

from fibernet.net.readiness import notify_closing, readable_op, writable_op

__all__ = ["notify_closing", "readable_op", "writable_op"]

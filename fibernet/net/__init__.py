"""The net layer: readiness operations on descriptors (fiber-aware sockets, streams,
listeners and the thread pool arrive with the TCP server)."""

from fibernet.net.readiness import notify_closing, readable_op, writable_op

__all__ = ["notify_closing", "readable_op", "writable_op"]

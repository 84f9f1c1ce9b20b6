"""The net layer: readiness operations on descriptors; fiber-aware sockets (sockets.py),
TLS over them (tls.py), buffered streams (streams.py) and the thread pool for calls that
block (threadpool.py)."""

from fibernet.net.readiness import notify_closing, readable_op, writable_op
from fibernet.net.sockets import connect, listen

__all__ = ["connect", "listen", "notify_closing", "readable_op", "writable_op"]

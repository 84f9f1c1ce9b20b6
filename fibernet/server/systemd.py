"""systemd's readiness protocol (``sd_notify``), so a unit can say ``Type=notify``.

With ``Type=notify`` systemd counts the service as started only when it says ``READY=1``,
so ``systemctl start`` returns, and units ordered after it start, once fibernet accepts
connections, not once its process exists.  fibernet says:

- ``READY=1`` (with ``MAINPID`` and a ``STATUS`` line) once it accepts: the single process
  when its server is bound and running, the supervisor of ``--workers`` when every worker of
  the first generation is;
- ``RELOADING=1`` (with ``MONOTONIC_USEC``) on SIGHUP, then ``READY=1`` again when the new
  generation of workers accepts;
- ``STOPPING=1`` when a signal starts the shutdown.

The protocol is a datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an
abstract name written with a leading ``@``).  Without that variable nothing is sent.  Workers
never speak to systemd (the supervisor takes the variable out of their environment), so
``NotifyAccess=main`` holds.  A failed send is logged and ignored: a server never stops
serving because systemd did not listen.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("fibernet.server")

ENV = "NOTIFY_SOCKET"


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) to systemd; False if there is no
    ``$NOTIFY_SOCKET`` or the send failed."""
    address = os.environ.get(ENV)
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        log.warning("ignoring %s=%r: neither a path nor an abstract socket name", ENV, address)
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", os.environ.get(ENV), exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"MAINPID={os.getpid()}", f"STATUS={status}")


def reloading() -> bool:
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading: starting new workers")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping")


def forget() -> None:
    """Take ``$NOTIFY_SOCKET`` out of this process's environment (a worker's: only the main
    process speaks to systemd)."""
    os.environ.pop(ENV, None)

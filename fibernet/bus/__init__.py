"""The bus: channels, topics and named actors across processes and machines, over Redis.

The seed's "network shims under the programmer's control": a fiber-native RESP client
(fibernet's own sockets, ``hiredis.Reader`` as the parser) moves messages between the
broker and local channels, so a remote message is one more branch in a ``choice``::

    bus = fibernet.bus.connect("redis://127.0.0.1:6379/0")   # in a fiber
    sub = bus.subscribe("room")
    bus.publish("room", {"from": "ann", "text": "hi"})
    msg = fn.perform(fn.choice(sub.get_op(), local.get_op(), fn.wait_op(5)))

    bus.register(ref)                 # serve a local actor to every process
    bus.whereis("counter").call(1, timeout=2.0)

``fibernet serve --bus URL`` (``FIBERNET_BUS``) configures the default bus, which
:func:`default` connects once per runtime on first use.  What is delivered or lost on a
disconnect, for each kind, is in client.py (topics) and names.py (calls).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from fibernet.bus.client import Bus, Subscription
from fibernet.bus.codec import JSON, BytesCodec, Codec, JsonCodec
from fibernet.bus.names import RemoteError, RemoteRef
from fibernet.bus.resp import BusError, BusUnavailable, parse_url
from fibernet.errors import NoScheduler
from fibernet.runtime.scheduler import current_scheduler

ENV = "FIBERNET_BUS"

_configured: str | None = None
_lock = threading.Lock()
_defaults: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # runtime -> Bus
_live: weakref.WeakSet = weakref.WeakSet()


def connect(url: str, *, wait: float | None = None, **options: Any) -> Bus:
    """A bus on ``url`` (``redis://host:port/db``), run by fibers of the current scheduler.

    It connects in the background and keeps reconnecting; with ``wait``, this returns once
    connected or after ``wait`` seconds (check ``bus.connected``).  ``options``: ``codec``,
    ``publish_buffer``, ``subscription_capacity``, ``connect_timeout``, ``backoff``."""
    if current_scheduler() is None:
        raise NoScheduler("fibernet.bus.connect() runs in a fiber")
    bus = Bus(url, **options)
    _live.add(bus)
    if wait is not None:
        bus.wait_connected(wait)
    return bus


def configure(url: str | None) -> None:
    """Set the URL of the default bus (``fibernet serve --bus``); ValueError if malformed."""
    global _configured
    if url is not None:
        parse_url(url)
    _configured = url


def configured() -> str | None:
    """The default bus's URL: :func:`configure`'s, else ``$FIBERNET_BUS``, else None."""
    return _configured or os.environ.get(ENV) or None


def default() -> Bus:
    """The default bus of the current runtime, connected on first use."""
    url = configured()
    if url is None:
        raise BusError(f"no bus configured (fibernet serve --bus URL, or {ENV})")
    sched = current_scheduler()
    if sched is None:
        raise NoScheduler("fibernet.bus.default() runs in a fiber")
    key = sched.runtime or sched
    with _lock:
        bus = _defaults.get(key)
        if bus is None or bus.closed or bus.url != url:
            bus = _defaults[key] = connect(url)
    return bus


def unready() -> list[str]:
    """Why this process's buses make it not ready: one line per disconnected bus."""
    return [reason for bus in list(_live) if (reason := bus.unready())]


__all__ = [
    "JSON",
    "Bus",
    "BusError",
    "BusUnavailable",
    "BytesCodec",
    "Codec",
    "JsonCodec",
    "RemoteError",
    "RemoteRef",
    "Subscription",
    "configure",
    "configured",
    "connect",
    "default",
    "parse_url",
    "unready",
]

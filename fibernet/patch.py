"""``patch_all()``: the standard library's blocking calls become fiber-aware in fibers.

After ``fibernet.patch_all()``, code written for threads -- ``requests``, ``redis``,
``psycopg``, ``http.client`` -- run in a fiber suspends that fiber where it would have
blocked its thread, and the scheduler runs the others meanwhile.  Each replacement decides
per call: in a fiber it cooperates; in a plain thread (no scheduler running on it) it
blocks as before.  What is replaced (see :func:`patched` for the exact list):

- ``socket``: the socket class (connect, accept, the send/recv families, ``sendall``,
  ``makefile``, so ``create_connection`` too) and the resolvers (``getaddrinfo`` & co. run
  on fibernet's thread pool), all in ``fibernet/net/cooperative.py``;
- ``ssl``: the class ``SSLContext.wrap_socket`` makes;
- ``select.select``, ``select.poll`` and the ``selectors`` classes (``DefaultSelector``);
- ``time.sleep``;
- ``threading.Lock``/``RLock`` (and so ``Condition``, ``Event``, ``Semaphore``, ``Barrier``
  and ``queue.Queue`` made afterwards, which are built on them) and ``queue.SimpleQueue``,
  from ``fibernet/ops/locks.py``;
- psycopg 3: its C wait function polls in C, so it is pointed at its ``wait_poll``.

The pitfalls gevent.monkey documents apply: a module that did ``from socket import socket``
or ``from selectors import DefaultSelector`` before patching keeps the original, and so do
locks and sockets made before it.  So patch first, before the application is imported
(``fibernet serve --patch`` / ``FIBERNET_PATCH=1`` do).  Not covered: ``Thread.join`` from
a fiber, ``select.epoll`` objects, ``os.read`` on pipes, and C extensions that block in C
(use :func:`fibernet.run_in_thread` for those).

Patching twice is harmless; :func:`unpatch_all` puts the originals back (objects made
while patched stay what they are).
"""

from __future__ import annotations

import _thread
import os
import queue
import select
import selectors
import socket
import ssl
import sys
import threading
import time
from typing import Any

from fibernet.net import cooperative
from fibernet.net.cooperative import in_fiber
from fibernet.ops import locks
from fibernet.ops.timers import sleep as _fiber_sleep
from fibernet.runtime.scheduler import yield_now

_std_sleep = time.sleep
_saved: dict[str, tuple[Any, str, Any]] = {}  # "module.name" -> (module, name, original)
_env: set[str] = set()  # environment variables patch_all set
_guard = _thread.allocate_lock()
_MISSING = object()
_PSYCOPG_WAIT = "PSYCOPG_WAIT_FUNC"


def sleep(seconds: float) -> None:
    """``time.sleep``: suspends a fiber, blocks a plain thread."""
    if not in_fiber():
        return _std_sleep(seconds)
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if seconds == 0:
        return yield_now()
    return _fiber_sleep(seconds)


def _set(module: Any, name: str, value: Any) -> None:
    owner = f"{module.__module__}.{module.__qualname__}" if isinstance(module, type) else module.__name__
    key = f"{owner}.{name}"
    if key not in _saved:
        _saved[key] = (module, name, getattr(module, name, _MISSING))
    setattr(module, name, value)


def _patch_socket() -> None:
    _set(socket, "socket", cooperative.CooperativeSocket)
    _set(socket, "SocketType", cooperative.CooperativeSocket)
    _set(socket, "getaddrinfo", cooperative.getaddrinfo_of(_saved_or(socket, "getaddrinfo")))
    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        _set(socket, name, cooperative.resolver(_saved_or(socket, name)))
    # (Not ``ssl.SSLSocket``: ssl.py's own methods name their class through that global.)
    _set(ssl.SSLContext, "sslsocket_class", cooperative.CooperativeSSLSocket)


def _saved_or(module: Any, name: str) -> Any:
    """The original of ``module.name`` (even if patched already)."""
    saved = _saved.get(f"{module.__name__}.{name}")  # (a module, never a class, here)
    return saved[2] if saved is not None else getattr(module, name)


def _patch_select() -> None:
    _set(select, "select", cooperative.cooperative_select)
    _set(select, "poll", cooperative.CooperativePoll)
    for name in ("SelectSelector", "PollSelector", "EpollSelector"):
        if hasattr(selectors, name):
            _set(selectors, name, cooperative.cooperative_selector(_saved_or(selectors, name)))
    default = _saved_or(selectors, "DefaultSelector").__name__
    _set(selectors, "DefaultSelector", getattr(selectors, default))


def _patch_threading() -> None:
    _set(threading, "Lock", locks.Lock)
    _set(threading, "_allocate_lock", locks.Lock)
    _set(threading, "RLock", locks.RLock)
    _set(_thread, "allocate_lock", locks.Lock)
    _set(_thread, "RLock", locks.RLock)
    _set(queue, "SimpleQueue", queue._PySimpleQueue)  # on threading.Semaphore, so patched


def _patch_psycopg() -> None:
    """psycopg 3 picks its C wait function (poll() in C, which blocks the thread) unless
    told otherwise: point it at its Python ``wait_poll``, over the patched ``select.poll``."""
    if _PSYCOPG_WAIT not in os.environ:
        os.environ[_PSYCOPG_WAIT] = "wait_poll"  # for a psycopg imported later
        _env.add(_PSYCOPG_WAIT)
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and getattr(waiting, "wait", None) is not getattr(waiting, "wait_poll", None):
        _set(waiting, "wait", waiting.wait_poll)
        _set(waiting, "_ready", waiting._ready_poll)


def patch_all() -> list[str]:
    """Make the standard library's blocking calls fiber-aware in fibers (see the module
    doc); returns :func:`patched`.  Call it first, before importing what should cooperate."""
    with _guard:
        _patch_socket()
        _patch_select()
        _set(time, "sleep", sleep)
        _patch_threading()
        _patch_psycopg()
    return patched()


def patched() -> list[str]:
    """What :func:`patch_all` replaced, as ``module.name`` strings (empty if nothing)."""
    return sorted(_saved) + [f"os.environ[{name}]" for name in sorted(_env)]


def unpatch_all() -> None:
    """Put every original back.  Sockets, locks and selectors made while patched stay the
    cooperative kind (they still work in plain threads)."""
    with _guard:
        for module, name, original in reversed(list(_saved.values())):
            if original is _MISSING:
                delattr(module, name)
            else:
                setattr(module, name, original)
        _saved.clear()
        for name in _env:
            os.environ.pop(name, None)
        _env.clear()

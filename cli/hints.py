"""Hints for a first-time user of ``fibernet serve``: an HTTP app served as a TCP handler.

Without ``--protocol http`` (or ``PROTOCOL = "http"`` in its module) an HTTP app is called with
each connection's socket instead of a request, so every client sees its connection close with
no answer.  Two checks say so in one log line: at startup, a handler whose first parameter is
named like a request; and on a connection, a TCP handler that returns a ``Response`` or fails
while the client's bytes still waiting in the socket start with an HTTP request line.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fibernet.cli")

REQUEST_NAMES = ("request", "req")
_REQUEST_LINE = re.compile(rb"[A-Z]{3,10} \S+ HTTP/\d\.\d\r?\n")


def advice(app: str, why: str) -> str:
    return (
        f"{app} looks like an HTTP app ({why}) but is served as a TCP handler: "
        "run with --protocol http or set PROTOCOL = 'http' in its module"
    )


def startup_hint(handler: Callable[..., Any]) -> str | None:
    """Why ``handler`` looks like an HTTP app, from its signature alone, or None."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # a builtin or an odd callable: no opinion
        return None
    if params and params[0].name in REQUEST_NAMES:
        return f"its parameter is named {params[0].name!r}"
    return None


def looks_like_http(data: bytes) -> bool:
    """Whether ``data`` (the first bytes from a client) starts with an HTTP/1.x request line."""
    return _REQUEST_LINE.match(data) is not None


# A handler that fails at once may fail before the client's first bytes come: the first few
# such failures wait this long for them (a first-run aid: never more than that many waits).
FIRST_BYTES_WAIT = 0.5
FIRST_BYTES_WAITS = 8


def _unread_request_line(conn: Any, wait: float = 0.0) -> bool:
    """Whether the bytes waiting in ``conn`` start with an HTTP request line; if none are
    waiting yet, wait up to ``wait`` seconds for them (a fibernet operation: the scheduler
    runs on)."""
    try:
        data = conn.sock.recv(256, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        if wait <= 0:
            return False
        import fibernet as fn

        came = fn.choice(
            fn.wrap(fn.readable_op(conn), lambda *_: True), fn.wrap(fn.wait_op(wait), lambda: False)
        )
        return fn.perform(came) and _unread_request_line(conn)
    except (OSError, ValueError, AttributeError):  # the connection gone, or a wrapper
        return False  # whose socket cannot be peeked at
    return looks_like_http(data)


def guard_tcp_handler(handler: Callable[..., Any], app: str) -> Callable[..., Any]:
    """``handler`` as it is, but logging :func:`advice` once if a connection shows it is an
    HTTP app (it returns a Response, or fails with an HTTP request line unread)."""
    from fibernet.http import Response

    warned = False
    waits = FIRST_BYTES_WAITS

    def warn(why: str) -> None:
        nonlocal warned
        if not warned:
            warned = True
            log.warning("%s", advice(app, why))

    @functools.wraps(handler)
    def guarded(conn: Any) -> Any:
        try:
            result = handler(conn)
        except Exception:
            nonlocal waits
            if not warned:
                wait = FIRST_BYTES_WAIT if waits > 0 else 0.0
                waits -= 1
                if _unread_request_line(conn, wait):
                    warn("a client sent an HTTP request and the handler failed")
            raise
        if result is not None and not warned:
            if isinstance(result, Response):
                warn("the handler returned a Response")
            elif _unread_request_line(conn):
                warn("a client sent an HTTP request and the handler returned a value")
        return result

    return guarded

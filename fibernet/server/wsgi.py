"""WSGI (PEP 3333) applications on the fibernet HTTP server: ``fibernet serve mod:app
--interface wsgi``.

:class:`WSGIApp` turns ``app(environ, start_response)`` into a fibernet HTTP app
(``request -> Response``), so a WSGI app gets everything the connection loop does (keep-alive,
limits, 100-continue, drain, access log).  Each request runs in its connection's fiber, as
gevent's pywsgi runs it in the connection's greenlet: code that blocks a thread blocks that
scheduler (``--patch`` makes the standard library's blocking calls fiber-aware).

``wsgi.input`` streams the body from the socket as the app reads it (chunked bodies too:
``wsgi.input_terminated`` is set, werkzeug's convention).  The response is sent once the app
has returned its iterable and called ``start_response`` (or, for a generator that calls it
late, once it yielded its first chunk): a list is sent with a Content-Length, any other
iterable is streamed as it is produced (with the app's Content-Length if it gave one, else
chunked).  ``write()`` output is kept and sent before the iterable (PEP 3333 allows
buffering it; fibernet sends it when the app returns).  ``close()`` of the iterable is called
however the response ends.  An app's exception goes to the log: a 500 if nothing was sent
yet, else the connection is cut so that the client sees a truncated response.

:func:`detect_interface` tells a WSGI app from a fibernet one for ``--interface auto``, and
refuses an ASGI app with the reason.
"""

from __future__ import annotations

import inspect
import io
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from fibernet.http import Request, Response

log = logging.getLogger("fibernet.wsgi")

_BLOCK = 64 * 1024


class _Input(io.RawIOBase):
    """``wsgi.input``: the request body, read from the connection as the app asks."""

    def __init__(self, request: Request) -> None:
        self._chunks = request.stream()
        self._buf = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = next(self._chunks, b"")
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            return self._take(len(self._buf))
        while len(self._buf) < size and self._more():
            pass
        return self._take(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = sys.maxsize if size is None or size < 0 else size
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                return self._take(min(i + 1, limit))
            if len(self._buf) >= limit:
                return self._take(limit)
            start = len(self._buf)
            if not self._more():
                return self._take(min(len(self._buf), limit))

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        while line := self.readline():
            yield line


class _Errors:
    """``wsgi.errors``: text the app writes goes to the log, a line at a time."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            log.error("%s", line)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            log.error("%s", self._partial)
            self._partial = ""


class FileWrapper:
    """``wsgi.file_wrapper``: a file-like object sent in blocks; ``close()`` closes it."""

    def __init__(self, filelike: Any, blksize: int = _BLOCK) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while block := read(self.blksize):
            yield block


class _Start:
    """The ``start_response`` of one request, and what it was told."""

    __slots__ = ("status", "headers", "written", "sent")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []
        self.sent = False  # the response head is out: too late to change it

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # (no cycle through the traceback)
        elif self.status is not None:
            raise RuntimeError("start_response was already called (without exc_info)")
        code = status[:3]
        if not isinstance(status, str) or len(status) < 4 or not code.isdigit() or status[3] != " ":
            raise ValueError(f"a WSGI status is like '200 OK', not {status!r}")
        for name, value in headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"WSGI header fields are native strings, not {name!r}: {value!r}")
        self.status = int(code)
        self.headers = list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise RuntimeError("write() before start_response")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        self.written.append(bytes(data))


class WSGIApp:
    """A fibernet HTTP app that runs the WSGI app ``app`` (see the module doc)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, multiprocess: bool = False) -> None:
        if not callable(app):
            raise TypeError(f"a WSGI app must be callable, not {type(app).__name__}")
        self.app = app
        self.multiprocess = multiprocess
        self.__qualname__ = getattr(app, "__qualname__", type(app).__name__)

    def environ(self, request: Request) -> dict[str, Any]:
        host, _, port = (request.headers.get("host") or "localhost").rpartition(":")
        if not host or not port.isdigit():  # no port, or an IPv6 literal without one
            host, port = request.headers.get("host") or "localhost", "80"
        client = request.client
        env: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(request.path).decode("latin-1"),
            "QUERY_STRING": request.query,
            "SERVER_NAME": host,
            "SERVER_PORT": port,
            "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
            "REMOTE_ADDR": client[0] if isinstance(client, tuple) else "",
            "REMOTE_PORT": str(client[1]) if isinstance(client, tuple) else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": getattr(request, "scheme", "http"),
            "wsgi.input": _Input(request),
            "wsgi.input_terminated": True,
            "wsgi.errors": _Errors(),
            "wsgi.multithread": True,  # requests of one process interleave, as threads' do
            "wsgi.multiprocess": self.multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
        }
        for name, value in request.headers:
            if "_" in name:
                continue  # X_Forwarded_For would pass for X-Forwarded-For (as nginx, gunicorn)
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            env[key] = f"{env[key]},{value}" if key in env else value
        return env

    def __call__(self, request: Request) -> Response:
        start = _Start()
        result = self.app(self.environ(request), start)
        try:
            iterator = iter(result)
            first: list[bytes] = []
            while start.status is None:  # a generator may call start_response late
                chunk = next(iterator, None)
                if chunk is None:
                    raise RuntimeError("the WSGI app returned without calling start_response")
                if chunk:
                    first.append(chunk)
            if isinstance(result, (list, tuple)):  # all there: one body with its length
                body: Any = b"".join(start.written + first + list(iterator))
                _close(result)
            else:
                body = _stream(start, start.written + first, iterator, result)
        except BaseException:
            _close(result)
            raise
        return Response(start.status, body, start.headers)


def _stream(start: _Start, first: list[bytes], rest: Iterator[bytes], result: Any) -> Iterator[bytes]:
    start.sent = True  # (iterated only once the head is out)
    try:
        yield from first
        yield from rest
    finally:
        _close(result)


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


# -- --interface auto ---------------------------------------------------------------------


def detect_interface(app: Callable[..., Any]) -> str:
    """'wsgi' for ``app(environ, start_response)``, 'fibernet' for a one-argument handler;
    raises TypeError for an ASGI app (or anything else) saying why."""
    target = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", app)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(app):
        raise TypeError(
            "this is an ASGI app (an async callable taking scope, receive, send): fibernet runs "
            "fibers, not an asyncio event loop, so it serves fibernet and WSGI apps only; run "
            "it with an ASGI server (uvicorn, hypercorn), or give fibernet its WSGI form"
        )
    try:
        params = [
            p for p in inspect.signature(app).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return "fibernet"  # no signature to read (a builtin): taken as a fibernet handler
    if len(params) == 2:
        return "wsgi"
    if len(params) == 3:
        raise TypeError(
            "this app takes three arguments, like an ASGI app (scope, receive, send): fibernet "
            "serves fibernet handlers (one argument) and WSGI apps (environ, start_response)"
        )
    return "fibernet"

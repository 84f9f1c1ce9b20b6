"""Helpers for users' own tests (pytest or not) of their handlers and fibers.

- :func:`call` runs an HTTP app in-process on a request built from arguments, and returns
  the response with its body read whole (a streamed body is joined), without a socket.
- :func:`serve` serves any handler, TCP or HTTP, on a free loopback port in background
  threads for the length of a ``with`` block::

      with fibernet.testing.serve(app, protocol="http") as server:
          host, port = server.address
          ...

- :func:`run_fibers` runs a function in a fiber with a virtual clock, so code that sleeps or
  times out runs instantly in a test.
"""

from __future__ import annotations

import contextlib
import json as _json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fibernet.http import Headers, Request, Response
from fibernet.runtime.clock import MockClock
from fibernet.runtime.runtime import run
from fibernet.server.http import http_server
from fibernet.server.tcp import Server


class TestResponse:
    """A response with its body materialised: ``status``, ``headers``, ``body``, ``text``, ``json()``."""

    __test__ = False  # not a pytest test class

    def __init__(self, response: Response) -> None:
        self.status = response.status
        self.headers = response.headers
        body = response.body
        if isinstance(body, (bytes, bytearray, memoryview)):
            self.body = bytes(body)
        else:
            self.body = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status} {len(self.body)} bytes>"


def call(
    app: Callable[[Request], Response],
    method: str = "GET",
    target: str = "/",
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | str = b"",
    json: Any = None,
    client: Any = ("127.0.0.1", 50000),
) -> TestResponse:
    """Call the HTTP app ``app`` in-process and return its response, body read whole."""
    hdrs = Headers({"host": "testserver", **(headers or {})})
    if json is not None:
        body = _json.dumps(json)
        if "content-type" not in hdrs:
            hdrs.add("content-type", "application/json")
    data = body.encode() if isinstance(body, str) else bytes(body)
    if data and "content-length" not in hdrs:
        hdrs.add("content-length", str(len(data)))
    response = app(Request(method.upper(), target, hdrs, "1.1", client, data))
    if not isinstance(response, Response):
        raise TypeError(f"the app returned {type(response).__name__}, not a Response")
    return TestResponse(response)


@contextlib.contextmanager
def serve(
    handler: Callable[..., Any], protocol: str = "tcp", *, threads: int = 1, **options: Any
) -> Iterator[Server]:
    """Serve ``handler`` on 127.0.0.1 at a free port for the ``with`` block; stop it after."""
    if protocol == "tcp":
        server = Server(handler, "127.0.0.1", 0, threads=threads, **options)
    elif protocol == "http":
        server = http_server(handler, "127.0.0.1", 0, threads=threads, **options)
    else:
        raise ValueError(f"protocol must be 'tcp' or 'http', not {protocol!r}")
    server.start()
    try:
        yield server
    finally:
        server.stop(0)
        server.wait()


def run_fibers(main: Callable[..., Any], *args: Any, clock: MockClock | None = None) -> Any:
    """``fibernet.run(main, *args)`` on one scheduler with a virtual clock (autojump)."""
    return run(main, *args, threads=1, clock=clock or MockClock())

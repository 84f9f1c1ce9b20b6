"""Fixtures and helpers for the HTTP/1.1 tests.

- ``FakeSocket``: just enough of :class:`fibernet.net.sockets.Socket` (``recv``, ``sendall``,
  ``timeout``, ``getpeername``) for the connection loop ``_Connection`` to run on scripted
  bytes in the test's own thread, with no descriptor, no runtime and no clock.
- ``drive(app, pieces)``: runs the connection loop on a ``FakeSocket`` and returns it.
- ``RawClient``: a loopback client that writes raw bytes and parses responses itself
  (status, header fields, body by content-length / chunked / close), for the tests that
  must control every byte.
- ``http_server`` fixture: ``http_server(app, **options)`` serves ``app`` with
  :func:`fibernet.testing.serve` for the test and stops it at teardown.
- ``Recorder``: an app that records every request it is called with (thread-safe).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable

import pytest

from fibernet.http import Request, Response
from fibernet.server.http import HttpConfig, _Connection
from fibernet.server.http_protocol import HttpLimits
from fibernet.testing import serve

CLIENT_TIMEOUT = 10.0  # no client read in these tests may wait longer than this


@pytest.fixture(autouse=True)
def _no_runtime_leaks(no_runtime_leaks):
    """Every test here ends with no runtime alive and no thread left behind."""
    yield


# -- a socket made of scripted bytes ---------------------------------------------------------


class FakeSocket:
    """Hands out ``pieces`` one per ``recv``, then b"" (the client closed its side)."""

    def __init__(self, pieces: Iterable[bytes], peer=("192.0.2.7", 4711)) -> None:
        self._pieces = list(pieces)
        self.reads = 0  # recv calls that returned bytes
        self.sent = bytearray()
        self.timeout = None
        self._peer = peer

    def recv(self, bufsize: int) -> bytes:
        if not self._pieces:
            return b""
        piece = self._pieces[0]
        if len(piece) > bufsize:
            self._pieces[0] = piece[bufsize:]
            piece = piece[:bufsize]
        else:
            self._pieces.pop(0)
        self.reads += 1
        return piece

    def sendall(self, data) -> None:
        self.sent += data

    def getpeername(self):
        return self._peer

    @property
    def unread(self) -> int:
        return sum(len(p) for p in self._pieces)


def drive(app: Callable[[Request], Response], pieces: Iterable[bytes] | bytes, **limits) -> FakeSocket:
    """Run the connection loop over scripted bytes until it ends; the socket holds what it sent."""
    if isinstance(pieces, (bytes, bytearray)):
        pieces = [bytes(pieces)]
    sock = FakeSocket(pieces)
    _Connection(app, HttpConfig(HttpLimits(**limits)), sock).run()
    return sock


# -- parsing responses ------------------------------------------------------------------------


class Reply:
    __slots__ = ("version", "status", "reason", "headers", "body", "raw_head")

    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def closes(self) -> bool:
        value = self.header("connection")
        return value is not None and "close" in value.lower()

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.headers} {self.body[:60]!r}>"


class ByteReader:
    """Reads responses from a ``recv``-able source, buffering what comes after."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self.buf = bytearray()
        self.eof = False

    def _more(self) -> None:
        data = self._recv(65536)
        if not data:
            self.eof = True
            raise EOFError("connection closed")
        self.buf += data

    def read_until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            self._more()
        out = bytes(self.buf[: i + len(marker)])
        del self.buf[: i + len(marker)]
        return out

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self) -> bytes:
        with contextlib.suppress(EOFError):
            while True:
                self._more()
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_response(self, head_request: bool = False, allow_interim: bool = False) -> Reply:
        raw = self.read_until(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version in ("HTTP/1.1", "HTTP/1.0") and len(status) == 3 and status.isdigit(), \
            f"not a status line: {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), f"malformed response header line {line!r}"
            headers.append((name.lower(), value.strip()))
        reply = Reply(version, int(status), reason, headers, b"", raw)
        code = reply.status
        if head_request or code in (204, 304) or (100 <= code < 200):
            if 100 <= code < 200 and not allow_interim:
                raise AssertionError(f"unexpected interim response {raw!r}")
            return reply
        te = reply.header("transfer-encoding")
        length = reply.header("content-length")
        if te is not None:
            assert te.lower() == "chunked", te
            assert length is None, "both content-length and transfer-encoding in a response"
            body = bytearray()
            while True:
                size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")  # no trailers from fibernet
                    break
                body += self.read_exactly(size)
                assert self.read_exactly(2) == b"\r\n"
            reply.body = bytes(body)
        elif length is not None:
            reply.body = self.read_exactly(int(length))
        else:
            reply.body = self.read_to_eof()
        return reply


def parse_responses(data: bytes, head_requests: Iterable[bool] = ()) -> list[Reply]:
    """Every response in ``data`` (what a FakeSocket was sent), in order."""
    buf = [bytes(data)]
    reader = ByteReader(lambda n: buf.pop() if buf else b"")
    heads = list(head_requests)
    replies = []
    while True:
        if not reader.buf and (not buf):
            break
        try:
            replies.append(reader.read_response(head_request=heads.pop(0) if heads else False))
        except EOFError:
            raise AssertionError(f"truncated response in {bytes(data)[-200:]!r}") from None
    return replies


# -- a raw loopback client -----------------------------------------------------------------


class RawClient:
    def __init__(self, address, timeout: float = CLIENT_TIMEOUT) -> None:
        self.sock = socket.create_connection(address[:2], timeout=timeout)
        self.reader = ByteReader(self.sock.recv)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head_request: bool = False, allow_interim: bool = False) -> Reply:
        return self.reader.read_response(head_request, allow_interim)

    def read_until(self, marker: bytes) -> bytes:
        return self.reader.read_until(marker)

    def at_eof(self) -> bool:
        """True when the server closed (orderly or with a reset) and sent nothing more."""
        try:
            rest = self.reader.read_to_eof()
        except ConnectionResetError:
            rest = bytes(self.reader.buf)
        assert rest == b"", f"the server sent more after the last response: {rest[:200]!r}"
        return True


def request(method: str = "GET", target: str = "/", body: bytes = b"", version: str = "1.1",
            headers: Iterable[tuple[str, str]] = (), host: str | None = "test") -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- apps and servers ----------------------------------------------------------------------


class Recorder:
    """An app that records each request (method, target, headers, body it read) and answers
    ``respond(request)`` or 200 "ok".  ``read_body`` makes it read the body first."""

    def __init__(self, respond: Callable[[Request], Response] | None = None, read_body: bool = True) -> None:
        self.calls: list[Request] = []
        self.bodies: list[bytes] = []
        self.completed: list[str] = []  # targets whose handler returned
        self._respond = respond
        self._read_body = read_body
        self._lock = threading.Lock()

    def __call__(self, req: Request) -> Response:
        with self._lock:
            self.calls.append(req)
        if self._read_body:
            body = req.body()
            with self._lock:
                self.bodies.append(body)
        response = self._respond(req) if self._respond else Response(200, b"ok")
        with self._lock:
            self.completed.append(req.target)
        return response

    @property
    def targets(self) -> list[str]:
        return [r.target for r in self.calls]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.bodies.clear()
            self.completed.clear()


@pytest.fixture
def http_server():
    """``http_server(app, **options)`` -> a started server (``.address``); stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(app, **options):
            return stack.enter_context(serve(app, protocol="http", **options))

        yield start

"""The workloads of ``loadtest/load.py``: echo, line, http, churn.  Each gives the bytes of
request ``seq`` (``request``) and per connection a reader (``reader().take(data, seq, eof)``:
True once answer ``seq`` is whole and checked; raises when it is wrong or cut short), so that
the engine can run an exchange from a readiness callback as well as from a fiber.
"""

from __future__ import annotations

import errno
from typing import Any

import httptools

WORKLOADS = ("echo", "line", "http", "churn")
PHASES = 251
HEAD_LIMIT = 64 * 1024


class BadResponse(Exception):
    """The answer is not what the request asked for (wrong bytes, unparseable)."""

    kind = "bad_response"


class BadStatus(BadResponse):
    """An HTTP answer that is not 2xx."""

    kind = "status"


class ClosedEarly(Exception):
    """The peer closed the connection before the whole answer came."""

    kind = "closed"


# the error kinds of the exceptions a connect or an exchange raises, by type, then by errno
TYPES = ((EOFError, "closed"), (TimeoutError, "timeout"), (ConnectionRefusedError, "refused"),
         ((ConnectionResetError, ConnectionAbortedError, BrokenPipeError), "reset"))
ERRNOS = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.EPIPE: "reset",
          errno.ECONNABORTED: "reset", errno.ETIMEDOUT: "timeout"}


def classify(exc: BaseException) -> str:
    """The error kind of an exception raised by a connect or an exchange."""
    if kind := getattr(exc, "kind", None):
        return kind
    kind = next((kind for types, kind in TYPES if isinstance(exc, types)), None)
    if kind is None and isinstance(exc, OSError):
        code = exc.errno
        kind = ERRNOS.get(code) or (errno.errorcode.get(code, "oserror").lower() if code else "oserror")
    return kind or type(exc).__name__


def _pattern(size: int, alphabet: bytes) -> list[Any]:
    """PHASES payloads of ``size`` bytes, each a window of a repeating ``alphabet``."""
    reps = (size + PHASES) // len(alphabet) + 2
    base = (alphabet * reps)[: size + PHASES]
    if size <= 64 * 1024:
        return [base[i : i + size] for i in range(PHASES)]
    view = memoryview(base)
    return [view[i : i + size] for i in range(PHASES)]


class Parsed:
    """A workload whose answers are parsed from a buffer (``parse(buf, seq, eof)``: the answer's
    length once it is all there, else None)."""

    per_request_connection = False

    def reader(self) -> Buffered:
        return Buffered(self.parse)


class Echo(Parsed):
    """Echoed messages of ``size`` bytes; with ``churn``, a connection for each."""

    def __init__(self, size: int = 64, churn: bool = False) -> None:
        if size < 1:
            raise ValueError("--size must be at least 1 byte")
        self.size = size
        self.payloads = _pattern(size, bytes(range(256)))
        self.per_request_connection = churn

    def describe(self) -> str:
        echo = f"echo {self.size} B"
        return f"churn: connect, {echo}, close" if self.per_request_connection else echo

    def request(self, seq: int) -> Any:
        return self.payloads[seq % PHASES]

    def parse(self, buf: bytearray, seq: int, eof: bool) -> int | None:
        size = self.size
        n = len(buf)
        if n < size:
            if eof:
                raise ClosedEarly(f"closed after {n} of {size} echoed bytes")
            return None
        if (buf if n == size else buf[:size]) != self.payloads[seq % PHASES]:
            raise BadResponse(f"echo of request {seq} differs from what was sent")
        return size


class Line(Parsed):
    def __init__(self, size: int = 64, line: bytes | None = None, expect: str | bytes = "echo") -> None:
        if line is not None:
            line = line if line.endswith(b"\n") else line + b"\n"
            self.lines = [line]
        else:
            if size < 2:
                raise ValueError("--size of a line must be at least 2 bytes (one character and a newline)")
            alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            self.lines = [bytes(p) + b"\n" for p in _pattern(size - 1, alphabet)]
        if isinstance(expect, str) and expect not in ("echo", "any"):
            expect = expect.encode()
        if isinstance(expect, bytes) and not expect.endswith(b"\n"):
            expect += b"\n"
        self.expect = expect
        self.limit = max(HEAD_LIMIT, 2 * max(len(x) for x in self.lines))
        self.size = len(self.lines[0])

    def describe(self) -> str:
        what = self.expect if isinstance(self.expect, str) else repr(self.expect)
        return f"line {self.size} B, expect {what}"

    def request(self, seq: int) -> bytes:
        return self.lines[seq % len(self.lines)]

    def parse(self, buf: bytearray, seq: int, eof: bool) -> int | None:
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) >= self.limit:
                raise BadResponse(f"no newline within {self.limit} bytes")
            if eof:
                raise ClosedEarly(f"closed after {len(buf)} bytes of a line")
            return None
        end = i + 1
        if end > self.limit:
            raise BadResponse(f"a line of {end} bytes exceeds the limit of {self.limit}")
        expect = self.expect
        if expect == "any":
            return end
        want = self.lines[seq % len(self.lines)] if expect == "echo" else expect
        if (buf if len(buf) == end else buf[:end]) != want:
            raise BadResponse(f"line {bytes(buf[: min(end, 60)])!r} is not {want[:60]!r}")
        return end


class Buffered:
    """The reader of a connection for a workload that parses from a buffer (echo, line): it
    keeps the bytes not parsed yet (part of an answer, or answers to later requests)."""

    __slots__ = ("parse", "buf")

    def __init__(self, parse: Any) -> None:
        self.parse = parse
        self.buf = bytearray()

    def take(self, data: Any, seq: int, eof: bool) -> bool:
        """Add ``data``; True once answer ``seq`` is whole (and consumed)."""
        buf = self.buf
        if buf:  # (rare: the answer came in parts)
            buf += data
            n = self.parse(buf, seq, eof)
            if n is None:
                return False
            del buf[:n]
            return True
        if not data and not eof:
            return False
        n = self.parse(data, seq, eof)
        if n is None:
            buf += data
            return False
        if n < len(data):
            buf += data[n:]  # more than one answer: the rest waits for its request
        return True


class Http:
    def __init__(
        self, host: str, port: int, method: str = "GET", path: str = "/",
        headers: list[tuple[str, str]] | None = None, body: bytes = b"", keepalive: bool = True,
    ) -> None:
        self.method = method.upper()
        self.path = path
        self.keepalive = keepalive
        self.per_request_connection = not keepalive
        names = {k.lower() for k, _ in headers or ()}
        lines = [f"{self.method} {path} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {host}:{port}")  # as wrk writes it
        lines += [f"{k}: {v}" for k, v in headers or ()]
        if (body or self.method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
            lines.append(f"content-length: {len(body)}")
        if not keepalive and "connection" not in names:
            lines.append("connection: close")
        self.bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.statuses: dict[int, int] = {}

    def describe(self) -> str:
        return f"http {self.method} {self.path}" + ("" if self.keepalive else " (connection: close)")

    def request(self, seq: int) -> bytes:
        return self.bytes

    def reader(self) -> Answers:
        if self.method == "HEAD":
            return HeadAnswers(self)
        return Answers(self) if self.keepalive else ClosingAnswers(self)


class Answers:
    """The answers on one connection, parsed by httptools' response parser as they come:
    framing (content-length, chunked, none for 1xx, 204 and 304), status and keep-alive.
    Each whole answer is counted by status, and must be 2xx and keep the connection open."""

    __slots__ = ("wl", "parser", "whole", "head", "error")

    def __init__(self, wl: Http) -> None:
        self.wl = wl
        self.parser = httptools.HttpResponseParser(self)
        self.whole = 0  # answers parsed and not yet taken
        self.head = False  # the head of an answer is parsed, its body not yet
        self.error: BaseException | None = None

    # httptools' callbacks
    def on_headers_complete(self) -> None:
        self.head = True

    def on_message_complete(self) -> None:
        self.head = False
        status = self.parser.get_status_code()
        if status < 200:
            return  # an interim answer: the real one follows
        statuses = self.wl.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.whole += 1
        if self.error is None:
            if not 200 <= status < 300:
                self.error = BadStatus(f"HTTP status {status}")
            elif self.wl.keepalive and not self.parser.should_keep_alive():
                self.error = ClosedEarly("the server closes the connection after the response "
                                         "(no keep-alive)")

    def feed(self, data: Any) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise BadResponse(f"bad HTTP answer: {exc}") from None

    def ends_at_close(self) -> bool:
        """Whether the answer being parsed may end with the stream (its fields say the server
        closes; its last bytes then tell whether it was whole)."""
        return not self.parser.should_keep_alive()

    def take(self, data: Any, seq: int, eof: bool) -> bool:
        """Add ``data``; True once the next answer is whole (and consumed)."""
        if data:
            self.feed(data)
        if eof and not self.whole:
            if not self.head or not self.ends_at_close():
                raise ClosedEarly("closed inside an answer")
            self.on_message_complete()  # a body delimited by the close
        if self.error is not None:
            raise self.error
        if self.whole:
            self.whole -= 1
            return True
        return False


class ClosingAnswers(Answers):
    """The answers of ``connection: close`` requests: a body without a length or chunks runs
    up to the close, so the framing fields are looked at."""

    __slots__ = ("framed", "fields")

    def __init__(self, wl: Http) -> None:
        super().__init__(wl)
        self.framed = self.fields = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.fields = True

    def on_headers_complete(self) -> None:
        self.head = True
        self.framed, self.fields = self.fields, False

    def ends_at_close(self) -> bool:
        return not self.framed


class HeadAnswers(Answers):
    """The answers to HEAD, which have no body whatever their fields say: each head (up to its
    empty line) goes to a parser of its own."""

    __slots__ = ("buf",)

    def __init__(self, wl: Http) -> None:
        super().__init__(wl)
        self.buf = bytearray()

    def feed(self, data: Any) -> None:
        buf = self.buf
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            self.parser = httptools.HttpResponseParser(self)
            super().feed(bytes(buf[: end + 4]))
            del buf[: end + 4]
            if self.head:  # (1xx, 204 and 304 complete by themselves)
                self.on_message_complete()
        if len(buf) > HEAD_LIMIT:
            raise BadResponse(f"no end of the response head within {HEAD_LIMIT} bytes")


def make_workload(cfg: Any) -> Any:
    """The workload object for a :class:`load.Config`."""
    if cfg.workload in ("echo", "churn"):
        return Echo(cfg.size, churn=cfg.workload == "churn")
    if cfg.workload == "line":
        line = cfg.line.encode() if cfg.line is not None else None
        return Line(cfg.size, line, cfg.expect)
    if cfg.workload == "http":
        body = cfg.body.encode() if isinstance(cfg.body, str) else cfg.body
        return Http(cfg.host, cfg.port, cfg.method, cfg.path, list(cfg.headers), body, cfg.keepalive)
    raise ValueError(f"unknown workload {cfg.workload!r}: one of {', '.join(WORKLOADS)}")

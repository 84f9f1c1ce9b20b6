"""The workloads of ``loadtest/load.py``: what one request is and how its answer is checked.

A workload builds the bytes of request ``seq`` (``request``) and reads and checks one answer
from a :class:`fibernet.net.streams.Stream` (``read_response``), raising one of the
exceptions below when the answer is wrong.  ``per_request_connection`` says whether every
request opens its own connection (churn, HTTP without keep-alive).

echo   ``size`` bytes that differ from one request to the next (a sliding window over a
       pattern of 251 distinct phases, a prime, so a stale or reordered echo does not match);
       every echoed byte is compared.
line   one line of ``size`` bytes (newline included); the answer is one line that must equal
       the request (``expect="echo"``), any line (``expect="any"``), or given bytes.
http   an HTTP/1.1 request (method, path, header fields, body); the answer is read by its
       framing (content-length, chunked, or up to the close; none for HEAD, 1xx, 204, 304)
       and must be 2xx.  ``keepalive=False`` sends ``connection: close`` and opens a
       connection per request.
churn  connect, one echo exchange of ``size`` bytes, close.
"""

from __future__ import annotations

import errno
from typing import Any

from fibernet.net.streams import IncompleteRead, LimitOverrun, Stream

WORKLOADS = ("echo", "line", "http", "churn")
PHASES = 251
HEAD_LIMIT = 64 * 1024
HEAD_CACHE = 64  # parsed response heads kept (identical heads are parsed once)


class BadResponse(Exception):
    """The answer is not what the request asked for (wrong bytes, unparseable)."""

    kind = "bad_response"


class BadStatus(BadResponse):
    """An HTTP answer that is not 2xx."""

    kind = "status"

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP status {status}")
        self.status = status


class ClosedEarly(Exception):
    """The peer closed the connection before the whole answer came."""

    kind = "closed"


def classify(exc: BaseException) -> str:
    """The error kind of an exception raised by a connect or an exchange."""
    kind = getattr(exc, "kind", None)
    if kind:
        return kind
    if isinstance(exc, (IncompleteRead, EOFError)):
        return "closed"
    if isinstance(exc, LimitOverrun):
        return "bad_response"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, OSError):
        code = exc.errno
        if code == errno.ECONNREFUSED:
            return "refused"
        if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return "reset"
        if code == errno.ETIMEDOUT:
            return "timeout"
        return errno.errorcode.get(code, "oserror").lower() if code else "oserror"
    return type(exc).__name__


def _pattern(size: int, alphabet: bytes) -> list[Any]:
    """PHASES payloads of ``size`` bytes, each a window of a repeating ``alphabet``."""
    reps = (size + PHASES) // len(alphabet) + 2
    base = (alphabet * reps)[: size + PHASES]
    if size <= 64 * 1024:
        return [base[i : i + size] for i in range(PHASES)]
    view = memoryview(base)
    return [view[i : i + size] for i in range(PHASES)]


class Echo:
    name = "echo"
    per_request_connection = False

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError("--size must be at least 1 byte")
        self.size = size
        self.payloads = _pattern(size, bytes(range(256)))

    def describe(self) -> str:
        return f"echo {self.size} B"

    def request(self, seq: int) -> Any:
        return self.payloads[seq % PHASES]

    def read_response(self, stream: Stream, seq: int) -> None:
        try:
            got = stream.read_exactly(self.size)
        except IncompleteRead as exc:
            raise ClosedEarly(f"closed after {len(exc.partial)} of {self.size} echoed bytes") from None
        if got != self.payloads[seq % PHASES]:
            raise BadResponse(f"echo of request {seq} differs from what was sent")


class Churn(Echo):
    name = "churn"
    per_request_connection = True

    def describe(self) -> str:
        return f"churn: connect, echo {self.size} B, close"


class Line:
    name = "line"
    per_request_connection = False

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

    def read_response(self, stream: Stream, seq: int) -> None:
        got = stream.readline(self.limit)
        if not got.endswith(b"\n"):
            raise ClosedEarly(f"closed after {len(got)} bytes of a line")
        expect = self.expect
        if expect == "any":
            return
        want = self.lines[seq % len(self.lines)] if expect == "echo" else expect
        if got != want:
            raise BadResponse(f"line {got[:60]!r} is not {want[:60]!r}")


class Http:
    name = "http"

    def __init__(
        self,
        host: str,
        port: int,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        keepalive: bool = True,
    ) -> None:
        self.method = method.upper()
        self.path = path
        self.keepalive = keepalive
        self.per_request_connection = not keepalive
        names = {k.lower() for k, _ in headers or ()}
        lines = [f"{self.method} {path} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"host: {host}:{port}")
        lines += [f"{k}: {v}" for k, v in headers or ()]
        if (body or self.method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
            lines.append(f"content-length: {len(body)}")
        if not keepalive and "connection" not in names:
            lines.append("connection: close")
        self.head_only = self.method == "HEAD"
        self.bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.statuses: dict[int, int] = {}
        self.heads: dict[bytes, tuple[int, int | None, bool, bool]] = {}

    def describe(self) -> str:
        return f"http {self.method} {self.path}" + ("" if self.keepalive else " (connection: close)")

    def request(self, seq: int) -> bytes:
        return self.bytes

    def read_response(self, stream: Stream, seq: int) -> None:
        heads = self.heads
        while True:
            try:
                head = stream.read_until(b"\r\n\r\n", HEAD_LIMIT)
            except IncompleteRead as exc:
                raise ClosedEarly(f"closed after {len(exc.partial)} bytes of a response head") from None
            parsed = heads.get(head)
            if parsed is None:
                parsed = self._parse_head(head)
                if len(heads) < HEAD_CACHE:  # a server answers with few distinct heads
                    heads[head] = parsed
            status, length, chunked, close = parsed
            if status >= 200:
                break  # 1xx: an interim answer, the real one follows
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        if not (self.head_only or status in (204, 304)):
            if chunked:
                self._read_chunked(stream)
            elif length is not None:
                self._body(stream, length)
            else:
                while stream.read():  # delimited by the close
                    pass
                close = True
        if not 200 <= status < 300:
            raise BadStatus(status)
        if close and self.keepalive:
            raise ClosedEarly("the server closes the connection after the response (no keep-alive)")

    @staticmethod
    def _body(stream: Stream, n: int) -> None:
        try:
            stream.read_exactly(n)
        except IncompleteRead as exc:
            raise ClosedEarly(f"closed after {len(exc.partial)} of {n} body bytes") from None

    @staticmethod
    def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        length = None
        chunked = False
        close = parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadResponse(f"bad header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit():
                    raise BadResponse(f"bad content-length {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
            elif name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens:
                    close = False
        return status, length, chunked, close

    def _read_chunked(self, stream: Stream) -> None:
        while True:
            try:
                size_line = stream.read_until(b"\r\n", HEAD_LIMIT)
            except IncompleteRead:
                raise ClosedEarly("closed inside a chunked body") from None
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                while True:  # trailer fields, up to the empty line
                    try:
                        if stream.read_until(b"\r\n", HEAD_LIMIT) == b"\r\n":
                            return
                    except IncompleteRead:
                        raise ClosedEarly("closed inside a chunked trailer") from None
            self._body(stream, size + 2)


def make_workload(cfg: Any) -> Any:
    """The workload object for a :class:`load.Config`."""
    if cfg.workload == "echo":
        return Echo(cfg.size)
    if cfg.workload == "churn":
        return Churn(cfg.size)
    if cfg.workload == "line":
        line = cfg.line.encode() if cfg.line is not None else None
        return Line(cfg.size, line, cfg.expect)
    if cfg.workload == "http":
        body = cfg.body.encode() if isinstance(cfg.body, str) else cfg.body
        return Http(cfg.host, cfg.port, cfg.method, cfg.path, list(cfg.headers), body, cfg.keepalive)
    raise ValueError(f"unknown workload {cfg.workload!r}: one of {', '.join(WORKLOADS)}")

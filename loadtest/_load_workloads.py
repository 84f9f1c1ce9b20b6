"""The workloads of ``loadtest/load.py``: what one request is and how its answer is checked.

A workload builds the bytes of request ``seq`` (``request``) and parses one answer from the
bytes received so far (``parse(buf, seq, eof)``): the length of the answer at the start of
``buf`` once it is all there (checked: one of the exceptions below when it is wrong), or
None while more bytes are needed (at end of stream, ``eof``, a missing part is
:class:`ClosedEarly` instead).  Parsing from a buffer, not reading from a stream, lets the
engine run an exchange from a readiness callback as well as from a fiber.
``per_request_connection`` says whether every request opens its own connection (churn,
HTTP without keep-alive).

echo   ``size`` bytes that differ from one request to the next (a sliding window over a
       pattern of 251 distinct phases, a prime, so a stale or reordered echo does not match);
       every echoed byte is compared.
line   one line of ``size`` bytes (newline included); the answer is one line that must equal
       the request (``expect="echo"``), any line (``expect="any"``), or given bytes.
http   an HTTP/1.1 request (method, path, header fields, body); the answer is read by its
       framing (content-length, chunked, or up to the close; none for HEAD, 1xx, 204, 304)
       and must be 2xx.  ``keepalive=False`` sends ``connection: close`` and opens a
       connection per request.  By default the request is wrk's: ``GET PATH HTTP/1.1`` and a
       ``Host`` field, nothing else.
churn  connect, one echo exchange of ``size`` bytes, close.
"""

from __future__ import annotations

import errno
from typing import Any

from fibernet.net.streams import IncompleteRead, LimitOverrun

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
            lines.append(f"Host: {host}:{port}")  # as wrk writes it
        lines += [f"{k}: {v}" for k, v in headers or ()]
        if (body or self.method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
            lines.append(f"content-length: {len(body)}")
        if not keepalive and "connection" not in names:
            lines.append("connection: close")
        self.head_only = self.method == "HEAD"
        self.bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.statuses: dict[int, int] = {}
        self.heads: dict[bytes, tuple[int, int | None, bool, bool]] = {}
        self.fast: tuple[bytes, int, int] | None = None
        self.last_head = b""  # the head parsed last and what it says: most answers repeat it
        self.last_parsed: tuple[int, int | None, bool, bool] = (0, None, False, False)

    def describe(self) -> str:
        return f"http {self.method} {self.path}" + ("" if self.keepalive else " (connection: close)")

    def request(self, seq: int) -> bytes:
        return self.bytes

    def parse(self, buf: bytearray, seq: int, eof: bool) -> int | None:
        fast = self.fast  # the last answer, if plain: (its head, its length, its status)
        if fast is not None and len(buf) >= fast[1] and buf.startswith(fast[0]):
            self.statuses[fast[2]] += 1
            return fast[1]
        self.fast = None
        pos = 0
        while True:
            last = self.last_head
            if last and buf.startswith(last, pos):  # the head of the answer before: no search
                end = pos + len(last)
                parsed = self.last_parsed
            else:
                i = buf.find(b"\r\n\r\n", pos)
                if i < 0 or i + 4 - pos > HEAD_LIMIT:
                    if len(buf) - pos >= HEAD_LIMIT:
                        raise BadResponse(f"no end of the response head within {HEAD_LIMIT} bytes")
                    if eof:
                        raise ClosedEarly(f"closed after {len(buf) - pos} bytes of a response head")
                    return None
                end = i + 4
                parsed = self._head(bytes(buf[pos:end]))
            status, length, chunked, close = parsed
            pos = end
            if status >= 200:
                break  # 1xx: an interim answer, the real one follows
        if self.head_only or status in (204, 304):
            total = pos
        elif chunked:
            total = self._chunked_end(buf, pos, eof)
            if total is None:
                return None
        elif length is not None:
            total = pos + length
            if len(buf) < total:
                if eof:
                    raise ClosedEarly(f"closed after {len(buf) - pos} of {length} body bytes")
                return None
        else:  # delimited by the close
            if not eof:
                return None
            total = len(buf)
            close = True
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            raise BadStatus(status)
        if close and self.keepalive:
            raise ClosedEarly("the server closes the connection after the response (no keep-alive)")
        if length is not None and not chunked and total == end + length and end == len(self.last_head):
            # a plain answer (2xx, one head, content-length, kept): the next one that starts
            # with the same head is taken by its length alone
            self.fast = (self.last_head, total, status)
        return total

    def _head(self, head: bytes) -> tuple[int, int | None, bool, bool]:
        heads = self.heads
        parsed = heads.get(head)
        if parsed is None:
            parsed = self._parse_head(head)
            if len(heads) >= HEAD_CACHE:  # a Date field makes a new head every second
                heads.clear()
            heads[head] = parsed
        self.last_head, self.last_parsed = head, parsed
        return parsed

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

    @staticmethod
    def _chunked_end(buf: bytearray, pos: int, eof: bool) -> int | None:
        """Where a chunked body that starts at ``pos`` ends (trailer included), or None."""
        while True:
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            size_line = bytes(buf[pos:i])
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_line[:40]!r}") from None
            pos = i + 2
            if size == 0:
                while True:  # trailer fields, up to the empty line
                    i = buf.find(b"\r\n", pos)
                    if i < 0:
                        break
                    if i == pos:
                        return pos + 2
                    pos = i + 2
                break
            pos += size + 2
            if len(buf) < pos:
                break
            if buf[pos - 2 : pos] != b"\r\n":
                raise BadResponse("a chunk does not end with CRLF")
        if len(buf) - pos >= HEAD_LIMIT:
            raise BadResponse(f"no end of a chunk line within {HEAD_LIMIT} bytes")
        if eof:
            raise ClosedEarly("closed inside a chunked body")
        return None


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

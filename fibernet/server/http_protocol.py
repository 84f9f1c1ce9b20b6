"""HTTP/1.1 server protocol with no I/O: bytes in, events out (h11's shape, httptools' parser).

``ServerProtocol.feed(data)`` parses and queues events; ``next_event()`` hands them out:

- ``RequestHead``: a request line and header fields, validated;
- ``bytes``: a piece of the body;
- ``END``: the request is complete;
- ``HttpError``: the request is bad; answer ``error.status`` and close.  Nothing after it is
  parsed, so the bytes of a rejected request are never read as the next one.

httptools (llhttp) rejects most malformed input by itself but enforces no limit: a 1 MB
header, 10,000 headers and a 70 KB URL all parse.  So the limits are enforced here, while the
bytes arrive: the request line (414), the number of header fields and the whole head (431),
the body (413), chunk extensions and trailers (400).  On top of llhttp: a missing or
repeated Host on HTTP/1.1 (400), a Transfer-Encoding other than chunked alone (501; no
other coding is decoded), chunked on HTTP/1.0 (400), Content-Length with Transfer-Encoding
(400), a version other than 1.0 and 1.1 (505); trailers are never merged into the header
fields; an upgrade (or CONNECT) that fibernet does not handle is reported and nothing after
it is parsed.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools

from fibernet.http import Headers, Response, reason_phrase


@dataclass(frozen=True)
class HttpLimits:
    max_request_line: int = 8190
    max_header_count: int = 100
    max_head_size: int = 16 * 1024
    max_body_size: int = 1024 * 1024
    max_chunk_overhead: int = 1024  # chunk-size line with extensions, per chunk; and trailers
    max_drain: int = 64 * 1024  # an unread body up to this is drained; a larger one closes
    head_timeout: float = 10.0  # absolute, from the head's first byte (408 and close)
    body_timeout: float = 30.0  # inactivity while reading a body
    keepalive_timeout: float = 5.0  # idle between requests (closed silently)
    send_timeout: float = 30.0  # inactivity while the client does not read

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")


class HttpError(Exception):
    """A request fibernet answers with ``status`` and then closes the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {reason_phrase(status)}: {detail}")
        self.status = status
        self.detail = detail


class _End:
    __repr__ = lambda self: "END"  # noqa: E731


END: Any = _End()


class RequestHead:
    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "keep_alive",
        "chunked",
        "content_length",
        "expect_continue",
        "upgrade",
    )

    def __init__(self, method: str, target: str, version: str, headers: Headers) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.expect_continue = False
        self.upgrade = False

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target} HTTP/{self.version}>"


class _Reject(Exception):
    """Raised inside a parser callback to stop llhttp; the real error is kept aside."""


_IDLE, _HEAD, _BODY, _DEAD = range(4)


class ServerProtocol:
    """One connection's parser state.  Not thread-safe; one fiber owns it."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[Any] = deque()
        self._state = _IDLE
        self._error: HttpError | None = None
        self._url = bytearray()
        self._fields: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._in_request_line = False
        self._body_bytes = 0
        self._body_overhead = 0
        self._chunks = 0
        self._chunked = False
        self._trailer_bytes = 0

    # -- the public face ---------------------------------------------------------------

    @property
    def in_head(self) -> bool:
        """True once a request's first byte has come and until its head is complete."""
        return self._state == _HEAD

    @property
    def dead(self) -> bool:
        return self._state == _DEAD

    def next_event(self) -> Any:
        """The next event, or None if more bytes are needed."""
        return self._events.popleft() if self._events else None

    def feed(self, data: bytes) -> None:
        """Parse ``data``; b"" means the client closed its side."""
        if self._state == _DEAD:
            return
        if not data:
            if self._state in (_HEAD, _BODY):
                self._fail(HttpError(400, "connection closed in the middle of a request"))
            else:
                self._state = _DEAD
            return
        if self._state in (_IDLE, _HEAD):
            room = self.limits.max_head_size - self._head_bytes
            if len(data) > room:
                # Feed only what the head may still take: if it is not complete then, it is
                # too large, whatever follows.  (A further head that starts in the same read
                # is counted from there on.)
                self._parse(data[:room])
                if self._state == _HEAD:
                    if self._in_request_line:
                        self._fail(HttpError(414, f"request line over {self.limits.max_request_line} bytes"))
                    else:
                        self._fail(HttpError(431, f"request head over {self.limits.max_head_size} bytes"))
                    return
                self.feed(data[room:])
                return
        self._parse(data)

    # -- parsing ------------------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        if not data or self._state == _DEAD:
            return
        if self._state in (_IDLE, _HEAD):
            self._head_bytes += len(data)  # an upper bound: corrected at headers complete
        elif self._state == _BODY and self._chunked:
            self._body_overhead += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._state = _DEAD  # the head (marked upgrade) is queued; nothing more is parsed
        except httptools.HttpParserCallbackError:
            self._fail(self._error or HttpError(400, "bad request"))
        except httptools.HttpParserError as exc:
            text = str(exc)
            if "Transfer-Encoding" in text and "Content-Length" not in text:
                self._fail(HttpError(501, f"unsupported transfer coding ({text})"))
            elif "Invalid HTTP version" in text:
                self._fail(HttpError(505, text))
            else:
                self._fail(HttpError(400, text or "malformed request"))
        else:
            if self._state == _BODY and self._chunked:
                allowed = self.limits.max_chunk_overhead * (self._chunks + 1)
                if self._body_overhead - self._body_bytes > allowed:
                    self._fail(HttpError(400, "chunk extensions or trailers too long"))

    def _fail(self, error: HttpError) -> None:
        if self._state != _DEAD:
            self._state = _DEAD
            self._events.append(error)

    def _reject(self, status: int, detail: str) -> None:
        self._error = HttpError(status, detail)
        raise _Reject()

    # -- llhttp callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._state = _HEAD
        self._in_request_line = True
        self._url.clear()
        self._fields = []
        self._body_bytes = 0
        self._body_overhead = 0
        self._chunks = 0
        self._chunked = False
        self._trailer_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            self._reject(414, f"request target over {self.limits.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._in_request_line = False
        if self._state == _BODY:  # a trailer field: counted, never merged into the headers
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > self.limits.max_chunk_overhead:
                self._reject(400, f"trailers over {self.limits.max_chunk_overhead} bytes")
            return
        if len(self._fields) >= self.limits.max_header_count:
            self._reject(431, f"more than {self.limits.max_header_count} header fields")
        self._fields.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_request_line = False
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._reject(505, f"HTTP/{version} is not supported")
        fields = self._fields
        head = RequestHead(
            parser.get_method().decode("ascii"),
            self._url.decode("latin-1"),
            version,
            Headers._trusted(fields),
        )
        head.keep_alive = parser.should_keep_alive()
        # One pass over the fields for the few that frame or route the request.
        hosts = 0
        codings: list[str] = []
        length = expect = None
        for name, value in fields:
            if name == "host":
                hosts += 1
            elif name == "transfer-encoding":
                codings += [c.strip().lower() for c in value.split(",")]
            elif name == "content-length":
                length = value
            elif name == "expect":
                expect = value
        if hosts != 1 and (hosts or version == "1.1"):
            if hosts:
                self._reject(400, "more than one Host header")
            self._reject(400, "HTTP/1.1 needs exactly one Host header: missing Host header")
        if codings:
            if codings != ["chunked"]:  # no other coding is decoded (RFC 9112 6.1: 501)
                self._reject(501, f"unsupported transfer coding {', '.join(codings)!r}")
            if version == "1.0":
                self._reject(400, "chunked transfer coding on HTTP/1.0")
            head.chunked = True
        if length is not None:
            head.content_length = int(length)  # llhttp validated it (digits only, not repeated)
            if head.content_length > self.limits.max_body_size:
                self._reject(
                    413, f"body of {head.content_length} bytes over the limit of {self.limits.max_body_size}"
                )
        if expect is not None:
            if expect.lower() != "100-continue":
                self._reject(417, f"unsupported expectation {expect!r}")
            head.expect_continue = version == "1.1"
        head.upgrade = parser.should_upgrade() or head.method == "CONNECT"
        self._chunked = head.chunked
        self._state = _BODY
        self._head_bytes = 0
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_size:
            self._reject(413, f"body over the limit of {self.limits.max_body_size} bytes")
        self._events.append(bytes(body))

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_message_complete(self) -> None:
        self._state = _IDLE
        self._events.append(END)


# -- responses -----------------------------------------------------------------------------

_BAD_FIELD_CHARS = ("\r", "\n", "\0")
_date_cache: list = [0, b""]


def http_date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True).encode()
    return _date_cache[1]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "date"))


def check_field(name: str, value: str) -> None:
    """Refuse a response header that would split the response (CR, LF or NUL) or is no token."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid response header name {name!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"invalid response header value for {name!r}: CR, LF and NUL are not allowed")


def _head_prefix(
    status: int, headers: Headers, version: str, keep_alive: bool, length: int | None, chunked: bool
) -> bytes:
    lines = [f"HTTP/{'1.1' if version == '1.1' else '1.0'} {status} {reason_phrase(status)}"]
    for name, value in headers:
        if name in _FRAMING:
            continue
        check_field(name, value)
        lines.append(f"{name}: {value}")
    if chunked:
        lines.append("transfer-encoding: chunked")
    elif length is not None:
        lines.append(f"content-length: {length}")
    if not keep_alive:
        lines.append("connection: close")
    elif version != "1.1":
        lines.append("connection: keep-alive")
    return ("\r\n".join(lines) + "\r\ndate: ").encode("latin-1")


def response_head(
    status: int, headers: Headers, version: str, keep_alive: bool, length: int | None, chunked: bool
) -> bytes:
    """The status line and header fields of a response, with framing and connection fields."""
    return _head_prefix(status, headers, version, keep_alive, length, chunked) + http_date() + b"\r\n\r\n"


def head_of(response: Response, version: str, keep_alive: bool, length: int | None, chunked: bool) -> bytes:
    """``response_head`` for a Response, remembered on it: an app that returns the same
    Response object again (a constant) pays for its head once, not per request."""
    headers = response.headers
    key = (response.status, id(headers), len(headers), version, keep_alive, length, chunked)
    cached = response._wire
    if cached is not None and cached[0] == key:
        prefix = cached[1]
    else:
        prefix = _head_prefix(response.status, headers, version, keep_alive, length, chunked)
        response._wire = (key, prefix)
    return prefix + http_date() + b"\r\n\r\n"


def error_response(error: HttpError, version: str = "1.1") -> bytes:
    body = f"{error.status} {reason_phrase(error.status)}: {error.detail}\n".encode("latin-1", "replace")
    head = response_head(
        error.status, Headers({"content-type": "text/plain; charset=utf-8"}), version, False, len(body), False
    )
    return head + body

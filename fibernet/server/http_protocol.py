"""HTTP/1.1 server protocol with no I/O: bytes in, events out (h11's shape, httptools' parser).

``ServerProtocol.feed(data)`` parses and queues events; ``next_event()`` hands them out:

- ``RequestHead``: a request line and header fields, validated: the
  :class:`~fibernet.http.Request` the app is given (header fields decoded when first read);
- ``bytes``: a piece of the body;
- ``END``: the request's body is complete (a request without a body is its head alone:
  no ``END`` follows it);
- ``HttpError``: the request is bad; answer ``error.status`` and close.  Nothing after it is
  parsed, so the bytes of a rejected request are never read as the next one.

httptools (llhttp) rejects most malformed input by itself but enforces no limit: a 1 MB
header, 10,000 headers and a 70 KB URL all parse.  So the limits are enforced here, while the
bytes arrive: the request line (414), the number of header fields and the whole head (431),
the body (413), chunk extensions and trailers (400), one header field (431), empty lines
before a request (400).  On top of llhttp: a missing, repeated or malformed Host (400), a
Transfer-Encoding other than chunked alone (501; no other coding is decoded), chunked on
HTTP/1.0 (400), Content-Length with Transfer-Encoding (400), a version other than 1.0 and
1.1 (505), a request line with no version (400, at once), an RTSP or ICE request line
(400), ``*`` as the target of any method but OPTIONS (400), an unknown but well-formed
method (501); trailers are never merged into the header fields.  An offer to upgrade
(``Upgrade: h2c``, ``websocket``) is passed on (``head.upgrade``) and otherwise ignored: the
bytes after the head are parsed as HTTP/1.1 (RFC 9110 7.8).  CONNECT is reported and
nothing after it is parsed.

``request.path`` is percent-decoded (UTF-8; ``%2F`` becomes ``/``, as in Starlette and
uvicorn); ``request.raw_path`` keeps the path as it came.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools

from fibernet.http import Headers, Request, reason_phrase
from fibernet.server.proxy import FORWARDED_FIELDS as _PROXY_FIELDS


@dataclass(frozen=True)
class HttpLimits:
    max_request_line: int = 8190
    max_header_count: int = 100
    max_head_size: int = 16 * 1024
    max_body_size: int = 1024 * 1024
    max_field_size: int = 8192  # one header field, name and value (431), as nginx and gunicorn
    max_chunk_overhead: int = 1024  # chunk-size line with extensions, per chunk; and trailers
    max_drain: int = 64 * 1024  # an unread body up to this is drained; a larger one closes
    head_timeout: float = 10.0  # absolute, from the head's first byte (408 and close)
    body_timeout: float = 30.0  # inactivity while reading a body
    keepalive_timeout: float = 5.0  # idle between requests (closed silently)
    send_timeout: float = 30.0  # inactivity while the client does not read
    # The least average rate of a request body once its grace period is over (408), counted
    # only while the server waits for body bytes (as Kestrel's MinRequestBodyDataRate); 0: none.
    min_body_rate: float = 240.0  # bytes per second
    body_rate_grace: float = 5.0  # seconds
    # An idle keep-alive connection waits this long in its fiber, then parks with none (its
    # fiber ends; the server resumes it when bytes come): a busy connection keeps its fiber,
    # an idle one costs no greenlet.  0: park at once.  It parks at once, too, while its
    # scheduler runs more than park_over fibers (many connections: memory comes first).
    park_after: float = 1.0
    park_over: int = 128

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")
            if not value and name not in ("min_body_rate", "park_after", "park_over"):
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


# (The compiled copy takes its base from fibernet/_c_http.pxd: a name it cimports cannot be
# assigned by an import there, hence this way of naming it.)
locals()["_Request"] = Request


class RequestHead(_Request):  # noqa: F821
    """A parsed request head: the :class:`~fibernet.http.Request` the app is given (the
    connection adds the client and the body source), plus how the request is framed."""

    __slots__ = ("keep_alive", "chunked", "content_length", "expect_continue", "upgrade", "_proxied")

    def __init__(self, method: str, target: str, version: str, headers: Headers) -> None:
        super().__init__(method, target, headers, version)
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.expect_continue = False
        self.upgrade = False
        self._proxied = False  # it has a field the proxy policy reads

    @property
    def version(self) -> str:
        return self.http_version


class _Reject(Exception):
    """Raised inside a parser callback to stop llhttp; the real error is kept aside."""


# Parser states.  _BLANK: only empty lines have come since the last request (RFC 9112 2.2
# lets a server skip some); _HEAD: a request's first byte has come and its head is not
# complete (in the request line while it has no header field yet).
_IDLE, _BLANK, _HEAD, _BODY, _DEAD = range(5)
_MAX_BLANK = 64  # bytes of empty lines before a request (32 CRLF); more is refused (400)
_TOO_MANY_BLANK = f"over {_MAX_BLANK} bytes of empty lines before a request"
# The header fields that frame or route a request: looked at while the head is parsed.
_SPECIAL = frozenset(
    (b"host", b"transfer-encoding", b"content-length", b"expect", b"connection", b"proxy-connection")
) | _PROXY_FIELDS
# A Host value: uri-host [":" port] (RFC 9110 7.2, RFC 3986 3.2.2), or empty.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?")
# A method llhttp does not know but that is a token (upper case, as nginx and gunicorn
# require), at the start of a line: 501, where any other method is a bad request (400).
_METHOD_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Z]{1,32}")
_LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
    b"SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY PRI".split()
)
_new = object.__new__
# The methods as the app sees them (str), by llhttp's bytes: no decode per request.
_METHOD_NAMES = {name: name.decode("ascii") for name in _LLHTTP_METHODS}


class ServerProtocol:
    """One connection's parser state.  Not thread-safe; one fiber owns it."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits = limits or HttpLimits()
        self._max_head = limits.max_head_size
        self._max_line = limits.max_request_line
        self._max_fields = limits.max_header_count
        self._max_field = limits.max_field_size
        self._max_body = limits.max_body_size
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[Any] = deque()
        self._state = _IDLE
        self._error: HttpError | None = None
        self._url = b""
        # url, target, path, query, raw path, where the version is (of the last target: a
        # keep-alive client often asks for the same one again)
        self._last_target: tuple[bytes, str, str, str, str, int] = (b"", "", "", "", "", 0)
        self._good_host = b""  # the last Host value found valid
        self._data = b""  # the bytes being parsed (where a request line is looked at)
        self._pieces: list[bytes] = []  # the bytes of a head that came in more than one read
        self._lines_of = b""  # the bytes, and where in them the last request line looked at ends
        self._line_end = 0
        self._body_head = False  # the next head is the stand-in that frames an upgrade's body
        self._proxied = False  # the head has an X-Forwarded-For, X-Forwarded-Proto or Forwarded field
        self._ends = False  # the message being parsed has a body: END follows it
        self._fields: list[tuple[bytes, bytes]] = []
        self._hosts = 0
        self._framing = False  # a field other than Host that _frame must look at
        self._connection = False  # a Connection field (keep-alive then says nothing of the version)
        self._codings: list[str] | None = None
        self._te_tab = False  # a Transfer-Encoding value with a tab in it (see _reframe)
        self._relay = False  # llhttp reads the body of such a head to EOF: it is reframed
        self._rest: bytes | None = None  # the bytes after such a head, to parse anew
        self._held: bytes | None = None  # the bytes after an upgrade offer (see take_held)
        self._length: bytes | None = None
        self._expect: bytes | None = None
        self._head_bytes = 0
        self._body_bytes = 0
        self._body_overhead = 0
        self._chunks = 0
        self._chunked = False
        self._trailer_bytes = 0

    # -- the public face ---------------------------------------------------------------

    @property
    def in_head(self) -> bool:
        """True once a request's first byte (or an empty line) has come and until its head
        is complete: the head deadline runs."""
        return _BLANK <= self._state <= _HEAD

    @property
    def dead(self) -> bool:
        return self._state == _DEAD

    def clean(self) -> bool:
        """Between requests with nothing kept of them (then another connection may take
        this parser); the bytes last parsed are let go."""
        if (
            self._state != _IDLE
            or self._events
            or self._pieces
            or self._body_head
            or self._head_bytes
            or self._held is not None
        ):
            return False
        self._data = self._lines_of = b""
        self._line_end = 0
        return True

    def take_held(self) -> bytes:
        """The bytes that came after an upgrade offer with no body, held until the app has
        decided: the upgraded protocol's if it takes the connection (a client may send
        WebSocket frames before the 101 comes)."""
        held, self._held = self._held, None
        return held or b""

    def release_held(self) -> None:
        """The app did not take the connection: parse the held bytes as HTTP/1.1."""
        if self._held is not None:
            self._parse(self.take_held())

    def next_event(self) -> Any:
        """The next event, or None if more bytes are needed."""
        return self._events.popleft() if self._events else None

    def feed(self, data: bytes) -> None:
        """Parse ``data``; b"" means the client closed its side."""
        state = self._state
        if state < _BODY:  # between requests or in a head
            n = len(data)
            if 0 < n <= self._max_head - self._head_bytes:  # the common case
                if state and state == _HEAD:  # a head in pieces: its request line is kept
                    self._keep_piece(data)
                self._head_bytes += n  # an upper bound: corrected at headers complete
                self._data = data
                try:
                    self._parser.feed_data(data)
                except Exception as exc:
                    self._parse_error(exc)
                else:
                    if self._head_bytes:  # no head was complete: empty lines or a head begun
                        self._unfinished()
                    elif self._chunked and self._state == _BODY:
                        self._check_overhead()
                return
            if not n:
                if state < _HEAD:
                    self._state = _DEAD
                else:
                    self._fail(HttpError(400, "connection closed in the middle of a request"))
                return
            # Feed only what the head may still take: if it is not complete then, it is
            # too large, whatever follows.  (A further head that starts in the same read
            # is counted from there on.)
            while data and self._state < _BODY:
                room = self._max_head - self._head_bytes
                self._parse(data[:room])
                data = data[room:]
                if self._state == _HEAD:
                    if not self._fields:  # still in the request line
                        self._fail(HttpError(414, f"request line over {self._max_line} bytes"))
                    else:
                        self._fail(HttpError(431, f"request head over {self._max_head} bytes"))
                    return
            self._parse(data)
            return
        if state == _DEAD:
            return
        if not data:
            self._fail(HttpError(400, "connection closed in the middle of a request"))
            return
        self._parse(data)

    # -- parsing ------------------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        while data:  # (a loop, not a recursion, over the heads that offer an upgrade)
            state = self._state
            if state == _DEAD:
                return
            if state < _BODY:
                if state == _HEAD:
                    self._keep_piece(data)
                self._head_bytes += len(data)  # an upper bound: corrected at headers complete
            elif self._chunked:
                self._body_overhead += len(data)
            self._data = data  # (a body's read too: a head may start in it)
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                data = self._upgrade(exc.args[0])
                continue
            except Exception as exc:
                self._parse_error(exc)
                return
            if self._head_bytes:
                self._unfinished()
            elif self._chunked and self._state == _BODY:
                self._check_overhead()
            return

    def _keep_piece(self, data: bytes) -> None:
        if not self._pieces:
            self._pieces.append(self._data)  # where the head began
        self._pieces.append(data)

    def _unfinished(self) -> None:
        """A read after which no head is complete (the first one of a read only).

        Only empty lines since the last head: they count against the head's deadline (the
        connection loop sees ``in_head``) and are bounded.  A head begun: a request line
        that ended with no version is refused now (llhttp would take it as HTTP/0.9 and
        wait for header fields)."""
        state = self._state
        if state < _HEAD:
            if self._head_bytes > _MAX_BLANK:
                self._fail(HttpError(400, _TOO_MANY_BLANK))
            else:
                self._state = _BLANK
            return
        if state != _HEAD or self._fields or not self._url or b"\n" not in self._data:
            return
        data = b"".join(self._pieces) if self._pieces else self._data
        line = self._parser.get_method() + b" " + self._url
        at = data.find(line)
        while at >= 0:
            end = at + len(line)
            if (at == 0 or data[at - 1] == 10) and data[end : end + 1] in (b"\r", b"\n"):
                self._fail(HttpError(400, "request line without an HTTP version"))
                return
            at = data.find(line, at + 1)

    def _parse_error(self, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            self._parse(self._upgrade(exc.args[0]))
        elif isinstance(exc, httptools.HttpParserCallbackError):
            if self._rest is not None:
                self._parse(self._reframe())
                return
            self._fail(self._error or HttpError(400, "bad request"))
        elif isinstance(exc, httptools.HttpParserError):
            text = str(exc)
            if "Transfer-Encoding" in text and "Content-Length" not in text:
                events = self._events
                if events and events[-1].__class__ is RequestHead:
                    events.pop()  # refused by llhttp once the head was complete: never served
                self._fail(HttpError(501, f"unsupported transfer coding ({text})"))
            elif "Invalid HTTP version" in text:
                self._fail(HttpError(505, text))
            elif isinstance(exc, httptools.HttpParserInvalidMethodError) or "Invalid method for" in text:
                method = self._unknown_method()
                if method is None:
                    self._fail(HttpError(400, text))
                else:
                    self._fail(HttpError(501, f"method {method!r} not implemented"))
            else:
                self._fail(HttpError(400, text or "malformed request"))
        else:
            raise exc

    def _head_data(self) -> bytes:
        """The bytes of the request head being parsed (and maybe some before and after it)."""
        pieces = self._pieces
        if pieces:
            self._pieces = []
            return b"".join(pieces)
        return self._data

    def _unknown_method(self) -> str | None:
        """The method llhttp refused if it is a well-formed token: at the start of a line,
        followed by a space (a method cut off by the end of the bytes so far is refused)."""
        for line in self._head_data().split(b"\n"):
            method, space, _ = line.lstrip(b"\r").partition(b" ")
            if space and method not in _LLHTTP_METHODS and _METHOD_TOKEN.fullmatch(method):
                return method.decode("ascii")
        return None

    def _check_head(self, method: bytes, url: bytes) -> None:
        """The checks of a head that is not the first one of a read, or not small."""
        limit = self._max_field
        for name, value in self._fields:
            if len(name) + len(value) > limit:
                self._reject(431, f"header field {name[:64].decode('latin-1')!r} over {limit} bytes")
        self._check_protocol(method, url)

    def _check_protocol(self, method: bytes, url: bytes) -> None:
        """llhttp takes RTSP/1.x and ICE/1.x request lines and tells no one: refuse them.
        The request line is the first line that starts with this method and target in
        the bytes of the head: from the start for the first head of a read (after empty
        lines: at most _MAX_BLANK bytes), else after the last request line looked at
        (pipelined requests come in order; the first one of a read was at its start).  A
        request pipelined right after a body need not start a line: if no line starts with
        it, the first place after the last request line is taken."""
        first = self._head_bytes  # (0 once a head was complete in this read)
        data = self._head_data()
        if first:
            start = 0
        else:
            start = self._line_end if self._lines_of is data else 1
        line = method + b" " + url + b" "
        at = anywhere = data.find(line, start)
        while at >= 0 and at and data[at - 1] != 10:  # (not at the start of a line)
            at = data.find(line, at + 1)
        if at < 0:
            if first or anywhere < 0:
                return
            at = anywhere
        if not data.startswith(b"HTTP/", at + len(line)):
            self._reject(400, "not an HTTP request line (RTSP or ICE?)")
        # (empty lines of earlier reads count too: every byte fed since the last head and
        # before these bytes was one)
        if first and first - len(data) + at > _MAX_BLANK and not data[:at].strip(b"\r\n"):
            self._reject(400, _TOO_MANY_BLANK)
        self._lines_of = data
        self._line_end = at + len(line)

    def _upgrade(self, offset: int) -> bytes:
        """llhttp stopped after a head that offers an upgrade (or is CONNECT): the bytes
        left to parse as HTTP/1.1."""
        events = self._events
        head = next((e for e in reversed(events) if e.__class__ is RequestHead), None)
        if head is None or head.method == "CONNECT":
            self._state = _DEAD  # reported (the connection loop answers 501); nothing more is parsed
            return b""
        # An offer fibernet does not take: parse on as HTTP/1.1.  llhttp took the head as the
        # whole message; a body is framed anew by a stand-in head (never reported).
        rest = self._data[offset:]
        self._head_bytes = 0
        if head._body is None:
            if events[-1] is END:
                events.pop()
            if head.chunked:
                self._stand_in(b"transfer-encoding: chunked")
            else:
                self._stand_in(b"content-length: %d" % head.content_length)
        elif rest:  # no body: what follows is held until the app has decided (take_held)
            self._held = rest
            return b""
        return rest

    def _stand_in(self, framing: bytes) -> None:
        """Frame the body of the head just reported by a stand-in head (never reported)."""
        self._body_head = True
        self._data = stand_in = b"POST / HTTP/1.1\r\nhost: a\r\n" + framing + b"\r\n\r\n"
        self._parser.feed_data(stand_in)

    def _reframe(self) -> bytes:
        """The bytes after a head whose Transfer-Encoding is ``chunked`` followed by a tab
        (optional whitespace, RFC 9110 5.6.3), framed anew.  llhttp refuses such a head once
        it is complete (nodejs/llhttp#876); fibernet reads the field as chunked alone, so
        on_headers_complete let llhttp read the body to EOF instead, and on_body stopped it
        at the first bytes after the head (llhttp gives them all in one piece).  A fresh
        parser takes a stand-in head that frames them as a chunked body (never reported, as
        for an ignored upgrade), then the bytes themselves."""
        rest, self._rest = self._rest or b"", None
        self._parser = httptools.HttpRequestParser(self)
        self._stand_in(b"transfer-encoding: chunked")
        self._head_bytes = 0
        return rest

    def _check_overhead(self) -> None:
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

    def _check_host(self, value: bytes) -> None:
        if not _HOST.fullmatch(value.rstrip(b" \t")):
            self._reject(400, f"invalid Host {value.decode('latin-1')!r}")
        self._good_host = value

    # -- llhttp callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._state = _HEAD  # (the rest is reset when the previous head completed)

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url  # the target came in pieces
        self._url = url
        if len(url) > self._max_line:
            self._reject(414, f"request target over {self._max_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._state == _BODY:  # a trailer field: counted, never merged into the headers
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > self.limits.max_chunk_overhead:
                self._reject(400, f"trailers over {self.limits.max_chunk_overhead} bytes")
            return
        fields = self._fields
        if len(fields) >= self._max_fields:
            self._reject(431, f"more than {self._max_fields} header fields")
        name = name.lower()
        fields.append((name, value))
        if name == b"host":  # (every request has one: tested first, it needs no hash)
            self._hosts += 1
            if value != self._good_host:
                self._check_host(value)
            return
        if name in _SPECIAL:
            if name == b"connection" or name == b"proxy-connection":  # (llhttp reads both)
                self._connection = True
                return
            if name in _PROXY_FIELDS:  # for the proxy policy (ForwardedPolicy.apply)
                self._proxied = True
                return
            self._framing = True
            if name == b"content-length":
                self._length = value
            elif name == b"expect":
                self._expect = value
            else:
                if b"\t" in value:
                    self._te_tab = True
                codings = [c.strip(" \t").lower() for c in value.decode("latin-1").split(",")]
                if self._codings is None:
                    self._codings = codings
                else:
                    self._codings += codings

    def on_headers_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        if keep_alive and not self._connection:
            # Of the versions llhttp accepts (0.9, 1.0, 1.1, 2.0), only 1.1 keeps a request
            # without a Connection field alive: no need to ask (get_http_version formats a
            # string; tests/http/test_corpus.py holds llhttp to this).
            version = "1.1"
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                if version == "0.9":
                    self._reject(400, "request line without an HTTP version")
                self._reject(505, f"HTTP/{version} is not supported")
        # The head is the app's Request: built here, field by field (no __init__ call).
        head = RequestHead.__new__(RequestHead)
        method_bytes = parser.get_method()
        method = _METHOD_NAMES.get(method_bytes)
        if method is None:
            method = method_bytes.decode("ascii")
        head.method = method
        url = self._url
        last = self._last_target
        if url != last[0]:  # (a keep-alive client often asks for the same target again)
            last = self._target(url, method_bytes)
        # The first head of a read that starts it and is no larger than a field may have
        # no field too large, and its protocol is where its request line starts it: HTTP/,
        # RTSP/ or ICE/ (llhttp says HTTP/ for all three: an H is HTTP).  Else both are
        # looked for (a head that came in pieces, a later head of a read: _head_bytes 0).
        head_bytes = self._head_bytes
        if (
            not head_bytes
            or head_bytes > self._max_field
            or self._pieces
            or self._data[len(method) + last[5]] != 72
        ):
            self._check_head(method_bytes, url)
        head.target = last[1]
        head.path = last[2]
        head.query = last[3]
        head.raw_path = last[4]
        head.http_version = version
        head._headers = None  # (made from the fields when first read: see Request.headers)
        head._fields = self._fields
        head.client = None
        head._body_source = None
        head._consumed = False
        head.keep_alive = keep_alive
        # (llhttp marks an upgrade only with a Connection field that names it, or CONNECT)
        head.upgrade = (self._connection and parser.should_upgrade()) or method == "CONNECT"
        head._proxied = self._proxied
        self._proxied = False
        self._state = _BODY
        self._url = b""
        self._fields = []
        self._head_bytes = 0
        self._connection = False
        if self._hosts == 1 and not self._framing:  # the common case: one Host, no body
            self._hosts = 0
            self._chunked = False
            head._body = b""
            head.chunked = False
            head.content_length = None
            head.expect_continue = False
            self._events.append(head)
            return
        if self._frame(head, version):
            self._events.append(head)
            if self._te_tab:
                self._te_tab = False
                if head.chunked:  # (else llhttp refuses it: 501, as fibernet would)
                    parser.set_dangerous_leniencies(lenient_transfer_encoding=True)
                    self._relay = True

    def _target(self, url: bytes, method: bytes) -> tuple[bytes, str, str, str, str, int]:
        """The target, its path (percent-decoded), query, raw path, and where the version
        is in a request line less the method's length."""
        target = url.decode("latin-1")
        if target == "*" and method != b"OPTIONS":
            self._reject(400, "only OPTIONS may have the target '*'")
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path) if "%" in raw_path else raw_path
        last = (url, target, path, query, raw_path, len(url) + 2)
        if target != "*":  # (never remembered: the method decides)
            self._last_target = last
        return last

    def _frame(self, head: RequestHead, version: str) -> bool:
        """Check the fields that frame or route the request (seen by on_header); False for
        the stand-in head that frames an ignored upgrade's body (not reported)."""
        hosts = self._hosts
        if hosts != 1 and (hosts or version == "1.1"):
            if hosts:
                self._reject(400, "more than one Host header")
            self._reject(400, "HTTP/1.1 needs exactly one Host header: missing Host header")
        head._body = b""
        head.chunked = False
        head.content_length = None
        head.expect_continue = False
        codings = self._codings
        if codings is not None:
            if codings != ["chunked"]:  # no other coding is decoded (RFC 9112 6.1: 501)
                self._reject(501, f"unsupported transfer coding {', '.join(codings)!r}")
            if version == "1.0":
                self._reject(400, "chunked transfer coding on HTTP/1.0")
            head.chunked = True
            head._body = None
        if self._length is not None:
            # llhttp validated it (digits only, not repeated)
            head.content_length = length = int(self._length)
            if length > self._max_body:
                self._reject(413, f"body of {length} bytes over the limit of {self._max_body}")
            if length:
                head._body = None
        if self._expect is not None:
            expect = self._expect.decode("latin-1").rstrip(" \t")
            if expect.lower() != "100-continue":
                self._reject(417, f"unsupported expectation {expect!r}")
            head.expect_continue = version == "1.1"
        self._chunked = head.chunked
        self._ends = head._body is None
        # Ready for the next head; the body counters start at zero.
        self._hosts = 0
        self._framing = False
        self._codings = self._length = self._expect = None
        self._body_bytes = self._body_overhead = self._chunks = self._trailer_bytes = 0
        if self._body_head:
            self._body_head = False
            return False
        return True

    def on_body(self, body: bytes) -> None:
        if self._relay:  # the bytes after a head llhttp would refuse: see _reframe
            self._relay = False
            self._rest = bytes(body)
            raise _Reject()
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            self._reject(413, f"body over the limit of {self._max_body} bytes")
        self._events.append(bytes(body))

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_message_complete(self) -> None:
        self._state = _IDLE
        if self._ends:  # (a request without a body needs no END: its head was all of it)
            self._ends = False
            self._events.append(END)


# -- responses -----------------------------------------------------------------------------

_BAD_FIELD_CHARS = ("\r", "\n", "\0")
# [from when, the Date header value, until when] (time.time()); shared by every thread (a
# race only makes two threads format the same second)
_DATE: list = [0.0, b"", 0.0]


def _next_date() -> None:
    second = int(time.time())
    _DATE[1] = email.utils.formatdate(second, usegmt=True).encode()
    # (floats: the connection loop compares them with time.time() as C doubles; after the
    # value: a reader that sees the new times sees it too)
    _DATE[0] = float(second)
    _DATE[2] = second + 1.0


def http_date() -> bytes:
    if not _DATE[0] <= time.time() < _DATE[2]:  # (the clock may be set back, too)
        _next_date()
    return _DATE[1]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "date"))


def check_field(name: str, value: str) -> None:
    """Refuse a response header that would split the response (CR, LF or NUL) or is no token."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid response header name {name!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"invalid response header value for {name!r}: CR, LF and NUL are not allowed")


# The wire form of the fields of a response, by the fields: most responses of an app carry
# the same few (bounded: forgotten all at once when full).
_FIELDS: dict[tuple, tuple[bytes, bool]] = {}
_FIELDS_MAX = 512
_FIELDS_MAX_BYTES = 2048  # (larger ones are not remembered)
_STATUS_LINES: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})  # HTTP/1.0, HTTP/1.1


def fields_block(fields: Iterable[tuple[str, str]]) -> tuple[bytes, bool]:
    """The header lines of a response's fields, each checked (:func:`check_field`; the
    framing fields are the server's and left out), and whether the first Connection field
    asks to close."""
    try:
        key: tuple | None = tuple(fields)
        known = _FIELDS.get(key)
    except TypeError:  # (an unhashable value: not remembered)
        key = known = None
    if known is not None:
        return known
    lines = []
    connection = None
    for name, value in key if key is not None else fields:
        if name in _FRAMING:
            if name == "connection" and connection is None:
                connection = value
            continue
        check_field(name, value)
        lines.append(f"{name}: {value}\r\n")
    known = ("".join(lines).encode("latin-1"), connection is not None and "close" in connection.lower())
    if key is not None and len(known[0]) <= _FIELDS_MAX_BYTES:
        if len(_FIELDS) >= _FIELDS_MAX:
            _FIELDS.clear()
        _FIELDS[key] = known
    return known


def encode_head(
    status: int, block: bytes, version: str, keep_alive: bool, length: int | None, chunked: bool, date: bytes
) -> bytes:
    """A response head: the status line, the lines ``block`` of :func:`fields_block`, the
    framing and connection fields, and the date."""
    http11 = version == "1.1"
    line = _STATUS_LINES[http11].get(status)
    if line is None:
        line = f"HTTP/1.{int(http11)} {int(status)} {reason_phrase(status)}\r\n".encode("latin-1")
        _STATUS_LINES[http11][status] = line
    if chunked:
        framing = b"transfer-encoding: chunked\r\n"
    elif length is not None:
        framing = b"content-length: %d\r\n" % length
    else:
        framing = b""
    if not keep_alive:
        framing += b"connection: close\r\n"
    elif not http11:
        framing += b"connection: keep-alive\r\n"
    return b"".join((line, block, framing, b"date: ", date, b"\r\n\r\n"))


def response_head(
    status: int,
    headers: Iterable[tuple[str, str]],
    version: str,
    keep_alive: bool,
    length: int | None,
    chunked: bool,
) -> bytes:
    """The status line and header fields of a response, with framing and connection fields."""
    return encode_head(status, fields_block(headers)[0], version, keep_alive, length, chunked, http_date())


def error_response(error: HttpError, version: str = "1.1") -> bytes:
    body = f"{error.status} {reason_phrase(error.status)}: {error.detail}\n".encode("latin-1", "replace")
    head = response_head(
        error.status, Headers({"content-type": "text/plain; charset=utf-8"}), version, False, len(body), False
    )
    return head + body


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see _accel).
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet.server._c_http_protocol")

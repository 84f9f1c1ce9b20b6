"""HTTP requests and responses as handlers see them: plain objects, no I/O.

An HTTP handler is ``app(request) -> Response``.  The connection loop that feeds it lives in
``fibernet.server.http``; the byte-level protocol in ``fibernet.server.http_protocol``.
"""

from __future__ import annotations

import collections.abc as _abc
import json as _json
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus as _HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from fibernet.errors import FibernetError

# Every registered status (http.HTTPStatus), with RFC 9110's newer phrases.
_REASONS = {status.value: status.phrase for status in _HTTPStatus}
_REASONS.update({413: "Content Too Large", 422: "Unprocessable Content"})


def reason_phrase(status: int) -> str:
    """The reason phrase of ``status``; "" for an unregistered one (RFC 9112 4 allows it)."""
    return _REASONS.get(status, "")


class BodyTooLarge(FibernetError):
    """The request body is larger than the server's limit (answered with 413)."""


class BadWebSocketUpgrade(FibernetError):
    """``accept_websocket()`` on a request that is not a valid WebSocket upgrade (answered
    with 400 unless the app catches it)."""


class WebSocketClosed(FibernetError):
    """The WebSocket is closed: ``code`` is the close code (1000 normal, 1001 going away,
    1006 cut without a close frame, 1009 message too big, ...), ``reason`` the peer's text."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


class Headers:
    """Case-insensitive, multi-valued header fields, in the order they came."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] | None = None) -> None:
        if items is None:
            self._items: list[tuple[str, str]] = []
        elif items.__class__ is dict or isinstance(items, _abc.Mapping):  # (dict: no ABC check)
            self._items = [(k.lower(), v if v.__class__ is str else str(v)) for k, v in items.items()]
        else:
            self._items = [(k.lower(), v if v.__class__ is str else str(v)) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        name = name.lower()
        for k, v in self._items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def add(self, name: str, value: str) -> None:
        self._items.append((name.lower(), str(value)))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


_new = object.__new__
_json_encode = _json.JSONEncoder(separators=(",", ":")).encode  # json.dumps(obj, separators=...)


class _WireHeaders(Headers):
    """:class:`Headers` over the parser's raw fields, decoded on first use (a value loses
    the whitespace after it, which llhttp keeps)."""

    __slots__ = ("_raw",)

    def __getattr__(self, name: str) -> Any:
        # Only reached while ``_items`` is unset (slots raise AttributeError then).
        if name != "_items":
            raise AttributeError(name)
        items = self._items = [(k.decode("latin-1"), v.decode("latin-1").rstrip(" \t")) for k, v in self._raw]
        return items


class Request:
    """An HTTP request.  The body is read on demand: :meth:`body` whole, :meth:`stream` in
    chunks; a body the handler does not read is drained by the server afterwards.

    ``target`` is the request target as sent; ``path`` its path, percent-decoded (UTF-8;
    ``%2F`` too becomes ``/``, as in Starlette and uvicorn), ``raw_path`` the path as sent
    (to tell ``/a%2Fb`` from ``/a/b``), and ``query`` the query string as sent."""

    __slots__ = (
        "method",
        "target",
        "path",
        "raw_path",
        "query",
        "http_version",
        "_headers",
        "_fields",
        "client",
        "scheme",
        "_body_source",
        "_body",
        "_consumed",
        "_websocket",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        http_version: str = "1.1",
        client: Any = None,
        body: bytes | Callable[[], bytes] = b"",
        scheme: str = "http",
    ) -> None:
        self.method = method
        self.target = target
        raw_path, _, query = target.partition("?")
        self.raw_path = raw_path
        self.path = unquote(raw_path) if "%" in raw_path else raw_path
        self.query = query
        self.http_version = http_version
        self._headers = headers
        self._fields: list[tuple[bytes, bytes]] = []  # (the parser's, when headers is None)
        self.client = client
        self.scheme = scheme  # "https" over TLS (or as a trusted proxy says)
        if callable(body):
            self._body_source: Callable[[], bytes] | None = body
            self._body: bytes | None = None
        else:
            self._body_source = None
            self._body = bytes(body)
        self._consumed = False

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} HTTP/{self.http_version}>"

    @property
    def headers(self) -> Headers:
        headers = self._headers
        if headers is None:  # from the parser: its raw fields, made Headers when first read
            headers = self._headers = _new(_WireHeaders)
            headers._raw = self._fields
        return headers

    @headers.setter
    def headers(self, headers: Headers) -> None:
        self._headers = headers

    @property
    def query_params(self) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        for k, v in parse_qsl(self.query, keep_blank_values=True):
            params.setdefault(k, []).append(v)
        return params

    def stream(self) -> Iterator[bytes]:
        """The body in chunks as they arrive (once; :meth:`body` keeps it)."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        if self._consumed:
            raise RuntimeError("the request body was already streamed")
        self._consumed = True
        source = self._body_source
        while chunk := source():  # type: ignore[misc]
            yield chunk

    def body(self) -> bytes:
        """The whole body (read once, then kept)."""
        if self._body is None:
            self._body = b"".join(self.stream())
        return self._body

    def text(self, encoding: str = "utf-8") -> str:
        return self.body().decode(encoding)

    def json(self) -> Any:
        return _json.loads(self.body())

    def accept_websocket(self, subprotocol: str | None = None) -> Any:
        """Take this request's connection as a WebSocket, a
        :class:`fibernet.server.websocket.WebSocket` (the 101 response is sent now).  The
        app talks on it in its own fiber; when the app returns, the WebSocket is closed with
        the close handshake.  Raises :class:`BadWebSocketUpgrade` (400) if the request is
        not a valid WebSocket upgrade."""
        accept = getattr(self, "_websocket", None)  # set by the server on upgrade requests
        if accept is None:
            raise BadWebSocketUpgrade(
                "not a WebSocket upgrade request (it needs Connection: Upgrade and Upgrade: websocket)"
            )
        return accept(self, subprotocol)


class Response:
    """An HTTP response.  ``body`` is bytes, str (UTF-8), or an iterable of bytes/str chunks
    (sent with chunked encoding to HTTP/1.1 clients)."""

    __slots__ = ("status", "headers", "body", "_fast")

    def __init__(
        self,
        status: int = 200,
        body: bytes | str | Iterable[bytes | str] = b"",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | Headers | None = None,
        content_type: str | None = None,
    ) -> None:
        if (status.__class__ is not int and not isinstance(status, int)) or not 100 <= status <= 999:
            raise ValueError(f"status must be an integer from 100 to 999, not {status!r}")
        self.status = status
        self._fast: tuple | None = None  # the whole keep-alive HTTP/1.1 response, kept by the server
        if headers is None:
            headers = _new(Headers)
            headers._items = []
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers = headers
        if content_type is not None:
            headers.add("content-type", content_type)
        if body.__class__ is not bytes:
            if isinstance(body, str):
                if "content-type" not in headers and body:
                    headers.add("content-type", "text/plain; charset=utf-8")
                body = body.encode()
            else:
                _check_body(body)
        self.body = body

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, _json_encode(obj).encode(), headers, content_type="application/json")

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, text.encode(), headers, content_type="text/plain; charset=utf-8")

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


_CHUNK_TYPES = (bytes, bytearray, memoryview, str)


def _check_body(body: Any) -> None:
    """Refuse a body that is not bytes, str or an iterable of them (a list or tuple is
    looked at whole; a lazy iterable's chunks are checked as they are sent)."""
    if isinstance(body, (bytearray, memoryview)):
        return
    if isinstance(body, (list, tuple)):
        for chunk in body:
            if not isinstance(chunk, _CHUNK_TYPES):
                raise TypeError(f"a response body chunk must be bytes or str, not {type(chunk).__name__}")
        return
    if not isinstance(body, _abc.Iterable) or isinstance(body, (int, dict, set, frozenset)):
        raise TypeError(
            f"a response body must be bytes, str or an iterable of them, not {type(body).__name__}"
        )


class Router:
    """Method and path to handler, exact paths only: ``@router.route("/hello", "GET")``.

    Routes match the percent-decoded ``request.path`` (``/caf%C3%A9`` is ``/café``).
    Unknown paths get 404; a known path with another method gets 405 with ``Allow``.
    """

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Callable[[Request], Response]]] = {}

    def add(
        self, path: str, handler: Callable[[Request], Response], methods: Iterable[str] = ("GET",)
    ) -> None:
        by_method = self._routes.setdefault(path, {})
        for method in methods:
            by_method[method.upper()] = handler
        if "GET" in by_method and "HEAD" not in by_method:
            by_method["HEAD"] = by_method["GET"]

    def route(
        self, path: str, *methods: str
    ) -> Callable[[Callable[[Request], Response]], Callable[[Request], Response]]:
        def decorate(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
            self.add(path, fn, methods or ("GET",))
            return fn

        return decorate

    def __call__(self, request: Request) -> Response:
        by_method = self._routes.get(request.path)
        if by_method is None:
            return Response(404, b"not found\n", content_type="text/plain")
        handler = by_method.get(request.method)
        if handler is None:
            return Response(
                405,
                b"method not allowed\n",
                {"allow": ", ".join(sorted(by_method))},
                content_type="text/plain",
            )
        return handler(request)


# The compiled copy of this module replaces it, unless FIBERNET_PURE_PYTHON (see
# fibernet/runtime/_accel.py): Request and Response are extension types there.
from fibernet.runtime._accel import import_c_accel  # noqa: E402

import_c_accel(globals(), "fibernet._c_http")

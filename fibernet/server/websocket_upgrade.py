"""The hand-off from an HTTP connection to a WebSocket: the opening handshake, and an app
called on an upgrade request that may take the connection.

``serve_upgrade(app, stream, request, limits)`` gives the request its ``accept_websocket``
(:meth:`Upgrade.accept`: wsproto checks the request the HTTP parser already read, with
``initiate_upgrade_connection``, and makes the 101), calls the app, and once the app returns
closes the WebSocket it took, with the close handshake (1011 if the app raised).  An app that
takes nothing gets its response sent as for any request.  The WebSocket itself is
:mod:`fibernet.server.websocket`; the connection loop, ``fibernet.server.http``, calls this
from one place (``_Connection._upgrade``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from fibernet.errors import Cancelled
from fibernet.http import BadWebSocketUpgrade
from fibernet.server.websocket import WebSocket, WebSocketLimits

log = logging.getLogger("fibernet.websocket")


def handshake(request: Any, limits: WebSocketLimits, subprotocol: str | None) -> tuple[WSConnection, bytes]:
    """Check the upgrade request with wsproto; the protocol state and the 101 response."""
    proto = WSConnection(ConnectionType.SERVER)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
    try:
        proto.initiate_upgrade_connection(headers, request.target)
        event = next(proto.events(), None)
    except (RemoteProtocolError, LocalProtocolError) as exc:
        raise BadWebSocketUpgrade(f"not a valid WebSocket upgrade: {exc}") from None
    if not isinstance(event, Request):
        raise BadWebSocketUpgrade("not a valid WebSocket upgrade")
    if subprotocol is not None and subprotocol not in event.subprotocols:
        raise BadWebSocketUpgrade(f"the client did not offer the subprotocol {subprotocol!r}")
    extensions = [PerMessageDeflate()] if limits.per_message_deflate else []
    return proto, proto.send(AcceptConnection(subprotocol=subprotocol, extensions=extensions))


class Upgrade:
    """One upgrade request's hand-off: ``request.accept_websocket`` calls :meth:`accept`."""

    __slots__ = ("stream", "limits", "ws", "name", "holder", "take_held")

    def __init__(
        self,
        stream: Any,
        limits: WebSocketLimits,
        name: str,
        holder: Any = None,
        take_held: Callable[[], bytes] | None = None,
    ) -> None:
        self.stream = stream
        self.take_held = take_held
        self.limits = limits
        self.ws: WebSocket | None = None
        self.name = name
        self.holder = holder

    def accept(self, request: Any, subprotocol: str | None = None) -> WebSocket:
        if self.ws is not None:
            raise RuntimeError("this request's WebSocket was already accepted")
        proto, response = handshake(request, self.limits, subprotocol)
        self.stream.timeout = self.limits.send_timeout
        self.stream.sendall(response)  # (an OSError here is the HTTP connection's to handle)
        deflate = b"permessage-deflate" in response.lower()
        held = self.take_held() if self.take_held is not None else b""
        self.ws = ws = WebSocket(self.stream, proto, self.limits, self.name, deflate, held)
        ws.subprotocol = subprotocol
        if self.holder is not None:
            self.holder.websocket = ws
        return ws


def serve_upgrade(
    app: Callable[[Any], Any],
    stream: Any,
    request: Any,
    limits: WebSocketLimits,
    holder: Any = None,
    take_held: Callable[[], bytes] | None = None,
) -> Any:
    """Call ``app`` on an upgrade request that may take the connection.  The app's response if
    it did not (to be sent as usual), or None if it took a WebSocket (then closed here).
    ``holder.websocket`` is the WebSocket while the app runs (for a drain to close it);
    ``take_held()`` the bytes the client sent after the request, the WebSocket's first."""
    upgrade = Upgrade(stream, limits, _peer(request.client), holder, take_held)
    request._websocket = upgrade.accept
    try:
        response = app(request)
    except BaseException as exc:
        if upgrade.ws is None:
            raise
        if not isinstance(exc, Cancelled):
            log.exception("WebSocket app failed on %s from %s", request.target, _peer(request.client))
        upgrade.ws._finish(exc)
        if isinstance(exc, Exception):
            return None
        raise
    if upgrade.ws is None:
        return response
    upgrade.ws._finish(None)
    return None


def _peer(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr or "?")

"""Helpers for the net-layer tests: connected loopback pairs made inside a fiber."""

from __future__ import annotations

from fibernet.net.sockets import Socket, connect, listen
from fibernet.net.streams import Stream


def socket_pair(timeout: float | None = None) -> tuple[Socket, Socket]:
    """(client, server): a TCP connection over 127.0.0.1, both ends fiber-aware sockets.

    Call it in a fiber: the connect and the accept suspend.
    """
    lst = listen("127.0.0.1", 0)
    try:
        client = connect("127.0.0.1", lst.getsockname()[1], timeout=timeout)
        try:
            server, _addr = lst.accept()
        except BaseException:
            client.close()
            raise
    finally:
        lst.close()
    server.timeout = timeout
    return client, server


def stream_pair(timeout: float | None = None) -> tuple[Stream, Stream]:
    client, server = socket_pair(timeout)
    return Stream(client), Stream(server)

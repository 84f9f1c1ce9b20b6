"""A fibernet *TCP* handler doing what the uvloop protocol does (httptools, canned keep-alive
response): ``fibernet serve hello_raw:handle --app-dir loadtest/peers --protocol tcp``,
fibernet's runtime floor (fibers, epoll, socket calls) without its HTTP layer."""

from __future__ import annotations

import _serve


def handle(sock) -> None:
    import httptools

    out: list[bytes] = []
    parser = _serve.canned_parser(out)
    while data := sock.recv(65536):
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            return
        if out:
            sock.sendall(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

"""HTTP hello, the ~minimal reference: an ``asyncio.Protocol`` on uvloop that feeds
``httptools.HttpRequestParser`` and writes a canned keep-alive response."""

from __future__ import annotations

import asyncio
import signal

import _serve


def serve(host: str, port: int) -> None:
    import httptools
    import uvloop

    class HelloProtocol(asyncio.Protocol):
        __slots__ = ("transport", "parser", "url")

        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url):
            self.url = url

        def on_message_complete(self):
            self.transport.write(_serve.CANNED if self.url == b"/hello" else _serve.NOT_FOUND)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
        server = await loop.create_server(HelloProtocol, host, port, backlog=_serve.BACKLOG)
        _serve.ready(server.sockets[0].getsockname()[1])
        await stop
        server.close()

    uvloop.run(main())


if __name__ == "__main__":
    _serve.main(serve, __doc__)

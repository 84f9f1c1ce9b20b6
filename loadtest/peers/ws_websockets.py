"""WebSocket echo on the websockets library (asyncio server, no compression, no pings)."""

from __future__ import annotations

import asyncio

import _serve


def serve(host: str, port: int) -> None:
    from websockets.asyncio.server import serve as ws_serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with ws_serve(echo, host, port, compression=None, ping_interval=None, max_size=None) as server:
            _serve.ready(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


if __name__ == "__main__":
    _serve.main(serve, __doc__)

"""TCP echo on asyncio: ``--api streams`` (asyncio.start_server, read(65536) / write / drain)
or ``--api protocol`` (create_server with an asyncio.Protocol: data_received -> write), on
the stock loop or, with ``--loop uvloop``, on uvloop."""

from __future__ import annotations

import asyncio

import _serve


class Echo(asyncio.Protocol):
    transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self.transport = None


async def handle(reader, writer) -> None:
    try:
        while data := await reader.read(_serve.RECV_SIZE):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def start(host: str, port: int, api: str) -> None:
    if api == "streams":
        server = await asyncio.start_server(handle, host, port, backlog=_serve.BACKLOG)
    else:
        server = await asyncio.get_running_loop().create_server(Echo, host, port, backlog=_serve.BACKLOG)
    _serve.ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def serve(host: str, port: int, api: str, loop: str) -> None:
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(start(host, port, api))


def options(parser) -> None:
    parser.add_argument("--api", choices=("streams", "protocol"), default="streams")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")


if __name__ == "__main__":
    _serve.main(serve, __doc__, options)

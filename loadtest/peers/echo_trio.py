"""TCP echo on trio: trio.serve_tcp, receive_some(65536) / send_all."""

from __future__ import annotations

from functools import partial

import _serve


def serve(host: str, port: int) -> None:
    import trio

    async def handle(stream) -> None:
        try:
            while data := await stream.receive_some(_serve.RECV_SIZE):
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            tcp = partial(trio.serve_tcp, handle, port, host=host, backlog=_serve.BACKLOG)
            listeners = await nursery.start(tcp)
            _serve.ready(listeners[0].socket.getsockname()[1])

    trio.run(main)


if __name__ == "__main__":
    _serve.main(serve, __doc__)

"""WebSocket echo as a raw ASGI app under uvicorn (uvloop, httptools), with ``--ws
websockets`` or ``--ws wsproto`` doing the WebSocket protocol."""

from __future__ import annotations

import _serve


async def echo(scope, receive, send):
    assert scope["type"] == "websocket"
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.receive":
            if event.get("text") is not None:
                await send({"type": "websocket.send", "text": event["text"]})
            else:
                await send({"type": "websocket.send", "bytes": event["bytes"]})
        else:
            return


def serve(host: str, port: int, ws: str) -> None:
    import uvicorn

    sock = _serve.listen(host, port)  # (before READY: uvicorn listens only once its loop runs)
    _serve.ready(sock.getsockname()[1])
    config = uvicorn.Config(echo, loop="uvloop", http="httptools", ws=ws, ws_per_message_deflate=False,
                            ws_ping_interval=None, log_level="warning", lifespan="off",
                            backlog=_serve.BACKLOG)
    uvicorn.Server(config).run(sockets=[sock])


def options(parser) -> None:
    parser.add_argument("--ws", choices=("websockets", "wsproto"), default="websockets")


if __name__ == "__main__":
    _serve.main(serve, __doc__, options)

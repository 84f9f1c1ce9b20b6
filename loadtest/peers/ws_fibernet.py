"""WebSocket echo on fibernet's HTTP server (no compression, no pings)."""

from __future__ import annotations

import _serve


def serve(host: str, port: int) -> None:
    from fibernet.server.http import http_server
    from fibernet.server.serving import run_server

    def app(request):
        ws = request.accept_websocket()
        for message in ws:
            ws.send(message)

    server = http_server(
        app, host, port, max_connections=20_000, ws_per_message_deflate=False, ws_ping_interval=None
    )
    server.bind()
    _serve.ready(server.address[1])
    run_server(server)


if __name__ == "__main__":
    _serve.main(serve, __doc__)

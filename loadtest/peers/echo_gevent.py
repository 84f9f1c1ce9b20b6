"""TCP echo on gevent: gevent.server.StreamServer, a recv(65536) / sendall loop per greenlet."""

from __future__ import annotations

import _serve


def serve(host: str, port: int) -> None:
    from gevent.server import StreamServer

    def handle(sock, _addr) -> None:
        _serve.nodelay(sock)
        try:
            while data := sock.recv(_serve.RECV_SIZE):
                sock.sendall(data)
        except OSError:
            pass

    server = StreamServer((host, port), handle, backlog=_serve.BACKLOG)
    server.start()
    _serve.ready(server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    _serve.main(serve, __doc__)

"""TCP echo: fibernet.Server(fibernet.examples.echo.handle), run the way ``fibernet serve``
runs it (run_server: the runtime on the main thread); ``--threads 2``: two schedulers, two
SO_REUSEPORT listeners, one process; ``--block-warning 0``: the scheduler monitor off."""

from __future__ import annotations

import _serve


def serve(host: str, port: int, threads: int, block_warning: float) -> None:
    from fibernet.examples.echo import handle
    from fibernet.server.serving import run_server
    from fibernet.server.tcp import Server

    server = Server(handle, host, port, threads=threads, idle_timeout=None, max_connections=20_000)
    server.bind()
    _serve.ready(server.address[1])
    run_server(server, block_warning=block_warning)


def options(parser) -> None:
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block-warning", type=float, default=0.1)


if __name__ == "__main__":
    _serve.main(serve, __doc__, options)

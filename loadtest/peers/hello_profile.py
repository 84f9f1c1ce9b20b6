"""fibernet's hello app (``--target fibernet``; ``fibernet-raw``: the ``hello_raw`` TCP
handler) served as ``fibernet serve`` does (``run_server``, one scheduler thread) under
cProfile; the stats go to ``--out`` when the server stops (SIGINT/SIGTERM).

The profiler is enabled before the runtime starts on purpose: with greenlet on CPython 3.11
a greenlet that was switched out before ``Profile.enable()`` (the scheduler's hub) stays
unprofiled, and its epoll/timer work would silently go missing.

``--clock cpu`` times with ``time.thread_time`` (CPU time of the one scheduler thread:
neither time blocked in epoll nor time preempted by other processes counts; slower),
``wall`` with cProfile's default wall clock.
"""

from __future__ import annotations

import time

import _serve


def serve(host: str, port: int, out: str, clock: str, target: str) -> None:
    import cProfile

    from fibernet.examples.hello import app
    from fibernet.server.http import http_server
    from fibernet.server.serving import run_server
    from fibernet.server.tcp import Server

    if target == "fibernet":
        server = http_server(app, host, port, threads=1)
    else:
        from hello_raw import handle

        server = Server(handle, host, port, threads=1)
    prof = cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()
    prof.enable()
    try:
        run_server(server)
    finally:
        prof.disable()
        prof.dump_stats(out)


def options(parser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--target", choices=("fibernet", "fibernet-raw"), default="fibernet")


if __name__ == "__main__":
    _serve.main(serve, __doc__, options)

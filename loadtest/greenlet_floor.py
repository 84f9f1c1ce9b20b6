"""The memory floor of a suspended greenlet: what any greenlet-based server pays per idle
connection before it allocates anything of its own (docs/pages/benchmarks.md, "TCP echo").

N greenlets each switch back to the main one from one Python function, the least a handler
blocked in ``recv`` can be; reported: the RSS growth per greenlet in KiB, and the part
``tracemalloc`` sees (the rest: since CPython 3.11 each greenlet's own Python data stack).
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc

import greenlet
import psutil


def rss_kib() -> int:
    return psutil.Process().memory_info().rss // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-n", type=int, default=10_000, help="greenlets (default 10,000)")
    args = parser.parse_args(argv)
    hub = greenlet.getcurrent()

    def handler() -> None:
        hub.switch()  # suspended here, as a handler waiting for its next read

    gs = [greenlet.greenlet(handler) for _ in range(args.n)]
    tracemalloc.start()
    before = rss_kib()
    for g in gs:
        g.switch()
    after = rss_kib()
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per = (after - before) / args.n
    print(
        f"python {sys.version.split()[0]}, greenlet {greenlet.__version__}: {args.n:,} suspended greenlets, "
        f"{per:.2f} KiB RSS each ({traced / args.n / 1024:.2f} KiB of it seen by tracemalloc)"
    )
    for g in gs:
        g.throw(greenlet.GreenletExit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Instructions per request under callgrind (the ``--callgrind`` mode of http_hello.py and
echo.py): each server runs under ``valgrind --tool=callgrind`` twice, serving N1 and N2 requests
after a warm-up; per request = (Ir(N2) - Ir(N1)) / (N2 - N1).  fibernet runs with its scheduler
monitor off and PYTHONHASHSEED fixed, so that both runs do the same work.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import _bench
from _server import HOST, ServerProcess

CONNECTIONS = 16
START_TIMEOUT = 600.0  # a Python server starts some 50 times slower under callgrind
_TOTALS = re.compile(rb"^(?:totals|summary):\s*(\d+)", re.M)


@dataclass
class Target:
    """One server to count: ``command(port)`` is its command line, ``env`` what it adds."""

    name: str
    command: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)


def target(impl: str, command: Callable[[str, int], list[str]]) -> Target:
    """``impl`` started by ``command(impl, port)``; fibernet without its scheduler monitor, and
    ``fibernet-pure`` the same with FIBERNET_PURE_PYTHON=1."""
    serve = "fibernet-nomonitor" if impl in ("fibernet", "fibernet-pure") else impl
    return Target(impl, partial(command, serve),
                  {"FIBERNET_PURE_PYTHON": "1"} if impl == "fibernet-pure" else {})


def options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--callgrind", action="store_true",
                        help=f"instead: instructions per {what} under callgrind")
    parser.add_argument("--callgrind-counts", default="1000,5000", help=f"N1,N2 {what}s (default 1000,5000)")
    parser.add_argument("--callgrind-warmup", type=int, default=500,
                        help=f"{what}s before them (default 500)")


def totals(path: str) -> int:
    """The ``Ir`` total of a callgrind output file."""
    with open(path, "rb") as fh:
        found = _TOTALS.findall(fh.read())
    if not found:
        raise RuntimeError(f"no totals in {path}")
    return int(found[-1])


def http_exchange(path: str) -> dict:
    """An HTTP hello request, as ``load.py``'s ``http`` workload sends and checks it."""
    return {"workload": "http", "path": path}


def echo_exchange(size: int) -> dict:
    """An echo of ``size`` bytes, as ``load.py``'s ``echo`` workload sends and checks it."""
    return {"workload": "echo", "size": size}


def drive(exchange: dict, port: int, count: int) -> None:
    """``count`` requests over CONNECTIONS keep-alive connections, one in flight on each
    (``load.py``'s closed loop); every answer is checked, and anything wrong raises."""
    import load

    cfg = load.Config(**exchange, port=port, connections=CONNECTIONS, count=count, timeout=300.0)
    result = load.run_load(cfg)
    if result.errors or result.requests != count:
        samples = "; ".join(f"{kind}: {text}" for kind, text in result.error_samples.items())
        raise RuntimeError(f"{result.requests} of {count} answers right ({samples})")


def run_once(target: Target, exchange: dict, warmup: int, count: int, out_dir: str) -> int:
    """Ir of one server run: start under callgrind, warm up, ``count`` requests, SIGTERM."""
    port = _bench.free_port(HOST)
    out = os.path.join(out_dir, f"{target.name}.{count}.out")
    cmd = [shutil.which("valgrind") or "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           *target.command(port)]
    env = dict(os.environ, PYTHONHASHSEED="0", **target.env)
    with ServerProcess(cmd, port=port, timeout=START_TIMEOUT, name=target.name, env=env) as server:
        try:
            if warmup:
                drive(exchange, port, warmup)
            drive(exchange, port, count)
            server.stop(600)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{server.tail()}") from None
    return totals(out)


def per_request(target: Target, exchange: dict, n1: int, n2: int, warmup: int) -> dict:
    """(Ir(n2) - Ir(n1)) / (n2 - n1) for one server, and the two totals."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out_dir:
        ir1 = run_once(target, exchange, warmup, n1, out_dir)
        ir2 = run_once(target, exchange, warmup, n2, out_dir)
    return {"impl": target.name, "ir_n1": ir1, "ir_n2": ir2, "n1": n1, "n2": n2,
            "per_request": (ir2 - ir1) / (n2 - n1)}


def render(workload: str, results: dict[str, dict], bars: dict[str, float]) -> str:
    """A table: instructions per request, fibernet's ratio to each, and the bars."""
    mine = results.get(_bench.OURS, {}).get("per_request")
    lines = [f"{workload}: instructions per request (callgrind Ir, (Ir(N2) - Ir(N1)) / (N2 - N1))",
             f"{'server':<28} {'Ir/req':>10} {'fibernet / it':>18}  bar"]
    for name, row in results.items():
        value = row["per_request"]
        ratio = mine / value if mine and value else None
        bar = bars.get(name)
        # (the measured ratio to three places: 0.335x against 0.33x must not read as 0.33x)
        check = "" if bar is None or ratio is None else \
            f"{ratio:.3f}x <= {bar:.2f}x: {'PASS' if ratio <= bar else 'FAIL'}"
        lines.append(f"{name:<28} {value / 1000:>9.1f}k {_bench.fmt_ratio(ratio):>18}  {check}")
    return "\n".join(lines)


def main(args, workloads: Sequence[tuple[str, dict]], command: Callable[[str, int], list[str]],
         bars: dict[str, float]) -> int:
    """A benchmark's ``--callgrind`` mode: a table per (label, exchange) over ``args.impls``
    (``command(impl, port)`` starts one), from ``args.callgrind_counts`` ("N1,N2") and
    ``args.callgrind_warmup``; saved to ``args.json``.  The exit status is 1 if a server
    failed (a bar that fails is reported, not an error)."""
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    n1, n2 = (int(x) for x in args.callgrind_counts.split(","))
    command_text = _bench.command_line()
    print(f"command: {command_text}", flush=True)
    tables, everything, failed = [], {}, False
    for label, exchange in workloads:
        print(f"{label}:", flush=True)
        everything[label] = results = {}
        for impl in args.impls:
            try:
                results[impl] = row = per_request(target(impl, command), exchange, n1, n2,
                                                  args.callgrind_warmup)
                print(f"{impl}: {row['per_request'] / 1000:.1f}k instructions per request", flush=True)
            except RuntimeError as exc:
                print(f"{impl}: FAILED: {exc}", flush=True)
                failed = True
        tables.append(render(label, results, bars))
    print("\n" + "\n\n".join(tables) + f"\ncommand: {command_text}")
    _bench.save_json(args.json, {"command": command_text, "results": everything})
    return 1 if failed else 0

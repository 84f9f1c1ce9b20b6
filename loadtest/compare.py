"""fibernet beside its peers under loadtest/load.py: side by side, pinned, interleaved rounds.

Run from the repository root::

    python loadtest/compare.py --make-env /tmp/peers         # echo, churn, http; peers in a venv
    python loadtest/compare.py --peers-python /tmp/peers/bin/python          # the same, made once
    python loadtest/compare.py --quick --workloads http --impls fibernet,uvicorn
    python loadtest/compare.py --wrk-check                   # load.py against wrk, same server
    python loadtest/compare.py --make-env /tmp/peers bench actors --quick  # the other benchmarks

``bench NAME [ARGS...]`` runs one of the other benchmark scripts, ``loadtest/NAME.py ARGS``
(``echo``: TCP echo; ``http_hello``: HTTP hello under wrk; ``actors``: actor calls;
``primitives``: channels, spawn, choice; ``ws_echo``: WebSocket echo), on the peers'
interpreter, so that the peers they measure fibernet beside come from the peers'
environment: this is how fibernet's benchmarks are meant to be run.  ARGS go to the script
as they are (``bench echo --help``).

Servers (each in its own process, ``taskset -c SERVER_CPU``, default 0):

* TCP echo (workloads ``echo``, ``churn``): ``loadtest/echo.py --serve IMPL`` for fibernet,
  asyncio-streams, uvloop-streams, uvloop-proto, gevent, trio (and raw-epoll, fibernet-t2);
* HTTP hello (workloads ``http``, ``http-open``): ``fibernet serve fibernet.examples.hello:app``,
  uvicorn (httptools, uvloop, raw ASGI), gevent.pywsgi, aiohttp (and uvloop-proto) as
  ``loadtest/http_hello.py`` runs them.

fibernet runs on this interpreter; the peers run on the peers' interpreter: ``--peers-python
PATH``, or the environment ``--make-env DIR`` makes (``python -m venv DIR`` and ``pip install``
of the peers and of fibernet's own dependencies into it, skipped when they all import
already: never into this environment; fibernet itself is imported from this checkout).
Without either, the peers are taken from this interpreter if they import, and the output
says so.

One measurement (a fresh driver process pinned to the load CPUs, default 1): start the
server, check it with a few requests, warm up (``--warmup`` s), read the server's CPU time
(utime + stime of its process and children, the kernel's accounting in /proc/PID/stat),
run load.py in-process (or ``--processes`` load processes) for ``--duration`` s, read the
CPU time again, stop the server.  Reported per workload and server (medians over
``--rounds`` interleaved rounds: for round: for workload: for server): requests/s, p50 and
p99 latency, the server's CPU time per message (us; stays valid when the load generator is
the bottleneck), errors, and fibernet's ratios (rate: fibernet / peer, above 1 = fibernet
faster; CPU/msg: fibernet / peer, below 1 = fibernet cheaper).

Workloads: ``echo`` (closed loop, ``--connections`` N, ``--size`` B messages), ``churn``
(connect, one 64 B echo, close; ``--churn-connections``), ``http`` (GET /hello, closed
loop), ``http-open`` (GET /hello, open loop at ``--rate`` req/s: latency at a fixed load).

``--wrk-check`` measures load.py against wrk on the fibernet hello server, interleaved:
``wrk -t1 -cN -dDs --latency URL`` and load.py's http workload (the same request bytes),
closed loop, with the same N connections and duration, both pinned to the load CPU: request
rates, median latencies and their ratios (per round, then the median), and for each tool
the server's CPU per request, the load side's CPU per request and how often the load side
went to sleep per request (each sleep costs the server a wake-up of the generator: a
generator with less headroom sleeps less and gets a cheaper server; docs/pages/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
from _bench import fmt_num, fmt_ratio  # noqa: E402
from _compare_servers import (  # noqa: E402
    BENCHES,
    HTTP_EXTRA,
    HTTP_IMPLS,
    NEEDS,
    TCP_EXTRA,
    TCP_IMPLS,
    WORKLOADS,
    importable,
    measure,
    peers_python,
)

# --------------------------------------------------------------------------
# summary


def med(samples: _bench.Samples, workload: str, impl: str, key: str) -> float | None:
    return _bench.median(samples.values(workload, impl, key))


def table(samples: _bench.Samples, workload: str, impls: list[str]) -> str:
    ours_rate = med(samples, workload, "fibernet", "rate")
    ours_cpu = med(samples, workload, "fibernet", "server_us_per_msg")
    rows = []
    for impl in impls:
        if not samples.results.get((workload, impl)):
            rows.append([impl, "ERROR" if samples.errors.get((workload, impl)) else "-"] + ["-"] * 8)
            continue
        rate = med(samples, workload, impl, "rate")
        cpu = med(samples, workload, impl, "server_us_per_msg")
        errors = sum(r.get("errors", 0) for r in samples.results[(workload, impl)])
        rows.append(
            [
                impl,
                fmt_num(rate),
                _bench.fmt_pct(_bench.spread(samples.values(workload, impl, "rate"))),
                fmt_num(med(samples, workload, impl, "p50")),
                fmt_num(med(samples, workload, impl, "p99")),
                fmt_num(cpu),
                fmt_ratio(_bench.ratio(ours_rate, rate)),
                fmt_ratio(_bench.ratio(ours_cpu, cpu)),
                errors,
                len(samples.results[(workload, impl)]),
            ]
        )
    head = [
        "server",
        "req/s",
        "spread",
        "p50 ms",
        "p99 ms",
        "srv us/msg",
        "fibernet rate x",
        "fibernet CPU x",
        "errors",
        "rounds",
    ]
    return _bench.format_table(head, rows)


def wrk_table(samples: _bench.Samples) -> str:
    w = "wrk-check"
    rows = []
    for tool in ("wrk", "load"):
        rows.append(
            [
                tool,
                fmt_num(med(samples, w, tool, "rate")),
                _bench.fmt_pct(_bench.spread(samples.values(w, tool, "rate"))),
                fmt_num(med(samples, w, tool, "p50")),
                fmt_num(med(samples, w, tool, "p99")),
                fmt_num(med(samples, w, tool, "server_us_per_msg")),
                _bench.fmt_pct(med(samples, w, tool, "server_cpu_util")),
                _bench.fmt_pct(med(samples, w, tool, "load_cpu_util")),
                fmt_num(med(samples, w, tool, "load_us_per_msg")),
                fmt_num(med(samples, w, tool, "load_sleeps_per_msg")),
            ]
        )
    head = ["tool", "req/s", "spread", "p50 ms", "p99 ms", "srv us/req", "srv CPU", "load CPU"]
    head += ["load us/req", "load sleeps/req"]
    lines = [_bench.format_table(head, rows)]
    for key, what in (("rate", "request rate"), ("p50", "median latency")):
        # per round (wrk and load.py ran back to back), then the median over rounds
        pairs = zip(samples.values(w, "load", key), samples.values(w, "wrk", key), strict=False)
        per_round = [_bench.ratio(a, b) for a, b in pairs]
        mid = _bench.median(per_round)
        verdict = "-" if mid is None else ("within 10%" if abs(mid - 1) <= 0.10 else "NOT within 10%")
        lines.append(
            f"load.py / wrk {what}: {fmt_ratio(mid)} (median of per-round ratios "
            + ", ".join(fmt_ratio(r) for r in per_round)
            + f"): {verdict}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + __doc__.split("::\n\n")[1].split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workloads", default="echo,churn,http", help=f"comma list of {','.join(WORKLOADS)}")
    p.add_argument(
        "--impls", help="comma list of servers (default: fibernet and every peer of each workload)"
    )
    p.add_argument("--quick", action="store_true", help="1 round of 2 s, 0.5 s warm-up")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--warmup", type=float)
    p.add_argument("--connections", "-c", type=int, default=50)
    p.add_argument("--churn-connections", type=int, default=10)
    p.add_argument("--size", type=int, default=64, help="echo message size (bytes)")
    p.add_argument("--rate", type=float, default=2000.0, help="http-open: requests/s")
    p.add_argument("--processes", type=int, default=1, help="load processes per measurement")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--load-cpu", default="1", help="CPU list of the driver and its load processes")
    p.add_argument("--peers-python", help="interpreter of the peers' environment")
    p.add_argument("--make-env", metavar="DIR", help="make (or update) the peers' environment in DIR")
    p.add_argument("--wrk-check", action="store_true", help="load.py against wrk on fibernet's hello server")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    p.add_argument("--start-timeout", type=float, default=30.0)
    p.add_argument("--json", metavar="PATH")
    sub = p.add_subparsers(dest="command", title="the other benchmarks", metavar="bench")
    bench = sub.add_parser(
        "bench",
        help=f"NAME [ARGS...]: run loadtest/NAME.py ARGS on the peers' python (NAME: {', '.join(BENCHES)})",
        description="Run loadtest/NAME.py ARGS on the peers' interpreter (--make-env DIR or "
        "--peers-python PATH, given before 'bench').",
    )
    bench.add_argument("name", choices=BENCHES, metavar="NAME", help=", ".join(BENCHES))
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    args = p.parse_args(argv)
    if args.command == "bench" and args.args[:1] == ["--"]:
        args.args = args.args[1:]
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        p.error(f"--workloads: unknown {', '.join(unknown)}")
    if _bench.cpu_set(args.server_cpu) & _bench.cpu_set(args.load_cpu):
        p.error("--server-cpu and --load-cpu must not overlap")
    _bench.check_cpu(args.server_cpu)
    _bench.check_cpu(args.load_cpu)
    return args


def plan_for(args, py: str, log) -> tuple[list, dict[str, list[str]]]:
    params = {
        "peers_python": py,
        "server_cpu": args.server_cpu,
        "duration": args.duration,
        "warmup": args.warmup,
        "connections": args.connections,
        "size": args.size,
        "churn_connections": args.churn_connections,
        "rate": args.rate,
        "processes": args.processes,
        "start_timeout": args.start_timeout,
        "wrk": args.wrk,
    }
    if args.wrk_check:
        return [("wrk-check", t, params) for t in ("wrk", "load")], {"wrk-check": ["wrk", "load"]}
    chosen = [x.strip() for x in args.impls.split(",")] if args.impls else None
    plan, impls = [], {}
    for workload in args.workloads:
        kind = WORKLOADS[workload]
        known = (TCP_IMPLS + TCP_EXTRA) if kind == "tcp" else (HTTP_IMPLS + HTTP_EXTRA)
        names = [x for x in (chosen or (TCP_IMPLS if kind == "tcp" else HTTP_IMPLS)) if x in known]
        usable = []
        for impl in names:
            if impl.startswith("fibernet") or importable(py, NEEDS.get(impl, [])):
                usable.append(impl)
            else:
                log(f"skipping {impl}: {py} cannot import {', '.join(NEEDS.get(impl, []))}")
        impls[workload] = usable
        plan += [(workload, impl, params) for impl in usable]
    return plan, impls


def run_bench(name: str, script_args: list[str], py: str, where: str, log) -> int:
    """``loadtest/NAME.py ARGS`` on the peers' interpreter ``py`` (its bin/ first on PATH, so
    that what the script starts by name comes from there too); its exit status."""
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(py), os.environ.get("PATH", "")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    cmd = [py, os.path.join(HERE, f"{name}.py"), *script_args]
    log(f"{where}\nrunning: {shlex.join(cmd)}")
    return subprocess.call(cmd, env=env, cwd=ROOT)


def main(argv=None) -> int:
    args = parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    py, where = peers_python(args)
    if args.command == "bench":
        return run_bench(args.name, args.args, py, where, log)
    print(where)
    print(
        f"server on CPU {args.server_cpu}, load (and its driver) on CPU {args.load_cpu}; "
        f"{args.rounds} round(s) of {args.duration:g} s after {args.warmup:g} s warm-up"
    )
    plan, impls = plan_for(args, py, log)
    samples = _bench.run_interleaved(
        __file__, plan, args.rounds, args.load_cpu, timeout=args.duration * 4 + 120, log=log
    )
    for workload, names in impls.items():
        print(f"\n== {workload} ==")
        print(wrk_table(samples) if workload == "wrk-check" else table(samples, workload, names))
    _bench.save_json(
        args.json,
        {"command": _bench.command_line(), "peers": where, "args": vars(args), "samples": samples.to_json()},
    )
    return 1 if samples.errors else 0


if __name__ == "__main__":
    if _bench.is_child():
        sys.exit(_bench.serve_child(measure))
    sys.exit(main())

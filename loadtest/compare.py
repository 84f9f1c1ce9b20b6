"""fibernet beside its peers under loadtest/load.py (echo, churn, http, http-open), the server
and the load pinned apart, rounds interleaved: req/s, p50 and p99 latency, the server's CPU per
message and fibernet's ratios.  The peers run on --peers-python (or --make-env DIR).
--wrk-check instead measures load.py against wrk on fibernet's hello server
(docs/pages/benchmarks.md, "Against wrk").
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import sys
import time
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
import _proc  # noqa: E402
import _wrk  # noqa: E402
from _bench import fmt_num, fmt_pct, fmt_ratio  # noqa: E402
from _peers import importable, peers_python  # noqa: E402
from _server import ECHO, FIBERNET_CLI, HOST, ServerProcess, hello, peer  # noqa: E402

TCP_IMPLS = ("fibernet", "asyncio-streams", "uvloop-streams", "uvloop-proto", "gevent", "trio")
TCP_EXTRA = ("raw-epoll", "fibernet-t2")
HTTP_IMPLS = ("fibernet", "uvicorn", "gevent", "aiohttp")
HTTP_EXTRA = ("uvloop-proto",)
NEEDS = {"gevent": ["gevent"], "trio": ["trio"], "uvloop-streams": ["uvloop"],  # modules a peer imports
         "uvloop-proto": ["uvloop", "httptools"], "uvicorn": ["uvicorn", "uvloop", "httptools"],
         "aiohttp": ["aiohttp"]}
WORKLOADS = {"echo": "tcp", "churn": "tcp", "http": "http", "http-open": "http"}


# --------------------------------------------------------------------------
# one measurement (in a driver child pinned to the load CPUs)


def server_command(kind: str, impl: str, port: int, peers_python: str) -> list[str]:
    py = None if impl.startswith("fibernet") else peers_python
    if kind == "tcp":
        return peer(ECHO, impl, python=py, port=port)
    return hello(impl, port, python=py, cli=FIBERNET_CLI)


def load_side() -> tuple[float, int]:
    """(CPU seconds, voluntary context switches) of the load side: this driver and its finished
    children (wrk, load processes).  Each sleep of the generator costs the server a wake-up."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, own.ru_nvcsw + kids.ru_nvcsw


def server_side(pid: int) -> tuple[float, int]:
    """(CPU seconds of ``pid`` and its children, voluntary context switches of its threads)."""
    return sum(_proc.cpu_times(pid, descendants=True)), _proc.ctx_switches(pid, voluntary_only=True)


def load_config(workload: str, port: int, params: dict, **over):
    import load

    base = {"host": HOST, "port": port, "timeout": 10.0}
    if workload == "echo":
        base.update(workload="echo", size=params["size"], connections=params["connections"])
    elif workload == "churn":
        base.update(workload="churn", size=64, connections=params["churn_connections"])
    else:
        base.update(workload="http", path="/hello", connections=params["connections"])
        if workload == "http-open":
            base["rate"] = params["rate"]
    return load.Config(**{**base, **over})


def run_wrk(port: int, params: dict, duration: float) -> dict:
    cmd = _wrk.command(params["wrk"], f"http://{HOST}:{port}/hello", 1, params["connections"], duration)
    parsed, output = _wrk.run(cmd, duration)
    lat = parsed["latency_us"]
    return {"rate": parsed["rps"], "requests": parsed["requests"], "p50": lat["50"] / 1e3,
            "p90": lat["90"] / 1e3, "p99": lat["99"] / 1e3, "errors": sum(parsed["errors"].values()),
            "error_kinds": parsed["errors"], "output": output}


def run_load(workload: str, port: int, params: dict, **over) -> dict:
    import load

    res = load.run_load(load_config(workload, port, params, **over))
    lat = res.latency()
    return {"rate": res.rate, "requests": res.requests, "p50": lat["p50"], "p90": lat["p90"],
            "p99": lat["p99"], "max": lat["max"], "errors": res.error_total, "error_kinds": res.errors}


def measure(workload: str, impl: str, params: dict) -> dict:
    check = workload == "wrk-check"
    kind = "http" if check else WORKLOADS[workload]
    tool = impl if check else "load"  # wrk-check: impl is the tool, the server fibernet's
    port = _bench.free_port(HOST)
    cmd = server_command(kind, "fibernet" if check else impl, port, params["peers_python"])
    with ServerProcess(cmd, params["server_cpu"], port, params["start_timeout"]) as server:
        try:
            probe = run_load("echo" if kind == "tcp" else "http", port, params, connections=2, count=20)
            if probe["errors"] or probe["requests"] != 20:
                raise RuntimeError(f"the server answers wrongly: {probe['error_kinds']}")
            if tool == "wrk":
                run_wrk(port, params, params["warmup"])
            else:
                run_load(workload if kind == "tcp" else "http", port, params, duration=params["warmup"])
            (cpu0, wake0), (load0, sleeps0), t0 = server_side(server.pid), load_side(), time.perf_counter()
            if tool == "wrk":
                out = run_wrk(port, params, params["duration"])
            else:
                out = run_load("http" if check else workload, port, params, duration=params["duration"],
                               processes=params["processes"])
            (cpu1, wake1), (load1, sleeps1) = server_side(server.pid), load_side()
            wall = time.perf_counter() - t0
            server.check_alive()
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{server.tail()}") from None
        server.stop(10)
    n = out["requests"]
    per = lambda x: x / n if n else None  # noqa: E731
    out.update(server_cpu_s=cpu1 - cpu0, server_us_per_msg=per(1e6 * (cpu1 - cpu0)),
               server_cpu_util=(cpu1 - cpu0) / wall, load_cpu_util=(load1 - load0) / wall,
               server_wakeups_per_msg=per(wake1 - wake0), load_us_per_msg=per(1e6 * (load1 - load0)),
               load_sleeps_per_msg=per(sleeps1 - sleeps0), server_command=shlex.join(server.command))
    out["summary"] = (f"{fmt_num(out['rate'])}/s p50 {fmt_num(out['p50'])} ms p99 {fmt_num(out['p99'])} ms, "
                      f"server {fmt_num(out['server_us_per_msg'])} us/msg "
                      f"CPU {fmt_pct(out['server_cpu_util'])}, "
                      f"load CPU {fmt_pct(out['load_cpu_util'])} {fmt_num(out['load_us_per_msg'])} us/msg "
                      f"{fmt_num(out['load_sleeps_per_msg'])} sleeps/msg, errors {out['errors']}")
    return out


# --------------------------------------------------------------------------
# summary


def table(samples: _bench.Samples, workload: str, impls: list[str]) -> str:
    ours_rate, ours_cpu = (samples.median(workload, "fibernet", k) for k in ("rate", "server_us_per_msg"))
    rows = []
    for r in _bench.summary_rows(samples, workload, impls, "rate", ("p50", "p99", "server_us_per_msg"),
                                 keep_empty=True):
        results = samples.results.get((workload, r["impl"]))
        if not results:
            rows.append([r["impl"], "ERROR" if r["errors"] else "-"] + ["-"] * 8)
            continue
        cpu = r["server_us_per_msg"]
        rows.append([r["impl"], fmt_num(r["rate"]), fmt_pct(r["spread"]), fmt_num(r["p50"]),
                     fmt_num(r["p99"]), fmt_num(cpu), fmt_ratio(_bench.ratio(ours_rate, r["rate"])),
                     fmt_ratio(_bench.ratio(ours_cpu, cpu)),
                     sum(x.get("errors", 0) for x in results), len(results)])
    return _bench.format_table(["server", "req/s", "spread", "p50 ms", "p99 ms", "srv us/msg",
                                "fibernet rate x", "fibernet CPU x", "errors", "rounds"], rows)


def wrk_table(samples: _bench.Samples) -> str:
    w, rows = "wrk-check", []
    for tool in ("wrk", "load"):
        med = partial(samples.median, w, tool)
        rows.append([tool, fmt_num(med("rate")), fmt_pct(_bench.spread(samples.values(w, tool, "rate"))),
                     fmt_num(med("p50")), fmt_num(med("p99")), fmt_num(med("server_us_per_msg")),
                     fmt_pct(med("server_cpu_util")), fmt_pct(med("load_cpu_util")),
                     fmt_num(med("load_us_per_msg")), fmt_num(med("load_sleeps_per_msg"))])
    lines = [_bench.format_table(["tool", "req/s", "spread", "p50 ms", "p99 ms", "srv us/req", "srv CPU",
                                  "load CPU", "load us/req", "load sleeps/req"], rows)]
    for key, what in (("rate", "request rate"), ("p50", "median latency")):
        # per round (wrk and load.py ran back to back), then the median over rounds
        pairs = zip(samples.values(w, "load", key), samples.values(w, "wrk", key), strict=False)
        per_round = [_bench.ratio(a, b) for a, b in pairs]
        mid = _bench.median(per_round)
        verdict = "-" if mid is None else ("within 10%" if abs(mid - 1) <= 0.10 else "NOT within 10%")
        lines.append(f"load.py / wrk {what}: {fmt_ratio(mid)} (median of per-round ratios "
                     + ", ".join(fmt_ratio(r) for r in per_round) + f"): {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    p = _bench.parser(__doc__, quick="1 round of 2 s, 0.5 s warm-up", cpu=None, timeout=None,
                      duration="measured seconds (default 5, --quick 2)",
                      warmup="warm-up seconds (default 1, --quick 0.5)")
    add = p.add_argument
    add("--workloads", default="echo,churn,http", help=f"comma list of {','.join(WORKLOADS)}")
    add("--impls", help="comma list of servers (default: fibernet and every peer of each workload)")
    add("--connections", "-c", type=int, default=50)
    add("--churn-connections", type=int, default=10)
    add("--size", type=int, default=64, help="echo message size (bytes)")
    add("--rate", type=float, default=2000.0, help="http-open: requests/s")
    add("--processes", type=int, default=1, help="load processes per measurement")
    add("--server-cpu", default="0")
    add("--load-cpu", default="1", help="CPU list of the driver and its load processes")
    add("--peers-python", help="interpreter of the peers' environment")
    add("--make-env", metavar="DIR", help="make (or update) the peers' environment in DIR")
    add("--wrk-check", action="store_true", help="load.py against wrk on fibernet's hello server")
    add("--wrk", default=shutil.which("wrk") or "wrk")
    add("--start-timeout", type=float, default=30.0)
    args = _bench.parse(p, argv, {"rounds": 1, "duration": 2.0, "warmup": 0.5},
                        {"rounds": 3, "duration": 5.0, "warmup": 1.0}, {"workloads": WORKLOADS})
    if _bench.cpu_set(args.server_cpu) & _bench.cpu_set(args.load_cpu):
        p.error("--server-cpu and --load-cpu must not overlap")
    _bench.check_cpu(args.server_cpu)
    _bench.check_cpu(args.load_cpu)
    return args


def plan_for(args, py: str, log) -> tuple[list, dict[str, list[str]]]:
    keys = ("server_cpu", "duration", "warmup", "connections", "size", "churn_connections", "rate",
            "processes", "start_timeout", "wrk")
    params = {"peers_python": py, **{k: getattr(args, k) for k in keys}}
    if args.wrk_check:
        return [("wrk-check", t, params) for t in ("wrk", "load")], {"wrk-check": ["wrk", "load"]}
    chosen = [x.strip() for x in args.impls.split(",")] if args.impls else None
    plan, impls = [], {}
    for workload in args.workloads:
        default, extra = (TCP_IMPLS, TCP_EXTRA) if WORKLOADS[workload] == "tcp" else (HTTP_IMPLS, HTTP_EXTRA)
        impls[workload] = []
        for impl in [x for x in chosen or default if x in default + extra]:
            if impl.startswith("fibernet") or importable(py, NEEDS.get(impl, [])):
                impls[workload].append(impl)
                plan.append((workload, impl, params))
            else:
                log(f"skipping {impl}: {py} cannot import {', '.join(NEEDS.get(impl, []))}")
    return plan, impls


def main(argv=None) -> int:
    args = parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    py, where = peers_python(args.make_env, args.peers_python)
    print(f"{where}\nserver on CPU {args.server_cpu}, load (and its driver) on CPU {args.load_cpu}; "
          f"{args.rounds} round(s) of {args.duration:g} s after {args.warmup:g} s warm-up")
    plan, impls = plan_for(args, py, log)

    def report(samples: _bench.Samples) -> tuple[dict, str]:
        return {}, "\n\n".join(f"== {workload} ==\n" + (wrk_table(samples) if workload == "wrk-check"
                                                        else table(samples, workload, names))
                               for workload, names in impls.items())

    return _bench.run(__file__, args, plan, report, pin="load_cpu", timeout=args.duration * 4 + 120, log=log,
                      peers=where)


if __name__ == "__main__":
    _bench.main(measure, main)

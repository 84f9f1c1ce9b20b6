"""HTTP hello-world benchmark: fibernet beside uvicorn, gevent.pywsgi, aiohttp and floors under
``wrk -t1 -c100`` (GET /hello): the server's CPU time per request, req/s, RSS and wrk's errors,
medians over interleaved rounds; or memory per idle connection (--idle-conns), instructions per
request (--callgrind), fibernet under cProfile (--profile); --tls: over TLS with a self-signed
certificate (https_hello).  The bars and the floors are in docs/pages/benchmarks.md, "HTTP hello
world".  (Not http.py: that would shadow the stdlib.)
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
import _callgrind  # noqa: E402
import _idle  # noqa: E402
import _proc  # noqa: E402
import _wrk  # noqa: E402
from _bench import fmt_fixed, fmt_num, fmt_pct, fmt_ratio  # noqa: E402
from _server import FIBERNET_CLI, HOST, ServerProcess, hello, pinned  # noqa: E402
from peers import _serve  # noqa: E402

PATH = "/hello"
WORKLOAD, IDLE = "hello", "idle"
# impl -> what the table calls it, and the CPU us/request first measured on another machine
IMPLS = {
    "fibernet": ("fibernet", None),
    "fibernet-nomonitor": ("fibernet, scheduler monitor off (--block-warning 0)", None),
    "uvicorn": ("uvicorn (httptools, uvloop, raw ASGI)", 69),
    "gevent": ("gevent.pywsgi", 209),
    "aiohttp": ("aiohttp", 105),
    "uvloop-proto": ("uvloop protocol + httptools (reference)", 12.9),
    "fibernet-raw": ("fibernet TCP handler + httptools (floor)", None),
    "greenlet-floor": ("minimal greenlet per connection + httptools (floor)", None),
}
BARS = {"uvicorn": 0.4, "gevent": 0.15}  # fibernet CPU/req <= this x the peer's (issue 18: 0.4x uvicorn)
IDLE_BAR_BYTES = 2048  # issue 18: at most 2 KB per idle keep-alive HTTP connection
CALLGRIND_IMPLS = ("fibernet", "fibernet-pure", "uvicorn", "gevent")
CALLGRIND_BARS = {"uvicorn": 0.33}
TLS_IMPLS = ("fibernet", "fibernet-nomonitor", "uvicorn")  # (--tls: the servers that take a certificate)


def wrk_command(params: dict, port: int, duration: float) -> list[str]:
    scheme, close = "https" if params.get("cert") else "http", ["-H", "Connection: close"]
    wrk = _wrk.command(params["wrk"], f"{scheme}://{HOST}:{port}{PATH}", params["wrk_threads"],
                       params["connections"], duration, *(close if params.get("close") else []))
    return ["taskset", "-c", str(params["wrk_cpu"]), *wrk]


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate for localhost and HOST, and its key (openssl)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", f"subjectAltName=DNS:localhost,IP:{HOST}",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def server_command(impl: str, port: int, params: dict, idle: bool = False) -> list[str]:
    """The hello server ``impl`` on ``port``, with its idle-connection options or the certificate."""
    if params.get("cert"):
        tls = ["--ssl-certfile", params["cert"], "--ssl-keyfile", params["key"]]
        return hello(impl, port, tls)
    return hello(impl, port, _idle.http_server_options(impl, params["conns"]) if idle else ())


# --------------------------------------------------------------------------
# driver side: one measurement (runs in its own subprocess, pinned to the wrk CPU)


def check_hello(port: int, cert: str | None = None) -> dict:
    """Two GETs over one connection (TLS, trusting ``cert``, if given): both must be 200
    'Hello, World!' text/plain, keep-alive."""
    if cert:
        context = ssl.create_default_context(cafile=cert)
        conn = http.client.HTTPSConnection(HOST, port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
    problems = []
    try:
        for _ in range(2):
            conn.request("GET", PATH)
            resp = conn.getresponse()
            body, ctype = resp.read(), resp.getheader("content-type", "")
            if resp.status != 200 or body != _serve.BODY or not ctype.startswith("text/plain"):
                problems.append(f"got {resp.status} {body!r} content-type {ctype!r}")
            if resp.will_close:
                problems.append("the server closes the connection after a response (no keep-alive)")
                break
    finally:
        conn.close()
    if problems:
        raise RuntimeError("; ".join(problems))
    return dict(resp.getheaders())


def run_wrk(params: dict, port: int, duration: float) -> tuple[dict, str]:
    return _wrk.run(wrk_command(params, port, duration), duration)


def measure_idle(server: ServerProcess, params: dict) -> dict:
    """``--idle-conns``: memory per idle keep-alive connection; every one must answer again."""
    rss = lambda: (_proc.rss_bytes(server.pid, descendants=True) or 0) // 1024  # noqa: E731
    # 2 s: longer than fibernet's park_after (1 s), so that every idle connection has parked
    result = _idle.measure(server.port, params["conns"], rss, 2.0, _idle.HTTP_REQUEST, _idle.http_answered,
                           again=True)
    result["summary"] = (f"{result['bytes_per_conn']:.0f} B/conn {_idle.describe(result)}, second request "
                         f"answered on {result['second_answered']}/{result['conns']}")
    return result


def measure_wrk(server: ServerProcess, params: dict) -> dict:
    run_wrk(params, server.port, params["warmup"])
    server.check_alive()
    box0 = _proc.cpu_user_steal(params["server_cpu"])
    cpu0, t0 = _proc.cpu_times(server.pid, descendants=True), time.perf_counter()
    result, text = run_wrk(params, server.port, params["duration"])
    cpu1, wall = _proc.cpu_times(server.pid, descendants=True), time.perf_counter() - t0
    box1 = _proc.cpu_user_steal(params["server_cpu"])
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    n, cpu = result["requests"], user + system
    per_req = lambda seconds: 1e6 * seconds / n if n else None  # noqa: E731
    result.update(cpu_seconds=cpu, wall_seconds=wall, cpu_us_per_req=per_req(cpu),
                  user_us_per_req=per_req(user), sys_us_per_req=per_req(system), cpu_util=cpu / wall,
                  # what else ran on the server's CPU meanwhile (other processes; noise), and steal
                  others_util=max(0.0, box1[0] - box0[0] - cpu) / wall, steal_util=(box1[1] - box0[1]) / wall,
                  rss=_proc.rss_bytes(server.pid), error_total=sum(result["errors"].values()),
                  wrk_output=text)
    return result


def dispatch(workload: str, impl: str, params: dict) -> dict:
    idle = workload == IDLE
    if idle:
        _idle.raise_nofile()  # (the server inherits it)
    port = _bench.free_port(HOST)
    cmd = server_command(impl, port, params, idle)
    with ServerProcess(cmd, params["server_cpu"], port, params["start_timeout"]) as server:
        try:
            headers = check_hello(port, params.get("cert"))
            result = (measure_idle if idle else measure_wrk)(server, params)
            server.check_alive()
        except Exception as exc:
            server.stop(5.0)
            raise RuntimeError(f"{exc}\n{server.tail()}") from None
        stop_seconds, killed = server.stop()
        result["server_command"] = shlex.join(server.command)
        if not idle:
            result.update(response_headers=headers, stop_seconds=stop_seconds, killed=killed,
                          server_log=server.output())
            result["summary"] = (
                f"{result['cpu_us_per_req']:.1f} us CPU/req, {fmt_num(result['rps'])} req/s, CPU "
                f"{fmt_pct(result['cpu_util'])} (others on CPU {params['server_cpu']}: "
                f"{fmt_pct(result['others_util'])}), errors {result['error_total']}, stop {stop_seconds:.1f}s"
                + (" (SIGKILLed)" if killed else ""))
    return result


# --------------------------------------------------------------------------
# --profile: fibernet under cProfile and wrk


def profile_fibernet(args, params: dict) -> int:
    """Serve fibernet's hello app under cProfile (pinned like the benchmark) while wrk runs for
    ``--duration`` s, stop it, and print the top functions by own time, per request."""
    import pstats

    port, out = _bench.free_port(HOST), args.profile
    cmd = _serve.command("hello_profile", "--out", out, "--clock", args.profile_clock, "--target",
                         args.profile_target, host=HOST, port=port)
    print(f"command: {_bench.command_line()}\nserver:  {shlex.join(pinned(cmd, params['server_cpu']))}\n"
          f"load:    {shlex.join(wrk_command(params, port, args.duration))}", flush=True)
    with ServerProcess(cmd, params["server_cpu"], port, params["start_timeout"]) as server:
        try:
            check_hello(port)  # 2 requests
            result, text = run_wrk(params, port, args.duration)
        finally:
            server.stop(30)  # (it writes the stats as it stops)
    print(text)
    requests, stats = result["requests"] + 2, pstats.Stats(out)
    total = stats.total_tt
    print(f"profiled ({args.profile_clock} clock): {requests} requests, {total:.3f} s of profiled time = "
          f"{1e6 * total / requests:.1f} us/request\n(cProfile inflates Python-heavy code several-fold: "
          "compare shares and calls/req, not absolute times)\n")
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in sorted(
            stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[: args.profile_top]:
        short = os.path.relpath(filename, ROOT) if filename.startswith(ROOT) else os.path.basename(filename)
        rows.append([f"{nc / requests:.2f}", f"{1e6 * tt / requests:.2f}", f"{100 * tt / total:.1f}%",
                     f"{1e6 * tt / nc:.2f}" if nc else "-", f"{1e6 * ct / requests:.2f}",
                     func if filename == "~" else f"{short}:{line}({func})"])
    print(_bench.format_table(["calls/req", "tottime us/req", "share", "us/call", "cumtime us/req",
                               "function"],
                              rows))
    print(f"\nstats written to {out} (python -m pstats {out})")
    return 0


# --------------------------------------------------------------------------
# parent side: summaries and tables


def summarise(samples: _bench.Samples, impls: list[str]) -> list[dict]:
    medians = ("user_us_per_req", "sys_us_per_req", "rps", "cpu_util", "rss")
    ours_rps, rows = samples.median(WORKLOAD, "fibernet", "rps"), []
    for row in _bench.summary_rows(samples, WORKLOAD, impls, "cpu_us_per_req", medians, keep_empty=True):
        impl, results = row["impl"], samples.results.get((WORKLOAD, row["impl"]), [])
        kinds = sum((Counter(r["errors"]) for r in results), Counter())  # (keeps the kinds above 0)
        rows.append({**row, "label": IMPLS[impl][0], "issue_us": IMPLS[impl][1],
                     "failed_rounds": row["errors"], "errors": kinds.total(), "error_kinds": dict(kinds),
                     "others_util": max(samples.values(WORKLOAD, impl, "others_util"), default=None),
                     "rps_ratio": None if impl == "fibernet" else _bench.ratio(ours_rps, row["rps"]),
                     "stop_seconds": max((r["stop_seconds"] for r in results), default=None),
                     "killed": sum(r["killed"] for r in results)})
    return rows


def check_bars(rows: list[dict], samples: _bench.Samples, tls: bool = False) -> list[dict]:
    """The CPU bars (plain HTTP only: TLS costs alike everywhere) and no errors of fibernet's."""
    checks = [_bench.Bar(WORKLOAD, "cpu_us_per_req", f"fibernet CPU/req <= {limit:g}x {IMPLS[peer][0]}",
                         peer=peer, max_ratio=limit, unit="us").check(samples)
              for peer, limit in BARS.items() if peer in {r["impl"] for r in rows} and not tls]
    ours = next(r for r in rows if r["impl"] == "fibernet")
    kinds = f" {ours['error_kinds']}" if ours["error_kinds"] else ""
    checks.append({"bar": "fibernet: no errors (non-2xx, socket errors, failed runs)",
                   "measured": f"{ours['errors']} errors{kinds} in {ours['rounds']} runs, "
                               f"{ours['failed_rounds']} failed runs",
                   "pass": ours["errors"] == 0 and ours["failed_rounds"] == 0 and ours["rounds"] > 0})
    return checks


def render_rows(rows: list[dict]) -> str:
    def errors(r: dict) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["error_kinds"].items()))
        return f"{r['errors']}" + (f" ({kinds})" if kinds else "") + (
            f"; {r['failed_rounds']} runs FAILED" if r["failed_rounds"] else "")

    table = [[r["label"], fmt_fixed(r["cpu_us_per_req"]), fmt_pct(r["spread"]),
              fmt_fixed(r["user_us_per_req"]) + " / " + fmt_fixed(r["sys_us_per_req"]),
              fmt_num(r["rps"]), fmt_pct(r["cpu_util"]), fmt_pct(r["others_util"]),
              "-" if r["rss"] is None else f"{r['rss'] / 2**20:.0f}", errors(r), fmt_ratio(r["ratio"]),
              fmt_ratio(r["rps_ratio"]),
              "-" if r["issue_us"] is None else f"{r['issue_us']:g}"] for r in rows]
    return _bench.format_table(["server", "CPU us/req", "spread", "user / sys us", "req/s", "server CPU",
                                "others on CPU*", "RSS MiB", "errors", "fibernet ratio (CPU)",
                                "fibernet ratio (req/s)", "issue ref us/req"], table)


def floor_estimate(rows: list[dict], server_cpu: int) -> dict | None:
    """The greenlet floor plus what fibernet's HTTP layer costs over a bare parse (measured
    without I/O by ``http_floor.py --layer``, pinned to the server CPU), beside the uvicorn bar."""
    by_impl = {r["impl"]: r for r in rows}
    floor, uvicorn = by_impl.get("greenlet-floor"), by_impl.get("uvicorn")
    if not floor or not uvicorn or floor["cpu_us_per_req"] is None or uvicorn["cpu_us_per_req"] is None:
        return None
    cmd = ["taskset", "-c", str(server_cpu), sys.executable, os.path.join(HERE, "http_floor.py"), "--layer",
           "--json"]
    layer = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
                       .stdout.strip().splitlines()[-1])
    return {"greenlet_floor_us": floor["cpu_us_per_req"], **layer,
            "lower_bound_us": floor["cpu_us_per_req"] + layer["extra_us"],
            "bar_us": BARS["uvicorn"] * uvicorn["cpu_us_per_req"]}


def render_floor(est: dict) -> str:
    return (f"floor: a greenlet per connection with nothing else {est['greenlet_floor_us']:.2f} us/req"
            f" + fibernet's HTTP layer over a bare parse {est['extra_us']:.2f} us (without I/O:"
            f" {est['layer_us']:.2f} vs {est['bare_parse_us']:.2f})\n"
            f"       = {est['lower_bound_us']:.2f} us/req for greenlets doing the HTTP work, no runtime "
            f"at all; the uvicorn bar allows {est['bar_us']:.2f}")


def check_idle(rows: list[dict]) -> list[dict]:
    ours = next(r for r in rows if r["impl"] == "fibernet")
    value = ours["bytes_per_conn"]
    bar = f"fibernet: idle keep-alive HTTP connection <= {IDLE_BAR_BYTES} B, every one answers again"
    return [{"bar": bar,
             "measured": None if value is None else f"{value:.0f} B/conn, second requests all answered: "
                                                    f"{ours['second_ok']}",
             "pass": None if value is None else value <= IDLE_BAR_BYTES and ours["second_ok"]}]


# --------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = _bench.parser(__doc__, quick="1 round of 2 s (smoke run)", cpu=None, timeout=120,
                           duration="measured wrk run, seconds (default 5, --quick 2)",
                           warmup="wrk warm-up run, seconds (default 1)")
    add = parser.add_argument
    add("--connections", type=int, default=100, help="wrk -c (default 100)")
    add("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    add("--server-cpu", type=int, default=0, help="CPU the server is pinned to (default 0)")
    add("--wrk-cpu", type=int, default=1, help="CPU wrk (and the driver) is pinned to (default 1)")
    add("--impls", help=f"comma list out of {','.join(IMPLS)} (default: all; --callgrind: "
        f"{','.join(CALLGRIND_IMPLS)}, and fibernet-pure)")
    _callgrind.options(parser, "request")
    add("--tls", action="store_true", help="over TLS, one self-signed certificate (openssl): "
        f"{', '.join(TLS_IMPLS)} (default: fibernet,uvicorn); https_hello runs this")
    add("--close", action="store_true",
        help="wrk sends Connection: close (with --tls: a handshake per request)")
    add("--idle-conns", type=int, metavar="N",
        help="instead of wrk: memory per idle keep-alive connection at N "
        "connections (default impls then: fibernet,uvicorn,gevent)")
    add("--start-timeout", type=float, default=30, help="seconds a server may take to answer")
    add("--profile", metavar="OUT.prof",
        help="instead of the benchmark: run fibernet under cProfile while wrk "
        "runs for --duration s, print the top functions, save the stats")
    add("--profile-top", type=int, default=30, help="functions --profile prints (default 30)")
    add("--profile-target", choices=("fibernet", "fibernet-raw"), default="fibernet",
        help="what --profile serves: the hello app (default) or the peers/hello_raw.py TCP handler")
    add("--profile-clock", choices=("cpu", "wall"), default="cpu",
        help="cProfile's timer: the thread's CPU time (default) or wall time")
    args = _bench.parse(parser, argv, {"rounds": 1, "duration": 2.0, "warmup": 1.0},
                        {"rounds": 3, "duration": 5.0, "warmup": 1.0})
    if args.callgrind:
        args.impls = _bench.comma_list(parser, args.impls or ",".join(CALLGRIND_IMPLS),
                                       (*IMPLS, "fibernet-pure"), "--impls")
        return args
    known, default = (TLS_IMPLS, "fibernet,uvicorn") if args.tls else (IMPLS, ",".join(IMPLS))
    if args.idle_conns:
        default = "fibernet,uvicorn,gevent"
    args.impls = _bench.comma_list(parser, args.impls or default, known, "--impls")
    if args.tls and args.idle_conns:
        parser.error("--tls and --idle-conns: one at a time")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    if args.server_cpu == args.wrk_cpu:
        parser.error("--server-cpu and --wrk-cpu must differ")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.callgrind:
        command = lambda impl, port: hello(impl, port, cli=FIBERNET_CLI)  # noqa: E731
        return _callgrind.main(args, [("HTTP hello", _callgrind.http_exchange(PATH))], command,
                               CALLGRIND_BARS)
    for cpu in (args.server_cpu, args.wrk_cpu):
        _bench.check_cpu(cpu)
    if not shutil.which("taskset"):
        raise SystemExit("taskset not found (util-linux)")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    params = {"duration": args.duration, "warmup": args.warmup, "connections": args.connections,
              "wrk_threads": args.wrk_threads, "server_cpu": args.server_cpu, "wrk_cpu": args.wrk_cpu,
              "wrk": shutil.which("wrk"), "start_timeout": args.start_timeout, "conns": args.idle_conns,
              "close": args.close}
    if args.profile:
        return profile_fibernet(args, params)
    with tempfile.TemporaryDirectory(prefix="http-hello-") as tmp:
        if args.tls:
            params["cert"], params["key"] = make_certificate(tmp)
        return run(args, params)


def run(args, params: dict) -> int:
    plan = [(IDLE if args.idle_conns else WORKLOAD, impl, params) for impl in args.impls]
    lines = [f"servers (pinned to CPU {args.server_cpu}, PORT = a free port):"]
    for impl in args.impls:
        line = shlex.join(pinned(server_command(impl, 0, params, bool(args.idle_conns)), args.server_cpu))
        lines.append(f"  {impl:<13} " + line.replace("--port 0", "--port PORT"))
    if not args.idle_conns:
        for duration, what in ((args.warmup, "warm-up"), (args.duration, "measured")):
            line = shlex.join(wrk_command(params, 0, duration)).replace(":0/", ":PORT/")
            lines.append(f"{'load: ' if what == 'warm-up' else '      '}{line}   ({what})")
    report = partial(report_idle if args.idle_conns else report_wrk, args=args)
    return _bench.run(__file__, args, plan, report, pin="wrk_cpu", intro="\n" + "\n".join(lines))


def report_idle(samples: _bench.Samples, args) -> tuple[dict, str]:
    rows = _idle.summarise(samples, args.impls)
    checks = check_idle(rows)
    return {"rows": rows, "checks": checks}, (
        "Memory per idle keep-alive HTTP connection (server VmRSS growth / connections), median of "
        f"{args.rounds} round(s):\n{_idle.render(rows)}\n\n{_bench.render_bars(checks, 'bar')}")


def report_wrk(samples: _bench.Samples, args) -> tuple[dict, str]:
    rows = summarise(samples, args.impls)
    checks, floor = check_bars(rows, samples, args.tls), floor_estimate(rows, args.server_cpu)
    text = f"{render_rows(rows)}\n\n{_bench.render_bars(checks, 'bar')}"
    if args.tls:
        mode = "a handshake per request (Connection: close)" if args.close else "keep-alive"
        text = (f"GET /hello over TLS, {mode}, wrk -t{args.wrk_threads} -c{args.connections}, "
                f"{args.rounds} x {args.duration:g} s\n{text}")
    if floor is not None:
        text += f"\n\n{render_floor(floor)}"
    stops = [f"{r['impl']} {r['stop_seconds']:.1f}s" + (f" ({r['killed']} SIGKILLed)" * bool(r["killed"]))
             for r in rows if r["stop_seconds"] is not None]
    return {"rows": rows, "checks": checks, "floor": floor}, text + (
        "\n\nCPU us/req = server utime+stime during the measured wrk run / requests completed (median of "
        f"{args.rounds}; user / sys: the two parts, medians);\nserver CPU = that CPU time / wall time; "
        "fibernet ratio (CPU) = fibernet's CPU us/req / the row's (below 1: fibernet spends less);\n"
        "fibernet ratio (req/s) = fibernet's req/s / the row's.\n* others on CPU: the largest share, "
        "over rounds, of the server CPU's time used by other processes\n  during the run (noise; "
        "ideally ~0%).\nslowest stop after SIGTERM: " + ", ".join(stops))


if __name__ == "__main__":
    _bench.main(dispatch, main)

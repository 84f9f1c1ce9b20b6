"""The measuring half of ``loadtest/compare.py``: the servers (fibernet on this interpreter,
the peers on the peers' interpreter), one measurement (``measure``, run in a driver process
pinned to the load CPUs), wrk for ``--wrk-check``, and the peers' environment.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import time

import _proc
import _wrk
from _bench import fmt_num, free_port
from _server import ServerProcess
from peers import _serve

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

HOST = "127.0.0.1"
TCP_IMPLS = ("fibernet", "asyncio-streams", "uvloop-streams", "uvloop-proto", "gevent", "trio")
TCP_EXTRA = ("raw-epoll", "fibernet-t2")
HTTP_IMPLS = ("fibernet", "uvicorn", "gevent", "aiohttp")
HTTP_EXTRA = ("uvloop-proto",)
NEEDS = {  # modules a peer server imports
    "gevent": ["gevent"],
    "trio": ["trio"],
    "uvloop-streams": ["uvloop"],
    "uvloop-proto": ["uvloop", "httptools"],
    "uvicorn": ["uvicorn", "uvloop", "httptools"],
    "aiohttp": ["aiohttp"],
}
WORKLOADS = {"echo": "tcp", "churn": "tcp", "http": "http", "http-open": "http"}


# --------------------------------------------------------------------------
# servers


def server_command(kind: str, impl: str, port: int, peers_python: str) -> list[str]:
    py = None if impl.startswith("fibernet") else peers_python
    if kind == "tcp":
        from echo import SERVERS

        return _serve.command(*SERVERS[impl], python=py, host=HOST, port=port)
    from http_hello import FIBERNET_CLI, fibernet_serve, server_command

    if impl == "fibernet":
        return fibernet_serve(FIBERNET_CLI, "fibernet.examples.hello:app", port)
    return server_command(impl, port, py)


def load_cpu_seconds() -> float:
    """CPU seconds of the load side: this driver and its finished children (wrk, load
    processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load_sleeps() -> int:
    """Voluntary context switches of the load side (this driver and its finished children):
    how often the load generator went to sleep waiting for answers.  Each of its sleeps
    costs the server a wake-up of the generator when the next answer is sent."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_nvcsw + kids.ru_nvcsw


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid``: how often it went to sleep
    (in epoll_wait, mostly).  Per request, it says how much work each wake-up found."""
    return _proc.ctx_switches(pid, voluntary_only=True)


def server_cpu_seconds(pid: int) -> float:
    return sum(_proc.cpu_times(pid, descendants=True))


# --------------------------------------------------------------------------
# one measurement (in a driver child pinned to the load CPUs)


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
    base.update(over)
    return load.Config(**base)


def run_wrk(port: int, params: dict, duration: float) -> dict:
    url = f"http://{HOST}:{port}/hello"
    cmd = _wrk.command(params["wrk"], url, 1, params["connections"], duration)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr}{proc.stdout}")
    parsed = _wrk.result(proc.stdout)
    lat = {p: parsed["latency_us"][p] / 1e3 for p in ("50", "90", "99")}  # ms
    return {
        "rate": parsed["rps"], "requests": parsed["requests"], "p50": lat["50"], "p90": lat["90"],
        "p99": lat["99"], "errors": sum(parsed["errors"].values()), "error_kinds": parsed["errors"],
        "output": proc.stdout,
    }


def measure(workload: str, impl: str, params: dict) -> dict:
    import load

    kind = "http" if workload == "wrk-check" else WORKLOADS[workload]
    impl_server = "fibernet" if workload == "wrk-check" else impl
    port = free_port(HOST)
    cmd = server_command(kind, impl_server, port, params["peers_python"])
    server = ServerProcess(cmd, params["server_cpu"], port, params["start_timeout"])
    try:
        probe_workload = "echo" if kind == "tcp" else "http"
        check = load.run_load(load_config(probe_workload, port, params, connections=2, count=20, rate=None))
        if check.errors or check.requests != 20:
            raise RuntimeError(f"the server answers wrongly: {check.errors} {check.error_samples}")
        tool = impl if workload == "wrk-check" else "load"
        if tool == "wrk":
            run_wrk(port, params, params["warmup"])
        else:
            load.run_load(
                load_config(workload if kind == "tcp" else "http", port, params, duration=params["warmup"])
            )
        cpu0, t0 = server_cpu_seconds(server.pid), time.perf_counter()
        load0 = load_cpu_seconds()
        sleeps0 = load_sleeps()
        wake0 = wakeups(server.pid)
        if tool == "wrk":
            out = run_wrk(port, params, params["duration"])
        else:
            wl = "http" if workload == "wrk-check" else workload
            res = load.run_load(
                load_config(wl, port, params, duration=params["duration"], processes=params["processes"])
            )
            lat = res.latency()
            out = {
                "rate": res.rate, "requests": res.requests, "p50": lat["p50"], "p90": lat["p90"],
                "p99": lat["p99"], "max": lat["max"], "errors": res.error_total, "error_kinds": res.errors,
            }
        cpu = server_cpu_seconds(server.pid) - cpu0
        load_cpu = load_cpu_seconds() - load0
        slept = load_sleeps() - sleeps0
        woke = wakeups(server.pid) - wake0
        wall = time.perf_counter() - t0
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server died during the run\n{server.tail()}")
    except Exception as exc:
        raise RuntimeError(f"{exc}\n{server.tail()}") from None
    finally:
        server.stop(10)
        server.log.close()
    n = out["requests"]
    out.update(
        server_cpu_s=cpu, server_us_per_msg=1e6 * cpu / n if n else None, server_cpu_util=cpu / wall,
        load_cpu_util=load_cpu / wall, server_wakeups_per_msg=woke / n if n else None,
        load_us_per_msg=1e6 * load_cpu / n if n else None, load_sleeps_per_msg=slept / n if n else None,
        server_command=shlex.join(server.command),
    )
    out["summary"] = (
        f"{fmt_num(out['rate'])}/s p50 {fmt_num(out['p50'])} ms p99 {fmt_num(out['p99'])} ms, "
        f"server {fmt_num(out['server_us_per_msg'])} us/msg CPU {100 * out['server_cpu_util']:.0f}%, "
        f"load CPU {100 * out['load_cpu_util']:.0f}% {fmt_num(out['load_us_per_msg'])} us/msg "
        f"{fmt_num(out['load_sleeps_per_msg'])} sleeps/msg, "
        f"errors {out['errors']}"
    )
    return out

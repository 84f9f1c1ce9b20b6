"""Actors benchmark: calls per second between two actors, beside gevent (a greenlet and two
queues) and asyncio (a task and futures); call: no timeout, call-t5: a 5 s timeout on each;
fibernet-2sched: the callee on a second scheduler.  ``--profile``: cProfile of fibernet's call
path.  docs/pages/benchmarks.md, "Actors".
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
from _bench import fmt_num  # noqa: E402

WARMUP = 2_000
TIMEOUTS = {"call": None, "call-t5": 5.0}


def timed(call, n: int, profiler=None) -> dict:
    """``call(i)`` for a warm-up, then n times timed (wall and CPU): the rates."""
    for i in range(WARMUP):
        assert call(i) == i
    if profiler is not None:
        profiler.enable()
    c0, t0 = time.process_time(), time.perf_counter()
    total = 0
    for i in range(n):
        total += call(i)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler is not None:
        profiler.disable()
    assert total == n * (n - 1) // 2
    return {"rate": n / seconds, "cpu_rate": n / cpu, "seconds": seconds, "cpu_seconds": cpu, "n": n}


def run_fibernet(n: int, timeout: float | None, threads: int, profile: bool = False) -> dict:
    import cProfile
    import io
    import pstats
    import threading

    import fibernet as fn
    from fibernet.actors import Actor, start

    profiler = cProfile.Profile() if profile else None

    class Bench(Actor):  # the callee answers with the argument; the caller (given a callee) times it
        def __init__(self, callee=None) -> None:
            self.callee, self.landed = callee, threading.Event()

        def started(self) -> None:
            self.landed.set()

        def handle_call(self, body):
            if body == "where":
                return fn.current_scheduler().name, threading.get_ident()
            if self.callee is None:
                return body
            return timed(partial(self.callee.call, timeout=timeout), n, profiler)

    def main():
        callee = Bench()
        ref = start(callee, parallel=threads > 1)
        # with threads, block this scheduler's thread until another one has stolen the callee
        if threads > 1 and not callee.landed.wait(10):
            raise RuntimeError("no scheduler started the callee")
        caller = start(Bench(ref))
        return caller.call("where"), ref.call("where"), caller.call("go", timeout=None)

    (caller, callee, result) = fn.run(main, threads=threads)
    if (caller == callee) != (threads == 1):
        raise RuntimeError(f"caller and callee placed wrongly for threads={threads}: {caller}, {callee}")
    result.update(caller_scheduler=caller[0], callee_scheduler=callee[0], same_thread=caller[1] == callee[1])
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        result["profile"] = out.getvalue()
    return result


def run_gevent(n: int, timeout: float | None) -> dict:
    import gevent
    from gevent.queue import Queue

    inbox, reply = Queue(1024), Queue(1)

    def callee() -> None:
        while (item := inbox.get())[0] is not None:
            item[1].put(item[0])

    def call(i: int):
        inbox.put((i, reply))
        return reply.get(timeout=timeout)

    server = gevent.spawn(callee)
    result = gevent.spawn(timed, call, n).get()
    inbox.put((None, None))
    server.join()
    return result


def run_asyncio(n: int, timeout: float | None) -> dict:
    import asyncio

    async def main() -> tuple[float, float]:
        inbox: asyncio.Queue = asyncio.Queue(1024)
        loop, wait_for = asyncio.get_running_loop(), asyncio.wait_for

        async def callee() -> None:
            while (item := await inbox.get())[0] is not None:
                item[1].set_result(item[0])

        async def caller(count: int) -> tuple[float, float]:
            c0, t0 = time.process_time(), time.perf_counter()
            total = 0
            for i in range(count):
                fut = loop.create_future()
                await inbox.put((i, fut))
                total += await fut if timeout is None else await wait_for(fut, timeout)
            assert total == count * (count - 1) // 2
            return time.perf_counter() - t0, time.process_time() - c0

        server = asyncio.create_task(callee())
        await asyncio.create_task(caller(WARMUP))
        seconds, cpu = await asyncio.create_task(caller(n))
        await inbox.put((None, None))
        await server
        return seconds, cpu

    seconds, cpu = asyncio.run(main())
    return {"rate": n / seconds, "cpu_rate": n / cpu, "seconds": seconds, "cpu_seconds": cpu, "n": n}


def dispatch(workload: str, impl: str, params: dict) -> dict:
    n = params["n"]
    if workload == "profile":
        result = run_fibernet(n, params["timeout"], 1, profile=True)
        return {**result, "summary": f"{fmt_num(result['rate'])} calls/s under cProfile"}
    timeout = TIMEOUTS[workload]
    if impl.startswith("fibernet"):
        result = run_fibernet(n, timeout, 1 if impl == "fibernet" else 2)
    else:
        result = {"gevent": run_gevent, "asyncio": run_asyncio}[impl](n, timeout)
    result["summary"] = f"{fmt_num(result['rate'])} calls/s"
    if "callee_scheduler" in result:
        result["summary"] += (f" (caller on {result['caller_scheduler']}, "
                              f"callee on {result['callee_scheduler']})")
    return result


# -- parent side -------------------------------------------------------------------------------

IMPLS = ("fibernet", "gevent", "asyncio", "fibernet-2sched", "fibernet-2sched-2cpu")
BAR_PEERS = ("gevent", "asyncio")
BAR_RATIO = 1.0
NEEDS = {"gevent": ("gevent",)}  # the modules a peer imports; missing, its rows are skipped
METRICS = (("rate", "calls/s, wall clock (more=better)"), ("cpu_rate", "calls per CPU second (more=better)"))
COLUMNS = ["workload", "impl", "n", ("median", "value"), "unit", "spread", ("fibernet ratio", "ratio"), "bar",
           "result"]


def summarise(samples: _bench.Samples, args) -> list[dict]:
    """One row per (metric, workload, impl).  The bars apply to the wall-clock rate; the rate
    per CPU second (the process's CPU time over the timed loop, all its threads) is shown as it
    is less sensitive to a busy machine."""
    rows = []
    for key, unit in METRICS:
        for workload in args.workloads:
            ours = _bench.median(samples.values(workload, "fibernet", key))
            for impl in args.impls:
                if impl in args.skipped:
                    rows.append(dict(_bench.skipped_row(workload, key, impl, unit), n=None))
                elif samples.values(workload, impl, key) or samples.errors.get((workload, impl)):
                    value = _bench.median(samples.values(workload, impl, key))
                    ratio = None if impl == "fibernet" else _bench.ratio(ours, value)
                    bars = []
                    if impl in BAR_PEERS and key == "rate":
                        verdict = None if ratio is None else ratio >= BAR_RATIO
                        bars = [(f"fibernet >= {BAR_RATIO:g}x {impl}", verdict)]
                    n = (samples.results.get((workload, impl)) or [{}])[0].get("n")
                    rows.append(_bench.row(samples, workload, impl, key, unit, ratio, bars, n=n))
    return rows


def parse_args(argv=None):
    p = _bench.parser(__doc__, rounds=5)
    p.add_argument("--n", type=int, help="calls per measurement on one scheduler (default 100000)")
    p.add_argument("--cross-n", type=int, help="calls per measurement across two schedulers (default 30000)")
    p.add_argument("--cpus2", default="0,1",
                   help="CPUs for fibernet-2sched-2cpu (default 0,1; 'none' to not pin)")
    _bench.comma_option(p, "impls", IMPLS)
    _bench.comma_option(p, "workloads", TIMEOUTS)
    p.add_argument("--profile", action="store_true",
                   help="instead of the comparison: cProfile fibernet's call path on one scheduler "
                   "(top 25 by tottime)")
    quick, full = {"rounds": 1, "n": 10_000, "cross_n": 3_000}, {"rounds": 5, "n": 100_000, "cross_n": 30_000}
    args = _bench.parse(p, argv, quick, full, {"impls": IMPLS, "workloads": TIMEOUTS}, NEEDS)
    args.cpus2 = None if args.cpus2.lower() == "none" else args.cpus2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.profile:
        _bench.check_cpu(args.cpu)
        print(f"command: {_bench.command_line()}", flush=True)
        for workload in args.workloads:
            params = {"n": args.n, "timeout": TIMEOUTS[workload]}
            result = _bench.run_child(__file__, "profile", "fibernet", params, args.cpu, args.timeout)
            print(f"== fibernet {workload} (timeout={params['timeout']}), one scheduler: {result['summary']}")
            print(result["profile"])
        return 0
    if "fibernet-2sched-2cpu" in args.impls:
        _bench.check_cpu(args.cpus2)
    plan = [
        (workload, impl, {"n": args.cross_n if "2sched" in impl else args.n},
         *([args.cpus2] if impl == "fibernet-2sched-2cpu" else []))
        for workload in args.workloads for impl in args.impls if impl not in args.skipped
    ]

    def report(samples: _bench.Samples) -> tuple[dict, str]:
        rows = summarise(samples, args)
        return {"rows": rows}, _bench.table(rows, COLUMNS) + (
            "\n\nfibernet ratio = fibernet (one scheduler) median / row median for the same workload: "
            "above 1 means fibernet is faster.\ncall = no timeout; call-t5 = a 5 s timeout on every call "
            "(fibernet's default).  fibernet-2sched* = caller and callee on two scheduler threads.")

    return _bench.run(__file__, args, plan, report, "actors")


if __name__ == "__main__":
    _bench.main(dispatch, main)

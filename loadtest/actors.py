"""Actors benchmark: calls per second between two actors, beside gevent and asyncio.

Run from the repository root::

    python loadtest/actors.py              # full run: 5 interleaved rounds (~4 min)
    python loadtest/actors.py --quick      # smoke run: small N, 1 round
    python loadtest/actors.py --json out/actors.json
    python loadtest/actors.py --profile    # cProfile of fibernet's call path (top 25 by tottime)

What it measures: one actor calls another N times (default 100,000) and the callee answers
each call with its argument.  Each measurement runs in a fresh subprocess pinned with
``taskset -c CPU``; rounds are interleaved (for round: for workload: for impl: run), after a
warm-up of 2,000 calls in the same process.

workloads
    ``call``: no timeout -- fibernet ``ref.call(i, timeout=None)``, gevent
    ``reply.get()``, asyncio ``await fut``.
    ``call-t5``: a 5 s timeout on every call, which is fibernet's default
    (``ref.call(i)`` is ``timeout=5.0``) -- fibernet ``ref.call(i, timeout=5)``, gevent
    ``reply.get(timeout=5)``, asyncio ``await asyncio.wait_for(fut, 5)``.

implementations
    ``fibernet``: ``fibernet.run(main)`` on one scheduler; the caller is an actor
    (``fibernet.actors.Actor``) whose ``handle_call`` runs the loop of N calls to the callee
    actor, both started with ``fibernet.actors.start``.
    ``gevent``: "a greenlet and two queues": the callee greenlet loops on
    ``inbox.get()`` (``gevent.queue.Queue(1024)``, the size of fibernet's default mailbox)
    and answers on the caller's reply queue (one ``Queue(1)``, reused for every call).
    ``asyncio``: "a task and futures": the callee task loops on ``await inbox.get()``
    (``asyncio.Queue(1024)``) and sets the result of a fresh future per call.
    ``fibernet-2sched``: ``fibernet.run(main, threads=2)``, the callee started with
    ``parallel=True`` and stolen by the second scheduler (the first one's thread waits until
    the callee has started elsewhere; the child checks the two actors run on different
    schedulers and threads and fails otherwise).  Pinned to the same one CPU as the rest.
    ``fibernet-2sched-2cpu``: the same, pinned to two CPUs (``--cpus2``): every call hands
    the GIL from one thread to the other and back, and wakes the other scheduler through its
    eventfd.  Informational: no bar.

How to read the table: ``median`` over rounds; ``spread`` = (max - min) / median, a noise
indicator; ``fibernet ratio`` = fibernet's median (one scheduler, same workload) / the row's
median: above 1 means fibernet is faster than that row.  ``bar`` is fibernet's target
(the acceptance bar): at least 1.0x gevent's and asyncio's rates on one scheduler (applied to both
workloads, since a call with a 5 s timeout is fibernet's default).  The exit status is 1 if
a bar fails or a measurement errors.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root, for `import fibernet`
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
from _bench import fmt_num  # noqa: E402

WARMUP = 2_000
TIMEOUTS = {"call": None, "call-t5": 5.0}


# --------------------------------------------------------------------------
# child side: one implementation, one workload


def run_fibernet(n: int, timeout: float | None, threads: int, profile: bool = False) -> dict:
    import threading

    import fibernet as fn
    from fibernet.actors import Actor, start

    class Callee(Actor):
        def __init__(self) -> None:
            self.landed = threading.Event()

        def started(self) -> None:
            self.landed.set()

        def handle_call(self, body):
            if body == "where":
                return fn.current_scheduler().name, threading.get_ident()
            return body

    class Caller(Actor):
        def __init__(self, callee) -> None:
            self.callee = callee

        def handle_call(self, body):
            if body == "where":
                return fn.current_scheduler().name, threading.get_ident()
            n, timeout = body
            callee = self.callee
            for i in range(WARMUP):
                assert callee.call(i, timeout=timeout) == i
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            c0, t0 = time.process_time(), time.perf_counter()
            total = 0
            for i in range(n):
                total += callee.call(i, timeout=timeout)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            if profiler is not None:
                profiler.disable()
            assert total == n * (n - 1) // 2
            return seconds, cpu, profiler

    def main():
        callee = Callee()
        ref = start(callee, parallel=threads > 1)
        if threads > 1:
            # Block this scheduler's thread until another scheduler has stolen the callee.
            if not callee.landed.wait(10):
                raise RuntimeError("no scheduler started the callee")
        caller = start(Caller(ref))
        places = {"caller": caller.call("where"), "callee": ref.call("where")}
        seconds, cpu, profiler = caller.call((n, timeout), timeout=None)
        return seconds, cpu, places, profiler

    seconds, cpu, places, profiler = fn.run(main, threads=threads)
    same = places["caller"] == places["callee"]
    if same != (threads == 1):
        raise RuntimeError(f"caller and callee placed wrongly for threads={threads}: {places}")
    result = {
        "rate": n / seconds, "cpu_rate": n / cpu, "seconds": seconds, "cpu_seconds": cpu, "n": n,
        "caller_scheduler": places["caller"][0], "callee_scheduler": places["callee"][0],
        "same_thread": places["caller"][1] == places["callee"][1],
    }
    if profiler is not None:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        result["profile"] = out.getvalue()
    return result


def run_gevent(n: int, timeout: float | None) -> dict:
    import gevent
    from gevent.queue import Queue

    inbox: Queue = Queue(1024)

    def callee() -> None:
        while True:
            body, reply = inbox.get()
            if body is None:
                return
            reply.put(body)

    def caller(count: int) -> float:
        reply: Queue = Queue(1)
        c0, t0 = time.process_time(), time.perf_counter()
        total = 0
        for i in range(count):
            inbox.put((i, reply))
            total += reply.get(timeout=timeout)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert total == count * (count - 1) // 2
        return seconds, cpu

    server = gevent.spawn(callee)
    gevent.spawn(caller, WARMUP).get()
    seconds, cpu = gevent.spawn(caller, n).get()
    inbox.put((None, None))
    server.join()
    return {"rate": n / seconds, "cpu_rate": n / cpu, "seconds": seconds, "cpu_seconds": cpu, "n": n}


def run_asyncio(n: int, timeout: float | None) -> dict:
    import asyncio

    async def main() -> float:
        inbox: asyncio.Queue = asyncio.Queue(1024)
        loop = asyncio.get_running_loop()

        async def callee() -> None:
            while True:
                body, fut = await inbox.get()
                if body is None:
                    return
                fut.set_result(body)

        async def caller(count: int) -> float:
            wait_for = asyncio.wait_for
            c0, t0 = time.process_time(), time.perf_counter()
            total = 0
            for i in range(count):
                fut = loop.create_future()
                await inbox.put((i, fut))
                total += await fut if timeout is None else await wait_for(fut, timeout)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert total == count * (count - 1) // 2
            return seconds, cpu

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
        result["summary"] = f"{fmt_num(result['rate'])} calls/s under cProfile"
        return result
    timeout = TIMEOUTS[workload]
    if impl == "fibernet":
        result = run_fibernet(n, timeout, 1)
    elif impl.startswith("fibernet-2sched"):
        result = run_fibernet(n, timeout, 2)
    elif impl == "gevent":
        result = run_gevent(n, timeout)
    elif impl == "asyncio":
        result = run_asyncio(n, timeout)
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    result["summary"] = f"{fmt_num(result['rate'])} calls/s"
    if "callee_scheduler" in result:
        result["summary"] += (
            f" (caller on {result['caller_scheduler']}, callee on {result['callee_scheduler']})"
        )
    return result


# --------------------------------------------------------------------------
# parent side

IMPLS = ("fibernet", "gevent", "asyncio", "fibernet-2sched", "fibernet-2sched-2cpu")
BAR_PEERS = ("gevent", "asyncio")
BAR_RATIO = 1.0
NEEDS = {"gevent": ("gevent",)}  # the modules a peer imports; missing, its rows are skipped


def build_plan(args) -> list[tuple]:
    plan = []
    for workload in args.workloads:
        for impl in args.impls:
            if impl in args.skipped:
                continue
            if impl == "fibernet-2sched-2cpu":
                plan.append((workload, impl, {"n": args.cross_n}, args.cpus2))
            elif impl == "fibernet-2sched":
                plan.append((workload, impl, {"n": args.cross_n}))
            else:
                plan.append((workload, impl, {"n": args.n}))
    return plan


METRICS = (("rate", "calls/s, wall clock (more=better)"), ("cpu_rate", "calls per CPU second (more=better)"))


def summarise(samples: _bench.Samples, args) -> list[dict]:
    """One row per (metric, workload, impl).  The bars apply to the wall-clock rate; the rate
    per CPU second (the process's CPU time over the timed loop, all its threads) is shown
    because it is less sensitive to a busy machine."""
    rows = []
    for key, unit in METRICS:
        for workload in args.workloads:
            ours = _bench.median(samples.values(workload, "fibernet", key))
            for impl in args.impls:
                if impl in args.skipped:
                    rows.append(dict(_bench.skipped_row(workload, key, impl, unit), n=None))
                    continue
                values = samples.values(workload, impl, key)
                errors = len(samples.errors.get((workload, impl), []))
                if not values and not errors:
                    continue
                value = _bench.median(values)
                ratio = None if impl == "fibernet" else _bench.ratio(ours, value)
                bar = f"fibernet >= {BAR_RATIO:g}x {impl}" if impl in BAR_PEERS and key == "rate" else ""
                verdict = None
                if bar:
                    verdict = None if ratio is None else ratio >= BAR_RATIO
                if errors:
                    verdict = False
                rows.append(
                    {
                        "metric": key, "unit": unit, "workload": workload, "impl": impl, "value": value,
                        "spread": _bench.spread(values), "rounds": len(values), "errors": errors,
                        "ratio": ratio, "bar": bar, "pass": verdict,
                        "n": (samples.results.get((workload, impl)) or [{}])[0].get("n"),
                    }
                )
    return rows


def render_rows(rows: list[dict]) -> str:
    table = [
        [
            r["workload"], r["impl"], fmt_num(r["n"]), fmt_num(r["value"]), r["unit"],
            _bench.fmt_pct(r["spread"]), _bench.fmt_ratio(r["ratio"]), r["bar"] or "-", _bench.result_cell(r),
        ]
        for r in rows
    ]
    headers = ["workload", "impl", "n", "median", "unit", "spread", "fibernet ratio", "bar", "result"]
    return _bench.format_table(headers, table)


def parse_args(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, --quick 1)")
    parser.add_argument("--n", type=int, help="calls per measurement on one scheduler (default 100000)")
    parser.add_argument(
        "--cross-n", type=int, help="calls per measurement across two schedulers (default 30000)"
    )
    parser.add_argument(
        "--cpu", default="1", help="CPU to pin every child to with taskset (default 1; 'none' to not pin)"
    )
    parser.add_argument(
        "--cpus2", default="0,1", help="CPUs for fibernet-2sched-2cpu (default 0,1; 'none' to not pin)"
    )
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list (default: %(default)s)")
    parser.add_argument("--workloads", default=",".join(TIMEOUTS), help="comma list (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    parser.add_argument(
        "--profile", action="store_true",
        help="instead of the comparison: cProfile fibernet's call path on one scheduler (top 25 by tottime)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="per-child timeout, seconds")
    args = parser.parse_args(argv)
    _bench.fill_defaults(
        args,
        {"rounds": 1, "n": 10_000, "cross_n": 3_000}
        if args.quick
        else {"rounds": 5, "n": 100_000, "cross_n": 30_000},
    )
    args.cpu = _bench.cpu_option(args.cpu)
    args.cpus2 = None if args.cpus2.lower() == "none" else args.cpus2
    args.impls = _bench.comma_list(parser, args.impls, IMPLS, "--impls")
    args.workloads = _bench.comma_list(parser, args.workloads, TIMEOUTS, "--workloads")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    args.skipped = _bench.missing_peers(args.impls, NEEDS)
    return args


def profile(args) -> int:
    for workload in args.workloads:
        timeout = TIMEOUTS[workload]
        result = _bench.run_child(
            __file__, "profile", "fibernet", {"n": args.n, "timeout": timeout}, args.cpu, args.timeout
        )
        print(f"== fibernet {workload} (timeout={timeout}), one scheduler: {result['summary']}")
        print(result["profile"])
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    _bench.check_cpu(args.cpu)
    if "fibernet-2sched-2cpu" in args.impls:
        _bench.check_cpu(args.cpus2)
    command = _bench.command_line()
    print(f"command: {command}", flush=True)
    if args.profile:
        return profile(args)
    plan = build_plan(args)
    _bench.note_skipped(args.skipped, "actors")
    print(_bench.describe_plan(__file__, plan, args.rounds, args.cpu), flush=True)
    samples = _bench.run_interleaved(__file__, plan, args.rounds, args.cpu, args.timeout)
    rows = summarise(samples, args)
    print()
    print(render_rows(rows))
    print(
        "\nfibernet ratio = fibernet (one scheduler) median / row median for the same workload: above 1 "
        "means fibernet is faster.\ncall = no timeout; call-t5 = a 5 s timeout on every call "
        "(fibernet's default).  fibernet-2sched* = caller and callee on two scheduler threads."
    )
    print(f"command: {command}")
    _bench.save_json(
        args.json, {"command": command, "args": vars(args), "rows": rows, "samples": samples.to_json()}
    )
    return _bench.exit_status(rows, samples)


if __name__ == "__main__":
    if _bench.is_child():
        sys.exit(_bench.serve_child(dispatch))
    sys.exit(main())

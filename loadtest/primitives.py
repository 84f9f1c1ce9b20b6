"""Primitives benchmark: fibernet beside gevent, asyncio, uvloop, trio and bare greenlets:
channel ping-pong (pingpong), spawn and join with bytes per fiber (spawn), and a choice of a
get and a timeout that must leave no timer or waiter behind (choice).  Each measurement in a
fresh pinned child, rounds interleaved; docs/pages/benchmarks.md, "Primitives".
"""

from __future__ import annotations

import gc
import os
import sys
from contextlib import asynccontextmanager
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
from _bench import Probe, fmt_num  # noqa: E402

LONG_TIMEOUT = 10.0  # seconds: must never fire during the choice loop
TIMED_OUT = "timed-out"  # what the timeout branch returns in every choice loop


def _timed_out(*_: object) -> str:
    return TIMED_OUT


def _work(i: int) -> int:
    return i


async def _awork(i: int) -> int:
    return i


def _choice_timeouts(n: int, params: dict):
    """(i, timeout) of the choice loop; the last odd iteration fires too, so a getter it failed
    to withdraw is still there at the end."""
    for i in range(n):
        fires = i % params["fire_every"] == 1 or i == n - 1
        yield i, LONG_TIMEOUT if i % 2 == 0 else params["tiny"] if fires else 0.0


def _is_wrong(i: int, result: object) -> bool:
    return result != (i if i % 2 == 0 else TIMED_OUT)


# -- runtimes with blocking put()/get(): fibernet, gevent ---------------------------------------


def _echo(ping, pong, n: int) -> None:
    for _ in range(n):
        pong.put(ping.get())


def _forward(go, ch) -> None:
    while (value := go.get()) is not None:
        ch.put(value)


class Sync:
    """The workloads for a runtime given as ``run(main)``, ``spawn``, ``join_all``,
    ``channel()`` (unbuffered), ``queue()`` and ``get_or_timeout(queue, t)``."""

    def pingpong(self, n: int, probe: Probe) -> None:
        def main() -> None:
            ping, pong = self.channel(), self.channel()
            echo = self.spawn(_echo, ping, pong, n)
            with probe:
                for i in range(n):
                    ping.put(i)
                    pong.get()
            self.join_all([echo])

        self.run(main)

    def spawn_join(self, n: int, probe: Probe) -> None:
        def main() -> int:
            with probe:
                return sum(self.join_all([self.spawn(_work, i) for i in range(n)]))

        assert self.run(main) == n * (n - 1) // 2

    def choice(self, n: int, params: dict, probe: Probe) -> dict:
        return self.run(lambda: self.choice_loop(n, params, probe, self.queue(), self.queue()))

    def choice_loop(self, n: int, params: dict, probe: Probe, go, ch, sample=None) -> dict:
        helper = self.spawn(_forward, go, ch)
        wrong = 0
        with probe:
            for i, timeout in _choice_timeouts(n, params):
                if timeout == LONG_TIMEOUT:
                    go.put(i)
                wrong += _is_wrong(i, self.get_or_timeout(ch, timeout))
                if sample is not None and (i % 1024 == 0 or timeout == params["tiny"]):
                    sample()  # regularly, and after each timer that fired on a parked getter
            go.put(None)
        self.join_all([helper])
        return {"wrong_results": wrong}


class Fibernet(Sync):
    def __init__(self) -> None:
        import fibernet as fn

        self.fn, self.run, self.spawn, self.channel = fn, fn.run, fn.spawn, fn.Channel
        self.queue = fn.Channel

    def join_all(self, fibers: list) -> list:
        return [f.join() for f in fibers]

    def get_or_timeout(self, ch, t: float):
        fn = self.fn
        return fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(t), _timed_out)))

    def choice(self, n: int, params: dict, probe: Probe) -> dict:
        """The loop, with live timers and channel waiters counted before and after it (and
        their peaks sampled inside it)."""

        def main() -> dict:
            sched = self.fn.current_scheduler()
            go, ch = self.queue(), self.queue()
            heap = lambda: len(getattr(getattr(sched, "_timers", None), "_heap", ()))  # noqa: E731

            def snapshot() -> dict:
                gc.collect()
                return {"timers": sched.pending_timers(), "heap": heap(), "ch_waiters": list(ch.waiting()),
                        "go_waiters": list(go.waiting()), "gc_objects": len(gc.get_objects())}

            peak = {"timers": 0, "heap": 0, "ch_waiters": 0}

            def sample() -> None:
                now = {"timers": sched.pending_timers(), "heap": heap(), "ch_waiters": sum(ch.waiting())}
                peak.update({k: max(v, peak[k]) for k, v in now.items()})

            before = snapshot()
            result = self.choice_loop(n, params, probe, go, ch, sample)
            after = snapshot()
            counts = lambda s: [s["timers"], *s["ch_waiters"], *s["go_waiters"]]  # noqa: E731
            left = sum(abs(a - b) for a, b in zip(counts(after), counts(before), strict=True))
            return {**result, "before": before, "after": after, "peak": peak, "left_behind": left}

        return self.run(main)


class Gevent(Sync):
    needs = ("gevent",)  # the modules it imports; missing, its rows are skipped

    def __init__(self) -> None:
        import gevent
        from gevent.queue import Channel, Empty, Queue

        self.gevent, self.Empty, self.spawn = gevent, Empty, gevent.spawn
        self.channel, self.queue = Channel, Queue

    def run(self, main):
        return main()  # in the main greenlet, the hub under it

    def join_all(self, greenlets: list) -> list:
        self.gevent.joinall(greenlets, raise_error=True)
        return [g.value for g in greenlets]

    def get_or_timeout(self, ch, t: float):
        try:
            return ch.get(timeout=t)
        except self.Empty:
            return TIMED_OUT


class RawGreenlet:
    """Memory/rate reference for spawn: no scheduler at all."""

    def spawn_join(self, n: int, probe: Probe) -> None:
        from greenlet import greenlet

        with probe:
            greenlets = [greenlet(_work) for _ in range(n)]
            total = sum(g.switch(i) for i, g in enumerate(greenlets))
        assert total == n * (n - 1) // 2


# -- async runtimes: asyncio, uvloop, trio (``queue()``: awaitable put()/get()) -----------------


async def _aecho(ping, pong, n: int) -> None:
    for _ in range(n):
        await pong.put(await ping.get())


async def _aforward(go, ch) -> None:
    while (value := await go.get()) is not None:
        await ch.put(value)


class Async:
    """The workloads for an async runtime: ``run(async_main)``, ``group()`` (a task group
    that yields its spawn), ``queue()`` and ``get_or_timeout(queue, t)``."""

    def pingpong(self, n: int, probe: Probe) -> None:
        async def main() -> None:
            ping, pong = self.queue(), self.queue()
            async with self.group() as spawn:
                spawn(_aecho, ping, pong, n)
                with probe:
                    for i in range(n):
                        await ping.put(i)
                        await pong.get()

        self.run(main)

    def choice(self, n: int, params: dict, probe: Probe) -> dict:
        async def main() -> int:
            go, ch = self.queue(), self.queue()
            wrong = 0
            async with self.group() as spawn:
                spawn(_aforward, go, ch)
                with probe:
                    for i, timeout in _choice_timeouts(n, params):
                        if timeout == LONG_TIMEOUT:
                            await go.put(i)
                        wrong += _is_wrong(i, await self.get_or_timeout(ch, timeout))
                    await go.put(None)
            return wrong

        return {"wrong_results": self.run(main)}


class Asyncio(Async):
    loop_factory = None  # the default event loop

    def __init__(self) -> None:
        import asyncio

        self.asyncio = asyncio

    def run(self, main):
        with self.asyncio.Runner(loop_factory=self.loop_factory) as runner:
            return runner.run(main())

    def queue(self):
        return self.asyncio.Queue(1)

    @asynccontextmanager
    async def group(self):
        async with self.asyncio.TaskGroup() as tg:
            yield lambda f, *args: tg.create_task(f(*args))

    async def get_or_timeout(self, ch, t: float):
        try:
            return await self.asyncio.wait_for(ch.get(), t)
        except TimeoutError:
            return TIMED_OUT

    def spawn_join(self, n: int, probe: Probe) -> None:
        create_task = self.asyncio.create_task

        async def main() -> int:
            with probe:
                tasks = [create_task(_awork(i)) for i in range(n)]
                return sum([await t for t in tasks])

        assert self.run(main) == n * (n - 1) // 2


class Uvloop(Asyncio):
    needs = ("uvloop",)

    def __init__(self) -> None:
        super().__init__()
        import uvloop

        self.loop_factory = uvloop.new_event_loop


class Trio(Async):
    needs = ("trio",)

    def __init__(self) -> None:
        import trio

        self.trio = trio
        self.run = trio.run

    def queue(self):
        send, recv = self.trio.open_memory_channel(0)
        return SimpleNamespace(put=send.send, get=recv.receive)

    @asynccontextmanager
    async def group(self):
        async with self.trio.open_nursery() as nursery:
            yield nursery.start_soon

    async def get_or_timeout(self, ch, t: float):
        with self.trio.move_on_after(t):
            return await ch.get()
        return TIMED_OUT

    def spawn_join(self, n: int, probe: Probe) -> None:
        async def main() -> None:
            with probe:
                async with self.trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(_awork, i)

        self.run(main)


IMPLS: dict[str, type] = {
    "fibernet": Fibernet, "gevent": Gevent, "asyncio": Asyncio, "uvloop": Uvloop, "trio": Trio,
    "greenlet": RawGreenlet,
}
DEFAULT_IMPLS = ("fibernet", "gevent", "asyncio", "trio", "greenlet")
WORKLOADS = {"pingpong": "pingpong", "spawn": "spawn_join", "choice": "choice"}


# -- child side: one workload on one implementation -------------------------------------------


def dispatch(workload: str, impl_name: str, params: dict) -> dict:
    impl, n, probe = IMPLS[impl_name](), params["n"], Probe()
    if workload == "spawn":
        traced = Probe(trace_memory=True)
        impl.spawn_join(n, probe)  # first: timing and RSS growth, no tracing overhead
        impl.spawn_join(n, traced)  # second: tracemalloc peak
        r = {"rss_per_fiber": probe.maxrss_delta / n, "traced_per_fiber": traced.traced_peak / n}
        summary = (f"fibers/s, {r['traced_per_fiber']:.0f} B/fiber traced, "
                   f"{r['rss_per_fiber']:.0f} B/fiber rss")
    elif workload == "choice":
        r = impl.choice(n, params, probe)
        summary = f"choices/s, wrong={r['wrong_results']}"
        if "left_behind" in r:
            timers = f"{r['before']['timers']}->{r['after']['timers']}"
            summary += f", left behind={r['left_behind']} (timers {timers})"
    else:
        impl.pingpong(n, probe)
        r, summary = {}, "round trips/s"
    r.update(rate=n / probe.seconds, seconds=probe.seconds, n=n)
    return {**r, "summary": f"{fmt_num(r['rate'])} {summary}"}


# -- parent side ---------------------------------------------------------------------------------

# (workload, key, unit, aggregate over rounds (None: the median), the one impl it is shown for)
METRICS = (
    ("pingpong", "rate", "round trips/s (more=better)", None, None),
    ("spawn", "rate", "fibers/s (more=better)", None, None),
    ("spawn", "traced_per_fiber", "B/fiber, tracemalloc peak (less=better)", None, None),
    ("spawn", "rss_per_fiber", "B/fiber, maxrss growth (less=better)", None, None),
    ("choice", "rate", "choices/s (more=better)", None, None),
    ("choice", "left_behind", "timers+waiters left behind, worst round", max, "fibernet"),
    ("choice", "wrong_results", "wrong results, worst round", max, None),
)
# fibernet's targets, by (workload, key, the row's impl): fibernet / that impl at least x, or
# fibernet's own value at most x
MIN_RATIO = {("pingpong", "rate", "asyncio"): 1.0, ("pingpong", "rate", "trio"): 2.5,
             ("spawn", "rate", "gevent"): 1.5}
MAX_VALUE = {("spawn", "traced_per_fiber"): 1000, ("spawn", "rss_per_fiber"): 1000,
             ("choice", "left_behind"): 0, ("choice", "wrong_results"): 0}


def summarise(samples: _bench.Samples, args) -> list[dict]:
    """One row per (metric, impl) that has results or errors."""
    rows = []
    for workload, key, unit, worst, only in METRICS:
        if workload not in args.workloads:
            continue
        aggregate = worst or _bench.median
        ours = aggregate(samples.values(workload, "fibernet", key) or [None])
        for impl in [only] if only else args.impls:
            values = samples.values(workload, impl, key)
            if impl in args.skipped:
                rows.append(_bench.skipped_row(workload, key, impl, unit))
            elif values or samples.errors.get((workload, impl)):
                value = aggregate(values) if values else None
                ratio = None if impl == "fibernet" or worst else _bench.ratio(ours, value)
                bars = []
                if (low := MIN_RATIO.get((workload, key, impl))) is not None:
                    bars.append((f"fibernet >= {low:g}x {impl}", None if ratio is None else ratio >= low))
                if impl == "fibernet" and (high := MAX_VALUE.get((workload, key))) is not None:
                    bars.append((f"<= {high:g}", None if value is None else value <= high))
                rows.append(_bench.row(samples, workload, impl, key, unit, ratio, bars, aggregate))
    return rows


CHANGES = ("timers", "heap", "ch_waiters", "go_waiters")


def choice_details(samples: _bench.Samples) -> str:
    """Per-round leak check of fibernet's choice loop: 'before -> after' must match; 'max seen'
    is read at checkpoints inside the loop (diagnostics only)."""
    rows = []
    for i, r in enumerate(samples.results.get(("choice", "fibernet"), []), 1):
        b, a, peak = r["before"], r["after"], r["peak"]
        ok = r["left_behind"] == 0 and r["wrong_results"] == 0
        change = [f"{b[k]} -> {a[k]}".replace("[", "(").replace("]", ")") for k in CHANGES]
        rows.append([i, f"{r['n']:,}", change[0], peak["timers"], change[1], peak["heap"],
                     change[2], peak["ch_waiters"], change[3],
                     f"{a['gc_objects'] - b['gc_objects']:+d}", r["wrong_results"], "PASS" if ok else "FAIL"])
    headers = ["round", "n", "timers", "max seen", "heap entries*", "max seen", "ch waiters (get, put)",
               "max seen", "go waiters", "gc objects", "wrong", "result"]
    return ("fibernet choice loop: timers = current_scheduler().pending_timers(), waiters = "
            f"Channel.waiting()\n{_bench.format_table(headers, rows)}\n"
            "* len() of the scheduler's private timer heap, cancelled entries included")


COLUMNS = ["workload", "impl", ("median", "value"), "unit", "spread", ("fibernet ratio", "ratio"), "bar",
           "result"]


def parse_args(argv=None):
    p = _bench.parser(__doc__, rounds=5)
    _bench.comma_option(p, "impls", IMPLS, DEFAULT_IMPLS)
    _bench.comma_option(p, "workloads", WORKLOADS)
    p.add_argument("--pingpong-n", type=int, help="round trips (default 200000)")
    p.add_argument("--spawn-n", type=int, help="fibers (default 100000)")
    p.add_argument("--choice-n", type=int, help="fibernet choice iterations (default 1000000)")
    p.add_argument("--choice-peer-n", type=int, help="peers' choice iterations (default 200000)")
    p.add_argument("--tiny-timeout", type=float, default=1e-4,
                   help="timeout of the iterations whose timer really fires (default 1e-4 s)")
    p.add_argument("--fire-every", type=int, default=10_000,
                   help="every N-th odd choice iteration uses --tiny-timeout (default 10000)")
    sizes = {"pingpong_n": 200_000, "spawn_n": 100_000, "choice_n": 1_000_000, "choice_peer_n": 200_000}
    full, quick = {"rounds": 5, **sizes}, {"rounds": 1, **{k: v // 10 for k, v in sizes.items()}}
    needs = {name: getattr(cls, "needs", ()) for name, cls in IMPLS.items()}
    return _bench.parse(p, argv, quick, full, {"impls": IMPLS, "workloads": WORKLOADS}, needs)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = []
    for workload in args.workloads:
        for impl in args.impls:
            if hasattr(IMPLS[impl], WORKLOADS[workload]) and impl not in args.skipped:
                choice = {"n": args.choice_n if impl == "fibernet" else args.choice_peer_n,
                          "tiny": args.tiny_timeout, "fire_every": args.fire_every}
                n = {"pingpong": args.pingpong_n, "spawn": args.spawn_n}
                plan.append((workload, impl, choice if workload == "choice" else {"n": n[workload]}))

    def report(samples: _bench.Samples) -> tuple[dict, str]:
        rows = summarise(samples, args)
        details = choice_details(samples) + "\n\n" if "choice" in args.workloads else ""
        return {"rows": rows}, details + _bench.table(rows, COLUMNS) + (
            "\n\nfibernet ratio = fibernet median / row median: above 1 is better for 'more=better' units, "
            "below 1 is better for 'less=better' units.")

    return _bench.run(__file__, args, plan, report, "primitives")


if __name__ == "__main__":
    _bench.main(dispatch, main)

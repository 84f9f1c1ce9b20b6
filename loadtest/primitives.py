"""Primitives benchmark: fibernet side by side with gevent, asyncio and trio.

Run from the repository root::

    python loadtest/primitives.py            # full run, 5 interleaved rounds (~5 min)
    python loadtest/primitives.py --quick    # smoke run: small N, 1 round
    python loadtest/primitives.py --json out/primitives.json

What it measures (each workload x implementation in a fresh subprocess pinned
with ``taskset -c CPU``; rounds are interleaved: for round: for workload: for
impl: run):

pingpong
    N round trips (default 200,000) between two fibers/tasks over two
    unbuffered channels: fibernet ``Channel()``, ``gevent.queue.Channel``,
    ``asyncio.Queue(1)``, a trio memory channel of size 0.  Unit: round trips
    per second.

spawn
    Spawn N fibers (default 100,000) that each return their argument, then
    join them all: ``fn.spawn``/``join``, ``gevent.spawn``/``joinall``,
    ``asyncio.create_task``/await, a trio nursery, and raw ``greenlet``
    (create, switch into each, collect the return value) as a memory
    reference.  Reported: fibers per second (timed pass), and bytes per fiber
    measured two ways, the same way for every implementation:
      * tracemalloc peak / N, from a second pass with tracing started just
        before spawning (Python-level allocations only);
      * ru_maxrss growth / N over the timed pass (process RSS, so it also sees
        C allocations; it reads 0 when the peak stays below an earlier one).

choice
    A loop of ``perform(choice(ch.get_op(), wrap(wait_op(t), ...)))``.  Even
    iterations ask a helper fiber for a value and use t = 10 s, so the get
    wins and the 10 s timer must be cancelled; odd iterations have no value
    available and use t = 0, so the timeout wins at once and the get must be
    withdrawn; every ``--fire-every``-th odd iteration (and the last one) uses
    a tiny positive t instead, so the timer really fires while the getter is
    parked and the getter must be removed from the channel.  fibernet
    runs 1,000,000 iterations and records live timers
    (``current_scheduler().pending_timers()``) and channel waiters
    (``Channel.waiting()``) before and after: "left behind" must be 0.
    Peers run the same loop (``asyncio.wait_for(q.get(), t)``,
    ``gevent.queue.Queue.get(timeout=t)``, ``trio.move_on_after(t)``) with
    fewer iterations, for the rate only.  "wrong results" counts iterations
    whose winning branch or value was not the expected one (must be 0).

``--impls`` also accepts ``uvloop`` (asyncio on uvloop, informational, not in
the default set to keep the run short).

How to read the table: ``median`` is the median over rounds; ``spread`` is
(max - min) / median over rounds, a noise indicator.  ``fibernet ratio`` is
fibernet's median divided by that row's median: for rates (more=better) a
ratio above 1 means fibernet is faster; for bytes (less=better) a ratio below
1 means fibernet uses less.  ``bar`` is fibernet's target (acceptance bar) and
``result`` says whether the measured medians meet it ("left behind" and "wrong
results" use the worst round instead of the median).  The exit status is 1 if
any bar fails or any measurement errors.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root, for `import fibernet`
if HERE not in sys.path:
    sys.path.insert(0, HERE)

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


def _choice_timeout(i: int, params: dict) -> float:
    """Timeout of iteration i of the choice loop (see module docstring).  The last odd
    iteration fires too, so a getter it failed to withdraw is still there at the end."""
    if i % 2 == 0:
        return LONG_TIMEOUT
    fires = i % params["fire_every"] == 1 or i == params["n"] - 1
    return params["tiny"] if fires else 0.0


def _is_wrong(i: int, result: object) -> bool:
    """Even iterations must get the value i, odd ones must time out."""
    return result != (i if i % 2 == 0 else TIMED_OUT)


# --------------------------------------------------------------------------
# implementations (imported lazily: a child imports only the one it runs)
#
# Each one may provide:
#   pingpong(n, probe)           time n round trips inside `with probe:`
#   spawn_join(n, probe)         spawn n fibers and join them inside `with probe:`
#   choice(n, params, probe)     the choice loop inside `with probe:`; returns a dict
# The sync channel code is shared by fibernet and gevent, which both have
# blocking put()/get().


def _sync_echo(ping, pong, n: int) -> None:
    for _ in range(n):
        pong.put(ping.get())


def _sync_pingpong(spawn, make_channel, n: int, probe: Probe):
    """Body of the ping-pong main fiber for runtimes with blocking channels;
    returns the echo fiber so the caller can join it its own way."""
    ping, pong = make_channel(), make_channel()
    echo = spawn(_sync_echo, ping, pong, n)
    with probe:
        for i in range(n):
            ping.put(i)
            pong.get()
    return echo


def _sync_forward(go, ch) -> None:
    """Helper of the choice loop: each value asked for on `go` is put on `ch`."""
    while (value := go.get()) is not None:
        ch.put(value)


def _sync_choice_loop(
    n: int, params: dict, go, get_or_timeout: Callable, sample: Callable | None = None
) -> int:
    """The choice loop for blocking runtimes; returns the number of wrong results."""
    wrong = 0
    for i in range(n):
        timeout = _choice_timeout(i, params)
        if timeout == LONG_TIMEOUT:
            go.put(i)
        wrong += _is_wrong(i, get_or_timeout(timeout))
        if sample is not None and (i % 1024 == 0 or timeout == params["tiny"]):
            sample()  # regularly, and after each timer that fired on a parked getter
    go.put(None)
    return wrong


class Fibernet:
    def __init__(self) -> None:
        import fibernet

        self.fn = fibernet

    def pingpong(self, n: int, probe: Probe) -> None:
        fn = self.fn
        self.fn.run(lambda: _sync_pingpong(fn.spawn, fn.Channel, n, probe).join())

    def spawn_join(self, n: int, probe: Probe) -> None:
        fn = self.fn

        def main() -> int:
            with probe:
                fibers = [fn.spawn(_work, i) for i in range(n)]
                return sum(f.join() for f in fibers)

        assert fn.run(main) == n * (n - 1) // 2

    def choice(self, n: int, params: dict, probe: Probe) -> dict:
        fn = self.fn

        def main() -> dict:
            sched = fn.current_scheduler()
            go, ch = fn.Channel(), fn.Channel()

            def snapshot() -> dict:
                gc.collect()
                return {
                    "timers": sched.pending_timers(), "heap": _timer_heap_size(sched),
                    "ch_waiters": list(ch.waiting()), "go_waiters": list(go.waiting()),
                    "gc_objects": len(gc.get_objects()),
                }

            def get_or_timeout(t: float):
                return fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(t), _timed_out)))

            peak = {"timers": 0, "heap": 0, "ch_waiters": 0}

            def sample() -> None:
                peak["timers"] = max(peak["timers"], sched.pending_timers())
                peak["heap"] = max(peak["heap"], _timer_heap_size(sched) or 0)
                peak["ch_waiters"] = max(peak["ch_waiters"], sum(ch.waiting()))

            before = snapshot()
            helper = fn.spawn(_sync_forward, go, ch)
            with probe:
                wrong = _sync_choice_loop(n, params, go, get_or_timeout, sample)
            helper.join()
            after = snapshot()
            return {
                "before": before, "after": after, "wrong_results": wrong, "peak": peak,
                "left_behind": _left_behind(before, after),
            }

        return fn.run(main)


def _timer_heap_size(sched) -> int | None:
    """Entries in the scheduler's timer heap, cancelled ones included.  This reads a
    private attribute (diagnostic only): pending_timers() counts live timers, this shows
    whether cancelled ones pile up before they are compacted away."""
    heap = getattr(getattr(sched, "_timers", None), "_heap", None)
    return None if heap is None else len(heap)


def _left_behind(before: dict, after: dict) -> int:
    """How far timers and channel waiters after the loop are from those before it."""

    def counts(snap: dict) -> list[int]:
        return [snap["timers"], *snap["ch_waiters"], *snap["go_waiters"]]

    return sum(abs(a - b) for a, b in zip(counts(after), counts(before), strict=True))


class Gevent:
    needs = ('gevent',)  # the modules it imports; missing, its rows are skipped

    def __init__(self) -> None:
        import gevent
        import gevent.queue

        self.gevent = gevent

    def pingpong(self, n: int, probe: Probe) -> None:
        gevent = self.gevent
        _sync_pingpong(gevent.spawn, gevent.queue.Channel, n, probe).join()

    def spawn_join(self, n: int, probe: Probe) -> None:
        gevent = self.gevent
        with probe:
            greenlets = [gevent.spawn(_work, i) for i in range(n)]
            gevent.joinall(greenlets, raise_error=True)
            total = sum(g.value for g in greenlets)
        assert total == n * (n - 1) // 2

    def choice(self, n: int, params: dict, probe: Probe) -> dict:
        from gevent.queue import Empty, Queue

        go, ch = Queue(), Queue()

        def get_or_timeout(t: float):
            try:
                return ch.get(timeout=t)
            except Empty:
                return TIMED_OUT

        helper = self.gevent.spawn(_sync_forward, go, ch)
        with probe:
            wrong = _sync_choice_loop(n, params, go, get_or_timeout)
        helper.join()
        return {"wrong_results": wrong}


class RawGreenlet:
    """Memory/rate reference for spawn: no scheduler at all."""

    def __init__(self) -> None:
        from greenlet import greenlet

        self.greenlet = greenlet

    def spawn_join(self, n: int, probe: Probe) -> None:
        greenlet = self.greenlet
        with probe:
            greenlets = [greenlet(_work) for _ in range(n)]
            total = sum(g.switch(i) for i, g in enumerate(greenlets))
        assert total == n * (n - 1) // 2


# The async twins of the sync helpers, shared by asyncio and trio.  Both sides
# are duck-typed on awaitable put()/get(): asyncio.Queue as it is, a trio
# memory channel pair through _trio_channel().


async def _async_echo(ping, pong, n: int) -> None:
    for _ in range(n):
        await pong.put(await ping.get())


async def _async_pingpong_loop(ping, pong, n: int, probe: Probe) -> None:
    with probe:
        for i in range(n):
            await ping.put(i)
            await pong.get()


async def _async_forward(go, ch) -> None:
    while (value := await go.get()) is not None:
        await ch.put(value)


async def _async_choice_loop(n: int, params: dict, go, get_or_timeout: Callable) -> int:
    wrong = 0
    for i in range(n):
        timeout = _choice_timeout(i, params)
        if timeout == LONG_TIMEOUT:
            await go.put(i)
        wrong += _is_wrong(i, await get_or_timeout(timeout))
    await go.put(None)
    return wrong


class Asyncio:
    loop_factory = None  # the default event loop

    def __init__(self) -> None:
        import asyncio

        self.asyncio = asyncio

    def _run(self, coro):
        with self.asyncio.Runner(loop_factory=self.loop_factory) as runner:
            return runner.run(coro)

    def pingpong(self, n: int, probe: Probe) -> None:
        asyncio = self.asyncio

        async def main() -> None:
            ping, pong = asyncio.Queue(1), asyncio.Queue(1)
            echo = asyncio.create_task(_async_echo(ping, pong, n))
            await _async_pingpong_loop(ping, pong, n, probe)
            await echo

        self._run(main())

    def spawn_join(self, n: int, probe: Probe) -> None:
        create_task = self.asyncio.create_task

        async def main() -> int:
            with probe:
                tasks = [create_task(_awork(i)) for i in range(n)]
                return sum([await t for t in tasks])

        assert self._run(main()) == n * (n - 1) // 2

    def choice(self, n: int, params: dict, probe: Probe) -> dict:
        asyncio = self.asyncio

        async def main() -> int:
            go, ch = asyncio.Queue(1), asyncio.Queue(1)

            async def get_or_timeout(t: float):
                try:
                    return await asyncio.wait_for(ch.get(), t)
                except asyncio.TimeoutError:
                    return TIMED_OUT

            helper = asyncio.create_task(_async_forward(go, ch))
            with probe:
                wrong = await _async_choice_loop(n, params, go, get_or_timeout)
            await helper
            return wrong

        return {"wrong_results": self._run(main())}


class Uvloop(Asyncio):
    needs = ('uvloop',)  # the modules it imports; missing, its rows are skipped

    def __init__(self) -> None:
        super().__init__()
        import uvloop

        self.loop_factory = uvloop.new_event_loop


class Trio:
    needs = ('trio',)  # the modules it imports; missing, its rows are skipped

    def __init__(self) -> None:
        import trio

        self.trio = trio

    def _channel(self):
        """An unbuffered memory channel with the put()/get() face of a queue."""
        send, recv = self.trio.open_memory_channel(0)
        return SimpleNamespace(put=send.send, get=recv.receive)

    def pingpong(self, n: int, probe: Probe) -> None:
        async def main() -> None:
            ping, pong = self._channel(), self._channel()
            async with self.trio.open_nursery() as nursery:
                nursery.start_soon(_async_echo, ping, pong, n)
                await _async_pingpong_loop(ping, pong, n, probe)

        self.trio.run(main)

    def spawn_join(self, n: int, probe: Probe) -> None:
        async def main() -> None:
            with probe:
                async with self.trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(_awork, i)

        self.trio.run(main)

    def choice(self, n: int, params: dict, probe: Probe) -> dict:
        move_on_after = self.trio.move_on_after

        async def main() -> int:
            go, ch = self._channel(), self._channel()

            async def get_or_timeout(t: float):
                with move_on_after(t):
                    return await ch.get()
                return TIMED_OUT

            async with self.trio.open_nursery() as nursery:
                nursery.start_soon(_async_forward, go, ch)
                with probe:
                    return await _async_choice_loop(n, params, go, get_or_timeout)

        return {"wrong_results": self.trio.run(main)}


IMPLS: dict[str, type] = {
    "fibernet": Fibernet, "gevent": Gevent, "asyncio": Asyncio, "uvloop": Uvloop, "trio": Trio,
    "greenlet": RawGreenlet,
}
DEFAULT_IMPLS = ("fibernet", "gevent", "asyncio", "trio", "greenlet")
WORKLOADS = {"pingpong": "pingpong", "spawn": "spawn_join", "choice": "choice"}


def supports(impl: str, workload: str) -> bool:
    return hasattr(IMPLS[impl], WORKLOADS[workload])


# --------------------------------------------------------------------------
# child side: run one workload on one implementation, return a JSON-able dict


def measure_pingpong(impl, params: dict) -> dict:
    n, probe = params["n"], Probe()
    impl.pingpong(n, probe)
    rate = n / probe.seconds
    return {"rate": rate, "seconds": probe.seconds, "n": n, "summary": f"{fmt_num(rate)} round trips/s"}


def measure_spawn(impl, params: dict) -> dict:
    n, timing, traced = params["n"], Probe(), Probe(trace_memory=True)
    impl.spawn_join(n, timing)  # first: timing and RSS growth, no tracing overhead
    impl.spawn_join(n, traced)  # second: tracemalloc peak
    result = {
        "rate": n / timing.seconds, "seconds": timing.seconds, "n": n,
        "rss_per_fiber": timing.maxrss_delta / n, "traced_per_fiber": traced.traced_peak / n,
    }
    result["summary"] = (
        f"{fmt_num(result['rate'])} fibers/s, "
        f"{result['traced_per_fiber']:.0f} B/fiber traced, "
        f"{result['rss_per_fiber']:.0f} B/fiber rss"
    )
    return result


def measure_choice(impl, params: dict) -> dict:
    n, probe = params["n"], Probe()
    result = impl.choice(n, params, probe)
    result.update(rate=n / probe.seconds, seconds=probe.seconds, n=n)
    result["summary"] = f"{fmt_num(result['rate'])} choices/s, wrong={result['wrong_results']}"
    if "left_behind" in result:
        result["summary"] += (
            f", left behind={result['left_behind']}"
            f" (timers {result['before']['timers']}->{result['after']['timers']})"
        )
    return result


MEASURES = {"pingpong": measure_pingpong, "spawn": measure_spawn, "choice": measure_choice}


def dispatch(workload: str, impl: str, params: dict) -> dict:
    return MEASURES[workload](IMPLS[impl](), params)


# --------------------------------------------------------------------------
# parent side: plan, run, summarise


@dataclass(frozen=True)
class Metric:
    workload: str
    key: str
    unit: str
    more_is_better: bool
    worst_round: bool = False  # report the worst round instead of the median
    only: str | None = None  # the one implementation that reports it

    def aggregate(self, values: list[float]) -> float | None:
        if not values:
            return None
        if self.worst_round:
            return max(values) if not self.more_is_better else min(values)
        return _bench.median(values)


METRICS = (
    Metric("pingpong", "rate", "round trips/s (more=better)", True),
    Metric("spawn", "rate", "fibers/s (more=better)", True),
    Metric("spawn", "traced_per_fiber", "B/fiber, tracemalloc peak (less=better)", False),
    Metric("spawn", "rss_per_fiber", "B/fiber, maxrss growth (less=better)", False),
    Metric("choice", "rate", "choices/s (more=better)", True),
    Metric("choice", "left_behind", "timers+waiters left behind, worst round", False, True, "fibernet"),
    Metric("choice", "wrong_results", "wrong results, worst round", False, True),
)


@dataclass(frozen=True)
class Bar:
    workload: str
    key: str
    peer: str | None = None  # ratio bar: fibernet / peer >= min_ratio
    min_ratio: float | None = None
    max_value: float | None = None  # absolute bar on fibernet's own value

    def applies(self, workload: str, key: str, impl: str) -> bool:
        return (workload, key) == (self.workload, self.key) and impl == (self.peer or "fibernet")

    def describe(self) -> str:
        if self.peer:
            return f"fibernet >= {self.min_ratio:g}x {self.peer}"
        return f"<= {self.max_value:g}"

    def passes(self, value: float | None, ratio: float | None) -> bool | None:
        if self.peer:
            return None if ratio is None else ratio >= self.min_ratio
        return None if value is None else value <= self.max_value


BARS = (
    Bar("pingpong", "rate", peer="asyncio", min_ratio=1.0),
    Bar("pingpong", "rate", peer="trio", min_ratio=2.5), Bar("spawn", "rate", peer="gevent", min_ratio=1.5),
    Bar("spawn", "traced_per_fiber", max_value=1000), Bar("spawn", "rss_per_fiber", max_value=1000),
    Bar("choice", "left_behind", max_value=0), Bar("choice", "wrong_results", max_value=0),
)


def build_plan(args) -> list[tuple[str, str, dict]]:
    params = {
        "pingpong": {"n": args.pingpong_n}, "spawn": {"n": args.spawn_n},
        "choice": {"tiny": args.tiny_timeout, "fire_every": args.fire_every},
    }
    plan = []
    for workload in args.workloads:
        for impl in args.impls:
            if not supports(impl, workload) or impl in args.skipped:
                continue
            p = dict(params[workload])
            if workload == "choice":
                p["n"] = args.choice_n if impl == "fibernet" else args.choice_peer_n
            plan.append((workload, impl, p))
    return plan


def summarise(samples: _bench.Samples, args) -> list[dict]:
    """One row per (metric, impl) that has results or errors."""
    rows = []
    for metric in METRICS:
        if metric.workload not in args.workloads:
            continue
        ours = metric.aggregate(samples.values(metric.workload, "fibernet", metric.key))
        for impl in [metric.only] if metric.only else args.impls:
            if impl in args.skipped:
                rows.append(_bench.skipped_row(metric.workload, metric.key, impl, metric.unit))
                continue
            key = (metric.workload, impl)
            values = samples.values(metric.workload, impl, metric.key)
            if not values and not samples.errors.get(key):
                continue
            value = metric.aggregate(values)
            ratio = None if impl == "fibernet" or metric.worst_round else _bench.ratio(ours, value)
            bars = [b for b in BARS if b.applies(metric.workload, metric.key, impl)]
            verdicts = [b.passes(value, ratio) for b in bars]
            if samples.errors.get(key):
                verdicts.append(False)
            rows.append(
                {
                    "workload": metric.workload, "metric": metric.key, "impl": impl, "value": value,
                    "unit": metric.unit, "spread": _bench.spread(values), "rounds": len(values),
                    "errors": len(samples.errors.get(key, [])), "ratio": ratio,
                    "bar": "; ".join(b.describe() for b in bars),
                    "pass": None if not verdicts or None in verdicts else all(verdicts),
                }
            )
    return rows


def render_rows(rows: list[dict]) -> str:
    table = [
        [
            r["workload"], r["impl"], fmt_num(r["value"]), r["unit"], _bench.fmt_pct(r["spread"]),
            _bench.fmt_ratio(r["ratio"]), r["bar"] or "-", _bench.result_cell(r),
        ]
        for r in rows
    ]
    headers = ["workload", "impl", "median", "unit", "spread", "fibernet ratio", "bar", "result"]
    return _bench.format_table(headers, table)


def render_choice_details(samples: _bench.Samples) -> str:
    """Per-round leak check of fibernet's choice loop.  'before -> after' must match;
    'max seen' columns are read at checkpoints inside the loop (diagnostics only)."""
    rows = []
    for i, r in enumerate(samples.results.get(("choice", "fibernet"), []), 1):
        b, a, peak = r["before"], r["after"], r["peak"]
        ok = r["left_behind"] == 0 and r["wrong_results"] == 0
        rows.append(
            [
                i, f"{r['n']:,}", f"{b['timers']} -> {a['timers']}", peak["timers"],
                f"{b['heap']} -> {a['heap']}", peak["heap"],
                f"{tuple(b['ch_waiters'])} -> {tuple(a['ch_waiters'])}", peak["ch_waiters"],
                f"{tuple(b['go_waiters'])} -> {tuple(a['go_waiters'])}",
                f"{a['gc_objects'] - b['gc_objects']:+d}", r["wrong_results"], "PASS" if ok else "FAIL",
            ]
        )
    headers = [
        "round", "n", "timers", "max seen", "heap entries*", "max seen", "ch waiters (get, put)", "max seen",
        "go waiters", "gc objects", "wrong", "result",
    ]
    return (
        "fibernet choice loop: timers = current_scheduler().pending_timers(), waiters = "
        "Channel.waiting()\n"
        + _bench.format_table(headers, rows)
        + "\n* len() of the scheduler's private timer heap, cancelled entries included"
    )


# --------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, --quick 1)")
    parser.add_argument(
        "--cpu", default="1", help="CPU to pin every child to with taskset (default 1; 'none' to not pin)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    parser.add_argument(
        "--impls", default=",".join(DEFAULT_IMPLS),
        help=f"comma list out of {','.join(IMPLS)} (default: %(default)s)",
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list (default: %(default)s)")
    parser.add_argument("--pingpong-n", type=int, help="round trips (default 200000)")
    parser.add_argument("--spawn-n", type=int, help="fibers (default 100000)")
    parser.add_argument("--choice-n", type=int, help="fibernet choice iterations (default 1000000)")
    parser.add_argument("--choice-peer-n", type=int, help="peers' choice iterations (default 200000)")
    parser.add_argument(
        "--tiny-timeout", type=float, default=1e-4,
        help="timeout of the iterations whose timer really fires (default 1e-4 s)",
    )
    parser.add_argument(
        "--fire-every", type=int, default=10_000,
        help="every N-th odd choice iteration uses --tiny-timeout (default 10000)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="per-child timeout, seconds")
    args = parser.parse_args(argv)

    _bench.fill_defaults(
        args,
        {"rounds": 1, "pingpong_n": 20_000, "spawn_n": 10_000, "choice_n": 100_000, "choice_peer_n": 20_000}
        if args.quick
        else {
            "rounds": 5, "pingpong_n": 200_000, "spawn_n": 100_000, "choice_n": 1_000_000,
            "choice_peer_n": 200_000,
        },
    )
    args.cpu = _bench.cpu_option(args.cpu)
    args.impls = _bench.comma_list(parser, args.impls, IMPLS, "--impls")
    args.workloads = _bench.comma_list(parser, args.workloads, WORKLOADS, "--workloads")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    needs = {name: getattr(IMPLS[name], "needs", ()) for name in IMPLS}
    args.skipped = _bench.missing_peers(args.impls, needs)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _bench.check_cpu(args.cpu)
    command = _bench.command_line()
    plan = build_plan(args)
    print(f"command: {command}", flush=True)
    _bench.note_skipped(args.skipped, "primitives")
    print(_bench.describe_plan(__file__, plan, args.rounds, args.cpu), flush=True)

    samples = _bench.run_interleaved(__file__, plan, args.rounds, args.cpu, args.timeout)
    rows = summarise(samples, args)

    print()
    if "choice" in args.workloads:
        print(render_choice_details(samples), end="\n\n")
    print(render_rows(rows))
    print(
        "\nfibernet ratio = fibernet median / row median: above 1 is better for "
        "'more=better' units, below 1 is better for 'less=better' units."
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

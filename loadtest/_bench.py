"""What the benchmark scripts share: the command line, one measurement per fresh CPU-pinned child
process, rounds interleaved over (workload, impl) pairs, medians, spreads and ratios, bars, the
table printer and the JSON output; at the end, the driver every script that runs rounds uses.

A script's entry is ``_bench.main(dispatch, main)``: a child (``--child WORKLOAD IMPL PARAMS``)
prints what ``dispatch`` measures as one JSON object on its last line; the parent parses its
options (``parser``, ``parse``), plans its measurements and calls ``run(__file__, args, plan,
report)``.  The standard library only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

CHILD_FLAG = "--child"
OURS = "fibernet"

# ---------------------------------------------------------------- statistics and formatting


def close_all(socks: Iterable[Any]) -> None:
    """Close every socket of an idle-connection measurement."""
    for s in socks:
        s.close()


def median(values: Iterable[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values: Iterable[float]) -> float | None:
    """(max - min) / median, as a fraction; None for fewer than two values."""
    values = [v for v in values if v is not None]
    mid = median(values)
    return None if len(values) < 2 or not mid else (max(values) - min(values)) / abs(mid)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either side is missing or theirs is 0."""
    return None if ours is None or not theirs else ours / theirs


def fmt_num(value: float | None, digits: int = 3) -> str:
    """Short human form: 1.23M, 45.6k, 789, 0.0123."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    if abs(value) >= 1 and float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}g}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def fmt_fixed(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with a header rule; every cell is str()-ed."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(cells[0]), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def verdict(ok: bool | None, errors: int | bool = 0) -> str:
    return "ERROR" if errors else {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def result_cell(row: dict) -> str:
    """The ``result`` cell of a row with ``errors``, ``bar`` and ``pass``: ERROR xN, PASS,
    FAIL, n/a (a bar that could not be checked) or - (no bar)."""
    if row.get("skipped"):
        return "skipped (not installed)"
    if row["errors"]:
        return f"ERROR x{row['errors']}"
    return "-" if row["pass"] is None and not row["bar"] else verdict(row["pass"])


def missing_peers(impls: Iterable[str], needs: dict[str, Sequence[str]]) -> dict[str, str]:
    """The implementations of ``impls`` that cannot run here, each with the module it lacks."""
    missing = {}
    for impl in impls:
        absent = next((m for m in needs.get(impl, ()) if importlib.util.find_spec(m) is None), None)
        if absent is not None:
            missing[impl] = absent
    return missing


def note_skipped(skipped: dict[str, str], bench: str) -> None:
    """One line about the peers that are not installed, and how to run them all."""
    if skipped:
        which = ", ".join(f"{impl} (no module {module!r})" for impl, module in skipped.items())
        print(f"skipped, not installed: {which}; fibernet loadtest --make-env DIR {bench} runs every peer",
              flush=True)


def skipped_row(workload: str, metric: str, impl: str, unit: str) -> dict:
    """A summary row for an implementation that is not installed: no value, no verdict."""
    return {"workload": workload, "metric": metric, "impl": impl, "value": None, "unit": unit,
            "spread": None, "rounds": 0, "errors": 0, "ratio": None, "bar": "", "pass": None,
            "skipped": True}


# ---------------------------------------------------------------- command line and CPUs


def command_line(argv: Sequence[str] | None = None) -> str:
    """The exact command line of this process, shell-quoted."""
    return shlex.join([sys.executable, *(sys.argv if argv is None else argv)])


def cpu_option(text: str) -> int | None:
    """A ``--cpu``-style option: one CPU number, or 'none' (any case) for no pinning."""
    return None if text.lower() == "none" else int(text)


def comma_list(parser: argparse.ArgumentParser, text: str, known: Iterable[str], option: str) -> list[str]:
    """The items of a comma list; a parser error names those not in ``known``."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in items if x not in known]
    if unknown:
        parser.error(f"{option}: unknown {', '.join(unknown)}")
    return items


def cpu_set(cpu: int | str) -> set[int]:
    """The CPUs of a pinning spec: one CPU (an int) or a taskset-style list such as "0,1"."""
    return {cpu} if isinstance(cpu, int) else {int(x) for x in str(cpu).split(",") if x.strip()}


def check_cpu(cpu: int | str | None) -> None:
    """Exit with a clear message if ``cpu`` (one CPU or a list, "0,1") is not usable by this process."""
    allowed = os.sched_getaffinity(0)
    if cpu is not None and not cpu_set(cpu) <= allowed:
        raise SystemExit(f"--cpu {cpu}: not in this process's CPUs {sorted(allowed)}")


def pinned(cmd: list[str], cpu: int | str | None) -> list[str]:
    """``cmd`` under ``taskset -c CPU`` (when there is a CPU and taskset)."""
    return ["taskset", "-c", str(cpu), *cmd] if cpu is not None and shutil.which("taskset") else cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- parent side: one child per measurement


class ChildError(RuntimeError):
    """A child process failed, timed out, or printed no JSON result."""


def child_command(module: str, workload: str, impl: str, params: dict, cpu: int | str | None) -> list[str]:
    """Command line running one measurement; ``module`` is a script path or a dotted module
    name.  Pinned with ``taskset -c CPU`` when possible."""
    target = [module] if module.endswith(".py") or os.path.exists(module) else ["-m", module]
    return pinned([sys.executable, *target, CHILD_FLAG, workload, impl, json.dumps(params, sort_keys=True)],
                  cpu)


def describe_plan(module: str, plan: Sequence[tuple], rounds: int, cpu: int | str | None) -> str:
    """How many measurements and rounds, and the first one's command line (to show what runs)."""
    example = shlex.join(child_command(module, *plan[0][:3], cpu))
    return f"{len(plan)} measurements x {rounds} rounds, each in a fresh child, e.g.:\n  {example}"


def run_child(module: str, workload: str, impl: str, params: dict, cpu: int | str | None = None,
              timeout: float = 600.0) -> dict:
    """Run one measurement in a fresh subprocess and return the JSON object it printed last
    (``serve_child`` does that).  Raises ChildError on failure."""
    cmd = child_command(module, workload, impl, params, cpu)
    pin = cpu is not None and cmd[0] != "taskset"  # without taskset, pin the child before it execs
    preexec = (lambda: os.sched_setaffinity(0, cpu_set(cpu))) if pin else None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)
    except subprocess.TimeoutExpired:
        raise ChildError(f"timed out after {timeout:g}s: {shlex.join(cmd)}") from None
    if proc.returncode != 0:
        raise ChildError(f"exit {proc.returncode}: {shlex.join(cmd)}\n" + _tail(proc.stderr or proc.stdout))
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.strip().startswith("{")), None)
    try:
        return json.loads(line)
    except (TypeError, ValueError):
        raise ChildError(f"no JSON result line: {shlex.join(cmd)}\n" + _tail(proc.stdout)) from None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + ln for ln in (text or "").strip().splitlines()[-lines:])


@dataclass
class Samples:
    """Results of interleaved runs, keyed by (workload, impl)."""

    results: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    errors: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def values(self, workload: str, impl: str, key: str) -> list[float]:
        return [r[key] for r in self.results.get((workload, impl), []) if r.get(key) is not None]

    def median(self, workload: str, impl: str, key: str) -> float | None:
        return median(self.values(workload, impl, key))

    def to_json(self) -> dict:
        return {f"{w}/{i}": {"results": self.results.get((w, i), []), "errors": self.errors.get((w, i), [])}
                for (w, i) in sorted(set(self.results) | set(self.errors))}


def run_interleaved(
    module: str, plan: Sequence[tuple[str, str, dict] | tuple[str, str, dict, int | str | None]], rounds: int,
    cpu: int | str | None, timeout: float = 600.0, log: Callable[[str], None] | None = None,
) -> Samples:
    """for round in rounds: for (workload, impl, params) in plan: run_child(...).

    Interleaving spreads slow drifts of a shared, noisy machine over every implementation
    instead of penalising whichever happened to run last.  A plan entry may carry a fourth
    element, its own CPU spec (e.g. "0,1"), used instead of ``cpu``."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    samples = Samples()
    for rnd in range(1, rounds + 1):
        for entry in plan:
            workload, impl, params = entry[:3]
            started = time.perf_counter()
            try:
                result = run_child(module, workload, impl, params, entry[3] if len(entry) > 3 else cpu,
                                   timeout)
            except ChildError as exc:
                samples.errors.setdefault((workload, impl), []).append(str(exc))
                log(f"[round {rnd}/{rounds}] {workload:<9} {impl:<15} ERROR\n{exc}")
                continue
            samples.results.setdefault((workload, impl), []).append(result)
            log(f"[round {rnd}/{rounds}] {workload:<9} {impl:<15} "
                f"{time.perf_counter() - started:5.1f}s  {result.get('summary', '')}")
    return samples


def summary_rows(samples: Samples, workload: str, impls: Iterable[str], key: str,
                 medians: Sequence[str] = (), keep_empty: bool = False) -> list[dict]:
    """A row per implementation measured in ``workload`` (or every one, ``keep_empty``): the
    median of ``key``, its ``spread``, fibernet's ``ratio`` to it (ours / theirs), ``rounds``,
    ``errors`` (failed runs), and the medians of ``medians``."""
    ours, rows = samples.median(workload, OURS, key), []
    for impl in impls:
        values = samples.values(workload, impl, key)
        errors = len(samples.errors.get((workload, impl), []))
        if values or errors or keep_empty:
            mid = median(values)
            rows.append({"workload": workload, "impl": impl, key: mid, "spread": spread(values),
                         "rounds": len(values), "errors": errors,
                         "ratio": None if impl == OURS else ratio(ours, mid),
                         **{k: samples.median(workload, impl, k) for k in medians}})
    return rows


@dataclass(frozen=True)
class Bar:
    """A target on medians: ``ours(key) / peer(key) <= max_ratio`` (or ``>= min_ratio``), or,
    with no peer, ``ours(key) <= max_value``."""

    workload: str
    key: str
    text: str
    ours: str = OURS
    peer: str | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None
    max_value: float | None = None
    unit: str = ""

    def check(self, samples: Samples) -> dict:
        ours = samples.median(self.workload, self.ours, self.key)
        errors = bool(samples.errors.get((self.workload, self.ours)))
        if self.peer is None:
            value, ok = ours, None if ours is None else ours <= self.max_value
            measured = "-" if ours is None else f"{_num(ours)} {self.unit}"
        else:
            errors = errors or bool(samples.errors.get((self.workload, self.peer)))
            theirs = samples.median(self.workload, self.peer, self.key)
            value, ok, measured = ratio(ours, theirs), None, "-"
            if value is not None:
                ok = value <= self.max_ratio if self.max_ratio is not None else value >= self.min_ratio
                measured = f"{value:.2f}x ({_num(ours)} vs {_num(theirs)} {self.unit})"
        return {"bar": self.text, "value": value, "measured": measured, "pass": False if errors else ok,
                "errors": errors}


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else fmt_num(value)


def render_bars(checks: list[dict], head: str = "bar (medians)") -> str:
    rows = [[c["bar"], c["measured"] or "-", verdict(c["pass"], c.get("errors"))] for c in checks]
    return format_table([head, "measured", "result"], rows)


# ---------------------------------------------------------------- child side


def serve_child(dispatch: Callable[[str, str, dict], dict], argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``prog --child WORKLOAD IMPL PARAMS_JSON``; prints the dict
    ``dispatch(workload, impl, params)`` returns (plus the CPUs it ran on) as one JSON line."""
    argv = sys.argv if argv is None else argv
    try:
        _, _, workload, impl, params_json = argv[:5]
        result = dict(dispatch(workload, impl, json.loads(params_json)))
    except Exception:  # report, the parent shows stderr
        traceback.print_exc()
        return 1
    result.setdefault("cpus", sorted(os.sched_getaffinity(0)))
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def maxrss_bytes() -> int:
    """Peak resident set size of this process so far (Linux: KiB -> bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class Probe:
    """Context manager measuring a block: wall seconds, ru_maxrss growth and, if
    ``trace_memory``, the tracemalloc peak (it slows allocation: keep timing runs apart)."""

    def __init__(self, trace_memory: bool = False):
        self.trace_memory = trace_memory
        self.seconds: float | None = None
        self.maxrss_delta: int | None = None
        self.traced_peak: int | None = None

    def __enter__(self) -> Probe:
        self._rss0 = maxrss_bytes()
        if self.trace_memory:
            tracemalloc.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        if self.trace_memory:
            self.traced_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        self.maxrss_delta = maxrss_bytes() - self._rss0


# ---------------------------------------------------------------- JSON output and exit status


def environment() -> dict:
    try:
        loadavg = os.getloadavg()
    except OSError:
        loadavg = None
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg_at_end": loadavg,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def save_json(path: str | None, payload: dict) -> None:
    """With a ``--json`` PATH: write ``payload`` and the environment there as pretty JSON, and say so."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump({"environment": environment(), **payload}, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        print(f"wrote {path}")


def exit_status(results: Iterable[dict], samples: Samples) -> int:
    """1 if a result (a row or a bar check with ``pass``) fails or a measurement errored, else 0."""
    return 1 if any(r.get("pass") is False for r in results) or samples.errors else 0


# ---------------------------------------------------------------- in-process benchmarks

PIN = "CPU to pin every child to with taskset"


def parser(
    doc: str, rounds: int = 3, quick: str = "small N, 1 round (smoke run)", duration: str | None = None,
    warmup: str | None = None, cpu: str | None = PIN, timeout: float | None = 600,
) -> argparse.ArgumentParser:
    """A benchmark's parser: its description is the first paragraph of ``doc`` (the script's
    module docstring), shown as written; --quick, --rounds, --duration and --warmup (when their
    help is given), --cpu (when ``cpu`` says what it pins), --json, and --timeout per child."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--rounds", type=int, help=f"interleaved rounds (default {rounds}, --quick 1)")
    for name, text in (("duration", duration), ("warmup", warmup)):
        if text:
            p.add_argument(f"--{name}", type=float, help=text)
    if cpu:
        p.add_argument("--cpu", default="1", help=f"{cpu} (default 1; 'none' to not pin)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    if timeout:
        p.add_argument("--timeout", type=float, default=timeout, help="per-child timeout, seconds")
    return p


def comma_option(p: argparse.ArgumentParser, name: str, known: Iterable[str], default: Sequence = ()) -> None:
    """``--NAME a,b,c``: a comma list out of ``known`` (default: ``default``, else all)."""
    known = ",".join(known)
    text = f"comma list out of {known} (default: %(default)s)"
    p.add_argument(f"--{name}", default=",".join(default) or known, help=text)


def parse(
    p: argparse.ArgumentParser, argv: Sequence[str] | None, quick: dict, full: dict,
    lists: dict[str, Iterable[str]] | None = None, needs: dict[str, Sequence[str]] | None = None,
) -> argparse.Namespace:
    """Parse; fill the options the command line left out (``quick`` or ``full``); check the
    comma lists (``--impls`` must hold fibernet); ``args.skipped``: peers not installed."""
    args = p.parse_args(argv)
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if hasattr(args, "cpu"):
        args.cpu = cpu_option(args.cpu)
    for name, known in (lists or {}).items():
        setattr(args, name, comma_list(p, getattr(args, name), known, f"--{name}"))
    if "impls" in (lists or {}):
        if OURS not in args.impls:
            p.error("--impls must include fibernet")
        args.skipped = missing_peers(args.impls, needs or {})
    return args


def row(
    samples: Samples, workload: str, impl: str, key: str, unit: str, ratio: float | None = None,
    bars: Sequence[tuple[str, bool | None]] = (), aggregate: Callable = median, **extra: Any,
) -> dict:
    """A summary row: the aggregate (median) over rounds, its spread and the errors; ``bars``
    are (description, verdict) pairs; the row passes if every verdict does (None: unknown)."""
    values = samples.values(workload, impl, key)
    errors = len(samples.errors.get((workload, impl), []))
    verdicts = [v for _, v in bars]
    verdict = None if not verdicts or None in verdicts else all(verdicts)
    return {
        "workload": workload, "metric": key, "impl": impl, "value": aggregate(values) if values else None,
        "unit": unit, "spread": spread(values), "rounds": len(values), "errors": errors,
        "ratio": ratio, "bar": "; ".join(b for b, _ in bars), "pass": False if errors else verdict, **extra,
    }


CELLS: dict[str, Callable[[dict], Any]] = {
    "value": lambda r: fmt_num(r["value"]), "n": lambda r: fmt_num(r["n"]),
    "spread": lambda r: fmt_pct(r["spread"]), "ratio": lambda r: fmt_ratio(r["ratio"]),
    "vs_this": lambda r: fmt_ratio(r["vs_this"]), "bar": lambda r: r["bar"] or "-",
    "result": result_cell,
}


def table(rows: list[dict], columns: Sequence[str | tuple[str, str]]) -> str:
    """The rows as a table of ``columns``: row keys, or (header, row key) pairs."""
    columns = [(c, c) if isinstance(c, str) else c for c in columns]
    cells = [[CELLS.get(key, lambda r, k=key: r[k])(r) for _, key in columns] for r in rows]
    return format_table([h for h, _ in columns], cells)


def run(
    script: str, args: argparse.Namespace, plan: list[tuple],
    report: Callable[[Samples], tuple[dict[str, Any], str]], name: str | None = None, pin: str = "cpu",
    intro: str = "", timeout: float | None = None, log: Callable[[str], None] | None = None, **payload: Any,
) -> int:
    """Run ``plan`` for ``args.rounds`` interleaved rounds, each child pinned to the CPUs of
    the option ``pin`` (--cpu), print what ``report(samples)`` makes of it (JSON sections, such
    as ``rows``, and text), write ``--json`` (with ``payload``); the exit status is 1 if a row
    of a section (a bar) fails or a measurement errors.  ``name``: the script that notes its
    peers not installed; ``intro``: printed after the plan."""
    cpu = getattr(args, pin)
    check_cpu(cpu)
    command = command_line()
    print(f"command: {command}", flush=True)
    if name:
        note_skipped(args.skipped, name)
    print(describe_plan(script, plan, args.rounds, cpu) + intro, flush=True)
    samples = run_interleaved(script, plan, args.rounds, cpu, timeout or args.timeout, log)
    sections, text = report(samples)
    print()
    print(text)
    print(f"command: {command}")
    save_json(args.json, {"command": command, "args": vars(args), **sections, **payload,
                          "samples": samples.to_json()})
    return exit_status([r for rows in sections.values() if isinstance(rows, list) for r in rows], samples)


def main(dispatch: Callable[[str, str, dict], dict], parent: Callable[[], int]) -> None:
    """A benchmark script's entry: a child measures (``dispatch``), the parent runs it all."""
    sys.exit(serve_child(dispatch) if sys.argv[1:2] == [CHILD_FLAG] else parent())

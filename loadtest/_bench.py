"""Shared helpers for the loadtest benchmarks.

Two halves:

* Parent side: read the command line (``argument_parser``, ``fill_defaults``,
  ``cpu_option``, ``comma_list``), run one measurement in a fresh, CPU-pinned
  subprocess (``run_child``), interleave rounds over many (workload, impl)
  pairs (``run_interleaved``), summarise (``median``, ``spread``, ``ratio``)
  and report (``format_table``, ``result_cell``, ``save_json``,
  ``exit_status``).
* Child side: ``serve_child`` decodes the command line written by
  ``child_command``, calls the benchmark's dispatcher and prints exactly one
  JSON object as the last line of stdout.  ``Probe`` measures a block of code
  (wall time, ru_maxrss delta, optional tracemalloc peak).

A benchmark script using this module looks like::

    if _bench.is_child():
        sys.exit(_bench.serve_child(dispatch))   # dispatch(workload, impl, params) -> dict
    ...
    samples = _bench.run_interleaved(__file__, plan, rounds, cpu)

Only the standard library is used.
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


# --------------------------------------------------------------------------
# statistics


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
    if len(values) < 2 or not mid:
        return None
    return (max(values) - min(values)) / abs(mid)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either side is missing or theirs is 0."""
    if ours is None or not theirs:
        return None
    return ours / theirs


# --------------------------------------------------------------------------
# formatting


def fmt_num(value: float | None, digits: int = 3) -> str:
    """Short human form: 1.23M, 45.6k, 789, 0.0123."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    mag = abs(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if mag >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    if mag >= 1 and float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}g}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with a header rule; every cell is str()-ed."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def result_cell(row: dict) -> str:
    """The ``result`` cell of a row with ``errors``, ``bar`` and ``pass``: ERROR xN, PASS,
    FAIL, n/a (a bar that could not be checked) or - (no bar)."""
    if row.get("skipped"):
        return "skipped (not installed)"
    if row["errors"]:
        return f"ERROR x{row['errors']}"
    return {True: "PASS", False: "FAIL", None: "-" if not row["bar"] else "n/a"}[row["pass"]]


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


def command_line(argv: Sequence[str] | None = None) -> str:
    """The exact command line of this process, shell-quoted."""
    argv = sys.argv if argv is None else argv
    return shlex.join([sys.executable, *argv])


# --------------------------------------------------------------------------
# command line


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its description is the first paragraph of ``doc`` (the script's
    module docstring), shown as written."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )


def fill_defaults(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Set each option of ``defaults`` that the command line left at None."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


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


# --------------------------------------------------------------------------
# CPU pinning


def cpu_set(cpu: int | str) -> set[int]:
    """The CPUs of a pinning spec: one CPU (an int) or a taskset-style list such as "0,1"."""
    if isinstance(cpu, int):
        return {cpu}
    return {int(x) for x in str(cpu).split(",") if x.strip()}


def pin_self(cpu: int | str) -> None:
    """Pin the calling process (and its future children) to one CPU (or a list, "0,1")."""
    os.sched_setaffinity(0, cpu_set(cpu))


def check_cpu(cpu: int | str | None) -> None:
    """Exit with a clear message if ``cpu`` (one CPU or a list, "0,1") is not usable by this process."""
    if cpu is None:
        return
    allowed = os.sched_getaffinity(0)
    if not cpu_set(cpu) <= allowed:
        raise SystemExit(f"--cpu {cpu}: not in this process's CPUs {sorted(allowed)}")


def current_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


# --------------------------------------------------------------------------
# parent side: one measurement per subprocess


class ChildError(RuntimeError):
    """A child process failed, timed out, or printed no JSON result."""


def child_command(module: str, workload: str, impl: str, params: dict, cpu: int | str | None) -> list[str]:
    """Command line running one measurement; ``module`` is a script path or a
    dotted module name.  Pinned with ``taskset -c CPU`` when possible."""
    if module.endswith(".py") or os.path.exists(module):
        target = [module]
    else:
        target = ["-m", module]
    cmd = [sys.executable, *target, CHILD_FLAG, workload, impl, json.dumps(params, sort_keys=True)]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return cmd


def example_child(module: str, plan: Sequence[tuple], cpu: int | str | None) -> str:
    """The command line of the plan's first measurement, shell-quoted (to show what runs)."""
    return shlex.join(child_command(module, *plan[0][:3], cpu))


def describe_plan(module: str, plan: Sequence[tuple], rounds: int, cpu: int | str | None) -> str:
    """How many measurements and rounds, and the first one's command line."""
    example = example_child(module, plan, cpu)
    return f"{len(plan)} measurements x {rounds} rounds, each in a fresh child, e.g.:\n  {example}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_child(
    module: str, workload: str, impl: str, params: dict, cpu: int | str | None = None, timeout: float = 600.0
) -> dict:
    """Run one measurement in a fresh subprocess and return its JSON result.

    The child must print one JSON object as the last non-empty line of its
    stdout (``serve_child`` does that).  Raises ChildError on failure.
    """
    cmd = child_command(module, workload, impl, params, cpu)
    # Without taskset, pin the child ourselves before it execs.
    preexec = None
    if cpu is not None and cmd[0] != "taskset":
        preexec = lambda: pin_self(cpu)  # noqa: E731
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)
    except subprocess.TimeoutExpired:
        raise ChildError(f"timed out after {timeout:g}s: {shlex.join(cmd)}") from None
    if proc.returncode != 0:
        raise ChildError(f"exit {proc.returncode}: {shlex.join(cmd)}\n" + _tail(proc.stderr or proc.stdout))
    result = _last_json_line(proc.stdout)
    if result is None:
        raise ChildError(f"no JSON result line: {shlex.join(cmd)}\n" + _tail(proc.stdout))
    return result


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + ln for ln in (text or "").strip().splitlines()[-lines:])


@dataclass
class Samples:
    """Results of interleaved runs, keyed by (workload, impl)."""

    results: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    errors: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def values(self, workload: str, impl: str, key: str) -> list[float]:
        return [r[key] for r in self.results.get((workload, impl), []) if r.get(key) is not None]

    def to_json(self) -> dict:
        return {
            f"{w}/{i}": {"results": self.results.get((w, i), []), "errors": self.errors.get((w, i), [])}
            for (w, i) in sorted(set(self.results) | set(self.errors))
        }


def run_interleaved(
    module: str, plan: Sequence[tuple[str, str, dict] | tuple[str, str, dict, int | str | None]], rounds: int,
    cpu: int | str | None, timeout: float = 600.0, log: Callable[[str], None] | None = None,
) -> Samples:
    """for round in rounds: for (workload, impl, params) in plan: run_child(...).

    Interleaving spreads slow drifts of a shared, noisy machine over every
    implementation instead of penalising whichever happened to run last.
    A plan entry may carry a fourth element, its own CPU spec (e.g. "0,1" for a
    measurement that needs two CPUs), used instead of ``cpu``.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    samples = Samples()
    for rnd in range(1, rounds + 1):
        for entry in plan:
            workload, impl, params = entry[:3]
            where = entry[3] if len(entry) > 3 else cpu
            key = (workload, impl)
            started = time.perf_counter()
            try:
                result = run_child(module, workload, impl, params, where, timeout)
            except ChildError as exc:
                samples.errors.setdefault(key, []).append(str(exc))
                log(f"[round {rnd}/{rounds}] {workload:<9} {impl:<15} ERROR\n{exc}")
                continue
            samples.results.setdefault(key, []).append(result)
            log(
                f"[round {rnd}/{rounds}] {workload:<9} {impl:<15} "
                f"{time.perf_counter() - started:5.1f}s  {result.get('summary', '')}"
            )
    return samples


# --------------------------------------------------------------------------
# child side


def is_child(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    return len(argv) > 1 and argv[1] == CHILD_FLAG


def serve_child(dispatch: Callable[[str, str, dict], dict], argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``prog --child WORKLOAD IMPL PARAMS_JSON``.

    Calls ``dispatch(workload, impl, params)`` and prints its dict (plus the
    CPUs the child was allowed to run on) as one JSON line on stdout.
    """
    argv = sys.argv if argv is None else argv
    try:
        _, _, workload, impl, params_json = argv[:5]
        params = json.loads(params_json)
        result = dict(dispatch(workload, impl, params))
    except Exception:  # report, the parent shows stderr
        traceback.print_exc()
        return 1
    result.setdefault("cpus", current_cpus())
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def maxrss_bytes() -> int:
    """Peak resident set size of this process so far (Linux: KiB -> bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class Probe:
    """Context manager measuring a block: wall seconds, ru_maxrss growth and,
    if ``trace_memory``, the tracemalloc peak (tracing starts on entry and
    stops on exit; it slows allocation-heavy code, so keep timing runs and
    tracemalloc runs separate)."""

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


# --------------------------------------------------------------------------
# JSON output


def environment() -> dict:
    try:
        loadavg = os.getloadavg()
    except OSError:
        loadavg = None
    return {
        "python": sys.version.split()[0], "implementation": platform.python_implementation(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg_at_end": loadavg,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` plus environment facts as pretty JSON to ``path``."""
    data = {"environment": environment(), **payload}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def save_json(path: str | None, payload: dict) -> None:
    """With a ``--json`` PATH: ``write_json`` and say so ("wrote PATH")."""
    if path:
        write_json(path, payload)
        print(f"wrote {path}")


def exit_status(results: Iterable[dict], samples: Samples) -> int:
    """1 if a result (a row or a bar check with ``pass``) fails or a measurement errored, else 0."""
    failed = any(r["pass"] is False for r in results) or bool(samples.errors)
    return 1 if failed else 0

"""What the in-process benchmarks (primitives, actors, threads) share: their common options,
the run (plan -> interleaved rounds in pinned children -> summary rows -> table and JSON), a
summary row with its median, spread, ratio and bar, and the table of those rows."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import _bench
from _bench import fmt_num, fmt_pct, fmt_ratio

PIN = "CPU to pin every child to with taskset"


def parser(doc: str, rounds: int, cpu: str = PIN) -> argparse.ArgumentParser:
    """A benchmark's parser: the module docstring is its help; the options every one has."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="small N, 1 round (smoke run)")
    common.add_argument("--rounds", type=int, help=f"interleaved rounds (default {rounds}, --quick 1)")
    common.add_argument("--cpu", default="1", help=f"{cpu} (default 1; 'none' to not pin)")
    common.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    common.add_argument("--timeout", type=float, default=600, help="per-child timeout, seconds")
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common]
    )


def comma_option(p: argparse.ArgumentParser, name: str, known: Iterable[str], default: Sequence = ()) -> None:
    """``--NAME a,b,c``: a comma list out of ``known`` (default: ``default``, else all)."""
    known = ",".join(known)
    text = f"comma list out of {known} (default: %(default)s)"
    p.add_argument(f"--{name}", default=",".join(default) or known, help=text)


def parse(
    p: argparse.ArgumentParser, argv: Sequence[str] | None, quick: dict, full: dict,
    lists: dict[str, Iterable[str]], needs: dict[str, Sequence[str]] | None = None,
) -> argparse.Namespace:
    """Parse; fill the sizes the command line left out (``quick`` or ``full``); check the
    comma lists (``--impls`` must hold fibernet); ``args.skipped``: peers not installed."""
    args = p.parse_args(argv)
    _bench.fill_defaults(args, quick if args.quick else full)
    args.cpu = _bench.cpu_option(args.cpu)
    for name, known in lists.items():
        setattr(args, name, _bench.comma_list(p, getattr(args, name), known, f"--{name}"))
    if "impls" in lists:
        if "fibernet" not in args.impls:
            p.error("--impls must include fibernet")
        args.skipped = _bench.missing_peers(args.impls, needs or {})
    return args


def row(
    samples: _bench.Samples, workload: str, impl: str, key: str, unit: str, ratio: float | None = None,
    bars: Sequence[tuple[str, bool | None]] = (), aggregate: Callable = _bench.median, **extra: Any,
) -> dict:
    """A summary row: the aggregate (median) over rounds, its spread and the errors; ``bars``
    are (description, verdict) pairs; the row passes if every verdict does (None: unknown)."""
    values = samples.values(workload, impl, key)
    errors = len(samples.errors.get((workload, impl), []))
    verdicts = [v for _, v in bars]
    verdict = None if not verdicts or None in verdicts else all(verdicts)
    return {
        "workload": workload, "metric": key, "impl": impl, "value": aggregate(values) if values else None,
        "unit": unit, "spread": _bench.spread(values), "rounds": len(values), "errors": errors,
        "ratio": ratio, "bar": "; ".join(b for b, _ in bars), "pass": False if errors else verdict, **extra,
    }


CELLS: dict[str, Callable[[dict], Any]] = {
    "value": lambda r: fmt_num(r["value"]), "n": lambda r: fmt_num(r["n"]),
    "spread": lambda r: fmt_pct(r["spread"]), "ratio": lambda r: fmt_ratio(r["ratio"]),
    "vs_this": lambda r: fmt_ratio(r["vs_this"]), "bar": lambda r: r["bar"] or "-",
    "result": _bench.result_cell,
}


def table(rows: list[dict], columns: Sequence[str | tuple[str, str]]) -> str:
    """The rows as a table of ``columns``: row keys, or (header, row key) pairs."""
    columns = [(c, c) if isinstance(c, str) else c for c in columns]
    cells = [[CELLS.get(key, lambda r, k=key: r[k])(r) for _, key in columns] for r in rows]
    return _bench.format_table([h for h, _ in columns], cells)


def run(
    script: str, args: argparse.Namespace, plan: list[tuple],
    report: Callable[[_bench.Samples], tuple[list[dict], str]], name: str | None = None,
) -> int:
    """Run ``plan`` for ``args.rounds`` interleaved rounds, print what ``report(samples)``
    makes of it (rows, text), write ``--json``; the exit status is 1 if a bar fails or a
    measurement errors."""
    _bench.check_cpu(args.cpu)
    command = _bench.command_line()
    print(f"command: {command}", flush=True)
    if name:
        _bench.note_skipped(args.skipped, name)
    print(_bench.describe_plan(script, plan, args.rounds, args.cpu), flush=True)
    samples = _bench.run_interleaved(script, plan, args.rounds, args.cpu, args.timeout)
    rows, text = report(samples)
    print()
    print(text)
    print(f"command: {command}")
    payload = {"command": command, "args": vars(args), "rows": rows, "samples": samples.to_json()}
    _bench.save_json(args.json, payload)
    return _bench.exit_status(rows, samples)


def main(dispatch: Callable[[str, str, dict], dict], parent: Callable[[], int]) -> None:
    """A benchmark script's entry: a child measures (``dispatch``), the parent runs it all."""
    sys.exit(_bench.serve_child(dispatch) if _bench.is_child() else parent())

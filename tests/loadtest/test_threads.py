"""loadtest/threads.py: each child measures the checkout it is asked to (``--also``), every
round trip is counted, and t2/t1 and its bar come from the medians of the two thread counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import LOADTEST, ROOT

SCRIPT = f"{LOADTEST}/threads.py"


@pytest.mark.timeout(120)
def test_a_quick_run_measures_both_checkouts_and_both_thread_counts(tmp_path):
    # (--also this same checkout: its rows are labelled with the folder's name.)
    out = tmp_path / "threads.json"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--n", "300", "--cpu", "none", "--workloads", "pairs,cross",
         "--also", ROOT, "--json", str(out)],
        capture_output=True, text=True, timeout=110, stdin=subprocess.DEVNULL,
    )
    assert done.returncode in (0, 1), done.stderr  # (1: a bar failed on a loaded machine)
    report = json.loads(out.read_text())
    rows = {(r["workload"], r["impl"]): r for r in report["rows"]}
    other = ROOT.rstrip("/").rsplit("/", 1)[1]
    for workload in ("pairs", "cross"):
        for label in ("this", other):
            for threads in (1, 2):
                row = rows[(workload, f"{label}:threads={threads}")]
                assert row["errors"] == 0 and row["rounds"] == 1 and row["value"] > 0
    for key, sample in report["samples"].items():
        assert [r["n"] for r in sample["results"]] == [300], key
    assert rows[("pairs", "this:threads=2")]["bar"] and not rows[("cross", "this:threads=2")]["bar"]


def test_t2_over_t1_and_the_bar_come_from_the_medians():
    sys.path.insert(0, LOADTEST)
    try:
        import _bench
        import threads
    finally:
        sys.path.remove(LOADTEST)
    samples = _bench.Samples()
    samples.results[("pairs", "this:threads=1")] = [{"rate": r} for r in (100.0, 90.0, 300.0)]
    samples.results[("pairs", "this:threads=2")] = [{"rate": r} for r in (80.0, 95.0, 10.0)]
    args = threads.parse_args(["--workloads", "pairs"])
    (one, two) = threads.summarise(samples, args)
    assert one["value"] == 100.0 and one["ratio"] is None and one["pass"] is None
    assert two["value"] == 80.0 and two["ratio"] == pytest.approx(0.8) and two["pass"] is False
    samples.results[("pairs", "this:threads=2")] = [{"rate": 95.0}]
    assert threads.summarise(samples, args)[1]["pass"] is True

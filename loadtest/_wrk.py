"""wrk's results as data: ``wrk -s wrk_json.lua`` makes wrk's ``done()`` hook print the run's
figures as one JSON line after its own report; ``result`` reads that line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_json.lua")


def command(wrk: str, url: str, threads: int, connections: int, duration: float, *extra: str) -> list[str]:
    """``wrk -tT -cC -dDs -s wrk_json.lua EXTRA URL``."""
    return [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "-s", SCRIPT, *extra, url]


def run(cmd: list[str], duration: float) -> tuple[dict, str]:
    """Run a wrk command line of ``duration`` s: (its ``result``, its stdout); raises on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {shlex.join(cmd)}\n{proc.stderr}{proc.stdout}")
    return result(proc.stdout), proc.stdout


def result(output: str) -> dict:
    """The figures of a run from wrk's stdout: ``requests``, ``wrk_seconds``, ``rps``,
    ``errors`` (connect, read, write, timeout, non2xx), ``latency_us`` (min, mean, max,
    stdev and the percentiles "50", "75", "90", "99", "99.9") and ``bytes``."""
    line = next((ln for ln in reversed(output.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError("no JSON line from wrk's done() hook (wrk -s wrk_json.lua) in:\n" + output)
    data = json.loads(line)
    seconds = data["seconds"]
    return {
        "requests": data["requests"], "wrk_seconds": seconds,
        "rps": data["requests"] / seconds if seconds else 0.0, "errors": data["errors"],
        "latency_us": data["latency_us"], "bytes": data["bytes"],
    }

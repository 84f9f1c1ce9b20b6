"""The admin endpoint: ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus text) and
``/fibers`` (what ``fibernet inspect`` shows), for one process or a supervisor's workers.

A worker describes itself with :func:`snapshot`: its counters, its schedulers, and its fibers
with what each waits on and for how long.  "How long" costs the hot path nothing: a
:class:`WaitClock` remembers when it first saw each fiber in its current wait, so it is
exact to the snapshot interval.  The supervisor keeps the latest snapshot of each worker
(they send one a second) and serves the same app over them.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from fibernet.http import Request, Response
from fibernet.runtime import runtime as _runtime

MAX_FIBERS = 2000

# Parts of a process that can make it not ready (a lost bus): each returns its reasons.
_readiness_checks: list[Callable[[], list[str]]] = []


def add_readiness_check(check: Callable[[], list[str]]) -> None:
    """``check()`` returns why this process is not ready (empty: ready); /readyz answers 503
    with the reasons while any check gives one (it reaches a supervisor in the snapshots)."""
    _readiness_checks.append(check)


def unready_reasons() -> list[str]:
    return [reason for check in _readiness_checks for reason in check()]


class WaitClock:
    """Remembers since when each fiber has waited in its current operation."""

    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def since(self, fiber: Any, now: float) -> float:
        state = fiber._op_state
        seen = self._seen.get(fiber)
        if seen is None or seen[0] is not state:
            self._seen[fiber] = (state, now)
            return now
        return seen[1]


def snapshot(server: Any, clock: WaitClock, max_fibers: int = MAX_FIBERS) -> dict[str, Any]:
    """A JSON-able description of this process: counters, schedulers and fibers."""
    now = time.monotonic()
    scheds = _runtime.schedulers()
    fibers = []
    total = 0
    for sched in scheds:
        for fiber in sched.fibers():
            total += 1
            if len(fibers) >= max_fibers:
                continue
            waiting = fiber.waiting_on()
            fibers.append(
                {
                    "name": fiber.name,
                    "state": fiber.state,
                    "scheduler": sched.name,
                    "waiting_on": waiting,
                    "waiting_s": round(now - clock.since(fiber, now), 3) if waiting else 0.0,
                }
            )
    stats = server.stats() if server is not None else {}
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "draining": bool(getattr(server, "draining", False)),
        "unready": unready_reasons(),
        "stats": stats,
        "schedulers": [
            {
                "name": s.name,
                "fibers": len(s.fibers()),
                "runnable": len(s._runq),
                "timers": s.pending_timers(),
                "fds": s.watched_fds(),
                "turns": s.turns,
            }
            for s in scheds
        ],
        "fibers_total": total,
        "fibers": fibers,
    }


def metrics_text(snapshots: Iterable[dict[str, Any]]) -> str:
    """Prometheus text exposition of the workers' counters, one series per worker."""
    series: dict[str, list[str]] = {}
    kinds = {
        "connections_open": ("gauge", "Connections open now"),
        "connections_accepted": ("counter", "Connections accepted"),
        "bytes_in": ("counter", "Bytes received"),
        "bytes_out": ("counter", "Bytes sent"),
        "requests": ("counter", "HTTP requests answered"),
        "fibers": ("gauge", "Live fibers"),
        "schedulers": ("gauge", "Scheduler threads"),
        "draining": ("gauge", "1 while the worker drains"),
    }
    for snap in snapshots:
        label = f'{{worker="{snap["pid"]}"}}'
        values = dict(snap.get("stats", {}))
        values["fibers"] = snap.get("fibers_total", 0)
        values["schedulers"] = len(snap.get("schedulers", []))
        values["draining"] = int(bool(snap.get("draining")))
        for key, value in values.items():
            if key in kinds:
                series.setdefault(key, []).append(f"fibernet_{key}{label} {value}")
    lines = []
    for key, samples in series.items():
        kind, help_text = kinds[key]
        lines += [f"# HELP fibernet_{key} {help_text}", f"# TYPE fibernet_{key} {kind}", *samples]
    return "\n".join(lines) + "\n"


def admin_app(
    snapshots: Callable[[], list[dict[str, Any]]], ready: Callable[[], bool]
) -> Callable[[Request], Response]:
    """The admin HTTP app over a source of worker snapshots."""

    def app(request: Request) -> Response:
        if request.path == "/healthz":
            return Response.text("ok\n")
        if request.path == "/readyz":
            if not ready():
                return Response.text("draining\n", 503)
            reasons = [reason for snap in snapshots() for reason in snap.get("unready", ())]
            if reasons:
                return Response.text("not ready: " + "; ".join(reasons) + "\n", 503)
            return Response.text("ready\n")
        if request.path == "/metrics":
            return Response(200, metrics_text(snapshots()), content_type="text/plain; version=0.0.4")
        if request.path == "/fibers":
            return Response.json(snapshots())
        return Response(404, b"try /healthz, /readyz, /metrics or /fibers\n", content_type="text/plain")

    return app


def render_fibers(snapshots: list[dict[str, Any]]) -> str:
    """The table ``fibernet inspect`` prints."""
    out = []
    for snap in snapshots:
        out.append(
            f"worker {snap['pid']}: {snap.get('fibers_total', 0)} fibers"
            f"{' (draining)' if snap.get('draining') else ''}"
        )
        for s in snap.get("schedulers", []):
            out.append(
                f"  scheduler {s['name']}: {s['fibers']} fibers, {s['runnable']} runnable, "
                f"{s['timers']} timers, {s['fds']} descriptors"
            )
        rows = [("FIBER", "STATE", "SCHEDULER", "WAITING ON", "FOR")]
        for f in snap.get("fibers", []):
            rows.append(
                (
                    f["name"],
                    f["state"],
                    f["scheduler"],
                    f["waiting_on"] or "-",
                    f"{f['waiting_s']:.1f}s" if f["waiting_on"] else "-",
                )
            )
        widths = [min(48, max(len(r[i]) for r in rows)) for i in range(5)]
        for r in rows:
            out.append("  " + "  ".join(c[:48].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if snap.get("fibers_total", 0) > len(snap.get("fibers", [])):
            out.append(f"  ... {snap['fibers_total'] - len(snap['fibers'])} more")
    return "\n".join(out) + "\n"


def encode(snap: dict[str, Any]) -> bytes:
    return json.dumps(snap, separators=(",", ":")).encode() + b"\n"

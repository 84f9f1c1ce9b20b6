"""Process and CPU measurements for the load tests, through psutil: CPU seconds, resident memory,
context switches and children of a server process, and the busy time of given CPUs.  A process
that has gone reads as nothing (None, 0 or empty)."""

from __future__ import annotations

import psutil


def _processes(pid: int, descendants: bool = False) -> list[psutil.Process]:
    """``pid`` (and its live descendants), or nothing once it has gone."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)] if descendants else [proc]
    except psutil.Error:
        return []


def _each(items: list, read) -> list:
    """``read(item)`` of each item (a process, or a thread's id) that is still there."""
    values = []
    for item in items:
        try:
            values.append(read(item))
        except psutil.Error:  # it ended meanwhile
            continue
    return values


def cpu_times(pid: int, descendants: bool = False) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` (all its threads), plus its live descendants' when
    ``descendants``; (0, 0) for a process that has gone."""
    times = _each(_processes(pid, descendants), lambda p: p.cpu_times())
    return sum(t.user for t in times), sum(t.system for t in times)


def rss_bytes(pid: int, descendants: bool = False) -> int | None:
    """Resident memory of ``pid`` in bytes (plus its live descendants' when ``descendants``),
    or None once it has gone."""
    procs = _processes(pid, descendants)
    main = _each(procs[:1], lambda p: p.memory_info().rss)
    return main[0] + sum(_each(procs[1:], lambda p: p.memory_info().rss)) if main else None


def ctx_switches(pid: int, voluntary_only: bool = False) -> int:
    """Context switches of ``pid``'s live threads (voluntary ones only if asked); 0 once gone.
    psutil's num_ctx_switches counts the main thread only, so each thread is read as its own."""
    tids = [t.id for found in _each(_processes(pid), lambda p: p.threads()) for t in found]
    counts = _each(tids, lambda tid: psutil.Process(tid).num_ctx_switches())
    return sum(c.voluntary if voluntary_only else c.voluntary + c.involuntary for c in counts)


def children(pid: int) -> set[int]:
    """Pids of the direct children of ``pid`` (empty once it has gone)."""
    return {c.pid for found in _each(_processes(pid), lambda p: p.children()) for c in found}


def cpus_busy(cpus: list[int]) -> float:
    """Seconds the given CPUs spent not idle (anyone's work, irq and softirq included)."""
    per_cpu = psutil.cpu_times(percpu=True)
    return sum(per_cpu[c].user + per_cpu[c].nice + per_cpu[c].system + per_cpu[c].irq + per_cpu[c].softirq
               for c in cpus)


def cpu_user_steal(cpu: int) -> tuple[float, float]:
    """(user+nice+system, steal) seconds of one CPU so far."""
    t = psutil.cpu_times(percpu=True)[cpu]
    return t.user + t.nice + t.system, t.steal
